//! What a cache reports about itself, in one place per event: the [`CacheStats`]
//! counters (always), the [`CacheStatus`] shape for health checks, `tracing` events, and
//! `metrics` (feature `metrics`).
//!
//! Nothing here ever sees a secret: events carry the cache's name, counts, durations and
//! error messages (which are built never to contain a secret or a token).
//!
//!
//! The metrics are listed in the [`cache`](super) module docs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;
use crate::token::AccessToken;

/// What a [`TokenCache`](super::TokenCache) has done since it was built (see
/// [`TokenCache::stats`](super::TokenCache::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Token requests started (each refresh is one, whatever the number of waiters).
    pub token_requests: u64,
    /// Token requests that failed.
    pub token_failures: u64,
    /// Token requests started in the background while a valid token was being served.
    pub background_refreshes: u64,
    /// Tokens the API rejected with a 401 (made suspect and replaced), or dropped with
    /// [`TokenCache::invalidate`](super::TokenCache::invalidate).
    pub invalidations: u64,
    /// 401 answers that did not force a refresh because freshly fetched tokens keep being
    /// rejected (see [`DEFAULT_REJECTION_BACKOFF_BASE`](super::DEFAULT_REJECTION_BACKOFF_BASE)).
    pub rate_limited_401s: u64,
    /// Requests replayed with a new token after a 401.
    pub replays: u64,
    /// Requests refused before sending (insecure scheme or foreign host).
    pub refused_requests: u64,
    /// Tokens adopted from a shared [`TokenStore`](crate::store::TokenStore) (refreshed by
    /// another cache or replica) instead of fetched.
    pub store_adoptions: u64,
    /// Episodes of store faults (a store that fails 1,000 times in a row is one episode,
    /// logged once); the cache fetches on its own during them.
    pub store_faults: u64,
}

/// The state of a cache's token at one instant (see [`CacheStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenState {
    /// No token yet (none was ever obtained, or it was invalidated).
    Empty,
    /// A token that is sent as it is.
    Fresh,
    /// A token that is still sent while one refresh replaces it in the background.
    Stale,
    /// A token the API rejected with a 401: still sent until a refresh replaces it (and
    /// while that refresh fails).
    Suspect,
    /// The token is past its usable lifetime: callers wait for a new one.
    Expired,
    /// No usable token, and the token endpoint is backing off after failures: callers fail
    /// fast with the last error until the backoff ends.
    BackingOff,
}

impl TokenState {
    /// The state as a short lowercase word (`"fresh"`, `"backing_off"`…), for health
    /// endpoints and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Empty => "empty",
            TokenState::Fresh => "fresh",
            TokenState::Stale => "stale",
            TokenState::Suspect => "suspect",
            TokenState::Expired => "expired",
            TokenState::BackingOff => "backing_off",
        }
    }
}

/// A cache's state at one instant, for health checks ([`TokenCache::status`](super::TokenCache::status)).
///
/// A health endpoint answers 503 while [`is_failing`](Self::is_failing) (no usable token,
/// and the token endpoint failing), 200 otherwise: an empty or expired cache is healthy,
/// its next request fetches a token. See `examples/axum_backend` for an axum `/healthz`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheStatus {
    /// The token's state.
    pub state: TokenState,
    /// How long the current token lives on (to its real expiry), if there is one.
    pub expires_in: Option<Duration>,
    /// How long the token endpoint backoff lasts from now, if one runs.
    pub backing_off_for: Option<Duration>,
    /// Token requests that failed in a row (0 after a success).
    pub consecutive_failures: u32,
    /// The last failure while it is not followed by a success (its message never
    /// contains a secret or a token).
    pub last_error: Option<Error>,
}

impl CacheStatus {
    /// No usable token, and the token endpoint is backing off after failures: requests
    /// fail fast until it recovers.
    pub fn is_failing(&self) -> bool {
        self.state == TokenState::BackingOff
    }

    /// Requests can be sent with a token now (fresh, stale or suspect).
    pub fn is_usable(&self) -> bool {
        matches!(
            self.state,
            TokenState::Fresh | TokenState::Stale | TokenState::Suspect
        )
    }
}

/// Why a refresh started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// Callers had no usable token and wait for this one.
    Waiting,
    /// The token is stale; callers keep it meanwhile.
    Background,
    /// The API rejected the token (401).
    Rejected,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Waiting => "waiting",
            Trigger::Background => "background",
            Trigger::Rejected => "after_401",
        }
    }
}

