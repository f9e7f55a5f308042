//! The tower middleware: [`BearerAuthLayer`], [`BearerAuth`], [`ResponseFuture`], and the
//! [`ReplayBody`] its inner service receives.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use docplanner_auth::{AccessToken, BearerAuthLayer, BoxError, ReplayBody, TokenCache};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let cache = TokenCache::new(|| async {
//!     Ok::<_, BoxError>(AccessToken::new("t0k3n", Duration::from_secs(3600))?)
//! });
//! let layer = BearerAuthLayer::new(cache, "https://www.doctoralia.es/api/v3/integration")?;
//!
//! // Any service generic over its request body will do (hyper-util's client, typically).
//! let api = service_fn(|req: Request<ReplayBody<Full<Bytes>>>| async move {
//!     let seen = req.headers()["authorization"].clone();
//!     assert_eq!(seen, "Bearer t0k3n");
//!     Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
//! });
//! let client = ServiceBuilder::new().layer(layer).service(api);
//!
//! let request = Request::get("https://www.doctoralia.es/api/v3/integration/facilities")
//!     .body(Full::new(Bytes::new()))?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! # Ok(()) }
//! ```

mod body;
mod future;
mod head;
mod layer;
#[cfg(feature = "tower-http")]
mod redirect;
mod service;

pub use self::body::{ReplayBody, DEFAULT_REPLAY_LIMIT};
pub use self::future::ResponseFuture;
pub use self::layer::BearerAuthLayer;
#[cfg(feature = "tower-http")]
pub use self::redirect::{RedirectPolicy, MAX_REDIRECTS};
pub use self::service::BearerAuth;
