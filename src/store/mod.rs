//! Sharing one token between caches: the [`TokenStore`] trait, the in-process
//! [`MemoryStore`], and (feature `redis`) [`RedisStore`] for a
//! fleet of replicas.
//!
//! A cache with a store still serves every request from its own lock-free `ArcSwap`; it
//! consults the store only when its token is stale, expired or rejected, that is when it
//! would otherwise ask the token endpoint:
//!
//! 1. a newer token in the store is adopted (no token request);
//! 2. otherwise the cache takes the store's refresh lock (in the same operation as its
//!    look, [`TokenStore::load_or_lock`], when it finds nothing), fetches, publishes the
//!    token and releases the lock (again one operation,
//!    [`TokenStore::publish_and_unlock`]); replicas that find the lock taken wait for the
//!    publication instead of competing for it: a store that pushes notices ([`TokenStore::watch`]:
//!    [`MemoryStore`], and [`RedisStore`] through Redis pub/sub) wakes them with the new
//!    token in the message, so they adopt it without reading the store, and they try
//!    the lock again only when it is released without a token or when its TTL says its
//!    holder died; a store that pushes nothing is polled (a few times a second, for a
//!    bounded time). Past the bound, one of them fetches alone;
//! 3. a 401 deletes the rejected token from the store, but only if it is still the one
//!    stored (compare-and-delete), so a burst of 401s across the fleet makes one refresh.
//!
//! Every replica computes the same refresh moment for a shared token (derived from the
//! store key and the token itself), so the fleet refreshes when one cache would, not at
//! its earliest replica's moment; each replica then looks at a random point of the
//! jitter span after that moment, so that the first one takes the lock and the others
//! hear about it before they turn stale.
//!
//! A store fault (down, slow, flushed) never fails a request: the cache falls back to
//! fetching on its own and logs the fault once per episode.
//!
//! The store holds the access token and its issue and expiry times, under a key derived
//! by a hash of (token URL, client id, scope): never the client secret.
//!
//! # Example: caches sharing a token in one process
//!
//! ```
//! use std::time::Duration;
//! use docplanner_auth::store::{MemoryStore, StoreKey};
//! use docplanner_auth::{AccessToken, BoxError, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), docplanner_auth::Error> {
//! let store = MemoryStore::new();
//! let key = StoreKey::new("https://www.doctoralia.es/oauth/v2/token", "client-id", "integration");
//! let source = || async { Ok::<_, BoxError>(AccessToken::new("t0k3n", Duration::from_secs(3600))?) };
//! let a = TokenCache::builder(source).store(store.clone(), key.clone()).build();
//! let b = TokenCache::builder(source).store(store, key).build();
//!
//! let token = a.token().await?; // fetched by `a`, published in the store
//! let same = b.token().await?; // adopted by `b` from the store
//! assert!(token.same_secret(&same));
//! assert_eq!(a.stats().token_requests + b.stats().token_requests, 1);
//! # Ok(()) }
//! ```

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;

use crate::error::{BoxError, Error, Kind};
use crate::token::AccessToken;

/// The future returned by every [`TokenStore`] operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'a>>;

