//! Token stores without Redis: caches in one process sharing a token through a
//! `MemoryStore`, a store that fails or hangs, which must never fail a request, and the
//! fleet's protocol on a paused clock through small test stores over a `MemoryStore`: how
//! a replica waits for another one's refresh (polling, notices, a dead holder's lock) and
//! drops a rejected token from the store.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::cache::TokenState;
use docplanner_auth::store::{
    Found, Heard, MemoryStore, SharedToken, StoreFuture, StoreKey, TokenStore,
};
use docplanner_auth::testing::{FakeDocplanner, FakeService, TokenFault};
use docplanner_auth::{AccessToken, BearerAuth, BoxError, TokenCache};
use futures_util::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

#[path = "support/notices.rs"]
mod notices;
mod support;

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

/// A `MemoryStore` seen through a store that records when it is read and pushes either no
/// notices at all, or (`tokens_heard`) only the tokens published, never the refresh lock
/// (as if its lock notices were lost); with `raced_by`, another replica publishes that
/// token (and releases its lock) just before each lock attempt.
#[derive(Clone, Default)]
struct Probe {
    inner: MemoryStore,
    reads: Arc<Mutex<Vec<Instant>>>,
    tokens_heard: bool,
    raced_by: Option<SharedToken>,
}

impl Probe {
    /// A view of `inner` that pushes no notices.
    fn silent(inner: MemoryStore) -> Self {
        Self {
            inner,
            ..Self::default()
        }
    }

    fn reads(&self) -> Vec<Instant> {
        self.reads.lock().unwrap().clone()
    }
}

impl TokenStore for Probe {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
        let mut reads = self.reads.lock().unwrap();
        reads.push(Instant::now());
        if reads.len() > 100 {
            // Read in a loop (on the paused clock, a loop that never sleeps would hang the
            // test): fail, so that the cache fetches alone and the test sees it.
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
        Box::pin(async move {
            if let Some(raced_by) = &self.raced_by {
                self.inner.publish(key, raced_by).await?;
            }
            self.inner.try_lock(key, owner, ttl).await
        })
    }
    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        self.inner.unlock(key, owner)
    }
    fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool> {
        self.inner.invalidate(key, token)
    }
    fn watch<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<watch::Receiver<Heard>>> {
        Box::pin(async move {
            if !self.tokens_heard {
                return Ok(None);
            }
            let Some(mut inner) = self.inner.watch(key).await? else {
                return Ok(None);
            };
            let mut heard = Heard::default();
            heard.token = inner.borrow().token.clone();
            let (sender, receiver) = watch::channel(heard);
            // Forward each token published, and nothing about the lock.
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = inner.changed() => if changed.is_err() { break },
                        () = sender.closed() => break,
                    }
                    let token = inner.borrow_and_update().token.clone();
                    sender.send_if_modified(|heard| {
                        let new = heard.token != token;
                        heard.token = token;
                        new
                    });
                }
            });
            Ok(Some(receiver))
        })
    }
}

/// A store that implements only the required operations gets `load_or_lock` and
/// `publish_and_unlock` from the trait: the same answers in two operations each, without
/// how long a held lock is kept.
#[tokio::test]
async fn a_store_with_only_the_required_operations_gets_the_defaults() {
    let store = Probe::default();
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
    // The first look: a read, the lock, a read again; the second: a read and the lock
    // held; the third: a read.
    assert_eq!(store.reads().len(), 4);
}

/// A replica that finds the refresh lock held by a replica that died with it, on a store
/// that pushes no notices, reads the store on a doubling pause (25 ms up to 250 ms) until
/// the lock expires after 2 s, then fetches: about a dozen reads, not a loop.
#[tokio::test(start_paused = true)]
async fn a_replica_polls_a_silent_store_on_a_doubling_pause() {
    let fake = FakeDocplanner::builder().in_process();
    let credentials = fake.credentials().unwrap();
    let key = credentials.store_key();
    let store = Probe::default();
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
    let loads = store.reads().len();
    assert_eq!(loads, 13, "{loads} reads");
}

