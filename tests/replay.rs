//! 401 handling: compare-and-swap invalidation, one refresh for a burst, one replay per
//! request, no loops, and which bodies can be replayed.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::cache::{Backoff, TokenState};
use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use docplanner_auth::Unauthorized;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use support::{
    body_text, booking_json, in_process, in_process_with, status, wait_until_fresh, within,
};
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
async fn a_401_on_the_replay_goes_back_to_the_caller_and_fresh_rejected_tokens_back_off() {
    let s = in_process();
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    s.fake.set_api_always_401(true);

    let response = s.get().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(matches!(
        response.extensions().get::<Unauthorized>(),
        Some(Unauthorized::RejectedAfterReplay)
    ));
    assert!(body_text(response).await.contains("not allowed"));
    assert_eq!(s.fake.stats().api_forced_401, 2, "sent once, replayed once");
    // The token the 401 forced was rejected too, before any request succeeded with it: one
    // such token may be bad luck, so one more refresh runs (in the background).
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.fake.stats().token_requests, 3);

    // A second fresh token rejected unconfirmed is evidence that new tokens do not help:
    // more 401s right away force no refresh and replay nothing.
    for _ in 0..50 {
        let response = s.get().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(matches!(
            response.extensions().get::<Unauthorized>(),
            Some(Unauthorized::RateLimited)
        ));
    }
    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 3, "no token-endpoint storm");
    assert_eq!(fake.api_forced_401, 2 + 50, "each sent once, none replayed");

    // After the first rejection backoff (1 s), one more forced refresh, one more replay;
    // its 401 waits for the next, doubled, backoff.
    tokio::time::advance(docplanner_auth::cache::DEFAULT_REJECTION_BACKOFF_BASE).await;
    assert_eq!(status(s.get().await).await, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.fake.stats().token_requests, 4);
    assert_eq!(s.fake.stats().api_forced_401, 52 + 2);

    // And when the API heals, the current token works.
    s.fake.set_api_always_401(false);
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    assert_eq!(s.fake.stats().token_requests, 4);
}

/// One revocation right after another, before any request used the first replacement:
/// both are healed (one fresh token rejected unconfirmed is not yet evidence).
#[tokio::test(start_paused = true)]
async fn a_revocation_before_anyone_used_the_replacement_is_healed_too() {
    let s = in_process();
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    s.fake.revoke_all_tokens();
    // The replacement is fetched (the 401's refresh), but the request is gone before its
    // replay: nobody used the new token.
    s.fake.set_api_latency(Duration::from_millis(300));
    assert!(tokio::time::timeout(Duration::from_millis(450), s.get())
        .await
        .is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.fake.stats().token_requests, 2);
    s.fake.revoke_all_tokens();
    s.fake.set_api_latency(Duration::ZERO);
    let response = s.get().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.extensions().get::<Unauthorized>()
    );
    assert_eq!(s.fake.stats().token_requests, 3);
}

/// The loop guard on its own: no rejection backoff to hide behind. On the real clock (a
/// paused clock never fires a timeout while a loop keeps the runtime busy), each request
/// under [`support::within`], so a guard that loops fails in seconds instead of hanging.
#[tokio::test]
async fn with_the_rejection_limit_off_an_api_that_rejects_everything_still_never_loops() {
    let s = in_process_with(FakeDocplanner::builder().in_process(), |b| {
        b.rejection_backoff(Duration::ZERO, Duration::ZERO)
    });
    let get = || within("an answer (a loop never answers)", s.get());
    assert_eq!(status(get().await).await, StatusCode::OK);
    s.fake.set_api_always_401(true);
    for _ in 0..50 {
        let response = get().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(matches!(
            response.extensions().get::<Unauthorized>(),
            Some(Unauthorized::RejectedAfterReplay)
        ));
        // The replay's 401 started a refresh in the background: let it land, so that each
        // request meets the same state and the counts are exact.
        wait_until_fresh(&s.cache).await;
    }
    let fake = s.fake.stats();
    // Exactly, as the fake saw them: each request sent once and replayed once with a new
    // token; two forced refreshes per request (the first 401's, the replay's), never more.
    assert_eq!(fake.api_requests, 1 + 50 * 2, "{fake:?}");
    assert_eq!(fake.api_forced_401, 50 * 2, "{fake:?}");
    assert_eq!(fake.token_requests, 1 + 50 * 2, "{fake:?}");
    assert_eq!(fake.tokens_issued, 1 + 50 * 2, "{fake:?}");
}

