//! Token reuse, single flight, expiry, background refresh and cancellation, counted at the
//! fake Docplanner's token endpoint. Time is Tokio's paused clock wherever it matters.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use docplanner_auth::cache::{RefreshPolicy, TokenState};
use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use docplanner_auth::{AccessToken, BoxError, TokenCache};
use http::StatusCode;
use support::{in_process, in_process_with, status, status as status_of};
use tokio::time::{advance, Instant};

/// Refresh exactly at expiry: no lead, margin or jitter, to check `expires_in` to the second.
fn exact() -> RefreshPolicy {
    let mut policy = RefreshPolicy::default();
    policy.lead = Duration::ZERO;
    policy.margin = Duration::ZERO;
    policy.jitter = Duration::ZERO;
    policy
}

/// Let spawned work (a background refresh) run to its next wait.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_thousand_sequential_requests_use_one_token() {
    let s = in_process();
    for _ in 0..1_000 {
        assert_eq!(status(s.get().await).await, StatusCode::OK);
    }
    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 1);
    assert_eq!(fake.api_ok, 1_000);
    assert_eq!(s.cache.stats().token_requests, 1);
}

/// With the clock paused, the token endpoint's 1 s delay only elapses once every task is
/// idle: all 10,000 requests are provably waiting on the cold cache at the same time.
#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_requests_on_a_cold_cache_make_one_token_request() {
    let s = Arc::new(in_process());
    s.fake
        .fail_next_token_requests(1, TokenFault::Delay(Duration::from_secs(1)));
    let statuses = support::concurrent_gets(&s, 10_000).await;
    assert!(statuses.iter().all(|&status| status == StatusCode::OK));
    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 1);
    assert_eq!(fake.api_ok, 10_000);
    assert_eq!(fake.sent_without_valid_token(), 0);
}

