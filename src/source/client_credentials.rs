//! [`ClientCredentials`]: the OAuth2 client-credentials grant over any tower HTTP service.

use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::{Full, LengthLimitError};
use tokio::time::Instant;
use tower_service::Service;
use tracing::Instrument as _;
use zeroize::Zeroizing;

use super::response::{parse, read_body, Context};
use super::{TokenSource, DEFAULT_SCOPE, MAX_TOKEN_RESPONSE_BYTES};
use crate::docplanner::Domain;
use crate::error::{scrub, BoxError, Error, Kind};
use crate::origin::{require_secure, Origin};
use crate::secret::{basic_credential, sensitive_header, wiped_bytes};
use crate::token::AccessToken;

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
///
/// The default is [`BasicAsGiven`](ClientAuth::BasicAsGiven) for Docplanner's token URLs
/// (what its guide's `curl -u` example sends) and [`Basic`](ClientAuth::Basic) for every
/// other provider. For ids and secrets made of letters, digits and `-._~` only (as
/// Docplanner issues them) both Basic forms are the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`) with the id and the secret form-urlencoded
    /// first, as RFC 6749 §2.3.1 asks: a `:` in the id travels as `%3A`. The default for
    /// providers other than Docplanner (Keycloak, Entra ID, Okta, Auth0…).
    Basic,
    /// HTTP Basic with the id and the secret as given, as `curl -u` sends them: what
    /// Docplanner's guide does, and the default for its token URLs. The id may not
    /// contain `:` (the server could not tell where it ends).
    BasicAsGiven,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body, no
    /// `Authorization` header. For servers or applications configured to accept only this.
    Post,
}

/// The OAuth2 client-credentials grant (RFC 6749 §4.4) over any tower HTTP service `C`.
///
/// Each fetch is one `POST` to the token URL with the form body
/// `grant_type=client_credentials`, the scopes (if any), any extra parameters (`audience`,
/// `resource`…), and the client's credentials as [`ClientAuth`] says. `C` is any
/// `Service<http::Request<Full<Bytes>>>`, so the token call can go through the same TLS,
/// proxy, tracing and timeout stack as the rest of the application.
///
/// For Docplanner's token URLs (`https://www.{domain}/oauth/v2/token` of the 13 markets,
/// or any built by [`docplanner::Credentials`](crate::docplanner::Credentials)) the
/// defaults are Docplanner's: scope `integration`, Basic credentials as given, messages
/// that name Docplanner. For any other token URL: no scope, RFC 6749 Basic, messages
/// about "the token endpoint".
///
/// The token URL must be `https` (plain http only to a loopback host, with
/// [`allow_http_loopback`](ClientCredentialsBuilder::allow_http_loopback)). The secret is
/// zeroized on drop and never printed: `Debug` shows the client id and the token URL only.
///
/// ```
/// # #[cfg(feature = "client")] {
/// use docplanner_auth::{ClientCredentials, TokenCache};
///
/// let http = docplanner_auth::client::https_client::<http_body_util::Full<bytes::Bytes>>()?;
/// let source = ClientCredentials::new(
///     http,
///     "https://www.doctoralia.es/oauth/v2/token",
///     "my-client-id",
///     "my-client-secret",
/// )?;
/// let cache = TokenCache::new(source);
/// # let _ = cache;
/// # }
/// # Ok::<(), docplanner_auth::Error>(())
/// ```
///
/// Another provider, with the builder (see the crate docs' "Other providers" section):
///
/// ```
/// use docplanner_auth::source::ClientAuth;
/// use docplanner_auth::ClientCredentials;
///
/// # fn run<C>(http: C) -> Result<(), docplanner_auth::Error> {
/// let source = ClientCredentials::builder(
///     "https://login.example.com/oauth2/token",
///     "my-client-id",
///     "my-client-secret",
/// )
/// .scopes(["orders:read", "orders:write"])
/// .param("audience", "https://api.example.com")
/// .client_auth(ClientAuth::Post)
/// .build(http)?;
/// assert_eq!(source.scope(), "orders:read orders:write");
/// # Ok(()) }
/// # run(()).unwrap();
/// ```
#[derive(Clone)]
pub struct ClientCredentials<C> {
    client: C,
    token_url: Uri,
    /// `host[:port]` of the token URL (the port only when it is not the default): for
    /// messages, spans and the default cache name.
    authority: String,
    /// Whether the token URL is Docplanner's (defaults and wording).
    docplanner: bool,
    client_id: String,
    /// The scopes, space-separated; empty when none is sent.
    scope: String,
    /// The extra form parameters, form-encoded (`&name=value…`), for the store key.
    params: String,
    auth: ClientAuth,
    /// `Basic base64(id:secret)`, marked sensitive, built once; `None` for [`ClientAuth::Post`].
    authorization: Option<HeaderValue>,
    /// The form body, built once (wiped on drop: it holds the secret with `Post`).
    form: Bytes,
    /// Kept only to scrub it from any message that would echo it.
    secret: Zeroizing<String>,
    /// The secret form-urlencoded (as `client_secret_post` and RFC Basic send it), to
    /// scrub an echo of that form too.
    encoded_secret: Zeroizing<String>,
    /// The last token obtained (sharing its wiped bytes), kept only to scrub it by value
    /// from a later answer that would echo it.
    last_token: Arc<Mutex<Option<AccessToken>>>,
}

