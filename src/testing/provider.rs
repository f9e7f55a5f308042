//! Which token endpoint the fake plays — Docplanner's or a generic OAuth2 server's — and
//! what it saw: the token path, the client-authentication methods it accepts, the form
//! parameters it requires, the granularity of `exp`, the record of each token request, and
//! the fallback service for routes of the user's own.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use tokio::time::Instant;
use tower_service::Service;

use super::routes::FakeBody;
use crate::error::BoxError;
use crate::source::ClientAuth;

/// The token endpoint's rules.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// Docplanner's endpoint (its defaults and wording in the client), or a generic one.
    pub(crate) docplanner: bool,
    pub(crate) token_path: String,
    /// The client-authentication methods accepted, in order of preference (the first one
    /// is what [`FakeDocplanner::credentials`](super::FakeDocplanner::credentials) uses).
    pub(crate) client_auth: Vec<ClientAuth>,
    /// Form parameters every token request must carry with exactly this value.
    pub(crate) required: Vec<(String, String)>,
    /// Issued tokens expire at `floor(issue time, granularity) + lifetime` (zero: exactly
    /// at `issue time + lifetime`), counted from the fake's start.
    pub(crate) exp_granularity: Duration,
    /// The status of an `invalid_client` answer: 400 for Docplanner, 401 for others.
    pub(crate) invalid_client: StatusCode,
}

impl Rules {
    /// Docplanner's endpoint: `/oauth/v2/token`, Basic as given, `scope=integration`.
    pub(crate) fn docplanner() -> Self {
        Self {
            docplanner: true,
            token_path: "/oauth/v2/token".to_owned(),
            client_auth: vec![ClientAuth::BasicAsGiven],
            required: vec![("scope".to_owned(), "integration".to_owned())],
            exp_granularity: Duration::ZERO,
            invalid_client: StatusCode::BAD_REQUEST,
        }
    }

    /// A generic RFC 6749 server: `/token`, RFC Basic or `client_secret_post`, no scope
    /// required, `exp` floored to whole seconds (as a JWT's is).
    pub(crate) fn generic() -> Self {
        Self {
            docplanner: false,
            token_path: "/token".to_owned(),
            client_auth: vec![ClientAuth::Basic, ClientAuth::Post],
            required: Vec::new(),
            exp_granularity: Duration::from_secs(1),
            invalid_client: StatusCode::UNAUTHORIZED,
        }
    }

    /// The method by which the request authenticates `id`/`secret`, if it is accepted.
    ///
    /// `Err` when the request uses two methods at once (RFC 6749 §2.3 forbids it).
    pub(crate) fn authenticate(
        &self,
        seen: &TokenRequestSeen,
        id: &str,
        secret: &str,
    ) -> Result<Option<ClientAuth>, ()> {
        let posted = seen.field("client_id").is_some() || seen.field("client_secret").is_some();
        if seen.basic.is_some() && posted {
            return Err(());
        }
        let accepted = |auth: ClientAuth| self.client_auth.contains(&auth);
        if let Some(basic) = &seen.basic {
            let (raw_id, raw_secret) = basic.split_once(':').unwrap_or((basic, ""));
            if accepted(ClientAuth::Basic)
                && form_decode(raw_id) == id
                && form_decode(raw_secret) == secret
            {
                return Ok(Some(ClientAuth::Basic));
            }
            if accepted(ClientAuth::BasicAsGiven) && raw_id == id && raw_secret == secret {
                return Ok(Some(ClientAuth::BasicAsGiven));
            }
            return Ok(None);
        }
        let post_ok = accepted(ClientAuth::Post)
            && seen.field("client_id") == Some(id)
            && seen.field("client_secret") == Some(secret);
        Ok(post_ok.then_some(ClientAuth::Post))
    }

