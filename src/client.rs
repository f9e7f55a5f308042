//! The built-in HTTPS client (feature `client`): hyper-util's pooled client over rustls,
//! its certificate roots and its proxy.
//!
//! Choices, and why:
//! * **rustls with `ring`**, not aws-lc-rs: a plain `cc` build with no cmake or nasm, quick
//!   on small CI machines and portable; the provider is passed explicitly, so an
//!   application that also enables aws-lc-rs in rustls does not make us panic over an
//!   ambiguous process default.
//! * **webpki-roots** (Mozilla's root store compiled in) by default, not the OS store: the
//!   same roots in a scratch or distroless container, which often has no `/etc/ssl`, as on
//!   a laptop. Behind a TLS-inspecting corporate proxy, trust the OS store instead
//!   ([`native_roots()`], feature `native-roots`) or add your CA to the roots (below).
//! * **Proxies from the environment**, as curl and reqwest do: `HTTPS_PROXY` (or
//!   `https_proxy`, else `ALL_PROXY`/`all_proxy`) and `NO_PROXY`/`no_proxy`, read when the
//!   client is built; or an explicit [`Proxy`]. HTTPS goes through an `http://` proxy by
//!   `CONNECT`, so the proxy sees the host name, never the request, the credentials or the
//!   token.
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
//!
//! # A corporate CA, an explicit proxy
//!
//! [`HttpsClientBuilder`] takes the roots to trust and the proxy to use. To trust a CA of
//! your own on top of the webpki roots:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use docplanner_auth::client::{webpki_roots, HttpsClientBuilder, Proxy};
//! use docplanner_auth::rustls::pki_types::{pem::PemObject, CertificateDer};
//!
//! let mut roots = webpki_roots();
//! for certificate in CertificateDer::pem_file_iter("/etc/company/ca.pem")? {
//!     roots.add(certificate?)?;
//! }
//! let client = HttpsClientBuilder::new()
//!     .roots(roots)
//!     .proxy(Proxy::url("http://proxy.internal:3128")?.no_proxy("localhost, .internal"))
//!     .build::<Full<Bytes>>()?;
//! # let _ = client;
//! # Ok::<(), docplanner_auth::BoxError>(())
//! ```
//!
//! # One client, one connection pool
//!
//! The token requests and the API requests can share one client, hence one pool (and one
//! connection when both go to the same host): build it for the layer's body,
//! `ReplayBody<Full<Bytes>>`, and hand the token source a clone wrapped in
//! [`SharedClient`](crate::source::SharedClient). See the [`source`](crate::source) module.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http_body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;
use zeroize::Zeroizing;

use crate::error::{BoxError, Error};

/// The built-in client type: hyper-util's legacy (pooled) client over rustls, connecting
/// directly or through a proxy.
pub type HttpsClient<B> = Client<HttpsConnector<Connector>, B>;

/// Connect timeout of the built-in client: 10 s, the same budget as a token request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle pooled connections are closed after 60 s, below the usual 75–120 s keep-alive
/// limits of load balancers, so a request never lands on a connection the server closed.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pooled HTTPS client (HTTP/1.1 and HTTP/2) trusting the webpki roots, through the
/// proxy of the environment if any (see [`Proxy::from_env`]).
pub fn https_client<B>() -> Result<HttpsClient<B>, Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    HttpsClientBuilder::new().build()
}

/// A pooled HTTPS client trusting `roots` only (a corporate or test CA, or
/// [`native_roots()`]), through the proxy of the environment if any.
pub fn https_client_with_roots<B>(roots: rustls::RootCertStore) -> Result<HttpsClient<B>, Error>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    HttpsClientBuilder::new().roots(roots).build()
}

/// Mozilla's root certificates, compiled in (the default roots of the built-in client).
/// Add a CA of your own to them with [`RootCertStore::add`](rustls::RootCertStore::add).
pub fn webpki_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The operating system's root certificates (feature `native-roots`), where a corporate
/// TLS-inspection CA is usually installed. `SSL_CERT_FILE` and `SSL_CERT_DIR` override
/// the system locations, as in OpenSSL.
///
/// Certificates that cannot be parsed are skipped; an error only when none is usable.
#[cfg(feature = "native-roots")]
#[cfg_attr(docsrs, doc(cfg(feature = "native-roots")))]
pub fn native_roots() -> Result<rustls::RootCertStore, Error> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let why = loaded
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(Error::config(format!(
            "no usable root certificate in the operating system's store{why}: install the CA \
             certificates package or point SSL_CERT_FILE at a PEM bundle"
        )));
    }
    Ok(roots)
}

/// Configures the built-in client: the roots it trusts and the proxy it goes through.
///
/// Defaults: [`webpki_roots()`] and [`Proxy::from_env`], read by [`build`](Self::build).
#[derive(Debug, Clone, Default)]
pub struct HttpsClientBuilder {
    roots: Option<rustls::RootCertStore>,
    proxy: Option<Proxy>,
}

