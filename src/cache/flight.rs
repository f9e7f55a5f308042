//! [`Flight`]: the single flight. At most one token request runs at a time (per Tokio
//! runtime, see below), in a task of its own whose outcome every waiting caller shares;
//! failures set the backoff before the next one may start.
//!
//! # Why one refresh per runtime
//!
//! A refresh runs in a task spawned on the runtime of the caller that started it, so that
//! dropping callers, even all of them, cancels nothing: the token arrives and is kept. A
//! caller joins only a refresh of its own runtime: if that runtime is driven, so is the
//! refresh; if it is not, the caller is not being polled either. A caller on another
//! runtime starts that runtime's own refresh instead of waiting on one that may sit on a
//! runtime nobody drives any more (a `current_thread` runtime outside `block_on`), so no
//! caller ever needs a timer to give up on someone else's refresh, and nothing has to ask
//! whether a runtime has one. An application with several runtimes may therefore make
//! one token request per runtime at once; one with a single runtime (nearly all of them)
//! makes exactly one.

use std::fmt;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Kind};
use crate::token::AccessToken;

/// What every caller of one refresh gets: the new token or the failure, shared.
pub(super) type Outcome = Result<AccessToken, Error>;

/// The refresh of one runtime, as the flight remembers it.
struct Running {
    runtime: tokio::runtime::Id,
    rx: watch::Receiver<Option<Outcome>>,
    generation: u64,
    /// Past this instant it is presumed stuck (its runtime is not being driven): the stale
    /// path then starts another one.
    deadline: Instant,
}

impl Running {
    /// Neither presumed stuck nor gone (its task dropped with a runtime shutting down).
    fn live(&self, now: Instant) -> bool {
        now < self.deadline && self.rx.has_changed().is_ok()
    }
}

/// A caller's share of a refresh.
pub(super) struct Waiter(watch::Receiver<Option<Outcome>>);

impl Waiter {
    /// The refresh's outcome, when it has one.
    pub(super) async fn outcome(mut self) -> Outcome {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or_else(|| Err(aborted())),
            Err(_closed) => Err(aborted()),
        }
    }
}

fn aborted() -> Error {
    Error::new(
        Kind::RefreshAborted,
        "the token refresh ended without an answer (its runtime is shutting down, or the \
         token source panicked); the next request will try again",
    )
}

/// The refresh task's end of the channel: it hands the outcome to every waiter.
pub(super) struct Publish(watch::Sender<Option<Outcome>>);

impl Publish {
    pub(super) fn send(self, outcome: Outcome) {
        self.0.send_replace(Some(outcome));
    }
}

/// The slow-path state of a cache, behind its mutex: the refreshes under way, and the
/// failures and backoff of the token endpoint.
#[derive(Default)]
pub(super) struct Flight {
    running: Vec<Running>,
    /// Incremented by every refresh started: a refresh only ever completes its own.
    generation: u64,
    /// Consecutive failed refreshes.
    failures: u32,
    /// The last failure, handed to callers that have no valid token while backing off.
    last_error: Option<Error>,
    /// No refresh starts before this instant after a failure.
    retry_at: Option<Instant>,
}

impl Flight {
    /// A share of the refresh of the caller's runtime, if one is under way.
    pub(super) fn join(&mut self, runtime: &Handle, now: Instant) -> Option<Waiter> {
        let id = runtime.id();
        self.running.retain(|r| r.live(now));
        self.running
            .iter()
            .find(|r| r.runtime == id)
            .map(|r| Waiter(r.rx.clone()))
    }

    /// Whether a refresh is under way on any runtime (and not presumed stuck).
    pub(super) fn any_running(&mut self, now: Instant) -> bool {
        self.running.retain(|r| r.live(now));
        !self.running.is_empty()
    }

    /// The last error, while the backoff forbids a new refresh at `now`.
    pub(super) fn backing_off(&self, now: Instant) -> Option<&Error> {
        match (self.retry_at, &self.last_error) {
            (Some(at), Some(error)) if now < at => Some(error),
            _ => None,
        }
    }

    /// Until when the backoff forbids a new refresh, if it does at `now`.
    pub(super) fn retry_at(&self, now: Instant) -> Option<Instant> {
        self.retry_at.filter(|&at| now < at)
    }

    pub(super) fn failures(&self) -> u32 {
        self.failures
    }

    pub(super) fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }

    /// A new refresh on `runtime`, presumed stuck after `deadline`: its generation, the
    /// first waiter's share and the task's end of the channel.
    pub(super) fn start(&mut self, runtime: &Handle, deadline: Instant) -> (u64, Waiter, Publish) {
        self.generation = self.generation.wrapping_add(1);
        let (tx, rx) = watch::channel(None);
        self.running.push(Running {
            runtime: runtime.id(),
            rx: rx.clone(),
            generation: self.generation,
            deadline,
        });
        (self.generation, Waiter(rx), Publish(tx))
    }

    /// The refresh `generation` ended; returns whether it was still ours to complete
    /// (it is not when it was presumed stuck and dropped meanwhile).
    pub(super) fn ended(&mut self, generation: u64) -> bool {
        let before = self.running.len();
        self.running.retain(|r| r.generation != generation);
        self.running.len() != before
    }

    /// A refresh succeeded: no backoff any more.
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
        self.last_error = None;
        self.retry_at = None;
    }

    /// A refresh failed with `error`: back off by `delay(failures)`; returns the instant
    /// the next one may start and the delay.
    pub(super) fn failed(
        &mut self,
        error: &Error,
        now: Instant,
        delay: impl FnOnce(u32) -> Duration,
    ) -> (Instant, Duration) {
        self.failures = self.failures.saturating_add(1);
        let delay = delay(self.failures);
        let retry_at = now.checked_add(delay).unwrap_or_else(|| far_future(now));
        self.retry_at = Some(retry_at);
        self.last_error = Some(error.clone());
        (retry_at, delay)
    }
}

impl fmt::Debug for Flight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight")
            .field("running", &self.running.len())
            .field("failures", &self.failures)
            .field("retry_at", &self.retry_at)
            .finish_non_exhaustive()
    }
}

/// A day from `now`: the furthest we ever schedule anything (an absurd configured delay
/// must not overflow the clock).
pub(super) fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(24 * 60 * 60)
}

/// Runs `on_abandon(panicking)` if dropped before [`disarm`](Self::disarm): a refresh task
/// that ends without completing (cancelled with its runtime, or its token source panicked)
/// must not leave the flight waiting for it.
pub(super) struct Abandoned<F: FnOnce(bool)>(Option<F>);

impl<F: FnOnce(bool)> Abandoned<F> {
    pub(super) fn new(on_abandon: F) -> Self {
        Self(Some(on_abandon))
    }

    pub(super) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce(bool)> Drop for Abandoned<F> {
    fn drop(&mut self) {
        if let Some(on_abandon) = self.0.take() {
            on_abandon(std::thread::panicking());
        }
    }
}
