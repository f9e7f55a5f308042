//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use bytes::Bytes;
use docplanner_auth::testing::{FakeDocplanner, FakeService};
use docplanner_auth::{BearerAuth, BoxError, ReplayBody, TokenCache};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};

/// The in-process fake and a client layered over it, sharing `cache`.
pub struct Setup {
    pub fake: FakeDocplanner,
    pub cache: TokenCache,
    pub client: BearerAuth<FakeService>,
}

pub fn in_process() -> Setup {
    in_process_with(FakeDocplanner::builder().in_process(), |b| b)
}

pub fn in_process_with(
    fake: FakeDocplanner,
    tune: impl FnOnce(docplanner_auth::TokenCacheBuilder) -> docplanner_auth::TokenCacheBuilder,
) -> Setup {
    let cache = tune(fake.cache_builder().unwrap()).build();
    let client = fake.layer(cache.clone()).unwrap().layer(fake.service());
    Setup {
        fake,
        cache,
        client,
    }
}

impl Setup {
    pub fn facilities(&self) -> String {
        format!("{}/facilities", self.fake.api_base())
    }

    pub fn booking(&self) -> String {
        format!(
            "{}/facilities/1/doctors/2/addresses/3/slots/2026-12-01T10:00:00+01:00/book",
            self.fake.api_base()
        )
    }

    /// GET /facilities through the layer.
    pub async fn get(&self) -> Result<Response<docplanner_auth::testing::FakeBody>, BoxError> {
        let request = Request::get(self.facilities()).body(Full::<Bytes>::default())?;
        self.client.clone().oneshot(request).await
    }

    /// A booking through the layer, with `body`.
    pub async fn book<B>(
        &self,
        body: B,
    ) -> Result<Response<docplanner_auth::testing::FakeBody>, BoxError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let client = self
            .fake
            .layer(self.cache.clone())?
            .layer(self.fake.service());
        let request = Request::post(self.booking()).body(body)?;
        client.oneshot(request).await
    }
}

/// `n` GET /facilities spawned as tasks at once; returns their statuses.
pub async fn concurrent_gets(s: &std::sync::Arc<Setup>, n: usize) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let s = std::sync::Arc::clone(s);
            tokio::spawn(async move { s.get().await.map(|r| r.status()) })
        })
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for task in tasks {
        statuses.push(task.await.unwrap().unwrap());
    }
    statuses
}

pub async fn status<B>(response: Result<Response<B>, BoxError>) -> StatusCode {
    response.unwrap().status()
}

pub async fn body_text<B>(response: Response<B>) -> String
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn booking_json() -> Bytes {
    Bytes::from_static(br#"{"address_service_id":"42","duration":30,"patient":{"name":"Ana","surname":"Ruiz","email":"ana@example.com","phone":"600000000","birth_date":"1990-01-01"}}"#)
}

/// The type of body the inner service sees.
pub type Sent = ReplayBody<Full<Bytes>>;

/// A quickstart-like run over real HTTPS: cold start, revocation and replay, a failing
/// token endpoint, a refused request, rejected credentials that the server echoes.
pub async fn full_run(fake: &docplanner_auth::testing::FakeDocplanner) -> Result<(), BoxError> {
    let cache = fake.cache()?;
    let client = tower::ServiceBuilder::new()
        .layer(fake.layer(cache.clone())?)
        .service(fake.client::<docplanner_auth::ReplayBody<Full<Bytes>>>()?);
    let get = |url: String| {
        let client = client.clone();
        async move {
            let request = Request::get(url).body(Full::<Bytes>::default())?;
            client.oneshot(request).await
        }
    };
    let facilities = format!("{}/facilities", fake.api_base());
    let burst: Vec<_> = (0..20).map(|_| get(facilities.clone())).collect();
    for response in futures_util::future::join_all(burst).await {
        assert_eq!(response?.status(), StatusCode::OK);
    }
    fake.revoke_all_tokens();
    assert_eq!(get(facilities.clone()).await?.status(), StatusCode::OK);
    assert!(get("http://www.example.org/x".to_owned()).await.is_err());

    // A failing endpoint, then rejected credentials whose description echoes the secret.
    let failing = fake.cache()?;
    fake.fail_next_token_requests(
        1,
        docplanner_auth::testing::TokenFault::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(3),
        },
    );
    assert!(failing.token().await.is_err());
    let echoing = fake.cache()?;
    fake.fail_next_token_requests(
        1,
        docplanner_auth::testing::TokenFault::Body {
            status: StatusCode::BAD_REQUEST,
            content_type: "application/json",
            body: format!(
                r#"{{"error":"invalid_client","error_description":"bad secret {}"}}"#,
                fake.client_secret()
            ),
        },
    );
    assert!(echoing.token().await.is_err());
    Ok(())
}

/// The roots a client of your own needs to trust the fake: its generated certificate.
pub fn fake_roots(fake: &FakeDocplanner) -> docplanner_auth::rustls::RootCertStore {
    let mut roots = docplanner_auth::rustls::RootCertStore::empty();
    roots
        .add(fake.certificate_der().unwrap().to_vec().into())
        .unwrap();
    roots
}

/// The fake's client-credentials grant over `http` (any client).
pub fn grant_over<C>(fake: &FakeDocplanner, http: C) -> docplanner_auth::ClientCredentials<C> {
    // The fake's 127.0.0.1 token URL is not one of Docplanner's hosts: ask for
    // Docplanner's scope explicitly, as a user of a custom endpoint would.
    docplanner_auth::ClientCredentials::builder(
        &fake.token_url(),
        fake.client_id(),
        fake.client_secret(),
    )
    .scope("integration")
    .build(http)
    .unwrap()
}

/// One token from a fresh cache over `source`; a wait over 10 s fails the test.
pub async fn fetch_once(
    source: impl docplanner_auth::TokenSource,
) -> Result<docplanner_auth::AccessToken, docplanner_auth::Error> {
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        TokenCache::new(source).token(),
    )
    .await
    .expect("the token request did not finish within 10 s")
}

/// A `MakeWriter` collecting every log line in memory, for assertions on what is logged.
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Collect the log lines up to `level` of the current thread until the guard drops
    /// (`#[tokio::test]`'s runtime runs the test on this thread).
    pub fn install(level: tracing::Level) -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (captured, guard)
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A TLS acceptor (HTTP/1.1) with a generated certificate for `127.0.0.1` and `localhost`,
/// and that certificate, for the test's own local servers.
pub fn tls_acceptor() -> (
    tokio_rustls::TlsAcceptor,
    rustls::pki_types::CertificateDer<'static>,
) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let der = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        der,
    )
}

/// How long a test waits on a peer (a mock, a server, a spawned task) before it fails: a
/// broken layer that never sends, never answers or loops fails in seconds, not by hanging.
pub const PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `future`, or a panic naming `what` after [`PEER_WAIT`] (on a paused clock, as soon as
/// the runtime has nothing else to do).
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PEER_WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing after {PEER_WAIT:?}"),
    }
}

/// Wait (at most [`PEER_WAIT`]) until `cache` holds a fresh token: the refresh a 401
/// started in the background has landed.
pub async fn wait_until_fresh(cache: &TokenCache) {
    within("a fresh token", async {
        while cache.status().state != docplanner_auth::cache::TokenState::Fresh {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A cache for `fake` with the rejection backoff off: the 401 loop guard on its own.
pub fn without_rejection_limit(fake: &FakeDocplanner) -> TokenCache {
    fake.cache_builder()
        .unwrap()
        .rejection_backoff(std::time::Duration::ZERO, std::time::Duration::ZERO)
        .build()
}
