//! [`ReqwestClient`]: token requests through the application's own `reqwest::Client`
//! (feature `reqwest`), so a reqwest application builds one HTTP stack and one TLS
//! library, and its proxy and certificate settings apply to the token requests too.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;

use super::shared_client::with_body;

/// An HTTP client for [`ClientCredentials`](crate::ClientCredentials) over a
/// [`reqwest::Client`]: the token requests go through the same client (its connection
/// pool, TLS backend and roots, proxies, timeouts) as the application's API requests.
///
/// Needs only the `reqwest` feature; the default `client` feature (hyper-util and rustls
/// with ring) can be turned off.
///
/// ```
/// use docplanner_auth::docplanner::{Credentials, Domain};
/// use docplanner_auth::source::ReqwestClient;
/// use docplanner_auth::TokenCache;
///
/// # let _ = rustls::crypto::ring::default_provider().install_default(); // our reqwest is `rustls-no-provider`
/// let http = reqwest::Client::new(); // the application's client, also used for the API
/// let credentials = Credentials::new(Domain::Spain, "client-id", "client-secret");
/// let source = credentials.client_credentials(ReqwestClient::new(http.clone()))?;
/// let cache = TokenCache::new(source);
/// # let _ = cache;
/// # Ok::<(), docplanner_auth::Error>(())
/// ```
///
/// The [`reqwest`](crate::reqwest) module shows the whole client, with
/// [`BearerAuthMiddleware`](crate::reqwest::BearerAuthMiddleware).
#[derive(Clone)]
pub struct ReqwestClient {
    client: reqwest::Client,
}

impl ReqwestClient {
    /// Token requests through `client` (a clone shares its pool).
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The reqwest client the requests go through.
    pub fn get_ref(&self) -> &reqwest::Client {
        &self.client
    }
}

impl From<reqwest::Client> for ReqwestClient {
    fn from(client: reqwest::Client) -> Self {
        Self::new(client)
    }
}

impl fmt::Debug for ReqwestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client's own `Debug`: it prints its default headers.
        f.debug_struct("ReqwestClient").finish_non_exhaustive()
    }
}

impl Service<Request<Full<Bytes>>> for ReqwestClient {
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, reqwest::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
        // reqwest's client is always ready: it queues on its own pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let request = reqwest::Request::try_from(with_body::<reqwest::Body>(request).await)?;
            Ok(Response::from(client.execute(request).await?))
        })
    }
}
