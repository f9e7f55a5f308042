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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio_test::{assert_pending, assert_ready_ok};
    use tower_test::mock;

    /// Readiness is the inner service's: not ready while it is not (backpressure passes
    /// through), and the service that was polled ready is the one that makes the call, with
    /// the body as one chunk.
    #[tokio::test]
    async fn readiness_and_the_call_are_the_inner_services() {
        let (inner, mut handle) = mock::pair::<Request<Full<Bytes>>, &'static str>();
        let mut client = SharedClient::<_, Full<Bytes>>::new(inner);
        let mut ready = tokio_test::task::spawn(());
        handle.allow(0);
        assert_pending!(ready.enter(|cx, _| client.poll_ready(cx)));
        handle.allow(1);
        assert_ready_ok!(ready.enter(|cx, _| client.poll_ready(cx)));
        let call = tokio::spawn(client.call(Request::new(Full::new(Bytes::from_static(b"grant")))));
        let (request, respond) = handle.next_request().await.unwrap();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "grant");
        respond.send_response("token");
        assert_eq!(call.await.unwrap().unwrap(), "token");
    }

    #[test]
    fn debug_shows_the_inner_client() {
        let client = SharedClient::<_, Full<Bytes>>::new("inner");
        assert_eq!(format!("{client:?}"), r#"SharedClient("inner")"#);
    }
}