impl HttpsClientBuilder {
    /// The defaults: webpki roots, the proxy of the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust these roots only.
    pub fn roots(mut self, roots: rustls::RootCertStore) -> Self {
        self.roots = Some(roots);
        self
    }

    /// Use this proxy configuration instead of the environment's
    /// ([`Proxy::none`] to connect directly whatever the environment says).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The client. Fails if a proxy variable of the environment is not a usable URL.
    pub fn build<B>(self) -> Result<HttpsClient<B>, Error>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let proxy = match self.proxy {
            Some(proxy) => proxy,
            None => Proxy::from_env()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("could not configure TLS: {e}")))?
            .with_root_certificates(self.roots.unwrap_or_else(webpki_roots))
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = Connector {
            http,
            proxy: proxy.matcher().map(Arc::new),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        Ok(Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https))
    }
}

/// The proxy configuration of the built-in client: none, the environment's, or a URL.
///
/// Only `http://` proxies are supported (HTTPS is tunnelled through them with `CONNECT`);
/// credentials in the URL (`http://user:password@proxy:3128`) are sent as
/// `Proxy-Authorization: Basic`, and never printed.
///
/// ```
/// use docplanner_auth::client::Proxy;
///
/// let proxy = Proxy::url("http://proxy.internal:3128")?.no_proxy("localhost, 10.0.0.0/8");
/// # let _ = proxy;
/// # Ok::<(), docplanner_auth::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Proxy {
    /// The normalised proxy URL (may hold a password); `None`: connect directly.
    url: Option<Zeroizing<String>>,
    /// The `NO_PROXY` list: hosts, domains (with their subdomains), IPs and CIDR ranges.
    no_proxy: String,
}

/// The variables [`Proxy::from_env`] reads for the proxy URL, first one set wins.
pub const ENV_PROXY: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

/// The variables [`Proxy::from_env`] reads for the hosts that bypass the proxy.
pub const ENV_NO_PROXY: [&str; 2] = ["NO_PROXY", "no_proxy"];

impl Proxy {
    /// No proxy: connect directly.
    pub fn none() -> Self {
        Self::default()
    }

    /// All requests through the proxy at `url` (`http://host:port`, or `host:port`).
    pub fn url(url: &str) -> Result<Self, Error> {
        Ok(Self {
            url: Some(normalise(url).ok_or_else(|| {
                Error::config(
                    "the proxy URL is not a usable http:// proxy URL (https://, socks and \
                     paths are not supported): check the proxy setting",
                )
            })?),
            no_proxy: String::new(),
        })
    }

    /// Bypass the proxy for these hosts: a comma-separated list as in `NO_PROXY` (a host
    /// or a domain with its subdomains, `.domain`, an IP, a CIDR range, or `*` for all).
    pub fn no_proxy(mut self, list: &str) -> Self {
        list.clone_into(&mut self.no_proxy);
        self
    }

    /// The proxy of the environment: `HTTPS_PROXY`, else `https_proxy`, `ALL_PROXY`,
    /// `all_proxy` ([`ENV_PROXY`]); bypassed for the hosts of `NO_PROXY` or `no_proxy`.
    /// None of them set (or all empty): no proxy.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), with the variables looked up by `lookup` (for
    /// tests, or a configuration source of your own).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let first = |names: &[&'static str]| {
            names.iter().find_map(|&name| {
                lookup(name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (name, Zeroizing::new(value)))
            })
        };
        let Some((name, value)) = first(&ENV_PROXY) else {
            return Ok(Self::none());
        };
        let url = normalise(&value).ok_or_else(|| {
            Error::config(format!(
                "{name} is not a usable http:// proxy URL (https://, socks and paths are not \
                 supported): check {name}"
            ))
        })?;
        let no_proxy = first(&ENV_NO_PROXY)
            .map(|(_, list)| list.to_string())
            .unwrap_or_default();
        Ok(Self {
            url: Some(url),
            no_proxy,
        })
    }

    /// Whether requests may go through a proxy.
    pub fn is_enabled(&self) -> bool {
        self.url.is_some()
    }

    fn matcher(&self) -> Option<Matcher> {
        let url = self.url.as_ref()?;
        Some(
            Matcher::builder()
                .https(url.as_str())
                .no(self.no_proxy.as_str())
                .build(),
        )
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proxy = self.url.as_ref().and_then(|url| url.parse::<Uri>().ok());
        f.debug_struct("Proxy")
            .field(
                "proxy",
                &proxy.as_ref().and_then(|uri| uri.authority()).map(|a| {
                    // The host and port only: never the credentials.
                    match a.port_u16() {
                        Some(port) => format!("{}:{port}", a.host()),
                        None => a.host().to_owned(),
                    }
                }),
            )
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `url` as an `http://host[:port]` proxy URL (a missing scheme is `http://`), or `None`
/// if it is not one.
fn normalise(url: &str) -> Option<Zeroizing<String>> {
    let url = url.trim();
    let url = Zeroizing::new(if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    });
    let uri: Uri = url.parse().ok()?;
    let plain_path = matches!(uri.path(), "" | "/") && uri.query().is_none();
    (uri.scheme_str() == Some("http") && uri.host().is_some_and(|h| !h.is_empty()) && plain_path)
        .then_some(url)
}

