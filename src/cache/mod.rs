//! [`TokenCache`]: the shared heart. One per credential set, shared by every client.
//!
//! # How a token lives
//!
//! ```text
//!  obtained                 refresh_at            usable_until   expires
//!     |------- fresh -----------|------ stale --------|--expired--|
//!     | one lock-free load,     | callers keep using  | callers   |
//!     | nothing else            | it; ONE background  | wait for  |
//!     |                         | refresh runs        | the new   |
//!                                 <-jitter-><- lead ->  <-margin->
//! ```
//!
//! * **Fresh**: a request costs one [`ArcSwap`](arc_swap::ArcSwapOption) load, one clock
//!   read and one `HeaderValue` clone (a reference-count increment): no lock, no await,
//!   no allocation.
//! * **Stale** (inside the refresh lead, moved earlier by a random jitter so replicas
//!   spread out): exactly one refresh is spawned in the background while every caller keeps
//!   the still-valid token. A failed background refresh never replaces or drops it; it is
//!   retried after a backoff.
//! * **Expired** (inside the expiry margin, or no token at all): callers wait for the single
//!   in-flight refresh. If the token endpoint is failing and backing off, they fail fast
//!   with the last error instead of queueing on it.
//!
//! The refresh runs in a task of its own: dropping any caller, including the one that
//! started it, neither cancels it nor leaves the cache stuck.
//!
//! A `401` for token `T` drops `T` only if `T` is still the current token
//! (compare-and-swap), so a burst of 401s makes one refresh, not many; such forced
//! refreshes are rate-limited (see [`DEFAULT_FORCED_REFRESH_INTERVAL`]).
//!
//! With a [`TokenStore`], refreshes go through the store first
//! (see [`store`](crate::store)).
//!
//! # Observability
//!
//! [`TokenCache::stats`] returns a [`CacheStats`] snapshot (no feature needed).
//!
//! # Metrics (feature `metrics`)
//!
//! Emitted through the [`metrics`](https://docs.rs/metrics) facade, so any exporter
//! (Prometheus, OpenTelemetry…) picks them up; every one has the label `cache` (the
//! cache's [name](TokenCacheBuilder::name), by default the market's domain).
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `docplanner_auth_token_fetches_total` | counter | `outcome` = `ok`, `transient_error`, `permanent_error` | token requests, by outcome |
//! | `docplanner_auth_token_fetch_duration_seconds` | histogram | `outcome` | how long each token request took |
//! | `docplanner_auth_invalidations_total` | counter | | tokens dropped after a 401 |
//! | `docplanner_auth_rate_limited_401s_total` | counter | | 401s that did not force a refresh (one ran too recently) |
//! | `docplanner_auth_replays_total` | counter | | requests replayed with a new token after a 401 |
//! | `docplanner_auth_store_adoptions_total` | counter | | tokens adopted from a shared store instead of fetched |
//! | `docplanner_auth_store_faults_total` | counter | | store fault episodes (each logged once) |
//! | `docplanner_auth_refused_requests_total` | counter | `reason` = `insecure_scheme`, `host_not_allowed` | requests refused before sending |
//! | `docplanner_auth_token_remaining_seconds` | gauge | | the current token's remaining lifetime, updated when a token is stored or dropped and on every [`stats`](super::TokenCache::stats) call |
//! | `docplanner_auth_token_expiry_timestamp_seconds` | gauge | | Unix time at which the current token expires (exact at any moment; 0 without a token) |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use docplanner_auth::{AccessToken, BoxError, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), docplanner_auth::Error> {
//! // Any `TokenSource` will do; `ClientCredentials` is the OAuth2 one.
//! let cache = TokenCache::builder(|| async {
//!     Ok::<_, BoxError>(AccessToken::new("t0k3n", Duration::from_secs(3600))?)
//! })
//! .token_request_timeout(Duration::from_secs(5))
//! .build();
//!
//! let token = cache.token().await?; // the first call fetches
//! let again = cache.token().await?; // later calls reuse it
//! assert!(token.same_secret(&again));
//! assert_eq!(cache.stats().token_requests, 1);
//! # Ok(()) }
//! ```

mod fleet;
mod flight;
mod observe;
mod policy;

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::time::Instant;

