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
/// 14 to 24 attempts of a failing token endpoint before the token runs out.
/// For short tokens it is scaled down to a tenth of the lifetime (at least 2 s, or an
/// eighth of the lifetime if that is less), so that a
/// token is renewed after at least 80 % of its life: at most 1.25 token requests per
/// lifetime for any lifetime of a minute or more.
pub const DEFAULT_REFRESH_LEAD: Duration = Duration::from_secs(300);

/// Default expiry margin: 30 s before its real expiry a token is treated as expired and
/// never sent again.
///
/// It covers a request that leaves just before expiry and arrives just after, over a slow
/// network (aws-smithy's identity cache uses 10 s; google-auth 180 s, because its clock
/// may be skewed — ours is not: expiry is measured on our monotonic clock from the moment
/// the token request was sent). For short tokens it is scaled down to a twentieth of the
/// lifetime, but never below 1 s: servers that write `exp` in whole seconds floor it, so a
/// token may die up to 1 s before its `expires_in` says.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Default refresh jitter: the refresh moment is moved earlier by a random amount up to
/// 60 s, so that many clients or replicas holding tokens of the same age do not all
/// refresh in the same instant (aws-smithy's lazy cache jitters its buffer the same way).
/// Scaled down to a fortieth of the lifetime for short tokens. For a token shared through
/// a store the amount is derived from the token, the same on every replica: the fleet
/// has one refresh moment, and its replicas spread their looks after it.
pub const DEFAULT_REFRESH_JITTER: Duration = Duration::from_secs(60);

/// The share of a token's lifetime the refresh lead may take: a tenth. With the margin
/// (a twentieth) and the jitter (a fortieth), a token is renewed after at least 82.5 % of
/// its life, 1.21 token requests per lifetime at worst.
const LEAD_SHARE: u32 = 10;

/// The shortest refresh lead the lifetime share may shrink to: 2 s (but at most an eighth
/// of the lifetime, [`FLOOR_SHARE`]), so that a 16 s token still leaves room for a retry
/// of a failing endpoint before it is unusable (a 10 s one: 1.25 s, two attempts with the
/// default backoff, at 1.36 token requests per lifetime).
const MIN_LEAD: Duration = Duration::from_secs(2);

/// The floors of the lead and of the margin never take more than an eighth of the
/// lifetime each: a token shorter than 16 s is renewed after about 70 % of its life (a 4 s
/// one at 2.9 s), not after a quarter of it. The cost, below 8 s: the margin is under the
/// second of a floored `exp`, so a server that floors it may see such a token just after
/// its `exp`; the 401 then makes one refresh and one replay.
const FLOOR_SHARE: u32 = 8;

/// The share of a token's lifetime the expiry margin may take: a twentieth.
const MARGIN_SHARE: u32 = 20;

/// The shortest expiry margin the lifetime share may shrink to: 1 s, the granularity of
/// JWT `exp` (seconds since the epoch, floored by the server).
const EXPIRY_GRANULARITY: Duration = Duration::from_secs(1);

/// The share of a token's lifetime the jitter may take: a fortieth.
const JITTER_SHARE: u32 = 40;

