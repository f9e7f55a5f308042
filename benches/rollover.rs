//! Request latency (p50, p99, max) across token rollovers, under a steady open-loop load,
//! with a token endpoint that takes 50 ms: ours (a background refresh before expiry) beside
//! the usual blocking design (a refresh at expiry under an `RwLock` write lock, which every
//! request then waits for).
//!
//! The inner service is the in-process fake Docplanner (it checks every token, so a
//! request sent with an expired token would show in `sent_without_valid_token`). Tokens
//! live 1 s (both designs stop using one 100 ms before its expiry); each design runs
//! 2,000 requests a second for 6 s on a 2-worker tokio runtime. Every token request is
//! logged with its start and end: a request "during a rollover" is one whose own span
//! overlaps a token request; "steady" is every other request of the same run, so both
//! figures come from the same seconds of the same run.
//!
//! `cargo bench --bench rollover`

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use docplanner_auth::testing::{FakeDocplanner, FakeTransport, TokenFault};
use docplanner_auth::{
    AccessToken, BearerAuthLayer, BoxError, ClientCredentials, TokenCache, TokenSource,
};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use support::{HandToken, RwLockAuth};
use tokio::time::MissedTickBehavior;
use tower::{Layer, Service, ServiceExt};

const ENDPOINT_LATENCY: Duration = Duration::from_millis(50);
const LIFETIME: Duration = Duration::from_secs(1);
/// Both designs stop sending a token this long before it expires (ours: the default
/// margin, capped at a tenth of the lifetime).
const MARGIN: Duration = Duration::from_millis(100);
const RUN: Duration = Duration::from_secs(6);
const WARM_UP: Duration = Duration::from_millis(500);
const PER_MS: usize = 2;
/// The verdict needs rollovers in the measured window (about 6 are expected: 5.5 s of
/// 0.9 s tokens) and enough requests overlapping them for a p99 to mean something.
const MIN_ROLLOVERS: f64 = 3.0;
const MIN_DURING: f64 = 100.0;

type Spans = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// The fake's token endpoint through its own client credentials, every call logged.
struct Logged {
    credentials: ClientCredentials<FakeTransport>,
    log: Spans,
}

impl Logged {
    fn new(fake: &FakeDocplanner, log: &Spans) -> Self {
        Self {
            credentials: fake.credentials().expect("credentials"),
            log: Arc::clone(log),
        }
    }
}

impl TokenSource for Logged {
    async fn fetch(&self) -> Result<AccessToken, BoxError> {
        let start = Instant::now();
        // Boxed: rustc cannot prove the credentials' future `Send` inside another future.
        let fetch: Pin<Box<dyn Future<Output = Result<AccessToken, BoxError>> + Send + '_>> =
            Box::pin(self.credentials.fetch());
        let token = fetch.await;
        self.log.lock().expect("log").push((start, Instant::now()));
        token
    }
}

struct Figures {
    steady: Vec<Duration>,
    rollover: Vec<Duration>,
    rollovers: usize,
    errors: usize,
}

/// Drive `service` at `PER_MS` requests per millisecond for `RUN`; classify the latencies.
async fn run<S>(service: S, log: &Spans, url: String) -> Figures
where
    S: Service<Request<Empty<Bytes>>, Response = Response<docplanner_auth::testing::FakeBody>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let url: Arc<str> = Arc::from(url);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let begin = Instant::now();
    let mut tasks = Vec::with_capacity(RUN.as_millis() as usize * PER_MS);
    while begin.elapsed() < RUN {
        tick.tick().await;
        for _ in 0..PER_MS {
            let service = service.clone();
            let url = Arc::clone(&url);
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let request = Request::get(&*url).body(Empty::new()).expect("request");
                let ok = match service.oneshot(request).await {
                    Ok(response) => response.status() == StatusCode::OK,
                    Err(_) => false,
                };
                (start, Instant::now(), ok)
            }));
        }
    }
    let mut spans = Vec::with_capacity(tasks.len());
    for task in tasks {
        spans.push(task.await.expect("task"));
    }
    let fetches = log.lock().expect("log").clone();
    let mut figures = Figures {
        steady: Vec::new(),
        rollover: Vec::new(),
        rollovers: fetches
            .iter()
            .filter(|(s, _)| *s >= begin + WARM_UP)
            .count(),
        errors: 0,
    };
    for (start, end, ok) in spans {
        if start < begin + WARM_UP {
            continue;
        }
        if !ok {
            figures.errors += 1;
        }
        let during = fetches.iter().any(|&(s, e)| start < e && end > s);
        let latency = end - start;
        if during {
            figures.rollover.push(latency);
        } else {
            figures.steady.push(latency);
        }
    }
    figures
}