use crate::error::Error;
use crate::source::{ErasedSource, TokenSource};
use crate::store::{StoreKey, TokenStore};
use crate::token::AccessToken;

use self::fleet::Fleet;
pub use self::fleet::DEFAULT_STORE_TIMEOUT;
use self::flight::Flight;
pub use self::flight::STUCK_REFRESH_GRACE;
pub use self::observe::CacheStats;
use self::observe::{Observer, Trigger};
pub use self::policy::{
    Backoff, RefreshPolicy, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_BACKOFF_JITTER,
    DEFAULT_EXPIRY_MARGIN, DEFAULT_FORCED_REFRESH_INTERVAL, DEFAULT_PERMANENT_BACKOFF_BASE,
    DEFAULT_PERMANENT_BACKOFF_CAP, DEFAULT_REFRESH_JITTER, DEFAULT_REFRESH_LEAD,
    DEFAULT_TOKEN_REQUEST_TIMEOUT, MAX_RETRY_AFTER,
};
pub(crate) use self::policy::{Freshness, Schedule};

/// A shared, self-refreshing cache of one credential set's access token.
///
/// Cheap to clone (two `Arc`s); every clone is the same cache. Build one per credential
/// set and hand clones to every layer and client that should share the token. See the
/// [module docs](crate::cache) for the refresh timeline.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
    /// The handles response futures hold, one per thread slot (see [`CacheHandle`]).
    handles: Arc<[CacheHandle]>,
}

/// How many handles a cache keeps for response futures: threads beyond this many share.
const HANDLE_SLOTS: usize = 16;

/// What a response future keeps of its cache, for a 401: a strong reference, through a
/// handle that the threads sending requests do not share. Every request takes one (and
/// drops it with its future); a reference count that several threads increment and
/// decrement per request bounces its cache line between their cores, which costs more than
/// everything else on the hot path together. So each thread takes its own slot's handle
/// (threads are spread over [`HANDLE_SLOTS`] slots), each alone on its cache line.
#[derive(Clone)]
pub(crate) struct CacheHandle(Arc<Slot>);

#[repr(align(128))] // a cache line of its own (x86 prefetches lines in pairs)
struct Slot(Arc<Shared>);

/// This thread's slot: threads are numbered in the order they first send a request.
#[inline]
fn thread_slot() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.try_with(|slot| {
        if slot.get() == usize::MAX {
            slot.set(NEXT.fetch_add(1, Ordering::Relaxed) % HANDLE_SLOTS);
        }
        slot.get()
    })
    .unwrap_or(0)
}

struct Shared {
    /// The current token: the hot path loads it, nothing else on the hot path.
    current: ArcSwapOption<Entry>,
    source: Box<dyn ErasedSource>,
    config: Config,
    /// The origin of the instants kept in atomics below.
    epoch: Instant,
    /// No new refresh may start before this instant (nanoseconds since `epoch`): `u64::MAX`
    /// while one runs, the end of the backoff after a failure, 0 otherwise. Lets the
    /// stale path skip the lock while a refresh is under way or backing off.
    not_before: AtomicU64,
    /// Slow-path state: the refresh in flight, failures and backoff, forced refreshes.
    flight: Mutex<Flight>,
    observer: Observer,
    /// The shared store, if any: consulted only when a refresh is due.
    fleet: Option<Fleet>,
}

/// A token and its refresh schedule, as stored in the `ArcSwap`.
struct Entry {
    token: AccessToken,
    schedule: Schedule,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    policy: RefreshPolicy,
    backoff: Backoff,
    request_timeout: Duration,
    forced_interval: Duration,
}

/// What happened to the token a 401 was answered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// It was current and is dropped now: a new one is fetched by the next `token()`.
    Invalidated,
    /// It was not current any more: someone else replaced or dropped it already.
    Replaced,
    /// It is current but a forced refresh happened too recently: keep it, return the 401.
    RateLimited,
}

impl TokenCache {
    /// A cache over `source` with the default policy (see [`TokenCacheBuilder`]).
    pub fn new(source: impl TokenSource) -> Self {
        Self::builder(source).build()
    }

