//! Soak: 100,000 requests from 16 concurrent workers across 20 one-hour token lifetimes
//! (20 h on Tokio's paused clock, a few seconds of CI time), a quarter of them bookings
//! with a body, with, at random moments: all tokens revoked; two revocations a second or
//! two apart; a spurious 401 while the token endpoint is down for a minute (the token turns
//! suspect and must stay in use). The fake's counters prove that no request carried an
//! expired token or no token, that every request got exactly one final answer, and that
//! token requests stay within lifetimes + revocations + outage retries.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::testing::{FakeBody, TokenFault};
use docplanner_auth::{BoxError, ReplayBody};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use support::{booking_json, in_process};
use tokio::time::{sleep, Instant};
use tower::{Layer, ServiceExt};

/// How many times the layer sent each request (by its `x-request-id`), as the service
/// under the layer saw them: the evidence for "one send + at most one replay" comes from
/// the peer, not from the cache's own counters.
type Sends = Arc<Mutex<HashMap<String, u32>>>;

/// One request through the layer over the fake, its sends recorded in `sends`.
async fn send(
    s: &support::Setup,
    sends: &Sends,
    request: Request<Full<Bytes>>,
) -> Result<Response<FakeBody>, BoxError> {
    let sends = Arc::clone(sends);
    let inner = s
        .fake
        .service()
        .map_request(move |request: Request<ReplayBody<Full<Bytes>>>| {
            let id = request.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            *sends.lock().unwrap().entry(id).or_default() += 1;
            request
        });
    s.fake
        .layer(s.cache.clone())?
        .layer(inner)
        .oneshot(request)
        .await
}

