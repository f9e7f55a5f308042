//! [`TokenCache`]: the shared heart. One per credential set, shared by every client.
//!
//! # Design: the mechanisms and who owns each
//!
//! A request flows one way: [`BearerAuth`](crate::BearerAuth) (or the reqwest middleware)
//! → [`TokenCache`] → the token's header on the request → the inner service → on a `401`,
//! the 401 policy → back to the cache for a new token → one replay.
//!
//! | mechanism | owner | file |
//! |---|---|---|
//! | the hot path: one lock-free load of the current token | [`TokenCache`] | `cache/mod.rs` |
//! | fresh / stale / expired, backoff delays (pure functions) | [`RefreshPolicy`], [`Backoff`] | `cache/policy.rs` |
//! | single flight: one shared refresh, its waiters, the backoff state | `Flight` | `cache/flight.rs` |
//! | the 401 policy: suspect tokens, forced refreshes by evidence, one replay | `Reauth`, [`Unauthorized`] | `cache/reauth.rs` |
//! | refreshing through a shared [`TokenStore`] | `Fleet` | `cache/fleet.rs` |
//! | stats, status, tracing, metrics | `Observer`, [`CacheStats`], [`CacheStatus`] | `cache/observe.rs` |
//!
//! The cache itself only orchestrates: it owns the current token (an `ArcSwap`) and the
//! slow-path lock, and asks each of those what to do.
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
//! * **Stale** (inside the refresh lead, moved earlier by a random jitter so caches
//!   spread out; a token shared through a [`TokenStore`] has one moment for the whole
//!   fleet instead, see [`store`](crate::store)): exactly one refresh runs in the
//!   background while every caller keeps the still-valid token. A failed background refresh never replaces or drops it; it is
//!   retried after a backoff.
//! * **Suspect** (the API answered `401` to it): a stale token that a refresh is replacing
//!   right now; it stays in use until the new one arrives, and stays if that fails (see
//!   [`reauth`](self#the-401-policy)).
//! * **Expired** (inside the expiry margin, or no token at all): callers wait for the single
//!   refresh. If the token endpoint is failing and backing off, they fail fast with the
//!   last error instead of queueing on it.
//!
//! Callers that wait for a refresh drive it themselves (see `cache/flight.rs`): dropping
//! any of them, including the one that started it, never leaves the cache stuck, and a
//! runtime that nobody drives any more never strands callers on another one.
//!
//! # The 401 policy
//!
//! A `401` for token `T` makes `T` suspect only if `T` is still the current token
//! (compare-and-swap), so a burst of 401s makes one refresh, not many. A token that was
//! never rejected may always force one refresh; forced refreshes back off only while
//! freshly fetched tokens keep being rejected before the API accepted them once, two in a
//! row (see
//! [`DEFAULT_REJECTION_BACKOFF_BASE`]). Every `401` handed back carries an
//! [`Unauthorized`] extension saying why.
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
//! | `docplanner_auth_invalidations_total` | counter | | tokens rejected by a 401 (made suspect and replaced) or invalidated |
//! | `docplanner_auth_rate_limited_401s_total` | counter | | 401s that did not force a refresh (freshly fetched tokens keep being rejected) |
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
mod reauth;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::error::{Error, Kind};
use crate::source::{ErasedSource, TokenSource};
use crate::store::{StoreKey, TokenStore};
use crate::token::AccessToken;

pub use self::fleet::DEFAULT_STORE_TIMEOUT;
use self::fleet::{Fleet, Known};
use self::flight::{Abandoned, Flight, Outcome, Waiter};
pub use self::observe::{CacheStats, CacheStatus, TokenState};
use self::observe::{Observer, Trigger};
pub use self::policy::{
    Backoff, RefreshPolicy, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_BACKOFF_JITTER,
    DEFAULT_EXPIRY_MARGIN, DEFAULT_PERMANENT_BACKOFF_BASE, DEFAULT_PERMANENT_BACKOFF_CAP,
    DEFAULT_REFRESH_JITTER, DEFAULT_REFRESH_LEAD, DEFAULT_TOKEN_REQUEST_TIMEOUT, MAX_RETRY_AFTER,
};
pub(crate) use self::policy::{Freshness, Schedule};
use self::reauth::Evidence;
pub(crate) use self::reauth::{Reauth, Rejection, Replacement};
pub use self::reauth::{
    Unauthorized, DEFAULT_REJECTION_BACKOFF_BASE, DEFAULT_REJECTION_BACKOFF_CAP,
};

