//! A fake Docplanner for tests (feature `test-util`): ours and yours.
//!
//! [`FakeDocplanner`] plays the token endpoint (`POST /oauth/v2/token`, HTTP Basic client
//! credentials, `grant_type=client_credentials`, `scope=integration`) and two API routes
//! (`GET /api/v3/integration/facilities` and a non-idempotent
//! `POST …/facilities/{f}/doctors/{d}/addresses/{a}/slots/{start}/book`) that demand a
//! valid bearer token and answer 401 with Docplanner's bodies otherwise.
//!
//! It runs two ways:
//! * [`FakeDocplannerBuilder::start`]: real HTTPS on `127.0.0.1:0` with a certificate
//!   generated at start (and [`FakeDocplanner::client`] hands out a client that trusts it),
//!   plus a plain-HTTP listener that answers `301` to HTTPS, like the real site.
//! * [`FakeDocplannerBuilder::in_process`]: no socket at all; [`FakeDocplanner::service`]
//!   is a tower service. Use it with `#[tokio::test(start_paused = true)]`: real sockets
//!   and a paused clock do not mix (Tokio advances a paused clock while a task waits on a
//!   socket, so timeouts fire early).
//!
//! Counters ([`FakeDocplanner::stats`]) and switches (token lifetime, revocation, token
//! endpoint faults, an API that answers 401 to everything) make every behaviour of the
//! client observable; [`FakeDocplanner::token_requests_seen`] shows what each token request
//! carried (client authentication, form fields).
//!
//! # Any OAuth2 provider
//!
//! [`FakeDocplannerBuilder::oauth2`] turns the token endpoint into a generic RFC 6749
//! server (path `/token`, RFC Basic or `client_secret_post`, no scope required, `exp`
//! floored to whole seconds as a JWT's is), and [`token_path`](FakeDocplannerBuilder::token_path),
//! [`client_auth`](FakeDocplannerBuilder::client_auth),
//! [`require_param`](FakeDocplannerBuilder::require_param) and
//! [`exp_granularity`](FakeDocplannerBuilder::exp_granularity) shape it like Keycloak,
//! Auth0, Entra ID or Okta. [`FakeDocplannerBuilder::fallback`] answers any other path with
//! a service of your own, behind the fake's bearer-token check, to fixture your own API:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::source::ClientAuth;
//! use docplanner_auth::testing::FakeDocplanner;
//! use tower::ServiceExt;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), docplanner_auth::BoxError> {
//! let orders = tower::service_fn(|_request: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("[]"))))
//! });
//! let fake = FakeDocplanner::builder()
//!     .oauth2()
//!     .token_path("/oauth2/default/v1/token")
//!     .client_auth(&[ClientAuth::Post])
//!     .require_param("scope", "orders:read")
//!     .fallback(orders)
//!     .start()
//!     .await?;
//! let client = fake.authenticated_client::<Full<Bytes>>()?;
//! let request = http::Request::get(format!("{}/orders", fake.base_url()))
//!     .body(Full::new(Bytes::new()))?;
//! assert_eq!(client.oneshot(request).await?.status(), 200);
//! let seen = &fake.token_requests_seen()[0];
//! assert_eq!(seen.authenticated_with, Some(ClientAuth::Post));
//! assert_eq!(seen.field("scope"), Some("orders:read"));
//! # Ok(()) }
//! ```
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::testing::FakeDocplanner;
//! use tower::ServiceExt;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), docplanner_auth::BoxError> {
//! let fake = FakeDocplanner::builder().start().await?;
//! let client = fake.authenticated_client::<Full<Bytes>>()?;
//!
//! let request = http::Request::get(format!("{}/facilities", fake.api_base()))
//!     .body(Full::new(Bytes::new()))?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(fake.stats().token_requests, 1);
//! # Ok(()) }
//! ```

mod provider;
mod routes;
mod server;

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tokio::task::JoinHandle;
use tower_service::Service;

pub use self::provider::TokenRequestSeen;
use self::provider::{Fallback, Rules};
pub use self::routes::{FakeBody, FakeStats, TokenFault};
use self::routes::{State, API_PREFIX};
use crate::client::{HttpsClient, HttpsClientBuilder, Proxy};
use crate::error::BoxError;
use crate::source::ClientAuth;
use crate::{BearerAuth, BearerAuthLayer, ClientCredentials, ReplayBody, TokenCache};

/// The host the in-process fake pretends to be.
const IN_PROCESS_HOST: &str = "www.fake-docplanner.test";

/// A fake Docplanner; see the [module docs](self). Stops when dropped.
pub struct FakeDocplanner {
    state: Arc<State>,
    /// `https://host:port`, without a trailing slash.
    origin: String,
    http_addr: Option<SocketAddr>,
    certificate: Option<server::Certificate>,
    https_addr: Option<SocketAddr>,
    https_task: Mutex<Option<JoinHandle<()>>>,
    http_task: Option<JoinHandle<()>>,
}

