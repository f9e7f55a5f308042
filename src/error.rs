//! The one error type of this crate.
//!
//! [`Error`] has a private kind and public predicates ([`Error::is_transient`],
//! [`Error::is_credentials`], [`Error::is_insecure_scheme`], …). Its `Display` is one
//! sentence that says what happened and what to do; the underlying cause, when there is
//! one, is reachable through [`std::error::Error::source`] and is not repeated in the
//! message. An `Error` is cheap to clone: one refresh failure is handed to every waiter as
//! the same shared value, not fetched again per waiter.
//!
//! No message ever contains a client secret or a token: messages are built from our own
//! words plus, for token-endpoint errors, the server's OAuth error code and a shortened,
//! scrubbed description.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// A boxed error, as tower uses for middleware errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while obtaining or attaching a token.
///
/// The service error of [`BearerAuth`](crate::BearerAuth) is [`BoxError`]: errors of the
/// inner service pass through unchanged, and errors of this crate are an `Error` inside it
/// (`err.downcast_ref::<docplanner_auth::Error>()`).
///
/// ```
/// use docplanner_auth::Error;
///
/// fn describe(err: &Error) -> &'static str {
///     if err.is_credentials() {
///         "fix the client id/secret"
///     } else if err.is_transient() {
///         "Docplanner is having a moment; it heals by itself"
///     } else {
///         "see the message"
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    message: String,
    retry_after: Option<Duration>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The token endpoint answered with an OAuth2 error body (`invalid_client`, …).
    OAuth { status: StatusCode, code: String },
    /// The token endpoint answered a non-success status without an OAuth2 error body.
    Status(StatusCode),
    /// The token request did not complete within the token request timeout.
    Timeout,
    /// The HTTP client could not send the token request or read its answer.
    Transport,
    /// The token endpoint answered success with a body we cannot use.
    InvalidResponse,
    /// The refresh task ended without an answer (runtime shutting down, or it panicked).
    RefreshAborted,
    /// A custom token source failed in a way retrying soon may fix ([`Error::transient`]).
    SourceTransient,
    /// A custom token source failed in a way that needs a person ([`Error::permanent`]).
    SourcePermanent,
    /// A custom token source's credentials were rejected ([`Error::credentials`]).
    SourceCredentials,
    /// A request was refused because its URI is not `https`.
    InsecureScheme,
    /// A request was refused because its host is not a configured API host.
    HostNotAllowed,
    /// The configuration given to a constructor is not usable.
    Config,
    /// A shared token store failed (never shown to a request: the cache works around it).
    Store,
}