impl<C> ClientCredentials<C> {
    /// The grant for `client_id`/`client_secret` at `token_url` over `client`, with the
    /// provider's defaults (see above).
    pub fn new(
        client: C,
        token_url: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, Error> {
        ClientCredentials::builder(token_url, client_id, client_secret).build(client)
    }

    /// The token URL.
    pub fn token_url(&self) -> &Uri {
        &self.token_url
    }

    /// The client id (not a secret).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The scopes asked for, space-separated as sent; empty when none is sent.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// How the client authenticates to the token endpoint.
    pub fn client_auth(&self) -> ClientAuth {
        self.auth
    }

    /// The key under which a [`TokenStore`](crate::store::TokenStore) shares this grant's
    /// tokens: a hash of (token URL, client id, scope and extra parameters), never the
    /// secret.
    pub fn store_key(&self) -> crate::store::StoreKey {
        let scope = if self.params.is_empty() {
            self.scope.clone()
        } else {
            // A newline never appears in a scope: no grant without parameters collides.
            format!("{}\n{}", self.scope, self.params)
        };
        crate::store::StoreKey::new(&self.token_url.to_string(), &self.client_id, &scope)
    }

    /// The HTTP service the token requests go through.
    pub fn get_ref(&self) -> &C {
        &self.client
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, Error> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        request.body(Full::new(self.form.clone())).map_err(|e| {
            Error::with_source(Kind::Config, "could not build the token request", e.into())
        })
    }

    fn context<'a>(&'a self, last_token: Option<&'a AccessToken>) -> Context<'a> {
        Context {
            host: &self.authority,
            docplanner: self.docplanner,
            scope: &self.scope,
            secrets: [
                self.secret.as_str(),
                self.encoded_secret.as_str(),
                self.authorization.as_ref().map_or("", basic_credential),
                last_token.map_or("", AccessToken::secret),
            ],
        }
    }
}

impl ClientCredentials<()> {
    /// A builder, to choose the scopes, extra parameters and client authentication, or to
    /// allow a plain-http loopback token URL; the HTTP service is given last, to
    /// [`ClientCredentialsBuilder::build`].
    pub fn builder(
        token_url: &str,
        client_id: &str,
        client_secret: &str,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            token_url: token_url.to_owned(),
            client_id: client_id.to_owned(),
            secret: Zeroizing::new(client_secret.to_owned()),
            scopes: None,
            params: Vec::new(),
            auth: None,
            docplanner: false,
            allow_http_loopback: false,
        }
    }
}

impl<C, RB> ClientCredentials<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    RB: Body + Send,
    RB::Data: Send,
    RB::Error: Into<BoxError>,
{
    async fn fetch_token(&self) -> Result<AccessToken, Error> {
        let started = Instant::now();
        let request = self.request()?;
        let mut client = self.client.clone();
        let transport = |what: &str, e: BoxError| {
            Error::with_source(
                Kind::Transport,
                format!(
                    "{what} the token endpoint {}: check the network, DNS and proxy settings; \
                     retrying with backoff",
                    self.authority
                ),
                e,
            )
        };
        poll_fn(|cx| client.poll_ready(cx))
            .await
            .map_err(|e| transport("the HTTP client was not ready to reach", e.into()))?;
        let response = client
            .call(request)
            .await
            .map_err(|e| transport("could not reach", e.into()))?;
        let (head, body) = response.into_parts();
        let body = match read_body(body).await {
            Ok(body) => body,
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(Error::new(
                    Kind::InvalidResponse,
                    format!(
                        "the token endpoint {} answered {} with a body larger than {} KiB: \
                         check the token URL",
                        self.authority,
                        head.status,
                        MAX_TOKEN_RESPONSE_BYTES / 1024
                    ),
                ))
            }
            Err(e) => {
                return Err(transport(
                    "the connection broke while reading the answer of",
                    e,
                ))
            }
        };
        let last = self.last_token.lock().ok().and_then(|last| last.clone());
        let token = parse(
            head.status,
            &head.headers,
            &body,
            &self.context(last.as_ref()),
            started,
        )?;
        if let Ok(mut last) = self.last_token.lock() {
            *last = Some(token.clone());
        }
        Ok(token)
    }
}

