//! The fleet at scale, counted: 500 replicas on a real redis-server (started by the test
//! on a free loopback port). Its own test binary, so that no other test competes with
//! its replicas for the CPU (the counts below depend on notices arriving in
//! time, not on durations). Without `redis-server` on PATH it writes a `SKIPPED` line
//! and passes, unless `REQUIRE_REDIS=1` (as in CI).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;
#[path = "support/fleet_scale.rs"]
mod fleet_scale;

/// 500 replicas (own cache, own two Redis connections each) on a 200 ms token endpoint,
/// 4 s tokens, a cold start then 8 s of steady traffic, counted by the fake and by Redis's
/// `INFO commandstats` (the figures of BENCHMARKS.md come from
/// `examples/fleet_scale.rs`, on the same measurement, at 1,000 replicas in a release
/// build; 500 here keep a debug build on a loaded 2-core machine from starving Redis's
/// answers past their 500 ms timeout, which turns into store faults and lone fetches). Replicas that find the lock taken
/// wait for its holder's notice instead of polling the store or competing for the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_at_scale_wait_for_the_publication() {
    let Some(redis) = RedisServer::start("replicas_at_scale_wait_for_the_publication") else {
        return;
    };
    let replicas = 500;
    let scale = fleet_scale::Scale {
        replicas,
        lifetime: Duration::from_secs(4),
        latency: Duration::from_millis(200),
        duration: Duration::from_secs(8),
        calls_per_second: 20_000,
        // Counts, not durations: a machine starved by the replicas of a debug build must
        // not turn slow answers into store faults.
        store_timeout: Duration::from_secs(5),
    };
    let f = fleet_scale::measure(&redis.url(), scale).await.unwrap();
    println!(
        "{replicas} replicas, 200 ms endpoint: cold start {:?}, {} token request(s), commands {:?}; \
         steady: {} calls, {} failed, {} token requests, {:.3} commands per replica per \
         lifetime, {:?}",
        f.cold_start,
        f.cold_token_requests,
        f.cold_commands,
        f.calls,
        f.failed,
        f.token_requests,
        f.commands_per_replica_per_lifetime(),
        f.commands
    );
    assert_eq!(f.failed, 0, "no call failed");
    // Cold start: one token request; each replica read the store once, in its look (the
    // holder's publication reads its lock once more), and the waiters got the token in
    // the notice: polling would read it again every 25, 50, 100… ms while the endpoint
    // takes 200 ms (2 to 3 reads each, measured before the notices).
    assert_eq!(f.cold_token_requests, 1);
    let reads = f.cold_commands.get("get");
    assert!(reads <= replicas as u64 + 1, "{reads} reads of the store");
    // Steady: one token request per refresh moment (a 4 s token is renewed about 2.9 s
    // after issue), a replica that heard of a live lock does not try it (at most 10 % of
    // the replicas per refresh look before the notice reaches them), and at most 4 Redis
    // commands per replica per token lifetime.
    assert!(
        f.token_requests <= 10,
        "{} token requests",
        f.token_requests
    );
    let failed_locks = f.commands.failed_locks();
    assert!(
        failed_locks <= f.token_requests * replicas as u64 / 10,
        "{failed_locks} failed lock attempts for {} refreshes",
        f.token_requests
    );
    assert!(f.commands_per_replica_per_lifetime() <= 4.0);
}
