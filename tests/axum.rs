//! The axum backend of `examples/axum_backend`, driven over real HTTP on 127.0.0.1: its
//! handlers call the fake Docplanner (HTTPS) through one shared authenticated client.
#![allow(clippy::unwrap_used)]

#[path = "../examples/axum_backend/app.rs"]
mod app;
mod support;

use std::net::Ipv4Addr;

use bytes::Bytes;

use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use docplanner_auth::{BearerAuth, TokenCache};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The backend of the example, serving on 127.0.0.1:0, in front of `fake`.
struct Backend {
    fake: FakeDocplanner,
    cache: TokenCache,
    url: String,
}

impl Backend {
    async fn start(fake: FakeDocplanner) -> Self {
        let api_base = fake.api_base();
        Self::start_with_api_base(fake, &api_base).await
    }

    /// The backend's router told to call `api_base` (the fake's, unless a test says else).
    async fn start_with_api_base(fake: FakeDocplanner, api_base: &str) -> Self {
        let cache = fake.cache().unwrap();
        Self::start_with(fake, api_base, cache).await
    }

    /// The backend in front of `fake` at `api_base`, its client layered over `cache`.
    async fn start_with(fake: FakeDocplanner, api_base: &str, cache: TokenCache) -> Self {
        let layer = fake.layer(cache.clone()).unwrap();
        let client = BearerAuth::new(fake.client().unwrap(), &layer);
        let router = app::app(client, api_base);
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { fake, cache, url }
    }

    /// `GET /facilities` on the backend, over plain HTTP like a browser would; a failure
    /// after [`support::PEER_WAIT`] if no answer comes (a layer that loops never answers).
    async fn get_facilities(&self) -> Answer {
        self.get("/facilities").await
    }

    /// `GET {path}` on the backend (a wait over 5 s fails the test).
    async fn get(&self, path: &str) -> Answer {
        support::within("the backend's answer", self.fetch(path)).await
    }

    async fn fetch(&self, path: &str) -> Answer {
        let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let response = http
            .get(format!("{}{path}", self.url).parse().unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    /// No token, no secret and no bearer header anywhere in `answer`.
    fn assert_no_secret(&self, answer: &Answer, tokens: &[String]) {
        let everything = format!("{:?} {}", answer.headers, answer.body);
        assert!(
            !everything.contains(self.fake.client_secret()),
            "{everything}"
        );
        assert!(!everything.contains("fake-"), "a fake token: {everything}");
        assert!(!everything.contains("Bearer"), "{everything}");
        for token in tokens {
            assert!(!everything.contains(token.as_str()), "{everything}");
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[tokio::test]
async fn facilities_are_proxied_through_one_shared_client() {
    let backend = Backend::start(FakeDocplanner::builder().start().await.unwrap()).await;
    let answers = futures_util::future::join_all((0..20).map(|_| backend.get_facilities())).await;
    for answer in answers {
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.body,
            r#"{"_items":[{"id":"1","name":"Sample hospital"}]}"#
        );
        assert_eq!(
            answer.headers["content-type"],
            "application/vnd.docplanner+json; charset=UTF-8"
        );
    }
    let stats = backend.fake.stats();
    assert_eq!(stats.token_requests, 1, "one client, one token cache");
    assert_eq!(stats.api_ok, 20);
    assert_eq!(stats.sent_without_valid_token(), 0);
}

#[tokio::test]
async fn a_401_that_survives_the_replay_is_a_502_with_a_message() {
    let backend = Backend::start(FakeDocplanner::builder().start().await.unwrap()).await;
    assert_eq!(backend.get_facilities().await.status, StatusCode::OK);
    let first = backend.cache.cached().unwrap().secret().to_owned();

    backend.fake.set_api_always_401(true);
    let answer = backend.get_facilities().await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.headers["content-type"], "application/json");
    let json = answer.json();
    assert_eq!(json["error"], "docplanner_rejected");
    assert!(json["message"].as_str().unwrap().contains("401"), "{json}");
    let mut tokens = vec![first];
    tokens.extend(backend.cache.cached().map(|t| t.secret().to_owned()));
    backend.assert_no_secret(&answer, &tokens);
    // The layer renewed the token and replayed once; the replay was rejected too, which
    // makes that new token suspect in turn: one more refresh runs in the background.
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while backend.cache.status().state != docplanner_auth::cache::TokenState::Fresh {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the background refresh lands within 5 s");
    // Exactly, as the fake saw them: sent once, replayed once, never a loop.
    let stats = backend.fake.stats();
    assert_eq!(stats.api_requests, 1 + 2, "{stats:?}");
    assert_eq!(stats.api_forced_401, 2, "{stats:?}");
    assert_eq!(stats.token_requests, 3, "{stats:?}");

    backend.fake.set_api_always_401(false);
    assert_eq!(backend.get_facilities().await.status, StatusCode::OK);
}

/// The loop guard on its own, through the backend: no rejection backoff to hide behind.
#[tokio::test]
async fn with_the_rejection_limit_off_an_api_that_rejects_everything_never_loops() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let cache = support::without_rejection_limit(&fake);
    let api_base = fake.api_base();
    let backend = Backend::start_with(fake, &api_base, cache).await;
    assert_eq!(backend.get_facilities().await.status, StatusCode::OK);
    backend.fake.set_api_always_401(true);
    for _ in 0..20 {
        let answer = backend.get_facilities().await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(answer.json()["error"], "docplanner_rejected");
        // The replay's 401 started a refresh in the background: let it land, so that each
        // request meets the same state and the counts are exact.
        support::wait_until_fresh(&backend.cache).await;
    }
    let stats = backend.fake.stats();
    // Exactly, as the fake saw them: each request sent once and replayed once; two forced
    // refreshes per request (the first 401's, the replay's), never more.
    assert_eq!(stats.api_requests, 1 + 20 * 2, "{stats:?}");
    assert_eq!(stats.api_forced_401, 20 * 2, "{stats:?}");
    assert_eq!(stats.token_requests, 1 + 20 * 2, "{stats:?}");
}

#[tokio::test]
async fn a_token_endpoint_down_for_now_is_a_503_with_retry_after() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    fake.fail_all_token_requests(TokenFault::Status {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: Some(7),
    });
    let backend = Backend::start(fake).await;
    let answer = backend.get_facilities().await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "7");
    let json = answer.json();
    assert_eq!(json["error"], "docplanner_unavailable");
    assert!(!json["message"].as_str().unwrap().is_empty());
    backend.assert_no_secret(&answer, &[]);
    assert_eq!(backend.fake.stats().api_requests, 0);
}

#[tokio::test]
async fn rejected_credentials_are_a_502_with_the_error_message() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    fake.fail_all_token_requests(TokenFault::InvalidClient(StatusCode::BAD_REQUEST));
    let backend = Backend::start(fake).await;
    let answer = backend.get_facilities().await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let json = answer.json();
    assert_eq!(json["error"], "docplanner_auth_failed");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("invalid_client"), "{message}");
    backend.assert_no_secret(&answer, &[]);
    assert_eq!(backend.fake.stats().api_requests, 0);
}