impl Error {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                retry_after: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(kind: Kind, message: impl Into<String>, source: BoxError) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                retry_after: None,
                source: Some(Arc::from(source)),
            }),
        }
    }

    /// The error of a [`TokenSource`](crate::TokenSource): ours as it is, anything else
    /// wrapped as a transient failure of the source.
    pub(crate) fn from_source(error: BoxError) -> Self {
        match error.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Self::with_source(
                Kind::Transport,
                "the token source failed (see the source error); retrying with backoff",
                other,
            ),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(Kind::Config, message)
    }

    /// Attach the delay the server asked for (`Retry-After`).
    pub(crate) fn retrying_after(mut self, delay: Option<Duration>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.retry_after = delay,
            None => {
                let inner = &self.inner;
                self.inner = Arc::new(Inner {
                    kind: inner.kind.clone(),
                    message: inner.message.clone(),
                    retry_after: delay,
                    source: inner.source.clone(),
                });
            }
        }
        self
    }

    /// For a [`TokenSource`](crate::TokenSource) of your own: a failure that retrying soon
    /// may fix (a 5xx, a timeout, a connection error). The cache backs off
    /// ([`Backoff::base`](crate::cache::Backoff::base), doubling) and retries by itself.
    /// `message` is shown as it is: never put a secret in it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use docplanner_auth::{BoxError, Error, TokenCache};
    ///
    /// let cache = TokenCache::new(|| async {
    ///     // ... your own token request answered 503 with `Retry-After: 7`:
    ///     Err::<docplanner_auth::AccessToken, BoxError>(
    ///         Error::transient("the vault answered 503").with_retry_after(Duration::from_secs(7)).into(),
    ///     )
    /// });
    /// # let _ = cache;
    /// ```
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(Kind::SourceTransient, message)
    }

    /// For a [`TokenSource`](crate::TokenSource) of your own: a failure that needs a
    /// person (a malformed answer, a scope the client may not use). The cache backs off
    /// slowly ([`Backoff::permanent_base`](crate::cache::Backoff::permanent_base),
    /// doubling), so a fix is picked up without a restart and nothing is hammered.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(Kind::SourcePermanent, message)
    }

    /// For a [`TokenSource`](crate::TokenSource) of your own: the credentials were
    /// rejected. Permanent (backed off slowly, like [`permanent`](Self::permanent)), and
    /// [`is_credentials`](Self::is_credentials).
    pub fn credentials(message: impl Into<String>) -> Self {
        Self::new(Kind::SourceCredentials, message)
    }

    /// The same error, with the delay the token endpoint asked for before the next attempt
    /// (a floor for the backoff, up to [`MAX_RETRY_AFTER`](crate::cache::MAX_RETRY_AFTER)).
    pub fn with_retry_after(self, delay: Duration) -> Self {
        self.retrying_after(Some(delay))
    }

    /// The error happened while obtaining a token from the token endpoint (as opposed to
    /// a request refused before sending, or a configuration error).
    pub fn is_token_endpoint(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::OAuth { .. }
                | Kind::Status(_)
                | Kind::Timeout
                | Kind::Transport
                | Kind::InvalidResponse
                | Kind::RefreshAborted
                | Kind::SourceTransient
                | Kind::SourcePermanent
                | Kind::SourceCredentials
        )
    }

    /// Retrying later may succeed without anyone changing anything: a 5xx, 429 or 408
    /// answer, a timeout, a connection error, an interrupted refresh.
    pub fn is_transient(&self) -> bool {
        match &self.inner.kind {
            Kind::Status(status) | Kind::OAuth { status, .. } => is_transient_status(*status),
            Kind::Timeout | Kind::Transport | Kind::RefreshAborted | Kind::SourceTransient => true,
            _ => false,
        }
    }

    /// The token endpoint failed in a way that needs a person: rejected credentials, a
    /// scope the client may not use, a malformed answer. Retrying soon will not help.
    pub fn is_permanent(&self) -> bool {
        self.is_token_endpoint() && !self.is_transient()
    }

    /// The token endpoint rejected the client id or secret (`invalid_client`,
    /// `unauthorized_client`, or a 401 from the token endpoint).
    pub fn is_credentials(&self) -> bool {
        match &self.inner.kind {
            Kind::OAuth { code, status } => {
                code == "invalid_client"
                    || code == "unauthorized_client"
                    || *status == StatusCode::UNAUTHORIZED
            }
            Kind::Status(status) => *status == StatusCode::UNAUTHORIZED,
            Kind::SourceCredentials => true,
            _ => false,
        }
    }

    /// The token request did not complete within the token request timeout.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }

    /// The token endpoint answered success, but with a body that is not a usable token
    /// (not JSON, no `access_token`, not a bearer token, absurd `expires_in`, …).
    pub fn is_invalid_response(&self) -> bool {
        self.inner.kind == Kind::InvalidResponse
    }

    /// A request was refused before it was sent because its URI is not `https` (or is
    /// `http` to a non-loopback host with the loopback opt-in).
    pub fn is_insecure_scheme(&self) -> bool {
        self.inner.kind == Kind::InsecureScheme
    }

    /// A request was refused before it was sent because its host is not one of the
    /// configured API hosts.
    pub fn is_host_not_allowed(&self) -> bool {
        self.inner.kind == Kind::HostNotAllowed
    }

    /// A constructor was given an unusable configuration (bad URL, empty client id, …).
    pub fn is_config(&self) -> bool {
        self.inner.kind == Kind::Config
    }

    /// A shared token store ([`TokenStore`](crate::store::TokenStore)) failed. Requests
    /// never see such an error: the cache falls back to fetching on its own.
    pub fn is_store(&self) -> bool {
        self.inner.kind == Kind::Store
    }

    /// The HTTP status the token endpoint answered, when the error comes from one.
    pub fn status(&self) -> Option<StatusCode> {
        match &self.inner.kind {
            Kind::Status(status) | Kind::OAuth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The OAuth2 `error` code the token endpoint answered (`invalid_client`, …).
    pub fn oauth_error(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::OAuth { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The delay the token endpoint asked for with `Retry-After`, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }
}

pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(delay) = self.inner.retry_after {
            d.field("retry_after", &delay);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn std::error::Error + 'static))
    }
}

/// Shorten text that came from a server (an error description) to something fit for a
/// one-line message: printable characters only, at most `max` characters. Every value in
/// `secrets` (the client secret, the Basic credential as sent, the answer's token) is
/// replaced by value, whatever it looks like; then, as a second net for a token we cannot
/// know of, any word that looks like a credential (16 or more token characters mixing
/// letters and digits).
///
/// A text that still carries a secret in another encoding (percent-escapes of any case, `+` for a
/// space, HTML entities, backslash escapes, another letter case, or several of them at
/// once) cannot be cut around it: it is withheld whole, as one `[redacted]`.
pub(crate) fn scrub(text: &str, max: usize, secrets: &[&str]) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = redact(&flat, secrets);
    if echoes_re_encoded(&flat, secrets) {
        return "[redacted]".to_owned();
    }
    let words: Vec<String> = flat
        .split(' ')
        .map(|word| {
            if looks_like_credential(word) {
                "[redacted]".to_owned()
            } else {
                word.to_owned()
            }
        })
        .collect();
    let joined = words.join(" ");
    let mut out: String = joined.chars().take(max).collect();
    if joined.chars().count() > max {
        out.push('…');
    }
    out
}