impl<C, RB> TokenSource for ClientCredentials<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    RB: Body + Send + 'static,
    RB::Data: Send,
    RB::Error: Into<BoxError>,
{
    async fn fetch(&self) -> Result<AccessToken, BoxError> {
        let span = tracing::debug_span!(
            "docplanner_auth.token_fetch",
            host = %self.authority,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self.fetch_token().instrument(span.clone()).await;
        span.record("duration_ms", started.elapsed().as_millis() as u64);
        match &result {
            Ok(_) => span.record("outcome", "ok"),
            Err(e) if e.is_transient() => span.record("outcome", "transient_error"),
            Err(_) => span.record("outcome", "permanent_error"),
        };
        result.map_err(BoxError::from)
    }

    fn cache_name(&self) -> Option<&str> {
        Some(&self.authority)
    }
}

impl<C> fmt::Debug for ClientCredentials<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &format_args!("{}", self.token_url))
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("scope", &self.scope)
            .field("client_auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ClientCredentials`]; see [`ClientCredentials::builder`].
pub struct ClientCredentialsBuilder {
    token_url: String,
    client_id: String,
    secret: Zeroizing<String>,
    /// `None`: the provider's default (`integration` for Docplanner, none otherwise).
    scopes: Option<Vec<String>>,
    params: Vec<(String, String)>,
    /// `None`: the provider's default.
    auth: Option<ClientAuth>,
    /// Set by [`docplanner`](crate::docplanner) for its own token URLs, custom domains
    /// included; the 13 known markets' hosts are recognised anyway.
    docplanner: bool,
    allow_http_loopback: bool,
}

/// Form parameters the grant sets itself, refused by [`ClientCredentialsBuilder::param`].
const RESERVED_PARAMS: [&str; 4] = ["grant_type", "scope", "client_id", "client_secret"];

impl ClientCredentialsBuilder {
    /// The scope(s) to ask for, space-separated as RFC 6749 §3.3 writes them (`"a b"` is
    /// two scopes); `""` asks for none. Default: [`DEFAULT_SCOPE`] (`integration`) for
    /// Docplanner, none for other providers.
    pub fn scope(self, scope: &str) -> Self {
        self.scopes(scope.split(' ').filter(|s| !s.is_empty()))
    }

    /// The scopes to ask for, one per item (sent space-separated); none for an empty list.
    pub fn scopes<I>(mut self, scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Send no `scope` parameter (the server grants its default scopes).
    pub fn no_scope(self) -> Self {
        self.scopes(std::iter::empty::<String>())
    }

    /// An extra form parameter sent with every token request, such as `audience` (Auth0)
    /// or `resource` (RFC 8707); may be repeated. `grant_type`, `scope`, `client_id` and
    /// `client_secret` are set by the grant itself and refused here.
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    /// How the client authenticates (default: [`ClientAuth::BasicAsGiven`] for Docplanner,
    /// [`ClientAuth::Basic`] otherwise).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Docplanner's defaults and wording for a token URL this crate cannot recognise as
    /// Docplanner's by its host (a custom market domain).
    pub(crate) fn docplanner(mut self) -> Self {
        self.docplanner = true;
        self
    }

    /// Allow a plain `http` token URL to a loopback host (`127.0.0.0/8`, `::1`,
    /// `localhost`), for tests against a local mock. Off by default; never needed for the
    /// fake Docplanner of the `test-util` feature, which speaks HTTPS.
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        self.allow_http_loopback = allow;
        self
    }

    /// The grant over `client`.
    pub fn build<C>(self, client: C) -> Result<ClientCredentials<C>, Error> {
        let origin = Origin::parse_config("token URL", &self.token_url)?;
        require_secure(&origin, self.allow_http_loopback, "token URL")?;
        let token_url: Uri = self
            .token_url
            .parse()
            .map_err(|_| Error::config("the token URL is not a valid URL"))?;
        let authority = token_url.authority().map_or_else(
            || origin.host().to_owned(),
            |a| a.as_str().to_ascii_lowercase(),
        );
        let docplanner = self.docplanner || is_docplanner_host(origin.host());
        let provider = if docplanner {
            "Docplanner"
        } else {
            "the provider"
        };
        let auth = self.auth.unwrap_or(if docplanner {
            ClientAuth::BasicAsGiven
        } else {
            ClientAuth::Basic
        });
        if self.client_id.is_empty() || self.client_id.chars().any(char::is_control) {
            return Err(Error::config(format!(
                "the client id must be non-empty, without control characters: give the id \
                {provider} issued"
            )));
        }
        if auth == ClientAuth::BasicAsGiven && self.client_id.contains(':') {
            return Err(Error::config(
                "the client id contains `:`, which HTTP Basic cannot carry as given: use \
                 ClientAuth::Basic (form-urlencoded, RFC 6749) or ClientAuth::Post",
            ));
        }
        if self.secret.is_empty() {
            return Err(Error::config(format!(
                "the client secret is empty: give the secret {provider} issued"
            )));
        }
        if self.secret.chars().any(char::is_control) {
            // Never quoted: it is the secret.
            return Err(Error::config(format!(
                "the client secret has a control character (a line break read from a file \
                 or a variable?): give the secret {provider} issued, on one line"
            )));
        }
        let scopes = self.scopes.unwrap_or_else(|| {
            if docplanner {
                vec![DEFAULT_SCOPE.to_owned()]
            } else {
                Vec::new()
            }
        });
        if let Some(bad) = scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(Error::config(format!(
                "the scope `{}` is not a scope token: printable ASCII without spaces, `\"` or \
                 `\\` (RFC 6749 §3.3); give several scopes as separate items",
                scrub(bad, 60, &[])
            )));
        }
        let scope = scopes.join(" ");
        if let Some((name, _)) = self
            .params
            .iter()
            .find(|(name, _)| name.is_empty() || RESERVED_PARAMS.contains(&name.as_str()))
        {
            return Err(Error::config(format!(
                "the form parameter `{name}` cannot be added: the grant sets grant_type, \
                 scope (use scope/scopes), client_id and client_secret (use client_auth) itself"
            )));
        }
        let mut params = String::new();
        for (name, value) in &self.params {
            params.push('&');
            form_encode_into(&mut params, name);
            params.push('=');
            form_encode_into(&mut params, value);
        }
        let authorization = match auth {
            ClientAuth::Post => None,
            ClientAuth::Basic => Some(basic(
                &form_encoded(&self.client_id),
                &form_encoded(&self.secret),
            )?),
            ClientAuth::BasicAsGiven => Some(basic(&self.client_id, &self.secret)?),
        };
        let form = form_body(&scope, &params, auth, &self.client_id, &self.secret);
        Ok(ClientCredentials {
            client,
            token_url,
            authority,
            docplanner,
            client_id: self.client_id,
            scope,
            params,
            auth,
            authorization,
            form,
            encoded_secret: form_encoded(&self.secret),
            secret: self.secret,
            last_token: Arc::default(),
        })
    }
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let param_names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ClientCredentialsBuilder")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("params", &param_names)
            .field("client_auth", &self.auth)
            .field("allow_http_loopback", &self.allow_http_loopback)
            .finish()
    }
}

