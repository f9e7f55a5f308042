//! Composing `BearerAuthLayer` with tower-http's `FollowRedirectLayer`, `TimeoutLayer` and
//! `TraceLayer`: which order keeps the token at home, which timeout covers what, and what a
//! trace shows. The crate docs ("Composing with tower-http") state the conclusions; these
//! tests are the evidence.
//!
//! Everything runs on 127.0.0.1: the fake Docplanner (HTTPS, plus its plain-HTTP listener
//! that answers 301 to https) and small local sites that redirect and record every request
//! they receive, `Authorization` header included.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use docplanner_auth::{BearerAuthLayer, BoxError, ReplayBody};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use support::tls_acceptor;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::policy::{self, Policy};
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};

type Sent = ReplayBody<Full<Bytes>>;
type HttpClient = Client<HttpsConnector<HttpConnector>, Sent>;

// ---------------------------------------------------------------------------------------
// A small local site: redirects what it is told to, answers 200 to the rest, records all.

/// One request a [`Site`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

#[derive(Default)]
struct SiteState {
    redirects: Mutex<HashMap<String, (StatusCode, String)>>,
    seen: Mutex<Vec<Seen>>,
}

/// A site on `127.0.0.1:0`, over HTTPS (its own certificate, for `127.0.0.1` and
/// `localhost`) or plain HTTP. HTTP/1.1 only. Stops when the test's runtime ends.
struct Site {
    origin: String,
    certificate: Option<CertificateDer<'static>>,
    state: Arc<SiteState>,
}

