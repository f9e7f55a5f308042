//! Fault injection at the token endpoint. For each fault, on Tokio's paused clock with the
//! in-process fake and a jitter-free backoff (so the schedule is exact):
//!
//! (a) with no valid token, every caller gets a typed error that says what happened;
//! (b) 10,000 requests during a 100 s outage make exactly the token requests the backoff
//!     schedule allows, not 10,000;
//! (c) a still-valid (stale) token keeps being served through the outage;
//! (d) when the fault is cleared, the next attempt after the backoff recovers by itself.
//!
//! `cargo test --test faults -- --nocapture` prints the table reproduced in RELIABILITY.md.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use docplanner_auth::cache::{Backoff, RefreshPolicy, TokenState, DEFAULT_TOKEN_REQUEST_TIMEOUT};
use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use docplanner_auth::{Error, Unauthorized};
use http::StatusCode;
use support::{in_process_with, Setup};
use tokio::time::{advance, sleep, Instant};

const WINDOW: Duration = Duration::from_secs(100);
const TICK: Duration = Duration::from_millis(100);
const PER_TICK: usize = 10; // 10 requests every 100 ms: 10,000 requests in the window

type Check = fn(&Error) -> bool;

struct Case {
    name: &'static str,
    fault: TokenFault,
    /// How long one failing token request takes.
    takes: Duration,
    permanent: bool,
    retry_after: Option<Duration>,
    check: Check,
    words: &'static str,
}

fn status(code: u16, retry_after: Option<u64>) -> TokenFault {
    TokenFault::Status {
        status: StatusCode::from_u16(code).unwrap(),
        retry_after,
    }
}

fn json(code: u16, body: &str) -> TokenFault {
    TokenFault::Body {
        status: StatusCode::from_u16(code).unwrap(),
        content_type: "application/json",
        body: body.to_owned(),
    }
}

