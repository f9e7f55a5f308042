//! Token stores without Redis: caches in one process sharing a token through a
//! `MemoryStore`, and a store that fails or hangs, which must never fail a request.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::store::{Found, MemoryStore, SharedToken, StoreFuture, StoreKey, TokenStore};
use docplanner_auth::testing::{FakeDocplanner, FakeService};
use docplanner_auth::{AccessToken, BearerAuth, BoxError, TokenCache};
use futures_util::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

#[path = "support/notices.rs"]
mod notices;

fn caches(
    fake: &FakeDocplanner,
    store: impl TokenStore + Clone,
    n: usize,
) -> Vec<(TokenCache, BearerAuth<FakeService>)> {
    (0..n)
        .map(|_| {
            let credentials = fake.credentials().unwrap();
            let key = credentials.store_key();
            let cache = TokenCache::builder(credentials)
                .store(store.clone(), key)
                .build();
            let client = fake.layer(cache.clone()).unwrap().layer(fake.service());
            (cache, client)
        })
        .collect()
}

async fn load(
    fake: &FakeDocplanner,
    caches: &[(TokenCache, BearerAuth<FakeService>)],
    each: usize,
) -> usize {
    let url = format!("{}/facilities", fake.api_base());
    let calls: Vec<_> = caches
        .iter()
        .flat_map(|(_, client)| {
            (0..each).map({
                let url = url.clone();
                move |_| {
                    let request = Request::get(url.clone())
                        .body(Full::<Bytes>::default())
                        .unwrap();
                    tokio::spawn(client.clone().oneshot(request))
                }
            })
        })
        .collect();
    join_all(calls)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(response)) if response.status() == StatusCode::OK))
        .count()
}

#[tokio::test(start_paused = true)]
async fn caches_sharing_a_memory_store_make_one_token_request() {
    let fake = FakeDocplanner::builder().in_process();
    fake.fail_next_token_requests(
        1,
        docplanner_auth::testing::TokenFault::Delay(Duration::from_millis(50)),
    );
    let caches = caches(&fake, MemoryStore::new(), 4);
    assert_eq!(load(&fake, &caches, 1_000).await, 4_000);
    assert_eq!(fake.stats().token_requests, 1);
    let adopted: u64 = caches.iter().map(|(c, _)| c.stats().store_adoptions).sum();
    assert_eq!(adopted, 3);

    // A revocation: one refresh for all of them.
    fake.revoke_all_tokens();
    assert_eq!(load(&fake, &caches, 100).await, 400);
    assert_eq!(fake.stats().token_requests, 2);
}

/// A store that always fails, or never answers.
#[derive(Clone)]
struct Broken {
    hang: bool,
}

impl Broken {
    fn fail<'a, T: Send + 'a>(&self) -> StoreFuture<'a, T> {
        let hang = self.hang;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Err("store down".into())
        })
    }
}

impl TokenStore for Broken {
    fn load<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
        self.fail()
    }
    fn publish<'a>(&'a self, _: &'a str, _: &'a SharedToken) -> StoreFuture<'a, ()> {
        self.fail()
    }
    fn try_lock<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> StoreFuture<'a, bool> {
        self.fail()
    }
    fn unlock<'a>(&'a self, _: &'a str, _: &'a str) -> StoreFuture<'a, ()> {
        self.fail()
    }
    fn invalidate<'a>(&'a self, _: &'a str, _: &'a SharedToken) -> StoreFuture<'a, bool> {
        self.fail()
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_hanging_store_never_fails_a_request() {
    for hang in [false, true] {
        let fake = FakeDocplanner::builder().in_process();
        let caches = caches(&fake, Broken { hang }, 3);
        assert_eq!(load(&fake, &caches, 100).await, 300, "hang={hang}");
        fake.revoke_all_tokens();
        assert_eq!(load(&fake, &caches, 100).await, 300, "hang={hang}");
        // Each cache fetched on its own: once at start, once after the revocation.
        assert_eq!(fake.stats().token_requests, 6, "hang={hang}");
        for (cache, _) in &caches {
            assert_eq!(
                cache.stats().store_faults,
                1,
                "one episode, logged once (hang={hang})"
            );
        }
    }
}

#[test]
fn the_store_trait_is_object_safe() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let _ = store;
}

/// Token requests of `replicas` caches sharing `store` (or one cache alone, without a
/// store) under steady traffic for `lifetimes` lifetimes of 60 s tokens named by a
/// counter, on a paused clock: when each token request was made.
async fn refresh_moments(
    replicas: usize,
    store: Option<MemoryStore>,
    lifetimes: u32,
) -> Vec<Instant> {
    let lifetime = Duration::from_secs(60);
    let moments = Arc::new(Mutex::new(Vec::new()));
    let source = {
        let moments = Arc::clone(&moments);
        move || {
            let moments = Arc::clone(&moments);
            async move {
                let mut moments = moments.lock().unwrap();
                moments.push(Instant::now());
                Ok::<_, BoxError>(AccessToken::new(
                    format!("tok-{}", moments.len()),
                    lifetime,
                )?)
            }
        }
    };
    let caches: Vec<_> = (0..replicas)
        .map(|_| {
            let builder = TokenCache::builder(source.clone());
            match &store {
                Some(store) => builder.store(store.clone(), StoreKey::custom("schedule")),
                None => builder,
            }
            .build()
        })
        .collect();
    // Every replica asks for a token every 250 ms, the replicas evenly staggered.
    let step = Duration::from_millis(250);
    let end = Instant::now() + lifetime * lifetimes;
    while Instant::now() < end {
        for cache in &caches {
            cache.token().await.unwrap();
            tokio::time::sleep(step / replicas as u32).await;
        }
    }
    let moments = moments.lock().unwrap().clone();
    moments
}

