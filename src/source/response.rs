//! Reading the token endpoint's answer: the body into a buffer that is wiped afterwards,
//! then a token and its lifetime, or a typed error that says what to do. Never panics,
//! whatever the bytes; never makes an unwiped copy of the token (the JSON is read in place,
//! the token borrowed from the buffer); never puts a known secret, the Basic credential or
//! the token into a message, whichever field the server echoes it in.

use std::fmt;
use std::pin::pin;
use std::time::{Duration, SystemTime};

use bytes::Buf;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_RESPONSE_BYTES};
use crate::error::{is_transient_status, scrub, BoxError, Error, Kind};
use crate::token::AccessToken;

/// Who answered, for messages: the token endpoint's host (and port, if not the default),
/// whether it is Docplanner's, and the secrets that must never appear in a message even if
/// the server echoes them (the client secret as given and form-urlencoded, the exact Basic
/// credential sent, see [`basic_credential`](crate::secret::basic_credential), and the
/// last token obtained).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) host: &'a str,
    pub(crate) docplanner: bool,
    pub(crate) scope: &'a str,
    pub(crate) secrets: [&'a str; 4],
}

impl Context<'_> {
    /// The market's domain for Docplanner ("check the client id and secret for
    /// doctoralia.es"), the host (and port) for anyone else.
    fn domain(&self) -> &str {
        if self.docplanner {
            self.host.strip_prefix("www.").unwrap_or(self.host)
        } else {
            self.host
        }
    }

    /// Who can fix the server's side: "Docplanner", or the provider's administrator.
    fn who(&self) -> &'static str {
        if self.docplanner {
            "Docplanner"
        } else {
            "the provider's administrator"
        }
    }
}

/// Read a token response body, at most [`MAX_TOKEN_RESPONSE_BYTES`], into a buffer that is
/// wiped when dropped (and wiped before each of its rare reallocations), so that the token
/// it holds leaves no copy of ours behind. The body's own chunks belong to the HTTP client.
///
/// Fails with the body's error, or a `LengthLimitError` when the body is too large.
pub(crate) async fn read_body<B>(body: B) -> Result<Zeroizing<Vec<u8>>, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let hint = body.size_hint();
    let expected = hint.exact().unwrap_or(hint.lower());
    let mut buffer = Zeroizing::new(Vec::with_capacity(
        usize::try_from(expected).map_or(1024, |n| n.clamp(1024, MAX_TOKEN_RESPONSE_BYTES)),
    ));
    let mut body = pin!(Limited::new(body, MAX_TOKEN_RESPONSE_BYTES));
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame?.into_data() else {
            continue; // trailers
        };
        while data.has_remaining() {
            let chunk = data.chunk();
            make_room(&mut buffer, chunk.len());
            buffer.extend_from_slice(chunk);
            let read = chunk.len();
            data.advance(read);
        }
    }
    Ok(buffer)
}

/// Make room in `buffer` for `more` bytes, so that the `extend_from_slice` that follows
/// never reallocates (the `Vec` would leave the old allocation unwiped): when short, the
/// contents move to a buffer at least twice as large and the old one is wiped as it drops.
fn make_room(buffer: &mut Zeroizing<Vec<u8>>, more: usize) {
    if buffer.capacity() - buffer.len() < more {
        let needed = buffer.len() + more;
        let mut grown = Zeroizing::new(Vec::with_capacity(needed.max(2 * buffer.len())));
        grown.extend_from_slice(buffer);
        *buffer = grown;
    }
}

/// Parse a token endpoint answer into the token string and its lifetime (capped at 24 h).
///
/// Public (hidden) for the fuzz target and property tests only.
#[doc(hidden)]
pub fn parse_token_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, Duration), Error> {
    let cx = Context {
        host: "token.example",
        docplanner: false,
        scope: "integration",
        secrets: ["", "", "", ""],
    };
    let token = parse(status, headers, body, &cx, Instant::now())?;
    Ok((token.secret().to_owned(), token.lifetime()))
}