fn cases() -> Vec<Case> {
    let now = Duration::ZERO;
    vec![
        Case { name: "500", fault: status(500, None), takes: now, permanent: false, retry_after: None, check: Error::is_transient, words: "answered 500 Internal Server Error: a problem on Docplanner's side; retrying with backoff" },
        Case { name: "503 + Retry-After: 7", fault: status(503, Some(7)), takes: now, permanent: false, retry_after: Some(Duration::from_secs(7)), check: Error::is_transient, words: "answered 503 Service Unavailable: a problem on Docplanner's side; retrying in 7s" },
        Case { name: "429 + Retry-After: 20", fault: status(429, Some(20)), takes: now, permanent: false, retry_after: Some(Duration::from_secs(20)), check: Error::is_transient, words: "rate limited; retrying in 20s" },
        Case { name: "hangs past the timeout", fault: TokenFault::Hang, takes: DEFAULT_TOKEN_REQUEST_TIMEOUT, permanent: false, retry_after: None, check: Error::is_timeout, words: "took longer than 10s and was abandoned" },
        Case { name: "connection refused", fault: TokenFault::Disconnect, takes: now, permanent: false, retry_after: None, check: Error::is_transient, words: "could not reach the token endpoint" },
        Case { name: "connection closed mid-body", fault: TokenFault::CloseMidBody, takes: now, permanent: false, retry_after: None, check: Error::is_transient, words: "the connection broke while reading the answer" },
        Case { name: "garbage JSON", fault: json(200, "{\"access_token\": tru"), takes: now, permanent: true, retry_after: None, check: Error::is_invalid_response, words: "not a JSON token: check the token URL" },
        Case { name: "token_type not bearer", fault: json(200, r#"{"access_token":"abc","token_type":"mac","expires_in":3600}"#), takes: now, permanent: true, retry_after: None, check: Error::is_invalid_response, words: "not a bearer token" },
        Case { name: "400 invalid_client", fault: TokenFault::InvalidClient(StatusCode::BAD_REQUEST), takes: now, permanent: true, retry_after: None, check: Error::is_credentials, words: "check the client id and secret for fake-docplanner.test" },
        Case { name: "401 invalid_client", fault: TokenFault::InvalidClient(StatusCode::UNAUTHORIZED), takes: now, permanent: true, retry_after: None, check: Error::is_credentials, words: "check the client id and secret for fake-docplanner.test" },
    ]
}

/// The backoff under test: the defaults, without jitter, so the schedule is exact.
fn backoff() -> Backoff {
    let mut backoff = Backoff::default();
    backoff.jitter = 0.0;
    backoff
}

/// The refresh policy under test: the defaults without jitter (a one-hour token is stale
/// from 3270 s and expired from 3570 s).
fn policy() -> RefreshPolicy {
    let mut policy = RefreshPolicy::default();
    policy.jitter = Duration::ZERO;
    policy
}

/// The backoff schedule written out independently of the crate: the n-th consecutive
/// failure waits min(cap, base·2ⁿ⁻¹), at least Retry-After.
fn delay_after(failures: u32, case: &Case) -> Duration {
    let b = backoff();
    let (base, cap) = if case.permanent {
        (b.permanent_base, b.permanent_cap)
    } else {
        (b.base, b.cap)
    };
    let nominal = (base * 2u32.pow(failures - 1)).min(cap);
    case.retry_after.map_or(nominal, |asked| nominal.max(asked))
}

/// How many token requests the schedule allows in the window, with requests every TICK:
/// an attempt starts at the first tick at or after the end of the previous one plus its
/// backoff.
fn expected_attempts(case: &Case) -> u64 {
    let tick = TICK.as_millis();
    let (mut at, mut attempts, mut failures) = (0u128, 0u64, 0u32);
    while at < WINDOW.as_millis() {
        attempts += 1;
        failures += 1;
        let allowed = at + case.takes.as_millis() + delay_after(failures, case).as_millis();
        at = allowed.div_ceil(tick) * tick;
    }
    attempts
}

/// 10,000 requests over the window; returns (ok, errors that satisfy the case, first error).
async fn outage_traffic(s: &Arc<Setup>, case: &Case) -> (u64, u64, Option<Error>) {
    let mut tasks = Vec::with_capacity(10_000);
    let start = Instant::now();
    while Instant::now() < start + WINDOW {
        for _ in 0..PER_TICK {
            let s = Arc::clone(s);
            tasks.push(tokio::spawn(
                async move { s.get().await.map(|r| r.status()) },
            ));
        }
        sleep(TICK).await;
    }
    let (mut ok, mut typed, mut first) = (0, 0, None);
    for task in tasks {
        match task.await.unwrap() {
            Ok(StatusCode::OK) => ok += 1,
            Ok(other) => panic!("{}: unexpected status {other}", case.name),
            Err(boxed) => {
                let error = boxed.downcast_ref::<Error>().unwrap().clone();
                assert!((case.check)(&error), "{}: {error:?}", case.name);
                typed += 1;
                first.get_or_insert(error);
            }
        }
    }
    (ok, typed, first)
}

fn setup() -> Setup {
    in_process_with(FakeDocplanner::builder().in_process(), |b| {
        b.backoff(backoff()).refresh_policy(policy())
    })
}

/// Send a request every second until one succeeds; returns how long it took.
async fn time_to_recover(s: &Setup, healed: impl Fn(&Setup) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let _ = s.get().await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        if healed(s) {
            return Instant::now() - start;
        }
        assert!(
            Instant::now() - start < Duration::from_secs(1_000),
            "never recovered"
        );
        sleep(Duration::from_secs(1)).await;
    }
}

fn longest_wait(case: &Case) -> Duration {
    let b = backoff();
    let cap = if case.permanent {
        b.permanent_cap
    } else {
        b.cap
    };
    cap.max(case.retry_after.unwrap_or_default()) + case.takes + Duration::from_secs(1)
}

#[tokio::test(start_paused = true)]
async fn faults_without_a_valid_token() {
    let mut table = Vec::new();
    for case in cases() {
        let s = Arc::new(setup());
        s.fake.fail_all_token_requests(case.fault.clone());
        let (ok, typed, first) = outage_traffic(&s, &case).await;
        let first = first.unwrap();
        let message = first.to_string();
        assert!(message.contains(case.words), "{}: {message}", case.name);
        assert_eq!(
            (ok, typed),
            (0, 10_000),
            "{}: every caller got the typed error",
            case.name
        );
        let attempts = s.fake.stats().token_requests;
        assert_eq!(
            attempts,
            expected_attempts(&case),
            "{}: follows the backoff schedule",
            case.name
        );

        s.fake.clear_token_faults();
        let took = time_to_recover(&s, |s| s.fake.stats().api_ok > 0).await;
        assert!(
            took <= longest_wait(&case),
            "{}: recovered after {took:?}",
            case.name
        );
        assert_eq!(
            s.fake.stats().token_requests,
            attempts + 1,
            "{}: one request heals it",
            case.name
        );
        table.push(format!(
            "| {} | `{}` error: \"{}\" | {} | {:?} |",
            case.name,
            kind(&first),
            message,
            attempts,
            took
        ));
    }
    println!("| fault | caller sees (no valid token) | token requests in 100 s (10,000 requests) | recovery after clearing |");
    println!("|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
}

#[tokio::test(start_paused = true)]
async fn faults_while_a_valid_token_is_stale() {
    let mut table = Vec::new();
    for case in cases() {
        let s = Arc::new(setup());
        let first = s.cache.token().await.unwrap();
        advance(Duration::from_secs(3300)).await; // stale from 3270 s, usable until 3570 s
        s.fake.fail_all_token_requests(case.fault.clone());
        let (ok, typed, _) = outage_traffic(&s, &case).await;
        assert_eq!(
            (ok, typed),
            (10_000, 0),
            "{}: the valid token was served throughout",
            case.name
        );
        // The background attempts follow the same schedule (counted by the fake's token
        // endpoint: the first token is one more).
        let attempts = s.fake.stats().token_requests - 1;
        assert_eq!(
            attempts,
            expected_attempts(&case),
            "{}: follows the backoff schedule",
            case.name
        );
        assert!(
            s.cache.cached().unwrap().same_secret(&first),
            "{}: token kept",
            case.name
        );

        s.fake.clear_token_faults();
        let took = time_to_recover(&s, |s| {
            s.cache.cached().is_some_and(|t| !t.same_secret(&first))
        })
        .await;
        assert!(
            took <= longest_wait(&case),
            "{}: recovered after {took:?}",
            case.name
        );
        assert_eq!(
            s.fake.stats().token_requests - 1,
            attempts + 1,
            "{}",
            case.name
        );
        assert_eq!(s.fake.stats().sent_without_valid_token(), 0);
        table.push(format!(
            "| {} | 200 (10,000 of 10,000) | {} | {:?} |",
            case.name, attempts, took
        ));
    }
    println!("| fault | caller sees (stale valid token) | background token requests in 100 s | new token after clearing |");
    println!("|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
}

fn kind(error: &Error) -> &'static str {
    if error.is_timeout() {
        "is_timeout"
    } else if error.is_credentials() {
        "is_credentials"
    } else if error.is_invalid_response() {
        "is_invalid_response"
    } else if error.is_transient() {
        "is_transient"
    } else {
        "other"
    }
}

/// The server really stopped (connection refused over TCP), then restarted: a transient
/// error while it is down, recovery by itself once it is back. Real sockets, real time,
/// a 10–100 ms backoff.
#[tokio::test]
async fn the_token_server_down_then_back_over_tcp() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let mut fast = Backoff::default();
    fast.base = Duration::from_millis(10);
    fast.cap = Duration::from_millis(100);
    let cache = fake.cache_builder().unwrap().backoff(fast).build();

    fake.stop_https();
    let error = cache.token().await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("could not reach the token endpoint 127.0.0.1"),
        "{error}"
    );
    assert_eq!(fake.stats().token_requests, 0);

    fake.restart_https().await.unwrap();
    sleep(Duration::from_millis(150)).await;
    let token = cache.token().await.unwrap();
    assert!(token.secret().starts_with("fake-"));
    assert_eq!(fake.stats().token_requests, 1);

    // And a connection that breaks mid-body, over TCP.
    let fresh = fake.cache_builder().unwrap().backoff(fast).build();
    fake.fail_next_token_requests(1, TokenFault::CloseMidBody);
    let error = fresh.token().await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    sleep(Duration::from_millis(150)).await;
    assert!(fresh.token().await.is_ok());
}

