//! Invisible authentication for the Docplanner Integrations API (Doctoralia, ZnanyLekarz,
//! MioDottore, Jameda… 13 markets).
//!
//! # Overview
//!
//! Wrap your HTTP client once with [`BearerAuthLayer`]; from then on every request
//! carries `Authorization: Bearer <token>` with a valid token:
//!
//! * obtained with the OAuth2 client-credentials grant ([`ClientCredentials`]) over any
//!   tower HTTP service, once, and reused for its whole lifetime;
//! * cached in a [`TokenCache`] shared by every client of the application, read on the
//!   hot path with one lock-free `ArcSwap` load;
//! * refreshed by a single in-flight request (10,000 concurrent callers on a cold start
//!   make one token request), in the background before it expires, so nobody waits;
//! * refreshed again when the API answers 401, with the request replayed once (bodies up
//!   to 64 KiB, once the inner service has read them whole, as an HTTP client does before
//!   the answer comes), never in a loop: the rejected token is only *suspect*, and stays in use
//!   until a new one arrives (and if the refresh fails); every 401 handed back carries an
//!   [`Unauthorized`] extension saying why (see the [401 policy](cache#the-401-policy));
//! * only ever sent over HTTPS to the configured API host, in a header marked sensitive,
//!   never printed by `Debug`, errors or logs, and zeroized from memory on drop.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn run() -> Result<(), docplanner_auth::BoxError> {
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use docplanner_auth::docplanner::{Credentials, Domain};
//! use tower::ServiceExt;
//!
//! // One line: an HTTPS client that authenticates every request to doctoralia.es.
//! let client = Credentials::new(Domain::Spain, "client-id", "client-secret").client::<Full<Bytes>>()?;
//!
//! let request = http::Request::get(format!("{}/facilities", Domain::Spain.api_base()))
//!     .body(Full::new(Bytes::new()))?;
//! let response = client.oneshot(request).await?;
//! let body = response.into_body().collect().await?.to_bytes();
//! println!("{}", String::from_utf8_lossy(&body));
//! # Ok(()) }
//! ```
//!
//! With your own client stack (any `tower::Service<http::Request<_>>`, hyper-util's client
//! typically), build the pieces yourself. One client can serve the token requests too
//! ([`source::SharedClient`]): one TLS setup, one proxy setup, one connection pool.
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # fn build() -> Result<(), docplanner_auth::Error> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::source::SharedClient;
//! use docplanner_auth::{client::https_client, BearerAuthLayer, ClientCredentials, ReplayBody, TokenCache};
//! use tower::ServiceBuilder;
//!
//! let http = https_client::<ReplayBody<Full<Bytes>>>()?;
//! let source = ClientCredentials::new(
//!     SharedClient::new(http.clone()), // the token requests go through the same pool
//!     "https://www.doctoralia.es/oauth/v2/token",
//!     "client-id",
//!     "client-secret",
//! )?;
//! let cache = TokenCache::new(source); // share clones of it across clients
//! let api = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(cache, "https://www.doctoralia.es/api/v3/integration")?)
//!     .service(http);
//! # let _ = api; Ok(()) }
//! ```
//!
//! # Composing with tower-http
//!
//! Put tower-http's layers around [`BearerAuthLayer`] in this order, outermost first:
//!
//! ```text
//! TraceLayer -> TimeoutLayer -> FollowRedirectLayer -> BearerAuthLayer -> HTTP client
//! ```
//!
//! * **`FollowRedirectLayer` outside (before) `BearerAuthLayer`.** Each redirected request
//!   then goes through this layer again, and its scope check refuses a hop to plain `http`
//!   or to a host that is not a configured API host: the request fails with an [`Error`]
//!   ([`is_insecure_scheme`](Error::is_insecure_scheme),
//!   [`is_host_not_allowed`](Error::is_host_not_allowed)) and the token goes nowhere,
//!   whatever the redirect policy. A redirect within the API host is followed, the token
//!   attached again. Inside (after) this layer, the redirected requests are copies of ours,
//!   `Authorization` included, and only the redirect policy stands between the token and
//!   the next host: tower-http 0.7's default policy removes it on a cross-origin hop and
//!   keeps it removed on the later hops (0.6 re-sent the original headers on a later hop
//!   that was same-origin for the foreign site: upgrade), and a policy without
//!   `FilterCredentials` (`Limited`, `Action::Follow`) sends it on the first hop. A foreign
//!   host's 401 would also make this layer renew the token. `tests/tower_http.rs` shows
//!   each case with local servers. With several credential sets, or with hosts passed
//!   through, give it the layer's own policy (feature `tower-http`,
//!   [`BearerAuthLayer::redirect_policy`]): `FollowRedirectLayer::with_policy(layer.redirect_policy())`
//!   follows a hop only inside one set's origins (or between hosts outside every set), so
//!   one market's host cannot send the next hop to another market, nor a foreign host
//!   choose an authenticated API call by redirecting into it.
//! * **The timeout outside `BearerAuthLayer`**, so that one budget covers the logical
//!   request: waiting for a token (cold start, expiry), the request, its replay after a
//!   401 and every redirect hop. Inside, it bounds each HTTP attempt only, and the wait for
//!   a token is bounded by the cache's token request timeout alone. Giving up is safe: a
//!   refresh in flight carries on in its own task. For a client, tower's
//!   `tower::timeout::TimeoutLayer`, which fails with an `Elapsed` error, is usually the
//!   better fit; tower-http's `TimeoutLayer::with_status_code` answers a made-up status
//!   (say 504) instead, and needs a response body with `Default` (box hyper's `Incoming`).
//! * **`TraceLayer` outermost**: one span per logical request, the replay and the redirect
//!   hops inside it, and no `Authorization` header in it (it is added further in). Placed
//!   inside, it sees our header, which is marked sensitive:
//!   `DefaultMakeSpan::include_headers(true)` prints `Sensitive`, never the token.
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn run() -> Result<(), docplanner_auth::BoxError> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::client::https_client;
//! use docplanner_auth::docplanner::{Credentials, Domain};
//! use docplanner_auth::ReplayBody;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_http::{follow_redirect::FollowRedirectLayer, trace::TraceLayer};
//!
//! let api = ServiceBuilder::new()
//!     .layer(TraceLayer::new_for_http())
//!     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(30)))
//!     .layer(FollowRedirectLayer::new())
//!     .layer(Credentials::new(Domain::Spain, "client-id", "client-secret").layer()?)
//!     .service(https_client::<ReplayBody<Full<Bytes>>>()?);
//!
//! let request = http::Request::get(format!("{}/facilities", Domain::Spain.api_base()))
//!     .body(Full::new(Bytes::new()))?;
//! let response = api.oneshot(request).await?;
//! # let _ = response; Ok(()) }
//! ```
//!
//! The examples show more: `examples/hyper_client.rs` (this stack over your own hyper-util
//! client), `examples/axum_backend` (one shared client in an axum backend, errors mapped to
//! 502/503) and `examples/docplanner` (a command line client).
//!
//! # axum
//!
//! In an axum backend, build the authenticated client once and share it through `State`;
//! clones share the connection pool and the token:
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # fn build() -> Result<(), docplanner_auth::Error> {
//! use axum::{extract::State, routing::get, Router};
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::client::HttpsClient;
//! use docplanner_auth::docplanner::Credentials;
//! use docplanner_auth::{BearerAuth, ReplayBody};
//! use tower::ServiceExt;
//!
//! type Docplanner = BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>>;
//!
//! async fn facilities(State(client): State<Docplanner>) -> String {
//!     let request = http::Request::get("https://www.doctoralia.es/api/v3/integration/facilities")
//!         .body(Full::new(Bytes::new()))
//!         .expect("a valid request");
//!     match client.oneshot(request).await {
//!         Ok(response) => format!("Docplanner answered {}", response.status()),
//!         // Display of our errors never contains a secret or a token.
//!         Err(error) => format!("Docplanner unreachable: {error}"),
//!     }
//! }
//!
//! let client: Docplanner = Credentials::from_env()?.client()?;
//! let app: Router = Router::new().route("/facilities", get(facilities)).with_state(client);
//! # let _ = app; Ok(()) }
//! ```
//!
//! `examples/axum_backend` is a complete one, mapping Docplanner failures to 502/503.
//!
//! # reqwest
//!
//! With feature `reqwest`, [`reqwest::BearerAuthMiddleware`] gives a reqwest-middleware
//! client the same behaviour, and can share the [`TokenCache`] of a tower stack (one token
//! for both): see the [`reqwest`] module and `examples/reqwest_client.rs`. Build its reqwest
//! client with [`reqwest::client_builder`], whose redirects never leave the API.
//! [`source::ReqwestClient`] fetches the tokens through the application's own
//! `reqwest::Client`: with `default-features = false, features = ["reqwest"]` a reqwest
//! application builds one HTTP stack and one TLS library, not two.
//!
//! # Proxies and certificates
//!
//! The token requests go through whatever client you give [`ClientCredentials`]: your
//! reqwest client ([`source::ReqwestClient`]) or hyper-util client
//! ([`source::SharedClient`]) with their own proxy and root settings. The built-in client
//! ([`client`]) goes through the proxy of `HTTPS_PROXY`/`ALL_PROXY` (bypassed for
//! `NO_PROXY`) or an explicit [`client::Proxy`], trusts Mozilla's roots by default, the
//! operating system's store with [`client::native_roots`] (feature `native-roots`, for a
//! TLS-inspecting corporate proxy), or any [`rustls::RootCertStore`] you build (a CA of
//! your own): see [`client::HttpsClientBuilder`].
//!
//! # Configuration from the environment
//!
//! [`docplanner::Credentials::from_env`] reads `DOCPLANNER_DOMAIN` (a domain or a country
//! code), `DOCPLANNER_CLIENT_ID` and `DOCPLANNER_CLIENT_SECRET`, and names the variable
//! that is missing or invalid:
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # fn run() -> Result<(), docplanner_auth::Error> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::docplanner::Credentials;
//!
//! let credentials = Credentials::from_env()?;
//! let client = credentials.client::<Full<Bytes>>()?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! # Other providers
//!
//! [`ClientCredentials`] speaks RFC 6749 client credentials to any OAuth2 server. For a
//! token URL that is not one of Docplanner's, the defaults are the RFC's: no `scope`
//! unless you ask for one, HTTP Basic with the id and secret form-urlencoded first
//! ([`source::ClientAuth::Basic`]), and messages about "the token endpoint host:port".
//! Choose the scopes ([`scope`](source::ClientCredentialsBuilder::scope),
//! [`scopes`](source::ClientCredentialsBuilder::scopes),
//! [`no_scope`](source::ClientCredentialsBuilder::no_scope)), add form parameters
//! ([`param`](source::ClientCredentialsBuilder::param): `audience`, `resource`…) and the
//! client authentication ([`client_auth`](source::ClientCredentialsBuilder::client_auth):
//! RFC Basic, Basic as given, or `client_secret_post`). Short-lived tokens are fine: a
//! token is renewed after at least 80 % of its life (at most 1.25 token requests per
//! lifetime from a minute up, 1.5 from 10 s up; see [`cache::RefreshPolicy`]).
//!
//! | provider | token URL | parameters | client authentication |
//! |---|---|---|---|
//! | Keycloak | `https://{host}/realms/{realm}/protocol/openid-connect/token` | none needed (`scope` optional) | RFC Basic (default) or post |
//! | Auth0 | `https://{tenant}.auth0.com/oauth/token` (or your custom domain) | `audience` = the API identifier | post (Auth0's default for machine-to-machine apps) or Basic |
//! | Entra ID | `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token` | `scope` = `{resource}/.default` | post, as Microsoft documents it (certificate credentials are not supported) |
//! | Okta | `https://{domain}/oauth2/default/v1/token` (a custom authorization server) | `scope` = a custom scope of that server | RFC Basic (default) or post |
//!
//! Keycloak (its default access tokens live 5 minutes):
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # fn build() -> Result<(), docplanner_auth::Error> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::{client::https_client, BearerAuthLayer, ClientCredentials, TokenCache};
//!
//! let source = ClientCredentials::builder(
//!     "https://sso.example.com/realms/acme/protocol/openid-connect/token",
//!     "orders-service",
//!     "client-secret",
//! )
//! .build(https_client::<Full<Bytes>>()?)?;
//! let layer = BearerAuthLayer::new(TokenCache::new(source), "https://api.example.com")?;
//! # let _ = layer; Ok(()) }
//! ```
//!
//! Auth0:
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # fn build() -> Result<(), docplanner_auth::Error> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::source::ClientAuth;
//! use docplanner_auth::{client::https_client, ClientCredentials, TokenCache};
//!
//! let source = ClientCredentials::builder(
//!     "https://acme.eu.auth0.com/oauth/token",
//!     "client-id",
//!     "client-secret",
//! )
//! .param("audience", "https://api.example.com")
//! .client_auth(ClientAuth::Post)
//! .build(https_client::<Full<Bytes>>()?)?;
//! let cache = TokenCache::new(source);
//! # let _ = cache; Ok(()) }
//! ```
//!
//! Microsoft Entra ID:
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # fn build() -> Result<(), docplanner_auth::Error> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::source::ClientAuth;
//! use docplanner_auth::{client::https_client, ClientCredentials, TokenCache};
//!
//! let tenant = "00000000-0000-0000-0000-000000000000";
//! let source = ClientCredentials::builder(
//!     &format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
//!     "application-client-id",
//!     "client-secret-value",
//! )
//! .scope("https://graph.microsoft.com/.default")
//! .client_auth(ClientAuth::Post)
//! .build(https_client::<Full<Bytes>>()?)?;
//! let cache = TokenCache::new(source);
//! # let _ = cache; Ok(()) }
//! ```
//!
//! Okta:
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # fn build() -> Result<(), docplanner_auth::Error> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::{client::https_client, ClientCredentials, TokenCache};
//!
//! let source = ClientCredentials::builder(
//!     "https://acme.okta.com/oauth2/default/v1/token",
//!     "client-id",
//!     "client-secret",
//! )
//! .scopes(["orders:read", "orders:write"])
//! .build(https_client::<Full<Bytes>>()?)?;
//! let cache = TokenCache::new(source);
//! # let _ = cache; Ok(()) }
//! ```
//!
//! To test against such a provider without a network, the `test-util` fake has a generic
//! OAuth2 mode (token path, accepted client authentication, required parameters, `exp`
//! floored to whole seconds) and a fallback service for your own API routes: see
//! [`testing`].
//!
//! # A fleet of replicas
//!
//! Caches can share one token through a [`store::TokenStore`]: [`store::MemoryStore`] in
//! one process, [`store::RedisStore`] (feature `redis`) across replicas, so that Docplanner
//! sees one token request per token lifetime for the whole fleet. Each request is still
//! served from the local cache; the store is consulted only when a refresh is due, and a
//! store fault never fails a request. See the [`store`] module and `examples/fleet.rs`.
//!
//! # The refresh timeline
//!
//! ```text
//!  obtained                 refresh_at            usable_until   expires
//!     |------- fresh -----------|------ stale --------|--expired--|
//!     | one lock-free load,     | callers keep using  | callers   |
//!     | nothing else            | it; ONE background  | wait for  |
//!     |                         | refresh runs        | the new   |
//!                                 <-jitter-><- lead ->  <-margin->
//! ```
//!
//! Defaults: lead 300 s (at most a tenth of the lifetime, at least 2 s), jitter up to 60 s
//! (at most a fortieth), margin 30 s (at most a twentieth, at least 1 s: servers floor a JWT
//! `exp` to whole seconds; both floors at most an eighth of the lifetime), token request timeout 10 s, backoff 1 s doubling to 30 s after
//! transient failures and 30 s doubling to 5 min after permanent ones, during which callers
//! without a valid token fail fast. The [`cache`] module explains each, with its reason.
//!
//! # Observability
//!
//! Every token request runs in a `docplanner_auth.refresh` tracing span (cache name,
//! trigger, outcome, duration); invalidations, replays, backoffs, refusals and store faults
//! are events. With feature `metrics`, counters, a latency histogram and remaining-lifetime
//! gauges go through the `metrics` facade (the table is in the [`cache`] module docs).
//! [`TokenCache::stats`] needs no feature. None of them ever carries a secret or a token.
//!
//! # Feature flags
//!
//! | feature | default | what it adds | Rust | crates built |
//! |---|---|---|---|---|
//! | (none) | | the tower layer, [`TokenCache`], [`ClientCredentials`] over your own HTTP service, [`store::MemoryStore`] | 1.85 | 23 |
//! | `client` | yes | [`client::https_client`] (hyper-util + rustls with ring and the webpki roots, HTTP/1.1 and HTTP/2, proxies from the environment) and the one-line [`Credentials::client`](docplanner::Credentials::client) / [`layer`](docplanner::Credentials::layer) / [`cache`](docplanner::Credentials::cache); re-exports [`rustls`] | 1.85 | 58 |
//! | `native-roots` | no | [`client::native_roots`]: the operating system's certificate store for the built-in client | 1.85 | |
//! | `reqwest` | no | [`reqwest::BearerAuthMiddleware`]: the same authentication for a reqwest-middleware client, sharing the same [`TokenCache`]; [`source::ReqwestClient`]: the token requests through your `reqwest::Client` | 1.88 | 102 |
//! | `redis` | no | [`store::RedisStore`] (redis 1.x): one token for a fleet of replicas | 1.88 | 103 |
//! | `metrics` | no | metrics through the [`metrics`](https://docs.rs/metrics) facade | 1.85 | 60 |
//! | `test-util` | no | [`testing::FakeDocplanner`]: a fake Docplanner over real HTTPS on loopback, with counters and fault switches | 1.88 | 66 |
//! | all | | | 1.88 | 125 |
//!
//! "Crates built": the dependencies a Linux build of the library compiles (proc-macros
//! included), each feature on top of the default one, with the repository's `Cargo.lock`;
//! "Rust": the highest `rust-version` among them. `.ci/msrv.py` derives both.
//!
//! # Security
//!
//! * **HTTPS only.** A token is attached only to `https` requests whose host and port are
//!   a configured API host; anything else fails with [`Error::is_insecure_scheme`] or
//!   [`Error::is_host_not_allowed`] before the inner service or the token endpoint is
//!   called. The token URL must be `https` too. Plain `http` is possible to loopback hosts
//!   only, with an explicit `allow_http_loopback(true)`, for tests. A `Host` header naming
//!   another host than the URI is refused too. Redirects: `FollowRedirectLayer` outside the
//!   layer (see "Composing with tower-http"); for reqwest, the client of
//!   [`reqwest::client_builder`].
//! * **Redaction.** `Debug` of every type prints `[redacted]` for secrets and tokens;
//!   error messages never contain them (a server echoing the secret, the Basic credential
//!   or the token is scrubbed by value, in every field); the
//!   `Authorization` headers we build are marked sensitive (never HPACK-indexed).
//! * **Memory.** The client secret, the Basic credentials header, the token response body
//!   and the token bytes are zeroized when dropped; the token is parsed in place, without
//!   an intermediate copy. `SECURITY.md` lists the copies outside our control, and each
//!   promise with the attack tried and its test.
//! * **What is stored where.** Without a store, the token lives in process memory only.
//!   With [`store::RedisStore`], Redis holds the access token and its issue and expiry times
//!   (the key expires with the token) under a hashed key, plus a short-lived lock holding a
//!   random replica id; never the client secret. Secure it: `rediss://` (TLS), a password
//!   or an ACL user restricted to the key prefix, a Redis only your replicas reach.
//!   [`store::MemoryStore`] keeps the same in process memory.
//!
//! # Runtime
//!
//! Refreshes run in Tokio tasks and use Tokio's timer: use this crate inside a Tokio
//! runtime with the time driver enabled (`#[tokio::main]` does).
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85 for the default build (`client`) and `metrics`; 1.88 with `redis` (redis
//! 1.8), `reqwest` (icu 2.4 through url) or `test-util` (time 0.3.55 through rcgen). CI
//! derives these from the `rust-version` of every dependency (`.ci/msrv.py`) and fails when
//! one needs more than claimed.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod cache;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod docplanner;
mod error;
mod origin;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
pub mod router;
mod secret;
pub mod source;
pub mod store;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod token;

#[cfg(feature = "tower-http")]
pub use crate::auth::RedirectPolicy;
pub use crate::auth::{BearerAuth, BearerAuthLayer, ReplayBody, ResponseFuture};
pub use crate::cache::{CacheStats, CacheStatus, TokenCache, TokenCacheBuilder, Unauthorized};
pub use crate::error::{BoxError, Error};
pub use crate::source::{ClientCredentials, TokenSource};
pub use crate::token::{AccessToken, MAX_LIFETIME};

/// The rustls this crate is built with: its types ([`RootCertStore`](rustls::RootCertStore),
/// certificates) are in the API of [`client`], so use this one rather than a separate
/// `rustls` dependency that could resolve to another version.
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use rustls;