/// How long past its own timeout a refresh may run before the stale path presumes it
/// stuck (its drivers sit on a runtime nobody polls) and starts another: the token request
/// timeout once more, at most 5 s. Callers that wait never depend on it: they drive their
/// own runtime's refresh.
pub const STUCK_REFRESH_GRACE: Duration = Duration::from_secs(5);

/// A shared, self-refreshing cache of one credential set's access token.
///
/// Cheap to clone (one `Arc`); every clone is the same cache. Build one per credential
/// set and hand clones to every layer and client that should share the token. See the
/// [module docs](crate::cache) for the refresh timeline and the design.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

struct Shared {
    /// The current token: the hot path loads it, nothing else on the hot path.
    current: ArcSwapOption<Entry>,
    source: Box<dyn ErasedSource>,
    config: Config,
    /// The origin of the instants kept in `not_before`.
    epoch: Instant,
    /// No background refresh may start before this instant (nanoseconds since `epoch`):
    /// while one runs (until it is presumed stuck), and until the end of a backoff. Lets
    /// the stale path skip the lock.
    not_before: AtomicU64,
    /// The id of the token a forced refresh fetched, until the API accepts it (0: none):
    /// lets the hot path see in one relaxed load that it has nothing to confirm.
    unconfirmed: AtomicU64,
    /// Slow-path state: the single flight, the 401 evidence, the last rejected token.
    slow: Mutex<SlowPath>,
    observer: Observer,
    /// The shared store, if any: consulted only when a refresh is due.
    fleet: Option<Fleet>,
}

#[derive(Default)]
struct SlowPath {
    flight: Flight,
    evidence: Evidence,
    /// The token a 401 last rejected, until a new one is stored: if the endpoint hands
    /// the same string out again, the new token keeps its id, so requests see that nothing
    /// changed and do not replay.
    rejected: Option<AccessToken>,
}

/// A token and its refresh schedule, as stored in the `ArcSwap`.
struct Entry {
    token: AccessToken,
    schedule: Schedule,
    /// Rejected by a 401 and being replaced (its schedule says stale from then on).
    suspect: bool,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    policy: RefreshPolicy,
    backoff: Backoff,
    request_timeout: Duration,
    rejection_backoff: (Duration, Duration),
}

impl TokenCache {
    /// A cache over `source` with the default policy (see [`TokenCacheBuilder`]).
    pub fn new(source: impl TokenSource) -> Self {
        Self::builder(source).build()
    }