/// The `p`th percentile of `sorted`; `None` for an empty sample (not 0: an empty sample
/// would otherwise meet any target).
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Count, p50, p99 and max in µs (`None` when the sample is empty).
struct Summary {
    count: usize,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

fn stats(mut latencies: Vec<Duration>) -> Summary {
    latencies.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Summary {
        count: latencies.len(),
        p50: percentile(&latencies, 50.0).map(us),
        p99: percentile(&latencies, 99.0).map(us),
        max: latencies.last().copied().map(us),
    }
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for design in ["ours_background_refresh", "blocking_refresh_at_expiry"] {
        let figures = runtime.block_on(async {
            let fake = FakeDocplanner::builder()
                .token_lifetime(LIFETIME)
                .in_process();
            fake.fail_all_token_requests(TokenFault::Delay(ENDPOINT_LATENCY));
            let url = format!("{}/facilities", fake.api_base());
            let log = Spans::default();
            let figures = if design.starts_with("ours") {
                let cache = TokenCache::builder(Logged::new(&fake, &log))
                    .expiry_margin(MARGIN)
                    .build();
                cache.token().await.expect("first token");
                let service = BearerAuthLayer::new(cache, &fake.api_base())
                    .expect("layer")
                    .layer(fake.service());
                run(service, &log, url).await
            } else {
                let source = Arc::new(Logged::new(&fake, &log));
                let fetch: support::Fetch = Arc::new(move || {
                    let source = Arc::clone(&source);
                    Box::pin(async move {
                        let token = source.fetch().await.expect("token");
                        HandToken {
                            header: token.header_value().clone(),
                            expires_at: Instant::now() + LIFETIME - MARGIN,
                        }
                    })
                });
                let service = RwLockAuth::with_fetch(fake.service(), fetch);
                let request = Request::get(&url)
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                service.clone().oneshot(request).await.expect("first token");
                run(service, &log, url).await
            };
            let unauthenticated = fake.stats().sent_without_valid_token();
            (figures, unauthenticated)
        });
        rows.push((design, figures));
    }

    println!(
        "\nrollover: latency in µs; token endpoint {} ms, tokens live {} s, {} requests/s for {} s",
        ENDPOINT_LATENCY.as_millis(),
        LIFETIME.as_secs(),
        PER_MS * 1000,
        RUN.as_secs()
    );
    println!(
        "| {:<44} | {:>9} | {:>9} | {:>7} | {:>9} | {:>9} | {:>9} |",
        "design / requests", "count", "rollovers", "errors", "p50 µs", "p99 µs", "max µs"
    );
    println!(
        "|{:-<46}|{:->11}|{:->11}|{:->9}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    let mut p99 = Vec::new();
    for (design, (figures, unauthenticated)) in rows {
        let steady = stats(figures.steady.clone());
        let rollover = stats(figures.rollover.clone());
        for (label, summary) in [("steady", &steady), ("during rollovers", &rollover)] {
            println!(
                "| {:<44} | {:>9} | {:>9} | {:>7} | {:>9} | {:>9} | {:>9} |",
                format!("{design} {label}"),
                summary.count,
                figures.rollovers,
                figures.errors + unauthenticated as usize,
                cell(summary.p50),
                cell(summary.p99),
                cell(summary.max),
            );
        }
        p99.push((design, figures, unauthenticated, steady, rollover));
    }
    for (design, _, _, steady, rollover) in &p99 {
        println!(
            "{design}: p99 during rollovers / steady p99 = {}",
            cell(rollover.p99.zip(steady.p99).map(|(r, s)| r / s))
        );
    }
    let ours = p99.iter().find(|row| row.0.starts_with("ours"));
    let blocking = p99.iter().find(|row| row.0.starts_with("blocking"));
    if let (Some(ours), Some(blocking)) = (ours, blocking) {
        let ratio = blocking.4.p99.zip(ours.3.p99).map(|(b, s)| b / s);
        println!(
            "blocking p99 during rollovers = {} x ours steady p99",
            cell(ratio)
        );
    }
    // Every condition, from this run: the latency ratio, and a sample that can carry it
    // (rollovers did happen inside the measured window, enough requests overlapped them for
    // a p99), and no request of ours failed or went out without a valid token.
    let (rollovers, errors, unauthenticated, steady_p99, roll_p99, roll_count) =
        ours.map_or((None, None, None, None, None, None), |(_, f, u, s, r)| {
            (
                Some(f.rollovers as f64),
                Some(f.errors as f64),
                Some(*u as f64),
                s.p99,
                r.p99,
                Some(r.count as f64),
            )
        });
    support::Verdict::new("rollover p99")
        .at_most(
            "ours p99 during rollovers <= 1.05 x ours steady p99 (µs)",
            roll_p99,
            steady_p99.map(|s| 1.05 * s),
        )
        .at_least(
            "rollovers in the measured window",
            rollovers,
            Some(MIN_ROLLOVERS),
        )
        .at_least("requests during rollovers", roll_count, Some(MIN_DURING))
        .at_most("failed requests (ours)", errors, Some(0.0))
        .at_most(
            "requests sent without a valid token (ours)",
            unauthenticated,
            Some(0.0),
        )
        .print();
}
