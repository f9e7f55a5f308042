//! The reqwest-middleware adapter end to end, over real HTTPS against the fake Docplanner:
//! single flight, 401 replay (once, never a loop, not for streamed bodies), one cache shared
//! with the tower layer, and no token for plain http or foreign hosts.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::reqwest::BearerAuthMiddleware;
use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use docplanner_auth::{BearerAuth, ReplayBody, TokenCache, Unauthorized};
use futures_util::future::join_all;
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use reqwest::StatusCode;
use reqwest_middleware::ClientWithMiddleware;
use support::{booking_json, wait_until_fresh, within};
use tower::ServiceExt;

/// A fake Docplanner, a cache fetching from it, and a reqwest client with the middleware.
struct Setup {
    fake: FakeDocplanner,
    cache: TokenCache,
    client: ClientWithMiddleware,
}

async fn setup() -> Setup {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let cache = fake.cache().unwrap();
    let middleware = BearerAuthMiddleware::new(cache.clone(), &fake.api_base()).unwrap();
    let client = client_with(&fake, middleware);
    Setup {
        fake,
        cache,
        client,
    }
}

/// A reqwest client (rustls with ring) that trusts only the fake's certificate.
fn client_with(fake: &FakeDocplanner, middleware: BearerAuthMiddleware) -> ClientWithMiddleware {
    // The dev-dependency is reqwest with `rustls-no-provider`: ring, once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certificate = reqwest::Certificate::from_der(fake.certificate_der().unwrap()).unwrap();
    // The documented client: redirects never leave the API.
    let http = middleware
        .client_builder()
        .tls_certs_only([certificate])
        .build()
        .unwrap();
    reqwest_middleware::ClientBuilder::new(http)
        .with(middleware)
        .build()
}

impl Setup {
    /// The fake's HTTPS port.
    fn port(&self) -> u16 {
        reqwest::Url::parse(&self.fake.api_base())
            .unwrap()
            .port()
            .unwrap()
    }

    fn facilities(&self) -> String {
        format!("{}/facilities", self.fake.api_base())
    }

    fn booking(&self) -> String {
        format!(
            "{}/facilities/1/doctors/2/addresses/3/slots/2026-12-01T10:00:00+01:00/book",
            self.fake.api_base()
        )
    }

    async fn get(&self) -> StatusCode {
        self.client
            .get(self.facilities())
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `n` GET /facilities at once; their statuses.
    async fn get_many(&self, n: usize) -> Vec<StatusCode> {
        join_all((0..n).map(|_| self.get())).await
    }
}

/// The crate's error inside a refusal.
fn refusal(error: reqwest_middleware::Error) -> docplanner_auth::Error {
    match error {
        reqwest_middleware::Error::Middleware(error) => error
            .downcast_ref::<docplanner_auth::Error>()
            .cloned()
            .unwrap_or_else(|| panic!("not ours: {error}")),
        other => panic!("not a middleware error: {other}"),
    }
}

#[tokio::test]
async fn two_hundred_concurrent_requests_on_a_cold_cache_make_one_token_request() {
    let s = setup().await;
    let statuses = s.get_many(200).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 1, "one token for all");
    assert_eq!(fake.api_ok, 200);
    assert_eq!(fake.sent_without_valid_token(), 0);
    assert_eq!(s.cache.stats().token_requests, 1);
}

#[tokio::test]
async fn a_burst_of_401s_for_a_revoked_token_makes_one_refresh_and_each_request_replays_once() {
    let s = setup().await;
    assert_eq!(s.get().await, StatusCode::OK);
    s.fake.revoke_all_tokens();
    // Every request is in flight with the revoked token before the first 401 comes back.
    s.fake.set_api_latency(Duration::from_millis(200));
    let statuses = s.get_many(50).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let fake = s.fake.stats();
    assert_eq!(fake.api_revoked_token, 50, "all carried the revoked token");
    assert_eq!(
        fake.token_requests, 2,
        "one token at start, one refresh for the burst"
    );
    assert_eq!(fake.api_ok, 1 + 50);
    let cache = s.cache.stats();
    assert_eq!(
        fake.api_requests,
        1 + 50 + 50,
        "each request replayed exactly once"
    );
    assert_eq!(cache.invalidations, 1, "compare-and-swap: one invalidation");
    assert_eq!(cache.replays, 50);
}

