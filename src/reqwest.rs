//! [`BearerAuthMiddleware`]: the reqwest-middleware adapter (feature `reqwest`).
//!
//! The same behaviour as the tower [`BearerAuthLayer`], for a
//! [`reqwest_middleware::ClientWithMiddleware`], from the same [`TokenCache`]: an
//! application that talks to Docplanner through both stacks uses one token, fetched once.
//!
//! * The token is attached only to `https` requests for the configured API host(s); any
//!   other request is refused before the token endpoint or the network is touched, with
//!   [`reqwest_middleware::Error::Middleware`] holding this crate's [`Error`] (get it back
//!   with `downcast_ref::<docplanner_auth::Error>()`).
//! * A fresh token costs one lock-free load; N concurrent callers that need a token make
//!   one token request.
//! * A `401` invalidates the token that was used (only if it is still the current one), a
//!   new token is obtained (one refresh for a whole burst of 401s), and the request is sent
//!   once more if it could be cloned before sending ([`reqwest::Request::try_clone`]: any
//!   body but a stream). A streamed body, the same token handed out again, a failing token
//!   endpoint or a second `401` all return that `401` to the caller: never a loop.
//!
//! # What reqwest does before and after the middleware
//!
//! * **User info.** reqwest's `RequestBuilder` moves `user:password@` out of the URL into
//!   an `Authorization: Basic` header before any middleware runs; the middleware checks
//!   the host the request really goes to and replaces that header with the bearer token.
//!   A [`reqwest::Request`] built by hand that still has user info in its URL is refused.
//! * **Redirects** are followed inside reqwest's client, after the middleware: reqwest
//!   drops the `Authorization` header when a redirect changes the scheme, host or port.
//!
//! # TLS
//!
//! The middleware builds no client, so it brings no TLS of its own: your reqwest dependency
//! chooses. reqwest 0.13's default `rustls` feature uses the aws-lc-rs crypto provider; to
//! use ring instead (as this crate's built-in client does), enable `rustls-no-provider`
//! and install ring before building the client:
//! `rustls::crypto::ring::default_provider().install_default()`.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn run() -> Result<(), docplanner_auth::BoxError> {
//! use docplanner_auth::docplanner::{Credentials, Domain};
//! use docplanner_auth::reqwest::BearerAuthMiddleware;
//!
//! // One cache per credential set; hand clones of it to every stack that should share it.
//! let cache = Credentials::new(Domain::Spain, "client-id", "client-secret").cache()?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(BearerAuthMiddleware::new(cache, &Domain::Spain.api_base())?)
//!     .build();
//!
//! let response = client
//!     .get(format!("{}/facilities", Domain::Spain.api_base()))
//!     .send()
//!     .await?;
//! println!("{}", response.text().await?);
//! # Ok(()) }
//! ```
//!
//! With a tower stack already built, [`BearerAuthMiddleware::from`] a
//! [`&BearerAuthLayer`](BearerAuthLayer) shares its cache and its allowed hosts.

use std::fmt;

use ::reqwest::header::AUTHORIZATION;
use ::reqwest::{Request, Response, StatusCode};
use http::{Extensions, HeaderValue};
use reqwest_middleware::{Middleware, Next};

use crate::auth::BearerAuthLayer;
use crate::cache::{Rejection, TokenCache};
use crate::error::Error;
use crate::origin::{Origin, Scope};

/// Adds `Authorization: Bearer <token>` to every request of a
/// [`reqwest_middleware::ClientWithMiddleware`], from a shared [`TokenCache`], and replays
/// a request once after a `401`. See the [module docs](self) for the behaviour and an
/// example.
///
/// The token is only ever attached to `https` requests for the configured API host(s);
/// anything else fails with [`Error::is_insecure_scheme`] or [`Error::is_host_not_allowed`]
/// inside [`reqwest_middleware::Error::Middleware`], before the token endpoint or the
/// network is touched.
#[derive(Clone)]
pub struct BearerAuthMiddleware {
    cache: TokenCache,
    scope: Scope,
}