#[tokio::test(start_paused = true)]
async fn a_401_keeps_a_working_token_while_the_token_endpoint_is_down() {
    let s = in_process_with(FakeDocplanner::builder().in_process(), |b| {
        let mut backoff = Backoff::default();
        backoff.jitter = 0.0;
        b.backoff(backoff)
    });
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    s.fake.fail_all_token_requests(TokenFault::Status {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: None,
    });
    // One spurious 401 (the API rejects this request for its own reasons).
    s.fake.set_api_always_401(true);
    let response = s.get().await.unwrap();
    s.fake.set_api_always_401(false);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let why = response.extensions().get::<Unauthorized>().unwrap();
    let error = why
        .refresh_error()
        .expect("the refresh error travels with the 401");
    assert!(error.is_transient() && error.status() == Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(s.cache.status().state, TokenState::Suspect);

    // The old token still works: two minutes of requests all succeed with it.
    for _ in 0..120 {
        assert_eq!(status(s.get().await).await, StatusCode::OK);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let fake = s.fake.stats();
    assert_eq!(fake.api_ok, 1 + 120);
    assert_eq!(fake.sent_without_valid_token(), 0);
    // Meanwhile its replacement is retried on the backoff schedule (1, 2, 4, 8, 16, 30, 30 s
    // after each failure), not per request: the initial token, the refresh after the 401,
    // then retries at 1, 3, 7, 15, 31, 61 and 91 s.
    assert_eq!(fake.token_requests, 1 + 1 + 7);

    // The endpoint heals: the next retry replaces the suspect token.
    s.fake.clear_token_faults();
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    tokio::task::yield_now().await;
    assert_eq!(s.fake.stats().tokens_issued, 2);
    assert_eq!(s.cache.status().state, TokenState::Fresh);
}

#[tokio::test(start_paused = true)]
async fn two_revocations_a_second_apart_are_both_healed() {
    let s = in_process();
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    s.fake.revoke_all_tokens();
    assert_eq!(
        status(s.get().await).await,
        StatusCode::OK,
        "first revocation healed"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    s.fake.revoke_all_tokens();
    assert_eq!(
        status(s.get().await).await,
        StatusCode::OK,
        "second revocation healed"
    );
    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 3);
    assert_eq!(fake.api_revoked_token, 2);
    assert_eq!(fake.api_ok, 3);
}

/// A 401 while a background refresh is already under way (the token was stale) joins that
/// refresh instead of starting a second one: one token request for both.
#[tokio::test(start_paused = true)]
async fn a_401_during_a_background_refresh_joins_it() {
    let s = in_process();
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(3400)).await; // stale from ~3210 s
    s.fake.revoke_all_tokens();
    s.fake
        .fail_next_token_requests(1, TokenFault::Delay(Duration::from_secs(10)));
    // The stale token starts the background refresh, and is sent: 401, replayed with the
    // token that refresh brings (the paused clock runs through its 10 s).
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    let fake = s.fake.stats();
    assert_eq!(
        fake.token_requests, 2,
        "the 401 joined the background refresh"
    );
    assert_eq!((fake.api_revoked_token, fake.api_ok), (1, 2));
}

/// Every token the API accepted and later rejected was revoked: each such 401 is healed at
/// once, however many come in a row (only fresh tokens rejected before any success are
/// evidence that new tokens do not help).
#[tokio::test(start_paused = true)]
async fn revocations_of_tokens_the_api_had_accepted_are_all_healed_at_once() {
    let s = in_process();
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    for revocation in 1..=4 {
        s.fake.revoke_all_tokens();
        assert_eq!(
            status(s.get().await).await,
            StatusCode::OK,
            "revocation {revocation} healed"
        );
    }
    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 1 + 4);
    assert_eq!(fake.api_revoked_token, 4);
    assert_eq!(fake.api_ok, 1 + 4, "each request replayed once");
    assert_eq!(fake.api_requests, 1 + 4 * 2);
}

#[tokio::test(start_paused = true)]
async fn the_same_token_handed_out_again_is_not_replayed() {
    let s = in_process();
    let first = s.cache.token().await.unwrap();
    s.fake.revoke_all_tokens();
    s.fake.set_reissue_same_token(true); // the endpoint answers with the rejected token

    assert_eq!(status(s.get().await).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.fake.stats().token_requests, 2);
    assert_eq!(
        s.fake.stats().api_requests,
        1,
        "same token: no point replaying"
    );
    assert_eq!(s.cache.stats().replays, 0);
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
    assert_eq!(s.fake.stats().api_requests, 2, "sent, then replayed once");
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
    assert_eq!(s.fake.stats().api_requests, 2, "sent, then replayed once");
    assert_eq!(s.fake.stats().bookings, 1);
    assert_eq!(s.cache.stats().replays, 1);
}

/// The default replay limit is 64 KiB: a booking padded to exactly that many bytes is
/// replayed after a 401, one byte more gets its 401 back, not replayed.
#[tokio::test(start_paused = true)]
async fn the_default_limit_replays_a_body_of_64_kib_and_not_one_byte_more() {
    let s = in_process();
    s.cache.token().await.unwrap();
    let padded = |len: usize| {
        // JSON allows trailing whitespace: the same booking, `len` bytes long.
        let mut body = booking_json().to_vec();
        body.resize(len, b' ');
        Bytes::from(body)
    };
    let limit = 64 * 1024;

    s.fake.revoke_all_tokens();
    let response = within("the 64 KiB booking", s.book(Full::new(padded(limit))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(s.fake.stats().api_requests, 2, "sent, then replayed once");
    assert_eq!(s.cache.stats().replays, 1);

    s.fake.revoke_all_tokens();
    let response = within(
        "the booking one byte over",
        s.book(Full::new(padded(limit + 1))),
    )
    .await
    .unwrap();
    let why = response.extensions().get::<Unauthorized>();
    assert!(matches!(why, Some(Unauthorized::NotReplayable)), "{why:?}");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.fake.stats().api_requests, 3, "sent once, not replayed");
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
    assert_eq!(s.fake.stats().api_requests, 1, "not replayed");
    assert_eq!(s.cache.stats().replays, 0);
    assert!(matches!(
        response.extensions().get::<Unauthorized>(),
        Some(Unauthorized::NotReplayable)
    ));
    assert_eq!(
        s.cache.stats().invalidations,
        1,
        "the rejected token is suspect, its replacement under way"
    );

    // The refresh the 401 started runs in the background; once it is done, the next
    // request carries the new token.
    tokio::time::sleep(Duration::from_millis(10)).await;
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
    let response = s.get().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let why = response.extensions().get::<Unauthorized>().unwrap();
    assert!(why
        .refresh_error()
        .is_some_and(|e| e.status() == Some(StatusCode::BAD_GATEWAY)));
    assert_eq!(s.cache.stats().replays, 0);
    assert_eq!(s.fake.stats().api_revoked_token, 1);
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
