//! Where tokens come from: the [`TokenSource`] trait and its OAuth2 implementation,
//! [`ClientCredentials`].
//!
//! A [`TokenCache`](crate::TokenCache) asks its source for a token only when it needs one,
//! one request at a time, with a timeout and a backoff around it: a source just fetches.
//!
//! # Which HTTP client the token requests use
//!
//! [`ClientCredentials`] sends them through any `tower::Service<http::Request<Full<Bytes>>>`:
//! * the built-in [`client::https_client`](crate::client::https_client) (feature `client`);
//! * [`SharedClient`]: the very client your API requests go through (built for another
//!   body type, such as the layer's `ReplayBody<Full<Bytes>>`), so both share one pool;
//! * [`ReqwestClient`] (feature `reqwest`): your `reqwest::Client`.
//!
//! # Example: a source of your own
//!
//! Any `Fn() -> impl Future<Output = Result<AccessToken, BoxError>>` is a source, which is
//! handy in tests:
//!
//! ```
//! use std::time::Duration;
//! use docplanner_auth::{AccessToken, BoxError, TokenCache};
//!
//! let cache = TokenCache::new(|| async {
//!     Ok::<_, BoxError>(AccessToken::new("static-token", Duration::from_secs(600))?)
//! });
//! # let _ = cache;
//! ```

mod client_credentials;
#[cfg(feature = "reqwest")]
mod reqwest;
mod response;
mod shared_client;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use self::client_credentials::{ClientAuth, ClientCredentials, ClientCredentialsBuilder};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use self::reqwest::ReqwestClient;
pub use self::shared_client::SharedClient;

/// The scope Docplanner integrations ask for: the default scope for Docplanner's token URLs
/// (other providers get none unless asked).
pub const DEFAULT_SCOPE: &str = "integration";
#[doc(hidden)]
pub use self::response::parse_token_response;

use crate::error::BoxError;
use crate::token::AccessToken;

/// The lifetime assumed when the token endpoint gives no `expires_in`: 3600 s.
///
/// Docplanner's own example answers `"expires_in": 3600` while its guide promises 24 h;
/// assuming the shorter can only cost a few extra refreshes a day, never a request with an
/// expired token (and a 401 would still be healed by a refresh and a replay).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The largest token response body we read: 64 KiB. A token answer is a few hundred bytes;
/// anything much larger is an error page or a misrouted request.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// Anything that can produce an access token.
///
/// The cache calls `fetch` when it needs a token: never twice at once, with a timeout
/// around it and a backoff after failures. Return this crate's [`Error`](crate::Error)
/// (boxed) to keep its kind (transient or permanent); any other error is treated as
/// transient.
pub trait TokenSource: Send + Sync + 'static {
    /// Obtain a new token.
    fn fetch(&self) -> impl Future<Output = Result<AccessToken, BoxError>> + Send;

    /// A name for the caches over this source (their metrics and tracing label `cache`)
    /// when none is given; `None` (the default) leaves the cache's own default.
    /// [`ClientCredentials`] answers its token URL's host, with the port if it is not
    /// the default one.
    fn cache_name(&self) -> Option<&str> {
        None
    }
}

impl<F, Fut> TokenSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AccessToken, BoxError>> + Send,
{
    fn fetch(&self) -> impl Future<Output = Result<AccessToken, BoxError>> + Send {
        self()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`TokenSource`] made object-safe, so the cache is not generic over its source.
pub(crate) trait ErasedSource: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, BoxError>>;
}

impl<T: TokenSource> ErasedSource for T {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessToken, BoxError>> {
        Box::pin(TokenSource::fetch(self))
    }
}