impl Site {
    async fn start(https: bool) -> Site {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (acceptor, certificate) = if https {
            let (acceptor, certificate) = tls_acceptor();
            (Some(acceptor), Some(certificate))
        } else {
            (None, None)
        };
        let state = Arc::new(SiteState::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let answer = answer(&state, &request);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = http1.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http1.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        let scheme = if https { "https" } else { "http" };
        Site {
            origin: format!("{scheme}://{addr}"),
            certificate,
            state,
        }
    }

    /// Answer `status` with `Location: location` to requests for `path`.
    fn redirect(&self, path: &str, status: StatusCode, location: &str) {
        self.state
            .redirects
            .lock()
            .unwrap()
            .insert(path.to_owned(), (status, location.to_owned()));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn answer(state: &SiteState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        authorization,
    });
    let redirect = state.redirects.lock().unwrap().get(&path).cloned();
    match redirect {
        Some((status, location)) => Response::builder()
            .status(status)
            .header("location", location)
            .body(Full::default())
            .unwrap(),
        None => Response::new(Full::new(Bytes::from_static(b"ok"))),
    }
}

/// A bring-your-own hyper-util client that trusts the fake and `sites`, and that speaks
/// plain HTTP too: nothing below the layers under test refuses a plain-http hop.
fn http_client(fake: &FakeDocplanner, sites: &[&Site]) -> HttpClient {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(
            fake.certificate_der().unwrap().to_vec(),
        ))
        .unwrap();
    for certificate in sites.iter().filter_map(|s| s.certificate.clone()) {
        roots.add(certificate).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn get<S, RB>(client: &S, url: &str) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
{
    let request = Request::get(url).body(Full::default())?;
    support::within("the answer", client.clone().oneshot(request))
        .await
        .map_err(Into::into)
}

fn auth_error(error: &BoxError) -> &docplanner_auth::Error {
    error
        .downcast_ref::<docplanner_auth::Error>()
        .unwrap_or_else(|| panic!("not a docplanner_auth::Error: {error}"))
}

// ---------------------------------------------------------------------------------------
// FollowRedirectLayer

/// The API host of these tests (besides the fake): an HTTPS site the layer authenticates,
/// whose answers are redirects (to plain http, to another origin, within itself).
struct Redirects {
    fake: FakeDocplanner,
    api: Site,
    /// Another origin (another port): it must never see the token.
    other: Site,
    /// Another origin over plain http.
    other_plain: Site,
    layer: BearerAuthLayer,
    client: HttpClient,
}

impl Redirects {
    async fn start() -> Self {
        let fake = FakeDocplanner::builder().start().await.unwrap();
        let api = Site::start(true).await;
        let other = Site::start(true).await;
        let other_plain = Site::start(false).await;
        let plain = fake.plain_http_base().unwrap();
        // Docplanner's plain-http site: answers 301 to https.
        api.redirect(
            "/to-plain",
            StatusCode::MOVED_PERMANENTLY,
            &format!("{plain}/api/v3/integration/facilities"),
        );
        api.redirect("/to-other", StatusCode::FOUND, &other.url("/hop"));
        api.redirect(
            "/to-other-plain",
            StatusCode::FOUND,
            &other_plain.url("/hop"),
        );
        // The same server under another host name.
        let localhost = api.origin.replace("127.0.0.1", "localhost");
        api.redirect(
            "/to-other-name",
            StatusCode::FOUND,
            &format!("{localhost}/collect"),
        );
        api.redirect("/within", StatusCode::FOUND, "/final");
        // The other origins move the request on within themselves: a same-origin hop.
        other.redirect("/hop", StatusCode::FOUND, "/collect");
        other_plain.redirect("/hop", StatusCode::FOUND, "/collect");
        let layer = fake
            .layer(fake.cache().unwrap())
            .unwrap()
            .allow_api_base(&api.origin)
            .unwrap();
        let client = http_client(&fake, &[&api, &other]);
        Self {
            fake,
            api,
            other,
            other_plain,
            layer,
            client,
        }
    }

    fn token(&self) -> String {
        let token = self.layer.cache().cached().unwrap();
        format!("Bearer {}", token.secret())
    }

    fn paths_seen_by_api(&self) -> Vec<String> {
        self.api.seen().into_iter().map(|s| s.path).collect()
    }
}

/// FollowRedirectLayer OUTSIDE (before) BearerAuthLayer: every hop is a new request through
/// the layer, whose scope check refuses plain http and foreign hosts. Whatever the redirect
/// policy — here tower-http's default one and one that filters nothing — the token never
/// leaves the configured API hosts: the redirect fails with our error instead.
#[tokio::test]
async fn follow_redirect_outside_the_layer_never_carries_the_token_away() {
    outside_with_policy(policy::Standard::default()).await;
    outside_with_policy(policy::Limited::new(10)).await;
}

async fn outside_with_policy<P>(policy: P)
where
    P: Policy<Full<Bytes>, BoxError> + Clone + Send + 'static,
{
    let t = Redirects::start().await;
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::with_policy(policy))
        .layer(t.layer.clone())
        .service(t.client.clone());

    // A plain-http URL is refused outright; so is a redirect to plain http.
    let plain = format!(
        "{}/api/v3/integration/facilities",
        t.fake.plain_http_base().unwrap()
    );
    let error = get(&client, &plain).await.unwrap_err();
    assert!(auth_error(&error).is_insecure_scheme(), "{error}");
    let error = get(&client, &t.api.url("/to-plain")).await.unwrap_err();
    assert!(auth_error(&error).is_insecure_scheme(), "{error}");
    assert_eq!(t.fake.stats().plain_http_requests, 0);

    // A redirect to another origin, over https or http, or to another host name of the
    // very same server: refused before anything is sent.
    for path in ["/to-other", "/to-other-plain", "/to-other-name"] {
        let error = get(&client, &t.api.url(path)).await.unwrap_err();
        let error = auth_error(&error);
        assert!(
            error.is_host_not_allowed() || error.is_insecure_scheme(),
            "{error}"
        );
    }
    assert_eq!(t.other.seen(), vec![]);
    assert_eq!(t.other_plain.seen(), vec![]);
    assert_eq!(
        t.paths_seen_by_api(),
        [
            "/to-plain",
            "/to-other",
            "/to-other-plain",
            "/to-other-name"
        ]
    );

    // A redirect within the API host is followed, the token attached again by the layer.
    let response = get(&client, &t.api.url("/within")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token = t.token();
    let seen = t.api.seen();
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_ref() == Some(&token)));
    assert_eq!(seen.last().unwrap().path, "/final");
    assert_eq!(t.fake.stats().token_requests, 1);
}

