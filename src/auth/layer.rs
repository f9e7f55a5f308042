//! [`BearerAuthLayer`]: the tower layer, and the configuration every [`BearerAuth`] it
//! makes shares. (Its `Layer` impl sits with the service it builds, in `service.rs`, so that
//! imports run one way: service → future → layer.)
//!
//! [`BearerAuth`]: crate::BearerAuth

use std::sync::Arc;

use super::body::DEFAULT_REPLAY_LIMIT;
use crate::cache::TokenCache;
use crate::error::Error;
use crate::origin::{Origin, Scope};
use crate::router::{Router, Set};

/// Adds `Authorization: Bearer <token>` to every request, from a shared [`TokenCache`].
///
/// The token is only ever attached to `https` requests for the configured API host(s);
/// anything else is refused with an error before the inner service or the token endpoint
/// is called. See the [crate docs](crate) for the behaviour and an example.
#[derive(Clone, Debug)]
pub struct BearerAuthLayer {
    pub(crate) config: Arc<Config>,
}

/// What every [`BearerAuth`] made by one layer shares.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Chooses each request's credential set (the only one, for a layer made by `new`).
    pub(crate) router: Router,
    pub(crate) replay_limit: usize,
}

impl BearerAuthLayer {
    /// A layer that authenticates requests to the *origin* of `api_base` with tokens from
    /// `cache`.
    ///
    /// Only the origin of `api_base` counts: its scheme, host and port
    /// (`https://www.doctoralia.es` of `https://www.doctoralia.es/api/v3/integration`). Every
    /// request to that origin, whatever its path, gets the token; a request to any other
    /// origin is refused. Pass the API base URL you call, or just the origin.
    ///
    /// Fails when `api_base` is not an absolute `https` URL (or `http` to a loopback host,
    /// which additionally needs [`allow_http_loopback`](Self::allow_http_loopback)).
    pub fn new(cache: TokenCache, api_base: &str) -> Result<Self, Error> {
        let origin = Origin::parse_config("API base", api_base)?;
        let set = Set::from_parts(cache, Scope::new(origin));
        Ok(Self::with_router(Router::single(set)))
    }

    /// A layer over several credential sets: each request gets the token of the set the
    /// [`Router`] chooses for it (by host, or by a
    /// [`CredentialSet`](crate::router::CredentialSet) extension), and only a request for
    /// one of that set's origins gets it; see [`router`](crate::router).
    pub fn routed(router: Router) -> Self {
        Self::with_router(router)
    }

    fn with_router(router: Router) -> Self {
        Self {
            config: Arc::new(Config {
                router,
                replay_limit: DEFAULT_REPLAY_LIMIT,
            }),
        }
    }

    /// Also authenticate requests to the origin (scheme, host, port) of `api_base` (with the
    /// default set, for a [`routed`](Self::routed) layer).
    pub fn allow_api_base(mut self, api_base: &str) -> Result<Self, Error> {
        Arc::make_mut(&mut self.config)
            .router
            .allow_api_base(api_base)?;
        Ok(self)
    }

    /// The redirect policy for tower-http's `FollowRedirectLayer` put outside this layer
    /// (feature `tower-http`): it follows a redirect only inside the origins of one
    /// credential set, or between hosts outside every set; see
    /// [`RedirectPolicy`](crate::RedirectPolicy).
    #[cfg(feature = "tower-http")]
    pub fn redirect_policy(&self) -> crate::RedirectPolicy {
        crate::RedirectPolicy::new(self.config.router.scopes())
    }

    /// Allow plain `http` requests to a configured loopback host (`127.0.0.0/8`, `::1`,
    /// `localhost`), for tests against a local mock. Off by default; the fake Docplanner of
    /// the `test-util` feature speaks HTTPS and does not need it. For a
    /// [`routed`](Self::routed) layer, this is the default set's; the others say it with
    /// [`Set::allow_http_loopback`].
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        Arc::make_mut(&mut self.config)
            .router
            .default_set_mut()
            .scope_mut()
            .allow_http_loopback(allow);
        self
    }

    /// The largest request body kept for a replay after a 401 (default
    /// [`DEFAULT_REPLAY_LIMIT`], 64 KiB). `0` replays only empty bodies.
    ///
    /// A request kept for a replay costs a clone of its head (method, URI, headers,
    /// extensions) and a list of its body's chunks (shared `Bytes`, not copied), both
    /// dropped with the response future.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).replay_limit = bytes;
        self
    }

    /// The cache the tokens come from (the default set's, for a [`routed`](Self::routed)
    /// layer).
    pub fn cache(&self) -> &TokenCache {
        self.config.router.default_set().cache()
    }

    /// The router that chooses each request's credential set.
    pub fn router(&self) -> &Router {
        &self.config.router
    }
}