    /// A builder to tune the refresh policy, backoff and timeouts.
    pub fn builder(source: impl TokenSource) -> TokenCacheBuilder {
        let name = source
            .cache_name()
            .map_or_else(|| "docplanner".to_owned(), str::to_owned);
        TokenCacheBuilder {
            source: Box::new(source),
            config: Config {
                policy: RefreshPolicy::default(),
                backoff: Backoff::default(),
                request_timeout: DEFAULT_TOKEN_REQUEST_TIMEOUT,
                rejection_backoff: (
                    DEFAULT_REJECTION_BACKOFF_BASE,
                    DEFAULT_REJECTION_BACKOFF_CAP,
                ),
            },
            name,
            store: None,
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }

    /// A valid token: the cached one if it is still usable (starting a background refresh
    /// if it is stale), else the result of the single refresh, started if need be.
    ///
    /// Fails fast with the last error while the token endpoint is backing off after a
    /// failure and no valid token is cached. Obtaining a new token needs a Tokio runtime
    /// with its time driver (a cached token is served from anywhere); without a runtime
    /// this fails with [`Error::is_config`].
    pub async fn token(&self) -> Result<AccessToken, Error> {
        if let Some(token) = self.shared.with_usable(Instant::now(), |e| e.token.clone()) {
            return Ok(token);
        }
        self.shared.wait(None).await
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
    /// For a token you know is dead. The layer and the middleware do not drop a token
    /// after a 401: they mark it suspect and keep using it until a new one arrives (see
    /// the [401 policy](crate::cache#the-401-policy)).
    pub fn invalidate(&self, token: &AccessToken) -> bool {
        self.shared.invalidate(token.id())
    }

    /// A snapshot of what this cache has done so far (with feature `metrics`, this also
    /// refreshes the remaining-lifetime gauge).
    pub fn stats(&self) -> CacheStats {
        let current = self.shared.current.load();
        self.shared
            .observer
            .snapshot(current.as_deref().map(|e| &e.token))
    }

    /// The cache's state now, for health checks: the token's state and remaining
    /// lifetime, the backoff, the consecutive failures and the last error (whose message
    /// never contains a secret).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use docplanner_auth::{AccessToken, BoxError, TokenCache};
    /// use docplanner_auth::cache::TokenState;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), docplanner_auth::Error> {
    /// # let cache = TokenCache::new(|| async {
    /// #     Ok::<_, BoxError>(AccessToken::new("t0k3n", Duration::from_secs(3600))?)
    /// # });
    /// assert_eq!(cache.status().state, TokenState::Empty);
    /// cache.token().await?;
    /// let status = cache.status();
    /// assert_eq!(status.state, TokenState::Fresh);
    /// assert!(status.is_usable() && status.last_error.is_none());
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> CacheStatus {
        self.shared.status(Instant::now())
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

    /// The 401 policy for a request sent with the token `used` (see [`Reauth`]).
    pub(crate) fn reauth(&self, used: u64) -> Reauth {
        Reauth::new(self.clone(), used)
    }

    /// A 401 was answered to a request that carried the token `used`.
    pub(crate) fn reject(&self, used: u64) -> Rejection {
        self.shared.reject(used)
    }

    /// A token other than `rejected`: the current one if it is, else the outcome of the
    /// single refresh (joined, or started if none runs and the backoff allows).
    pub(crate) async fn next_token(&self, rejected: u64) -> Result<AccessToken, Error> {
        self.shared.wait(Some(rejected)).await
    }

    /// The API accepted a request sent with `used`. One relaxed load unless `used` is a
    /// token a forced refresh fetched and nobody has confirmed yet.
    #[inline]
    pub(crate) fn accepted(&self, used: u64) {
        if self.shared.unconfirmed.load(Ordering::Relaxed) == used {
            self.shared.confirm(used);
        }
    }

    /// A request is replayed with a new token after a 401.
    pub(crate) fn count_replay(&self) {
        self.shared.observer.replayed();
    }

    /// A request was refused before sending (`error` says why).
    pub(crate) fn count_refused(&self, error: &Error) {
        self.shared.observer.refused(error);
    }
}

fn no_runtime() -> Error {
    Error::config(
        "no Tokio runtime is running: docplanner-auth fetches tokens on the caller's Tokio \
         runtime (with its time driver enabled); call it from within a Tokio runtime",
    )
}

impl Shared {
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

    fn lock(&self) -> MutexGuard<'_, SlowPath> {
        // Every update under this lock is a plain assignment: a panic cannot leave it
        // half-done, so a poisoned lock is still usable.
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// The slow path: a usable token other than `rejected`, or the outcome of this
    /// runtime's refresh (joined, or started), or the last error while backing off.
    async fn wait(self: &Arc<Self>, rejected: Option<u64>) -> Result<AccessToken, Error> {
        let waiter = {
            let mut slow = self.lock();
            let now = Instant::now();
            // Look again under the lock: a refresh may have finished since.
            if let Some(entry) = self.current.load().as_deref() {
                let usable = entry.schedule.freshness(now) != Freshness::Expired;
                if usable && Some(entry.token.id()) != rejected {
                    return Ok(entry.token.clone());
                }
            }
            let runtime = Handle::try_current().map_err(|_| no_runtime())?;
            match slow.flight.join(&runtime, now) {
                Some(waiter) => waiter,
                None => {
                    if let Some(error) = slow.flight.backing_off(now) {
                        return Err(error.clone());
                    }
                    let trigger = if rejected.is_some() {
                        Trigger::Rejected
                    } else {
                        Trigger::Waiting
                    };
                    self.start(&mut slow, &runtime, now, trigger)
                }
            }
        };
        waiter.outcome().await
    }

    /// A stale token was served at `now`: make sure one refresh is under way, unless one
    /// runs already or the endpoint is backing off. Never waits for a lock.
    fn refresh_in_background(self: &Arc<Self>, now: Instant) {
        if self.nanos_since_epoch(now) < self.not_before.load(Ordering::Acquire) {
            return;
        }
        let mut slow = match self.slow.try_lock() {
            Ok(slow) => slow,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return, // someone else is deciding right now
        };
        if slow.flight.any_running(now) || slow.flight.backing_off(now).is_some() {
            return;
        }
        // A refresh may have completed since our look: only refresh a still-stale token.
        let stale = self
            .current
            .load()
            .as_deref()
            .is_some_and(|e| e.schedule.freshness(now) == Freshness::Stale);
        if stale {
            self.start_in_background(&mut slow, now, Trigger::Background);
        }
    }

    /// Start a refresh that nobody waits for yet. With no runtime, nothing starts: the
    /// token is still usable, and callers that need a new one later start it themselves.
    fn start_in_background(self: &Arc<Self>, slow: &mut SlowPath, now: Instant, trigger: Trigger) {
        match Handle::try_current() {
            Ok(runtime) => drop(self.start(slow, &runtime, now, trigger)),
            Err(_) => tracing::debug!(
                cache = %self.observer.name(),
                "no Tokio runtime: the refresh waits for a caller that has one"
            ),
        }
    }

    /// Start a refresh in a task on `runtime`; returns the caller's share of it. Called
    /// with the slow-path lock held.
    fn start(
        self: &Arc<Self>,
        slow: &mut SlowPath,
        runtime: &Handle,
        now: Instant,
        trigger: Trigger,
    ) -> Waiter {
        let known = Known {
            current: self.current.load().as_deref().map(|e| e.token.clone()),
            rejected: slow.rejected.clone(),
        };
        let timeout = self.config.request_timeout;
        let budget = timeout
            .saturating_add(timeout.min(STUCK_REFRESH_GRACE))
            .saturating_add(self.fleet.as_ref().map_or(Duration::ZERO, Fleet::budget));
        let deadline = now
            .checked_add(budget)
            .unwrap_or_else(|| flight::far_future(now));
        let (generation, waiter, publish) = slow.flight.start(runtime, deadline);
        self.not_before
            .store(self.nanos_since_epoch(deadline), Ordering::Release);
        let span = self.observer.refresh_started(trigger);
        let this = Arc::clone(self);
        let task = async move {
            // If the task ends without an outcome (its runtime shuts down, or the source
            // panics), the flight must not keep waiting for it.
            let abandoned = Abandoned::new(|panicked| this.abandoned(generation, panicked));
            let started = Instant::now();
            let result = this.obtain(known).await;
            this.observer
                .refresh_done(&tracing::Span::current(), &result, started.elapsed());
            let outcome = this.complete(generation, result);
            abandoned.disarm();
            publish.send(outcome);
        };
        drop(runtime.spawn(task.instrument(span)));
        waiter
    }

    /// The refresh `generation` ended without an outcome. A panicking source is a failure
    /// like any other, backed off (one that always panics is not called in a loop).
    fn abandoned(&self, generation: u64, panicked: bool) {
        let mut slow = self.lock();
        if !slow.flight.ended(generation) {
            return;
        }
        if panicked {
            let error = Error::new(
                Kind::RefreshAborted,
                "the token source panicked (a bug in the token source); retrying with backoff",
            );
            let _ = self.record_failure(&mut slow, error, Instant::now());
        } else if !slow.flight.any_running(Instant::now()) {
            self.not_before.store(0, Ordering::Release);
        }
    }

    /// A new token: through the store if there is one, else from the source.
    async fn obtain(&self, known: Known) -> Result<AccessToken, Error> {
        let Some(fleet) = &self.fleet else {
            return self.fetch().await;
        };
        let usable = |token: &AccessToken| {
            let schedule = self
                .config
                .policy
                .schedule(token.obtained(), token.expires_at(), 0.0);
            schedule.freshness(Instant::now()) != Freshness::Expired
        };
        fleet
            .obtain(&self.observer, known, || self.fetch(), usable)
            .await
    }

    /// One request to the token source, with the request timeout.
    async fn fetch(&self) -> Result<AccessToken, Error> {
        self.observer.fetching();
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, self.source.fetch()).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(error)) => Err(Error::from_source(error)),
            Err(_) => Err(Error::new(
                Kind::Timeout,
                format!(
                    "the token request took longer than {timeout:?} and was abandoned; \
                     it will be retried with backoff (tune it with token_request_timeout)"
                ),
            )),
        }
    }