/// The counters and the cache's name, reporting each event.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    name: String,
    token_requests: AtomicU64,
    token_failures: AtomicU64,
    background_refreshes: AtomicU64,
    invalidations: AtomicU64,
    rate_limited: AtomicU64,
    replays: AtomicU64,
    refused_requests: AtomicU64,
    store_adoptions: AtomicU64,
    store_faults: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Observer {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn snapshot(&self, current: Option<&AccessToken>) -> CacheStats {
        self.token_gauges(current);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            token_requests: get(&self.token_requests),
            token_failures: get(&self.token_failures),
            background_refreshes: get(&self.background_refreshes),
            invalidations: get(&self.invalidations),
            rate_limited_401s: get(&self.rate_limited),
            replays: get(&self.replays),
            refused_requests: get(&self.refused_requests),
            store_adoptions: get(&self.store_adoptions),
            store_faults: get(&self.store_faults),
        }
    }

    /// The span of one refresh; the outcome and duration are recorded in it when done.
    pub(crate) fn refresh_started(&self, trigger: Trigger) -> tracing::Span {
        if trigger == Trigger::Background {
            bump(&self.background_refreshes);
        }
        // A refresh serves every caller, not the request that happened to trigger it: a
        // root span of its own, linked to that request's span.
        let span = tracing::info_span!(
            parent: None,
            "docplanner_auth.refresh",
            cache = %self.name,
            trigger = trigger.as_str(),
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        span.follows_from(tracing::Span::current());
        span
    }

    /// A request to the token source starts.
    pub(crate) fn fetching(&self) {
        bump(&self.token_requests);
    }

    /// A token refreshed by another cache or replica was taken from the store.
    pub(crate) fn adopted(&self) {
        bump(&self.store_adoptions);
        tracing::debug!(cache = %self.name, "token adopted from the shared store");
        #[cfg(feature = "metrics")]
        metrics::counter!("docplanner_auth_store_adoptions_total", "cache" => self.name.clone())
            .increment(1);
    }

    /// A store fault episode starts (logged once; the cache works without the store).
    pub(crate) fn store_fault(&self, error: &Error) {
        bump(&self.store_faults);
        tracing::warn!(cache = %self.name, %error, "token store fault");
        #[cfg(feature = "metrics")]
        metrics::counter!("docplanner_auth_store_faults_total", "cache" => self.name.clone())
            .increment(1);
    }

    /// A refresh ended (before any backoff is decided).
    pub(crate) fn refresh_done(
        &self,
        span: &tracing::Span,
        result: &Result<AccessToken, Error>,
        took: Duration,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if e.is_transient() => "transient_error",
            Err(_) => "permanent_error",
        };
        let duration_ms = took.as_millis() as u64;
        span.record("outcome", outcome);
        span.record("duration_ms", duration_ms);
        tracing::debug!(cache = %self.name, outcome, duration_ms, "token request done");
        #[cfg(feature = "metrics")]
        {
            let labels = [
                ("cache", self.name.clone()),
                ("outcome", outcome.to_owned()),
            ];
            metrics::counter!("docplanner_auth_token_fetches_total", &labels).increment(1);
            metrics::histogram!("docplanner_auth_token_fetch_duration_seconds", &labels)
                .record(took.as_secs_f64());
        }
    }

    pub(crate) fn token_stored(&self, token: &AccessToken) {
        tracing::info!(cache = %self.name, lifetime_s = token.lifetime().as_secs(), "new access token stored");
        self.token_gauges(Some(token));
    }

    pub(crate) fn backing_off(&self, error: &Error, failures: u32, delay: Duration) {
        bump(&self.token_failures);
        tracing::warn!(
            cache = %self.name,
            %error,
            failures,
            retry_in_ms = delay.as_millis() as u64,
            "token refresh failed; backing off"
        );
    }

    pub(crate) fn invalidated(&self) {
        bump(&self.invalidations);
        tracing::info!(cache = %self.name, "token rejected (401): suspect until a new one arrives");
        #[cfg(feature = "metrics")]
        metrics::counter!("docplanner_auth_invalidations_total", "cache" => self.name.clone())
            .increment(1);
    }

    pub(crate) fn rate_limited(&self) {
        bump(&self.rate_limited);
        tracing::debug!(
            cache = %self.name,
            "401 for the current token: no forced refresh, fresh tokens keep being rejected"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!("docplanner_auth_rate_limited_401s_total", "cache" => self.name.clone())
            .increment(1);
    }

    pub(crate) fn replayed(&self) {
        bump(&self.replays);
        tracing::debug!(cache = %self.name, "replaying a request with a new token after a 401");
        #[cfg(feature = "metrics")]
        metrics::counter!("docplanner_auth_replays_total", "cache" => self.name.clone())
            .increment(1);
    }

    pub(crate) fn refused(&self, error: &Error) {
        bump(&self.refused_requests);
        tracing::warn!(cache = %self.name, %error, "request refused before sending");
        #[cfg(feature = "metrics")]
        {
            let reason = if error.is_insecure_scheme() {
                "insecure_scheme"
            } else {
                "host_not_allowed"
            };
            metrics::counter!(
                "docplanner_auth_refused_requests_total",
                "cache" => self.name.clone(),
                "reason" => reason
            )
            .increment(1);
        }
    }

    /// The remaining-lifetime and expiry gauges for the current token (none: zero).
    #[allow(unused_variables)]
    fn token_gauges(&self, current: Option<&AccessToken>) {
        #[cfg(feature = "metrics")]
        {
            let remaining = current.map_or(Duration::ZERO, |t| {
                t.expires_at()
                    .saturating_duration_since(tokio::time::Instant::now())
            });
            let expiry = current.map_or(0.0, |_| {
                (std::time::SystemTime::now() + remaining)
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            });
            metrics::gauge!("docplanner_auth_token_remaining_seconds", "cache" => self.name.clone())
                .set(remaining.as_secs_f64());
            metrics::gauge!("docplanner_auth_token_expiry_timestamp_seconds", "cache" => self.name.clone())
                .set(expiry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words health endpoints and logs show: part of the API.
    #[test]
    fn each_state_has_its_word() {
        let words = [
            TokenState::Empty,
            TokenState::Fresh,
            TokenState::Stale,
            TokenState::Suspect,
            TokenState::Expired,
            TokenState::BackingOff,
        ]
        .map(TokenState::as_str);
        assert_eq!(
            words,
            [
                "empty",
                "fresh",
                "stale",
                "suspect",
                "expired",
                "backing_off"
            ]
        );
    }
}
