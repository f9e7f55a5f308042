//! The refresh schedule against a generic OAuth2 server that floors `exp` to whole seconds,
//! on a paused clock: how many token requests per lifetime, that no expired token is ever
//! sent, and how many attempts a failing endpoint gets before the token runs out.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use http::StatusCode;
use support::{in_process_with, status, Setup};

/// The lifetimes the issue names, in seconds.
const LIFETIMES: [u64; 5] = [10, 60, 300, 3600, 86_400];

fn oauth2_fake(lifetime: Duration) -> Setup {
    let fake = FakeDocplanner::builder()
        .oauth2() // `exp` floored to whole seconds
        .token_lifetime(lifetime)
        .in_process();
    in_process_with(fake, |b| b)
}

/// Steady traffic (200 requests per lifetime, at least one every 100 s so that some land in
/// the 300 s stale window of a day-long token) for 100 lifetimes: at most 1.25 token
/// requests per lifetime from 60 s up and 1.5 from 10 s up, every refresh after the first
/// in the background, and not one request with an expired token.
#[tokio::test(start_paused = true)]
async fn token_requests_per_lifetime() {
    for secs in LIFETIMES {
        let lifetime = Duration::from_secs(secs);
        let s = oauth2_fake(lifetime);
        let step = (lifetime / 200).min(Duration::from_secs(100));
        let end = tokio::time::Instant::now() + lifetime * 100;
        while tokio::time::Instant::now() < end {
            assert_eq!(status(s.get().await).await, StatusCode::OK, "L = {secs} s");
            tokio::time::sleep(step).await;
        }
        let stats = s.fake.stats();
        let per_lifetime = stats.token_requests as f64 / 100.0;
        println!(
            "L = {secs} s: {} token requests in 100 lifetimes ({per_lifetime:.2} per lifetime)",
            stats.token_requests
        );
        assert_eq!(stats.sent_without_valid_token(), 0, "L = {secs} s");
        let target = if secs >= 60 { 1.25 } else { 1.5 };
        assert!(per_lifetime <= target, "L = {secs} s: {per_lifetime}");
        assert_eq!(
            s.cache.stats().background_refreshes,
            stats.token_requests - 1,
            "L = {secs} s: nobody waited"
        );
    }
}

/// The endpoint fails (503) for good right after the first token, which was issued 0.99 s
/// into a whole second (so the server's floored `exp` kills it 0.99 s before its
/// `expires_in` says). Under dense traffic the cache keeps serving the token through the
/// stale window while the backoff retries, stops before the server would refuse it, and
/// never sends it expired.
#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_never_gets_an_expired_token_sent() {
    // The fewest attempts in the stale window (longest backoff delays), per lifetime: see
    // the stale-window test of `cache::policy`.
    let fewest = [2, 3, 5, 14, 14];
    for (secs, fewest) in LIFETIMES.into_iter().zip(fewest) {
        let lifetime = Duration::from_secs(secs);
        let s = oauth2_fake(lifetime);
        tokio::time::sleep(Duration::from_millis(990)).await;
        assert_eq!(status(s.get().await).await, StatusCode::OK);
        let obtained = tokio::time::Instant::now();
        s.fake.fail_all_token_requests(TokenFault::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        });
        // Light traffic until shortly before the stale window, then a request every 25 ms.
        let dense_from = lifetime.saturating_sub(Duration::from_secs(400));
        while obtained.elapsed() < dense_from {
            assert_eq!(status(s.get().await).await, StatusCode::OK);
            let left = dense_from - obtained.elapsed();
            tokio::time::sleep((lifetime / 100).min(left)).await;
        }
        let (served_for, attempts) = loop {
            let before = s.fake.stats().token_requests;
            let served = matches!(s.get().await, Ok(r) if r.status() == StatusCode::OK);
            if !served {
                break (obtained.elapsed(), before - 1);
            }
            assert!(
                obtained.elapsed() < lifetime,
                "L = {secs} s: served past expiry"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let stats = s.fake.stats();
        println!(
            "L = {secs} s: token served for {:.2} s, {attempts} failed attempts meanwhile",
            served_for.as_secs_f64()
        );
        assert_eq!(stats.sent_without_valid_token(), 0, "L = {secs} s");
        assert!(attempts >= fewest, "L = {secs} s: {attempts} attempts");
        // Served until the margin: at most max(1 s, L/20, capped 30 s) before expiry.
        let margin = Duration::from_secs(1)
            .max(lifetime / 20)
            .min(Duration::from_secs(30));
        assert!(
            served_for + margin + Duration::from_millis(50) >= lifetime,
            "L = {secs} s: stopped {served_for:?} after issue"
        );
    }
}

/// A 4 s token (the fleet issue's scale runs), from an endpoint that answers `expires_in`
/// (no floored `exp`): renewed after about 70 % of its life, at most 1.5 token requests per
/// lifetime, every refresh in the background, none sent expired.
#[tokio::test(start_paused = true)]
async fn a_four_second_token_is_renewed_late_in_its_life() {
    let lifetime = Duration::from_secs(4);
    let fake = FakeDocplanner::builder()
        .token_lifetime(lifetime)
        .in_process();
    let s = in_process_with(fake, |b| b);
    let end = tokio::time::Instant::now() + lifetime * 100;
    while tokio::time::Instant::now() < end {
        assert_eq!(status(s.get().await).await, StatusCode::OK);
        tokio::time::sleep(lifetime / 200).await;
    }
    let stats = s.fake.stats();
    println!(
        "L = 4 s: {} token requests in 100 lifetimes",
        stats.token_requests
    );
    assert_eq!(stats.sent_without_valid_token(), 0);
    assert!(stats.token_requests <= 150, "{}", stats.token_requests);
    assert_eq!(
        s.cache.stats().background_refreshes,
        stats.token_requests - 1,
        "nobody waited"
    );
}
