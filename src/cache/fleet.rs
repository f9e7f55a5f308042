//! Refreshing through a shared [`TokenStore`]: adopt a newer token, or take the lock and
//! fetch, or wait for the replica that holds it (woken by the store's notices, or
//! polling a store that pushes none), and the refresh moment the whole fleet agrees on.
//! Store faults fall back to fetching alone.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::observe::Observer;
use crate::error::{scrub, BoxError, Error, Kind};
use tokio::sync::watch;

use crate::store::{Found, Heard, SharedToken, StoreKey, TokenStore};
use crate::token::AccessToken;

/// Default timeout of each store operation: 500 ms. A healthy Redis answers in well under
/// a millisecond; past half a second the cache stops waiting and fetches on its own.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(500);

/// The first pause between two looks at a store that pushes no notices while another
/// replica refreshes; it doubles up to [`MAX_STORE_POLL`].
const FIRST_STORE_POLL: Duration = Duration::from_millis(25);
/// The longest pause between two looks at the store while waiting.
const MAX_STORE_POLL: Duration = Duration::from_millis(250);

/// A cache's view of its store.
pub(super) struct Fleet {
    store: Arc<dyn TokenStore>,
    key: StoreKey,
    /// Identifies this cache as a lock holder.
    owner: String,
    timeout: Duration,
    /// How long the refresh lock is held at most, and how long a replica waits for
    /// another one's refresh: the token request timeout twice.
    lock_ttl: Duration,
    /// False during a store fault episode: the fault is logged once, its end once.
    healthy: AtomicBool,
}

impl Fleet {
    pub(super) fn new(
        store: Arc<dyn TokenStore>,
        key: StoreKey,
        timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Self {
            store,
            key,
            owner: format!("{:032x}", fastrand::u128(..)),
            timeout,
            lock_ttl: request_timeout.saturating_mul(2),
            healthy: AtomicBool::new(true),
        }
    }

    /// The longest a refresh through the store may take: waiting for the lock, then
    /// fetching.
    pub(super) fn budget(&self) -> Duration {
        self.lock_ttl
    }

    /// The fraction of the jitter span at which the whole fleet refreshes `token`: a hash
    /// of the store key and the token string, which every replica sees identically (a
    /// time converted between clocks would differ by a millisecond here and there).
    pub(super) fn agreed_fraction(&self, token: &AccessToken) -> f64 {
        // FNV-1a, 64 bits: stable across processes and versions; not a secret (it
        // places a moment inside the jitter span, nothing more).
        let mut hash: u64 = 0xcbf29ce484222325;
        for byte in self
            .key
            .as_str()
            .bytes()
            .chain([0])
            .chain(token.secret().bytes())
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x100000001b3);
        }
        (hash >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One store operation, with its timeout. A fault is logged once per episode and
    /// reported as `Err(())`: the caller then works without the store.
    async fn call<T>(
        &self,
        observer: &Observer,
        what: &str,
        op: impl Future<Output = Result<T, BoxError>>,
    ) -> Result<T, ()> {
        let result = match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            // The store's own words (scrubbed: shortened, credential-like words out), so
            // that the log says why (`WRONGTYPE`, `NOPERM`, a refused password…).
            Ok(Err(error)) => Err(Error::with_source(
                Kind::Store,
                format!(
                    "the token store failed to {what} ({}); fetching tokens without it meanwhile",
                    scrub(&error.to_string(), 200, &[])
                ),
                error,
            )),
            Err(_) => Err(Error::new(
                Kind::Store,
                format!(
                    "the token store took longer than {:?} to {what}; fetching tokens without \
                     it meanwhile",
                    self.timeout
                ),
            )),
        };
        match result {
            Ok(value) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("the token store works again");
                }
                Ok(value)
            }
            Err(error) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    observer.store_fault(&error);
                }
                Err(())
            }
        }
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("key", &self.key)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Tokens this cache already has or rejected: a store holding one of them has nothing new.
pub(super) struct Known {
    pub(super) current: Option<AccessToken>,
    pub(super) rejected: Option<AccessToken>,
}

impl Known {
    fn contains(&self, stored: &SharedToken) -> bool {
        [&self.current, &self.rejected]
            .into_iter()
            .flatten()
            .any(|t| stored.is(t))
    }

    fn is_rejected(&self, stored: &SharedToken) -> bool {
        self.rejected.as_ref().is_some_and(|t| stored.is(t))
    }
}

impl Fleet {
    async fn load(&self, observer: &Observer) -> Result<Option<SharedToken>, ()> {
        self.call(
            observer,
            "read the token",
            self.store.load(self.key.as_str()),
        )
        .await
    }

