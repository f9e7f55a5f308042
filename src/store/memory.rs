//! [`MemoryStore`]: the embedded store, for caches in one process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{unix_ms, SharedToken, StoreFuture, TokenStore};

/// An in-process [`TokenStore`]: several [`TokenCache`](crate::TokenCache)s (for example
/// one per worker or per tenant runtime) share one token and one refresh. Cheap to clone;
/// clones are the same store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<State>>,
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
}

impl TokenStore for MemoryStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
        let now = unix_ms(SystemTime::now());
        let mut state = self.state();
        if state
            .tokens
            .get(key)
            .is_some_and(|t| t.expires_at_ms() <= now)
        {
            state.tokens.remove(key);
        }
        let token = state.tokens.get(key).cloned();
        Box::pin(async move { Ok(token) })
    }

    fn publish<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, ()> {
        self.state().tokens.insert(key.to_owned(), token.clone());
        Box::pin(async { Ok(()) })
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let now = Instant::now();
        let mut state = self.state();
        let free = state.locks.get(key).is_none_or(|(_, until)| *until <= now);
        if free {
            state
                .locks
                .insert(key.to_owned(), (owner.to_owned(), now + ttl));
        }
        Box::pin(async move { Ok(free) })
    }

    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        let mut state = self.state();
        if state
            .locks
            .get(key)
            .is_some_and(|(holder, _)| holder == owner)
        {
            state.locks.remove(key);
        }
        Box::pin(async { Ok(()) })
    }

    fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool> {
        let mut state = self.state();
        let same = state.tokens.get(key) == Some(token);
        if same {
            state.tokens.remove(key);
        }
        Box::pin(async move { Ok(same) })
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