/// The mean time between two token requests.
fn mean_interval(moments: &[Instant]) -> f64 {
    let span = *moments.last().unwrap() - moments[0];
    span.as_secs_f64() / (moments.len() - 1) as f64
}

/// Twenty replicas sharing a store refresh a 60 s token when one cache would: they agree
/// on one refresh moment per token, in the jitter span (lead 6 s, jitter 1.5 s: the
/// moment is 49.5 s to 51 s after issue, 50.25 s on average), not at the moment of the
/// replica whose own jitter is the largest (49.57 s on average for twenty: the fleet then
/// refreshes more often than any of its members). So the fleet makes no more token
/// requests than one cache does.
#[tokio::test(start_paused = true)]
async fn a_fleet_refreshes_when_one_cache_would() {
    let lifetimes = 60;
    let fleet = refresh_moments(20, Some(MemoryStore::new()), lifetimes).await;
    let alone = refresh_moments(1, None, lifetimes).await;
    let (fleet_mean, alone_mean) = (mean_interval(&fleet), mean_interval(&alone));
    println!(
        "60 s tokens, {lifetimes} lifetimes: 20 replicas made {} token requests (one every \
         {fleet_mean:.2} s), one cache {} (one every {alone_mean:.2} s)",
        fleet.len(),
        alone.len()
    );
    // 50.25 s expected, its standard error 0.06 s; the earliest replica's moment: 49.57 s
    assert!(
        fleet_mean >= 50.0,
        "the fleet refreshed every {fleet_mean:.2} s"
    );
    assert!(
        fleet.len() <= alone.len() + 1,
        "{} > {}",
        fleet.len(),
        alone.len()
    );
    assert!(fleet.len() as f64 <= 1.25 * f64::from(lifetimes) + 1.0);
}

#[tokio::test]
async fn a_memory_store_pushes_its_notices() {
    let store = MemoryStore::new();
    notices::notices_follow_the_lock_and_the_token(&store, "notices").await;
    notices::one_look_and_one_publication(&store, "one-look").await;
}

/// A `MemoryStore` that pushes no notices and counts its reads.
#[derive(Clone, Default)]
struct Silent {
    inner: MemoryStore,
    loads: Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenStore for Silent {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
        let loads = self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if loads > 100 {
            // Read in a loop (on the paused clock, a loop that never sleeps would hang the
            // test): fail, so that the cache fetches alone and the test sees the count.
            return Box::pin(async { Err("read in a loop".into()) });
        }
        self.inner.load(key)
    }
    fn publish<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, ()> {
        self.inner.publish(key, token)
    }
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        self.inner.try_lock(key, owner, ttl)
    }
    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        self.inner.unlock(key, owner)
    }
    fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool> {
        self.inner.invalidate(key, token)
    }
}

/// A store that implements only the required operations gets `load_or_lock` and
/// `publish_and_unlock` from the trait: the same answers in two operations each, without
/// how long a held lock is kept.
#[tokio::test]
async fn a_store_with_only_the_required_operations_gets_the_defaults() {
    let store = Silent::default();
    let ttl = Duration::from_secs(5);
    assert_eq!(
        store.load_or_lock("k", "a", ttl).await.unwrap(),
        Found::Locked
    );
    assert_eq!(
        store.load_or_lock("k", "b", ttl).await.unwrap(),
        Found::Held(None)
    );
    let token = AccessToken::new("d3fault-t0k3n", Duration::from_secs(60)).unwrap();
    store
        .publish_and_unlock("k", &SharedToken::from_token(&token), "a")
        .await
        .unwrap();
    match store.load_or_lock("k", "c", ttl).await.unwrap() {
        Found::Token(stored) => assert!(stored.is(&token)),
        other => panic!("the stored token was reported as {other:?}"),
    }
    assert!(store.try_lock("k", "d", ttl).await.unwrap(), "released");
    assert_eq!(store.loads.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A replica that finds the refresh lock held by a replica that died with it, on a store
/// that pushes no notices, reads the store on a doubling pause (25 ms up to 250 ms) until
/// the lock expires after 2 s, then fetches: about a dozen reads, not a loop.
#[tokio::test(start_paused = true)]
async fn a_replica_polls_a_silent_store_on_a_doubling_pause() {
    let fake = FakeDocplanner::builder().in_process();
    let credentials = fake.credentials().unwrap();
    let key = credentials.store_key();
    let store = Silent::default();
    let dead = store.try_lock(key.as_str(), "dead-replica", Duration::from_secs(2));
    assert!(dead.await.unwrap());
    let cache = TokenCache::builder(credentials)
        .store(store.clone(), key)
        .build();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), cache.token())
        .await
        .expect("the replica waited past the lock's end")
        .unwrap();
    assert_eq!(fake.stats().token_requests, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "after the lock's end"
    );
    // A first read; reads 25, 75, 175, 375, 625 … 1,875 and 2,125 ms in (11); then, the
    // lock taken, one more for a token published just before: 13.
    let loads = store.loads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(loads, 13, "{loads} reads");
}
