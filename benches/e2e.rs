//! Throughput of hyper-util's client over real HTTPS on loopback to the fake Docplanner,
//! with and without our layer, through the same client (one connection pool).
//!
//! Without the layer, each request carries the same token, inserted by hand, so the server
//! does the same work for both. The two variants run in alternating rounds (the order
//! flips every round) so that the machine's load drifts over both alike; the figure is the
//! median throughput over the rounds, and the ratio of the medians.
//!
//! `cargo bench --bench e2e`

mod support;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{BearerAuth, BoxError, ReplayBody};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use tower::{Service, ServiceExt};

const ROUNDS: usize = 20;
const PER_ROUND: usize = 2_000;
const CONCURRENCY: usize = 32;

/// `PER_ROUND` requests by `CONCURRENCY` tasks; requests per second.
async fn round<S, RB, B>(
    service: &S,
    url: &Arc<str>,
    header: Option<&HeaderValue>,
    body: fn() -> RB,
) -> f64
where
    RB: Send + 'static,
    S: Service<Request<RB>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let service = service.clone();
            let url = Arc::clone(url);
            let header = header.cloned();
            tokio::spawn(async move {
                for _ in 0..PER_ROUND / CONCURRENCY {
                    let mut request = Request::get(&*url).body(body()).expect("request");
                    if let Some(header) = &header {
                        request.headers_mut().insert(AUTHORIZATION, header.clone());
                    }
                    let response = service.clone().oneshot(request).await.map_err(Into::into)?;
                    assert_eq!(response.status(), StatusCode::OK);
                    response.into_body().collect().await.map_err(Into::into)?;
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("requests");
    }
    (PER_ROUND / CONCURRENCY * CONCURRENCY) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() -> Result<(), BoxError> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let fake = FakeDocplanner::builder().start().await?;
        let client = fake.client::<ReplayBody<Empty<Bytes>>>()?;
        let cache = fake.cache()?;
        let header = cache.token().await?.header_value().clone();
        let with = BearerAuth::new(client.clone(), &fake.layer(cache)?);
        let without = client;
        let url: Arc<str> = Arc::from(format!("{}/facilities", fake.api_base()));

        // Warm up: connections, TLS sessions, the server's token table.
        round(&without, &url, Some(&header), ReplayBody::default).await;
        round(&with, &url, None, Empty::new).await;

        let (mut plain, mut layered) = (Vec::new(), Vec::new());
        for i in 0..ROUNDS {
            if i % 2 == 0 {
                plain.push(round(&without, &url, Some(&header), ReplayBody::default).await);
                layered.push(round(&with, &url, None, Empty::new).await);
            } else {
                layered.push(round(&with, &url, None, Empty::new).await);
                plain.push(round(&without, &url, Some(&header), ReplayBody::default).await);
            }
        }
        let pairs: Vec<f64> = layered.iter().zip(&plain).map(|(l, p)| l / p).collect();
        let (plain, layered) = (median(plain), median(layered));
        println!(
            "\ne2e: hyper-util client over HTTPS on loopback, {CONCURRENCY} concurrent, \
             {ROUNDS} alternating rounds of {PER_ROUND} requests"
        );
        println!(
            "| {:<22} | {:>14} | {:>8} |",
            "variant", "median req/s", "ratio"
        );
        println!("|{:-<24}|{:->16}|{:->10}|", "", "", "");
        println!(
            "| {:<22} | {plain:>14.0} | {:>8.3} |",
            "without the layer", 1.0
        );
        println!(
            "| {:<22} | {layered:>14.0} | {:>8.3} |",
            "with BearerAuth",
            layered / plain
        );
        let (lowest, highest) = pairs
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let paired = median(pairs);
        println!(
            "per-round ratios (one round with, one without, back to back): median {paired:.3}, \
             lowest {lowest:.3}, highest {highest:.3}"
        );
        // Every condition, from this run: the throughput ratio, and that the server saw
        // every request of both variants succeed with one token and none without a valid one.
        let stats = fake.stats();
        let sent = ((2 * ROUNDS + 2) * (PER_ROUND / CONCURRENCY * CONCURRENCY)) as f64;
        support::Verdict::new("e2e over HTTPS")
            .at_least(
                "with/without (ratio of the medians) >= 0.99",
                Some(layered / plain),
                Some(0.99),
            )
            .at_least(
                "requests the server answered 200",
                Some(stats.api_ok as f64),
                Some(sent),
            )
            .at_most(
                "token requests",
                Some(stats.token_requests as f64),
                Some(1.0),
            )
            .at_most(
                "requests sent without a valid token",
                Some(stats.sent_without_valid_token() as f64),
                Some(0.0),
            )
            .print();
        Ok(())
    })
}