    /// The first required parameter missing from the request (or with another value).
    pub(crate) fn missing<'a>(&'a self, seen: &TokenRequestSeen) -> Option<&'a str> {
        self.required
            .iter()
            .find(|(name, value)| seen.field(name) != Some(value.as_str()))
            .map(|(name, _)| name.as_str())
    }

    /// When a token issued `now` for `lifetime` expires, for a fake started at `epoch`.
    pub(crate) fn expiry(&self, epoch: Instant, now: Instant, lifetime: Duration) -> Instant {
        let granularity = self.exp_granularity.as_nanos();
        if granularity == 0 {
            return now + lifetime;
        }
        let elapsed = now.saturating_duration_since(epoch).as_nanos();
        let floored = elapsed - elapsed % granularity;
        epoch + Duration::from_nanos(u64::try_from(floored).unwrap_or(u64::MAX)) + lifetime
    }
}

/// One token request as the fake received it, for tests to assert on
/// ([`FakeDocplanner::token_requests_seen`](super::FakeDocplanner::token_requests_seen)).
///
/// `Debug` redacts the Basic credentials and the `client_secret` field.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRequestSeen {
    /// The `Authorization: Basic` credentials, base64-decoded but otherwise as sent
    /// (`id:secret`, still form-urlencoded if the client encoded them); `None` without one.
    pub basic: Option<String>,
    /// The form fields, decoded, in the order sent.
    pub form: Vec<(String, String)>,
    /// The method by which the client authenticated, `None` if it was refused.
    pub authenticated_with: Option<ClientAuth>,
}

impl TokenRequestSeen {
    pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Self {
        let basic = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let form = String::from_utf8_lossy(body)
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(name), form_decode(value))
            })
            .collect();
        Self {
            basic,
            form,
            authenticated_with: None,
        }
    }

    /// The value of the first form field named `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the form fields named `name`, in order (`resource` may repeat).
    pub fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.form
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for TokenRequestSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let form: Vec<(&str, &str)> = self
            .form
            .iter()
            .map(|(n, v)| {
                let shown = if n == "client_secret" {
                    "[redacted]"
                } else {
                    v
                };
                (n.as_str(), shown)
            })
            .collect();
        f.debug_struct("TokenRequestSeen")
            .field("basic", &self.basic.as_ref().map(|_| "[redacted]"))
            .field("form", &form)
            .field("authenticated_with", &self.authenticated_with)
            .finish()
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a
/// malformed escape stays as it is.
pub(crate) fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type FallbackFuture = Pin<Box<dyn Future<Output = Response<FakeBody>> + Send>>;

/// A service answering the paths the fake does not know, after the fake checked the
/// bearer token (see [`FakeDocplannerBuilder::fallback`](super::FakeDocplannerBuilder::fallback)).
#[derive(Clone)]
pub(crate) struct Fallback(Arc<dyn Fn(Request<Full<Bytes>>) -> FallbackFuture + Send + Sync>);

impl Fallback {
    pub(crate) fn new<S, RB>(service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        Self(Arc::new(move |request| {
            let mut service = service.clone();
            Box::pin(async move {
                let answer = async {
                    poll_fn(|cx| service.poll_ready(cx))
                        .await
                        .map_err(Into::into)?;
                    let response = service.call(request).await.map_err(Into::into)?;
                    let (head, body) = response.into_parts();
                    let body = body.collect().await.map_err(Into::into)?.to_bytes();
                    Ok::<_, BoxError>(Response::from_parts(head, FakeBody::full(body)))
                };
                answer.await.unwrap_or_else(|error| {
                    let mut response =
                        Response::new(FakeBody::full(format!("fallback failed: {error}").into()));
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    response
                })
            })
        }))
    }

    pub(crate) fn call(&self, request: Request<Full<Bytes>>) -> FallbackFuture {
        (self.0)(request)
    }
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%3Ac%25"), "a b:c%");
        assert_eq!(form_decode("%C3%A9"), "é");
        assert_eq!(form_decode("bad%zz%4"), "bad%zz%4");
        assert_eq!(form_decode("%"), "%");
    }

    #[test]
    fn exp_is_floored_to_the_granularity() {
        let rules = Rules::generic();
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(2_700);
        let lifetime = Duration::from_secs(10);
        assert_eq!(
            rules.expiry(epoch, now, lifetime),
            epoch + Duration::from_secs(12)
        );
        assert_eq!(
            Rules::docplanner().expiry(epoch, now, lifetime),
            now + lifetime
        );
    }
}