/// A replica's token is revoked while the token endpoint is down: the 401 comes back (its
/// refresh failed), and the store must no longer hold the revoked token (a 401 deletes it,
/// compare-and-delete, before the refresh). Then, the endpoint back, a new replica that
/// sees the store through `view` serves one request. Returns the fake's counts of requests
/// sent with a revoked token and of token requests.
async fn a_new_replica_after_a_failed_refresh<S: TokenStore + Clone>(
    view: impl FnOnce(MemoryStore) -> S,
) -> (u64, u64) {
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    let store = MemoryStore::new();
    let first = caches(&fake, store.clone(), 1);
    assert_eq!(load(&fake, &first, 1).await, 1);
    assert!(
        store.load(key.as_str()).await.unwrap().is_some(),
        "published"
    );

    fake.revoke_all_tokens();
    fake.fail_all_token_requests(TokenFault::Status {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: None,
    });
    assert_eq!(load(&fake, &first, 1).await, 0, "the 401 comes back");
    assert_eq!(fake.stats().token_requests, 2, "one failed refresh");
    assert_eq!(fake.stats().api_revoked_token, 1);
    assert!(
        store.load(key.as_str()).await.unwrap().is_none(),
        "the rejected token is still stored"
    );

    fake.clear_token_faults();
    let second = caches(&fake, view(store), 1);
    assert_eq!(load(&fake, &second, 1).await, 1);
    let stats = fake.stats();
    (stats.api_revoked_token, stats.token_requests)
}

/// A new replica (another process: it has heard nothing) finds no token to adopt after a
/// revocation whose refresh failed: it fetches its own and never sends the revoked one.
#[tokio::test(start_paused = true)]
async fn a_rejected_token_leaves_the_store_even_when_its_refresh_fails() {
    let (revoked_sent, token_requests) = a_new_replica_after_a_failed_refresh(Probe::silent).await;
    assert_eq!(revoked_sent, 1, "the new replica sent the revoked token");
    assert_eq!(token_requests, 3, "the new replica fetched its own");
}

/// The same with a new cache in the same process, which shares the store's notices: the
/// last token they carried is the revoked one, which the store dropped and told its
/// watchers to forget (before, the new cache adopted it from the notices and sent it).
#[tokio::test(start_paused = true)]
async fn a_rejected_token_is_not_adopted_from_the_notices_of_its_process() {
    let (revoked_sent, token_requests) = a_new_replica_after_a_failed_refresh(|s| s).await;
    assert_eq!(revoked_sent, 1, "the new cache sent the revoked token");
    assert_eq!(token_requests, 3, "the new cache fetched its own");
}

/// A replica that fails to take the lock without hearing who holds it, on a store that
/// pushes notices, waits up to 250 ms for a notice before it reads the store again: while
/// another replica holds the lock for 1.1 s and then publishes, it reads the store four
/// times (250, 500, 750 and 1,000 ms in), adopts the token from the notice and fetches
/// nothing.
#[tokio::test(start_paused = true)]
async fn a_replica_that_hears_no_lock_reads_the_store_every_250_ms_while_it_waits() {
    let store = Probe {
        tokens_heard: true,
        ..Probe::default()
    };
    let key = StoreKey::custom("lock-unheard");
    let holder = store.try_lock(key.as_str(), "holder", Duration::from_secs(10));
    assert!(holder.await.unwrap());
    let (source, fetched) = counted_source();
    let cache = TokenCache::builder(source)
        .store(store.clone(), key.clone())
        .build();
    let started = Instant::now();
    tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let token = AccessToken::new("the-holders", Duration::from_secs(3600)).unwrap();
            let shared = SharedToken::from_token(&token);
            store.publish(key.as_str(), &shared).await.unwrap();
            store.unlock(key.as_str(), "holder").await.unwrap();
        }
    });
    let token = support::within("the holder's token", cache.token())
        .await
        .unwrap();
    assert_eq!(fetched.load(Ordering::SeqCst), 0, "fetched alone");
    assert_eq!(token.secret(), "the-holders");
    let waiting: Vec<u128> = store
        .reads()
        .iter()
        .filter(|at| **at > started)
        .map(|at| (*at - started).as_millis())
        .collect();
    assert_eq!(waiting, [250, 500, 750, 1_000], "reads while waiting (ms)");
}

/// A source of tokens `fetched-1`, `fetched-2`, … (an hour each) and its count of calls.
fn counted_source() -> (
    impl Fn() -> std::future::Ready<Result<AccessToken, BoxError>> + Clone + Send + Sync + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(
            AccessToken::new(format!("fetched-{n}"), Duration::from_secs(3600))
                .map_err(BoxError::from),
        )
    };
    (source, calls)
}