/// FollowRedirectLayer INSIDE (after) BearerAuthLayer: the redirected requests carry the
/// headers of the first one, our `Authorization` included, and only the redirect policy
/// stands between the token and the next host. Evidence of what tower-http 0.7 does:
///
/// * its default policy (`Standard`: `Limited` + `FilterCredentials`) removes
///   `Authorization` on a cross-origin hop (plain http included), and keeps it removed on
///   the later hops (0.7.0: "filtering is now cumulative"). tower-http 0.6 decided hop by
///   hop from the original headers: once a foreign origin redirected within itself, that
///   second hop was "same-origin" and got the token back. If this test starts failing,
///   the tower-http in use no longer does this: revisit the crate docs;
/// * a policy without `FilterCredentials` (`Limited`, `Action::Follow`, a `redirect_fn`)
///   hands the token to any host on the first hop.
#[tokio::test]
async fn follow_redirect_inside_the_layer_leaves_the_token_to_the_redirect_policy() {
    let t = Redirects::start().await;
    let client = ServiceBuilder::new()
        .layer(t.layer.clone())
        .layer(FollowRedirectLayer::new())
        .service(t.client.clone());

    // Direct cross-origin hop to Docplanner's plain-http site: credentials removed.
    let response = get(&client, &t.api.url("/to-plain")).await.unwrap();
    // The plain site redirected to the https API, which got no token and answered 401.
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = t.fake.stats();
    // Sent, then replayed once after the 401 (a GET can be): each time one hop through the
    // plain site, which redirected to the API, reached without a token.
    assert_eq!(stats.plain_http_requests, 2);
    assert_eq!(stats.plain_http_with_credentials, 0);
    assert_eq!((stats.api_requests, stats.api_no_token), (2, 2));
    assert_eq!(t.paths_seen_by_api(), ["/to-plain", "/to-plain"]);
    // That 401 made the token suspect; let its replacement land before the next request.
    support::wait_until_fresh(t.layer.cache()).await;

    // Cross-origin hop, then a same-origin hop on the foreign site.
    for other in [&t.other, &t.other_plain] {
        let url = t.api.url(if other.origin.starts_with("https") {
            "/to-other"
        } else {
            "/to-other-plain"
        });
        let response = get(&client, &url).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            other.seen(),
            vec![
                Seen {
                    path: "/hop".into(),
                    authorization: None,
                },
                Seen {
                    path: "/collect".into(),
                    authorization: None,
                },
            ],
            "tower-http 0.7 keeps the credentials filtered on the second hop (0.6 re-sent them)"
        );
    }

    // A policy that filters nothing: the very first foreign hop gets the token.
    let leaky = ServiceBuilder::new()
        .layer(t.layer.clone())
        .layer(FollowRedirectLayer::with_policy(policy::Limited::new(10)))
        .service(t.client.clone());
    let response = get(&leaky, &t.api.url("/to-other")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let hops = t.other.seen();
    assert_eq!(hops[2].path, "/hop");
    assert_eq!(hops[2].authorization, Some(t.token()));
}

// ---------------------------------------------------------------------------------------
// TimeoutLayer

/// tower-http's `TimeoutLayer` answers a made-up status and needs a response body with
/// `Default`; hyper's `Incoming` has none, so box it below the timeout.
fn boxed<B>(
    response: Response<B>,
) -> Response<http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

/// Outside the layer, the timeout covers waiting for a token: a hanging token endpoint
/// ends in the timeout's 504, and nothing reached the API.
#[tokio::test]
async fn a_timeout_outside_the_layer_covers_the_wait_for_a_token() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    fake.fail_all_token_requests(TokenFault::Hang);
    let client = ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(300),
        ))
        .map_response(boxed)
        .layer(fake.layer(fake.cache().unwrap()).unwrap())
        .service(fake.client::<Sent>().unwrap());
    let response = get(&client, &format!("{}/facilities", fake.api_base()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    // The wait the timeout cut short was for a token: exactly one token request (the one
    // that hangs; the refresh runs in its own task, so it reaches the fake even on a slow
    // machine), and nothing reached the API.
    support::within("the token request at the fake", async {
        while fake.stats().token_requests == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let stats = fake.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.api_requests, 0);
}

/// Inside the layer (around the HTTP client only), the timeout never sees the wait for a
/// token: the request is only handed to it once a token exists. The caller gets the token
/// endpoint's own timeout instead, after the cache's token request timeout.
#[tokio::test]
async fn a_timeout_inside_the_layer_does_not_cover_the_wait_for_a_token() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    fake.fail_all_token_requests(TokenFault::Hang);
    let cache = fake
        .cache_builder()
        .unwrap()
        .token_request_timeout(Duration::from_millis(300))
        .build();
    let client = ServiceBuilder::new()
        .layer(fake.layer(cache).unwrap())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(100),
        ))
        .map_response(boxed)
        .service(fake.client::<Sent>().unwrap());
    let error = get(&client, &format!("{}/facilities", fake.api_base()))
        .await
        .unwrap_err();
    let error = auth_error(&error);
    assert!(error.is_timeout() && error.is_token_endpoint(), "{error}");
    assert_eq!(fake.stats().api_requests, 0);
}