/// Whether `host` is the token host of one of Docplanner's known markets
/// (`www.doctoralia.es`…).
fn is_docplanner_host(host: &str) -> bool {
    host.strip_prefix("www.")
        .is_some_and(|domain| Domain::all().any(|d| d.name() == domain))
}

/// RFC 6749 §3.3 `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// `Basic base64(id:secret)` as a sensitive header; the joined credentials are wiped.
fn basic(id: &str, secret: &str) -> Result<HeaderValue, Error> {
    // Sized up front so that no reallocation leaves an unwiped copy behind.
    let mut credentials = Zeroizing::new(String::with_capacity(id.len() + 1 + secret.len()));
    credentials.push_str(id);
    credentials.push(':');
    credentials.push_str(secret);
    let mut header = String::with_capacity(6 + credentials.len().div_ceil(3) * 4);
    header.push_str("Basic ");
    base64::engine::general_purpose::STANDARD.encode_string(credentials.as_bytes(), &mut header);
    sensitive_header(header.into_bytes())
        .map_err(|_| Error::config("the client id or secret cannot be sent in a header"))
}

/// The form body: `grant_type`, the scope, the extra parameters and, for
/// [`ClientAuth::Post`], the credentials. Wiped on drop, since it may hold the secret.
fn form_body(scope: &str, params: &str, auth: ClientAuth, id: &str, secret: &str) -> Bytes {
    let mut form = Zeroizing::new(String::with_capacity(
        64 + 3 * (scope.len() + id.len() + secret.len()) + params.len(),
    ));
    form.push_str("grant_type=client_credentials");
    if !scope.is_empty() {
        form.push_str("&scope=");
        form_encode_into(&mut form, scope);
    }
    form.push_str(params);
    if auth == ClientAuth::Post {
        form.push_str("&client_id=");
        form_encode_into(&mut form, id);
        form.push_str("&client_secret=");
        form_encode_into(&mut form, secret);
    }
    wiped_bytes(std::mem::take(&mut *form).into_bytes())
}