    /// Publish the outcome of a refresh: store a new token, or record the failure and the
    /// backoff. A failure never touches the stored token. The outcome of a refresh that
    /// was presumed stuck and replaced only reaches its own callers.
    fn complete(&self, generation: u64, result: Outcome) -> Outcome {
        let now = Instant::now();
        let mut slow = self.lock();
        if !slow.flight.ended(generation) {
            return result;
        }
        let mut token = match result {
            Ok(token) => token,
            Err(error) => return Err(self.record_failure(&mut slow, error, now)),
        };
        let current = self.current.load();
        let same_as =
            |old: Option<&AccessToken>| old.filter(|o| o.same_secret(&token)).map(AccessToken::id);
        if let Some(id) = same_as(slow.rejected.as_ref())
            .or_else(|| same_as(current.as_deref().map(|e| &e.token)))
        {
            token.set_id(id);
        }
        let policy = self.config.policy;
        let (obtained, expires) = (token.obtained(), token.expires_at());
        let schedule = match &self.fleet {
            // One refresh moment for the whole fleet (see `Fleet::agreed_fraction`).
            Some(fleet) => {
                let agreed = fleet.agreed_fraction(&token);
                policy.shared_schedule(obtained, expires, agreed, fastrand::f64())
            }
            None => policy.schedule(obtained, expires, fastrand::f64()),
        };
        if schedule.freshness(now) == Freshness::Expired {
            let error = Error::new(
                Kind::InvalidResponse,
                format!(
                    "the token arrived already expired (lifetime {:?}, obtained {:?} ago): the \
                     token endpoint is too slow for such short tokens, or the token source \
                     returned an old token",
                    token.lifetime(),
                    now.saturating_duration_since(token.obtained())
                ),
            );
            return Err(self.record_failure(&mut slow, error, now));
        }
        self.current.store(Some(Arc::new(Entry {
            token: token.clone(),
            schedule,
            suspect: false,
        })));
        // A token that replaces a rejected one must prove itself (see `reauth.rs`).
        let forced = slow.rejected.take().is_some();
        slow.evidence.stored(token.id(), forced);
        self.unconfirmed
            .store(if forced { token.id() } else { 0 }, Ordering::Relaxed);
        slow.flight.succeeded();
        if !slow.flight.any_running(now) {
            self.not_before.store(0, Ordering::Release);
        }
        self.observer.token_stored(&token);
        Ok(token)
    }

