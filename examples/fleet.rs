//! A fleet of replicas sharing one token: `cargo run --example fleet --features redis`.
//!
//! Starts a fake Docplanner and a local `redis-server` on a free port (or uses `REDIS_URL`),
//! runs 8 replicas (each its own `TokenCache` with its own Redis connection) sending
//! requests concurrently across a token rollover and a revocation, prints the Redis
//! commands per replica per token lifetime (as Redis counts them in `INFO commandstats`),
//! and ends with one line: `fleet: replicas=<n> requests=<m> ok=<m> token_fetches=<k>`.
//! `examples/fleet_scale.rs` is the same at 1,000 replicas.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::store::RedisStore;
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{BoxError, TokenCache};
use futures_util::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt};

#[path = "../tests/support/fleet_scale.rs"]
mod fleet_scale;

const REPLICAS: usize = 8;
/// The tokens' lifetime: 10 s, so that a rollover happens during the run.
const LIFETIME: Duration = Duration::from_secs(10);

/// A redis-server of our own, stopped on drop.
struct LocalRedis(Child);

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_url() -> Result<(String, Option<LocalRedis>), BoxError> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok((url, None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start redis-server ({e}); install it or set REDIS_URL"))?;
    let local = LocalRedis(child);
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((format!("redis://127.0.0.1:{port}/"), Some(local)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("redis-server did not start".into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (url, _local) = redis_url()?;
    println!("Redis at {}", url.split('@').next_back().unwrap_or(&url));
    let fake = FakeDocplanner::builder()
        .token_lifetime(LIFETIME)
        .in_process();
    let mut admin = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    fleet_scale::reset_stats(&mut admin).await;
    let started = tokio::time::Instant::now();
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let credentials = fake.credentials()?;
        let key = credentials.store_key();
        let cache = TokenCache::builder(credentials)
            .name(format!("replica-{i}"))
            .store(RedisStore::open(&url)?, key)
            .build();
        let client = fake.layer(cache.clone())?.layer(fake.service());
        replicas.push(Arc::new((cache, client)));
    }
    let facilities = format!("{}/facilities", fake.api_base());
    let (mut requests, mut ok) = (0usize, 0usize);
    println!("{REPLICAS} replicas, 25 requests each every 100 ms for 6 s; a revocation at 2 s.");
    for round in 0..60 {
        if round == 20 {
            fake.revoke_all_tokens();
        }
        let calls: Vec<_> = replicas
            .iter()
            .flat_map(|replica| {
                (0..25).map(|_| {
                    let replica = Arc::clone(replica);
                    let request = Request::get(facilities.as_str()).body(Full::<Bytes>::default());
                    tokio::spawn(async move { replica.1.clone().oneshot(request?).await })
                })
            })
            .collect();
        for result in join_all(calls).await {
            requests += 1;
            if matches!(result, Ok(Ok(ref r)) if r.status() == StatusCode::OK) {
                ok += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let adopted: u64 = replicas.iter().map(|r| r.0.stats().store_adoptions).sum();
    println!("tokens adopted from Redis instead of fetched: {adopted}");
    let commands = fleet_scale::commandstats(&mut admin).await;
    let lifetimes = started.elapsed().as_secs_f64() / LIFETIME.as_secs_f64();
    println!(
        "Redis commands: {} in {lifetimes:.2} token lifetimes, {:.2} per replica per lifetime",
        commands.total(),
        commands.total() as f64 / REPLICAS as f64 / lifetimes
    );
    println!(
        "fleet: replicas={REPLICAS} requests={requests} ok={ok} token_fetches={}",
        fake.stats().token_requests
    );
    Ok(())
}