/// The TCP connector of the built-in client: directly to the server, or through a
/// `CONNECT` tunnel of the [`Proxy`] it was built with.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    proxy: Option<Arc<Matcher>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("proxy", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let Some(intercept) = self.proxy.as_ref().and_then(|m| m.intercept(&destination)) else {
            let connecting = self.http.call(destination);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let proxy = intercept.uri();
        let shown = format!(
            "{}:{}",
            proxy.host().unwrap_or_default(),
            proxy.port_u16().unwrap_or(80)
        );
        let mut tunnel = Tunnel::new(proxy.clone(), self.http.clone());
        if let Some(credentials) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(credentials.clone());
        }
        // `Tunnel::poll_ready` only polls the `HttpConnector`, which is always ready (as
        // our own `poll_ready` just checked).
        let tunnelling = tunnel.call(destination);
        Box::pin(async move {
            tunnelling.await.map_err(|e| {
                BoxError::from(format!(
                    "could not open a tunnel through the proxy {shown}: {e}"
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn intercepts(proxy: &Proxy, uri: &str) -> Option<String> {
        let matcher = proxy.matcher()?;
        let intercept = matcher.intercept(&uri.parse().unwrap())?;
        Some(intercept.uri().to_string())
    }

    #[test]
    fn environment_variables_in_order() {
        let none = Proxy::from_lookup(env(&[])).unwrap();
        assert!(!none.is_enabled());
        let empty = Proxy::from_lookup(env(&[("HTTPS_PROXY", " ")])).unwrap();
        assert!(!empty.is_enabled());

        let upper = Proxy::from_lookup(env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("ALL_PROXY", "http://all:3"),
        ]))
        .unwrap();
        let to = "https://www.doctoralia.es/oauth/v2/token";
        assert_eq!(intercepts(&upper, to).as_deref(), Some("http://upper:1/"));
        let lower = Proxy::from_lookup(env(&[("https_proxy", "lower:2")])).unwrap();
        assert_eq!(intercepts(&lower, to).as_deref(), Some("http://lower:2/"));
        let all = Proxy::from_lookup(env(&[("all_proxy", "http://all:3")])).unwrap();
        assert_eq!(intercepts(&all, to).as_deref(), Some("http://all:3/"));
        // HTTP_PROXY is for plain-http destinations: never used by an HTTPS-only client.
        let http_only = Proxy::from_lookup(env(&[("HTTP_PROXY", "http://h:4")])).unwrap();
        assert!(!http_only.is_enabled());
    }

    #[test]
    fn no_proxy_bypasses() {
        let proxy = Proxy::from_lookup(env(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("no_proxy", "doctoralia.es, 10.0.0.0/8"),
        ]))
        .unwrap();
        assert_eq!(intercepts(&proxy, "https://www.doctoralia.es/t"), None);
        assert_eq!(intercepts(&proxy, "https://10.1.2.3/t"), None);
        assert!(intercepts(&proxy, "https://www.znanylekarz.pl/t").is_some());
        let explicit = Proxy::url("p:3128").unwrap().no_proxy("*");
        assert_eq!(intercepts(&explicit, "https://www.doctoralia.es/t"), None);
    }

    #[test]
    fn bad_urls_are_config_errors_naming_their_source() {
        for bad in [
            "https://p:3128",
            "socks5://p:1080",
            "http://p:3128/path",
            "http://",
        ] {
            let e = Proxy::url(bad).unwrap_err();
            assert!(e.is_config(), "{bad}");
            let e = Proxy::from_lookup(env(&[("https_proxy", bad)])).unwrap_err();
            assert!(
                e.is_config() && e.to_string().contains("https_proxy"),
                "{e}"
            );
        }
        // The value is never echoed: it may hold a password.
        let e = Proxy::from_lookup(env(&[("ALL_PROXY", "https://u:hunter2@p")])).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!Proxy::url("https://u:pw@p")
            .unwrap_err()
            .to_string()
            .contains("pw@"));
    }

    #[test]
    fn debug_hides_proxy_credentials() {
        let proxy = Proxy::url("http://user:hunter2@proxy.internal:3128").unwrap();
        let shown = format!("{proxy:?}");
        assert!(shown.contains("proxy.internal:3128"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("user"),
            "{shown}"
        );
    }
}
