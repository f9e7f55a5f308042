//! A fleet of replicas sharing one token through a real `redis-server` (started by the
//! tests on a free loopback port, stopped at the end). Each replica is a `TokenCache` with
//! its own Redis connection and its own layer over the in-process fake Docplanner, whose
//! counters prove how many token requests the whole fleet made.
//!
//! Without `redis-server` on PATH each test writes a `SKIPPED <test>: …` line to the
//! terminal (past the harness's output capture, so it shows under `cargo test`) and
//! passes, unless `REQUIRE_REDIS=1` (as in CI), which makes that a failure.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::store::{RedisStore, SharedToken, StoreKey, TokenStore};
use docplanner_auth::testing::{FakeBody, FakeDocplanner, FakeService};
use docplanner_auth::{BearerAuth, BoxError, ReplayBody, TokenCache};
use futures_util::future::join_all;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;
#[path = "support/fleet_scale.rs"]
mod fleet_scale;
#[path = "support/notices.rs"]
mod notices;

/// The fake, under one replica's layer, counting the `401`s it answers that replica.
#[derive(Clone)]
struct Counted {
    fake: FakeService,
    rejected: Arc<AtomicU64>,
}

impl Service<Request<ReplayBody<Full<Bytes>>>> for Counted {
    type Response = Response<FakeBody>;
    type Error = BoxError;
    type Future = <FakeService as Service<Request<ReplayBody<Full<Bytes>>>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<Request<ReplayBody<Full<Bytes>>>>::poll_ready(&mut self.fake, cx)
    }

    fn call(&mut self, request: Request<ReplayBody<Full<Bytes>>>) -> Self::Future {
        let answer = self.fake.call(request);
        let rejected = Arc::clone(&self.rejected);
        Box::pin(async move {
            let response = answer.await?;
            if response.status() == StatusCode::UNAUTHORIZED {
                rejected.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response)
        })
    }
}

/// One replica: its own cache (own Redis connection) and its own client, and the `401`s
/// its layer received from the fake (counted under the layer, by the test, not by the
/// cache).
struct Replica {
    cache: TokenCache,
    client: BearerAuth<Counted>,
    rejected: Arc<AtomicU64>,
}

fn replicas(fake: &FakeDocplanner, url: &str, n: usize) -> Vec<Arc<Replica>> {
    (0..n)
        .map(|i| {
            let credentials = fake.credentials().unwrap();
            let key = credentials.store_key();
            let cache = TokenCache::builder(credentials)
                .name(format!("replica-{i}"))
                .store(RedisStore::open(url).unwrap(), key)
                .build();
            let rejected = Arc::new(AtomicU64::new(0));
            let inner = Counted {
                fake: fake.service(),
                rejected: Arc::clone(&rejected),
            };
            let client = fake.layer(cache.clone()).unwrap().layer(inner);
            Arc::new(Replica {
                cache,
                client,
                rejected,
            })
        })
        .collect()
}

/// `per_replica` concurrent GET /facilities on every replica; returns how many were 200.
async fn load(fake: &FakeDocplanner, replicas: &[Arc<Replica>], per_replica: usize) -> usize {
    let url = format!("{}/facilities", fake.api_base());
    let calls = replicas.iter().flat_map(|replica| {
        (0..per_replica).map({
            let url = url.clone();
            move |_| {
                let replica = Arc::clone(replica);
                let request = Request::get(url.clone())
                    .body(Full::<Bytes>::default())
                    .unwrap();
                tokio::spawn(async move {
                    replica
                        .client
                        .clone()
                        .oneshot(request)
                        .await
                        .map(|r| r.status())
                })
            }
        })
    });
    let results = join_all(calls.collect::<Vec<_>>()).await;
    results
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(StatusCode::OK))))
        .count()
}

