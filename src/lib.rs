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
//!   to 64 KiB), never in a loop;
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
//! use docplanner_auth::docplanner::{self, Domain};
//! use tower::ServiceExt;
//!
//! // One line: an HTTPS client that authenticates every request to doctoralia.es.
//! let client = docplanner::client::<Full<Bytes>>(Domain::Spain, "client-id", "client-secret")?;
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
//! typically), build the pieces yourself:
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # fn build() -> Result<(), docplanner_auth::Error> {
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::{client::https_client, BearerAuthLayer, ClientCredentials, ReplayBody, TokenCache};
//! use tower::ServiceBuilder;
//!
//! let token_http = https_client::<Full<Bytes>>()?; // the token call may share your TLS/proxy stack
//! let source = ClientCredentials::new(
//!     token_http,
//!     "https://www.doctoralia.es/oauth/v2/token",
//!     "client-id",
//!     "client-secret",
//! )?;
//! let cache = TokenCache::new(source); // share clones of it across clients
//! let api = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(cache, "https://www.doctoralia.es/api/v3/integration")?)
//!     .service(https_client::<ReplayBody<Full<Bytes>>>()?);
//! # let _ = api; Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `client` | yes | [`client::https_client`] (hyper-util + rustls with ring and the webpki roots) and the one-line [`docplanner::client`] / [`docplanner::layer`] |
//! | `reqwest` | no | [`reqwest::BearerAuthMiddleware`]: the same authentication for a reqwest-middleware client, sharing the same [`TokenCache`] |
//! | `test-util` | no | [`testing::FakeDocplanner`]: a fake Docplanner over real HTTPS on loopback, with counters and fault switches |
//!
//! # Security
//!
//! * **HTTPS only.** A token is attached only to `https` requests whose host and port are
//!   a configured API host; anything else fails with [`Error::is_insecure_scheme`] or
//!   [`Error::is_host_not_allowed`] before the inner service or the token endpoint is
//!   called. The token URL must be `https` too. Plain `http` is possible to loopback hosts
//!   only, with an explicit `allow_http_loopback(true)`, for tests.
//! * **Redaction.** `Debug` of every type prints `[redacted]` for secrets and tokens;
//!   error messages never contain them (a server echoing the secret is scrubbed); the
//!   `Authorization` headers we build are marked sensitive (never HPACK-indexed).
//! * **Memory.** The client secret and the token bytes are zeroized when dropped.
//! * **Storage.** Tokens live in process memory only.
//!
//! # Runtime
//!
//! Refreshes run in Tokio tasks and use Tokio's timer: use this crate inside a Tokio
//! runtime with the time driver enabled (`#[tokio::main]` does).
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85.
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
mod secret;
pub mod source;
pub mod store;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod token;

pub use crate::auth::{BearerAuth, BearerAuthLayer, ReplayBody, ResponseFuture};
pub use crate::cache::{CacheStats, TokenCache, TokenCacheBuilder};
pub use crate::error::{BoxError, Error};
pub use crate::source::{ClientCredentials, TokenSource};
pub use crate::token::{AccessToken, MAX_LIFETIME};