#[tokio::test]
async fn a_buffered_body_is_replayed_after_a_401() {
    let s = setup().await;
    assert_eq!(s.get().await, StatusCode::OK);
    s.fake.revoke_all_tokens();
    let response = s
        .client
        .post(s.booking())
        .body(booking_json())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.text().await.unwrap().contains("Ruiz"));
    let fake = s.fake.stats();
    assert_eq!((fake.bookings, fake.api_revoked_token), (1, 1));
    assert_eq!(fake.token_requests, 2);
    assert_eq!(fake.api_requests, 1 + 2, "sent, then replayed once");
    assert_eq!(s.cache.stats().replays, 1);
}

#[tokio::test]
async fn a_401_on_the_replay_goes_back_to_the_caller_without_a_loop() {
    let s = setup().await;
    assert_eq!(s.get().await, StatusCode::OK);
    s.fake.set_api_always_401(true);

    let response = s.client.get(s.facilities()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.text().await.unwrap().contains("not allowed"));
    assert_eq!(
        s.fake.stats().api_requests,
        1 + 2,
        "replayed once, not in a loop"
    );
    assert_eq!(s.fake.stats().api_forced_401, 2, "sent twice in all");
    // The replay's 401 made the new token suspect too: one more refresh (one fresh token
    // rejected unconfirmed is not yet evidence), in the background.
    wait_until_fresh(&s.cache).await;
    assert_eq!(s.fake.stats().token_requests, 3);

    // More such 401s right away: a second fresh token rejected, forced refreshes back off,
    // no replay.
    for _ in 0..10 {
        assert_eq!(s.get().await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.fake.stats().token_requests, 3, "no token-endpoint storm");
    assert_eq!(s.fake.stats().api_requests, 1 + 2 + 10, "none replayed");
    assert_eq!(s.fake.stats().api_forced_401, 2 + 10);
}

#[tokio::test]
async fn the_same_token_handed_out_again_returns_the_401() {
    let s = setup().await;
    assert_eq!(s.get().await, StatusCode::OK);
    s.fake.set_reissue_same_token(true);
    s.fake.revoke_all_tokens();
    assert_eq!(s.get().await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.fake.stats().token_requests, 2);
    assert_eq!(
        s.fake.stats().api_requests,
        1 + 1,
        "no replay with the rejected token"
    );
    assert_eq!(s.cache.stats().replays, 0);
    assert_eq!(s.fake.stats().api_revoked_token, 1);
}

#[tokio::test]
async fn a_streamed_body_is_not_replayed_but_its_token_is_replaced() {
    let s = setup().await;
    assert_eq!(s.get().await, StatusCode::OK);
    s.fake.revoke_all_tokens();

    let chunks = [Ok::<_, std::io::Error>(Frame::data(booking_json()))];
    let streamed = reqwest::Body::wrap(StreamBody::new(futures_util::stream::iter(chunks)));
    let response = s
        .client
        .post(s.booking())
        .body(streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(matches!(
        response.extensions().get::<Unauthorized>(),
        Some(Unauthorized::NotReplayable)
    ));
    assert_eq!(s.cache.stats().replays, 0);
    assert_eq!(
        s.cache.stats().invalidations,
        1,
        "the revoked token is suspect"
    );

    // Its replacement was started at once, in the background.
    wait_until_fresh(&s.cache).await;
    let response = s
        .client
        .post(s.booking())
        .body(booking_json())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 2);
    assert_eq!(fake.api_revoked_token, 1);
    assert_eq!(fake.bookings, 1);
    assert_eq!(
        fake.api_requests,
        1 + 1 + 1,
        "the streamed booking was not replayed"
    );
    assert_eq!(s.cache.stats().replays, 0);
}

#[tokio::test]
async fn a_failed_refresh_after_a_401_travels_with_the_401_and_the_token_stays() {
    let s = setup().await;
    assert_eq!(s.get().await, StatusCode::OK);
    s.fake.fail_all_token_requests(TokenFault::Status {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: None,
    });
    s.fake.set_api_always_401(true);
    let response = s.client.get(s.facilities()).send().await.unwrap();
    s.fake.set_api_always_401(false);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let why = response.extensions().get::<Unauthorized>().unwrap();
    let error = why
        .refresh_error()
        .expect("the refresh error travels with the 401");
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    // The API still accepts the suspect token: requests keep succeeding with it.
    for _ in 0..20 {
        assert_eq!(s.get().await, StatusCode::OK);
    }
    let fake = s.fake.stats();
    assert_eq!(fake.api_ok, 1 + 20);
    assert_eq!(fake.tokens_issued, 1);
}

#[tokio::test]
async fn two_revocations_in_a_row_are_both_healed() {
    let s = setup().await;
    assert_eq!(s.get().await, StatusCode::OK);
    s.fake.revoke_all_tokens();
    assert_eq!(s.get().await, StatusCode::OK);
    s.fake.revoke_all_tokens();
    assert_eq!(s.get().await, StatusCode::OK);
    let fake = s.fake.stats();
    assert_eq!(
        (fake.token_requests, fake.api_revoked_token, fake.api_ok),
        (3, 2, 3)
    );
}

/// The loop guard on its own: no rejection backoff to hide behind. On the real clock, each
/// request under [`support::within`], so a guard that loops fails in seconds.
#[tokio::test]
async fn with_the_rejection_limit_off_an_api_that_rejects_everything_never_loops() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let cache = support::without_rejection_limit(&fake);
    let middleware = BearerAuthMiddleware::new(cache.clone(), &fake.api_base()).unwrap();
    let client = client_with(&fake, middleware);
    let url = format!("{}/facilities", fake.api_base());
    let send = || within("an answer (a loop never answers)", client.get(&url).send());
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    fake.set_api_always_401(true);
    for _ in 0..20 {
        let response = send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(matches!(
            response.extensions().get::<Unauthorized>(),
            Some(Unauthorized::RejectedAfterReplay)
        ));
        // The replay's 401 started a refresh in the background: let it land, so that each
        // request meets the same state and the counts are exact.
        wait_until_fresh(&cache).await;
    }
    let stats = fake.stats();
    // Exactly, as the server saw them: each request sent once and replayed once; two
    // forced refreshes per request (the first 401's, the replay's), never more.
    assert_eq!(stats.api_requests, 1 + 20 * 2, "{stats:?}");
    assert_eq!(stats.api_forced_401, 20 * 2, "{stats:?}");
    assert_eq!(stats.token_requests, 1 + 20 * 2, "{stats:?}");
    assert_eq!(stats.tokens_issued, 1 + 20 * 2, "{stats:?}");
}