/// Configures a [`FakeDocplanner`].
#[derive(Debug, Clone)]
pub struct FakeDocplannerBuilder {
    client_id: String,
    client_secret: String,
    lifetime: Duration,
    rules: Rules,
    fallback: Option<Fallback>,
}

impl FakeDocplanner {
    /// A builder: client id `fake-client-id`, secret `fake-client-secret`, tokens that live
    /// 3600 s.
    pub fn builder() -> FakeDocplannerBuilder {
        FakeDocplannerBuilder {
            client_id: "fake-client-id".to_owned(),
            client_secret: "fake-client-secret".to_owned(),
            lifetime: Duration::from_secs(3600),
            rules: Rules::docplanner(),
            fallback: None,
        }
    }

    /// The token URL, `https://…/oauth/v2/token` (or the
    /// [`token_path`](FakeDocplannerBuilder::token_path) given).
    pub fn token_url(&self) -> String {
        format!("{}{}", self.origin, self.state.rules.token_path)
    }

    /// The origin, `https://host:port`, without a trailing slash: the base of the routes
    /// answered by the [`fallback`](FakeDocplannerBuilder::fallback).
    pub fn base_url(&self) -> String {
        self.origin.clone()
    }

    /// The API base, `https://…/api/v3/integration`.
    pub fn api_base(&self) -> String {
        format!("{}{API_PREFIX}", self.origin)
    }

    /// The plain-HTTP base (`http://127.0.0.1:port`) whose every answer is a `301` to
    /// HTTPS; `None` for an in-process fake.
    pub fn plain_http_base(&self) -> Option<String> {
        self.http_addr.map(|addr| format!("http://{addr}"))
    }

    /// The client id the fake accepts.
    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    /// The client secret the fake accepts.
    pub fn client_secret(&self) -> &str {
        &self.state.client_secret
    }

    /// The fake's generated certificate (DER), to trust it in a client of your own.
    pub fn certificate_der(&self) -> Option<&[u8]> {
        self.certificate.as_ref().map(|c| c.der.as_ref())
    }

