//! What the fake Docplanner answers: the token endpoint (by the [`Rules`] of its mode), two
//! API routes and the user's fallback behind the bearer check, counters, faults.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full};
use serde_json::json;
use tokio::time::Instant;

use super::provider::{Fallback, Rules, TokenRequestSeen};
use crate::error::BoxError;

/// How the next token request(s) should fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenFault {
    /// Answer this status with a short plain-text body, and `Retry-After: <seconds>` if set.
    Status {
        /// The status to answer.
        status: StatusCode,
        /// The `Retry-After` value in seconds, if any.
        retry_after: Option<u64>,
    },
    /// Answer `{"error":"invalid_client",…}` with this status (400 like Docplanner's
    /// OAuth server, or 401 like other servers).
    InvalidClient(StatusCode),
    /// Answer this status, content type and body verbatim (garbage JSON, an HTML page, a
    /// token of another type…).
    Body {
        /// The status to answer.
        status: StatusCode,
        /// The `Content-Type` header.
        content_type: &'static str,
        /// The body, verbatim.
        body: String,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Never answer.
    Hang,
    /// Start a normal answer, then break the connection in the middle of the body.
    CloseMidBody,
    /// Fail before any answer: in process, the call fails like a refused connection; over
    /// TCP, the connection is closed without an answer.
    Disconnect,
}

/// A snapshot of the fake server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FakeStats {
    /// Requests to the token endpoint (good or bad).
    pub token_requests: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Requests to the API routes.
    pub api_requests: u64,
    /// API requests answered with success.
    pub api_ok: u64,
    /// API requests that carried no bearer token.
    pub api_no_token: u64,
    /// API requests that carried an expired token.
    pub api_expired_token: u64,
    /// API requests that carried a revoked token.
    pub api_revoked_token: u64,
    /// API requests that carried a token this server never issued.
    pub api_unknown_token: u64,
    /// API requests answered 401 by [`FakeDocplanner::set_api_always_401`](super::FakeDocplanner::set_api_always_401).
    pub api_forced_401: u64,
    /// Bookings made (`POST …/book`).
    pub bookings: u64,
    /// Requests to the plain-http listener (each answered with a redirect).
    pub plain_http_requests: u64,
    /// Requests to the plain-http listener that carried an `Authorization` header.
    pub plain_http_with_credentials: u64,
    /// TLS connections accepted (handshakes completed) by the HTTPS listener.
    pub https_connections: u64,
}

impl FakeStats {
    /// API requests that reached the API without a valid token it could have known about:
    /// none, expired, or never issued (revoked tokens are counted apart: the client only
    /// learns of a revocation from the 401).
    pub fn sent_without_valid_token(&self) -> u64 {
        self.api_no_token + self.api_expired_token + self.api_unknown_token
    }
}

#[derive(Default)]
struct Counters {
    token_requests: AtomicU64,
    tokens_issued: AtomicU64,
    api_requests: AtomicU64,
    api_ok: AtomicU64,
    api_no_token: AtomicU64,
    api_expired_token: AtomicU64,
    api_revoked_token: AtomicU64,
    api_unknown_token: AtomicU64,
    api_forced_401: AtomicU64,
    bookings: AtomicU64,
    plain_http_requests: AtomicU64,
    plain_http_with_credentials: AtomicU64,
    https_connections: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Issued {
    expires_at: Instant,
    revoked: bool,
}

struct Faults {
    once: VecDeque<TokenFault>,
    always: Option<TokenFault>,
}

/// The server's state, shared by its listeners and its in-process service.
pub(crate) struct State {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    lifetime: Mutex<Duration>,
    tokens: Mutex<HashMap<String, Issued>>,
    last_token: Mutex<Option<String>>,
    reissue: AtomicBool,
    always_401: AtomicBool,
    api_latency: Mutex<Duration>,
    faults: Mutex<Faults>,
    counters: Counters,
    pub(crate) https_port: AtomicU64,
    pub(crate) rules: Rules,
    /// The fake's start, from which whole-second `exp` values are counted.
    epoch: Instant,
    seen: Mutex<Vec<TokenRequestSeen>>,
    fallback: Option<Fallback>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) const API_PREFIX: &str = "/api/v3/integration";
const API_JSON: &str = "application/vnd.docplanner+json; charset=UTF-8";
const API_ERROR: &str = "application/vnd.error+docplanner+json";

impl State {
    pub(crate) fn new(
        client_id: String,
        client_secret: String,
        lifetime: Duration,
        rules: Rules,
        fallback: Option<Fallback>,
    ) -> Self {
        Self {
            rules,
            epoch: Instant::now(),
            seen: Mutex::new(Vec::new()),
            fallback,
            client_id,
            client_secret,
            lifetime: Mutex::new(lifetime),
            tokens: Mutex::new(HashMap::new()),
            last_token: Mutex::new(None),
            reissue: AtomicBool::new(false),
            always_401: AtomicBool::new(false),
            api_latency: Mutex::new(Duration::ZERO),
            faults: Mutex::new(Faults {
                once: VecDeque::new(),
                always: None,
            }),
            counters: Counters::default(),
            https_port: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        *lock(&self.lifetime) = lifetime;
    }

    pub(crate) fn revoke_all(&self) {
        for issued in lock(&self.tokens).values_mut() {
            issued.revoked = true;
        }
    }

    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        lock(&self.tokens).keys().cloned().collect()
    }