    async fn release(&self, observer: &Observer) {
        let unlock = self.store.unlock(self.key.as_str(), &self.owner);
        let _ = self
            .call(observer, "release the refresh lock", unlock)
            .await;
    }
}

impl Fleet {
    /// The store's notices for our key, if it pushes them. A store that cannot listen
    /// right now is polled instead: not a fault (the token is still shared). A store in a
    /// fault episode is not asked.
    async fn watch(&self) -> Option<watch::Receiver<Heard>> {
        // During a store fault episode, do not wait on it once more before the fallback.
        if !self.healthy.load(Ordering::Relaxed) {
            return None;
        }
        match tokio::time::timeout(self.timeout, self.store.watch(self.key.as_str())).await {
            Ok(Ok(heard)) => heard,
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "the token store cannot push notices now; polling it");
                None
            }
            Err(_) => {
                tracing::debug!("the token store took too long to listen; polling it");
                None
            }
        }
    }

    /// A new token: from the store if a replica has one, else fetched with `fetch` (by us,
    /// holding the store's lock, or alone if the store fails). `usable` says whether a
    /// stored token may still be sent.
    ///
    /// The first look reads the token and, if none is stored, tries the lock, in one
    /// store operation ([`TokenStore::load_or_lock`]). With a store that pushes notices,
    /// a replica that hears (or is told on its look) of a live lock waits for the
    /// publication and adopts the token from the notice, without reading the store; it
    /// tries the lock again only when the lock is released without a token or when its
    /// TTL says the holder died. The holder publishes and releases in one operation.
    pub(super) async fn obtain<F: Future<Output = Result<AccessToken, Error>>>(
        &self,
        observer: &Observer,
        known: Known,
        fetch: impl Fn() -> F,
        usable: impl Fn(&AccessToken) -> bool,
    ) -> Result<AccessToken, Error> {
        let key = self.key.as_str();
        // A stored token that is new to us and usable now, counted as adopted.
        let adoptable = |stored: &SharedToken| {
            if known.contains(stored) {
                return None;
            }
            let token = stored.to_token().ok().filter(&usable)?;
            observer.adopted();
            Some(token)
        };
        // Listen first, then look: a publication from here on is heard.
        let mut notices = self.watch().await;
        let heard = notices.as_ref().map(|n| n.borrow().clone());
        if let Some(token) = heard
            .as_ref()
            .and_then(|h| h.token.as_ref())
            .and_then(&adoptable)
        {
            return Ok(token);
        }
        // Whatever was published since the store started listening has been heard; only
        // a store we never heard a token from, or a token to invalidate, needs a look.
        let heard_a_token = heard.as_ref().is_some_and(|h| h.token.is_some());
        // How long another replica holds the lock, as the store said on our look.
        let mut held_until = None;
        if known.rejected.is_some() {
            match self.load(observer).await {
                Err(()) => return fetch().await,
                Ok(Some(stored)) if known.is_rejected(&stored) => {
                    // Drop it fleet-wide, unless another replica replaced it meanwhile.
                    let invalidate = self.store.invalidate(key, &stored);
                    let _ = self
                        .call(observer, "invalidate the token", invalidate)
                        .await;
                }
                Ok(Some(stored)) => {
                    if let Some(token) = adoptable(&stored) {
                        return Ok(token);
                    }
                }
                Ok(None) => {}
            }
        } else if !heard_a_token {
            // The token, or else the lock, in one look.
            let look = self.store.load_or_lock(key, &self.owner, self.lock_ttl);
            match self.call(observer, "read the token", look).await {
                Err(()) => return fetch().await,
                Ok(Found::Token(stored)) => {
                    if let Some(token) = adoptable(&stored) {
                        return Ok(token);
                    }
                }
                Ok(Found::Locked) => return self.fetch_and_publish(observer, &fetch).await,
                // However long the store says, the wait below ends at our own give-up time
                // (and an answer past the clock's range counts as none).
                Ok(Found::Held(left)) => {
                    held_until = left.and_then(|left| Instant::now().checked_add(left));
                }
            }
        }
        let give_up = Instant::now() + self.lock_ttl;
        let mut pause = FIRST_STORE_POLL;
        loop {
            // Heard of a live lock (or told of it on our look, until the first notice):
            // wait for its holder, do not compete with it. A store that pushes nothing
            // is polled whatever the lock.
            let locked_until = notices.as_ref().and_then(|n| {
                let now = Instant::now();
                [n.borrow().locked_until, held_until]
                    .into_iter()
                    .flatten()
                    .find(|until| *until > now)
            });
            if locked_until.is_none() {
                let lock = self.store.try_lock(key, &self.owner, self.lock_ttl);
                match self.call(observer, "take the refresh lock", lock).await {
                    Err(()) => return fetch().await,
                    Ok(true) => return self.refresh(observer, &adoptable, &fetch).await,
                    Ok(false) => {}
                }
            }
            let now = Instant::now();
            if now >= give_up {
                tracing::warn!("no token from the replica refreshing it; fetching alone");
                return fetch().await;
            }
            // Wait for a notice: until the lock's end if we heard of it (then its holder
            // died), else for the longest poll pause (the notice of the lock we just
            // failed to take is on its way; a holder whose notices we do not hear is
            // polled slowly). A store that pushes nothing is polled.
            let (until, poll) = match (locked_until, &notices) {
                (Some(end), _) => (end.min(give_up), false),
                (None, Some(_)) => ((now + MAX_STORE_POLL).min(give_up), true),
                (None, None) => ((now + pause).min(give_up), true),
            };
            let mut stored = None;
            let mut look = poll;
            if let Some(receiver) = notices.as_mut() {
                match tokio::time::timeout_at(until, receiver.changed()).await {
                    Ok(Ok(())) => {
                        stored = receiver.borrow_and_update().token.clone();
                        look = false;
                        held_until = None;
                    }
                    // The store stopped listening: poll from now on.
                    Ok(Err(_)) => notices = None,
                    Err(_) => {}
                }
            } else {
                tokio::time::sleep_until(until).await;
            }
            if look {
                pause = (pause * 2).min(MAX_STORE_POLL);
                match self.load(observer).await {
                    Err(()) => return fetch().await,
                    Ok(found) => stored = found,
                }
            }
            if let Some(token) = stored.as_ref().and_then(&adoptable) {
                return Ok(token);
            }
        }
    }

    /// Holding the lock: adopt what its previous holder may have published just before
    /// we took it, or fetch and publish.
    async fn refresh<F: Future<Output = Result<AccessToken, Error>>>(
        &self,
        observer: &Observer,
        adoptable: impl Fn(&SharedToken) -> Option<AccessToken>,
        fetch: impl Fn() -> F,
    ) -> Result<AccessToken, Error> {
        let published = self.load(observer).await.ok().flatten();
        if let Some(token) = published.and_then(|s| adoptable(&s)) {
            self.release(observer).await;
            return Ok(token);
        }
        self.fetch_and_publish(observer, &fetch).await
    }

    /// Holding the lock: fetch, then publish the token and release the lock (in one
    /// operation), or only release it if the fetch failed.
    async fn fetch_and_publish<F: Future<Output = Result<AccessToken, Error>>>(
        &self,
        observer: &Observer,
        fetch: impl Fn() -> F,
    ) -> Result<AccessToken, Error> {
        let result = fetch().await;
        match &result {
            Ok(token) => {
                let shared = SharedToken::from_token(token);
                let publish =
                    self.store
                        .publish_and_unlock(self.key.as_str(), &shared, &self.owner);
                if self
                    .call(observer, "publish the token", publish)
                    .await
                    .is_err()
                {
                    self.release(observer).await;
                }
            }
            Err(_) => self.release(observer).await,
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::MemoryStore;

    fn fleet(key: &str) -> Fleet {
        Fleet::new(
            Arc::new(MemoryStore::new()),
            StoreKey::custom(key),
            Duration::from_millis(500),
            Duration::from_secs(10),
        )
    }

    fn token(secret: &str) -> AccessToken {
        AccessToken::new(secret, Duration::from_secs(3600)).unwrap()
    }

    /// The agreed fraction is part of the fleet's protocol: every replica, of this version
    /// or another one during a rolling deploy, computes the same value for a token (pinned
    /// here), and different tokens spread over the whole jitter span.
    #[test]
    fn the_agreed_fraction_is_one_value_per_token_and_spread_across_tokens() {
        let one = fleet("clinic").agreed_fraction(&token("t0k3n-one"));
        assert_eq!(one, fleet("clinic").agreed_fraction(&token("t0k3n-one")));
        assert_eq!(one, PINNED);
        let fractions: Vec<f64> = (0..400)
            .map(|i| fleet(&format!("key-{}", i % 7)).agreed_fraction(&token(&format!("tok-{i}"))))
            .collect();
        assert!(fractions.iter().all(|f| (0.0..1.0).contains(f)));
        let below_half = fractions.iter().filter(|f| **f < 0.5).count();
        assert!(
            (100..=300).contains(&below_half),
            "{below_half} of 400 below 0.5"
        );
    }

    const PINNED: f64 = 0.294_559_052_886_922_5;
}