const WORKERS: u64 = 16;
const PER_WORKER: u64 = 6_250;
const LIFETIME: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn soak_100k_requests_over_20_lifetimes_with_revocations() {
    let s = Arc::new(in_process());
    s.fake.set_api_latency(Duration::from_millis(5));
    let ok = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let sends = Sends::default();

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (s, ok, rejected) = (Arc::clone(&s), Arc::clone(&ok), Arc::clone(&rejected));
            let sends = Arc::clone(&sends);
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(w);
                for i in 0..PER_WORKER {
                    let request = if i % 4 == 0 {
                        Request::post(s.booking()).body(Full::new(booking_json()))
                    } else {
                        Request::get(s.facilities()).body(Full::default())
                    };
                    let mut request = request.unwrap();
                    let id = format!("{w}-{i}").parse().unwrap();
                    request.headers_mut().insert("x-request-id", id);
                    let response = send(&s, &sends, request).await;
                    match response.unwrap().status() {
                        StatusCode::OK | StatusCode::CREATED => ok.fetch_add(1, Ordering::Relaxed),
                        StatusCode::UNAUTHORIZED => rejected.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected {other}"),
                    };
                    // 0–23 s between requests: 6,250 requests span about 20 hours.
                    sleep(Duration::from_millis(rng.u64(0..23_000))).await;
                }
            })
        })
        .collect();

    let revoked = Arc::new(AtomicU64::new(0));
    let suspect_episodes = Arc::new(AtomicU64::new(0));
    let revoker = {
        let (s, revoked, episodes) = (
            Arc::clone(&s),
            Arc::clone(&revoked),
            Arc::clone(&suspect_episodes),
        );
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(99);
            loop {
                sleep(Duration::from_secs(rng.u64(1_000..5_000))).await;
                match rng.u8(0..3) {
                    0 => {
                        s.fake.revoke_all_tokens();
                        revoked.fetch_add(1, Ordering::Relaxed);
                    }
                    1 => {
                        // Two revocations a second or two apart: both must be healed.
                        s.fake.revoke_all_tokens();
                        sleep(Duration::from_millis(rng.u64(1_000..3_000))).await;
                        s.fake.revoke_all_tokens();
                        revoked.fetch_add(2, Ordering::Relaxed);
                    }
                    _ => {
                        // A spurious 401 while the token endpoint is down for a minute.
                        s.fake.fail_all_token_requests(TokenFault::Status {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            retry_after: None,
                        });
                        let before = s.fake.stats().api_forced_401;
                        s.fake.set_api_always_401(true);
                        while s.fake.stats().api_forced_401 == before {
                            sleep(Duration::from_millis(10)).await;
                        }
                        s.fake.set_api_always_401(false);
                        episodes.fetch_add(1, Ordering::Relaxed);
                        sleep(Duration::from_secs(60)).await;
                        s.fake.clear_token_faults();
                    }
                }
            }
        })
    };
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = Instant::now() - start;
    revoker.abort();
    let fake = s.fake.stats();
    let cache = s.cache.stats();
    let (ok, rejected) = (ok.load(Ordering::Relaxed), rejected.load(Ordering::Relaxed));
    let revocations = revoked.load(Ordering::Relaxed);
    let episodes = suspect_episodes.load(Ordering::Relaxed);

    println!(
        "soak: requests={} ok={ok} final_401={rejected} virtual_time={elapsed:?} revocations={revocations} suspect_episodes={episodes} \
         token_requests={} invalidations={} replays={} api_revoked={} spurious_401={} expired_sent={} no_token_sent={}",
        WORKERS * PER_WORKER,
        fake.token_requests,
        cache.invalidations,
        cache.replays,
        fake.api_revoked_token,
        fake.api_forced_401,
        fake.api_expired_token,
        fake.api_no_token
    );

    assert!(
        elapsed >= LIFETIME * 20,
        "spans at least 20 token lifetimes: {elapsed:?}"
    );
    assert_eq!(
        ok + rejected,
        WORKERS * PER_WORKER,
        "exactly one final answer each"
    );
    // One send + at most one replay, for each request, as the service under the layer saw
    // them; and the fake saw every send the layer made.
    let sends = sends.lock().unwrap();
    assert_eq!(
        sends.len() as u64,
        WORKERS * PER_WORKER,
        "every request sent"
    );
    let most = sends.values().copied().max().unwrap();
    assert!((1..=2).contains(&most), "a request sent {most} times");
    let replayed = sends.values().filter(|&&n| n == 2).count() as u64;
    assert_eq!(fake.api_requests, WORKERS * PER_WORKER + replayed);
    assert!(replayed > 0, "revocations made requests replay");
    assert_eq!(fake.api_expired_token, 0, "never an expired token");
    assert_eq!(fake.api_no_token, 0, "never without a token");
    assert_eq!(fake.api_unknown_token, 0);
    assert!(
        revocations >= 10,
        "revocations were injected: {revocations}"
    );
    assert!(episodes >= 3, "suspect episodes were injected: {episodes}");
    assert!(
        fake.api_forced_401 >= episodes,
        "each episode's 401 reached a request"
    );
    assert!(
        cache.invalidations <= revocations + episodes + rejected,
        "one invalidation per revocation or spurious 401 at most"
    );
    // A request ends in 401 only if it was in flight at a spurious 401 (its replay waits
    // for a refresh the endpoint cannot give), or if the token it was replayed with was
    // revoked while it was in flight: at most one per worker per event.
    assert!(
        rejected <= WORKERS * (revocations + episodes),
        "final 401s: {rejected}"
    );
    // Each token is replaced at its refresh moment (at least 3210 s after it was obtained
    // with the default policy: 3600 - 30 margin - 300 lead - 60 jitter) or by a revocation;
    // a 401 on a replay can force one more; a minute of outage after a spurious 401 costs
    // at most 7 failed attempts (at 0, 1, 3, 7, 15, 31 s, and one more) and its success.
    // Hence:
    let lower = elapsed.as_secs() / 3570; // a token is never used past 3570 s
    let upper = 1 + elapsed.as_secs() / 3210 + revocations + rejected + 8 * episodes;
    assert!(
        (lower..=upper).contains(&fake.token_requests),
        "token requests {} outside {lower}..={upper}",
        fake.token_requests
    );
}
