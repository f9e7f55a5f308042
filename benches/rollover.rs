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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stats(mut latencies: Vec<Duration>) -> (usize, f64, f64, f64) {
    latencies.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (
        latencies.len(),
        us(percentile(&latencies, 50.0)),
        us(percentile(&latencies, 99.0)),
        us(latencies.last().copied().unwrap_or_default()),
    )
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
        for (label, (count, p50, p99, max)) in [("steady", steady), ("during rollovers", rollover)]
        {
            println!(
                "| {:<44} | {count:>9} | {:>9} | {:>7} | {p50:>9.1} | {p99:>9.1} | {max:>9.1} |",
                format!("{design} {label}"),
                figures.rollovers,
                figures.errors + unauthenticated as usize,
            );
        }
        p99.push((design, steady.2, rollover.2));
    }
    for (design, steady, rollover) in &p99 {
        println!(
            "{design}: p99 during rollovers / steady p99 = {:.3}",
            rollover / steady
        );
    }
    if let [(_, ours_steady, ours_roll), (_, _, blocking_roll)] = p99[..] {
        println!(
            "target: ours p99 during rollovers <= 1.05 x ours steady p99: {} ({:.3}); \
             blocking p99 during rollovers = {:.1} x ours steady p99",
            if ours_roll <= 1.05 * ours_steady {
                "met"
            } else {
                "MISSED"
            },
            ours_roll / ours_steady,
            blocking_roll / ours_steady
        );
    }
}
