//! Redirect chains through the reqwest adapter, with a real reqwest client and real local
//! servers: an HTTPS "API" (the middleware's configured origin; its tokens come from the
//! fake Docplanner), a plain-http foreign server and an HTTPS foreign server, each recording
//! what it received. With the client of `docplanner_auth::reqwest::client_builder()` no chain
//! takes the token out of the API; with reqwest's default policy a two-hop chain does, and
//! the middleware reports it.
#![cfg(feature = "reqwest")]
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::reqwest::{client_builder, BearerAuthMiddleware, MAX_REDIRECTS};
use docplanner_auth::testing::FakeDocplanner;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use reqwest::StatusCode;
use reqwest_middleware::ClientWithMiddleware;
use rustls::pki_types::CertificateDer;
use support::{tls_acceptor, Captured};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Every wait on a server or the client is bounded: a broken build fails, never hangs.
const PATIENCE: Duration = Duration::from_secs(20);

/// What a server received: the path and the `Authorization` header, if any.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

/// A local server on `127.0.0.1:0` that answers `302 Location: …` for the paths it is told
/// to redirect and `200 ok` for any other, and records every request.
struct Server {
    port: u16,
    https: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    redirects: Arc<Mutex<HashMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The path a server answers with `401` (any other answers 302 or 200).
const DENIED: &str = "/denied";

impl Server {
    async fn start(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let redirects = Arc::new(Mutex::new(HashMap::<String, String>::new()));
        let https = tls.is_some();
        let (record, routes) = (Arc::clone(&seen), Arc::clone(&redirects));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (record, routes, tls) = (record.clone(), routes.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<Incoming>| {
                        let path = request.uri().path().to_owned();
                        record.lock().unwrap().push(Seen {
                            path: path.clone(),
                            authorization: request
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned()),
                        });
                        let response = match routes.lock().unwrap().get(&path) {
                            None if path == DENIED => hyper::Response::builder()
                                .status(401)
                                .body(Full::new(Bytes::new())),
                            Some(location) => hyper::Response::builder()
                                .status(302)
                                .header("location", location)
                                .body(Full::new(Bytes::new())),
                            None => hyper::Response::builder().body(Full::new(Bytes::from("ok"))),
                        };
                        async move { Ok::<_, Infallible>(response.unwrap()) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(stream) => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Err(_) => return,
                        },
                        None => builder.serve_connection(TokioIo::new(tcp), service).await,
                    };
                });
            }
        });
        Self {
            port,
            https,
            seen,
            redirects,
            task,
        }
    }

    /// `scheme://host:port` of this server under the name `host`.
    fn base(&self, host: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.port)
    }

    fn redirect(&self, path: &str, location: impl Into<String>) {
        self.redirects
            .lock()
            .unwrap()
            .insert(path.to_owned(), location.into());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fake Docplanner (tokens only), the API, two foreign servers, and the middleware
/// for the API's origin `https://127.0.0.1:<port>`.
struct Setup {
    fake: FakeDocplanner,
    api: Server,
    plain_foreign: Server,
    tls_foreign: Server,
    auth: BearerAuthMiddleware,
    certificate: CertificateDer<'static>,
}

async fn setup() -> Setup {
    // The dev-dependency is reqwest with `rustls-no-provider`: ring, once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let (tls, certificate) = tls_acceptor();
    let api = Server::start(Some(tls.clone())).await;
    let plain_foreign = Server::start(None).await;
    let tls_foreign = Server::start(Some(tls)).await;
    let auth = BearerAuthMiddleware::new(fake.cache().unwrap(), &api.base("127.0.0.1")).unwrap();
    Setup {
        fake,
        api,
        plain_foreign,
        tls_foreign,
        auth,
        certificate,
    }
}

impl Setup {
    /// The documented client: from `docplanner_auth::reqwest::client_builder(api_base)`.
    fn safe_client(&self) -> ClientWithMiddleware {
        self.client(client_builder(&self.api.base("127.0.0.1")).unwrap())
    }

    /// A client with reqwest's default redirect policy: what the docs warn against.
    fn default_client(&self) -> ClientWithMiddleware {
        self.client(reqwest::Client::builder())
    }

    /// `http`, trusting the servers' certificate, with the middleware.
    fn client(&self, http: reqwest::ClientBuilder) -> ClientWithMiddleware {
        let certificate = reqwest::Certificate::from_der(&self.certificate).unwrap();
        let http = http.tls_certs_only([certificate]).build().unwrap();
        reqwest_middleware::ClientBuilder::new(http)
            .with(self.auth.clone())
            .build()
    }

    async fn get(&self, client: &ClientWithMiddleware, path: &str) -> reqwest::Response {
        let url = format!("{}{path}", self.api.base("127.0.0.1"));
        tokio::time::timeout(PATIENCE, client.get(url).send())
            .await
            .expect("the request did not complete in time")
            .unwrap()
    }

    /// The token the fake issued, as the `Authorization` header carrying it.
    fn bearer(&self) -> Option<String> {
        let issued = self.fake.issued_tokens();
        assert_eq!(issued.len(), 1, "one token for the whole test");
        Some(format!("Bearer {}", issued[0]))
    }

    fn at_api(&self, path: &str) -> Seen {
        Seen {
            path: path.to_owned(),
            authorization: self.bearer(),
        }
    }
}

fn anonymous(path: &str) -> Seen {
    Seen {
        path: path.to_owned(),
        authorization: None,
    }
}

impl Setup {
    /// GET `path` of the API with the documented client: the answer is the API's own `302`,
    /// and the API saw that one request, with the token.
    /// `path` of the API redirects to `foreign` (under the name `host`) `/first`, which
    /// redirects to `/second` on the same server.
    fn two_hop_chain(&self, path: &str, foreign: &Server, host: &str) {
        let first = format!("{}/first", foreign.base(host));
        self.api.redirect(path, first);
        foreign.redirect("/first", "/second");
    }

    async fn stops_at_the_first_hop(&self, path: &str) -> reqwest::Response {
        let response = self.get(&self.safe_client(), path).await;
        assert_eq!(
            response.status(),
            StatusCode::FOUND,
            "the caller gets the 3xx"
        );
        assert_eq!(response.url().path(), path);
        assert_eq!(self.api.seen(), [self.at_api(path)], "nothing after {path}");
        response
    }
}

#[tokio::test]
async fn https_api_to_plain_http_foreign_to_same_foreign_stops_at_the_first_hop() {
    let s = setup().await;
    s.two_hop_chain("/a", &s.plain_foreign, "127.0.0.1");
    s.stops_at_the_first_hop("/a").await;
    assert_eq!(s.plain_foreign.seen(), [], "the foreign server saw nothing");
}

#[tokio::test]
async fn api_to_another_port_then_a_second_hop_stops_at_the_first_hop() {
    let s = setup().await;
    s.two_hop_chain("/b", &s.tls_foreign, "127.0.0.1");
    s.stops_at_the_first_hop("/b").await;
    assert_eq!(s.tls_foreign.seen(), []);
}

#[tokio::test]
async fn loopback_ip_to_localhost_then_a_second_hop_stops_at_the_first_hop() {
    let s = setup().await;
    // The same server under another name: not a configured origin.
    s.two_hop_chain("/c", &s.api, "localhost");
    s.stops_at_the_first_hop("/c").await;
}

#[tokio::test]
async fn a_single_cross_origin_hop_is_not_followed() {
    let s = setup().await;
    let only = format!("{}/only", s.tls_foreign.base("127.0.0.1"));
    s.api.redirect("/d", only.clone());
    let response = s.stops_at_the_first_hop("/d").await;
    assert_eq!(
        response.headers()["location"],
        only.as_str(),
        "the caller can follow it by hand, without the token"
    );
    assert_eq!(s.tls_foreign.seen(), []);
}

/// A redirect to the API's own host and port over plain `http` is not the API origin (and
/// plain http to loopback needs the opt-in): not followed, the 3xx comes back.
#[tokio::test]
async fn a_redirect_to_the_api_over_plain_http_is_not_followed() {
    let s = setup().await;
    let plain = format!("http://127.0.0.1:{}/plain", s.api.port);
    s.api.redirect("/h", plain.clone());
    let response = s.stops_at_the_first_hop("/h").await;
    assert_eq!(response.headers()["location"], plain.as_str());
}

/// A plain-http loopback API (opted in, as for a local mock): a redirect inside it is
/// followed by the middleware's client, the token attached again.
#[tokio::test]
async fn a_redirect_inside_a_plain_http_loopback_api_is_followed_with_the_opt_in() {
    let s = setup().await;
    let base = s.plain_foreign.base("127.0.0.1");
    let auth = BearerAuthMiddleware::new(s.fake.cache().unwrap(), &base)
        .unwrap()
        .allow_http_loopback(true);
    let client = reqwest_middleware::ClientBuilder::new(auth.client_builder().build().unwrap())
        .with(auth)
        .build();
    s.plain_foreign.redirect("/e", "/f");
    let response = support::within("the answer", client.get(format!("{base}/e")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bearer = s.bearer();
    let seen: Vec<_> = s.plain_foreign.seen();
    assert_eq!(
        seen,
        [
            Seen {
                path: "/e".to_owned(),
                authorization: bearer.clone(),
            },
            Seen {
                path: "/f".to_owned(),
                authorization: bearer,
            },
        ]
    );
}

/// The middleware's own `client_builder()` (all its API origins) applies the same rule.
#[tokio::test]
async fn the_middlewares_client_builder_stops_at_the_first_hop_too() {
    let s = setup().await;
    s.two_hop_chain("/b", &s.tls_foreign, "127.0.0.1");
    s.api.redirect("/e", "/f");
    let client = s.client(s.auth.client_builder());
    assert_eq!(s.get(&client, "/b").await.status(), StatusCode::FOUND);
    assert_eq!(s.get(&client, "/e").await.status(), StatusCode::OK);
    assert_eq!(
        s.api.seen(),
        [s.at_api("/b"), s.at_api("/e"), s.at_api("/f")]
    );
    assert_eq!(s.tls_foreign.seen(), []);
}

#[tokio::test]
async fn a_redirect_inside_the_api_is_followed_and_still_authenticated() {
    let s = setup().await;
    s.api.redirect("/e", "/f");
    s.api
        .redirect("/f", format!("{}/g", s.api.base("127.0.0.1")));

    let response = s.get(&s.safe_client(), "/e").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.url().path(), "/g");
    assert_eq!(
        s.api.seen(),
        [s.at_api("/e"), s.at_api("/f"), s.at_api("/g")]
    );
    assert_eq!(s.fake.stats().token_requests, 1);
}

#[tokio::test]
async fn a_redirect_loop_inside_the_api_ends_in_an_error() {
    let s = setup().await;
    s.api.redirect("/loop", "/loop");
    let url = format!("{}/loop", s.api.base("127.0.0.1"));
    let error = tokio::time::timeout(PATIENCE, s.safe_client().get(url).send())
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.is_redirect(), "{error}");
    assert_eq!(
        s.api.seen().len(),
        MAX_REDIRECTS + 1,
        "first request + 10 hops"
    );
}

/// Why the policy exists, and the defence in depth: with reqwest's default policy, the
/// second hop of `API → https://127.0.0.1:<other>/first → /second` (or of the same chain
/// over plain http) gets the token again (reqwest compares each hop with the one before
/// only); the middleware sees the final URL outside the API and reports it with an
/// `error!` event (and a metric), once per such response.
#[tokio::test]
async fn with_the_default_policy_a_two_hop_chain_leaks_and_the_middleware_reports_it() {
    let s = setup().await;
    s.two_hop_chain("/b", &s.tls_foreign, "127.0.0.1");
    s.two_hop_chain("/a", &s.plain_foreign, "127.0.0.1");
    s.api.redirect("/e", "/f");

    let (captured, _tracing) = Captured::install(tracing::Level::ERROR);
    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let _metrics = metrics::set_default_local_recorder(&recorder);

    let client = s.default_client();
    // Inside the API: nothing to report.
    assert_eq!(s.get(&client, "/e").await.status(), StatusCode::OK);
    assert_eq!(captured.text(), "");

    let response = s.get(&client, "/b").await;
    assert_eq!(response.status(), StatusCode::OK, "followed to the end");
    assert_eq!(
        s.tls_foreign.seen(),
        [anonymous("/first"), s.at_api("/second")],
        "reqwest's default policy sends the token to the second foreign hop; if this \
         changes, reqwest fixed it: update SECURITY.md"
    );
    // The same over plain http: the token in clear text.
    assert_eq!(s.get(&client, "/a").await.status(), StatusCode::OK);
    assert_eq!(
        s.plain_foreign.seen(),
        [anonymous("/first"), s.at_api("/second")]
    );
    let logged = captured.text();
    assert_eq!(logged.matches(" ERROR ").count(), 2, "{logged}");
    assert!(logged.contains("outside the API origins"), "{logged}");
    assert!(logged.contains("client_builder"), "{logged}");
    assert!(!logged.contains(&s.fake.issued_tokens()[0]), "{logged}");

    #[cfg(feature = "metrics")]
    {
        let counted: Vec<_> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "docplanner_auth_redirected_outside_total")
            .map(|(.., value)| value)
            .collect();
        assert_eq!(
            counted,
            [metrics_util::debugging::DebugValue::Counter(2)],
            "counted twice"
        );
    }
}

/// With reqwest's default policy a redirect to another origin drops `Authorization`, and
/// that server's 401 says nothing about the token: the middleware hands it back untouched
/// (no suspect token, no token request, no replay).
#[tokio::test]
async fn a_401_from_outside_the_api_is_not_taken_for_a_token_rejection() {
    let s = setup().await;
    s.api.redirect(
        "/away",
        format!("{}{DENIED}", s.tls_foreign.base("localhost")),
    );
    let client = s.default_client();
    let response = s.get(&client, "/away").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response
        .extensions()
        .get::<docplanner_auth::Unauthorized>()
        .is_none());
    assert_eq!(s.tls_foreign.seen(), [anonymous(DENIED)]);
    assert_eq!(s.api.seen(), [s.at_api("/away")], "not replayed");
    assert_eq!(
        s.fake.stats().token_requests,
        1,
        "the token was not refreshed"
    );
    assert_eq!(
        s.auth.cache().status().state,
        docplanner_auth::cache::TokenState::Fresh
    );
}
