//! When a token is fresh, stale or expired, and how long to wait after a failure.
//!
//! Everything here is a pure function of its inputs (the token's moments, the policy, the
//! current instant and a jitter fraction in `[0, 1)`), so it is tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// Default refresh lead: 300 s before the token stops being usable, a refresh starts in
/// the background.
///
/// Five minutes is the order google-auth uses (stale 225 s before expiry) with room for
/// several backed-off retries of a failing token endpoint before the token runs out. It
/// is capped at half the token's lifetime (as huskarl does), so short tokens work.
pub const DEFAULT_REFRESH_LEAD: Duration = Duration::from_secs(300);

/// Default expiry margin: 30 s before its real expiry a token is treated as expired and
/// never sent again.
///
/// It covers a request that leaves just before expiry and arrives just after, over a slow
/// network (aws-smithy's identity cache uses 10 s; google-auth 180 s, because its clock
/// may be skewed — ours is not: expiry is measured on our monotonic clock from the moment
/// the token request was sent). Capped at a tenth of the lifetime for short tokens.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Default refresh jitter: the refresh moment is moved earlier by a random amount up to
/// 60 s, so that many clients or replicas holding tokens of the same age do not all
/// refresh in the same instant (aws-smithy's lazy cache jitters its buffer the same way).
/// Capped at a tenth of the lifetime.
pub const DEFAULT_REFRESH_JITTER: Duration = Duration::from_secs(60);

/// The three states of a cached token at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Use it, nothing else to do.
    Fresh,
    /// Use it, and make sure one background refresh is under way.
    Stale,
    /// Do not send it: wait for a new one.
    Expired,
}

/// The refresh timing of a token: how early to refresh it and when to stop using it.
///
/// ```
/// use std::time::Duration;
/// use docplanner_auth::cache::RefreshPolicy;
///
/// let mut policy = RefreshPolicy::default();
/// policy.lead = Duration::from_secs(600);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshPolicy {
    /// How long before the token stops being usable a background refresh starts.
    pub lead: Duration,
    /// How long before its real expiry a token stops being used.
    pub margin: Duration,
    /// The largest random amount by which each refresh moment is moved earlier.
    pub jitter: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            lead: DEFAULT_REFRESH_LEAD,
            margin: DEFAULT_EXPIRY_MARGIN,
            jitter: DEFAULT_REFRESH_JITTER,
        }
    }
}

/// The two moments that matter for one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// From here on the token is stale: refresh in the background.
    pub(crate) refresh_at: Instant,
    /// From here on the token is expired: never send it.
    pub(crate) usable_until: Instant,
}

impl RefreshPolicy {
    /// The schedule of a token obtained at `obtained` that expires at `expires`;
    /// `jitter_fraction` in `[0, 1)` picks the point inside the jitter span.
    ///
    /// Always `obtained <= refresh_at <= usable_until <= expires`.
    pub(crate) fn schedule(
        &self,
        obtained: Instant,
        expires: Instant,
        jitter_fraction: f64,
    ) -> Schedule {
        let lifetime = expires.saturating_duration_since(obtained);
        let margin = self.margin.min(lifetime / 10);
        let lead = self.lead.min(lifetime / 2);
        let jitter = self
            .jitter
            .min(lifetime / 10)
            .mul_f64(jitter_fraction.clamp(0.0, 1.0));
        let usable_until = expires - margin;
        let usable_span = usable_until.saturating_duration_since(obtained);
        let refresh_at = obtained + usable_span.saturating_sub(lead + jitter);
        Schedule {
            refresh_at,
            usable_until,
        }
    }
}