    pub(crate) fn set_reissue(&self, on: bool) {
        self.reissue.store(on, Ordering::Relaxed);
    }

    pub(crate) fn set_always_401(&self, on: bool) {
        self.always_401.store(on, Ordering::Relaxed);
    }

    pub(crate) fn set_api_latency(&self, latency: Duration) {
        *lock(&self.api_latency) = latency;
    }

    pub(crate) fn fault_next(&self, times: usize, fault: TokenFault) {
        let mut faults = lock(&self.faults);
        faults.once.extend(std::iter::repeat_n(fault, times));
    }

    pub(crate) fn fault_always(&self, fault: Option<TokenFault>) {
        let mut faults = lock(&self.faults);
        faults.always = fault;
        if faults.always.is_none() {
            faults.once.clear();
        }
    }

    /// A TLS handshake completed on the HTTPS listener.
    pub(crate) fn connection_accepted(&self) {
        bump(&self.counters.https_connections);
    }

    pub(crate) fn token_requests_seen(&self) -> Vec<TokenRequestSeen> {
        lock(&self.seen).clone()
    }

    pub(crate) fn stats(&self) -> FakeStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FakeStats {
            token_requests: get(&c.token_requests),
            tokens_issued: get(&c.tokens_issued),
            api_requests: get(&c.api_requests),
            api_ok: get(&c.api_ok),
            api_no_token: get(&c.api_no_token),
            api_expired_token: get(&c.api_expired_token),
            api_revoked_token: get(&c.api_revoked_token),
            api_unknown_token: get(&c.api_unknown_token),
            api_forced_401: get(&c.api_forced_401),
            bookings: get(&c.bookings),
            plain_http_requests: get(&c.plain_http_requests),
            plain_http_with_credentials: get(&c.plain_http_with_credentials),
            https_connections: get(&c.https_connections),
        }
    }

