//! The token request through the application's own HTTP stack, over real HTTPS against
//! the fake Docplanner, which counts its TLS connections:
//! * one hyper-util client (one pool) for the token and the API requests
//!   (`SharedClient`), against two clients and two pools the old way;
//! * a reqwest application fetching its tokens through its own `reqwest::Client`
//!   (`ReqwestClient`, feature `reqwest`).
#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use docplanner_auth::source::SharedClient;
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{BearerAuth, ClientCredentials, ReplayBody, TokenCache};
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceExt};

/// Three GETs one after the other through `api`.
async fn three_gets<S>(fake: &FakeDocplanner, mut api: S)
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..3 {
        let request = Request::get(format!("{}/facilities", fake.api_base()))
            .body(Full::default())
            .unwrap();
        let answer = async { api.ready().await.unwrap().call(request).await };
        let response = support::within("the API's answer", answer).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn one_client_one_pool_for_the_token_and_the_api() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let http = fake.client::<ReplayBody<Full<Bytes>>>().unwrap();
    let source = support::grant_over(&fake, SharedClient::new(http.clone()));
    let layer = fake.layer(TokenCache::new(source)).unwrap();

    three_gets(&fake, BearerAuth::new(http, &layer)).await;

    let stats = fake.stats();
    assert_eq!((stats.token_requests, stats.api_ok), (1, 3));
    assert_eq!(stats.https_connections, 1, "one pool, one connection");
}

#[tokio::test]
async fn two_clients_make_two_pools() {
    // What the counter above would see without `SharedClient`: the fake's own token
    // client and the API client each open a connection.
    let fake = FakeDocplanner::builder().start().await.unwrap();

    three_gets(&fake, fake.authenticated_client::<Full<Bytes>>().unwrap()).await;

    let stats = fake.stats();
    assert_eq!((stats.token_requests, stats.api_ok), (1, 3));
    assert_eq!(stats.https_connections, 2);
}

#[cfg(feature = "reqwest")]
mod reqwest_stack {
    use std::time::Duration;

    use docplanner_auth::reqwest::BearerAuthMiddleware;
    use docplanner_auth::source::ReqwestClient;
    use docplanner_auth::testing::TokenFault;

    use super::*;

    fn reqwest_client(fake: &FakeDocplanner) -> reqwest::Client {
        // The dev-dependency's reqwest has `rustls-no-provider`: ring, installed once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certificate = reqwest::Certificate::from_der(fake.certificate_der().unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([certificate])
            .build()
            .unwrap()
    }

    /// `get_ref` is the client given (its own configuration); the `Debug` shows none of it
    /// (reqwest's own prints the default headers, which may hold credentials).
    #[test]
    fn the_client_given_and_a_debug_without_its_headers() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tenant", http::HeaderValue::from_static("clinic-7"));
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        let wrapped = ReqwestClient::from(client);
        assert!(format!("{:?}", wrapped.get_ref()).contains("clinic-7"));
        assert_eq!(format!("{wrapped:?}"), "ReqwestClient { .. }");
    }

    #[tokio::test]
    async fn tokens_through_the_applications_reqwest_client() {
        let fake = FakeDocplanner::builder().start().await.unwrap();
        let http = reqwest_client(&fake);
        let cache = TokenCache::new(support::grant_over(&fake, ReqwestClient::new(http.clone())));
        let client = reqwest_middleware::ClientBuilder::new(http)
            .with(BearerAuthMiddleware::new(cache, &fake.api_base()).unwrap())
            .build();

        for _ in 0..3 {
            let url = format!("{}/facilities", fake.api_base());
            let response = support::within("the API's answer", client.get(url).send())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }

        let stats = fake.stats();
        assert_eq!((stats.token_requests, stats.api_ok), (1, 3));
        assert_eq!(stats.https_connections, 1, "reqwest's one pool");
    }

    #[tokio::test]
    async fn token_endpoint_errors_keep_their_kind_through_reqwest() {
        let fake = FakeDocplanner::builder().start().await.unwrap();
        let http = reqwest_client(&fake);

        fake.fail_next_token_requests(
            1,
            TokenFault::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: Some(3),
            },
        );
        let source = support::grant_over(&fake, ReqwestClient::new(http.clone()));
        let error = support::fetch_once(source).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));

        let wrong = ClientCredentials::new(
            ReqwestClient::new(http),
            &fake.token_url(),
            fake.client_id(),
            "not-the-secret",
        )
        .unwrap();
        let error = support::fetch_once(wrong).await.unwrap_err();
        assert!(error.is_credentials(), "{error}");
        assert!(!format!("{error} {error:?}").contains("not-the-secret"));
    }
}