/// Outside the layer, the timeout covers the request AND its replay after a 401: the
/// budget is for the logical request. Each API answer takes 500 ms here and the revoked
/// token costs a second one, so 900 ms cannot be enough (the first answer, a 401, comes
/// well within it).
#[tokio::test]
async fn a_timeout_outside_the_layer_covers_the_replay_after_a_401() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let layer = fake.layer(fake.cache().unwrap()).unwrap();
    let url = format!("{}/facilities", fake.api_base());
    // One HTTP client (one connection pool) for the warm-up and the timed request.
    let http = fake.client::<Sent>().unwrap();
    let untimed = layer.layer(http.clone());
    assert_eq!(get(&untimed, &url).await.unwrap().status(), StatusCode::OK);

    fake.revoke_all_tokens();
    fake.set_api_latency(Duration::from_millis(500));
    let client = ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(900),
        ))
        .map_response(boxed)
        .layer(layer)
        .service(http);
    let response = get(&client, &url).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(fake.stats().api_revoked_token, 1);
}

// ---------------------------------------------------------------------------------------
// TraceLayer

/// A tracing subscriber that keeps the spans and events it is given, as text.
#[derive(Clone, Default)]
struct Recorder {
    /// (target, name, fields) of every span.
    spans: Arc<Mutex<Vec<(String, String, String)>>>,
    events: Arc<Mutex<Vec<String>>>,
    ids: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?}; ", field.name());
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = String::new();
        attributes.record(&mut Fields(&mut fields));
        let metadata = attributes.metadata();
        self.spans.lock().unwrap().push((
            metadata.target().to_owned(),
            metadata.name().to_owned(),
            fields,
        ));
        tracing::span::Id::from_u64(self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = String::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(fields);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

impl Recorder {
    /// The `headers` field of every tower-http request span.
    fn request_spans(&self) -> Vec<String> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(target, name, _)| target.starts_with("tower_http") && name == "request")
            .map(|(_, _, fields)| fields.clone())
            .collect()
    }

    fn everything(&self) -> String {
        let spans = self.spans.lock().unwrap();
        let events = self.events.lock().unwrap();
        format!("{spans:?} {events:?}")
    }
}

#[tokio::test(flavor = "current_thread")]
async fn trace_outside_the_layer_makes_one_span_per_logical_request() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let client = ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().include_headers(true)),
        )
        .layer(fake.layer(fake.cache().unwrap()).unwrap())
        .service(fake.client::<Sent>().unwrap());
    let url = format!("{}/facilities", fake.api_base());
    assert_eq!(get(&client, &url).await.unwrap().status(), StatusCode::OK);
    fake.revoke_all_tokens();
    assert_eq!(get(&client, &url).await.unwrap().status(), StatusCode::OK);

    // Two logical requests, three HTTP requests (one replayed), two spans.
    assert_eq!(fake.stats().api_requests, 3);
    let spans = recorder.request_spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    // The header is added inside: the span outside never holds it.
    assert!(
        spans.iter().all(|s| !s.contains("authorization")),
        "{spans:?}"
    );
    let everything = recorder.everything();
    assert!(!everything.contains("Bearer"), "{everything}");
}

/// Inside the layer the span sees our `Authorization` header, marked sensitive: tracing
/// prints `Sensitive`, never the token. And it makes one span per HTTP request, replays
/// included.
#[tokio::test(flavor = "current_thread")]
async fn trace_inside_the_layer_sees_the_header_as_sensitive() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let cache = fake.cache().unwrap();
    let client = ServiceBuilder::new()
        .layer(fake.layer(cache.clone()).unwrap())
        .layer(
            TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().include_headers(true)),
        )
        .service(fake.client::<Sent>().unwrap());
    let url = format!("{}/facilities", fake.api_base());
    assert_eq!(get(&client, &url).await.unwrap().status(), StatusCode::OK);
    let first = cache.cached().unwrap().secret().to_owned();
    fake.revoke_all_tokens();
    assert_eq!(get(&client, &url).await.unwrap().status(), StatusCode::OK);
    let second = cache.cached().unwrap().secret().to_owned();

    let spans = recorder.request_spans();
    assert_eq!(spans.len(), 3, "{spans:?}");
    assert!(
        spans
            .iter()
            .all(|s| s.contains(r#""authorization": Sensitive"#)),
        "{spans:?}"
    );
    let everything = recorder.everything();
    for secret in [first.as_str(), second.as_str(), "Bearer"] {
        assert!(!everything.contains(secret), "{everything}");
    }
}
