//! N concurrent requests on a cold cache, the token endpoint taking a fixed 5 ms (real
//! time): the wall time until all N have their answer, and the number of token requests.
//!
//! * (c) `c_ours`: our `BearerAuth` (single flight: one refresh task, every caller waits
//!   for its outcome);
//! * (i) `i_no_single_flight`: each caller that finds no token fetches one itself;
//! * (ii) `ii_mutex_across_fetch`: one mutex locked by every request and held across the
//!   fetch (golang.org/x/oauth2's `reuseTokenSource`);
//! * (iii) `iii_huskarl`: huskarl's `InMemoryTokenCache` (a tokio mutex around the fetch,
//!   double-checked) behind its `HttpAuthorizer`.
//!
//! Each is also run warm (a token already cached: the no-contention cost of N requests),
//! which gives ours its target: cold ≤ 1.2 × (5 ms + warm). Requests are spawned as tasks
//! on a 2-worker tokio runtime, the inner service answers at once.
//!
//! `cargo bench --bench stampede`

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use docplanner_auth::{BearerAuthLayer, BoxError};
use http::{Request, Response};
use http_body_util::Empty;
use support::{Endpoint, HuskarlAuth, MutexAuth, NoFlightAuth, Noop, API, LONG, URI};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

const LATENCY: Duration = Duration::from_millis(5);
const DESIGNS: [&str; 4] = [
    "c_ours",
    "i_no_single_flight",
    "ii_mutex_across_fetch",
    "iii_huskarl",
];

/// Token requests per stampede, by design (the same for every run of a design, or a range).
type Counts = Arc<Mutex<BTreeMap<String, (u64, u64)>>>;

/// Send `n` requests at once through clones of `service`; the wall time until all answered.
fn stampede<S>(runtime: &Runtime, service: S, n: usize) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<()>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    runtime.block_on(async move {
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let service = service.clone();
                tokio::spawn(async move {
                    let request = Request::get(URI).body(Empty::new()).expect("request");
                    service.oneshot(request).await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("response");
        }
        start.elapsed()
    })
}

/// Bench one design: `make` builds a fresh service (empty cache) over a fresh endpoint.
fn bench<S>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &Runtime,
    counts: &Counts,
    name: &str,
    n: usize,
    make: impl Fn(Endpoint) -> S,
) where
    S: Service<Request<Empty<Bytes>>, Response = Response<()>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    for warm in [false, true] {
        let id = format!("{name}_{}", if warm { "warm" } else { "cold" });
        group.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let endpoint = Endpoint::new(LATENCY, LONG);
                    let service = make(endpoint.clone());
                    if warm {
                        stampede(runtime, service.clone(), 1);
                    }
                    let before = endpoint.calls();
                    total += stampede(runtime, service, n);
                    let made = endpoint.calls() - before;
                    let mut counts = counts.lock().expect("counts");
                    let entry = counts.entry(id.clone()).or_insert((u64::MAX, 0));
                    *entry = (entry.0.min(made), entry.1.max(made));
                }
                total
            })
        });
    }
}

fn stampedes(c: &mut Criterion) {
    let since = SystemTime::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // What the token endpoint really takes (the timer thread's precision).
    let mut slept: Vec<f64> = (0..20)
        .map(|_| {
            runtime.block_on(async {
                let start = Instant::now();
                support::precise_sleep(LATENCY).await;
                start.elapsed().as_secs_f64() * 1e3
            })
        })
        .collect();
    slept.sort_by(f64::total_cmp);
    println!(
        "token endpoint latency: median {:.3} ms over 20 sleeps",
        slept[10]
    );
    for n in [1_000, 10_000] {
        let counts = Counts::default();
        let group_name = format!("stampede_{n}");
        let mut group = c.benchmark_group(&group_name);
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        bench(&mut group, &runtime, &counts, DESIGNS[0], n, |endpoint| {
            BearerAuthLayer::new(endpoint.cache(), API)
                .expect("layer")
                .layer(Noop)
        });
        bench(&mut group, &runtime, &counts, DESIGNS[1], n, |endpoint| {
            NoFlightAuth::new(Noop, endpoint)
        });
        bench(&mut group, &runtime, &counts, DESIGNS[2], n, |endpoint| {
            MutexAuth::new(Noop, endpoint)
        });
        bench(&mut group, &runtime, &counts, DESIGNS[3], n, |endpoint| {
            HuskarlAuth::new(Noop, endpoint)
        });
        group.finish();
        report(&group_name, &counts, since);
    }
}

fn report(group: &str, counts: &Counts, since: SystemTime) {
    let counts = counts.lock().expect("counts");
    let median = |id: &str| support::median_ns(group, id, since).map(|ns| ns / 1e6);
    let ours_warm = median("c_ours_warm");
    let ours_cold = median("c_ours_cold");
    println!("\n{group}: wall time until all answered (median, ms), token requests per stampede");
    println!(
        "| {:<24} | {:>10} | {:>10} | {:>12} | {:>14} |",
        "design", "cold ms", "warm ms", "cold/ours", "token requests"
    );
    println!(
        "|{:-<26}|{:->12}|{:->12}|{:->14}|{:->16}|",
        "", "", "", "", ""
    );
    for design in DESIGNS {
        let cold_id = format!("{design}_cold");
        let (Some(cold), Some(warm)) = (median(&cold_id), median(&format!("{design}_warm"))) else {
            continue;
        };
        let requests = match counts.get(&cold_id) {
            Some((lo, hi)) if lo == hi => lo.to_string(),
            Some((lo, hi)) => format!("{lo}..{hi}"),
            None => "-".to_owned(),
        };
        let ratio = ours_cold.map_or(f64::NAN, |ours| cold / ours);
        println!("| {design:<24} | {cold:>10.2} | {warm:>10.2} | {ratio:>12.2} | {requests:>14} |");
    }
    // Both conditions, from this run: the time budget, and one token request in every
    // cold stampede (a design without single flight can fit the budget).
    let budget = ours_warm.map(|warm| 1.2 * (LATENCY.as_secs_f64() * 1e3 + warm));
    let single = counts
        .get("c_ours_cold")
        .map(|&(lo, hi)| lo == 1 && hi == 1);
    let requests = counts
        .get("c_ours_cold")
        .map_or_else(|| "missing".to_owned(), |(lo, hi)| format!("{lo}..{hi}"));
    support::Verdict::new(format!("{group} cold"))
        .at_most(
            "ours cold ms <= 1.2 x (5 ms + ours warm ms)",
            ours_cold,
            budget,
        )
        .check(
            format!("token requests per cold stampede == 1 (every run: {requests})"),
            single,
        )
        .print();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = stampedes
}
criterion_main!(benches);