/// `text` with every occurrence of every secret, overlapping ones included, replaced by
/// one `[redacted]` per run, in one pass over the original text (so that neither a short
/// secret inside a longer one nor the word `[redacted]` itself changes what matches).
fn redact(text: &str, secrets: &[&str]) -> String {
    let mut hidden = vec![false; text.len()];
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        for (at, _) in text.match_indices(secret) {
            hidden[at..at + secret.len()].fill(true);
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for (at, c) in text.char_indices() {
        if hidden[at] {
            if !in_run {
                out.push_str("[redacted]");
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// Secrets shorter than this (after [`fold`]) are only redacted as written: folded, a
/// short one would withhold ordinary words.
const MIN_FOLDED_SECRET: usize = 8;

/// Whether `text`, decoded and case-folded, contains a secret, decoded and case-folded
/// the same way.
fn echoes_re_encoded(text: &str, secrets: &[&str]) -> bool {
    let mut folded_text = None;
    secrets.iter().any(|secret| {
        let secret = fold(secret);
        secret.chars().count() >= MIN_FOLDED_SECRET
            && folded_text
                .get_or_insert_with(|| fold(text))
                .contains(&secret)
    })
}

/// One spelling for the ways a server may re-encode a value before echoing it: escapes
/// decoded (three rounds, for an escaped escape), `+` read as a space, lower case.
fn fold(text: &str) -> String {
    let mut folded = text.to_owned();
    for _ in 0..3 {
        let decoded = decode_escapes(&folded);
        if decoded == folded {
            break;
        }
        folded = decoded;
    }
    folded.replace('+', " ").to_lowercase()
}

/// One round of decoding: `%hh`, `\xhh`, `\uhhhh`, `\` before any other character, and
/// the HTML entities `&#nn;`, `&#xhh;`, `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`.
/// Bytes that are not UTF-8 once decoded are replaced, never a panic.
fn decode_escapes(text: &str) -> String {
    fn hex(digits: &[u8]) -> Option<u32> {
        let digits = std::str::from_utf8(digits).ok()?;
        u32::from_str_radix(digits, 16).ok()
    }
    fn push_char(out: &mut Vec<u8>, code: u32) {
        let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let escape = match rest {
            [b'%', a, b, ..] => hex(&[*a, *b]).map(|v| (vec![v as u8], 3)),
            [b'\\', b'x', a, b, ..] => hex(&[*a, *b]).map(|v| (vec![v as u8], 4)),
            [b'\\', b'u', a, b, c, d, ..] => hex(&[*a, *b, *c, *d]).map(|v| {
                let mut decoded = Vec::new();
                push_char(&mut decoded, v);
                (decoded, 6)
            }),
            [b'\\', next, ..] if next.is_ascii() => Some((vec![*next], 2)),
            [b'&', ..] => {
                let end = rest.iter().take(10).position(|&b| b == b';');
                end.and_then(|end| {
                    let name = &rest[1..end];
                    let code = match name {
                        b"amp" => Some(u32::from(b'&')),
                        b"lt" => Some(u32::from(b'<')),
                        b"gt" => Some(u32::from(b'>')),
                        b"quot" => Some(u32::from(b'"')),
                        b"apos" => Some(u32::from(b'\'')),
                        [b'#', b'x' | b'X', digits @ ..] => hex(digits),
                        [b'#', digits @ ..] => std::str::from_utf8(digits).ok()?.parse().ok(),
                        _ => None,
                    }?;
                    let mut decoded = Vec::new();
                    push_char(&mut decoded, code);
                    Some((decoded, end + 1))
                })
            }
            _ => None,
        };
        match escape {
            Some((decoded, len)) => {
                out.extend_from_slice(&decoded);
                i += len;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn looks_like_credential(word: &str) -> bool {
    let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let token_char = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    core.len() >= 16
        && core.chars().all(token_char)
        && core.chars().any(|c| c.is_ascii_digit())
        && core.chars().any(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_the_kind() {
        let e = Error::new(
            Kind::OAuth {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_client".into(),
            },
            "x",
        );
        assert!(e.is_token_endpoint() && e.is_credentials() && e.is_permanent());
        assert!(!e.is_transient());
        assert_eq!(e.oauth_error(), Some("invalid_client"));

        let e = Error::new(Kind::Status(StatusCode::SERVICE_UNAVAILABLE), "x")
            .retrying_after(Some(Duration::from_secs(7)));
        assert!(e.is_transient() && !e.is_permanent());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

        let e = Error::new(Kind::InsecureScheme, "x");
        assert!(e.is_insecure_scheme() && !e.is_token_endpoint() && !e.is_permanent());
    }

    /// A server that re-encodes the secret before echoing it: every form is withheld, in
    /// every position, and an ordinary description still shows.
    #[test]
    fn a_re_encoded_secret_is_withheld() {
        let secret = "Xy9 p@ss/w&rd+Zé";
        let echoes = [
            "Xy9%20p%40ss%2Fw%26rd%2BZ%C3%A9",
            "xy9%20p%40ss%2fw%26rd%2bz%c3%a9",
            "Xy9+p%40ss%2Fw%26rd%2BZé",
            "Xy9%2520p%2540ss%252Fw%2526rd%252BZ%25C3%25A9",
            "Xy9 p&#64;ss&#x2F;w&amp;rd+Z&#xE9;",
            "Xy9 p@ss/w&amp;rd&#43;Z&#233;",
            "Xy9 p\\u0040ss\\/w\\u0026rd+Z\\u00e9",
            "Xy9 p\\x40ss/w\\x26rd+Zé",
            "XY9 P@SS/W&RD+ZÉ",
            "xy9 p@ss/w&rd zé",
        ];
        for echo in echoes {
            for text in [echo.to_owned(), format!("client secret {echo} is wrong")] {
                let shown = scrub(&text, 200, &[secret]);
                assert_eq!(shown, "[redacted]", "{text:?}");
            }
        }
        // Withheld only when the whole secret is there; short secrets are not folded.
        let ordinary = "The client credentials are invalid";
        assert_eq!(scrub(ordinary, 200, &[secret]), ordinary);
        assert_eq!(
            scrub("Xy9 p@ss and more", 200, &[secret]),
            "Xy9 p@ss and more"
        );
        assert_eq!(scrub("INVALID", 200, &["invalid"]), "INVALID");
        // Broken escapes and bytes that are not UTF-8 once decoded: no panic.
        for odd in [
            "%",
            "%zz",
            "%ff%fe",
            "\\u12",
            "\\ud800",
            "&#99999999999;",
            "&#x;",
            "é%",
        ] {
            assert_eq!(scrub(odd, 200, &[secret]), odd);
        }
    }

    #[test]
    fn scrub_shortens_flattens_and_redacts() {
        let s = scrub("line\none s3cret and more", 100, &["s3cret"]);
        assert_eq!(s, "line one [redacted] and more");
        let s = scrub("tok abcdef x", 100, &["c", "abcdef"]);
        assert_eq!(s, "tok [redacted] x", "a secret inside another");
        let s = scrub("a1b2 x defg", 100, &["e", "b2", "a1b"]);
        assert_eq!(s, "[redacted] x d[redacted]fg", "overlapping secrets");
        assert_eq!(scrub("abcdef", 3, &[]), "abc…");
        let s = scrub("token fake-1-63be29759c1e1aa1, expired.", 100, &[]);
        assert_eq!(s, "token [redacted] expired.");
        let s = scrub("The client credentials are invalid", 100, &[]);
        assert_eq!(s, "The client credentials are invalid");
    }
}