/// The same on two worker threads in real time (true parallelism, a 50 ms token endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_parallel_requests_make_one_token_request() {
    let s = Arc::new(in_process());
    s.fake
        .fail_next_token_requests(1, TokenFault::Delay(Duration::from_millis(50)));
    let statuses = support::concurrent_gets(&s, 10_000).await;
    assert!(statuses.iter().all(|&status| status == StatusCode::OK));
    assert_eq!(s.fake.stats().token_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn expires_in_is_honoured_to_the_second() {
    let s = in_process_with(FakeDocplanner::builder().in_process(), |b| {
        b.refresh_policy(exact())
    });
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    advance(Duration::from_secs(3599)).await;
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    assert_eq!(s.fake.stats().token_requests, 1, "still valid at 3599 s");

    advance(Duration::from_secs(1)).await;
    let burst: Vec<_> = (0..100).map(|_| s.get()).collect();
    for response in futures_util::future::join_all(burst).await {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    let fake = s.fake.stats();
    assert_eq!(fake.token_requests, 2, "exactly one new token after expiry");
    assert_eq!(fake.api_expired_token, 0);
}

#[tokio::test(start_paused = true)]
async fn lifetimes_above_24_hours_are_capped() {
    let fake = FakeDocplanner::builder()
        .token_lifetime(Duration::from_secs(48 * 3600))
        .in_process();
    let s = in_process_with(fake, |b| b.refresh_policy(exact()));
    let token = s.cache.token().await.unwrap();
    assert_eq!(token.lifetime(), Duration::from_secs(24 * 3600));
    advance(Duration::from_secs(24 * 3600 - 1)).await;
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    assert_eq!(s.fake.stats().token_requests, 1);
    advance(Duration::from_secs(1)).await;
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    assert_eq!(s.fake.stats().token_requests, 2);
}

/// Default policy, one-hour token: from ~3210 s it is stale. Requests keep the old token
/// without waiting (the virtual clock does not move) while one refresh runs behind them.
#[tokio::test(start_paused = true)]
async fn a_stale_token_is_refreshed_in_the_background_without_waiting() {
    let s = in_process();
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    advance(Duration::from_secs(3400)).await;
    s.fake
        .fail_next_token_requests(1, TokenFault::Delay(Duration::from_secs(10)));

    let before = Instant::now();
    for _ in 0..100 {
        assert_eq!(status(s.get().await).await, StatusCode::OK);
    }
    assert_eq!(Instant::now(), before, "no request waited for the refresh");
    settle().await;
    assert_eq!(s.cache.stats().background_refreshes, 1);
    assert_eq!(s.fake.stats().token_requests, 2);

    advance(Duration::from_secs(10)).await; // the background refresh completes
    settle().await;
    let token = s.cache.cached().unwrap();
    assert!(token.lifetime() > Duration::from_secs(3500));
    assert!(token.expires_at() > Instant::now() + Duration::from_secs(3500));
    for _ in 0..10 {
        assert_eq!(status(s.get().await).await, StatusCode::OK);
    }
    assert_eq!(s.fake.stats().token_requests, 2, "the new token is reused");
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_refresh_keeps_the_valid_token() {
    let s = in_process();
    let first = s.cache.token().await.unwrap();
    advance(Duration::from_secs(3400)).await;
    s.fake.fail_next_token_requests(
        1,
        TokenFault::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    settle().await;
    assert_eq!(s.cache.stats().token_failures, 1);
    let still = s.cache.cached().unwrap();
    assert!(
        still.same_secret(&first),
        "the failure did not replace the token"
    );
    // Many requests during the backoff: no new attempt yet.
    for _ in 0..100 {
        assert_eq!(status(s.get().await).await, StatusCode::OK);
    }
    assert_eq!(s.fake.stats().token_requests, 2);
    // After the backoff (at most 1 s for a first transient failure) the next request
    // starts another background attempt, which succeeds.
    advance(Duration::from_secs(2)).await;
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    settle().await;
    assert_eq!(s.fake.stats().token_requests, 3);
    assert!(!s.cache.cached().unwrap().same_secret(&first));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_request_that_started_the_refresh_leaves_nothing_stuck() {
    let s = in_process();
    s.fake
        .fail_next_token_requests(1, TokenFault::Delay(Duration::from_secs(5)));
    // The first request starts the refresh, then is dropped after 10 ms.
    let dropped = tokio::time::timeout(Duration::from_millis(10), s.get()).await;
    assert!(dropped.is_err());
    // A request arriving while the refresh still runs joins it.
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    assert_eq!(
        s.fake.stats().token_requests,
        1,
        "the refresh was not duplicated"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_every_waiter_leaves_nothing_stuck() {
    let s = Arc::new(in_process());
    s.fake
        .fail_next_token_requests(1, TokenFault::Delay(Duration::from_secs(5)));
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.get().await.map(|r| r.status()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    for waiter in &waiters {
        waiter.abort();
    }
    for waiter in waiters {
        assert!(waiter.await.unwrap_err().is_cancelled());
    }
    // The refresh goes on without anyone waiting, and its token is kept.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(s.cache.cached().is_some());
    assert_eq!(status(s.get().await).await, StatusCode::OK);
    assert_eq!(
        s.fake.stats().token_requests,
        1,
        "no refresh was duplicated"
    );
}

/// A token source that panics: waiters get a typed error, the failure is backed off like
/// any other (a source that always panics is not called in a loop), the cache is not stuck.
#[tokio::test(start_paused = true)]
async fn a_panicking_source_does_not_wedge_the_cache() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let cache = TokenCache::new(move || {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n == 0 {
                panic!("source bug");
            }
            Ok::<_, BoxError>(AccessToken::new("t", Duration::from_secs(60))?)
        }
    });
    let error = cache.token().await.unwrap_err();
    assert!(error.is_transient() && error.is_token_endpoint(), "{error}");
    assert!(error.to_string().contains("panicked"), "{error}");
    for _ in 0..20 {
        assert!(cache.token().await.is_err(), "fails fast while backing off");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    advance(Duration::from_secs(1)).await;
    assert!(cache.token().await.is_ok());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A token that arrives already expired (a source handing out an old token) is refused
/// and backed off, never stored or sent.
#[tokio::test(start_paused = true)]
async fn a_token_that_arrives_expired_is_refused() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let cache = TokenCache::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let two_hours_ago = Instant::now() - Duration::from_secs(7200);
            Ok::<_, BoxError>(AccessToken::obtained_at(
                "old",
                two_hours_ago,
                Duration::from_secs(3600),
            )?)
        }
    });
    advance(Duration::from_secs(7200)).await;
    let error = cache.token().await.unwrap_err();
    assert!(error.is_invalid_response(), "{error:?}");
    assert!(
        error.to_string().contains("arrived already expired"),
        "{error}"
    );
    assert!(cache.cached().is_none());
    assert!(cache.token().await.is_err());
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "backed off"
    );
}

/// A refresh whose task sits on a runtime nobody drives does not hold callers on another
/// runtime at all: they refresh on their own runtime at once (see also tests/runtimes.rs).
#[test]
fn a_refresh_stuck_on_an_idle_runtime_does_not_hold_other_runtimes() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let cache = TokenCache::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, BoxError>(AccessToken::new("t", Duration::from_secs(60))?) }
    });
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Start the refresh on `idle`, give up at once, and never drive `idle` again.
    let started =
        idle.block_on(async { futures_util::FutureExt::now_or_never(cache.token()).is_none() });
    assert!(started, "the refresh is spawned on `idle` and waited for");
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    other.block_on(async {
        let token = tokio::time::timeout(Duration::from_secs(60), cache.token())
            .await
            .expect("not held by the idle runtime")
            .unwrap();
        assert_eq!(token.secret(), "t");
    });
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the second runtime's refresh ran the source"
    );
    drop(idle);
}