    /// An HTTPS client (the crate's built-in client type) that trusts the fake's
    /// certificate. For an in-process fake it trusts nothing: use [`service`](Self::service).
    pub fn client<B>(&self) -> Result<HttpsClient<B>, BoxError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        client_trusting(&[self])
    }

    /// The in-process service: the same routes, counters and faults, no socket.
    pub fn service(&self) -> FakeService {
        FakeService {
            state: Arc::clone(&self.state),
        }
    }

    /// A token cache fetching from this fake with its credentials: over HTTPS if it was
    /// started, in process otherwise.
    pub fn cache(&self) -> Result<TokenCache, BoxError> {
        Ok(self.cache_builder()?.build())
    }

    /// A cache builder over [`credentials`](Self::credentials), to tune the policy.
    pub fn cache_builder(&self) -> Result<crate::TokenCacheBuilder, BoxError> {
        Ok(TokenCache::builder(self.credentials()?).name("fake-docplanner"))
    }

    /// The client-credentials source for this fake, boxed so both transports share a type:
    /// Docplanner's defaults in Docplanner mode; in [`oauth2`](FakeDocplannerBuilder::oauth2)
    /// mode, the first accepted client authentication and the required parameters (the
    /// `scope` one as the scope).
    pub fn credentials(&self) -> Result<ClientCredentials<FakeTransport>, BoxError> {
        let transport = if self.certificate.is_some() {
            FakeTransport::Https(Box::new(self.client()?))
        } else {
            FakeTransport::InProcess(self.service())
        };
        let rules = &self.state.rules;
        let mut builder =
            ClientCredentials::builder(&self.token_url(), self.client_id(), self.client_secret());
        if rules.docplanner {
            builder = builder.docplanner();
        }
        if let Some(auth) = rules.client_auth.first() {
            builder = builder.client_auth(*auth);
        }
        for (name, value) in &rules.required {
            builder = match name.as_str() {
                "scope" => builder.scope(value),
                _ => builder.param(name, value),
            };
        }
        Ok(builder.build(transport)?)
    }

    /// Every token request received so far, as received (in order; faults included once
    /// they reached the credentials check).
    pub fn token_requests_seen(&self) -> Vec<TokenRequestSeen> {
        self.state.token_requests_seen()
    }

    /// A layer authenticating requests to this fake's API with `cache`.
    pub fn layer(&self, cache: TokenCache) -> Result<BearerAuthLayer, BoxError> {
        Ok(BearerAuthLayer::new(cache, &self.api_base())?)
    }

    /// The whole thing: the fake's HTTPS client wrapped in a layer with a fresh cache.
    pub fn authenticated_client<B>(
        &self,
    ) -> Result<BearerAuth<HttpsClient<ReplayBody<B>>>, BoxError>
    where
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let layer = self.layer(self.cache()?)?;
        Ok(BearerAuth::new(self.client()?, &layer))
    }

    /// What the fake has seen so far.
    pub fn stats(&self) -> FakeStats {
        self.state.stats()
    }

    /// Every token string issued so far (to check that none leaks into logs or output).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.issued_tokens()
    }

    /// The lifetime (`expires_in`) of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.set_lifetime(lifetime);
    }

    /// Revoke every token issued so far: API requests carrying them get 401.
    pub fn revoke_all_tokens(&self) {
        self.state.revoke_all();
    }

    /// When on, the token endpoint hands out the last token it issued again instead of a
    /// new one (as some servers do until a token expires).
    pub fn set_reissue_same_token(&self, on: bool) {
        self.state.set_reissue(on);
    }

    /// When on, every API request with a valid token is answered 401 anyway (an API that
    /// rejects a request for reasons other than the token).
    pub fn set_api_always_401(&self, on: bool) {
        self.state.set_always_401(on);
    }

    /// Every API request waits this long before it is checked and answered (default 0).
    pub fn set_api_latency(&self, latency: Duration) {
        self.state.set_api_latency(latency);
    }

    /// Stop the HTTPS listener and close every connection it accepted: requests now fail
    /// to connect (connection refused), as when the server is down.
    pub fn stop_https(&self) {
        if let Some(task) = self
            .https_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// Listen on the same HTTPS address again after [`stop_https`](Self::stop_https).
    /// Does nothing for an in-process fake or one already listening.
    pub async fn restart_https(&self) -> Result<(), BoxError> {
        let (Some(addr), Some(certificate)) = (self.https_addr, &self.certificate) else {
            return Ok(());
        };
        if self
            .https_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            return Ok(());
        }
        let listener = server::bind(addr).await?;
        let task = server::serve_https(listener, Arc::clone(&self.state), certificate.acceptor());
        *self
            .https_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task);
        Ok(())
    }

    /// The next `times` token requests fail with `fault` (queued after earlier ones).
    pub fn fail_next_token_requests(&self, times: usize, fault: TokenFault) {
        self.state.fault_next(times, fault);
    }

    /// Every token request fails with `fault` until [`clear_token_faults`](Self::clear_token_faults).
    pub fn fail_all_token_requests(&self, fault: TokenFault) {
        self.state.fault_always(Some(fault));
    }

    /// The token endpoint works again.
    pub fn clear_token_faults(&self) {
        self.state.fault_always(None);
    }
}

