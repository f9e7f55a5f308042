//! Single flight: at most one token request at a time per cache, run in a task of its
//! own, whose outcome every waiter shares; plus the backoff after failures.

use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::fleet::Known;
use super::{Entry, Freshness, Shared, Trigger};
use crate::error::{Error, Kind};
use crate::token::AccessToken;

/// The outcome of one refresh, shared by every waiter.
type Outcome = Option<Result<AccessToken, Error>>;

/// How long past its own timeout a refresh may run before it is presumed stuck (its task
/// sits on a runtime nobody drives): the token request timeout once more, at most 5 s.
/// Waiters then give up on it with an error, and the next caller starts another refresh
/// on its own runtime.
pub const STUCK_REFRESH_GRACE: Duration = Duration::from_secs(5);

/// The refresh under way.
#[derive(Debug)]
struct Running {
    rx: watch::Receiver<Outcome>,
    generation: u64,
    /// Past this instant the refresh is presumed stuck.
    deadline: Instant,
    /// The runtime its task runs on.
    runtime: tokio::runtime::Id,
}

impl Running {
    fn waiting(&self) -> Next {
        Next::Wait(Waiting {
            rx: self.rx.clone(),
            deadline: self.deadline,
            runtime: self.runtime,
        })
    }
}

/// A caller's part in a refresh: its outcome, and how long to wait for it.
struct Waiting {
    rx: watch::Receiver<Outcome>,
    deadline: Instant,
    runtime: tokio::runtime::Id,
}

/// The slow-path state of a cache, behind its mutex.
#[derive(Debug, Default)]
pub(super) struct Flight {
    /// The refresh under way, if any: waiters clone its receiver.
    running: Option<Running>,
    /// Incremented by every refresh started: a refresh only ever completes its own.
    generation: u64,
    /// Consecutive failed refreshes.
    failures: u32,
    /// The last failure, handed to callers that have no valid token while backing off.
    last_error: Option<Error>,
    /// No refresh starts before this instant after a failure.
    retry_at: Option<Instant>,
    /// When a 401 last forced a refresh.
    last_forced: Option<Instant>,
    /// The token a 401 last rejected: if the endpoint hands the same string out again, the
    /// new token keeps its id, so requests see that nothing changed and do not replay.
    rejected: Option<AccessToken>,
}

impl Flight {
    /// The refresh under way, unless its task is gone (closed channel) or presumed stuck.
    fn running_at(&self, now: Instant) -> Option<&Running> {
        self.running
            .as_ref()
            .filter(|r| r.rx.has_changed().is_ok() && now < r.deadline)
    }

    /// No refresh is running and the backoff does not forbid starting one.
    fn may_start(&self, now: Instant) -> bool {
        self.running_at(now).is_none() && self.retry_at.is_none_or(|at| now >= at)
    }

    fn is_current(&self, generation: u64) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.generation == generation)
    }

    pub(super) fn forced_too_recently(&self, now: Instant, interval: Duration) -> bool {
        self.last_forced
            .is_some_and(|last| now.saturating_duration_since(last) < interval)
    }

    pub(super) fn note_rejected(&mut self, token: AccessToken, now: Instant) {
        self.last_forced = Some(now);
        self.rejected = Some(token);
    }
}

/// What a caller without a usable token does next.
enum Next {
    Ready(AccessToken),
    Wait(Waiting),
}

fn aborted(why: &str) -> Error {
    Error::new(
        Kind::RefreshAborted,
        format!("the token refresh {why}; the next request will try again"),
    )
}

/// Whether the current Tokio runtime has its time driver. Tokio offers no query for it:
/// creating a timer without one panics, so ask by creating one (not polled, nothing is
/// registered) and catching that panic. Only called on the slow path.
fn runtime_has_timer() -> bool {
    std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok()
}