impl BearerAuthMiddleware {
    /// A middleware that authenticates requests to the host of `api_base` (for example
    /// `https://www.doctoralia.es/api/v3/integration`) with tokens from `cache`.
    ///
    /// Fails when `api_base` is not an absolute `https` URL (or `http` to a loopback host,
    /// which additionally needs [`allow_http_loopback`](Self::allow_http_loopback)).
    pub fn new(cache: TokenCache, api_base: &str) -> Result<Self, Error> {
        let origin = Origin::parse_config("API base", api_base)?;
        Ok(Self {
            cache,
            scope: Scope::new(origin),
        })
    }

    /// Also authenticate requests to the host of `api_base`.
    pub fn allow_api_base(mut self, api_base: &str) -> Result<Self, Error> {
        let origin = Origin::parse_config("API base", api_base)?;
        self.scope.add(origin);
        Ok(self)
    }

    /// Allow plain `http` requests to a configured loopback host (`127.0.0.0/8`, `::1`,
    /// `localhost`), for tests against a local mock. Off by default; the fake Docplanner of
    /// the `test-util` feature speaks HTTPS and does not need it.
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        self.scope.allow_http_loopback(allow);
        self
    }

    /// The cache the tokens come from.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// May the token go with `request`? Counts and logs a refusal.
    fn check(&self, request: &Request) -> Result<(), Error> {
        let url = request.url();
        // `authority()` is the URL's `user:password@host:port` as written (the port only
        // when it is not the scheme's default): user info never matches a configured host.
        let host = url.host_str().unwrap_or_default();
        let checked = self.scope.check(url.scheme(), url.authority(), host);
        if let Err(error) = &checked {
            self.cache.count_refused(error);
        }
        checked
    }

    /// A token's header and id: one lock-free load when a usable token is cached, else the
    /// single refresh in flight.
    async fn header(&self) -> Result<(HeaderValue, u64), Error> {
        if let Some(cached) = self.cache.header() {
            return Ok(cached);
        }
        let token = self.cache.token().await?;
        Ok((token.header_value().clone(), token.id()))
    }
}

/// Shares the layer's cache and its allowed hosts (API bases and the loopback opt-in), so
/// that a tower stack and a reqwest client use one token.
impl From<&BearerAuthLayer> for BearerAuthMiddleware {
    fn from(layer: &BearerAuthLayer) -> Self {
        Self {
            cache: layer.config.cache.clone(),
            scope: layer.config.scope.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for BearerAuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.check(&request)
            .map_err(reqwest_middleware::Error::middleware)?;
        let (header, used) = self
            .header()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        // Cloned before the token goes in, and before sending: a streamed body cannot be
        // cloned (`None`), and a 401 to such a request is returned as it is.
        let replay = request.try_clone();
        request.headers_mut().insert(AUTHORIZATION, header);

        let response = next.clone().run(request, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        // The 401 path goes through the same cache handle the tower layer's futures use.
        let cache = self.cache.handle();
        let rejection = cache.reject(used);
        // Only wait for a new token if the request can be sent again with it.
        let mut replay = match replay {
            Some(replay) if rejection != Rejection::RateLimited => replay,
            _ => return Ok(response),
        };
        let token = match self.cache.token().await {
            Ok(token) if token.id() != used => token,
            Ok(_) => return Ok(response), // the endpoint handed out the rejected token again
            Err(error) => {
                tracing::warn!(%error, "no new token after a 401; returning the 401");
                return Ok(response);
            }
        };
        // The 401 is not needed any more: drop it (and its body) before the replay.
        drop(response);
        replay
            .headers_mut()
            .insert(AUTHORIZATION, token.header_value().clone());
        cache.count_replay();
        let response = next.run(replay, extensions).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            // Rejected twice: drop that token too (rate-limited), never loop.
            cache.reject(token.id());
        }
        Ok(response)
    }
}

impl fmt::Debug for BearerAuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cache prints its state and counters, never a token.
        f.debug_struct("BearerAuthMiddleware")
            .field("cache", &self.cache)
            .field("scope", &self.scope)
            .finish()
    }
}