/// `value` form-urlencoded, in a string that is wiped on drop.
fn form_encoded(value: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(3 * value.len()));
    form_encode_into(&mut out, value);
    out
}

/// Append `application/x-www-form-urlencoded` `value` to `out`: unreserved bytes as they
/// are, space as `+`, everything else percent-encoded. Never grows `out` past `3 ×
/// value.len()` more bytes, so a buffer sized for it is never reallocated.
fn form_encode_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DOCPLANNER: &str = "https://www.doctoralia.es/oauth/v2/token";
    const OTHER: &str = "https://login.example.com:8443/realms/r/protocol/openid-connect/token";

    fn form_encode(value: &str) -> String {
        let mut out = String::new();
        form_encode_into(&mut out, value);
        out
    }

    /// The request's Basic credentials (decoded) and form body.
    fn sent(c: &ClientCredentials<()>) -> (Option<String>, String) {
        let request = c.request().unwrap();
        let basic = request.headers().get(AUTHORIZATION).map(|v| {
            assert!(v.is_sensitive());
            let encoded = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            String::from_utf8(decoded).unwrap()
        });
        let form = String::from_utf8(c.form.to_vec()).unwrap();
        (basic, form)
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("integration"), "integration");
        assert_eq!(form_encode("a b:c"), "a+b%3Ac");
        assert_eq!(form_encode("é/%"), "%C3%A9%2F%25");
    }

    #[test]
    fn config_is_validated() {
        let b = |url: &str, id: &str, secret: &str| {
            ClientCredentials::builder(url, id, secret)
                .build(())
                .map(|_| ())
        };
        assert!(b(DOCPLANNER, "id", "secret").is_ok());
        let empty = b(DOCPLANNER, "", "secret").unwrap_err();
        assert!(empty.is_config());
        assert!(
            !empty.to_string().contains("  "),
            "one space between words: {empty}"
        );
        assert!(b(DOCPLANNER, "a\nb", "secret").unwrap_err().is_config());
        // Docplanner's Basic credentials go as given: a `:` cannot; RFC Basic encodes it.
        assert!(b(DOCPLANNER, "a:b", "secret").unwrap_err().is_config());
        assert!(b(OTHER, "a:b", "secret").is_ok());
        assert!(b(DOCPLANNER, "id", "").unwrap_err().is_config());
        let newline = b(DOCPLANNER, "id", "s3cr3t-value\n").unwrap_err();
        assert!(newline.is_config() && !newline.to_string().contains("s3cr3t"));
        assert!(b("http://www.doctoralia.es/oauth/v2/token", "id", "s")
            .unwrap_err()
            .is_insecure_scheme());
        assert!(b("http://127.0.0.1:9/oauth/v2/token", "id", "s")
            .unwrap_err()
            .is_insecure_scheme());
        assert!(
            ClientCredentials::builder("http://127.0.0.1:9/t", "id", "s")
                .allow_http_loopback(true)
                .build(())
                .is_ok()
        );
    }

    #[test]
    fn messages_name_no_environment_variable_and_no_docplanner_for_others() {
        let e = ClientCredentials::new((), OTHER, "id", "").unwrap_err();
        assert!(!e.to_string().contains("DOCPLANNER"), "{e}");
        assert!(!e.to_string().contains("Docplanner"), "{e}");
        let e = ClientCredentials::new((), DOCPLANNER, "id", "").unwrap_err();
        assert!(!e.to_string().contains("DOCPLANNER_"), "{e}");
        assert!(e.to_string().contains("Docplanner"), "{e}");
    }

    #[test]
    fn scopes_none_one_several() {
        let with = |b: ClientCredentialsBuilder| b.build(()).unwrap();
        let other = || ClientCredentials::builder(OTHER, "id", "s");
        let c = with(other());
        assert_eq!(
            (c.scope(), sent(&c).1.as_str()),
            ("", "grant_type=client_credentials")
        );
        let c = with(other().scope("openid"));
        assert_eq!(sent(&c).1, "grant_type=client_credentials&scope=openid");
        let c = with(other().scopes(["a:read", "b/write"]));
        assert_eq!(c.scope(), "a:read b/write");
        assert_eq!(
            sent(&c).1,
            "grant_type=client_credentials&scope=a%3Aread+b%2Fwrite"
        );
        assert_eq!(with(other().scope(" a  b ")).scope(), "a b");
        let c = with(ClientCredentials::builder(DOCPLANNER, "id", "s"));
        assert_eq!(
            sent(&c).1,
            "grant_type=client_credentials&scope=integration"
        );
        let c = with(ClientCredentials::builder(DOCPLANNER, "id", "s").no_scope());
        assert_eq!(sent(&c).1, "grant_type=client_credentials");
        let c = with(ClientCredentials::builder(DOCPLANNER, "id", "s").scope(""));
        assert_eq!(c.scope(), "");
        for bad in ["", "a b", "quote\"", "back\\slash", "é"] {
            let e = other().scopes([bad]).build(()).unwrap_err();
            assert!(e.is_config(), "{bad}: {e}");
        }
    }

    #[test]
    fn extra_parameters_are_encoded_and_reserved_names_refused() {
        let c = ClientCredentials::builder(OTHER, "id", "s")
            .param("audience", "https://api.example.com/")
            .param("resource", "urn:a b")
            .param("resource", "urn:c")
            .build(())
            .unwrap();
        assert_eq!(
            sent(&c).1,
            "grant_type=client_credentials&audience=https%3A%2F%2Fapi.example.com%2F\
             &resource=urn%3Aa+b&resource=urn%3Ac"
        );
        for name in ["", "grant_type", "scope", "client_id", "client_secret"] {
            let e = ClientCredentials::builder(OTHER, "id", "s")
                .param(name, "x")
                .build(())
                .unwrap_err();
            assert!(e.is_config(), "{name}: {e}");
        }
    }

    #[test]
    fn client_authentication_methods() {
        let (id, secret) = ("app:1", "p@ss w%rd+é");
        // RFC 6749 §2.3.1: form-urlencode each, then Basic; the default for other providers.
        let c = ClientCredentials::new((), OTHER, id, secret).unwrap();
        assert_eq!(
            (c.client_id(), c.token_url().to_string().as_str()),
            (id, OTHER)
        );
        assert_eq!(c.client_auth(), ClientAuth::Basic);
        let (basic, form) = sent(&c);
        assert_eq!(basic.unwrap(), "app%3A1:p%40ss+w%25rd%2B%C3%A9");
        assert_eq!(form, "grant_type=client_credentials");
        // As given, Docplanner's default (as `curl -u` sends them).
        let c = ClientCredentials::new((), DOCPLANNER, "42_abc", secret).unwrap();
        assert_eq!(c.client_auth(), ClientAuth::BasicAsGiven);
        assert_eq!(sent(&c).0.unwrap(), format!("42_abc:{secret}"));
        // Unreserved characters only: both Basic forms are the same bytes.
        let rfc = ClientCredentials::builder(DOCPLANNER, "42_abc", "s3cr-et.~")
            .client_auth(ClientAuth::Basic)
            .build(())
            .unwrap();
        let given = ClientCredentials::new((), DOCPLANNER, "42_abc", "s3cr-et.~").unwrap();
        assert_eq!(rfc.authorization, given.authorization);
        // client_secret_post: no header, credentials in the form.
        let c = ClientCredentials::builder(OTHER, id, secret)
            .client_auth(ClientAuth::Post)
            .scope("s")
            .build(())
            .unwrap();
        let (basic, form) = sent(&c);
        assert_eq!(basic, None);
        assert_eq!(
            form,
            "grant_type=client_credentials&scope=s&client_id=app%3A1\
             &client_secret=p%40ss+w%25rd%2B%C3%A9"
        );
    }

    #[test]
    fn docplanner_is_recognised_by_its_market_hosts() {
        assert!(is_docplanner_host("www.znanylekarz.pl"));
        assert!(!is_docplanner_host("znanylekarz.pl.evil.example"));
        assert!(!is_docplanner_host("www.example.com"));
        let custom =
            ClientCredentials::builder("https://www.doctoralia.xx/oauth/v2/token", "i", "s")
                .docplanner()
                .build(())
                .unwrap();
        assert_eq!(custom.scope(), DEFAULT_SCOPE);
        assert_eq!(custom.client_auth(), ClientAuth::BasicAsGiven);
    }

    #[test]
    fn store_key_covers_parameters() {
        let plain = ClientCredentials::new((), OTHER, "id", "s").unwrap();
        assert_eq!(
            plain.store_key(),
            crate::store::StoreKey::new(&plain.token_url().to_string(), "id", "")
        );
        let audience = |a: &str| {
            ClientCredentials::builder(OTHER, "id", "s")
                .param("audience", a)
                .build(())
                .unwrap()
                .store_key()
        };
        assert_ne!(audience("a"), audience("b"));
        assert_ne!(audience("a"), plain.store_key());
    }

    #[test]
    fn cache_name_is_the_host_and_a_non_default_port() {
        let c = ClientCredentials::new((), OTHER, "id", "s").unwrap();
        assert_eq!(c.authority, "login.example.com:8443");
        let c = ClientCredentials::new((), DOCPLANNER, "id", "s").unwrap();
        assert_eq!(c.authority, "www.doctoralia.es");
    }

    #[test]
    fn messages_name_docplanner_only_for_docplanner_and_keep_the_port() {
        let answer = |url: &str, status: u16, body: &str| {
            let c = ClientCredentials::new((), url, "id", "long-secret").unwrap();
            let status = http::StatusCode::from_u16(status).unwrap();
            parse(
                status,
                &http::HeaderMap::new(),
                body.as_bytes(),
                &c.context(None),
                tokio::time::Instant::now(),
            )
            .unwrap_err()
            .to_string()
        };
        let scope = r#"{"error":"invalid_scope"}"#;
        for (status, body) in [(503, ""), (404, ""), (302, ""), (400, scope), (401, "")] {
            let other = answer(OTHER, status, body);
            assert!(other.contains("login.example.com:8443"), "{other}");
            assert!(!other.contains("Docplanner"), "{other}");
            assert!(!other.contains("/oauth/v2/token"), "{other}");
            let docplanner = answer(DOCPLANNER, status, body);
            assert!(docplanner.contains("www.doctoralia.es"), "{docplanner}");
        }
        assert!(answer(DOCPLANNER, 503, "").contains("Docplanner's side"));
        assert!(answer(OTHER, 503, "").contains("the token endpoint's side"));
        let s = answer(OTHER, 400, scope);
        assert!(s.contains("no scope was sent"), "{s}");
        let unauthorized = r#"{"error":"unauthorized_client"}"#;
        assert!(answer(DOCPLANNER, 400, unauthorized).contains("ask Docplanner"));
        assert!(answer(OTHER, 400, unauthorized).contains("provider's administrator"));
    }

    #[test]
    fn debug_hides_the_secret() {
        for auth in [
            ClientAuth::Basic,
            ClientAuth::BasicAsGiven,
            ClientAuth::Post,
        ] {
            let builder = ClientCredentials::builder("https://h/t", "id-1", "hunter2-secret")
                .client_auth(auth)
                .param("audience", "aud");
            assert_eq!(
                format!("{builder:?}"),
                format!(
                    "ClientCredentialsBuilder {{ token_url: \"https://h/t\", client_id: \"id-1\", \
                     client_secret: \"[redacted]\", scopes: None, params: [\"audience\"], \
                     client_auth: Some({auth:?}), allow_http_loopback: false }}"
                )
            );
            let c = builder.build(()).unwrap();
            let shown = format!("{c:?}");
            assert!(shown.contains("id-1") && !shown.contains("hunter2"));
            let encoded = base64::engine::general_purpose::STANDARD.encode("id-1:hunter2-secret");
            assert!(!shown.contains(&encoded));
        }
    }
}