    /// A builder to tune the refresh policy, backoff and timeouts.
    pub fn builder(source: impl TokenSource) -> TokenCacheBuilder {
        TokenCacheBuilder {
            source: Box::new(source),
            config: Config {
                policy: RefreshPolicy::default(),
                backoff: Backoff::default(),
                request_timeout: DEFAULT_TOKEN_REQUEST_TIMEOUT,
                forced_interval: DEFAULT_FORCED_REFRESH_INTERVAL,
            },
            name: "docplanner".to_owned(),
            store: None,
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }

    /// A valid token: the cached one if it is still usable (starting a background refresh
    /// if it is stale), else the result of the single refresh in flight, started if need be.
    ///
    /// Fails fast with the last error while the token endpoint is backing off after a
    /// failure and no valid token is cached.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        self.shared.token().await
    }

    /// The cached token if it may still be sent, without waiting (a stale token starts a
    /// background refresh, as [`token`](Self::token) does).
    pub fn cached(&self) -> Option<AccessToken> {
        self.shared
            .with_usable(Instant::now(), |entry| entry.token.clone())
    }

    /// Drop `token` if, and only if, it is still the current token (compare-and-swap);
    /// the next [`token`](Self::token) fetches a new one. Returns whether it was dropped.
    ///
    /// Not rate-limited: the tower layer and the adapters use a rate-limited variant for
    /// 401 answers (see [`DEFAULT_FORCED_REFRESH_INTERVAL`]).
    pub fn invalidate(&self, token: &AccessToken) -> bool {
        self.shared.reject(token.id(), false) == Rejection::Invalidated
    }

    /// A snapshot of what this cache has done so far (with feature `metrics`, this also
    /// refreshes the remaining-lifetime gauge).
    pub fn stats(&self) -> CacheStats {
        let current = self.shared.current.load();
        self.shared
            .observer
            .snapshot(current.as_deref().map(|e| &e.token))
    }

    /// The cache's name, used as the `cache` label of metrics and tracing.
    pub fn name(&self) -> &str {
        self.shared.observer.name()
    }

    /// The hot path: the header of a token that may be sent now, and the token's id.
    #[inline]
    pub(crate) fn header(&self) -> Option<(HeaderValue, u64)> {
        self.shared.with_usable(Instant::now(), |entry| {
            (entry.token.header_value().clone(), entry.token.id())
        })
    }

    /// A handle on this cache for a response future (see [`CacheHandle`]).
    #[inline]
    pub(crate) fn handle(&self) -> CacheHandle {
        self.handles[thread_slot() % self.handles.len()].clone()
    }

    /// A request was refused before sending (`error` says why).
    pub(crate) fn count_refused(&self, error: &Error) {
        self.shared.observer.refused(error);
    }
}

impl CacheHandle {
    /// See [`TokenCache::token`].
    pub(crate) async fn token(&self) -> Result<AccessToken, Error> {
        self.0 .0.token().await
    }

    /// A 401 was answered to a request that carried the token `used_id`: drop it if it is
    /// still current (compare-and-swap), unless a forced refresh ran too recently.
    pub(crate) fn reject(&self, used_id: u64) -> Rejection {
        self.0 .0.reject(used_id, true)
    }

    /// A request is replayed with a new token after a 401.
    pub(crate) fn count_replay(&self) {
        self.0 .0.observer.replayed();
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CacheHandle")
            .field(&self.0 .0.observer.name())
            .finish()
    }
}

impl Shared {
    async fn token(self: &Arc<Self>) -> Result<AccessToken, Error> {
        if let Some(token) = self.with_usable(Instant::now(), |entry| entry.token.clone()) {
            return Ok(token);
        }
        self.wait_for_token().await
    }

    /// Apply `f` to the current entry if it may be sent at `now`; a stale entry also
    /// starts a background refresh. One load, no lock on the fresh path.
    #[inline]
    fn with_usable<T>(self: &Arc<Self>, now: Instant, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        let guard = self.current.load();
        let entry = guard.as_deref()?;
        match entry.schedule.freshness(now) {
            Freshness::Fresh => Some(f(entry)),
            Freshness::Stale => {
                let out = f(entry);
                drop(guard);
                self.refresh_in_background(now);
                Some(out)
            }
            Freshness::Expired => None,
        }
    }