impl Schedule {
    pub(crate) fn freshness(&self, now: Instant) -> Freshness {
        if now < self.refresh_at {
            Freshness::Fresh
        } else if now < self.usable_until {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

/// Default token request timeout: 10 s.
///
/// The token call is one small POST; 10 s covers a cold TLS handshake to a distant market
/// on a slow link, yet keeps callers that are waiting for a token from hanging behind a
/// stuck endpoint (golang.org/x/oauth2 has no timeout at all, which is how a stuck token
/// endpoint stalls a whole Go service). Inside the default 300 s refresh lead, it leaves
/// room for many retries before a token runs out.
pub const DEFAULT_TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default first delay after a transient token-endpoint failure: 1 s, doubled after each
/// further failure.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Default longest delay after transient failures: 30 s. A caller with no valid token
/// fails fast for at most this long after the endpoint heals (AWS SDKs cap at 20 s).
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Default first delay after a permanent failure (rejected credentials, malformed answer):
/// 30 s, doubled up to [`DEFAULT_PERMANENT_BACKOFF_CAP`]. Retrying at all lets an operator
/// fix credentials without a restart; retrying slowly keeps a misconfigured fleet from
/// hammering the endpoint.
pub const DEFAULT_PERMANENT_BACKOFF_BASE: Duration = Duration::from_secs(30);

/// Default longest delay after permanent failures: 5 min, so a fixed secret is picked up
/// within five minutes while a wrong one costs at most 12 token requests an hour.
pub const DEFAULT_PERMANENT_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The longest `Retry-After` we honour: 10 min. A server asking for longer (or a date far
/// in the future) is more likely wrong than right.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Default random share of each backoff delay: one half ("equal jitter"), so replicas
/// that failed together spread out while every delay stays at least half its nominal value.
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.5;

/// How long to wait after failures of the token endpoint.
///
/// Exponential with jitter: the nominal delay for the n-th consecutive failure is
/// `min(cap, base·2ⁿ⁻¹)`, of which the share `jitter` is random (by default the second
/// half: "equal jitter"); a `Retry-After` from the server is a floor (up to
/// [`MAX_RETRY_AFTER`]).
///
/// ```
/// use std::time::Duration;
/// use docplanner_auth::cache::Backoff;
///
/// let mut backoff = Backoff::default();
/// backoff.cap = Duration::from_secs(10);
/// # let _ = backoff;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// First delay after a transient failure.
    pub base: Duration,
    /// Longest delay after transient failures.
    pub cap: Duration,
    /// First delay after a permanent failure.
    pub permanent_base: Duration,
    /// Longest delay after permanent failures.
    pub permanent_cap: Duration,
    /// The random share of each delay, from 0.0 (none: a fixed schedule) to 1.0 (the whole
    /// delay is random).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: DEFAULT_BACKOFF_BASE,
            cap: DEFAULT_BACKOFF_CAP,
            permanent_base: DEFAULT_PERMANENT_BACKOFF_BASE,
            permanent_cap: DEFAULT_PERMANENT_BACKOFF_CAP,
            jitter: DEFAULT_BACKOFF_JITTER,
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th consecutive failure (1 for the first).
    pub(crate) fn delay(
        &self,
        failures: u32,
        permanent: bool,
        retry_after: Option<Duration>,
        jitter_fraction: f64,
    ) -> Duration {
        let (base, cap) = if permanent {
            (self.permanent_base, self.permanent_cap)
        } else {
            (self.base, self.cap)
        };
        let doublings = failures.saturating_sub(1).min(32);
        let full = base.saturating_mul(1u32 << doublings.min(31)).min(cap);
        let share = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            DEFAULT_BACKOFF_JITTER
        };
        let random = full.mul_f64(share);
        let delay = (full - random) + random.mul_f64(jitter_fraction.clamp(0.0, 1.0));
        match retry_after {
            Some(asked) => delay.max(asked.min(MAX_RETRY_AFTER)),
            None => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(base: Instant, secs: f64) -> Instant {
        base + Duration::from_secs_f64(secs)
    }

    #[test]
    fn one_hour_token_default_schedule() {
        let t0 = Instant::now();
        let s = RefreshPolicy::default().schedule(t0, at(t0, 3600.0), 0.0);
        assert_eq!(s.usable_until, at(t0, 3570.0));
        assert_eq!(s.refresh_at, at(t0, 3270.0));
        let s = RefreshPolicy::default().schedule(t0, at(t0, 3600.0), 0.5);
        assert_eq!(s.refresh_at, at(t0, 3240.0));
        assert_eq!(s.freshness(at(t0, 3239.0)), Freshness::Fresh);
        assert_eq!(s.freshness(at(t0, 3240.0)), Freshness::Stale);
        assert_eq!(s.freshness(at(t0, 3570.0)), Freshness::Expired);
    }

    #[test]
    fn short_tokens_scale_down() {
        let t0 = Instant::now();
        let s = RefreshPolicy::default().schedule(t0, at(t0, 10.0), 0.0);
        // margin 1 s (a tenth), lead 5 s (half)
        assert_eq!(s.usable_until, at(t0, 9.0));
        assert_eq!(s.refresh_at, at(t0, 4.0));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_honours_retry_after() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, false, None, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(1, false, None, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, false, None, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(50, false, None, 1.0), Duration::from_secs(30));
        assert_eq!(b.delay(1, true, None, 1.0), Duration::from_secs(30));
        assert_eq!(b.delay(9, true, None, 1.0), Duration::from_secs(300));
        let asked = Some(Duration::from_secs(20));
        assert_eq!(b.delay(1, false, asked, 0.0), Duration::from_secs(20));
        let absurd = Some(Duration::from_secs(86_400));
        assert_eq!(b.delay(1, false, absurd, 0.0), MAX_RETRY_AFTER);
    }

    proptest! {
        #[test]
        fn schedule_is_ordered(
            lifetime_ms in 0u64..200_000_000,
            lead_ms in 0u64..1_000_000,
            margin_ms in 0u64..1_000_000,
            jitter_ms in 0u64..1_000_000,
            fraction in 0.0f64..1.0,
        ) {
            let policy = RefreshPolicy {
                lead: Duration::from_millis(lead_ms),
                margin: Duration::from_millis(margin_ms),
                jitter: Duration::from_millis(jitter_ms),
            };
            let t0 = Instant::now();
            let expires = t0 + Duration::from_millis(lifetime_ms);
            let s = policy.schedule(t0, expires, fraction);
            prop_assert!(t0 <= s.refresh_at);
            prop_assert!(s.refresh_at <= s.usable_until);
            prop_assert!(s.usable_until <= expires);
            // jitter stays within its bound: the refresh moment moves at most `jitter`
            // (and at most a tenth of the lifetime) earlier than without jitter
            let unjittered = policy.schedule(t0, expires, 0.0);
            let moved = unjittered.refresh_at - s.refresh_at;
            prop_assert!(moved <= policy.jitter.min(Duration::from_millis(lifetime_ms) / 10));
            // never stale after expired, never fresh past expiry
            prop_assert_eq!(s.freshness(expires), Freshness::Expired);
            if s.refresh_at < s.usable_until {
                prop_assert_eq!(s.freshness(s.refresh_at), Freshness::Stale);
            }
        }

        #[test]
        fn backoff_is_bounded(failures in 0u32..1000, permanent: bool, fraction in 0.0f64..1.0,
                              asked in proptest::option::of(0u64..1_000_000)) {
            let b = Backoff::default();
            let d = b.delay(failures, permanent, asked.map(Duration::from_secs), fraction);
            let cap = if permanent { b.permanent_cap } else { b.cap };
            prop_assert!(d <= cap.max(MAX_RETRY_AFTER));
            let base = if permanent { b.permanent_base } else { b.base };
            prop_assert!(d >= base / 2);
        }

        #[test]
        fn no_jitter_is_a_fixed_schedule(failures in 1u32..40, fraction in 0.0f64..1.0) {
            let b = Backoff { jitter: 0.0, ..Backoff::default() };
            let d = b.delay(failures, false, None, fraction);
            prop_assert_eq!(d, b.delay(failures, false, None, 0.0));
            let nominal = b.base.saturating_mul(1 << (failures - 1).min(31)).min(b.cap);
            prop_assert_eq!(d, nominal);
        }
    }
}