/// The share of the stale window over which the replicas of a fleet spread their first
/// look at the store after the refresh moment they agree on (when it is longer than the
/// jitter): a half. The first replica refreshes at that moment; the others look later
/// and most of them have heard of its lock or its token by then (a notice takes a round
/// trip, more on a loaded machine; a 4 s token's stale window is only 0.6 s), while half
/// of the window remains for the retries of a failing endpoint.
const LOOK_SHARE: u32 = 2;

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
    /// How long before the token stops being usable a background refresh starts (at most a
    /// tenth of the token's lifetime, at least 2 s or an eighth of it).
    pub lead: Duration,
    /// How long before its real expiry a token stops being used (at most a twentieth of
    /// the token's lifetime, at least 1 s).
    pub margin: Duration,
    /// The largest random amount by which each refresh moment is moved earlier (at most a
    /// fortieth of the token's lifetime; for a token shared through a store, an amount
    /// derived from the token, the same on every replica).
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
    /// Lead, margin and jitter are each capped by a share of the lifetime (a tenth but at
    /// least 2 s, a twentieth but at least 1 s, a fortieth), the floors by an eighth of
    /// it, so short tokens are renewed late in their life and, from 8 s up, never sent
    /// after a whole-second `exp` floored by the server. Always
    /// `obtained <= refresh_at <= usable_until <= expires`.
    ///
    /// A pure function of its inputs: a fleet may agree on one refresh moment by deriving
    /// `jitter_fraction` from the token itself.
    pub(crate) fn schedule(
        &self,
        obtained: Instant,
        expires: Instant,
        jitter_fraction: f64,
    ) -> Schedule {
        let lifetime = expires.saturating_duration_since(obtained);
        let floor = |floor: Duration| floor.min(lifetime / FLOOR_SHARE);
        let margin = self
            .margin
            .min((lifetime / MARGIN_SHARE).max(floor(EXPIRY_GRANULARITY)));
        let lead = self.lead.min((lifetime / LEAD_SHARE).max(floor(MIN_LEAD)));
        let jitter = self
            .jitter_span(lifetime)
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

impl RefreshPolicy {
    /// The jitter of a token of `lifetime`: at most a fortieth of it.
    fn jitter_span(&self, lifetime: Duration) -> Duration {
        self.jitter.min(lifetime / JITTER_SHARE)
    }

    /// The schedule of a token shared by a fleet through a store. Every replica computes
    /// the same refresh moment from `agreed` (a fraction derived from the token itself),
    /// so the fleet refreshes when one cache would, not at its earliest replica's moment;
    /// this replica then turns stale at the point `own` (its random fraction) of a span
    /// after that moment (the jitter, or half of the stale window if that is longer),
    /// never past `usable_until`. The first replica to
    /// turn stale refreshes; the others are spread over the span, so most of them hear of
    /// its lock, or of its new token, before they look.
    pub(crate) fn shared_schedule(
        &self,
        obtained: Instant,
        expires: Instant,
        agreed: f64,
        own: f64,
    ) -> Schedule {
        let fleet = self.schedule(obtained, expires, agreed);
        let stale_window = fleet
            .usable_until
            .saturating_duration_since(fleet.refresh_at);
        let span = self
            .jitter_span(expires.saturating_duration_since(obtained))
            .max(stale_window / LOOK_SHARE);
        let refresh_at =
            (fleet.refresh_at + span.mul_f64(own.clamp(0.0, 1.0))).min(fleet.usable_until);
        Schedule {
            refresh_at,
            ..fleet
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
        // margin 1 s (the `exp` granularity beats a twentieth), lead 1.25 s (the 2 s floor
        // beats a tenth, an eighth caps the floor)
        assert_eq!(s.usable_until, at(t0, 9.0));
        assert_eq!(s.refresh_at, at(t0, 7.75));
        let s = RefreshPolicy::default().schedule(t0, at(t0, 10.0), 1.0);
        assert_eq!(s.refresh_at, at(t0, 7.5)); // jitter a fortieth
                                               // 16 s: both floors whole (2 s and 1 s)
        let s = RefreshPolicy::default().schedule(t0, at(t0, 16.0), 0.0);
        assert_eq!((s.refresh_at, s.usable_until), (at(t0, 13.0), at(t0, 15.0)));
        // 4 s: lead and margin an eighth each, renewed after 2.9 s at the latest jitter
        let s = RefreshPolicy::default().schedule(t0, at(t0, 4.0), 1.0);
        assert_eq!((s.refresh_at, s.usable_until), (at(t0, 2.9), at(t0, 3.5)));
        let s = RefreshPolicy::default().schedule(t0, at(t0, 300.0), 1.0);
        // margin 15 s, lead 30 s, jitter 7.5 s
        assert_eq!(s.usable_until, at(t0, 285.0));
        assert_eq!(s.refresh_at, at(t0, 247.5));
        // tiny tokens: lead and margin an eighth of the lifetime each
        let s = RefreshPolicy::default().schedule(t0, at(t0, 1.0), 0.0);
        assert_eq!(s.usable_until, at(t0, 0.875));
        assert_eq!(s.refresh_at, at(t0, 0.75));
    }

    #[test]
    fn a_shared_token_has_one_refresh_moment_and_a_spread_of_looks() {
        let t0 = Instant::now();
        let policy = RefreshPolicy::default();
        let agreed = policy.schedule(t0, at(t0, 3600.0), 0.25);
        // the agreed moment whatever the replica's own fraction, then up to the span later
        let first = policy.shared_schedule(t0, at(t0, 3600.0), 0.25, 0.0);
        assert_eq!(first, agreed);
        let last = policy.shared_schedule(t0, at(t0, 3600.0), 0.25, 1.0);
        // half of the stale window (315 s) beats the jitter (60 s)
        assert_eq!(
            last.refresh_at,
            agreed.refresh_at + Duration::from_secs_f64(157.5)
        );
        assert_eq!(last.usable_until, agreed.usable_until);
        // never past the end of use, even with a policy whose jitter exceeds its lead
        let odd = RefreshPolicy {
            lead: Duration::ZERO,
            ..policy
        };
        let s = odd.shared_schedule(t0, at(t0, 3600.0), 0.0, 1.0);
        assert_eq!(s.refresh_at, s.usable_until);
    }

    /// The stale window (refresh moment to end of use) of the default policy, for the worst
    /// jitter (none: the shortest window), and how many token requests fit in it when the
    /// endpoint fails at once every time and the backoff waits its full nominal delay.
    fn attempts_in_stale_window(lifetime: f64, backoff_fraction: f64) -> (f64, u32) {
        let t0 = Instant::now();
        let s = RefreshPolicy::default().schedule(t0, at(t0, lifetime), 0.0);
        let window = s.usable_until - s.refresh_at;
        let backoff = Backoff::default();
        let (mut elapsed, mut attempts) = (Duration::ZERO, 0);
        // Bounded: a backoff that stopped growing (a zero delay) fails the test's counts
        // instead of looping forever.
        while elapsed < window && attempts < 1_000 {
            attempts += 1;
            elapsed += backoff.delay(attempts, false, None, backoff_fraction);
        }
        (window.as_secs_f64(), attempts)
    }

    #[test]
    fn the_stale_window_leaves_room_for_retries() {
        // (lifetime, stale window, attempts at the longest delays, at the shortest)
        let expected = [
            (4.0, 0.5, 1, 1),
            (10.0, 1.25, 2, 2),
            (60.0, 6.0, 3, 4),
            (300.0, 30.0, 5, 6),
            (3600.0, 300.0, 14, 24),
            (86400.0, 300.0, 14, 24),
        ];
        for (lifetime, window, slowest, fastest) in expected {
            let (w, n) = attempts_in_stale_window(lifetime, 1.0);
            assert_eq!((w, n), (window, slowest), "lifetime {lifetime}");
            let (_, n) = attempts_in_stale_window(lifetime, 0.0);
            assert_eq!(n, fastest, "lifetime {lifetime}");
        }
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
            prop_assert!(moved <= policy.jitter.min(Duration::from_millis(lifetime_ms) / 40));
            // never stale after expired, never fresh past expiry
            prop_assert_eq!(s.freshness(expires), Freshness::Expired);
            if s.refresh_at < s.usable_until {
                prop_assert_eq!(s.freshness(s.refresh_at), Freshness::Stale);
            }
        }

        /// The default policy renews a token after at least 80 % of its life from a minute
        /// up (at most 1.25 requests per lifetime) and two thirds from 10 s up (1.5), and
        /// never uses one in its last second (a whole-second `exp` floored by the server).
        #[test]
        fn default_schedule_is_economical_and_safe(
            lifetime_ms in 10_000u64..=86_400_000,
            fraction in 0.0f64..1.0,
        ) {
            let t0 = Instant::now();
            let lifetime = Duration::from_millis(lifetime_ms);
            let s = RefreshPolicy::default().schedule(t0, t0 + lifetime, fraction);
            let renewed_after = (s.refresh_at - t0).as_secs_f64() / lifetime.as_secs_f64();
            if lifetime >= Duration::from_secs(60) {
                prop_assert!(renewed_after >= 0.8, "{renewed_after}");
            }
            prop_assert!(renewed_after >= 2.0 / 3.0, "{renewed_after}");
            prop_assert!(t0 + lifetime - s.usable_until >= EXPIRY_GRANULARITY);
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
