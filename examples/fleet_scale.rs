//! The fleet at scale: `cargo run --release --example fleet_scale --features redis,test-util`.
//!
//! 1,000 replicas in one process (each its own `TokenCache` and its own `RedisStore`: two
//! Redis connections each, 2,000 in all, so `ulimit -n` must allow about 2,100 files) on a
//! local `redis-server` started on a free port, 4 s tokens, a cold start of every replica
//! at once, then 20 s of steady traffic (60,000 `token()` calls a second, then 120,000),
//! with a token endpoint answering in 0, 50 and 200 ms. Prints, for each run, failed
//! calls, token requests, Redis commands per replica per token lifetime (as Redis counts
//! them in `INFO commandstats`, script internals included) and the cold-start time, each
//! with its target and a verdict (`met` or `MISSED`) computed here. The figures are in
//! BENCHMARKS.md (section "Fleet").
//!
//! `FLEET_SCALE_SECONDS` (default 20, at least 1) and `FLEET_SCALE_REPLICAS` (default
//! 1000) change the run.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use docplanner_auth::BoxError;

#[path = "../tests/support/fleet_scale.rs"]
mod fleet_scale;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use fleet_scale::{measure, Figures, Scale};
use redis_server::RedisServer;

/// The bound on Redis commands per replica per token lifetime.
const COMMANDS_TARGET: f64 = 4.0;
/// "Not growing with the request rate": at twice the rate, at most a quarter more, plus
/// 0.5 command per replica per lifetime (an eighth of the target: the run-to-run noise of
/// the failed lock attempts, which depend on how fast a notice reaches 1,000 replicas on
/// a loaded machine).
const GROWTH_TOLERANCE: (f64, f64) = (1.25, 0.5);

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let Some(redis) = RedisServer::start("fleet_scale") else {
        return Err("redis-server is needed (apt-get install redis-server)".into());
    };
    let replicas = env("FLEET_SCALE_REPLICAS", 1000) as usize;
    let seconds = env("FLEET_SCALE_SECONDS", 20).max(1);
    let base_rate = 60_000;
    println!(
        "{replicas} replicas, 4 s tokens, {seconds} s of steady traffic at {base_rate} and {} \
         token() calls/s\n",
        2 * base_rate
    );
    println!(
        "| endpoint latency | rate | calls | failed | token requests (target) | Redis commands \
         / replica / lifetime (target {COMMANDS_TARGET}) | failed lock attempts | cold start \
         (target) | first replica served | cold-start token requests | verdicts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut all_met = true;
    for latency_ms in [0, 50, 200] {
        let mut per_rate: Vec<Figures> = Vec::new();
        for rate in [base_rate, 2 * base_rate] {
            let scale = Scale {
                replicas,
                lifetime: Duration::from_secs(4),
                latency: Duration::from_millis(latency_ms),
                duration: Duration::from_secs(seconds),
                calls_per_second: rate,
                store_timeout: docplanner_auth::cache::DEFAULT_STORE_TIMEOUT,
            };
            let f = measure(&redis.url(), scale).await?;
            let per_lifetime = f.commands_per_replica_per_lifetime();
            let checks = [
                ("failed", f.failed == 0),
                (
                    "token requests",
                    f.token_requests as f64 <= f.token_request_target(),
                ),
                ("commands", per_lifetime <= COMMANDS_TARGET),
                ("cold start", f.cold_start <= f.cold_start_target()),
                ("cold-start token requests", f.cold_token_requests == 1),
            ];
            let mut verdicts: Vec<String> = checks
                .iter()
                .map(|(what, met)| format!("{what} {}", verdict(*met)))
                .collect();
            if let Some(first) = per_rate.first() {
                let at_1x = first.commands_per_replica_per_lifetime();
                let steady = per_lifetime <= at_1x * GROWTH_TOLERANCE.0 + GROWTH_TOLERANCE.1;
                verdicts.push(format!("not growing with rate {}", verdict(steady)));
                all_met &= steady;
            }
            all_met &= checks.iter().all(|(_, met)| *met);
            println!(
                "| {latency_ms} ms | {}× | {} | {} | {} ({:.1}) | {per_lifetime:.3} | {} | {:.1} ms \
                 ({:.1} ms; RTT {:.2} ms) | {:.1} ms | {} | {} |",
                rate / base_rate,
                f.calls,
                f.failed,
                f.token_requests,
                f.token_request_target(),
                f.commands.failed_locks(),
                f.cold_start.as_secs_f64() * 1e3,
                f.cold_start_target().as_secs_f64() * 1e3,
                f.rtt.as_secs_f64() * 1e3,
                f.cold_first.as_secs_f64() * 1e3,
                f.cold_token_requests,
                verdicts.join(", ")
            );
            per_rate.push(f);
        }
        for f in &per_rate {
            let by_command: Vec<String> = f
                .commands
                .0
                .iter()
                .map(|(name, calls)| format!("{name} {calls}"))
                .collect();
            println!(
                "    {latency_ms} ms, {} calls/s: steady commands: {}; cold start: {} commands \
                 ({} failed lock attempts)",
                f.scale.calls_per_second,
                by_command.join(", "),
                f.cold_commands.total(),
                f.cold_commands.failed_locks()
            );
        }
    }
    println!(
        "\nall targets: {}",
        if all_met { "met" } else { "some MISSED" }
    );
    Ok(())
}