impl Shared {
    /// The slow path: join the refresh in flight, or start one, or fail fast while backing
    /// off; then wait for its outcome (no longer than until it is presumed stuck).
    pub(super) async fn wait_for_token(self: &Arc<Self>) -> Result<AccessToken, Error> {
        let (mut rx, deadline, runtime) = match self.join_or_start()? {
            Next::Ready(token) => return Ok(token),
            Next::Wait(waiting) => (waiting.rx, waiting.deadline, waiting.runtime),
        };
        // A deadline of our own only helps when the refresh runs on another runtime, which
        // nobody may be driving. On ours, its own timeout bounds it: if this runtime is
        // driven, so is the refresh task; if not, a timer of ours would not fire either.
        // (Skipping the timer matters in a stampede: thousands of waiters, one refresh.)
        let same_runtime = tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == runtime);
        let waited = if !same_runtime && runtime_has_timer() {
            tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await
        } else {
            Ok(rx.wait_for(Option::is_some).await)
        };
        let outcome =
            match waited {
                Ok(Ok(outcome)) => outcome.clone(),
                Ok(Err(_closed)) => None,
                Err(_elapsed) => return Err(aborted(
                    "did not finish in time (its task may sit on a runtime that is not running)",
                )),
            };
        outcome.unwrap_or_else(|| {
            Err(aborted(
                "ended without an answer (the runtime is shutting down, or the token source \
                 panicked)",
            ))
        })
    }

    fn join_or_start(self: &Arc<Self>) -> Result<Next, Error> {
        let mut flight = self.lock_flight();
        let now = Instant::now();
        // Check again under the lock: a refresh may have finished since our lock-free look.
        if let Some(entry) = self.current.load().as_deref() {
            if entry.schedule.freshness(now) != Freshness::Expired {
                return Ok(Next::Ready(entry.token.clone()));
            }
        }
        if let Some(running) = flight.running_at(now) {
            return Ok(running.waiting());
        }
        if let (Some(retry_at), Some(error)) = (flight.retry_at, &flight.last_error) {
            if now < retry_at {
                return Err(error.clone());
            }
        }
        let running = self.start(&mut flight, now, Trigger::Waiting)?;
        Ok(running.waiting())
    }

    /// A stale token was served at `now`: make sure one background refresh is under way,
    /// unless one runs already or the endpoint is backing off. Never waits for a lock.
    pub(super) fn refresh_in_background(self: &Arc<Self>, now: Instant) {
        if self.nanos_since_epoch(now) < self.not_before.load(Ordering::Acquire) {
            return;
        }
        let mut flight = match self.flight.try_lock() {
            Ok(flight) => flight,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return, // someone else is deciding right now
        };
        if !flight.may_start(now) {
            return;
        }
        // A refresh may have completed since our look: only refresh a still-stale token.
        let stale = self
            .current
            .load()
            .as_deref()
            .is_some_and(|e| e.schedule.freshness(now) == Freshness::Stale);
        if stale {
            if let Err(error) = self.start(&mut flight, now, Trigger::Background) {
                tracing::warn!(%error, "could not start a background token refresh");
            }
        }
    }

    /// A token was just dropped after a 401: start its replacement at once (so that even a
    /// request whose 401 cannot be replayed leaves a new token for the next one), unless a
    /// refresh runs already or the backoff forbids it.
    pub(super) fn replace_dropped(self: &Arc<Self>, flight: &mut Flight, now: Instant) {
        if flight.may_start(now) {
            if let Err(error) = self.start(flight, now, Trigger::Rejected) {
                tracing::warn!(%error, "could not start a token refresh after a 401");
            }
        }
    }

    /// Start the one refresh. Called with the flight lock held and no refresh running.
    fn start<'f>(
        self: &Arc<Self>,
        flight: &'f mut Flight,
        now: Instant,
        trigger: Trigger,
    ) -> Result<&'f Running, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config(
                "no Tokio runtime is running: docplanner-auth refreshes tokens in a Tokio task \
                 (with the time driver enabled); call it from within a Tokio runtime",
            )
        })?;
        if !runtime_has_timer() {
            let error = Error::config(
                "the Tokio runtime has no time driver: docplanner-auth needs timers for \
                 token request timeouts and backoff; build the runtime with enable_time() \
                 (or enable_all())",
            );
            return Err(self.record_failure(flight, error, now));
        }
        let (tx, rx) = watch::channel(None);
        flight.generation = flight.generation.wrapping_add(1);
        let generation = flight.generation;
        let timeout = self.config.request_timeout;
        let budget = timeout
            .saturating_add(timeout.min(STUCK_REFRESH_GRACE))
            .saturating_add(self.fleet.as_ref().map_or(Duration::ZERO, |f| f.budget()));
        let deadline = now.checked_add(budget).unwrap_or_else(|| far_future(now));
        let span = self.observer.refresh_started(trigger);
        runtime.spawn(Arc::clone(self).run(generation, tx).instrument(span));
        Ok(flight.running.insert(Running {
            rx,
            generation,
            deadline,
            runtime: runtime.id(),
        }))
    }

    /// The refresh task: fetch (with the request timeout), publish, tell the waiters.
    async fn run(self: Arc<Self>, generation: u64, tx: watch::Sender<Outcome>) {
        let mut guard = Unstick {
            shared: &self,
            generation,
            armed: true,
        };
        // Set here, not in `start`: a task dropped before it ever runs (spawned on a
        // runtime that is shutting down) must not leave the stale path switched off.
        if self.lock_flight().is_current(generation) {
            self.not_before.store(u64::MAX, Ordering::Release);
        }
        let known = {
            let flight = self.lock_flight();
            Known {
                current: self.current.load().as_deref().map(|e| e.token.clone()),
                rejected: flight.rejected.clone(),
            }
        };
        let started = Instant::now();
        let result = self.obtain(known).await;
        self.observer
            .refresh_done(&tracing::Span::current(), &result, started.elapsed());
        let outcome = self.complete(generation, result);
        guard.armed = false;
        tx.send_replace(Some(outcome));
    }

    /// Publish the outcome of a refresh: store a new token, or record the failure and the
    /// backoff. A failure never touches the stored token. The outcome of a refresh that
    /// was presumed stuck and replaced only reaches its own waiters.
    fn complete(
        &self,
        generation: u64,
        result: Result<AccessToken, Error>,
    ) -> Result<AccessToken, Error> {
        let now = Instant::now();
        let mut flight = self.lock_flight();
        if !flight.is_current(generation) {
            return result;
        }
        flight.running = None;
        let mut token = match result {
            Ok(token) => token,
            Err(error) => return Err(self.record_failure(&mut flight, error, now)),
        };
        let current = self.current.load();
        let same_as =
            |old: Option<&AccessToken>| old.filter(|o| o.same_secret(&token)).map(AccessToken::id);
        if let Some(id) = same_as(flight.rejected.as_ref())
            .or_else(|| same_as(current.as_deref().map(|e| &e.token)))
        {
            token.set_id(id);
        }
        let schedule =
            self.config
                .policy
                .schedule(token.obtained(), token.expires_at(), fastrand::f64());
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
            return Err(self.record_failure(&mut flight, error, now));
        }
        self.current.store(Some(Arc::new(Entry {
            token: token.clone(),
            schedule,
        })));
        flight.failures = 0;
        flight.last_error = None;
        flight.retry_at = None;
        flight.rejected = None;
        self.not_before.store(0, Ordering::Release);
        self.observer.token_stored(&token);
        Ok(token)
    }

    /// Count a failed refresh and set the backoff; returns the error for the waiters.
    fn record_failure(&self, flight: &mut Flight, error: Error, now: Instant) -> Error {
        flight.failures = flight.failures.saturating_add(1);
        let delay = self.config.backoff.delay(
            flight.failures,
            error.is_permanent(),
            error.retry_after(),
            fastrand::f64(),
        );
        let retry_at = now.checked_add(delay).unwrap_or_else(|| far_future(now));
        flight.retry_at = Some(retry_at);
        flight.last_error = Some(error.clone());
        self.not_before
            .store(self.nanos_since_epoch(retry_at), Ordering::Release);
        self.observer.backing_off(&error, flight.failures, delay);
        error
    }
}

/// A day from `now`: the furthest we ever schedule anything (an absurd configured delay
/// must not overflow the clock).
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(24 * 60 * 60)
}

/// Ends the running refresh if its task ends without completing: cancelled with the
/// runtime (the next caller starts a new one), or the token source panicked (recorded as
/// a failure, with its backoff, so a source that always panics is not called in a loop).
struct Unstick<'a> {
    shared: &'a Shared,
    generation: u64,
    armed: bool,
}

impl Drop for Unstick<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut flight = self.shared.lock_flight();
        if !flight.is_current(self.generation) {
            return;
        }
        flight.running = None;
        if std::thread::panicking() {
            let error =
                aborted("panicked (a bug in the token source, or a runtime without a time driver)");
            self.shared
                .record_failure(&mut flight, error, Instant::now());
        } else {
            self.shared.not_before.store(0, Ordering::Release);
        }
    }
}
