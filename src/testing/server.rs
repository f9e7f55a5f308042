//! The fake's listeners: HTTPS with a generated certificate, and plain HTTP that redirects.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::routes::State;
use crate::error::BoxError;

/// A certificate for `127.0.0.1`, `::1` and `localhost`, made at start.
pub(crate) struct Certificate {
    pub(crate) der: CertificateDer<'static>,
    acceptor: TlsAcceptor,
}

impl Certificate {
    pub(crate) fn generate() -> Result<Self, BoxError> {
        let names = vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ];
        let generated = rcgen::generate_simple_self_signed(names)?;
        let der = generated.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            der,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Accept connections on `listener` until the returned task is aborted (which closes the
/// listener and every connection it accepted), serving each with `serve`.
fn accept_loop<F, Fut>(listener: TcpListener, serve: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of file descriptors or similar: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            // Small answers go out at once (no Nagle delay waiting for the client's ACK).
            let _ = tcp.set_nodelay(true);
            connections.spawn(serve(tcp));
            // Reap finished connections so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
        }
    })
}

/// Serve HTTPS on `listener` until the returned task is aborted.
pub(crate) fn serve_https(
    listener: TcpListener,
    state: Arc<State>,
    tls: TlsAcceptor,
) -> JoinHandle<()> {
    accept_loop(listener, move |tcp| {
        let state = Arc::clone(&state);
        let tls = tls.clone();
        async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            state.connection_accepted();
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let state = Arc::clone(&state);
                async move {
                    // An error makes hyper close the connection without an answer.
                    state
                        .handle(request)
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
}

/// Serve plain HTTP on `listener`: every request is redirected to the HTTPS listener.
pub(crate) fn serve_redirects(listener: TcpListener, state: Arc<State>) -> JoinHandle<()> {
    accept_loop(listener, move |tcp| {
        let state = Arc::clone(&state);
        async move {
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let response = state.redirect(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    })
}

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, BoxError> {
    Ok(TcpListener::bind(addr).await?)
}

impl Certificate {
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}