/// A place where caches (in one process, or across replicas) share a token, with a lock so
/// that only one of them refreshes it.
///
/// Object-safe: every operation returns a boxed future. Each is called with a timeout
/// around it (see [`TokenCacheBuilder::store_timeout`](crate::TokenCacheBuilder::store_timeout)),
/// and any error is logged and worked around, never shown to a request.
pub trait TokenStore: Send + Sync + 'static {
    /// The token stored under `key`, if any.
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SharedToken>>;

    /// Store `token` under `key` (replacing any other), until it expires.
    fn publish<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, ()>;

    /// Take the refresh lock of `key` for `owner` for at most `ttl`, if nobody holds it.
    /// Returns whether it was taken.
    fn try_lock<'a>(&'a self, key: &'a str, owner: &'a str, ttl: Duration)
        -> StoreFuture<'a, bool>;

    /// Release the refresh lock of `key` if `owner` still holds it.
    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()>;

    /// Delete the token under `key` if it is still `token` (compare-and-delete). Returns
    /// whether it was deleted.
    fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool>;

    /// The token stored under `key`; if there is none, take the refresh lock of `key` for
    /// `owner` for at most `ttl`, as [`try_lock`](Self::try_lock) does. A cache's first
    /// look at the store: a store that does both in one operation (one round trip, and no
    /// token published between the look and the lock) saves a fleet that starts cold one
    /// round trip per replica.
    ///
    /// [`Found::Held`]'s duration, if given, counts from this answer and should not be
    /// more than the lock's remaining life: a cache whose store pushes notices waits that
    /// long (at most its own lock TTL) for the holder's token, or for the lock's release,
    /// before it tries the lock itself; one whose store pushes none polls it as usual.
    ///
    /// The default: [`load`](Self::load), then [`try_lock`](Self::try_lock) if nothing is
    /// stored, and once the lock is taken [`load`](Self::load) again, so that a token
    /// published between the first read and the lock is returned (the lock released)
    /// instead of being fetched again.
    fn load_or_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Found> {
        Box::pin(load_then_lock(self, key, owner, ttl))
    }

    /// Store `token` under `key` and release the refresh lock of `key` if `owner` still
    /// holds it: what the lock's holder does once it has fetched. A store that does both
    /// in one operation announces the token alone (its notice ends the lock, see
    /// [`Heard::locked_until`]) and saves the holder a round trip.
    ///
    /// The default: [`publish`](Self::publish), then [`unlock`](Self::unlock). If it fails,
    /// the lock may still be held: the cache then releases it with
    /// [`unlock`](Self::unlock).
    fn publish_and_unlock<'a>(
        &'a self,
        key: &'a str,
        token: &'a SharedToken,
        owner: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(publish_then_unlock(self, key, token, owner))
    }

    /// What happens under `key`, pushed by the store as it happens: a receiver whose value
    /// is what has been [`Heard`] so far, and which changes when a token is published
    /// under `key`, when it is invalidated (the token is forgotten: no cache may adopt it
    /// from the notices once the store dropped it), when its refresh lock is taken, and
    /// when the lock is released.
    ///
    /// A cache that finds the lock taken waits on this instead of polling the store. The
    /// receiver must be returned only once the store listens (so that a publication after
    /// this call is never missed), with the current value already seen; a store that stops
    /// listening (a lost connection) closes it (drops the sender), and the cache falls
    /// back to polling.
    ///
    /// The default, `Ok(None)`: the store pushes nothing, and waiting caches poll it.
    fn watch<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<watch::Receiver<Heard>>> {
        let _ = key;
        Box::pin(async { Ok(None) })
    }
}

/// [`TokenStore::load_or_lock`] in three operations of one key each: a read, the lock if
/// nothing is stored, and a read again once the lock is taken.
pub(crate) async fn load_then_lock<S: TokenStore + ?Sized>(
    store: &S,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Found, BoxError> {
    if let Some(stored) = store.load(key).await? {
        return Ok(Found::Token(stored));
    }
    if !store.try_lock(key, owner, ttl).await? {
        return Ok(Found::Held(None));
    }
    // Published between the read and the lock: return it, not the lock.
    match store.load(key).await? {
        Some(stored) => {
            store.unlock(key, owner).await?;
            Ok(Found::Token(stored))
        }
        None => Ok(Found::Locked),
    }
}

/// [`TokenStore::publish_and_unlock`] in two operations of one key each.
pub(crate) async fn publish_then_unlock<S: TokenStore + ?Sized>(
    store: &S,
    key: &str,
    token: &SharedToken,
    owner: &str,
) -> Result<(), BoxError> {
    store.publish(key, token).await?;
    store.unlock(key, owner).await
}

/// What [`TokenStore::load_or_lock`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Found {
    /// A token is stored under the key (the lock was not tried).
    Token(SharedToken),
    /// No token is stored, and the refresh lock is now the caller's.
    Locked,
    /// No token is stored, and another replica holds the refresh lock: for at most this
    /// long, if the store says (a cache whose store pushes notices then waits for that
    /// replica's token instead of trying the lock again before it hears of it).
    Held(Option<Duration>),
}

