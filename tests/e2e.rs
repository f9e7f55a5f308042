//! End to end over real HTTPS on 127.0.0.1 with the fake Docplanner: the built-in client
//! type, a generated certificate, the plain-http redirect, concurrency and bookings.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::BoxError;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

#[tokio::test]
async fn concurrent_requests_and_a_booking_over_https() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let client = fake.authenticated_client::<Full<Bytes>>().unwrap();
    let url = Arc::new(format!("{}/facilities", fake.api_base()));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            let url = Arc::clone(&url);
            tokio::spawn(async move {
                let request = Request::get(url.as_str()).body(Full::default())?;
                let response = client.oneshot(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>((status, body))
            })
        })
        .collect();
    for task in tasks {
        let (status, body) = task.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            &body[..],
            br#"{"_items":[{"id":"1","name":"Sample hospital"}]}"#
        );
    }
    let booking = Request::post(format!(
        "{}/facilities/1/doctors/2/addresses/3/slots/2026-12-01T10:00:00+01:00/book",
        fake.api_base()
    ))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(
        br#"{"address_service_id":"9","duration":30,"patient":{}}"#,
    )))
    .unwrap();
    let response = client.oneshot(booking).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let stats = fake.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.api_ok, 201);
    assert_eq!(stats.bookings, 1);
    assert_eq!(stats.sent_without_valid_token(), 0);
}

/// The TLS is real: a client that does not trust the generated certificate cannot talk
/// to the fake, and the token request fails as a transient transport error.
#[tokio::test]
async fn the_certificate_is_checked() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let untrusting = docplanner_auth::client::https_client::<Full<Bytes>>().unwrap();
    let source = docplanner_auth::ClientCredentials::new(
        untrusting,
        &fake.token_url(),
        fake.client_id(),
        fake.client_secret(),
    )
    .unwrap();
    let error = docplanner_auth::TokenCache::new(source)
        .token()
        .await
        .unwrap_err();
    assert!(error.is_transient() && error.is_token_endpoint(), "{error}");
    assert_eq!(fake.stats().token_requests, 0);
}

/// Like the real site, the plain-http listener redirects to https and serves nothing.
#[tokio::test]
async fn plain_http_is_redirected_to_https() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let plain = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let base = fake.plain_http_base().unwrap();
    let response = plain
        .get(
            format!("{base}/api/v3/integration/facilities")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    let location = response.headers()["location"].to_str().unwrap();
    assert_eq!(location, format!("{}/facilities", fake.api_base()));
    assert_eq!(fake.stats().plain_http_requests, 1);
    assert_eq!(fake.stats().api_requests, 0);
}

/// The built-in client refuses plain http by itself too (defence in depth below the layer).
#[tokio::test]
async fn the_built_in_client_is_https_only() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let client = fake.client::<Empty<Bytes>>().unwrap();
    let base = fake.plain_http_base().unwrap();
    let result = client.get(format!("{base}/x").parse().unwrap()).await;
    assert!(result.is_err());
    assert_eq!(fake.stats().plain_http_requests, 0);
}