/// A backend misconfigured to call a host the layer does not know: the layer refuses
/// before any token is fetched or anything is sent, and the reason reaches the caller.
#[tokio::test]
async fn a_request_the_layer_refuses_is_a_502_with_the_reason() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let elsewhere = fake.api_base().replace("127.0.0.1", "localhost");
    let backend = Backend::start_with_api_base(fake, &elsewhere).await;
    let answer = backend.get_facilities().await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let json = answer.json();
    assert_eq!(json["error"], "docplanner_auth_failed");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("not a configured API host"), "{message}");
    backend.assert_no_secret(&answer, &[]);
    let stats = backend.fake.stats();
    assert_eq!((stats.token_requests, stats.api_requests), (0, 0));
}

#[tokio::test]
async fn docplanner_unreachable_is_a_502() {
    let backend = Backend::start(FakeDocplanner::builder().start().await.unwrap()).await;
    assert_eq!(backend.get_facilities().await.status, StatusCode::OK);
    backend.fake.stop_https();
    let answer = backend.get_facilities().await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["error"], "docplanner_unreachable");
    let first = backend.cache.cached().unwrap().secret().to_owned();
    backend.assert_no_secret(&answer, &[first]);
}

#[tokio::test]
async fn healthz_reports_the_token_cache_and_fails_only_while_the_endpoint_does() {
    let backend = Backend::start(FakeDocplanner::builder().start().await.unwrap()).await;
    // Before the first request: no token yet, healthy (the first request fetches one).
    let answer = backend.get("/healthz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["token"], "empty");

    assert_eq!(backend.get_facilities().await.status, StatusCode::OK);
    let answer = backend.get("/healthz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["token"], "fresh");
    assert_eq!(answer.json()["consecutive_failures"], 0);

    // Rejected credentials and no token left: 503 with the reason, never the secret.
    backend.cache.invalidate(&backend.cache.cached().unwrap());
    backend
        .fake
        .fail_all_token_requests(TokenFault::InvalidClient(StatusCode::BAD_REQUEST));
    assert_eq!(
        backend.get_facilities().await.status,
        StatusCode::BAD_GATEWAY
    );
    let answer = backend.get("/healthz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let json = answer.json();
    assert_eq!(json["token"], "backing_off");
    assert_eq!(json["consecutive_failures"], 1);
    assert!(json["backing_off_for_s"].as_u64().unwrap() > 0);
    assert!(json["last_error"]
        .as_str()
        .unwrap()
        .contains("check the client id and secret"));
    backend.assert_no_secret(&answer, &backend.fake.issued_tokens());
}