    /// Count a failed refresh and set the backoff; returns the error for the callers.
    fn record_failure(&self, slow: &mut SlowPath, error: Error, now: Instant) -> Error {
        let backoff = self.config.backoff;
        let (retry_at, delay) = slow.flight.failed(&error, now, |failures| {
            backoff.delay(
                failures,
                error.is_permanent(),
                error.retry_after(),
                fastrand::f64(),
            )
        });
        self.not_before
            .store(self.nanos_since_epoch(retry_at), Ordering::Release);
        self.observer
            .backing_off(&error, slow.flight.failures(), delay);
        error
    }

    /// A 401 for the token `used`: make it suspect and start its replacement, unless it is
    /// not current any more, already suspect, or the evidence says to wait.
    fn reject(self: &Arc<Self>, used: u64) -> Rejection {
        let now = Instant::now();
        let mut slow = self.lock();
        let current = self.current.load_full();
        let Some(entry) = current.as_deref() else {
            return Rejection::Refreshing;
        };
        if entry.token.id() != used || entry.suspect {
            // Replaced already, or its replacement is under way: wait for that.
            return Rejection::Refreshing;
        }
        let (base, cap) = self.config.rejection_backoff;
        if !slow.evidence.may_force(used, now, base, cap) {
            self.observer.rate_limited();
            return Rejection::RateLimited;
        }
        let suspect = Arc::new(Entry {
            token: entry.token.clone(),
            schedule: Schedule {
                refresh_at: now.min(entry.schedule.usable_until),
                usable_until: entry.schedule.usable_until,
            },
            suspect: true,
        });
        let previous = self.current.compare_and_swap(&current, Some(suspect));
        let swapped = match (previous.as_ref(), current.as_ref()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !swapped {
            return Rejection::Refreshing;
        }
        slow.rejected = Some(entry.token.clone());
        self.observer.invalidated();
        if !slow.flight.any_running(now) && slow.flight.backing_off(now).is_none() {
            self.start_in_background(&mut slow, now, Trigger::Rejected);
        }
        Rejection::Refreshing
    }

    /// Drop the token `used` if it is current (compare-and-swap). It is then known as
    /// rejected, as after a 401: a cache with a store deletes it there (compare-and-delete)
    /// instead of adopting it back from the store or its notices.
    fn invalidate(&self, used: u64) -> bool {
        let mut slow = self.lock();
        let current = self.current.load_full();
        let Some(entry) = current.as_deref().filter(|e| e.token.id() == used) else {
            return false;
        };
        let previous = self.current.compare_and_swap(&current, None);
        let dropped = match (previous.as_ref(), current.as_ref()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if dropped {
            slow.rejected = Some(entry.token.clone());
            self.observer.invalidated();
        }
        dropped
    }

    fn confirm(&self, used: u64) {
        let mut slow = self.lock();
        slow.evidence.accepted(used);
        let _ = self
            .unconfirmed
            .compare_exchange(used, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn status(&self, now: Instant) -> CacheStatus {
        let slow = self.lock();
        let current = self.current.load();
        let entry = current.as_deref();
        let backing_off_until = slow.flight.retry_at(now);
        let freshness = entry.map(|e| (e.schedule.freshness(now), e.suspect));
        let state = match freshness {
            Some((Freshness::Fresh, _)) => TokenState::Fresh,
            Some((Freshness::Stale, true)) => TokenState::Suspect,
            Some((Freshness::Stale, false)) => TokenState::Stale,
            _ if backing_off_until.is_some() => TokenState::BackingOff,
            Some((Freshness::Expired, _)) => TokenState::Expired,
            None => TokenState::Empty,
        };
        CacheStatus {
            state,
            expires_in: entry.map(|e| e.token.expires_at().saturating_duration_since(now)),
            backing_off_for: backing_off_until.map(|at| at.saturating_duration_since(now)),
            consecutive_failures: slow.flight.failures(),
            last_error: slow.flight.last_error().cloned(),
        }
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
    /// (default [`DEFAULT_REFRESH_LEAD`]), capped at a tenth of each token's lifetime (at
    /// least 2 s, or an eighth of the lifetime if that is less).
    pub fn refresh_lead(mut self, lead: Duration) -> Self {
        self.config.policy.lead = lead;
        self
    }

    /// How long before its real expiry a token stops being sent
    /// (default [`DEFAULT_EXPIRY_MARGIN`]), capped at a twentieth of each token's lifetime,
    /// but at least 1 s (servers round a JWT `exp` down to whole seconds), or an eighth of
    /// the lifetime if that is less (tokens under 8 s).
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.config.policy.margin = margin;
        self
    }

    /// The largest random amount by which a refresh moment is moved earlier
    /// (default [`DEFAULT_REFRESH_JITTER`]), capped at a fortieth of each token's lifetime.
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

    /// The pause before another refresh forced by a 401 while freshly fetched tokens keep
    /// being rejected: `base` after the first such token, doubling up to `cap` (defaults
    /// [`DEFAULT_REJECTION_BACKOFF_BASE`] and [`DEFAULT_REJECTION_BACKOFF_CAP`]). A 401 for
    /// a token that was never rejected, or that the API accepted before, always forces one
    /// refresh. `Duration::ZERO` turns the limit off: each 401 may then force a refresh
    /// (still one per burst, and still one replay per request, never a loop).
    pub fn rejection_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.config.rejection_backoff = (base, cap.max(base));
        self
    }

    /// The name of this cache in metrics and tracing (label `cache`); default: the
    /// source's [`TokenSource::cache_name`] (the host, with a non-default port, of a
    /// [`ClientCredentials`](crate::ClientCredentials) token URL), else `docplanner`.
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

    /// The timeout of each store operation (default [`DEFAULT_STORE_TIMEOUT`]). A
    /// `RedisStore` made from a URL (feature `redis`) also bounds each answer with its own
    /// timeout (`RedisStore::timeout`, 500 ms): raise both.
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
            unconfirmed: AtomicU64::new(0),
            slow: Mutex::new(SlowPath::default()),
            observer: Observer::new(self.name),
            fleet: self.store.map(|(store, key)| {
                Fleet::new(store, key, self.store_timeout, self.config.request_timeout)
            }),
        });
        TokenCache { shared }
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
        f.debug_struct("TokenCache")
            .field("name", &self.name())
            .field("state", &self.status().state)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
