//! Several markets in one client: `cargo run --example markets`.
//!
//! Starts three fake Docplanner markets (real HTTPS on 127.0.0.1, each its own origin,
//! token endpoint and credentials: Spain, Poland, Italy), builds one layer over a
//! [`Router`] with a credential set per market, and sends 100 concurrent requests to each
//! market through the one client, on a cold start. Each market's requests carry that
//! market's token, fetched once. It ends with the line
//! `markets: sets=<n> requests=<n> ok=<n> token_requests=<k>` (k = n: one token per set).
//!
//! In production the router comes from the environment:
//! `DOCPLANNER_MARKETS=es,pl,it` with `DOCPLANNER_ES_CLIENT_ID`,
//! `DOCPLANNER_ES_CLIENT_SECRET`… and `docplanner::Markets::from_env()?.router()?`.

use bytes::Bytes;
use docplanner_auth::router::{Router, Set};
use docplanner_auth::testing::{client_trusting, FakeDocplanner};
use docplanner_auth::{BearerAuthLayer, BoxError, ReplayBody};
use futures_util::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt};

/// Requests per market.
const PER_MARKET: usize = 100;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let names = ["doctoralia.es", "znanylekarz.pl", "miodottore.it"];
    let mut fakes = Vec::new();
    for name in names {
        let fake = FakeDocplanner::builder()
            .client_id(&format!("{name}-id"))
            .client_secret(&format!("{name}-secret"))
            .start()
            .await?;
        fakes.push((name, fake));
    }

    // One credential set per market: its own cache (named after the market: the `cache`
    // label of metrics and spans), its token only for its own origin.
    let mut sets = Vec::new();
    for (name, fake) in &fakes {
        let cache = fake.cache_builder()?.name(*name).build();
        sets.push(Set::new(cache, &fake.api_base())?);
    }
    let mut sets = sets.into_iter();
    let mut router = Router::builder(sets.next().ok_or("no market")?);
    for set in sets {
        router = router.set(set);
    }
    let router = router.build()?;

    // One HTTPS client for every market (trusting each fake's certificate).
    let all: Vec<&FakeDocplanner> = fakes.iter().map(|(_, fake)| fake).collect();
    let http = client_trusting::<ReplayBody<Full<Bytes>>>(&all)?;
    let client = BearerAuthLayer::routed(router.clone()).layer(http);

    let requests = fakes.iter().flat_map(|(_, fake)| {
        let url = format!("{}/facilities", fake.api_base());
        let client = client.clone();
        (0..PER_MARKET).map(move |_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let request = Request::get(url).body(Full::<Bytes>::default())?;
                Ok::<_, BoxError>(client.oneshot(request).await?.status())
            }
        })
    });
    let answers = join_all(requests).await;
    let ok = answers
        .iter()
        .filter(|a| matches!(a, Ok(StatusCode::OK)))
        .count();

    for ((name, fake), set) in fakes.iter().zip(router.sets()) {
        let stats = fake.stats();
        println!(
            "{name}: api_ok={} token_requests={} foreign_tokens={} cache={} state={:?}",
            stats.api_ok,
            stats.token_requests,
            stats.api_unknown_token,
            set.name(),
            set.cache().status().state,
        );
    }
    let token_requests: u64 = fakes.iter().map(|(_, f)| f.stats().token_requests).sum();
    println!(
        "markets: sets={} requests={} ok={ok} token_requests={token_requests}",
        router.sets().len(),
        answers.len(),
    );
    Ok(())
}