/// Parse a token endpoint answer into a token obtained at `obtained_at`.
pub(crate) fn parse(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    cx: &Context<'_>,
    obtained_at: Instant,
) -> Result<AccessToken, Error> {
    // An object only: serde would also read a struct from a JSON array, field by field.
    let answer = body
        .trim_ascii_start()
        .starts_with(b"{")
        .then(|| serde_json::from_slice::<Answer<'_>>(body).ok())
        .flatten();
    // Every value a server could echo that must not be printed: the secret, the Basic
    // credential, the last token, and the token of this very answer.
    let token_text = match answer.as_ref().and_then(|a| a.access_token.as_ref()) {
        Some(Field::Text(text)) => text.as_str(),
        _ => "",
    };
    let [secret, encoded, basic, last_token] = cx.secrets;
    let known = [secret, encoded, basic, last_token, token_text];
    if let Some(Field::Text(code)) = answer.as_ref().and_then(|a| a.error.as_ref()) {
        let answer = answer.as_ref();
        let description = answer.and_then(|a| a.error_description.as_ref());
        return Err(oauth_error(
            status,
            code.as_str(),
            description,
            headers,
            cx,
            &known,
        ));
    }
    if !status.is_success() {
        return Err(status_error(status, headers, cx));
    }
    let Some(answer) = &answer else {
        return Err(invalid(format!(
            "the token endpoint {} answered {status} with {}, not a JSON token: check the \
             token URL (a proxy or captive portal may be answering instead)",
            cx.host,
            describe_body(headers, body)
        )));
    };
    match &answer.access_token {
        Some(Field::Text(token)) if !token.as_str().is_empty() => {}
        Some(Field::Text(_)) => {
            return Err(invalid(format!(
                "the token endpoint {} returned an empty access_token: check that this client \
                 may use the client-credentials grant",
                cx.host
            )))
        }
        Some(_) => {
            return Err(invalid(format!(
                "the token endpoint {} returned an access_token that is not a string: check \
                 the token URL",
                cx.host
            )))
        }
        None => {
            return Err(invalid(format!(
                "the token endpoint {} answered {status} without an access_token: check the \
                 token URL",
                cx.host
            )))
        }
    }
    match &answer.token_type {
        None => {} // Docplanner always sends it; tolerate its absence (or null).
        Some(Field::Text(t)) if t.as_str().eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            return Err(invalid(format!(
                "the token endpoint {} returned a token of type {}, not a bearer token: \
                 this client only sends bearer tokens",
                cx.host,
                match other {
                    Field::Text(t) => format!("{:?}", scrub(t.as_str(), 40, &known)),
                    other => other.json_type().to_owned(),
                }
            )))
        }
    }
    let lifetime = lifetime(answer.expires_in.as_ref(), cx, &known)?;
    AccessToken::from_bytes(token_text.as_bytes(), obtained_at, lifetime)
}

fn invalid(message: String) -> Error {
    Error::new(Kind::InvalidResponse, message)
}

/// The fields of a token response this crate reads; any other is skipped unread. `null`
/// and absent are the same (`None`).
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    access_token: Option<Field<'a>>,
    #[serde(borrow, default)]
    token_type: Option<Field<'a>>,
    #[serde(borrow, default)]
    expires_in: Option<Field<'a>>,
    #[serde(borrow, default)]
    error: Option<Field<'a>>,
    #[serde(borrow, default)]
    error_description: Option<Field<'a>>,
}

/// One JSON value of a token response, read in place: a string is borrowed from the body
/// (copied, into memory wiped on drop, only when it has escapes); arrays and objects are
/// skipped, only their type is kept.
enum Field<'a> {
    Bool,
    Number(Number),
    Text(Text<'a>),
    Array,
    Object,
}

/// A JSON string: borrowed from the body, or unescaped into memory wiped on drop.
enum Text<'a> {
    Borrowed(&'a str),
    Unescaped(Zeroizing<String>),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(text) => text,
            Text::Unescaped(text) => text,
        }
    }
}

impl Field<'_> {
    fn json_type(&self) -> &'static str {
        match self {
            Field::Bool => "boolean",
            Field::Number(_) => "number",
            Field::Text(_) => "string",
            Field::Array => "array",
            Field::Object => "object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Bool)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Field::Number(n.into()))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Field::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        // JSON has no NaN or infinity: serde_json never gives one.
        Number::from_f64(n)
            .map(Field::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Text(Text::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Field::Text(Text::Unescaped(Zeroizing::new(
            text.to_owned(),
        ))))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Field::Text(Text::Unescaped(Zeroizing::new(text))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Object)
    }
}

