//! 401 handling: compare-and-swap invalidation, one refresh for a burst, one replay per
//! request, no loops, and which bodies can be replayed.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::testing::FakeDocplanner;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use support::{body_text, booking_json, in_process, status};
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_burst_of_401s_for_a_revoked_token_makes_one_refresh_and_each_request_replays_once() {
    let s = Arc::new(in_process());
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    s.fake.revoke_all_tokens();
    // Every request is in flight with the revoked token before the first 401 comes back.
    s.fake.set_api_latency(Duration::from_millis(100));
    let statuses = support::concurrent_gets(&s, 1_000).await;
    assert!(statuses.iter().all(|&status| status == StatusCode::OK));
    let fake = s.fake.stats();
    assert_eq!(
        fake.api_revoked_token, 1_000,
        "all carried the revoked token"
    );
    assert_eq!(
        fake.token_requests, 2,
        "one token at start, one refresh for the burst"
    );
    assert_eq!(fake.api_ok, 1 + 1_000);
    let cache = s.cache.stats();
    assert_eq!(cache.invalidations, 1, "compare-and-swap: one invalidation");
    assert_eq!(cache.replays, 1_000, "each request replayed exactly once");
}

#[tokio::test(start_paused = true)]
async fn a_401_on_the_replay_goes_back_to_the_caller() {
    let s = in_process();
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    s.fake.set_api_always_401(true);

    let response = s.get().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(response).await.contains("not allowed"));
    assert_eq!(
        s.fake.stats().token_requests,
        2,
        "at most one extra token request"
    );
    assert_eq!(s.cache.stats().replays, 1, "replayed once, not in a loop");
    assert_eq!(s.fake.stats().api_forced_401, 2);

    // More such 401s right away: forced refreshes are rate-limited, no replay.
    for _ in 0..50 {
        assert_eq!(status(s.get().await).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.fake.stats().token_requests, 2, "no token-endpoint storm");
    assert_eq!(s.cache.stats().replays, 1);

    // After the minimum interval, one more forced refresh is allowed.
    tokio::time::advance(docplanner_auth::cache::DEFAULT_FORCED_REFRESH_INTERVAL).await;
    assert_eq!(status(s.get().await).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.fake.stats().token_requests, 3);

    // And when the API heals, the current token works.
    s.fake.set_api_always_401(false);
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    assert_eq!(s.fake.stats().token_requests, 3);
}

#[tokio::test(start_paused = true)]
async fn the_same_token_handed_out_again_is_not_replayed() {
    let s = in_process();
    let first = s.cache.token().await.unwrap();
    s.fake.revoke_all_tokens();
    s.fake.set_reissue_same_token(true); // the endpoint answers with the rejected token

    assert_eq!(status(s.get().await).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.fake.stats().token_requests, 2);
    assert_eq!(s.cache.stats().replays, 0, "same token: no point replaying");
    assert!(s.cache.cached().unwrap().same_secret(&first));
}

#[tokio::test(start_paused = true)]
async fn invalidation_is_a_compare_and_swap() {
    let s = in_process();
    let old = s.cache.token().await.unwrap();
    assert!(s.cache.invalidate(&old), "current: dropped");
    let new = s.cache.token().await.unwrap();
    assert!(!new.same_secret(&old));
    assert!(
        !s.cache.invalidate(&old),
        "not current any more: nothing dropped"
    );
    assert!(s.cache.cached().unwrap().same_secret(&new));
    assert_eq!(s.fake.stats().token_requests, 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_body_is_replayed() {
    let s = in_process();
    s.cache.token().await.unwrap();
    s.fake.revoke_all_tokens();
    let response = s.book(Full::new(booking_json())).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(body_text(response)
        .await
        .contains("\"address_service_id\":\"42\""));
    assert_eq!(s.fake.stats().bookings, 1, "booked once, by the replay");
    assert_eq!(s.cache.stats().replays, 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_under_the_limit_is_replayed() {
    let s = in_process();
    s.cache.token().await.unwrap();
    s.fake.revoke_all_tokens();
    let json = booking_json();
    let (a, b) = json.split_at(20);
    let chunks = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::copy_from_slice(a))),
        Ok(Frame::data(Bytes::copy_from_slice(b))),
    ];
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    assert_eq!(status(s.book(body).await).await, StatusCode::CREATED);
    assert_eq!(s.cache.stats().replays, 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_gets_its_401_and_the_next_request_a_new_token() {
    let s = in_process();
    s.cache.token().await.unwrap();
    s.fake.revoke_all_tokens();
    let layer = s.fake.layer(s.cache.clone()).unwrap().replay_limit(16);
    let client = layer.layer(s.fake.service());
    let request = Request::post(s.booking())
        .body(Full::new(booking_json()))
        .unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.cache.stats().replays, 0);
    assert_eq!(
        s.cache.stats().invalidations,
        1,
        "the rejected token was dropped"
    );

    let request = Request::post(s.booking())
        .body(Full::new(booking_json()))
        .unwrap();
    assert_eq!(
        status(client.oneshot(request).await).await,
        StatusCode::CREATED
    );
    assert_eq!(s.fake.stats().token_requests, 2);
    assert_eq!(s.fake.stats().api_revoked_token, 1);
}

#[tokio::test(start_paused = true)]
async fn the_token_endpoint_failing_after_a_401_returns_the_401() {
    let s = in_process();
    s.cache.token().await.unwrap();
    s.fake.revoke_all_tokens();
    s.fake.fail_next_token_requests(
        1,
        docplanner_auth::testing::TokenFault::Status {
            status: StatusCode::BAD_GATEWAY,
            retry_after: None,
        },
    );
    assert_eq!(status(s.get().await).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.cache.stats().replays, 0);
}

/// One more check that the layer does nothing odd with a fresh fake per test.
#[tokio::test]
async fn revocation_over_real_https() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let client = fake.authenticated_client::<Full<Bytes>>().unwrap();
    let get = || {
        let request = Request::get(format!("{}/facilities", fake.api_base()))
            .body(Full::<Bytes>::default())
            .unwrap();
        client.clone().oneshot(request)
    };
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    fake.revoke_all_tokens();
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    let stats = fake.stats();
    assert_eq!(
        (stats.token_requests, stats.api_revoked_token, stats.api_ok),
        (2, 1, 2)
    );
}
