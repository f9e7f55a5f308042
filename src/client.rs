//! The built-in HTTPS client (feature `client`): hyper-util's pooled client over rustls.
//!
//! Choices, and why:
//! * **rustls with `ring`**, not aws-lc-rs: a plain `cc` build with no cmake or nasm, quick
//!   on small CI machines and portable; the provider is passed explicitly, so an
//!   application that also enables aws-lc-rs in rustls does not make us panic over an
//!   ambiguous process default.
//! * **webpki-roots** (Mozilla's root store compiled in), not the OS store: the same roots
//!   in a scratch or distroless container, which often has no `/etc/ssl`, as on a laptop.
//!   If you need the OS store or a corporate CA, build your own client: any tower service
//!   works with [`ClientCredentials`](crate::ClientCredentials) and
//!   [`BearerAuthLayer`](crate::BearerAuthLayer).
//! * **HTTPS only**: the connector refuses plain-http URIs, HTTP/1.1 and HTTP/2 by ALPN.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//!
//! let client = docplanner_auth::client::https_client::<Full<Bytes>>()?;
//! # let _ = client;
//! # Ok::<(), docplanner_auth::Error>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use http_body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{BoxError, Error};

/// The built-in client type: hyper-util's legacy (pooled) client over rustls.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// Connect timeout of the built-in client: 10 s, the same budget as a token request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle pooled connections are closed after 60 s, below the usual 75–120 s keep-alive
/// limits of load balancers, so a request never lands on a connection the server closed.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pooled HTTPS client (HTTP/1.1 and HTTP/2) trusting the webpki roots.
pub fn https_client<B>() -> Result<HttpsClient<B>, Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    https_client_with_roots(roots)
}

/// A pooled HTTPS client trusting `roots` only (the test kit uses it for its own CA).
pub fn https_client_with_roots<B>(roots: rustls::RootCertStore) -> Result<HttpsClient<B>, Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("could not configure TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(https))
}