/// A fleet cache's refresh deadline counts the wait for another replica's lock: a refresh
/// that waits 20 s (its lock TTL, twice the 10 s request timeout) for a replica that died
/// holding the lock, then fetches alone, is not presumed stuck meanwhile (it would be
/// after 15 s, the request timeout and its grace, without the wait), so the stale callers
/// of that minute start no other refresh: one token request, and its token is kept.
#[tokio::test(start_paused = true)]
async fn a_refresh_waiting_for_a_dead_replicas_lock_is_not_presumed_stuck() {
    let store = MemoryStore::new();
    let key = StoreKey::custom("dead-holder");
    let (source, fetched) = counted_source();
    let cache = TokenCache::builder(source)
        .token_request_timeout(Duration::from_secs(10))
        .store(store.clone(), key.clone())
        .build();
    cache.token().await.unwrap();
    // A replica takes the lock and dies with it: the lock outlives every wait.
    let dead = store.try_lock(key.as_str(), "dead-replica", Duration::from_secs(24 * 3600));
    assert!(dead.await.unwrap());
    while cache.status().state == TokenState::Fresh {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A stale caller every second for a minute.
    for _ in 0..60 {
        cache.token().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(fetched.load(Ordering::SeqCst), 2, "token requests");
    let current = cache.token().await.unwrap();
    assert_eq!(current.secret(), "fetched-2");
    assert_eq!(cache.status().state, TokenState::Fresh);
}

/// A replica that heard of another's lock waits until the lock's very end and takes it at
/// that instant, when the store frees it: on the paused clock, a replica that died
/// holding a 2 s lock is outlived exactly 2 s in, with one token request. (A replica that
/// still took the lock for held at its last instant would spin there: its wait for a
/// notice until that instant ends at once, and the paused clock never moves again; the
/// cache runs on a thread of its own, and a watchdog on the real clock fails the test.)
#[test]
fn a_replica_takes_a_dead_replicas_lock_at_the_instant_it_expires() {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let result = runtime.block_on(async {
            let store = MemoryStore::new();
            let key = StoreKey::custom("lock-end");
            let dead = store.try_lock(key.as_str(), "dead-replica", Duration::from_secs(2));
            assert!(dead.await.unwrap());
            let (source, fetched) = counted_source();
            let cache = TokenCache::builder(source).store(store, key).build();
            let started = Instant::now();
            let token = cache.token().await.unwrap();
            let secret = token.secret().to_owned();
            (secret, fetched.load(Ordering::SeqCst), started.elapsed())
        });
        let _ = done.send(result);
    });
    let (token, fetched, waited) = outcome
        .recv_timeout(Duration::from_secs(10))
        .expect("no token after 10 s of real time (or the cache's thread panicked)");
    assert_eq!((token.as_str(), fetched), ("fetched-1", 1));
    assert_eq!(waited, Duration::from_secs(2));
}

/// After a 401, a replica that finds in the store a token another replica published since
/// (not the one it saw rejected) adopts it: it deletes only the token it saw rejected,
/// never a newer one. Replica A sees the store without notices (as from another process),
/// so it looks at the store: 2 token requests in all (the first token, and B's refresh).
#[tokio::test(start_paused = true)]
async fn a_replica_rejected_after_another_refreshed_adopts_the_new_token_and_keeps_it() {
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    let store = MemoryStore::new();
    let a = caches(&fake, Probe::silent(store.clone()), 1);
    let b = caches(&fake, store.clone(), 1);
    assert_eq!(load(&fake, &a, 1).await, 1);
    assert_eq!(load(&fake, &b, 1).await, 1);
    assert_eq!(fake.stats().token_requests, 1);

    fake.revoke_all_tokens();
    assert_eq!(load(&fake, &b, 1).await, 1, "B refreshed and replayed");
    assert_eq!(fake.stats().token_requests, 2);
    let newer = store.load(key.as_str()).await.unwrap().unwrap();

    assert_eq!(
        load(&fake, &a, 1).await,
        1,
        "A adopted B's token and replayed"
    );
    assert_eq!(fake.stats().token_requests, 2, "A fetched nothing");
    assert_eq!(fake.stats().api_revoked_token, 2, "one 401 each");
    let stored = store.load(key.as_str()).await.unwrap();
    assert_eq!(stored, Some(newer), "B's token is still the stored one");
}