/// A background refresh whose task sits on a runtime nobody drives is trusted for its
/// deadline (the token request timeout twice here: 800 ms), then presumed stuck: the next
/// caller in the stale window starts another one on its own runtime. Real clock (two
/// runtimes), a 16 s token (the shortest whose lead and margin floors are whole: 2 s and
/// 1 s): stale from 13 s, unusable from 15 s; each step has 0.8 s of slack for a loaded
/// machine.
#[test]
fn a_background_refresh_stuck_on_an_idle_runtime_is_replaced_after_its_deadline() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let cache = TokenCache::builder(move || {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        async move { Ok::<_, BoxError>(AccessToken::new(format!("t{n}"), Duration::from_secs(16))?) }
    })
    .refresh_jitter(Duration::ZERO)
    .token_request_timeout(Duration::from_millis(400))
    .build();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let (idle, other) = (runtime(), runtime());
    let calls_now = || calls.load(std::sync::atomic::Ordering::SeqCst);
    let first = other.block_on(cache.token()).unwrap();
    std::thread::sleep(Duration::from_millis(13_200));

    // Stale: the caller on `idle` gets t1 at once, its refresh task spawned on `idle`,
    // which is never driven again.
    let stale = idle.block_on(cache.token()).unwrap();
    assert!(stale.same_secret(&first));
    assert_eq!(calls_now(), 1, "the refresh task has not run");
    // Within its deadline, the stuck refresh is trusted: no second one.
    other.block_on(async {
        assert!(cache.token().await.unwrap().same_secret(&first));
        tokio::task::yield_now().await;
    });
    assert_eq!(calls_now(), 1, "trusted until its deadline");

    std::thread::sleep(Duration::from_millis(900));
    let fresh = other.block_on(async {
        assert!(cache.token().await.unwrap().same_secret(&first));
        tokio::time::timeout(Duration::from_secs(1), async {
            while cache.status().state != docplanner_auth::cache::TokenState::Fresh {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a refresh on this runtime replaced the stuck one");
        cache.cached().unwrap()
    });
    assert_eq!(fresh.secret(), "t2");
    assert_eq!(calls_now(), 2);
    drop(idle);
}

#[test]
fn outside_a_runtime_the_cache_says_so_instead_of_panicking() {
    let cache = TokenCache::new(|| async {
        Ok::<_, BoxError>(AccessToken::new("t", Duration::from_secs(60))?)
    });
    let error = futures_util::FutureExt::now_or_never(cache.token())
        .unwrap()
        .unwrap_err();
    assert!(error.is_config());
    assert!(error.to_string().contains("Tokio runtime"));
}

/// Ten-second tokens under steady traffic (a request every 100 ms for 100 s): the lead and
/// margin scale down (lead 1.25 s, an eighth of the lifetime; margin 1 s; jitter up to
/// 0.25 s: refresh 7.5–7.75 s after issue, stop using at 9 s), so 13 or 14 token requests
/// (30 runs: 9 × 13, 21 × 14); every refresh after the first runs in the background, and
/// no request carries an expired token.
#[tokio::test(start_paused = true)]
async fn short_lived_tokens_are_refreshed_in_the_background() {
    let fake = FakeDocplanner::builder()
        .token_lifetime(Duration::from_secs(10))
        .in_process();
    let s = in_process_with(fake, |b| b);
    for _ in 0..1_000 {
        assert_eq!(status(s.get().await).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fake = s.fake.stats();
    let cache = s.cache.stats();
    assert_eq!(fake.api_expired_token, 0);
    assert_eq!(fake.sent_without_valid_token(), 0);
    assert!(
        (13..=14).contains(&fake.token_requests),
        "{}",
        fake.token_requests
    );
    assert_eq!(
        cache.background_refreshes,
        fake.token_requests - 1,
        "nobody waited"
    );
}

/// An absurd configured backoff (`Duration::MAX`) does not overflow the clock: the next
/// attempt is scheduled a day ahead, the furthest the cache schedules anything.
#[tokio::test(start_paused = true)]
async fn an_absurd_backoff_waits_a_day() {
    let mut backoff = docplanner_auth::cache::Backoff::default();
    backoff.base = Duration::MAX;
    backoff.cap = Duration::MAX;
    backoff.permanent_base = Duration::MAX;
    backoff.permanent_cap = Duration::MAX;
    backoff.jitter = 0.0;
    let cache = TokenCache::builder(|| async {
        Err::<AccessToken, BoxError>(docplanner_auth::Error::transient("down").into())
    })
    .backoff(backoff)
    .build();
    assert!(cache.token().await.is_err());
    let day = Duration::from_secs(24 * 60 * 60);
    assert_eq!(cache.status().backing_off_for, Some(day));
}

/// A stale token whose background refresh failed: at the very instant the backoff ends,
/// the next caller starts the retry (the stale path's lock-free look agrees with the
/// flight, which stops backing off at that instant).
#[tokio::test(start_paused = true)]
async fn a_stale_token_is_refreshed_again_at_the_very_instant_the_backoff_ends() {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let mut backoff = docplanner_auth::cache::Backoff::default();
    backoff.jitter = 0.0;
    // Call 0: a 100 s token (stale from 82.5–85 s, usable until 95 s); call 1 fails.
    let cache = TokenCache::builder(move || {
        let n = counted.fetch_add(1, SeqCst);
        async move {
            if n == 1 {
                return Err(docplanner_auth::Error::transient("down").into());
            }
            Ok::<_, BoxError>(AccessToken::new(format!("t{n}"), Duration::from_secs(100))?)
        }
    })
    .backoff(backoff)
    .build();
    cache.token().await.unwrap();
    advance(Duration::from_secs(86)).await;
    assert_eq!(
        cache.cached().unwrap().secret(),
        "t0",
        "stale, still served"
    );
    settle().await;
    assert_eq!(
        calls.load(SeqCst),
        2,
        "the background refresh ran, and failed"
    );
    let backoff = cache.status().backing_off_for.unwrap();
    assert!(backoff < Duration::from_secs(9), "{backoff:?}");

    advance(backoff).await;
    assert_eq!(cache.cached().unwrap().secret(), "t0");
    settle().await;
    assert_eq!(
        calls.load(SeqCst),
        3,
        "retried at the instant the backoff ended"
    );
    assert_eq!(cache.cached().unwrap().secret(), "t2");
}

/// A source of one's own that fails the way `failure(call)` says; counts its calls.
fn failing_source(
    failure: impl Fn(u32) -> docplanner_auth::Error + Send + Sync + 'static,
) -> (TokenCache, Arc<std::sync::atomic::AtomicU32>) {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let failure = Arc::new(failure);
    let mut backoff = docplanner_auth::cache::Backoff::default();
    backoff.jitter = 0.0;
    let cache = TokenCache::builder(move || {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let failure = Arc::clone(&failure);
        async move { Err::<AccessToken, BoxError>(failure(n).into()) }
    })
    .backoff(backoff)
    .build();
    (cache, calls)
}

#[tokio::test(start_paused = true)]
async fn a_custom_source_says_whether_its_failure_is_transient_or_needs_a_person() {
    use std::sync::atomic::Ordering::SeqCst;
    // Rejected credentials: permanent, backed off 30 s (not retried every second).
    let (cache, calls) =
        failing_source(|_| docplanner_auth::Error::credentials("the vault refused client 7"));
    let error = cache.token().await.unwrap_err();
    assert!(error.is_credentials() && error.is_permanent() && !error.is_transient());
    assert_eq!(error.to_string(), "the vault refused client 7");
    advance(Duration::from_secs(29)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(
        calls.load(SeqCst),
        1,
        "no retry inside the permanent backoff"
    );
    advance(Duration::from_secs(1)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(calls.load(SeqCst), 2);

    // A transient failure with a retry-after: the floor of the next attempt.
    let (cache, calls) = failing_source(|_| {
        docplanner_auth::Error::transient("the vault answered 503")
            .with_retry_after(Duration::from_secs(7))
    });
    let error = cache.token().await.unwrap_err();
    assert!(error.is_transient() && !error.is_permanent());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    advance(Duration::from_secs(6)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(calls.load(SeqCst), 1, "retry-after honoured");
    advance(Duration::from_secs(1)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(calls.load(SeqCst), 2);

    // Plain transient: retried after the first backoff step, 1 s.
    let (cache, calls) = failing_source(|_| docplanner_auth::Error::transient("flaky"));
    assert!(cache.token().await.is_err());
    advance(Duration::from_secs(1)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(cache.status().consecutive_failures, 2);
}

#[tokio::test(start_paused = true)]
async fn status_follows_the_token_through_its_life() {
    let s = in_process_with(
        FakeDocplanner::builder()
            .token_lifetime(Duration::from_secs(3600))
            .in_process(),
        |b| b.refresh_policy(exact()),
    );
    let status = s.cache.status();
    assert_eq!(status.state, TokenState::Empty);
    assert!(!status.is_usable() && status.expires_in.is_none());
    assert!(!status.is_failing(), "empty: the next request fetches");

    assert_eq!(status_of(s.get().await).await, StatusCode::OK);
    let status = s.cache.status();
    assert_eq!(status.state, TokenState::Fresh);
    assert_eq!(status.expires_in, Some(Duration::from_secs(3600)));
    assert!(!status.is_failing());

    // A 401 while the endpoint fails: suspect, still usable, the error and backoff shown.
    s.fake.fail_all_token_requests(TokenFault::Status {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: Some(20),
    });
    s.fake.set_api_always_401(true);
    assert_eq!(status_of(s.get().await).await, StatusCode::UNAUTHORIZED);
    s.fake.set_api_always_401(false);
    let status = s.cache.status();
    assert_eq!(status.state, TokenState::Suspect);
    assert!(status.is_usable());
    assert!(
        !status.is_failing(),
        "the endpoint fails, but a token is usable"
    );
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(status.backing_off_for, Some(Duration::from_secs(20)));
    let error = status.last_error.unwrap();
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));

    // Past its usable lifetime with the endpoint still down: backing off, not usable.
    advance(Duration::from_secs(3600)).await;
    assert!(s.get().await.is_err());
    let status = s.cache.status();
    assert_eq!(status.state, TokenState::BackingOff);
    assert!(!status.is_usable());
    assert!(
        status.is_failing(),
        "no usable token, the endpoint backing off: 503"
    );
    // At the very instant the backoff ends a refresh may start: no longer backing off.
    advance(status.backing_off_for.unwrap()).await;
    let status = s.cache.status();
    assert_eq!(status.state, TokenState::Expired);
    assert_eq!(status.backing_off_for, None);
    assert!(
        !status.is_failing(),
        "the backoff is over: the next request tries"
    );

    // The endpoint heals: fresh again after the backoff.
    s.fake.clear_token_faults();
    advance(Duration::from_secs(60)).await;
    assert_eq!(status_of(s.get().await).await, StatusCode::OK);
    let status = s.cache.status();
    assert_eq!(status.state, TokenState::Fresh);
    assert_eq!(status.consecutive_failures, 0);
    assert!(status.last_error.is_none() && status.backing_off_for.is_none());
}

/// A source that names no cache (a closure: `TokenSource::cache_name` is `None` by default)
/// gives a cache named `docplanner` in metrics and tracing.
#[test]
fn a_closure_source_gives_the_default_cache_name() {
    let closure = || async { Ok::<_, BoxError>(AccessToken::new("t", Duration::from_secs(60))?) };
    assert_eq!(TokenCache::new(closure).name(), "docplanner");
}
