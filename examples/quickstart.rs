//! The quickstart: `cargo run --example quickstart`.
//!
//! Without credentials it starts a fake Docplanner (real HTTPS on 127.0.0.1) and shows, in
//! a few seconds, what the layer does: one token for 100 concurrent requests on a cold
//! start, a revoked token healed by a refresh and a replay, and short-lived tokens renewed
//! in the background while traffic flows. It ends with one `summary:` line.
//!
//! With `DOCPLANNER_CLIENT_ID`, `DOCPLANNER_CLIENT_SECRET` and `DOCPLANNER_DOMAIN` (a
//! domain such as `doctoralia.es`, or a country code such as `es`) set, it calls the real
//! API instead: `GET /facilities`, and prints the answer.

use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::docplanner::{Credentials, Domain};
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{BoxError, TokenCache};
use futures_util::future::join_all;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    match real_credentials() {
        Some((domain, id, secret)) => real_api(domain, &id, &secret).await,
        None => fake_tour().await,
    }
}

fn real_credentials() -> Option<(String, String, String)> {
    let get = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    Some((
        get("DOCPLANNER_DOMAIN")?,
        get("DOCPLANNER_CLIENT_ID")?,
        get("DOCPLANNER_CLIENT_SECRET")?,
    ))
}

async fn real_api(domain: String, id: &str, secret: &str) -> Result<(), BoxError> {
    let domain: Domain = domain.parse()?;
    println!(
        "Calling the real Docplanner API of {domain} ({}).",
        domain.api_base()
    );
    let client = Credentials::new(domain.clone(), id, secret).client::<Full<Bytes>>()?;
    let request = Request::get(format!("{}/facilities", domain.api_base())).body(Full::default())?;
    let response = client.oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!("GET /facilities -> {status}");
    println!("{}", String::from_utf8_lossy(&body));
    Ok(())
}

/// Counts what the tour sends and what comes back.
#[derive(Default)]
struct Tally {
    requests: u64,
    ok: u64,
}

async fn fake_tour() -> Result<(), BoxError> {
    println!("No DOCPLANNER_* credentials set: touring a fake Docplanner on 127.0.0.1 instead.\n");
    let fake = FakeDocplanner::builder()
        .token_lifetime(Duration::from_secs(3))
        .start()
        .await?;
    let cache: TokenCache = fake.cache()?;
    let layer = fake.layer(cache.clone())?;
    let client = tower::ServiceBuilder::new()
        .layer(layer)
        .service(fake.client::<docplanner_auth::ReplayBody<Full<Bytes>>>()?);
    let facilities = format!("{}/facilities", fake.api_base());
    let mut tally = Tally::default();

    // 1. Cold start: 100 requests at once, no token yet.
    println!("1. Cold start: 100 requests at once, with no token in the cache yet.");
    send_many(&client, &facilities, 100, &mut tally).await?;
    println!(
        "   {} of 100 answered 200; the token endpoint was called {} time(s): one token for all.\n",
        tally.ok,
        fake.stats().token_requests
    );

    // 2. Revocation: the API answers 401; the layer refreshes once and replays.
    println!("2. Docplanner revokes every token; 20 requests go out with the revoked one.");
    fake.revoke_all_tokens();
    let before = (tally.ok, fake.stats().token_requests);
    send_many(&client, &facilities, 20, &mut tally).await?;
    println!(
        "   the API answered 401 {} time(s); the layer fetched {} new token(s), replayed {} \
         request(s), and {} of 20 answered 200.\n",
        fake.stats().api_revoked_token,
        fake.stats().token_requests - before.1,
        cache.stats().replays,
        tally.ok - before.0
    );

    // 3. Short-lived tokens: steady traffic while tokens expire every 3 s.
    println!("3. Tokens live 3 s here. Steady traffic for 4 s: 10 requests every 200 ms.");
    let before = (cache.stats().background_refreshes, tally.ok, tally.requests);
    for _ in 0..20 {
        send_many(&client, &facilities, 10, &mut tally).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = cache.stats();
    println!(
        "   {} of {} answered 200; {} refresh(es) ran in the background before expiry, \
         so no request waited for a token; expired tokens sent: {}.\n",
        tally.ok - before.1,
        tally.requests - before.2,
        cache.stats().background_refreshes - before.0,
        fake.stats().api_expired_token
    );

    let server = fake.stats();
    println!(
        "summary: requests={} ok={} token_fetches={} replayed_after_401={} sent_without_valid_token={}",
        tally.requests,
        tally.ok,
        server.token_requests,
        stats.replays,
        server.sent_without_valid_token()
    );
    Ok(())
}

async fn send_many<S>(client: &S, url: &str, n: usize, tally: &mut Tally) -> Result<(), BoxError>
where
    S: Service<
            Request<Full<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        > + Clone,
{
    let calls = (0..n).map(|_| {
        let client = client.clone();
        let request = Request::get(url).body(Full::default());
        async move { client.oneshot(request?).await }
    });
    for result in join_all(calls).await {
        tally.requests += 1;
        if result?.status() == StatusCode::OK {
            tally.ok += 1;
        }
    }
    Ok(())
}
