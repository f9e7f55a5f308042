//! The 401 policy, in one place: what a `401` means for the token that was used, whether
//! it forces a refresh, and whether the request is sent once more. The tower
//! [`ResponseFuture`](crate::ResponseFuture) and the reqwest middleware both ask a
//! [`Reauth`]; neither decides anything itself.
//!
//! * A `401` makes the token that was used *suspect* (compare-and-swap on that exact
//!   token): one refresh starts at once, and the suspect token stays in use until a new one
//!   arrives — and stays if the refresh fails, since the API may well still accept it (a
//!   `401` can mean "not your facility" as much as "token revoked").
//! * The request is replayed once, with a new token, if its body could be kept; the same
//!   token handed out again, a failed refresh or a second `401` goes back to the caller,
//!   with an [`Unauthorized`] extension that says why. Never a loop.
//! * Forced refreshes are limited by evidence, not by the clock: a `401` for a token that
//!   was never rejected may always force one refresh; only while *freshly fetched* tokens
//!   keep being rejected before the API accepted them even once (two in a row) does the
//!   next forced refresh wait, [`DEFAULT_REJECTION_BACKOFF_BASE`] doubling up to
//!   [`DEFAULT_REJECTION_BACKOFF_CAP`]. So two revocations a second apart are both healed
//!   (even when nothing used the first replacement), and an API that rejects every token
//!   is not hammered.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::TokenCache;
use crate::error::Error;
use crate::token::AccessToken;

/// Default first pause before another refresh forced by a 401, once two freshly fetched
/// tokens in a row were rejected before the API accepted them even once: 1 s, doubling
/// with every further such token up to [`DEFAULT_REJECTION_BACKOFF_CAP`].
///
/// A token that was rejected before any request succeeded with it is evidence that new
/// tokens do not help (an API answering 401 for reasons unrelated to the token); a token
/// the API accepted and later rejected is evidence of a revocation, which is healed at once
/// however recent the last one was.
pub const DEFAULT_REJECTION_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Default longest pause between refreshes forced by 401s while fresh tokens keep being
/// rejected: 5 min (the cap of the permanent-failure backoff). An API that rejects
/// everything for an hour costs about 20 token requests.
pub const DEFAULT_REJECTION_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Why a `401` reached you: every `401` answer that the layer or the middleware returns
/// carries one in its extensions.
///
/// ```
/// # fn check<B>(response: &http::Response<B>) {
/// use docplanner_auth::Unauthorized;
///
/// if let Some(Unauthorized::RefreshFailed(error)) = response.extensions().get() {
///     eprintln!("the API rejected our token and no new one could be had: {error}");
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Unauthorized {
    /// No new token could be obtained after the 401; the error says why. The rejected
    /// token stays in use, as suspect, until a refresh succeeds.
    RefreshFailed(Error),
    /// The token endpoint handed out the rejected token again: replaying is pointless.
    SameToken,
    /// The request could not be sent again (a streamed body, or one over the replay
    /// limit); a new token is fetched for the next request all the same.
    NotReplayable,
    /// Freshly fetched tokens keep being rejected: no new token is fetched for this 401
    /// until the rejection backoff ends (see [`DEFAULT_REJECTION_BACKOFF_BASE`]).
    RateLimited,
    /// The request was sent once more with a new token, and rejected again.
    RejectedAfterReplay,
}

impl Unauthorized {
    /// The error of the refresh that failed after the 401, if that is why.
    pub fn refresh_error(&self) -> Option<&Error> {
        match self {
            Unauthorized::RefreshFailed(error) => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unauthorized::RefreshFailed(error) => {
                write!(
                    f,
                    "the API rejected the token and no new one could be obtained: {error}"
                )
            }
            Unauthorized::SameToken => {
                f.write_str("the API rejected the token and the token endpoint handed it out again")
            }
            Unauthorized::NotReplayable => f.write_str(
                "the API rejected the token; the request body could not be kept for a replay, \
                 a new token is being fetched for the next request",
            ),
            Unauthorized::RateLimited => f.write_str(
                "the API keeps rejecting freshly fetched tokens; no new token was fetched for \
                 this 401 (the rejection backoff is running)",
            ),
            Unauthorized::RejectedAfterReplay => {
                f.write_str("the API rejected the request again with a new token")
            }
        }
    }
}

/// What the cache made of a 401 for the token a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// A refresh is under way (or has already replaced the token): wait for a new token.
    Refreshing,
    /// Fresh tokens keep being rejected: no refresh now; return the 401.
    RateLimited,
}

/// The evidence behind forced refreshes, kept by the cache under its slow-path lock.
#[derive(Debug, Default)]
pub(super) struct Evidence {
    /// The token a forced refresh fetched, until the API accepts it once.
    unconfirmed: Option<u64>,
    /// How many forced refreshes in a row fetched a token that was rejected unconfirmed.
    streak: u32,
    last_forced: Option<Instant>,
}

impl Evidence {
    /// A 401 for `used`, the current token: may it force a refresh at `now`? Records the
    /// forced refresh when it may.
    pub(super) fn may_force(
        &mut self,
        used: u64,
        now: Instant,
        base: Duration,
        cap: Duration,
    ) -> bool {
        if self.unconfirmed == Some(used) {
            let streak = self.streak.saturating_add(1);
            // One fresh token rejected before any request used it can be bad luck (revoked
            // again before anyone used it); two in a row are evidence.
            if streak >= 2 {
                let doublings = (streak - 2).min(31);
                let wait = base.saturating_mul(1u32 << doublings).min(cap);
                if self.last_forced.is_some_and(|last| now < last + wait) {
                    return false;
                }
            }
            self.streak = streak;
        } else {
            self.streak = 0;
        }
        self.last_forced = Some(now);
        true
    }