/// Steady load (5 requests per replica every 100 ms, all answered 200) until every replica
/// has moved off `first`; returns the number of rounds.
async fn load_until_rolled_over(
    fake: &FakeDocplanner,
    fleet: &[Arc<Replica>],
    first: &docplanner_auth::AccessToken,
) -> u64 {
    let mut rounds = 0;
    while fleet
        .iter()
        .any(|r| r.cache.cached().unwrap().same_secret(first))
    {
        assert!(rounds < 100, "the fleet never rolled over");
        assert_eq!(load(fake, fleet, 5).await, fleet.len() * 5);
        tokio::time::sleep(Duration::from_millis(100)).await;
        rounds += 1;
    }
    rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_replicas_cold_start_make_one_token_request() {
    let Some(redis) = RedisServer::start("eight_replicas_cold_start_make_one_token_request") else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let fleet = replicas(&fake, &redis.url(), 8);
    assert_eq!(load(&fake, &fleet, 500).await, 8 * 500);
    assert_eq!(
        fake.stats().token_requests,
        1,
        "one token request fleet-wide"
    );
    let adopted: u64 = fleet.iter().map(|r| r.cache.stats().store_adoptions).sum();
    assert_eq!(adopted, 7, "the seven others adopted it");
    println!("case cold start: replicas=8 requests=4000 ok=4000 token_requests=1 adopted=7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollover_under_load_makes_one_token_request() {
    let Some(redis) = RedisServer::start("a_rollover_under_load_makes_one_token_request") else {
        return;
    };
    // 10 s tokens: stale 6.75–7 s after issue (lead 2 s, margin 1 s, jitter ≤ 0.25 s), so
    // the first rollover is over long before the second could start (≥ 6.75 s later).
    let fake = FakeDocplanner::builder()
        .token_lifetime(Duration::from_secs(10))
        .in_process();
    let fleet = replicas(&fake, &redis.url(), 8);
    assert_eq!(load(&fake, &fleet, 20).await, 160);
    assert_eq!(fake.stats().token_requests, 1);
    let first = fleet[0].cache.cached().unwrap();
    // Steady load until every replica moved on to the new token.
    let rounds = load_until_rolled_over(&fake, &fleet, &first).await;
    let stats = fake.stats();
    assert_eq!(stats.token_requests, 2, "one refresh for the fleet");
    assert_eq!(stats.api_expired_token, 0);
    assert_eq!(stats.api_ok, 160 + rounds * 40);
    println!(
        "case rollover: replicas=8 requests={} ok={} token_requests={}",
        160 + rounds * 40,
        stats.api_ok,
        stats.token_requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_seen_by_one_replica_makes_one_refresh() {
    let Some(redis) = RedisServer::start("a_revocation_seen_by_one_replica_makes_one_refresh")
    else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let fleet = replicas(&fake, &redis.url(), 8);
    assert_eq!(load(&fake, &fleet, 10).await, 80);
    fake.revoke_all_tokens();
    // One replica meets the revocation first…
    assert_eq!(load(&fake, &fleet[..1], 1).await, 1);
    // …then all of them, each with the revoked token in its local cache.
    assert_eq!(load(&fake, &fleet, 50).await, 400);
    let stats = fake.stats();
    assert_eq!(stats.token_requests, 2, "one refresh for the fleet");
    // Every replica met the revocation (at least one 401 each, seen under its layer), and
    // the fake's count of revoked-token 401s is exactly the sum of them.
    let rejected: Vec<u64> = fleet
        .iter()
        .map(|r| r.rejected.load(Ordering::Relaxed))
        .collect();
    assert!(
        rejected.iter().all(|&n| n >= 1),
        "every replica met the revocation: {rejected:?}"
    );
    assert_eq!(rejected.iter().sum::<u64>(), stats.api_revoked_token);
    // And no replica was cut off: every request answered 200 (the loads above), with the
    // one new token (the fake issued two in all).
    assert_eq!(stats.tokens_issued, 2);
    println!(
        "case revocation: replicas=8 requests=481 ok={} token_requests={} revoked_401s={}",
        stats.api_ok, stats.token_requests, stats.api_revoked_token
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_fails_no_request() {
    let Some(mut redis) = RedisServer::start("redis_killed_mid_run_fails_no_request") else {
        return;
    };
    let fake = FakeDocplanner::builder()
        .token_lifetime(Duration::from_secs(10))
        .in_process();
    let fleet = replicas(&fake, &redis.url(), 8);
    assert_eq!(load(&fake, &fleet, 20).await, 160);
    let first = fleet[0].cache.cached().unwrap();
    redis.kill();
    // Across a rollover with Redis gone: every replica refreshes on its own.
    let rounds = load_until_rolled_over(&fake, &fleet, &first).await;
    let stats = fake.stats();
    assert!(
        stats.token_requests <= 1 + 8,
        "at most one per replica: {}",
        stats.token_requests
    );
    assert_eq!(stats.api_ok, 160 + rounds * 40);
    for replica in &fleet {
        assert_eq!(
            replica.cache.stats().store_faults,
            1,
            "logged once per episode"
        );
    }
    println!("case redis killed: replicas=8 requests={} ok={} token_requests={} fault_episodes_per_replica=1", 160 + rounds * 40, stats.api_ok, stats.token_requests);
}

/// Make Redis answer nothing for `seconds` (`DEBUG SLEEP`), from a connection of its own;
/// the task ends when Redis wakes up.
fn redis_sleeps(redis: &RedisServer, seconds: &'static str) -> tokio::task::JoinHandle<()> {
    let url = redis.url();
    tokio::spawn(async move {
        let client = redis::Client::open(url).unwrap();
        // redis 1.x gives multiplexed connections a 500 ms response timeout by default.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap();
        let _: redis::Value = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(seconds)
            .query_async(&mut connection)
            .await
            .unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_slow_or_flushed_fails_no_request() {
    // Down at start: nothing listens on the port.
    let unused = {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let fake = FakeDocplanner::builder().in_process();
    let fleet = replicas(&fake, &format!("redis://127.0.0.1:{unused}/"), 3);
    assert_eq!(load(&fake, &fleet, 50).await, 150);
    assert_eq!(
        fake.stats().token_requests,
        3,
        "without the store, each replica fetched alone, once"
    );
    println!(
        "case redis down at start: replicas=3 requests=150 ok=150 token_requests={}",
        fake.stats().token_requests
    );

    let Some(redis) = RedisServer::start("redis_down_at_start_slow_or_flushed_fails_no_request")
    else {
        return;
    };
    // Slow: Redis sleeps 2 s, longer than the store timeout (500 ms).
    let fake = FakeDocplanner::builder().in_process();
    let fleet = replicas(&fake, &redis.url(), 3);
    let sleeper = redis_sleeps(&redis, "2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(load(&fake, &fleet, 50).await, 150);
    assert_eq!(
        fake.stats().token_requests,
        3,
        "without the store, each replica fetched alone, once"
    );
    println!(
        "case redis slow: replicas=3 requests=150 ok=150 token_requests={}",
        fake.stats().token_requests
    );
    sleeper.await.unwrap();

    // Flushed: the next refresh finds nothing, takes the lock and fetches once.
    let fake = FakeDocplanner::builder().in_process();
    let fleet = replicas(&fake, &redis.url(), 3);
    assert_eq!(load(&fake, &fleet, 10).await, 30);
    redis.command(&["FLUSHALL"]).await;
    fake.revoke_all_tokens();
    assert_eq!(load(&fake, &fleet, 10).await, 30);
    assert_eq!(fake.stats().token_requests, 2);
    println!(
        "case redis flushed, then a revocation: replicas=3 requests=60 ok=60 token_requests=2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lock_holder_is_outlived_by_the_lock_ttl() {
    let Some(redis) = RedisServer::start("a_dead_lock_holder_is_outlived_by_the_lock_ttl") else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    // A replica took the lock for 1.5 s and died without releasing it.
    let lock = format!("{}:lock", key.as_str());
    redis
        .command(&["SET", &lock, "dead-replica", "NX", "PX", "1500"])
        .await;
    let fleet = replicas(&fake, &redis.url(), 4);
    assert_eq!(load(&fake, &fleet, 25).await, 100);
    assert_eq!(
        fake.stats().token_requests,
        1,
        "one replica refreshed once the lock expired"
    );
    let adopted: u64 = fleet.iter().map(|r| r.cache.stats().store_adoptions).sum();
    assert_eq!(adopted, 3);
    println!("case dead lock holder (1.5 s lock): replicas=4 requests=100 ok=100 token_requests=1 adopted=3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_without_expiry_is_taken_over_and_the_token_published() {
    let Some(redis) =
        RedisServer::start("a_lock_without_expiry_is_taken_over_and_the_token_published")
    else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    // An operator's SET (or a restored dump): a lock key that never expires.
    let lock = format!("{}:lock", key.as_str());
    redis.command(&["SET", &lock, "operator"]).await;
    let fleet = replicas(&fake, &redis.url(), 4);
    // Before the fix each replica waited 20 s (twice the token request timeout) and then
    // fetched alone without publishing: 4 token requests, no adoption, no stored token.
    let served = tokio::time::timeout(Duration::from_secs(10), load(&fake, &fleet, 25))
        .await
        .expect("the replicas waited on a lock nobody will release");
    assert_eq!(served, 100);
    assert_eq!(
        fake.stats().token_requests,
        1,
        "one replica took the lock over"
    );
    let adopted: u64 = fleet.iter().map(|r| r.cache.stats().store_adoptions).sum();
    assert_eq!(adopted, 3, "the token was published and adopted");
    assert_ne!(
        redis.command(&["GET", key.as_str()]).await,
        redis::Value::Nil,
        "the token is in the store"
    );
    assert_eq!(
        redis.command(&["EXISTS", &lock]).await,
        redis::Value::Int(0),
        "and the lock was released"
    );
    println!("case lock without expiry: replicas=4 requests=100 ok=100 token_requests=1 adopted=3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_the_applications_own_connections_share_one_token() {
    let Some(redis) =
        RedisServer::start("replicas_on_the_applications_own_connections_share_one_token")
    else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let mut fleet = Vec::new();
    for i in 0..4 {
        // The application's own connection (a multiplexed one here; a connection manager,
        // a cluster or a sentinel connection go the same way), under its own key prefix.
        let client = redis::Client::open(redis.url()).unwrap();
        let connection = client.get_multiplexed_async_connection().await.unwrap();
        let store = RedisStore::with_connection(connection).prefix("app-a:");
        let credentials = fake.credentials().unwrap();
        let key = credentials.store_key();
        let cache = TokenCache::builder(credentials)
            .name(format!("replica-{i}"))
            .store(store, key)
            .build();
        let rejected = Arc::new(AtomicU64::new(0));
        let inner = Counted {
            fake: fake.service(),
            rejected: Arc::clone(&rejected),
        };
        let client = fake.layer(cache.clone()).unwrap().layer(inner);
        fleet.push(Arc::new(Replica {
            cache,
            client,
            rejected,
        }));
    }
    assert_eq!(load(&fake, &fleet, 25).await, 100);
    assert_eq!(
        fake.stats().token_requests,
        1,
        "one token request fleet-wide"
    );
    let adopted: u64 = fleet.iter().map(|r| r.cache.stats().store_adoptions).sum();
    assert_eq!(adopted, 3);
    let key = format!("app-a:{}", fake.credentials().unwrap().store_key().as_str());
    assert_ne!(redis.command(&["GET", &key]).await, redis::Value::Nil);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_client_ids_never_see_each_others_tokens() {
    let Some(redis) = RedisServer::start("two_client_ids_never_see_each_others_tokens") else {
        return;
    };
    let a = FakeDocplanner::builder().client_id("clinic-a").in_process();
    let b = FakeDocplanner::builder().client_id("clinic-b").in_process();
    assert_ne!(
        a.credentials().unwrap().store_key(),
        b.credentials().unwrap().store_key()
    );
    let fleet_a = replicas(&a, &redis.url(), 2);
    let fleet_b = replicas(&b, &redis.url(), 2);
    assert_eq!(load(&a, &fleet_a, 20).await, 40);
    assert_eq!(load(&b, &fleet_b, 20).await, 40);
    assert_eq!((a.stats().token_requests, b.stats().token_requests), (1, 1));
    assert_eq!(a.stats().api_unknown_token + b.stats().api_unknown_token, 0);
    let (ta, tb) = (
        fleet_a[0].cache.cached().unwrap(),
        fleet_b[0].cache.cached().unwrap(),
    );
    assert!(!ta.same_secret(&tb));
    // And the store holds no secret: exactly the two tokens, under the two hashed keys
    // (no lock left behind, nothing else).
    let keys = redis.command(&["KEYS", "*"]).await;
    let text = format!("{keys:?}");
    assert!(
        !text.contains("clinic-") && !text.contains("fake-client-secret"),
        "{text}"
    );
    let redis::Value::Array(keys) = keys else {
        panic!("KEYS answered {text}");
    };
    let mut keys: Vec<String> = keys
        .iter()
        .map(|key| match key {
            redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).unwrap(),
            other => panic!("a key {other:?}"),
        })
        .collect();
    keys.sort();
    let mut expected = vec![
        a.credentials().unwrap().store_key().as_str().to_owned(),
        b.credentials().unwrap().store_key().as_str().to_owned(),
    ];
    expected.sort();
    assert_eq!(keys, expected, "the two tokens, nothing else");
    let _ = StoreKey::custom("unused");
}

/// A `RedisStore` announces the lock, the token (in the message) and the release on its
/// notice channel, and hears them on its own pub/sub connection; one on the
/// application's connection does not listen (its waiting replicas poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_pushes_its_notices() {
    let Some(redis) = RedisServer::start("a_redis_store_pushes_its_notices") else {
        return;
    };
    let store = RedisStore::open(&redis.url()).unwrap();
    notices::notices_follow_the_lock_and_the_token(&store, "notices").await;
    notices::one_look_and_one_publication(&store, "one-look").await;
    let client = redis::Client::open(redis.url()).unwrap();
    let own = RedisStore::with_connection(client.get_multiplexed_async_connection().await.unwrap());
    assert!(own.watch("notices").await.unwrap().is_none());
}

/// A Redis slower than the default 500 ms is still shared when the store's timeout
/// (`RedisStore::timeout`) and the cache's store timeout are raised: while Redis sleeps
/// 1.5 s, replicas with 3 s timeouts (one already connected, one cold) adopt the token
/// another replica stored, and a replica with the defaults gives up on Redis and fetches
/// its own (the fake counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_is_shared_by_a_store_with_a_raised_timeout() {
    let Some(redis) = RedisServer::start("a_slow_redis_is_shared_by_a_store_with_a_raised_timeout")
    else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    let store = |timeout: Option<Duration>| {
        let store = RedisStore::open(&redis.url()).unwrap();
        match timeout {
            Some(timeout) => store.timeout(timeout).unwrap(),
            None => store,
        }
    };
    let cache = |store: RedisStore, timeout: Option<Duration>| {
        let mut builder = TokenCache::builder(fake.credentials().unwrap());
        if let Some(timeout) = timeout {
            builder = builder.store_timeout(timeout);
        }
        builder.store(store, key.clone()).build()
    };
    let patience = Duration::from_secs(20);
    let first = tokio::time::timeout(patience, cache(store(None), None).token())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.stats().token_requests, 1);
    let raised = Some(Duration::from_secs(3));
    // Connected before Redis turns slow: only its answers are late.
    let connected = store(raised);
    tokio::time::timeout(patience, async {
        connected.load(key.as_str()).await.unwrap();
        connected.watch(key.as_str()).await.unwrap();
    })
    .await
    .unwrap();

    let sleeper = redis_sleeps(&redis, "1.5");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let connected = cache(connected, raised);
    let cold = cache(store(raised), raised);
    let hasty = cache(store(None), None);
    let (connected, cold, hasty) = tokio::time::timeout(patience, async {
        tokio::join!(connected.token(), cold.token(), hasty.token())
    })
    .await
    .unwrap();
    assert!(connected.unwrap().same_secret(&first), "the stored token");
    assert!(cold.unwrap().same_secret(&first), "the stored token");
    assert!(!hasty.unwrap().same_secret(&first), "fetched alone");
    assert_eq!(
        fake.stats().token_requests,
        2,
        "only the replica with the default timeouts fetched"
    );
    let zero = RedisStore::open(&redis.url())
        .unwrap()
        .timeout(Duration::ZERO);
    assert!(zero.is_err_and(|e| e.is_config()));
    tokio::time::timeout(patience, sleeper)
        .await
        .unwrap()
        .unwrap();
    // No overflow with the longest timeout there is.
    let endless = store(Some(Duration::MAX));
    let loaded = tokio::time::timeout(patience, endless.load(key.as_str())).await;
    assert!(loaded.unwrap().unwrap().unwrap().is(&first));
    let watched = tokio::time::timeout(patience, endless.watch(key.as_str())).await;
    assert!(watched.unwrap().unwrap().is_some());
}

/// An admin connection to `redis`, its stats reset, with the store's scripts loaded
/// already (so that no `NOSCRIPT` retry shows in the counts): a cycle on other keys.
async fn counting(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let warm = RedisStore::open(&redis.url()).unwrap().prefix("warm-up:");
    let token = docplanner_auth::AccessToken::new("w4rm", Duration::from_secs(60)).unwrap();
    assert_eq!(
        warm.load_or_lock("k", "w", Duration::from_secs(1))
            .await
            .unwrap(),
        docplanner_auth::store::Found::Locked
    );
    warm.publish_and_unlock("k", &SharedToken::from_token(&token), "w")
        .await
        .unwrap();
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    fleet_scale::reset_stats(&mut admin).await;
    admin
}

/// Redis's own count of what one replica sent, by command (`INFO commandstats`, the
/// commands its scripts ran included), since the last reset.
async fn counted(
    admin: &mut redis::aio::MultiplexedConnection,
) -> std::collections::BTreeMap<String, u64> {
    let counted = fleet_scale::commandstats(admin).await.0;
    fleet_scale::reset_stats(admin).await;
    counted
}

fn commands(list: &[(&str, u64)]) -> std::collections::BTreeMap<String, u64> {
    list.iter()
        .map(|(name, n)| ((*name).to_owned(), *n))
        .collect()
}

/// A cold replica looks at the store once (one script: the token, or else the lock),
/// fetches, and publishes the token and releases the lock in one more script: two round
/// trips in all (before: a `GET`, the lock script, a second `GET`, the publish script and
/// the unlock script). The next replica adopts the token in one round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_replica_looks_once_and_publishes_with_the_release() {
    let Some(redis) =
        RedisServer::start("a_cold_replica_looks_once_and_publishes_with_the_release")
    else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let fleet = replicas(&fake, &redis.url(), 2);
    let mut admin = counting(&redis).await;
    let first = fleet[0].cache.token().await.unwrap();
    assert_eq!(fake.stats().token_requests, 1);
    // The look: EVALSHA running GET, SET NX and PUBLISH (locked); the publication:
    // EVALSHA running SET, GET and DEL (the lock, ours) and PUBLISH (the token).
    assert_eq!(
        counted(&mut admin).await,
        commands(&[
            ("del", 1),
            ("evalsha", 2),
            ("get", 2),
            ("publish", 2),
            ("set", 2),
            ("subscribe", 1),
        ])
    );
    let second = fleet[1].cache.token().await.unwrap();
    assert!(second.same_secret(&first));
    assert_eq!(fake.stats().token_requests, 1);
    assert_eq!(
        counted(&mut admin).await,
        commands(&[("evalsha", 1), ("get", 1), ("subscribe", 1)])
    );
    println!("case one look: token_requests=1, the first replica 2 scripts, the second 1");
}

/// A replica whose look finds the lock held (by a slow replica, taken before this one
/// listened, so it heard no notice of it) is told for how long, and waits for the token
/// without trying the lock again: one failed attempt in all (Redis's `PTTL` count), no
/// token request, the holder's token adopted from its notice. Before, it tried the lock
/// again every 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_told_of_a_held_lock_waits_without_trying_it_again() {
    let Some(redis) =
        RedisServer::start("a_replica_told_of_a_held_lock_waits_without_trying_it_again")
    else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    let lock = format!("{}:lock", key.as_str());
    redis
        .command(&["SET", &lock, "slow-replica", "NX", "PX", "4000"])
        .await;
    let fleet = replicas(&fake, &redis.url(), 1);
    let mut admin = counting(&redis).await;
    let cache = fleet[0].cache.clone();
    let waiting = tokio::spawn(async move { cache.token().await });
    // Long enough for four polls of the old behaviour (every 250 ms).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!waiting.is_finished(), "it waits for the holder");
    let holder = RedisStore::open(&redis.url()).unwrap();
    let token = docplanner_auth::AccessToken::new("sl0w-h0lder", Duration::from_secs(60)).unwrap();
    holder
        .publish_and_unlock(
            key.as_str(),
            &SharedToken::from_token(&token),
            "slow-replica",
        )
        .await
        .unwrap();
    let adopted = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting replica did not adopt the published token")
        .unwrap()
        .unwrap();
    assert!(adopted.same_secret(&token));
    assert_eq!(fake.stats().token_requests, 0);
    let seen = counted(&mut admin).await;
    // The look (GET, SET NX, PTTL) and the holder's publication (SET, GET, DEL, PUBLISH).
    assert_eq!(
        seen,
        commands(&[
            ("del", 1),
            ("evalsha", 2),
            ("get", 2),
            ("pttl", 1),
            ("publish", 1),
            ("set", 2),
            ("subscribe", 1),
        ]),
        "one failed lock attempt"
    );
    assert_eq!(
        redis.command(&["EXISTS", &lock]).await,
        redis::Value::Int(0),
        "the holder released the lock with its token"
    );
    println!("case held lock: token_requests=0, failed lock attempts=1");
}

/// A value under the token's key that this version cannot read (another program's, or a
/// future format) is never sent as a token: the first look cannot use it, so it takes the
/// lock on its own, fetches once and publishes over it; the next replica adopts that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_of_another_format_under_the_key_is_replaced_not_sent() {
    let Some(redis) =
        RedisServer::start("a_value_of_another_format_under_the_key_is_replaced_not_sent")
    else {
        return;
    };
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    redis
        .command(&["SET", key.as_str(), "v9 not-a-token-this-version-reads"])
        .await;
    let fleet = replicas(&fake, &redis.url(), 2);
    assert_eq!(load(&fake, &fleet[..1], 5).await, 5);
    assert_eq!(load(&fake, &fleet[1..], 5).await, 5);
    let stats = fake.stats();
    assert_eq!(stats.token_requests, 1, "one fetch, then adopted");
    assert_eq!(
        stats.api_unknown_token, 0,
        "the foreign value was never sent"
    );
    match redis.command(&["GET", key.as_str()]).await {
        redis::Value::BulkString(stored) => assert!(stored.starts_with(b"v1 ")),
        other => panic!("the published token is not stored: {other:?}"),
    }
    let adopted: u64 = fleet.iter().map(|r| r.cache.stats().store_adoptions).sum();
    assert_eq!(adopted, 1);

    // Bytes that are not UTF-8 count as no token too: not a store fault.
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg(key.as_str())
        .arg(&b"v1 1 2 \xff\xfe"[..])
        .query_async(&mut admin)
        .await
        .unwrap();
    let fleet = replicas(&fake, &redis.url(), 2);
    assert_eq!(load(&fake, &fleet[..1], 5).await, 5);
    assert_eq!(load(&fake, &fleet[1..], 5).await, 5);
    assert_eq!(fake.stats().token_requests, 1, "one fetch, then adopted");
    let faults: u64 = fleet.iter().map(|r| r.cache.stats().store_faults).sum();
    assert_eq!(faults, 0, "a value that is not UTF-8 is not a fault");
}

/// A store on the application's own connection may be on a Redis Cluster, where a script
/// may only touch keys of one slot: the token's key and its lock's are in different
/// slots, so such a store looks and publishes in operations of one key each (a one-node
/// cluster refuses a script on both keys with `CROSSSLOT`); a store made from a URL
/// (through a proxy in front of a cluster, say) switches to that on the first refusal.
/// Two replicas each: one token request, no store fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_cluster_connection_share_one_token() {
    let Some(redis) =
        RedisServer::start_cluster("replicas_on_a_cluster_connection_share_one_token").await
    else {
        return;
    };
    let client = redis::Client::open(redis.url()).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    // On the application's connection; and made from the URL, as through a proxy in front
    // of a cluster: the first two-key script is refused, and the store goes on with one
    // key per script.
    let stores = [
        RedisStore::with_connection(connection),
        RedisStore::open(&redis.url()).unwrap().prefix("via-url:"),
    ];
    for store in stores {
        let fake = FakeDocplanner::builder().in_process();
        let fleet: Vec<TokenCache> = (0..2)
            .map(|i| {
                let credentials = fake.credentials().unwrap();
                let key = credentials.store_key();
                TokenCache::builder(credentials)
                    .name(format!("replica-{i}"))
                    .store(store.clone(), key)
                    .build()
            })
            .collect();
        let first = fleet[0].token().await.unwrap();
        let second = fleet[1].token().await.unwrap();
        assert!(second.same_secret(&first), "adopted from the store");
        assert_eq!(fake.stats().token_requests, 1);
        let faults: u64 = fleet.iter().map(|c| c.stats().store_faults).sum();
        assert_eq!(faults, 0, "no script was refused for good");
        assert_eq!(
            redis.command(&["KEYS", "*:lock"]).await,
            redis::Value::Array(vec![]),
            "the lock was released"
        );
    }
}

/// Keys no replica of this fleet wrote do not stop the sharing: a lock with an expiry far
/// longer than the lock's TTL (no replica with these settings took it) is taken over like
/// one without expiry, and a token key of another type (a hash: `WRONGTYPE` to `GET`)
/// counts as no token and is overwritten. Each: 4 replicas, one token request, three
/// adoptions, no store fault, the lock released (before: 20 s of waiting and 4 lone
/// fetches on every refresh, and a store fault on every look, for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_lock_or_a_token_key_of_another_type_does_not_stop_sharing() {
    let Some(redis) =
        RedisServer::start("a_ghost_lock_or_a_token_key_of_another_type_does_not_stop_sharing")
    else {
        return;
    };
    for case in ["ghost lock", "hash token key"] {
        redis.command(&["FLUSHALL"]).await;
        let fake = FakeDocplanner::builder().in_process();
        let key = fake.credentials().unwrap().store_key();
        let lock = format!("{}:lock", key.as_str());
        match case {
            "ghost lock" => {
                redis
                    .command(&["SET", &lock, "ghost", "PX", "3600000"])
                    .await
            }
            _ => redis.command(&["HSET", key.as_str(), "f", "v"]).await,
        };
        let fleet = replicas(&fake, &redis.url(), 4);
        let served = tokio::time::timeout(Duration::from_secs(10), load(&fake, &fleet, 5))
            .await
            .unwrap_or_else(|_| panic!("{case}: the replicas waited on a lock nobody releases"));
        assert_eq!(served, 20, "{case}");
        assert_eq!(fake.stats().token_requests, 1, "{case}");
        let adopted: u64 = fleet.iter().map(|r| r.cache.stats().store_adoptions).sum();
        assert_eq!(adopted, 3, "{case}");
        let faults: u64 = fleet.iter().map(|r| r.cache.stats().store_faults).sum();
        assert_eq!(faults, 0, "{case}");
        assert_eq!(
            redis.command(&["EXISTS", &lock]).await,
            redis::Value::Int(0),
            "{case}: the lock was released"
        );
    }
}