#[tokio::test]
async fn the_tower_layer_and_the_middleware_share_one_cache_and_one_token() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let cache = fake.cache().unwrap();
    let layer = fake.layer(cache.clone()).unwrap();
    let tower_client = BearerAuth::new(fake.client::<ReplayBody<Full<Bytes>>>().unwrap(), &layer);
    let reqwest_client = client_with(&fake, BearerAuthMiddleware::from(&layer));
    let url = format!("{}/facilities", fake.api_base());

    // Both stacks at once, on a cold cache.
    let via_tower = (0..50).map(|_| {
        let request = http::Request::get(&url)
            .body(Full::<Bytes>::default())
            .unwrap();
        let client = tower_client.clone();
        async move { client.oneshot(request).await.unwrap().status().as_u16() }
    });
    let via_reqwest = (0..50).map(|_| {
        let request = reqwest_client.get(&url).send();
        async move { request.await.unwrap().status().as_u16() }
    });
    let (tower, reqwest) = tokio::join!(join_all(via_tower), join_all(via_reqwest));
    assert!(tower.iter().chain(&reqwest).all(|s| *s == 200));

    let stats = fake.stats();
    assert_eq!(stats.token_requests, 1, "one token for both stacks");
    assert_eq!(stats.api_ok, 100);
    assert_eq!(cache.stats().token_requests, 1);
}