    /// Every request to the fake, over TLS or in process. An `Err` is a broken
    /// connection ([`TokenFault::Disconnect`]).
    pub(crate) async fn handle<B>(
        &self,
        request: Request<B>,
    ) -> Result<Response<FakeBody>, BoxError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "request body broke")),
        };
        let path = parts.uri.path();
        if path == self.rules.token_path {
            return self.token(&parts.method, &parts.headers, &body).await;
        }
        let route = path.strip_prefix(API_PREFIX);
        if route.is_none() && self.fallback.is_none() {
            return Ok(api_error(StatusCode::NOT_FOUND, "No route found"));
        }
        let latency = *lock(&self.api_latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(refused) = self.refusal(&parts.headers) {
            return Ok(refused);
        }
        let response = match (route, &self.fallback) {
            (Some(route), _) => self.api(&parts.method, route, &body),
            (None, Some(fallback)) => {
                fallback
                    .call(Request::from_parts(parts, Full::new(body)))
                    .await
            }
            (None, None) => api_error(StatusCode::NOT_FOUND, "No route found"),
        };
        if response.status().is_success() {
            bump(&self.counters.api_ok);
        }
        Ok(response)
    }

    /// The plain-http listener: a redirect to https, as the real site does.
    pub(crate) fn redirect(&self, request: &Request<hyper::body::Incoming>) -> Response<FakeBody> {
        bump(&self.counters.plain_http_requests);
        if request.headers().contains_key(AUTHORIZATION) {
            bump(&self.counters.plain_http_with_credentials);
        }
        let port = self.https_port.load(Ordering::Relaxed);
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://127.0.0.1:{port}{path}");
        let mut response = text(StatusCode::MOVED_PERMANENTLY, "Moved Permanently");
        if let Ok(value) = HeaderValue::try_from(location) {
            response.headers_mut().insert(LOCATION, value);
        }
        response
    }

    async fn token(
        &self,
        method: &Method,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Response<FakeBody>, BoxError> {
        bump(&self.counters.token_requests);
        let fault = {
            let mut faults = lock(&self.faults);
            faults.once.pop_front().or_else(|| faults.always.clone())
        };
        match fault {
            Some(TokenFault::Disconnect) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused (fault injected)",
            )
            .into()),
            other => Ok(self.token_answer(other, method, headers, body).await),
        }
    }

    async fn token_answer(
        &self,
        fault: Option<TokenFault>,
        method: &Method,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Response<FakeBody> {
        match fault {
            None | Some(TokenFault::Disconnect) => {}
            Some(TokenFault::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(TokenFault::Hang) => std::future::pending::<()>().await,
            Some(TokenFault::Status {
                status,
                retry_after,
            }) => {
                let mut response = text(status, "token endpoint failure (fault injected)");
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(seconds));
                }
                return response;
            }
            Some(TokenFault::InvalidClient(status)) => return invalid_client(status),
            Some(TokenFault::Body {
                status,
                content_type,
                body,
            }) => return with_type(status, content_type, body.into()),
            Some(TokenFault::CloseMidBody) => {
                let mut response = Response::new(FakeBody::broken(Bytes::from_static(
                    br#"{"access_token":"half-a-tok"#,
                )));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return response;
            }
        }
        if method != Method::POST {
            return oauth(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "Use POST",
            );
        }
        let mut seen = TokenRequestSeen::parse(headers, body);
        let authenticated = self
            .rules
            .authenticate(&seen, &self.client_id, &self.client_secret);
        seen.authenticated_with = authenticated.ok().flatten();
        lock(&self.seen).push(seen.clone());
        match authenticated {
            Ok(Some(_)) => {}
            Ok(None) => return invalid_client(self.rules.invalid_client),
            Err(()) => {
                return oauth(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The request utilizes more than one mechanism for authenticating the client",
                )
            }
        }
        match seen.field("grant_type") {
            Some("client_credentials") => {}
            Some(_) => {
                return oauth(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "Invalid grant_type parameter or parameter missing",
                )
            }
            None => {
                return oauth(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Invalid grant_type parameter or parameter missing",
                )
            }
        }
        match self.rules.missing(&seen) {
            None => {}
            Some("scope") => {
                return oauth(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "An unsupported scope was requested.",
                )
            }
            Some(name) => {
                return oauth(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("Missing or wrong parameter {name}"),
                )
            }
        }
        let lifetime = *lock(&self.lifetime);
        let now = Instant::now();
        let reissued = if self.reissue.load(Ordering::Relaxed) {
            lock(&self.last_token).clone()
        } else {
            None
        };
        let token = reissued.unwrap_or_else(|| {
            let n = self.counters.tokens_issued.load(Ordering::Relaxed) + 1;
            format!("fake-{n}-{:016x}", fastrand::u64(..))
        });
        lock(&self.tokens).insert(
            token.clone(),
            Issued {
                expires_at: self.rules.expiry(self.epoch, now, lifetime),
                revoked: false,
            },
        );
        *lock(&self.last_token) = Some(token.clone());
        bump(&self.counters.tokens_issued);
        let body = json!({
            "access_token": token,
            "expires_in": lifetime.as_secs().max(1),
            "token_type": "bearer",
            "scope": null,
        });
        with_type(StatusCode::OK, "application/json", body.to_string().into())
    }

    /// The bearer check in front of the API routes and the fallback: the 401, if refused.
    fn refusal(&self, headers: &http::HeaderMap) -> Option<Response<FakeBody>> {
        bump(&self.counters.api_requests);
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = bearer else {
            bump(&self.counters.api_no_token);
            return Some(unauthorized(
                json!({"message": "Authentication credentials could not be found."}),
            ));
        };
        let verdict = {
            let tokens = lock(&self.tokens);
            match tokens.get(token) {
                None => Err(&self.counters.api_unknown_token),
                Some(issued) if issued.revoked => Err(&self.counters.api_revoked_token),
                Some(issued) if Instant::now() >= issued.expires_at => {
                    Err(&self.counters.api_expired_token)
                }
                Some(_) => Ok(()),
            }
        };
        if let Err(counter) = verdict {
            bump(counter);
            return Some(unauthorized(json!({
                "error": "invalid_grant",
                "error_description": "The access token provided has expired.",
            })));
        }
        if self.always_401.load(Ordering::Relaxed) {
            bump(&self.counters.api_forced_401);
            return Some(unauthorized(
                json!({"message": "You are not allowed to see this facility."}),
            ));
        }
        None
    }

    /// The two API routes, for a request that passed [`refusal`](Self::refusal).
    fn api(&self, method: &Method, route: &str, body: &[u8]) -> Response<FakeBody> {
        let segments: Vec<&str> = route.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, ["facilities"]) => with_type(
                StatusCode::OK,
                API_JSON,
                json!({"_items": [{"id": "1", "name": "Sample hospital"}]})
                    .to_string()
                    .into(),
            ),
            (
                &Method::POST,
                ["facilities", _, "doctors", _, "addresses", _, "slots", start, "book"],
            ) => match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(request) if request.is_object() => {
                    let n = self.counters.bookings.fetch_add(1, Ordering::Relaxed) + 1;
                    with_type(
                            StatusCode::CREATED,
                            API_JSON,
                            json!({"id": format!("booking-{n}"), "start_at": start, "request": request})
                                .to_string()
                                .into(),
                        )
                }
                _ => api_error(StatusCode::BAD_REQUEST, "Request body is not a JSON object"),
            },
            _ => api_error(StatusCode::NOT_FOUND, "No route found"),
        }
    }
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<FakeBody> {
    let mut response = Response::new(FakeBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<FakeBody> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn oauth(status: StatusCode, code: &str, description: &str) -> Response<FakeBody> {
    let body = json!({"error": code, "error_description": description});
    with_type(status, "application/json", body.to_string().into())
}

fn invalid_client(status: StatusCode) -> Response<FakeBody> {
    oauth(
        status,
        "invalid_client",
        "The client credentials are invalid",
    )
}

fn api_error(status: StatusCode, message: &str) -> Response<FakeBody> {
    let body = json!({"errors": [], "message": message});
    with_type(status, API_ERROR, body.to_string().into())
}

fn unauthorized(body: serde_json::Value) -> Response<FakeBody> {
    let mut response = with_type(StatusCode::UNAUTHORIZED, API_ERROR, body.to_string().into());
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="Service", error="invalid_grant", error_description="The access token provided has expired.""#,
        ),
    );
    response
}

/// The fake's response body: whole, or broken after its first bytes.
pub struct FakeBody {
    data: Option<Bytes>,
    broken: bool,
}

impl FakeBody {
    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            data: Some(data),
            broken: false,
        }
    }

    fn broken(data: Bytes) -> Self {
        Self {
            data: Some(data),
            broken: true,
        }
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            if data.has_remaining() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
        if self.broken {
            self.broken = false;
            return Poll::Ready(Some(Err(
                "connection closed mid-body (fault injected)".into()
            )));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.broken
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.data, self.broken) {
            // Promise more than will come, as a server whose connection breaks does.
            (Some(d), true) => SizeHint::with_exact(d.len() as u64 * 2),
            (Some(d), false) => SizeHint::with_exact(d.len() as u64),
            (None, _) => SizeHint::with_exact(0),
        }
    }
}

impl fmt::Debug for FakeBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeBody").finish_non_exhaustive()
    }
}