/// What a cache heard from its store about one key (see [`TokenStore::watch`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Heard {
    /// The last token published under the key since the store started listening, unless
    /// it was invalidated since.
    pub token: Option<SharedToken>,
    /// Until when the refresh lock is held by the replica that took it last (on this
    /// process's clock), or `None` if it was released. A store may end it with the token
    /// its holder publishes (the token's notice then says both).
    pub locked_until: Option<Instant>,
}

impl Heard {
    /// Whether a replica holds the refresh lock at `now`.
    pub fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

/// The senders of the stores that push notices: one watch channel per key (or per
/// channel name), created on first interest.
#[derive(Default)]
pub(crate) struct Watchers {
    senders: Mutex<HashMap<String, watch::Sender<Heard>>>,
}

impl Watchers {
    /// A receiver for `name`, its current value seen. `created` is told whether the
    /// channel is new (the store must start listening to it before returning).
    pub(crate) fn subscribe(&self, name: &str) -> (watch::Receiver<Heard>, bool) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        match senders.get(name) {
            Some(sender) => (sender.subscribe(), false),
            None => {
                let (sender, receiver) = watch::channel(Heard::default());
                senders.insert(name.to_owned(), sender);
                (receiver, true)
            }
        }
    }

    /// Forget `name` (its listening failed): its receivers see the channel closed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis listener forgets
    pub(crate) fn forget(&self, name: &str) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        senders.remove(name);
    }

    /// Forget every channel (the store stopped listening).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis listener forgets
    pub(crate) fn clear(&self) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        senders.clear();
    }

    /// Tell the caches watching `name` what happened.
    pub(crate) fn heard(&self, name: &str, change: impl FnOnce(&mut Heard)) {
        let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = senders.get(name) {
            sender.send_modify(change);
        }
    }
}

impl fmt::Debug for Watchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Watchers")
            .field("keys", &senders.len())
            .finish()
    }
}

/// A token as a store keeps it: the token string and when it was issued and expires, as
/// Unix times in milliseconds (replicas share wall-clock time, not monotonic instants).
/// A token shared inside one process (a [`MemoryStore`]) also keeps the instant it was
/// obtained at, so the caches that adopt it schedule it from exactly the same moment
/// (and from the same clock under a paused Tokio clock).
///
/// `Debug` never shows the token; the string is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedToken {
    token: Zeroizing<String>,
    issued_at_ms: u64,
    expires_at_ms: u64,
    /// When it was obtained, on this process's clock: only in the process that made it.
    obtained: Option<Instant>,
}

const FORMAT: &str = "v1";

impl SharedToken {
    /// The shared form of `token`.
    pub fn from_token(token: &AccessToken) -> Self {
        let now = Instant::now();
        let wall = unix_ms(SystemTime::now());
        let ago = now.saturating_duration_since(token.obtained()).as_millis() as u64;
        let left = token
            .expires_at()
            .saturating_duration_since(now)
            .as_millis() as u64;
        Self {
            token: Zeroizing::new(token.secret().to_owned()),
            issued_at_ms: wall.saturating_sub(ago),
            expires_at_ms: wall.saturating_add(left),
            obtained: Some(token.obtained()),
        }
    }

    /// This token as a local [`AccessToken`], its times converted to this process's clock.
    pub fn to_token(&self) -> Result<AccessToken, Error> {
        let now = Instant::now();
        let wall = unix_ms(SystemTime::now());
        let ago = Duration::from_millis(wall.saturating_sub(self.issued_at_ms));
        let obtained = self
            .obtained
            .unwrap_or_else(|| now.checked_sub(ago).unwrap_or(now));
        let lifetime = Duration::from_millis(self.expires_at_ms.saturating_sub(self.issued_at_ms));
        AccessToken::obtained_at(self.token.as_str(), obtained, lifetime)
    }