impl FakeDocplannerBuilder {
    /// The client id the fake accepts.
    pub fn client_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.client_id);
        self
    }

    /// The client secret the fake accepts.
    pub fn client_secret(mut self, secret: &str) -> Self {
        secret.clone_into(&mut self.client_secret);
        self
    }

    /// The lifetime (`expires_in`) of issued tokens (whole seconds, at least 1).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Play a generic RFC 6749 token endpoint instead of Docplanner's: path `/token`,
    /// client authentication by RFC 6749 Basic (id and secret form-urlencoded) or
    /// `client_secret_post`, no scope required, `invalid_client` answered 401, and `exp`
    /// floored to whole seconds (a token may die up to 1 s before its `expires_in` says).
    /// Call it first: the settings below refine it.
    pub fn oauth2(mut self) -> Self {
        self.rules = Rules::generic();
        self
    }

    /// The token endpoint's path (default `/oauth/v2/token`; `/token` in
    /// [`oauth2`](Self::oauth2) mode).
    pub fn token_path(mut self, path: &str) -> Self {
        path.clone_into(&mut self.rules.token_path);
        self
    }

    /// The client-authentication methods the token endpoint accepts; the first is the one
    /// [`FakeDocplanner::credentials`] uses. Default: Basic as given (Docplanner), or RFC
    /// Basic and `client_secret_post` ([`oauth2`](Self::oauth2) mode).
    pub fn client_auth(mut self, accepted: &[ClientAuth]) -> Self {
        self.rules.client_auth = accepted.to_vec();
        self
    }

    /// A form parameter every token request must carry with exactly this value (compared
    /// after decoding); `scope` is answered `invalid_scope`, others `invalid_request`.
    /// Docplanner mode requires `scope=integration`; [`oauth2`](Self::oauth2) mode starts
    /// with none.
    pub fn require_param(mut self, name: &str, value: &str) -> Self {
        self.rules.required.retain(|(n, _)| n != name);
        self.rules
            .required
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// Issued tokens expire at their issue time floored to this granularity (counted from
    /// the fake's start) plus their lifetime, as a server writing a JWT `exp` in whole
    /// seconds does. Default: exact (`Duration::ZERO`) for Docplanner, 1 s in
    /// [`oauth2`](Self::oauth2) mode.
    pub fn exp_granularity(mut self, granularity: Duration) -> Self {
        self.rules.exp_granularity = granularity;
        self
    }

    /// Answer every path that is neither the token endpoint nor the fake's API with
    /// `service`, after the same bearer-token check as the API (requests without a valid
    /// token get the 401 and never reach it; the others count as API requests). The
    /// request body is collected first; use it to fixture your own API.
    pub fn fallback<S, RB>(mut self, service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        self.fallback = Some(Fallback::new(service));
        self
    }

    fn state(&self) -> Arc<State> {
        Arc::new(State::new(
            self.client_id.clone(),
            self.client_secret.clone(),
            self.lifetime,
            self.rules.clone(),
            self.fallback.clone(),
        ))
    }

    /// Start listening on `127.0.0.1:0`: HTTPS, plus plain HTTP that redirects.
    pub async fn start(self) -> Result<FakeDocplanner, BoxError> {
        let state = self.state();
        let certificate = server::Certificate::generate()?;
        let https = server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let http = server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let https_addr = https.local_addr()?;
        let http_addr = http.local_addr()?;
        state
            .https_port
            .store(u64::from(https_addr.port()), Ordering::Relaxed);
        let https_task = server::serve_https(https, Arc::clone(&state), certificate.acceptor());
        let http_task = server::serve_redirects(http, Arc::clone(&state));
        Ok(FakeDocplanner {
            state,
            origin: format!("https://{https_addr}"),
            http_addr: Some(http_addr),
            certificate: Some(certificate),
            https_addr: Some(https_addr),
            https_task: Mutex::new(Some(https_task)),
            http_task: Some(http_task),
        })
    }

    /// No sockets: reach it through [`FakeDocplanner::service`] (or the cache and layer it
    /// hands out, which use it). Its URLs name the host `www.fake-docplanner.test`.
    pub fn in_process(self) -> FakeDocplanner {
        FakeDocplanner {
            state: self.state(),
            origin: format!("https://{IN_PROCESS_HOST}"),
            http_addr: None,
            certificate: None,
            https_addr: None,
            https_task: Mutex::new(None),
            http_task: None,
        }
    }
}

/// An HTTPS client (the crate's built-in client type) that trusts the certificate of each
/// of `fakes`: one client for several fake markets (see `examples/markets.rs`).
pub fn client_trusting<B>(fakes: &[&FakeDocplanner]) -> Result<HttpsClient<B>, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut roots = rustls::RootCertStore::empty();
    for certificate in fakes.iter().filter_map(|f| f.certificate.as_ref()) {
        roots.add(certificate.der.clone())?;
    }
    // No proxy whatever the environment says: the fakes are on loopback.
    Ok(HttpsClientBuilder::new()
        .roots(roots)
        .proxy(Proxy::none())
        .build()?)
}

impl Drop for FakeDocplanner {
    fn drop(&mut self) {
        self.stop_https();
        if let Some(task) = &self.http_task {
            task.abort();
        }
    }
}

impl fmt::Debug for FakeDocplanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeDocplanner")
            .field("origin", &self.origin)
            .field("client_secret", &"[redacted]")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The fake as an in-process tower service: any request body, answers [`FakeBody`].
#[derive(Clone)]
pub struct FakeService {
    state: Arc<State>,
}

impl<B> Service<Request<B>> for FakeService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<FakeBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<FakeBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move { state.handle(request).await })
    }
}

impl fmt::Debug for FakeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeService").finish_non_exhaustive()
    }
}

/// How [`FakeDocplanner::credentials`] reaches the token endpoint: over HTTPS or in process.
#[derive(Clone, Debug)]
pub enum FakeTransport {
    /// Over real HTTPS, trusting the fake's certificate.
    Https(Box<HttpsClient<Full<Bytes>>>),
    /// In process.
    InProcess(FakeService),
}

impl Service<Request<Full<Bytes>>> for FakeTransport {
    type Response = Response<http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            FakeTransport::Https(client) => client.poll_ready(cx).map_err(Into::into),
            FakeTransport::InProcess(service) => {
                Service::<Request<Full<Bytes>>>::poll_ready(service, cx)
            }
        }
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        use http_body_util::BodyExt as _;
        match self {
            FakeTransport::Https(client) => {
                let future = client.call(request);
                Box::pin(async move {
                    let response = future.await?;
                    Ok(response.map(|b| b.map_err(BoxError::from).boxed_unsync()))
                })
            }
            FakeTransport::InProcess(service) => {
                let future = service.call(request);
                Box::pin(async move { Ok(future.await?.map(|b| b.boxed_unsync())) })
            }
        }
    }
}