    /// A refresh stored the token `id`; `forced` when it replaced a rejected token, which
    /// makes it unconfirmed until the API accepts it.
    pub(super) fn stored(&mut self, id: u64, forced: bool) {
        self.unconfirmed = forced.then_some(id);
    }

    /// The API accepted `id`: if it was unconfirmed, new tokens do help after all.
    pub(super) fn accepted(&mut self, id: u64) {
        if self.unconfirmed == Some(id) {
            self.unconfirmed = None;
            self.streak = 0;
        }
    }
}

/// A new token for a replay, or why there is none.
pub(crate) type Replacement =
    Pin<Box<dyn Future<Output = Result<AccessToken, Unauthorized>> + Send>>;

/// The 401 policy for one request: both adapters create one per request, tell it what
/// happened, and do what it says.
#[derive(Clone)]
pub(crate) struct Reauth {
    cache: TokenCache,
    /// The id of the token the request was last sent with (0: not sent yet).
    used: u64,
}

impl Reauth {
    pub(crate) fn new(cache: TokenCache, used: u64) -> Self {
        Self { cache, used }
    }

    /// The request is sent (for the first time) with `token`.
    pub(crate) fn sent(&mut self, token: &AccessToken) {
        self.used = token.id();
    }

    /// The API answered something other than 401: the token works.
    #[inline]
    pub(crate) fn accepted(&self) {
        self.cache.accepted(self.used);
    }

    /// The API answered 401 to the first send. `replayable`: the request can be sent once
    /// more. `Ok`: wait for this new token, then replay; `Err`: hand the 401 back, with
    /// this reason.
    pub(crate) fn rejected(&self, replayable: bool) -> Result<Replacement, Unauthorized> {
        match self.cache.reject(self.used) {
            Rejection::RateLimited => Err(Unauthorized::RateLimited),
            Rejection::Refreshing if !replayable => Err(Unauthorized::NotReplayable),
            Rejection::Refreshing => Ok(self.replacement()),
        }
    }

    /// A token other than the rejected one: the single refresh's outcome.
    fn replacement(&self) -> Replacement {
        let cache = self.cache.clone();
        let used = self.used;
        Box::pin(async move {
            match cache.next_token(used).await {
                Ok(token) if token.id() != used => Ok(token),
                Ok(_) => Err(Unauthorized::SameToken),
                Err(error) => {
                    tracing::warn!(cache = %cache.name(), %error, "no new token after a 401; returning the 401");
                    Err(Unauthorized::RefreshFailed(error))
                }
            }
        })
    }

    /// The request is sent once more, with `token`.
    pub(crate) fn replaying(&mut self, token: &AccessToken) {
        self.used = token.id();
        self.cache.count_replay();
    }

    /// The API answered 401 to the replay too: that token is suspect as well (its refresh
    /// limited by the evidence), and the caller gets this 401. Never a loop.
    pub(crate) fn rejected_again(&self) -> Unauthorized {
        let _ = self.cache.reject(self.used);
        Unauthorized::RejectedAfterReplay
    }
}

impl fmt::Debug for Reauth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reauth")
            .field("cache", &self.cache.name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(300);

    #[test]
    fn a_token_never_rejected_may_always_force_a_refresh() {
        let now = Instant::now();
        let mut e = Evidence::default();
        assert!(e.may_force(1, now, BASE, CAP));
        e.stored(2, true);
        e.accepted(2); // the API took it: a later 401 is a revocation
        assert!(
            e.may_force(2, now, BASE, CAP),
            "a second revocation at once is healed"
        );
        e.stored(3, true);
        e.accepted(3);
        assert!(e.may_force(3, now, BASE, CAP));
    }

    #[test]
    fn fresh_tokens_rejected_unconfirmed_twice_in_a_row_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut e = Evidence::default();
        assert!(e.may_force(1, t0, BASE, CAP));
        let mut now = t0;
        let mut waits = Vec::new();
        for id in 2..14 {
            e.stored(id, true);
            let start = now;
            while !e.may_force(id, now, BASE, CAP) {
                now += Duration::from_millis(500);
            }
            waits.push((now - start).as_secs_f64());
        }
        assert_eq!(
            waits,
            [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
        );
    }

    /// What a caller logs from a 401's extension says why, and only a failed refresh
    /// carries (and prints) its error.
    #[test]
    fn every_reason_says_why_the_401_came_back() {
        let failed = Unauthorized::RefreshFailed(Error::transient("endpoint down"));
        assert_eq!(
            failed.to_string(),
            "the API rejected the token and no new one could be obtained: endpoint down"
        );
        assert!(failed.refresh_error().is_some_and(Error::is_transient));
        for (why, says) in [
            (Unauthorized::SameToken, "handed it out again"),
            (
                Unauthorized::NotReplayable,
                "could not be kept for a replay",
            ),
            (
                Unauthorized::RateLimited,
                "the rejection backoff is running",
            ),
            (
                Unauthorized::RejectedAfterReplay,
                "rejected the request again",
            ),
        ] {
            assert!(why.to_string().contains(says), "{why}");
            assert!(why.refresh_error().is_none(), "{why:?}");
        }
    }

    #[test]
    fn a_scheduled_token_is_not_evidence_and_zero_turns_the_limit_off() {
        let now = Instant::now();
        let mut e = Evidence::default();
        assert!(e.may_force(1, now, BASE, CAP));
        e.stored(2, false); // a scheduled refresh, not forced
        assert!(e.may_force(2, now, BASE, CAP));
        let mut off = Evidence::default();
        for id in 1..100 {
            assert!(off.may_force(id, now, Duration::ZERO, Duration::ZERO));
            off.stored(id + 1, true);
        }
    }
}
