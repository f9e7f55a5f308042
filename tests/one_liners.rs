//! The one-liners of `docplanner::Credentials` (`client`, `layer`, `cache`), pointed at the
//! embedded fake over real HTTPS with an origin override: the production construction
//! path (built-in hyper-util client, rustls, the layer's scope check), not a test double.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use docplanner_auth::docplanner::{Credentials, Domain};
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::ReplayBody;
use futures_util::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustls::pki_types::CertificateDer;
use tower::{ServiceBuilder, ServiceExt};

/// Credentials for the fake, as an application would build them for Spain, with the
/// origin override and the fake's certificate as the only root.
fn credentials_for(fake: &FakeDocplanner) -> Credentials {
    let origin = fake.api_base().replace("/api/v3/integration", "");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(
            fake.certificate_der().unwrap().to_vec(),
        ))
        .unwrap();
    Credentials::new(Domain::Spain, fake.client_id(), fake.client_secret())
        .with_origin(&origin)
        .unwrap()
        .with_roots(roots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_liners_run_the_production_path_against_the_fake() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let credentials = credentials_for(&fake);
    assert_eq!(credentials.api_base(), fake.api_base());
    assert_eq!(credentials.token_url(), fake.token_url());

    // `client()`: 50 concurrent requests, one token request.
    let client = credentials.client::<Full<Bytes>>().unwrap();
    let facilities = format!("{}/facilities", credentials.api_base());
    let statuses = join_all((0..50).map(|_| {
        let request = Request::get(&facilities).body(Full::default()).unwrap();
        client.clone().oneshot(request)
    }))
    .await;
    assert!(statuses
        .into_iter()
        .all(|r| r.unwrap().status() == StatusCode::OK));
    assert_eq!(fake.stats().token_requests, 1);
    assert_eq!(fake.stats().api_ok, 50);

    // `layer()` over a client of the application's: a cache of its own, one more token.
    let api = ServiceBuilder::new()
        .layer(credentials.layer().unwrap())
        .service(fake.client::<ReplayBody<Full<Bytes>>>().unwrap());
    let request = Request::get(&facilities).body(Full::default()).unwrap();
    assert_eq!(api.oneshot(request).await.unwrap().status(), StatusCode::OK);
    assert_eq!(fake.stats().token_requests, 2);

    // `cache()`: a token from the fake's token endpoint.
    let cache = credentials.cache().unwrap();
    let token = cache.token().await.unwrap();
    assert!(fake.issued_tokens().iter().any(|t| token.secret() == t));
    assert_eq!(fake.stats().token_requests, 3);
}

#[tokio::test]
async fn without_the_roots_the_fake_is_not_trusted() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let origin = fake.api_base().replace("/api/v3/integration", "");
    let credentials = Credentials::new(Domain::Spain, fake.client_id(), fake.client_secret())
        .with_origin(&origin)
        .unwrap();
    let error = credentials.cache().unwrap().token().await.unwrap_err();
    assert!(!error.to_string().contains(fake.client_secret()), "{error}");
    assert_eq!(fake.stats().token_requests, 0, "no TLS handshake succeeded");
}

#[test]
fn an_origin_override_must_be_an_https_origin() {
    let base = || Credentials::new(Domain::Poland, "id", "secret");
    let ok = base().with_origin("https://127.0.0.1:8443/").unwrap();
    assert_eq!(ok.token_url(), "https://127.0.0.1:8443/oauth/v2/token");
    assert_eq!(base().api_base(), Domain::Poland.api_base());
    for bad in [
        "http://127.0.0.1:8443",
        "https://127.0.0.1:8443/api",
        "https://user:pw@127.0.0.1",
        "https://127.0.0.1/?x=1",
        "127.0.0.1:8443",
        "",
    ] {
        let error = base().with_origin(bad).unwrap_err();
        assert!(error.is_config(), "{bad}: {error}");
        assert!(!error.to_string().contains("pw"), "{error}");
    }
}
