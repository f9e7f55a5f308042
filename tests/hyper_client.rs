//! A bring-your-own hyper-util client composed with `BearerAuthLayer` through
//! `tower::ServiceBuilder`, against the fake Docplanner over real HTTPS: what
//! `examples/hyper_client.rs` shows.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{BearerAuth, BoxError, ReplayBody};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

type Sent = ReplayBody<Full<Bytes>>;

/// Your own client: your TLS roots (the fake's certificate here), HTTP/1.1 and HTTP/2.
fn own_client(fake: &FakeDocplanner) -> Client<HttpsConnector<HttpConnector>, Sent> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(fake.certificate_der().unwrap().to_vec().into())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

fn facilities(fake: &FakeDocplanner) -> String {
    format!("{}/facilities", fake.api_base())
}

#[tokio::test]
async fn your_own_client_through_service_builder() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let api = ServiceBuilder::new()
        .layer(fake.layer(fake.cache().unwrap()).unwrap())
        .service(own_client(&fake));
    let url = Arc::new(facilities(&fake));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let api = api.clone();
            let url = Arc::clone(&url);
            tokio::spawn(async move {
                let request = Request::get(url.as_str()).body(Full::default())?;
                let response = support::within("the API's answer", api.oneshot(request)).await?;
                let (status, version) = (response.status(), response.version());
                let body = support::within("the body", response.into_body().collect())
                    .await?
                    .to_bytes();
                Ok::<_, BoxError>((status, version, body))
            })
        })
        .collect();
    for task in tasks {
        let (status, version, body) = support::within("a task", task).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(version, Version::HTTP_2, "ALPN picked h2 on the fake");
        assert_eq!(
            &body[..],
            br#"{"_items":[{"id":"1","name":"Sample hospital"}]}"#
        );
    }
    let stats = fake.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.api_ok, 50);
    assert_eq!(stats.sent_without_valid_token(), 0);
}

/// A booking sent with a revoked token is refreshed and replayed, body included, through
/// your own client as through the built-in one.
#[tokio::test]
async fn a_revoked_token_is_replaced_and_the_booking_replayed() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let cache = fake.cache().unwrap();
    let api = ServiceBuilder::new()
        .layer(fake.layer(cache.clone()).unwrap())
        .service(own_client(&fake));
    let warm = Request::get(facilities(&fake))
        .body(Full::default())
        .unwrap();
    let warmed = support::within("the first answer", api.clone().oneshot(warm)).await;
    assert_eq!(warmed.unwrap().status(), StatusCode::OK);
    fake.revoke_all_tokens();
    let booking = Request::post(format!(
        "{}/facilities/1/doctors/2/addresses/3/slots/2026-12-01T10:00:00+01:00/book",
        fake.api_base()
    ))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(
        br#"{"address_service_id":"1","duration":30,"patient":{}}"#,
    )))
    .unwrap();
    let response = support::within("the booking's answer", api.oneshot(booking))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = support::within("the booking's body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(r#""address_service_id":"1""#));
    let stats = fake.stats();
    assert_eq!(stats.token_requests, 2);
    // The fake saw the warm-up, the booking with the revoked token and exactly one replay.
    assert_eq!(stats.api_requests, 3);
    assert_eq!(stats.api_revoked_token, 1);
    assert_eq!(stats.bookings, 1);
    assert_eq!(cache.stats().replays, 1);
}

/// One layer in front of both the built-in client and your own: one token cache, one token;
/// your client receives the header already marked sensitive.
#[tokio::test]
async fn the_built_in_and_your_own_client_share_one_layer() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let layer = fake.layer(fake.cache().unwrap()).unwrap();
    let built_in = BearerAuth::new(fake.client::<Sent>().unwrap(), &layer);
    let seen_sensitive = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen_sensitive);
    let own = ServiceBuilder::new()
        .layer(layer)
        .map_request(move |request: Request<Sent>| {
            if request.headers()["authorization"].is_sensitive() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            request
        })
        .service(own_client(&fake));
    for _ in 0..3 {
        let request = Request::get(facilities(&fake))
            .body(Full::default())
            .unwrap();
        let response = support::within("the built-in client", built_in.clone().oneshot(request));
        assert_eq!(response.await.unwrap().status(), StatusCode::OK);
        let request = Request::get(facilities(&fake))
            .body(Full::default())
            .unwrap();
        let response = support::within("your own client", own.clone().oneshot(request));
        assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(seen_sensitive.load(Ordering::Relaxed), 3);
    assert_eq!(fake.stats().token_requests, 1);
    assert_eq!(fake.stats().api_ok, 6);
}