/// `expires_in`: a positive whole number of seconds (a numeric string is accepted too);
/// absent or null means [`DEFAULT_TOKEN_LIFETIME`]. Values above 24 h are capped later.
fn lifetime(
    expires_in: Option<&Field<'_>>,
    cx: &Context<'_>,
    known: &[&str],
) -> Result<Duration, Error> {
    let bad = |what: &str| {
        invalid(format!(
            "the token endpoint {} returned expires_in {what}: expected a positive number \
             of seconds",
            cx.host
        ))
    };
    let seconds = match expires_in {
        None => return Ok(DEFAULT_TOKEN_LIFETIME),
        Some(Field::Number(n)) => {
            if let Some(s) = n.as_u64() {
                s
            } else if n.as_i64().is_some() {
                return Err(bad(&format!("= {n} (negative)")));
            } else {
                match n.as_f64() {
                    Some(f) if (1.0..1.0e15).contains(&f) => f as u64,
                    Some(f) if f.is_finite() && f <= 0.0 => return Err(bad(&format!("= {n}"))),
                    _ => return Err(bad(&format!("= {n} (out of range)"))),
                }
            }
        }
        Some(Field::Text(s)) => match s.as_str().trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let shown = scrub(s.as_str(), 20, known);
                return Err(bad(&format!("= {shown:?} (not a number)")));
            }
        },
        Some(other) => return Err(bad(&format!("of type {}", other.json_type()))),
    };
    if seconds == 0 {
        return Err(bad("= 0 (the token would already be expired)"));
    }
    Ok(Duration::from_secs(seconds))
}

fn oauth_error(
    status: StatusCode,
    code: &str,
    description: Option<&Field<'_>>,
    headers: &HeaderMap,
    cx: &Context<'_>,
    known: &[&str],
) -> Error {
    let code = scrub(code, 40, known);
    let description = match description {
        Some(Field::Text(d)) => format!(": {}", scrub(d.as_str(), 120, known)),
        _ => String::new(),
    };
    let host = cx.host;
    let domain = cx.domain();
    let advice = match code.as_str() {
        "invalid_client" => format!("check the client id and secret for {domain}"),
        "unauthorized_client" => format!(
            "this client may not use the client-credentials grant on {domain}: ask {} to \
             enable it",
            cx.who()
        ),
        "invalid_scope" if cx.docplanner && cx.scope == super::DEFAULT_SCOPE => format!(
            "the scope `integration` was refused: ask Docplanner to enable integrations for \
             this client on {domain}"
        ),
        "invalid_scope" if cx.docplanner => format!(
            "the scope `{}` was refused: Docplanner integrations use the scope `integration`",
            cx.scope
        ),
        "invalid_scope" if cx.scope.is_empty() => format!(
            "no scope was sent and {domain} wants one: set it with \
             ClientCredentialsBuilder::scope"
        ),
        "invalid_scope" => format!(
            "the scope `{}` was refused by {domain}: set the scopes this client may ask for \
             with ClientCredentialsBuilder::scope (or none with no_scope)",
            cx.scope
        ),
        "invalid_request" | "unsupported_grant_type" | "invalid_grant" => {
            "the token request itself was refused: a proxy may be altering it; if not, please \
             report it as a docplanner-auth bug"
                .to_owned()
        }
        _ if is_transient_status(status) => "retrying with backoff".to_owned(),
        _ => format!("check the client's configuration for {domain}"),
    };
    // An OAuth error on a 200 is still an error; report it as a 400.
    let status = if status.is_success() {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    Error::new(
        Kind::OAuth {
            status,
            code: code.clone(),
        },
        format!("the token endpoint {host} answered {status} {code}{description}: {advice}"),
    )
    .retrying_after(retry_after(headers))
}

fn status_error(status: StatusCode, headers: &HeaderMap, cx: &Context<'_>) -> Error {
    let host = cx.host;
    let domain = cx.domain();
    let delay = retry_after(headers);
    let advice = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            format!("check the client id and secret for {domain}")
        }
        StatusCode::TOO_MANY_REQUESTS => match delay {
            Some(d) => format!(
                "token requests are rate limited; retrying in {}s",
                d.as_secs()
            ),
            None => "token requests are rate limited; retrying with backoff".to_owned(),
        },
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if cx.docplanner => {
            "check the token URL (it should end in /oauth/v2/token)".to_owned()
        }
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            "check the token URL (the provider's token endpoint, as its discovery document \
             names it)"
                .to_owned()
        }
        s if s.is_redirection() && cx.docplanner => {
            "the token URL redirects: use the https://www.<domain>/oauth/v2/token URL".to_owned()
        }
        s if s.is_redirection() => {
            "the token URL redirects: use the URL it redirects to".to_owned()
        }
        s if is_transient_status(s) => {
            let side = if cx.docplanner {
                "Docplanner's side"
            } else {
                "the token endpoint's side"
            };
            match delay {
                Some(d) => format!("a problem on {side}; retrying in {}s", d.as_secs()),
                None => format!("a problem on {side}; retrying with backoff"),
            }
        }
        _ => "the token request was refused".to_owned(),
    };
    Error::new(
        Kind::Status(status),
        format!("the token endpoint {host} answered {status}: {advice}"),
    )
    .retrying_after(delay)
}

