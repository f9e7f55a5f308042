//! [`MemoryStore`]: the embedded store, for caches in one process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use tokio::sync::watch;

use super::{unix_ms, Found, Heard, SharedToken, StoreFuture, TokenStore, Watchers};

/// An in-process [`TokenStore`]: several [`TokenCache`](crate::TokenCache)s (for example
/// one per worker or per tenant runtime) share one token and one refresh. Cheap to clone;
/// clones are the same store. It pushes notices ([`TokenStore::watch`]): a cache waiting
/// for another one's refresh is woken by the publication.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<State>>,
    watchers: Arc<Watchers>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, SharedToken>,
    locks: HashMap<String, (String, Instant)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token under `key`, unless it expired (then it is dropped).
    fn live_token(state: &mut State, key: &str) -> Option<SharedToken> {
        let now = unix_ms(SystemTime::now());
        if state
            .tokens
            .get(key)
            .is_some_and(|t| t.expires_at_ms() <= now)
        {
            state.tokens.remove(key);
        }
        state.tokens.get(key).cloned()
    }

    /// Release the lock of `key` if `owner` holds it; whether it did.
    fn unlock_owned(state: &mut State, key: &str, owner: &str) -> bool {
        let ours = state
            .locks
            .get(key)
            .is_some_and(|(holder, _)| holder == owner);
        if ours {
            state.locks.remove(key);
        }
        ours
    }

    /// Take the lock of `key` for `owner` for `ttl` and announce it, or say how long its
    /// holder keeps it.
    fn lock(
        &self,
        state: &mut State,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        if let Some((_, until)) = state.locks.get(key).filter(|(_, until)| *until > now) {
            return Err(*until - now);
        }
        state
            .locks
            .insert(key.to_owned(), (owner.to_owned(), now + ttl));
        self.watchers
            .heard(key, |heard| heard.locked_until = Some(now + ttl));
        Ok(())
    }
}

impl TokenStore for MemoryStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
        let token = Self::live_token(&mut self.state(), key);
        Box::pin(async move { Ok(token) })
    }

    fn publish<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, ()> {
        // The notice under the state lock: an invalidation cannot come between.
        let mut state = self.state();
        state.tokens.insert(key.to_owned(), token.clone());
        self.watchers
            .heard(key, |heard| heard.token = Some(token.clone()));
        drop(state);
        Box::pin(async { Ok(()) })
    }

    fn publish_and_unlock<'a>(
        &'a self,
        key: &'a str,
        token: &'a SharedToken,
        owner: &'a str,
    ) -> StoreFuture<'a, ()> {
        let mut state = self.state();
        state.tokens.insert(key.to_owned(), token.clone());
        let ours = Self::unlock_owned(&mut state, key, owner);
        // One notice: the token, and the lock's end if it was ours.
        self.watchers.heard(key, |heard| {
            heard.token = Some(token.clone());
            if ours {
                heard.locked_until = None;
            }
        });
        drop(state);
        Box::pin(async { Ok(()) })
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let taken = self.lock(&mut self.state(), key, owner, ttl).is_ok();
        Box::pin(async move { Ok(taken) })
    }

    fn load_or_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Found> {
        let mut state = self.state();
        let found = match Self::live_token(&mut state, key) {
            Some(token) => Found::Token(token),
            None => match self.lock(&mut state, key, owner, ttl) {
                Ok(()) => Found::Locked,
                Err(left) => Found::Held(Some(left)),
            },
        };
        Box::pin(async move { Ok(found) })
    }

    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        let mut state = self.state();
        if Self::unlock_owned(&mut state, key, owner) {
            self.watchers.heard(key, |heard| heard.locked_until = None);
        }
        Box::pin(async { Ok(()) })
    }

    fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool> {
        let mut state = self.state();
        let same = state.tokens.get(key) == Some(token);
        if same {
            state.tokens.remove(key);
            self.watchers.heard(key, |heard| heard.token = None);
        }
        Box::pin(async move { Ok(same) })
    }

    fn watch<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<watch::Receiver<Heard>>> {
        // Under the state lock, so that what it says matches the state from the start.
        let state = self.state();
        let (receiver, created) = self.watchers.subscribe(key);
        if created {
            let now = Instant::now();
            let token = state.tokens.get(key).cloned();
            let locked_until = state
                .locks
                .get(key)
                .map(|(_, until)| *until)
                .filter(|until| *until > now);
            self.watchers.heard(key, |heard| {
                heard.token = token;
                heard.locked_until = locked_until;
            });
        }
        drop(state);
        let mut receiver = receiver;
        receiver.borrow_and_update();
        Box::pin(async move { Ok(Some(receiver)) })
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryStore")
            .field("tokens", &state.tokens.len())
            .field("locks", &state.locks.len())
            .finish()
    }
}