#[tokio::test]
async fn plain_http_and_foreign_hosts_are_refused_before_anything_is_sent() {
    let s = setup().await;
    let port = s.port();
    let path = "/api/v3/integration/facilities";
    let plain = format!("{}{path}", s.fake.plain_http_base().unwrap());
    let refused = [
        (plain.as_str(), "insecure"),
        // The fake's certificate is valid for localhost: only the middleware refuses it.
        (&format!("https://localhost:{port}{path}"), "host"),
        (&format!("https://127.0.0.1:{}{path}", port + 1), "host"),
        ("https://evil.example/api/v3/integration/facilities", "host"),
    ];
    for (url, why) in refused {
        let error = refusal(s.client.get(url).send().await.unwrap_err());
        match why {
            "insecure" => assert!(error.is_insecure_scheme(), "{url}: {error}"),
            _ => assert!(error.is_host_not_allowed(), "{url}: {error}"),
        }
        assert!(
            error.to_string().starts_with("refused to attach the token"),
            "{error}"
        );
    }
    // User info in the URL never matches a configured host. (Through `client.get(..)`,
    // reqwest itself moves it into a Basic header before any middleware runs: see below.)
    let with_user = format!("https://user:pass@127.0.0.1:{port}{path}");
    let request = reqwest::Request::new(reqwest::Method::GET, with_user.parse().unwrap());
    let error = refusal(s.client.execute(request).await.unwrap_err());
    assert!(error.is_host_not_allowed(), "{error}");
    assert!(!error.to_string().contains("pass"), "{error}");

    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 0, "the token endpoint was not called");
    assert_eq!(fake.api_requests, 0, "nothing was sent");
    assert_eq!(fake.plain_http_requests, 0);
    assert_eq!(s.cache.stats().refused_requests, 5);
}

/// A caller's `Host` header naming another host is refused before anything is sent; one
/// naming the URL's own host and port goes through.
#[tokio::test]
async fn a_host_header_naming_another_host_is_refused() {
    let s = setup().await;
    let port = s.port();
    for host in ["evil.example".to_owned(), format!("localhost:{port}")] {
        let sent = s.client.get(s.facilities()).header("host", &host).send();
        let error = refusal(sent.await.unwrap_err());
        assert!(error.is_host_not_allowed(), "{host}: {error}");
    }
    let fake = s.fake.stats();
    assert_eq!((fake.api_requests, fake.token_requests), (0, 0));
    assert_eq!(s.cache.stats().refused_requests, 2);

    let same = format!("127.0.0.1:{port}");
    let sent = s.client.get(s.facilities()).header("host", same).send();
    assert_eq!(sent.await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.fake.stats().api_ok, 1);
}

#[tokio::test]
async fn user_info_moved_to_a_basic_header_by_reqwest_is_replaced_by_the_token() {
    let s = setup().await;
    let port = s.port();
    // reqwest's RequestBuilder turns `user:pass@` into `Authorization: Basic …` and strips
    // it from the URL; the host is the configured one, and the Basic credentials never
    // leave: the middleware's bearer header replaces them.
    let url = format!("https://user:pass@127.0.0.1:{port}/api/v3/integration/facilities");
    assert_eq!(
        s.client.get(url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let fake = s.fake.stats();
    assert_eq!((fake.api_ok, fake.sent_without_valid_token()), (1, 0));
}

#[tokio::test]
async fn the_middleware_builds_from_a_layer_with_its_hosts_and_prints_no_token() {
    let s = setup().await;
    assert_eq!(s.get().await, StatusCode::OK);
    let token = s.cache.token().await.unwrap();
    let layer = s
        .fake
        .layer(s.cache.clone())
        .unwrap()
        .allow_api_base("https://www.doctoralia.es/api/v3/integration")
        .unwrap();
    let middleware = BearerAuthMiddleware::from(&layer);
    let printed = format!("{middleware:?}");
    assert!(printed.contains("doctoralia.es"), "{printed}");
    assert!(!printed.contains(token.secret()), "{printed}");
    assert!(!printed.contains(s.fake.client_secret()), "{printed}");

    let error = BearerAuthMiddleware::new(s.cache.clone(), "http://www.doctoralia.es").unwrap_err();
    assert!(error.is_insecure_scheme());
    assert!(BearerAuthMiddleware::new(s.cache.clone(), "/relative")
        .unwrap_err()
        .is_config());
}