/// What a non-token body looks like, in a few words (never its content).
fn describe_body(headers: &HeaderMap, body: &[u8]) -> String {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if body.is_empty() {
        "an empty body".to_owned()
    } else if serde_json::from_slice::<IgnoredAny>(body).is_ok() {
        // Skipped unread: no copy of what it holds.
        "JSON that is not an object (or an object with a field given twice)".to_owned()
    } else if content_type.contains("html") || body.trim_ascii_start().starts_with(b"<") {
        "an HTML page".to_owned()
    } else {
        format!("{} bytes of something else", body.len())
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn ok(body: &str) -> Result<(String, Duration), Error> {
        parse_token_response(StatusCode::OK, &HeaderMap::new(), body.as_bytes())
    }

    #[test]
    fn docplanner_answer() {
        let (t, l) =
            ok(r#"{"access_token":"abc","expires_in":3600,"token_type":"bearer","scope":null}"#)
                .unwrap();
        assert_eq!((t.as_str(), l), ("abc", Duration::from_secs(3600)));
    }

    #[test]
    fn lenient_where_harmless() {
        assert_eq!(
            ok(r#"{"access_token":"a","token_type":"Bearer","expires_in":"60"}"#)
                .unwrap()
                .1,
            Duration::from_secs(60)
        );
        assert_eq!(
            ok(r#"{"access_token":"a"}"#).unwrap().1,
            DEFAULT_TOKEN_LIFETIME
        );
        assert_eq!(
            ok(r#"{"access_token":"a","expires_in":90.7}"#).unwrap().1,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(12)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::hash_map(
                    prop_oneof![
                        Just("access_token".to_owned()),
                        Just("expires_in".to_owned()),
                        Just("token_type".to_owned()),
                        Just("error".to_owned()),
                        ".{0,8}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..256)) {
            let status = StatusCode::from_u16(status).unwrap();
            let _ = parse_token_response(status, &HeaderMap::new(), &body);
        }

        #[test]
        fn arbitrary_json_never_panics(status in prop_oneof![Just(200u16), Just(400), Just(401), Just(503)], value in arb_json()) {
            let status = StatusCode::from_u16(status).unwrap();
            let body = serde_json::to_vec(&value).unwrap();
            match parse_token_response(status, &HeaderMap::new(), &body) {
                Ok((token, lifetime)) => {
                    prop_assert!(status.is_success());
                    prop_assert!(!token.is_empty());
                    prop_assert!(lifetime > Duration::ZERO);
                }
                Err(e) => prop_assert!(e.is_token_endpoint()),
            }
        }
    }

    /// The issue's example: id `lkgpde`, secret `YnvqjAxqfvmp`, Basic credential
    /// `bGtncGRlOlludnFqQXhxZnZtcA==` (no digit: the word heuristic misses it).
    const SECRET: &str = "YnvqjAxqfvmp";
    const BASIC: &str = "bGtncGRlOlludnFqQXhxZnZtcA";
    const TOKEN: &str = "tokenWithoutDigitsAtAll";

    /// Every field of a token response carrying the secret, the Basic credential (padded or
    /// not) or the answer's own token, under every status class: no `Display` or `Debug` of
    /// the resulting error contains any of them.
    #[test]
    fn an_echoed_secret_basic_credential_or_token_is_scrubbed_from_every_field() {
        let cx = Context {
            host: "www.doctoralia.es",
            docplanner: true,
            scope: "integration",
            secrets: [SECRET, "", BASIC, ""],
        };
        let padded = format!("{BASIC}==");
        let echoes = [
            SECRET.to_owned(),
            padded.clone(),
            BASIC.to_owned(),
            format!("lkgpde:{SECRET}"),
            format!("Basic {padded}"),
            TOKEN.to_owned(),
            format!("bad {SECRET} value"),
            format!("{TOKEN}/{SECRET}"),
        ];
        let fields = [
            "access_token",
            "token_type",
            "expires_in",
            "scope",
            "error",
            "error_description",
            "unknown",
        ];
        let mut errors = 0;
        let mut shown_fields = std::collections::BTreeSet::new();
        for status in [200, 400, 401, 503] {
            let status = StatusCode::from_u16(status).unwrap();
            for field in fields {
                for echo in &echoes {
                    let mut answer = serde_json::json!({
                        "access_token": TOKEN,
                        "token_type": "bearer",
                        "expires_in": 3600,
                    });
                    // The echo once as the field's value, once JSON-escaped (`\u0059…`).
                    if field == "error_description" {
                        answer["error"] = "invalid_client".into();
                    }
                    answer[field] = Value::String(echo.clone());
                    let plain = answer.to_string();
                    let escaped = plain.replace('Y', "\\u0059");
                    for body in [plain, escaped] {
                        let Err(error) = parse(
                            status,
                            &HeaderMap::new(),
                            body.as_bytes(),
                            &cx,
                            Instant::now(),
                        ) else {
                            continue;
                        };
                        errors += 1;
                        for shown in [error.to_string(), format!("{error:?}")] {
                            for secret in [SECRET, BASIC, TOKEN] {
                                assert!(
                                    !shown.contains(secret),
                                    "{status} {field}={echo:?}: {shown}"
                                );
                            }
                            if shown.contains("[redacted]") {
                                shown_fields.insert(field);
                            }
                        }
                    }
                }
            }
        }
        assert!(errors >= 300, "{errors} error paths tried");
        // The fields a message quotes, each scrubbed rather than dropped.
        assert_eq!(
            shown_fields.into_iter().collect::<Vec<_>>(),
            ["error", "error_description", "expires_in", "token_type"]
        );
    }

    /// Each answer the token endpoint can refuse with gets the advice of its own case: who
    /// can fix it (Docplanner or the provider), what to check, whether it is retried.
    #[test]
    fn every_refusal_has_its_own_advice() {
        let docplanner = Context {
            host: "www.doctoralia.es",
            docplanner: true,
            scope: "integration",
            secrets: ["", "", "", ""],
        };
        let docplanner_other_scope = Context {
            scope: "calendar",
            ..docplanner
        };
        let other = Context {
            host: "login.example.com:8443",
            docplanner: false,
            scope: "orders:read",
            secrets: ["", "", "", ""],
        };
        let other_no_scope = Context { scope: "", ..other };
        let oauth = |code: &str| format!(r#"{{"error":"{code}"}}"#);
        let rows: [(&Context<'_>, u16, Option<&str>, String, &str); 22] = [
            // OAuth errors (RFC 6749 §5.2), by code.
            (&docplanner, 401, None, oauth("invalid_client"),
             "answered 401 Unauthorized invalid_client: check the client id and secret for doctoralia.es"),
            (&other, 400, None, oauth("unauthorized_client"),
             "on login.example.com:8443: ask the provider's administrator to enable it"),
            (&docplanner, 400, None, oauth("invalid_scope"),
             "ask Docplanner to enable integrations for this client on doctoralia.es"),
            (&docplanner_other_scope, 400, None, oauth("invalid_scope"),
             "the scope `calendar` was refused: Docplanner integrations use the scope `integration`"),
            (&other_no_scope, 400, None, oauth("invalid_scope"),
             "no scope was sent and login.example.com:8443 wants one"),
            (&other, 400, None, oauth("invalid_scope"),
             "the scope `orders:read` was refused by login.example.com:8443: set the scopes"),
            (&other, 400, None, oauth("invalid_request"), "a proxy may be altering it"),
            (&other, 400, None, oauth("unsupported_grant_type"), "a proxy may be altering it"),
            (&docplanner, 400, None, oauth("invalid_grant"), "a proxy may be altering it"),
            (&other, 503, None, oauth("temporarily_unavailable"),
             "answered 503 Service Unavailable temporarily_unavailable: retrying with backoff"),
            (&other, 400, None, oauth("server_error"),
             "server_error: check the client's configuration for login.example.com:8443"),
            // An OAuth error on a 200 is reported as a 400, with its description.
            (&other, 200, None, r#"{"error":"access_denied","error_description":"no"}"#.to_owned(),
             "answered 400 Bad Request access_denied: no: check the client's configuration"),
            // No OAuth error: by status.
            (&docplanner, 403, None, String::new(),
             "answered 403 Forbidden: check the client id and secret for doctoralia.es"),
            (&other, 429, Some("12"), String::new(), "rate limited; retrying in 12s"),
            (&other, 429, None, String::new(), "rate limited; retrying with backoff"),
            (&docplanner, 405, None, String::new(), "(it should end in /oauth/v2/token)"),
            (&other, 404, None, String::new(), "as its discovery document names it"),
            (&docplanner, 301, None, String::new(),
             "redirects: use the https://www.<domain>/oauth/v2/token URL"),
            (&other, 307, None, String::new(), "redirects: use the URL it redirects to"),
            (&docplanner, 502, Some("7"), String::new(),
             "a problem on Docplanner's side; retrying in 7s"),
            (&other, 500, None, String::new(),
             "a problem on the token endpoint's side; retrying with backoff"),
            (&other, 400, None, String::new(),
             "answered 400 Bad Request: the token request was refused"),
        ];
        for (cx, status, retry, body, advice) in rows {
            let mut headers = HeaderMap::new();
            if let Some(seconds) = retry {
                headers.insert(RETRY_AFTER, seconds.parse().unwrap());
            }
            let status = StatusCode::from_u16(status).unwrap();
            let error = parse(status, &headers, body.as_bytes(), cx, Instant::now()).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(advice), "{status} {body}: {message}");
            let delay = retry.map(|s| Duration::from_secs(s.parse().unwrap()));
            assert_eq!(error.retry_after(), delay, "{message}");
        }
    }

    /// The buffer a token is read into always has room for the next chunk before it is
    /// appended (so the `Vec` never reallocates it unwiped), keeps its bytes when it grows,
    /// and is not moved when the chunk fits.
    #[test]
    fn the_body_buffer_grows_only_by_make_room() {
        let mut buffer = Zeroizing::new(Vec::with_capacity(16));
        buffer.extend_from_slice(b"0123456789");
        let before = buffer.as_ptr();
        make_room(&mut buffer, 6);
        assert_eq!(
            (buffer.as_ptr(), buffer.len()),
            (before, 10),
            "it fits: no move"
        );
        for more in [7, 100, 1000] {
            make_room(&mut buffer, more);
            assert!(buffer.capacity() - buffer.len() >= more, "room for {more}");
            assert!(buffer.capacity() >= 2 * buffer.len(), "it at least doubles");
            assert_eq!(&buffer[..10], b"0123456789");
            let len = buffer.len();
            buffer.resize(len + more, b'x');
        }
        let mut empty = Zeroizing::new(Vec::new());
        make_room(&mut empty, 5);
        assert!(empty.capacity() >= 5);
    }

    /// The parser reads the token in place: one owned copy only when it has JSON escapes.
    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let body = br#"{"access_token":"abc","error":"x\u0041y"}"#;
        let answer: Answer<'_> = serde_json::from_slice(body).unwrap();
        assert!(matches!(
            answer.access_token,
            Some(Field::Text(Text::Borrowed("abc")))
        ));
        match answer.error {
            Some(Field::Text(Text::Unescaped(text))) => assert_eq!(text.as_str(), "xAy"),
            _ => panic!("an escaped string is unescaped"),
        }
    }
}
