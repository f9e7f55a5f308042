//! The fleet at scale, measured from outside: many replicas in one process (each its own
//! `TokenCache` and its own `RedisStore`, as separate processes would have) against one
//! redis-server and the in-process fake, a cold start then steady traffic, counted by the
//! fake (token requests) and by Redis (`INFO commandstats`). Shared by
//! `tests/fleet_scale.rs` (counts on a cheaper configuration) and
//! `examples/fleet_scale.rs` (the figures of BENCHMARKS.md, with their verdicts);
//! `examples/fleet.rs` counts its commands with it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use docplanner_auth::store::{RedisStore, TokenStore};
use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use docplanner_auth::{BoxError, TokenCache};
use futures_util::future::join_all;
use tokio::time::Instant;

/// One run: how many replicas, what tokens, how slow the token endpoint, how much traffic.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub replicas: usize,
    pub lifetime: Duration,
    pub latency: Duration,
    /// Steady traffic after the cold start.
    pub duration: Duration,
    /// `token()` calls a second, over the whole fleet.
    pub calls_per_second: u64,
    /// Each store operation's timeout (the cache's default is 500 ms). A test that counts
    /// on a loaded machine gives Redis longer, so that a starved CPU does not turn into
    /// store faults (each replica then fetches alone).
    pub store_timeout: Duration,
}

/// Redis commands by name, as `INFO commandstats` counts them (commands run by scripts
/// included), without the measurement's own (`info`, `config`, `ping`).
#[derive(Debug, Clone, Default)]
pub struct Commands(pub BTreeMap<String, u64>);

impl Commands {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Lock attempts that found the lock taken: the lock script reads the lock's TTL
    /// (`PTTL`) only when its `SET NX` failed.
    pub fn failed_locks(&self) -> u64 {
        self.get("pttl")
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub scale: Scale,
    /// One Redis round trip (median `PING`).
    pub rtt: Duration,
    /// From the moment every replica asks at once until the last one has the token.
    pub cold_start: Duration,
    /// From the same moment until the first one has it (the replica that fetched, or the
    /// first to adopt its token): the rest of the cold start is the token reaching the
    /// others.
    pub cold_first: Duration,
    pub cold_token_requests: u64,
    pub cold_commands: Commands,
    pub calls: u64,
    pub failed: u64,
    pub token_requests: u64,
    pub commands: Commands,
}

impl Figures {
    /// Lifetimes in the steady run.
    pub fn lifetimes(&self) -> f64 {
        self.scale.duration.as_secs_f64() / self.scale.lifetime.as_secs_f64()
    }

    pub fn commands_per_replica_per_lifetime(&self) -> f64 {
        self.commands.total() as f64 / self.scale.replicas as f64 / self.lifetimes()
    }

    /// The bound on token requests: 1.5 per lifetime, plus one.
    pub fn token_request_target(&self) -> f64 {
        1.5 * self.lifetimes() + 1.0
    }

    /// The bound on the cold start: 1.2 × (endpoint latency + one round trip) + 10 ms.
    pub fn cold_start_target(&self) -> Duration {
        (self.scale.latency + self.rtt).mul_f64(1.2) + Duration::from_millis(10)
    }
}

/// Commands counted since the last `CONFIG RESETSTAT`.
pub async fn commandstats(admin: &mut redis::aio::MultiplexedConnection) -> Commands {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    let mut commands = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let own = name.split('|').next().unwrap_or(name);
        if ["info", "config", "ping", "flushall"].contains(&own) {
            continue;
        }
        let calls = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        commands.insert(name.to_owned(), calls);
    }
    Commands(commands)
}

/// Start counting commands from zero.
pub async fn reset_stats(admin: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(admin)
        .await
        .unwrap();
}

/// Run `scale` against the redis-server at `url`: a cold start of every replica at once,
/// then steady traffic.
pub async fn measure(url: &str, scale: Scale) -> Result<Figures, BoxError> {
    let mut admin = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    // Keys of their own: the caches of an earlier run may still finish a refresh.
    let prefix = format!("run-{:016x}:", fastrand::u64(..));
    let fake = FakeDocplanner::builder()
        .token_lifetime(scale.lifetime)
        .in_process();
    if !scale.latency.is_zero() {
        fake.fail_all_token_requests(TokenFault::Delay(scale.latency));
    }
    let mut caches = Vec::with_capacity(scale.replicas);
    let mut warm_up = Vec::with_capacity(scale.replicas);
    for i in 0..scale.replicas {
        let credentials = fake.credentials()?;
        let key = credentials.store_key();
        let store = RedisStore::open(url)?.prefix(&prefix);
        caches.push(
            TokenCache::builder(credentials)
                .name(format!("replica-{i}"))
                .store(store.clone(), key.clone())
                .store_timeout(scale.store_timeout)
                .build(),
        );
        // Replicas that run already: both their Redis connections are open (2,000
        // connections at once may exceed the 500 ms connection timeout on a loaded
        // machine: a few attempts each).
        warm_up.push(tokio::spawn(async move {
            let mut attempts = 0;
            loop {
                let connected = async {
                    store.load(key.as_str()).await?;
                    store.watch(key.as_str()).await?;
                    Ok::<_, BoxError>(())
                };
                match connected.await {
                    Err(error) if attempts < 5 => {
                        attempts += 1;
                        let _ = error;
                    }
                    done => return done,
                }
            }
        }));
    }
    for warmed in join_all(warm_up).await {
        warmed??;
    }
    let mut pings = Vec::new();
    for _ in 0..101 {
        let started = Instant::now();
        let () = redis::cmd("PING").query_async(&mut admin).await?;
        pings.push(started.elapsed());
    }
    pings.sort();
    let rtt = pings[pings.len() / 2];

    // Cold start: every replica asks at once.
    reset_stats(&mut admin).await;
    let before = fake.stats().token_requests;
    let started = Instant::now();
    let asked: Vec<_> = caches
        .iter()
        .map(|cache| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await.map(|_| started.elapsed()) })
        })
        .collect();
    let (mut cold_start, mut cold_first) = (Duration::ZERO, Duration::MAX);
    for took in join_all(asked).await {
        let took = took??;
        cold_start = cold_start.max(took);
        cold_first = cold_first.min(took);
    }
    let cold_token_requests = fake.stats().token_requests - before;
    let cold_commands = commandstats(&mut admin).await;

    // Steady traffic: each replica calls at its share of the rate, from a random offset.
    reset_stats(&mut admin).await;
    let before = fake.stats().token_requests;
    let period = Duration::from_secs_f64(scale.replicas as f64 / scale.calls_per_second as f64);
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let end = Instant::now() + scale.duration;
    let loops: Vec<_> = caches
        .iter()
        .map(|cache| {
            let cache = cache.clone();
            let (calls, failed) = (Arc::clone(&calls), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut next = Instant::now() + period.mul_f64(fastrand::f64());
                while next < end {
                    tokio::time::sleep_until(next).await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    if cache.token().await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    next += period;
                }
            })
        })
        .collect();
    for ended in join_all(loops).await {
        ended?;
    }
    Ok(Figures {
        scale,
        rtt,
        cold_start,
        cold_first,
        cold_token_requests,
        cold_commands,
        calls: calls.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        token_requests: fake.stats().token_requests - before,
        commands: commandstats(&mut admin).await,
    })
}