    /// When the token expires, as Unix time in milliseconds.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// Whether this is the same token string as `token`.
    pub fn is(&self, token: &AccessToken) -> bool {
        self.token.as_str() == token.secret()
    }

    /// The stored form: `v1 <issued ms> <expires ms> <token>`.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{FORMAT} {} {} {}",
            self.issued_at_ms,
            self.expires_at_ms,
            self.token.as_str()
        ))
    }

    /// Parse the stored form; anything else is an error (a value written by another
    /// program or version is ignored, never used as a token).
    pub fn decode(stored: &str) -> Result<Self, Error> {
        let bad = || {
            Error::new(
                Kind::Store,
                "the stored token has an unknown format; it is ignored",
            )
        };
        let mut parts = stored.splitn(4, ' ');
        if parts.next() != Some(FORMAT) {
            return Err(bad());
        }
        let issued_at_ms = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let expires_at_ms = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let token = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?;
        Ok(Self {
            token: Zeroizing::new(token.to_owned()),
            issued_at_ms,
            expires_at_ms,
            obtained: None,
        })
    }
}

impl fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedToken")
            .field("token", &"[redacted]")
            .field("issued_at_ms", &self.issued_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The key a token is shared under: a hash of (token URL, client id, scope), so that
/// different clients never see each other's tokens and the key reveals nothing.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreKey(String);

impl StoreKey {
    /// The key for the client-credentials grant of `client_id` with `scope` at `token_url`.
    pub fn new(token_url: &str, client_id: &str, scope: &str) -> Self {
        // FNV-1a, 128 bits, over the length-prefixed parts: stable across processes,
        // versions and platforms (unlike std's hasher), and no dependency. Not a secret.
        let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
        for part in [token_url, client_id, scope] {
            for byte in (part.len() as u64)
                .to_le_bytes()
                .iter()
                .chain(part.as_bytes())
            {
                hash ^= u128::from(*byte);
                hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
            }
        }
        Self(format!("docplanner-auth:v1:{hash:032x}"))
    }

    /// The key of an arbitrary token source: your own, stable name for it.
    pub fn custom(name: &str) -> Self {
        Self::new("custom", name, "")
    }

    /// The key as stored (a prefix and a hex hash).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreKey").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_differ_per_client_and_never_contain_inputs() {
        let a = StoreKey::new(
            "https://www.doctoralia.es/oauth/v2/token",
            "client-a",
            "integration",
        );
        let b = StoreKey::new(
            "https://www.doctoralia.es/oauth/v2/token",
            "client-b",
            "integration",
        );
        let c = StoreKey::new(
            "https://www.jameda.de/oauth/v2/token",
            "client-a",
            "integration",
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            StoreKey::new(
                "https://www.doctoralia.es/oauth/v2/token",
                "client-a",
                "integration"
            )
        );
        assert!(!a.as_str().contains("client-a"));
        // length-prefixed: moving a character between parts changes the key
        assert_ne!(StoreKey::new("ab", "c", ""), StoreKey::new("a", "bc", ""));
    }

    #[tokio::test]
    async fn shared_tokens_round_trip_and_redact() {
        let token = AccessToken::new("s3cret-tok", Duration::from_secs(3600)).unwrap();
        let shared = SharedToken::from_token(&token);
        assert!(!format!("{shared:?}").contains("s3cret"));
        let decoded = SharedToken::decode(&shared.encode()).unwrap();
        assert_eq!(decoded.encode(), shared.encode());
        assert_eq!(shared.to_token().unwrap().obtained(), token.obtained());
        let back = decoded.to_token().unwrap();
        assert!(back.same_secret(&token));
        let drift = back.lifetime().abs_diff(Duration::from_secs(3600));
        assert!(drift <= Duration::from_millis(2), "{drift:?}");
        for bad in ["", "v1", "v2 1 2 t", "v1 x 2 t", "v1 1 2 ", "v1 1 2"] {
            assert!(SharedToken::decode(bad).is_err(), "{bad:?}");
        }
    }
}
