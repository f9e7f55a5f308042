//! [`SharedClient`]: token requests through a client built for another request body, so
//! the token requests and the API requests share one client and one connection pool.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use tower_service::Service;

/// An HTTP client for [`ClientCredentials`](crate::ClientCredentials) made from one whose
/// request body is `B` (any body that can be made from [`Bytes`]), typically the client
/// behind a [`BearerAuthLayer`](crate::BearerAuthLayer), whose body is
/// [`ReplayBody<Full<Bytes>>`](crate::ReplayBody).
///
/// Token requests are built as `Request<Full<Bytes>>`; this sends each one as
/// `Request<B>` with the same head and bytes. Give it a clone of the API client: clones of
/// hyper-util's client share their pool, so the token request and the API requests to the
/// same host use the same connections (one TLS handshake for both).
///
/// ```
/// # #[cfg(feature = "client")] {
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use docplanner_auth::client::https_client;
/// use docplanner_auth::source::SharedClient;
/// use docplanner_auth::{BearerAuth, BearerAuthLayer, ClientCredentials, ReplayBody, TokenCache};
///
/// // One client, one pool: for the API requests and, through `SharedClient`, the tokens.
/// let http = https_client::<ReplayBody<Full<Bytes>>>()?;
/// let source = ClientCredentials::new(
///     SharedClient::new(http.clone()),
///     "https://www.doctoralia.es/oauth/v2/token",
///     "client-id",
///     "client-secret",
/// )?;
/// let layer = BearerAuthLayer::new(
///     TokenCache::new(source),
///     "https://www.doctoralia.es/api/v3/integration",
/// )?;
/// let api = BearerAuth::new(http, &layer);
/// # let _ = api;
/// # }
/// # Ok::<(), docplanner_auth::Error>(())
/// ```
pub struct SharedClient<C, B> {
    inner: C,
    _body: PhantomData<fn(B)>,
}

impl<C, B> SharedClient<C, B> {
    /// Token requests through `inner`, with bodies of its type `B` (inferred from `inner`).
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            _body: PhantomData,
        }
    }

    /// The client the requests go through.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The client the requests go through.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

impl<C: Clone, B> Clone for SharedClient<C, B> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<C: fmt::Debug, B> fmt::Debug for SharedClient<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedClient").field(&self.inner).finish()
    }
}

impl<C, B> Service<Request<Full<Bytes>>> for SharedClient<C, B>
where
    C: Service<Request<B>> + Clone + Send + 'static,
    C::Future: Send,
    B: From<Bytes> + 'static,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        // The service that was polled ready makes the call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(with_body(request).await).await })
    }
}

/// `request` with its bytes in a body of type `B`.
pub(super) async fn with_body<B: From<Bytes>>(request: Request<Full<Bytes>>) -> Request<B> {
    let (head, body) = request.into_parts();
    // A `Full` body is one chunk, ready at once; its error type is `Infallible`.
    let Ok(collected) = body.collect().await;
    Request::from_parts(head, B::from(collected.to_bytes()))
}