/// (c') The same outages right after a 401 for a token the API still accepts (a request
/// rejected for its own reasons): the token becomes suspect, and stays in use through the
/// outage; its replacement is retried on the backoff schedule, not per request; the 401
/// goes back with the refresh error; when the fault clears, the suspect token is replaced.
#[tokio::test(start_paused = true)]
async fn faults_after_a_401_keep_the_suspect_token_in_use() {
    let mut table = Vec::new();
    for case in cases() {
        let s = Arc::new(setup());
        let first = s.cache.token().await.unwrap();
        s.fake.fail_all_token_requests(case.fault.clone());
        // One spurious 401: its replay waits for a refresh that fails.
        s.fake.set_api_always_401(true);
        let rejected = {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.get().await.unwrap() })
        };
        while s.fake.stats().api_forced_401 == 0 {
            tokio::task::yield_now().await;
        }
        s.fake.set_api_always_401(false);
        let (ok, typed, _) = outage_traffic(&s, &case).await;
        assert_eq!(
            (ok, typed),
            (10_000, 0),
            "{}: the suspect token was served throughout",
            case.name
        );
        let rejected = rejected.await.unwrap();
        assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);
        let why = rejected.extensions().get::<Unauthorized>().unwrap();
        assert!(
            why.refresh_error().is_some_and(|e| (case.check)(e)),
            "{}: the refresh error travels with the 401: {why:?}",
            case.name
        );
        // Counted by the fake: the first token, then the attempts the schedule allows
        // (the first one forced by the 401 at the start of the window).
        let attempts = s.fake.stats().token_requests - 1;
        assert_eq!(
            attempts,
            expected_attempts(&case),
            "{}: follows the backoff schedule",
            case.name
        );
        assert_eq!(s.cache.status().state, TokenState::Suspect, "{}", case.name);
        assert!(s.cache.cached().unwrap().same_secret(&first));

        s.fake.clear_token_faults();
        let took = time_to_recover(&s, |s| {
            s.cache.cached().is_some_and(|t| !t.same_secret(&first))
        })
        .await;
        assert!(
            took <= longest_wait(&case),
            "{}: recovered after {took:?}",
            case.name
        );
        let fake = s.fake.stats();
        assert_eq!(fake.tokens_issued, 2, "{}", case.name);
        assert_eq!(fake.sent_without_valid_token(), 0);
        table.push(format!(
            "| {} | 200 (10,000 of 10,000) | {} | {:?} |",
            case.name, attempts, took
        ));
    }
    println!("| fault | caller sees (suspect token after a 401) | token requests in 100 s | new token after clearing |");
    println!("|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
}
