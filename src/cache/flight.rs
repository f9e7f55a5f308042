//! Single flight: at most one token request at a time per cache, run in a task of its
//! own, whose outcome every waiter shares; plus the backoff after failures.

use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Entry, Freshness, Shared};
use crate::error::{Error, Kind};
use crate::token::AccessToken;

/// The outcome of one refresh, shared by every waiter.
type Outcome = Option<Result<AccessToken, Error>>;

/// The slow-path state of a cache, behind its mutex.
#[derive(Debug, Default)]
pub(super) struct Flight {
    /// The refresh under way, if any: waiters clone this receiver.
    running: Option<watch::Receiver<Outcome>>,
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
    fn is_running(&self) -> bool {
        // A closed channel means the refresh task is gone; it is not running any more.
        self.running
            .as_ref()
            .is_some_and(|rx| rx.has_changed().is_ok())
    }

    /// No refresh is running and the backoff does not forbid starting one.
    fn may_start(&self, now: Instant) -> bool {
        !self.is_running() && self.retry_at.is_none_or(|at| now >= at)
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
    Wait(watch::Receiver<Outcome>),
}

impl Shared {
    /// The slow path: join the refresh in flight, or start one, or fail fast while backing
    /// off; then wait for its outcome.
    pub(super) async fn wait_for_token(self: &Arc<Self>) -> Result<AccessToken, Error> {
        let mut rx = match self.join_or_start()? {
            Next::Ready(token) => return Ok(token),
            Next::Wait(rx) => rx,
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| {
            Err(Error::new(
                Kind::RefreshAborted,
                "the token refresh ended without an answer (the runtime is shutting down, or \
                 the token source panicked); the next request will try again",
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
        if flight.is_running() {
            if let Some(rx) = &flight.running {
                return Ok(Next::Wait(rx.clone()));
            }
        }
        if let (Some(retry_at), Some(error)) = (flight.retry_at, &flight.last_error) {
            if now < retry_at {
                return Err(error.clone());
            }
        }
        self.start(&mut flight, false).map(Next::Wait)
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
            if let Err(error) = self.start(&mut flight, true) {
                tracing::warn!(%error, "could not start a background token refresh");
            }
        }
    }

    /// A token was just dropped after a 401: start its replacement at once (so that even a
    /// request whose 401 cannot be replayed leaves a new token for the next one), unless a
    /// refresh runs already or the backoff forbids it.
    pub(super) fn replace_dropped(self: &Arc<Self>, flight: &mut Flight, now: Instant) {
        if flight.may_start(now) {
            if let Err(error) = self.start(flight, false) {
                tracing::warn!(%error, "could not start a token refresh after a 401");
            }
        }
    }

    /// Start the one refresh. Called with the flight lock held and no refresh running.
    fn start(
        self: &Arc<Self>,
        flight: &mut Flight,
        background: bool,
    ) -> Result<watch::Receiver<Outcome>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config(
                "no Tokio runtime is running: docplanner-auth refreshes tokens in a Tokio task \
                 (with the time driver enabled); call it from within a Tokio runtime",
            )
        })?;
        let (tx, rx) = watch::channel(None);
        flight.running = Some(rx.clone());
        self.not_before.store(u64::MAX, Ordering::Release);
        self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
        if background {
            self.counters
                .background_refreshes
                .fetch_add(1, Ordering::Relaxed);
        }
        runtime.spawn(Arc::clone(self).run(tx));
        Ok(rx)
    }

    /// The refresh task: fetch (with the request timeout), publish, tell the waiters.
    async fn run(self: Arc<Self>, tx: watch::Sender<Outcome>) {
        let mut guard = Unstick {
            shared: &self,
            armed: true,
        };
        let timeout = self.config.request_timeout;
        let result = match tokio::time::timeout(timeout, self.source.fetch()).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(error)) => Err(Error::from_source(error)),
            Err(_) => Err(Error::new(
                Kind::Timeout,
                format!(
                    "the token request took longer than {timeout:?} and was abandoned; \
                     it will be retried with backoff (tune it with token_request_timeout)"
                ),
            )),
        };
        let outcome = self.complete(result);
        guard.armed = false;
        tx.send_replace(Some(outcome));
    }

    /// Publish the outcome of a refresh: store a new token, or record the failure and the
    /// backoff. A failure never touches the stored token.
    fn complete(&self, result: Result<AccessToken, Error>) -> Result<AccessToken, Error> {
        let now = Instant::now();
        let mut flight = self.lock_flight();
        flight.running = None;
        match result {
            Ok(mut token) => {
                let current = self.current.load();
                let same_as = |old: Option<&AccessToken>| {
                    old.filter(|o| o.same_secret(&token)).map(AccessToken::id)
                };
                if let Some(id) = same_as(flight.rejected.as_ref())
                    .or_else(|| same_as(current.as_deref().map(|e| &e.token)))
                {
                    token.set_id(id);
                }
                let schedule = self.config.policy.schedule(
                    token.obtained(),
                    token.expires_at(),
                    fastrand::f64(),
                );
                self.current.store(Some(Arc::new(Entry {
                    token: token.clone(),
                    schedule,
                })));
                flight.failures = 0;
                flight.last_error = None;
                flight.retry_at = None;
                self.not_before.store(0, Ordering::Release);
                tracing::debug!(lifetime = ?token.lifetime(), "new access token stored");
                Ok(token)
            }
            Err(error) => {
                flight.failures = flight.failures.saturating_add(1);
                let delay = self.config.backoff.delay(
                    flight.failures,
                    error.is_permanent(),
                    error.retry_after(),
                    fastrand::f64(),
                );
                let retry_at = now + delay;
                flight.retry_at = Some(retry_at);
                flight.last_error = Some(error.clone());
                self.not_before
                    .store(self.nanos_since_epoch(retry_at), Ordering::Release);
                self.counters.token_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    %error,
                    failures = flight.failures,
                    retry_in = ?delay,
                    "token refresh failed; backing off"
                );
                Err(error)
            }
        }
    }
}

/// Clears the running refresh if its task ends without completing (cancelled with the
/// runtime, or the token source panicked), so that the next caller starts a new one.
struct Unstick<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for Unstick<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut flight = self.shared.lock_flight();
            flight.running = None;
            self.shared.not_before.store(0, Ordering::Release);
        }
    }
}