    fn lock_flight(&self) -> MutexGuard<'_, Flight> {
        // The flight state stays consistent across a panic (every update is a plain
        // assignment), so a poisoned lock is still usable.
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn reject(self: &Arc<Self>, used_id: u64, rate_limited: bool) -> Rejection {
        let now = Instant::now();
        let mut flight = self.lock_flight();
        let current = self.current.load();
        let Some(entry) = current.as_deref() else {
            return Rejection::Replaced;
        };
        if entry.token.id() != used_id {
            return Rejection::Replaced;
        }
        if rate_limited && flight.forced_too_recently(now, self.config.forced_interval) {
            self.observer.rate_limited();
            return Rejection::RateLimited;
        }
        let previous = self.current.compare_and_swap(&*current, None);
        let swapped = match (previous.as_ref(), current.as_ref()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !swapped {
            return Rejection::Replaced;
        }
        flight.note_rejected(entry.token.clone(), now);
        self.observer.invalidated();
        self.replace_dropped(&mut flight, now);
        Rejection::Invalidated
    }
}

/// Tunes a [`TokenCache`]. Every setting has a documented default.
pub struct TokenCacheBuilder {
    source: Box<dyn ErasedSource>,
    config: Config,
    name: String,
    store: Option<(Arc<dyn TokenStore>, StoreKey)>,
    store_timeout: Duration,
}

impl TokenCacheBuilder {
    /// The whole refresh policy (lead, margin, jitter) at once.
    pub fn refresh_policy(mut self, policy: RefreshPolicy) -> Self {
        self.config.policy = policy;
        self
    }

    /// How long before a token stops being usable a background refresh starts
    /// (default [`DEFAULT_REFRESH_LEAD`], capped at half of each token's lifetime).
    pub fn refresh_lead(mut self, lead: Duration) -> Self {
        self.config.policy.lead = lead;
        self
    }

    /// How long before its real expiry a token stops being sent
    /// (default [`DEFAULT_EXPIRY_MARGIN`], capped at a tenth of each token's lifetime).
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.config.policy.margin = margin;
        self
    }

    /// The largest random amount by which a refresh moment is moved earlier
    /// (default [`DEFAULT_REFRESH_JITTER`], capped at a tenth of each token's lifetime).
    pub fn refresh_jitter(mut self, jitter: Duration) -> Self {
        self.config.policy.jitter = jitter;
        self
    }

    /// Delays after token-endpoint failures (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The longest a token request may take (default [`DEFAULT_TOKEN_REQUEST_TIMEOUT`]).
    pub fn token_request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// The minimum interval between two refreshes forced by 401 answers
    /// (default [`DEFAULT_FORCED_REFRESH_INTERVAL`]).
    pub fn forced_refresh_interval(mut self, interval: Duration) -> Self {
        self.config.forced_interval = interval;
        self
    }

    /// The name of this cache in metrics and tracing (label `cache`); default
    /// `docplanner`, and the market's domain for the caches of [`docplanner`](crate::docplanner).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Share tokens through `store` under `key` with every other cache (in this process or
    /// in other replicas) using the same store and key; see [`store`](crate::store).
    pub fn store(mut self, store: impl TokenStore, key: StoreKey) -> Self {
        self.store = Some((Arc::new(store), key));
        self
    }

    /// The timeout of each store operation (default [`DEFAULT_STORE_TIMEOUT`]).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// The cache. It fetches nothing until the first token is asked for.
    pub fn build(self) -> TokenCache {
        let shared = Arc::new(Shared {
            current: ArcSwapOption::empty(),
            source: self.source,
            config: self.config,
            epoch: Instant::now(),
            not_before: AtomicU64::new(0),
            flight: Mutex::new(Flight::default()),
            observer: Observer::new(self.name),
            fleet: self.store.map(|(store, key)| {
                Fleet::new(store, key, self.store_timeout, self.config.request_timeout)
            }),
        });
        let handles = (0..HANDLE_SLOTS)
            .map(|_| CacheHandle(Arc::new(Slot(Arc::clone(&shared)))))
            .collect();
        TokenCache { shared, handles }
    }
}

impl fmt::Debug for TokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.shared.current.load();
        let state = match current.as_deref() {
            None => "empty",
            Some(entry) => match entry.schedule.freshness(Instant::now()) {
                Freshness::Fresh => "fresh",
                Freshness::Stale => "stale",
                Freshness::Expired => "expired",
            },
        };
        f.debug_struct("TokenCache")
            .field("name", &self.name())
            .field("token", &state)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
