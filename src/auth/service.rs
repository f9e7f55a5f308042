//! [`BearerAuth`]: the tower service, and the `Layer` impl of [`BearerAuthLayer`] that
//! builds it.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use super::body::ReplayBody;
use super::future::ResponseFuture;
use super::layer::{BearerAuthLayer, Config};
use crate::cache::TokenCache;
use crate::error::BoxError;
use crate::router::HttpTarget;

/// Middleware that authenticates requests with a bearer token; see [`BearerAuthLayer`].
///
/// Its inner service receives `Request<ReplayBody<B>>` (the caller's body, recorded for a
/// possible replay) and its error type is [`BoxError`]: errors of the inner service pass
/// through unchanged, errors of this crate are a [`crate::Error`] inside.
#[derive(Clone, Debug)]
pub struct BearerAuth<S> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config>,
}

impl<S> BearerAuth<S> {
    /// Wrap `inner` with the settings of `layer`.
    pub fn new(inner: S, layer: &BearerAuthLayer) -> Self {
        Self {
            inner,
            config: Arc::clone(&layer.config),
        }
    }

    /// The cache the tokens come from, the default set's for a routed layer (for
    /// [`TokenCache::status`] in a health check).
    pub fn cache(&self) -> &TokenCache {
        self.config.router.default_set().cache()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for BearerAuth<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Use the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let target = HttpTarget {
            uri: request.uri(),
            headers: request.headers(),
        };
        match self.config.router.choose(&target, request.extensions()) {
            Ok(route) => match route.set() {
                Some(set) => ResponseFuture::new(inner, set.cache(), &self.config, request),
                None => ResponseFuture::passed(inner, request),
            },
            Err(error) => ResponseFuture::refused(inner, error),
        }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}
