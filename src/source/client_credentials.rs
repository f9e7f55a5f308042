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
use crate::error::{BoxError, Error, Kind};
use crate::origin::{require_secure, Origin};
use crate::secret::{basic_credential, sensitive_header};
use crate::token::AccessToken;

/// The OAuth2 client-credentials grant (RFC 6749 §4.4) over any tower HTTP service `C`.
///
/// Each fetch is one `POST` to the token URL with HTTP Basic client authentication
/// (`client_id:client_secret`, sent as given, the way Docplanner's SDKs do) and the form
/// body `grant_type=client_credentials&scope=integration`. `C` is any
/// `Service<http::Request<Full<Bytes>>>`, so the token call can go through the same TLS,
/// proxy, tracing and timeout stack as the rest of the application.
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
#[derive(Clone)]
pub struct ClientCredentials<C> {
    client: C,
    token_url: Uri,
    host: String,
    client_id: String,
    scope: String,
    /// `Basic base64(id:secret)`, marked sensitive, built once.
    authorization: HeaderValue,
    /// The form body, built once.
    form: Bytes,
    /// Kept only to scrub it from any message that would echo it.
    secret: Zeroizing<String>,
    /// The last token obtained (sharing its wiped bytes), kept only to scrub it by value
    /// from a later answer that would echo it.
    last_token: Arc<Mutex<Option<AccessToken>>>,
}

impl<C> ClientCredentials<C> {
    /// The grant for `client_id`/`client_secret` at `token_url`, with the scope
    /// `integration`, over `client`.
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

    /// The scope asked for.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The key under which a [`TokenStore`](crate::store::TokenStore) shares this grant's
    /// tokens: a hash of (token URL, client id, scope), never the secret.
    pub fn store_key(&self) -> crate::store::StoreKey {
        crate::store::StoreKey::new(&self.token_url.to_string(), &self.client_id, &self.scope)
    }

    /// The HTTP service the token requests go through.
    pub fn get_ref(&self) -> &C {
        &self.client
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, Error> {
        Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Full::new(self.form.clone()))
            .map_err(|e| {
                Error::with_source(Kind::Config, "could not build the token request", e.into())
            })
    }

    fn context<'a>(&'a self, last_token: Option<&'a AccessToken>) -> Context<'a> {
        Context {
            host: &self.host,
            scope: &self.scope,
            secrets: [
                self.secret.as_str(),
                basic_credential(&self.authorization),
                last_token.map_or("", AccessToken::secret),
            ],
        }
    }
}

impl ClientCredentials<()> {
    /// A builder, to change the scope or allow a plain-http loopback token URL; the HTTP
    /// service is given last, to [`ClientCredentialsBuilder::build`].
    pub fn builder(
        token_url: &str,
        client_id: &str,
        client_secret: &str,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            token_url: token_url.to_owned(),
            client_id: client_id.to_owned(),
            secret: Zeroizing::new(client_secret.to_owned()),
            scope: DEFAULT_SCOPE.to_owned(),
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
                    self.host
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
                        self.host,
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
            host = %self.host,
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
}

impl<C> fmt::Debug for ClientCredentials<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &format_args!("{}", self.token_url))
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ClientCredentials`]; see [`ClientCredentials::builder`].
pub struct ClientCredentialsBuilder {
    token_url: String,
    client_id: String,
    secret: Zeroizing<String>,
    scope: String,
    allow_http_loopback: bool,
}

impl ClientCredentialsBuilder {
    /// The scope to ask for (default [`DEFAULT_SCOPE`], `integration`).
    pub fn scope(mut self, scope: &str) -> Self {
        scope.clone_into(&mut self.scope);
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
        if self.client_id.is_empty()
            || self.client_id.contains(':')
            || self.client_id.chars().any(char::is_control)
        {
            return Err(Error::config(
                "the client id must be non-empty, without `:` or control characters: check \
                 DOCPLANNER_CLIENT_ID",
            ));
        }
        if self.secret.is_empty() {
            return Err(Error::config(
                "the client secret is empty: check DOCPLANNER_CLIENT_SECRET",
            ));
        }
        if self.scope.is_empty()
            || !self
                .scope
                .bytes()
                .all(|b| b == b' ' || (b.is_ascii_graphic() && b != b'"' && b != b'\\'))
        {
            return Err(Error::config(
                "the scope must be non-empty printable ASCII without `\"` or `\\` (RFC 6749 §3.3)",
            ));
        }
        // Sized up front so that no reallocation leaves an unwiped copy behind.
        let mut credentials = Zeroizing::new(String::with_capacity(
            self.client_id.len() + 1 + self.secret.len(),
        ));
        credentials.push_str(&self.client_id);
        credentials.push(':');
        credentials.push_str(&self.secret);
        let mut basic = String::with_capacity(6 + credentials.len().div_ceil(3) * 4);
        basic.push_str("Basic ");
        base64::engine::general_purpose::STANDARD.encode_string(credentials.as_bytes(), &mut basic);
        let authorization = sensitive_header(basic.into_bytes())
            .map_err(|_| Error::config("the client id or secret cannot be sent in a header"))?;
        let form = format!(
            "grant_type=client_credentials&scope={}",
            form_encode(&self.scope)
        );
        Ok(ClientCredentials {
            client,
            token_url,
            host: origin.host().to_owned(),
            client_id: self.client_id,
            scope: self.scope,
            authorization,
            form: Bytes::from(form),
            secret: self.secret,
            last_token: Arc::default(),
        })
    }
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("scope", &self.scope)
            .field("allow_http_loopback", &self.allow_http_loopback)
            .finish()
    }
}

/// `application/x-www-form-urlencoded` for a value: unreserved bytes as they are, space
/// as `+`, everything else percent-encoded.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("integration"), "integration");
        assert_eq!(form_encode("a b:c"), "a+b%3Ac");
    }

    #[test]
    fn config_is_validated() {
        let b = |url: &str, id: &str, secret: &str| {
            ClientCredentials::builder(url, id, secret)
                .build(())
                .map(|_| ())
        };
        let url = "https://www.doctoralia.es/oauth/v2/token";
        assert!(b(url, "id", "secret").is_ok());
        assert!(b(url, "", "secret").unwrap_err().is_config());
        assert!(b(url, "a:b", "secret").unwrap_err().is_config());
        assert!(b(url, "id", "").unwrap_err().is_config());
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
    fn debug_hides_the_secret() {
        let c = ClientCredentials::new((), "https://h/t", "id-1", "hunter2-secret").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("id-1") && !shown.contains("hunter2"));
        let encoded = base64::engine::general_purpose::STANDARD.encode("id-1:hunter2-secret");
        assert!(!shown.contains(&encoded));
    }
}