/// A refresh that fails releases the store's lock at once: the next replica may take it
/// without waiting for its TTL (twice the token request timeout).
#[tokio::test(start_paused = true)]
async fn a_failed_refresh_releases_the_store_lock() {
    let fake = FakeDocplanner::builder().in_process();
    fake.fail_all_token_requests(TokenFault::Status {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: None,
    });
    let key = fake.credentials().unwrap().store_key();
    let store = MemoryStore::new();
    let cache = &caches(&fake, store.clone(), 1)[0].0;
    assert!(cache.token().await.is_err());
    assert_eq!(fake.stats().token_requests, 1);
    let next = store.try_lock(key.as_str(), "next-replica", Duration::from_secs(20));
    assert!(next.await.unwrap(), "the lock was left held");
}

/// A store of someone else's whose look says another replica holds the lock for longer
/// than any lock lives (`Duration::MAX`): the cache neither panics on the clock nor waits
/// past its own lock TTL (twice the 10 s request timeout) before it fetches alone.
#[tokio::test(start_paused = true)]
async fn a_store_that_says_the_lock_is_held_forever_is_waited_on_for_one_lock_ttl() {
    #[derive(Clone, Default)]
    struct Forever(MemoryStore);
    impl TokenStore for Forever {
        fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
            self.0.load(key)
        }
        fn publish<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, ()> {
            self.0.publish(key, token)
        }
        fn try_lock<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> StoreFuture<'a, bool> {
            Box::pin(async { Ok(false) })
        }
        fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
            self.0.unlock(key, owner)
        }
        fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool> {
            self.0.invalidate(key, token)
        }
        fn load_or_lock<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Duration,
        ) -> StoreFuture<'a, Found> {
            Box::pin(async { Ok(Found::Held(Some(Duration::MAX))) })
        }
        fn watch<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<watch::Receiver<Heard>>> {
            self.0.watch(key)
        }
    }
    let (source, fetched) = counted_source();
    let cache = TokenCache::builder(source)
        .store(Forever::default(), StoreKey::custom("forever"))
        .build();
    let started = Instant::now();
    let token = tokio::time::timeout(Duration::from_secs(60), cache.token())
        .await
        .expect("waited past the lock TTL")
        .unwrap();
    assert_eq!(token.secret(), "fetched-1");
    assert_eq!(fetched.load(Ordering::SeqCst), 1, "fetched alone");
    assert_eq!(started.elapsed(), Duration::from_secs(20), "one lock TTL");
}

/// The trait's default look, in several operations: a token another replica publishes
/// between its read and its lock is returned (and the lock given back), not fetched again.
#[tokio::test]
async fn the_default_look_returns_a_token_published_between_its_read_and_its_lock() {
    let raced = AccessToken::new("r4ced", Duration::from_secs(60)).unwrap();
    let store = Probe {
        raced_by: Some(SharedToken::from_token(&raced)),
        ..Probe::default()
    };
    match store
        .load_or_lock("k", "a", Duration::from_secs(5))
        .await
        .unwrap()
    {
        Found::Token(stored) => {
            assert!(stored.is(&raced))
        }
        other => panic!("the token published meanwhile was reported as {other:?}"),
    }
    assert!(
        store
            .inner
            .try_lock("k", "b", Duration::from_secs(5))
            .await
            .unwrap(),
        "the lock was given back"
    );
}

/// `TokenCache::invalidate` on a cache with a store: the dead token is deleted from the
/// store too, and the next `token()` fetches a new one instead of adopting the dead one
/// back (from the store, or from the notices of the store).
#[tokio::test(start_paused = true)]
async fn an_invalidated_token_is_not_adopted_back_from_the_store() {
    let fake = FakeDocplanner::builder().in_process();
    let key = fake.credentials().unwrap().store_key();
    let store = MemoryStore::new();
    let fleet = caches(&fake, store.clone(), 2);
    let (a, b) = (&fleet[0].0, &fleet[1].0);
    let dead = a.token().await.unwrap();
    assert!(b.token().await.unwrap().same_secret(&dead), "adopted");
    fake.revoke_all_tokens();
    assert!(a.invalidate(&dead));
    let fresh = a.token().await.unwrap();
    assert!(!fresh.same_secret(&dead), "the dead token came back");
    assert_eq!(fake.stats().token_requests, 2);
    let stored = store.load(key.as_str()).await.unwrap().unwrap();
    assert!(stored.is(&fresh), "the store holds the new token");
}
