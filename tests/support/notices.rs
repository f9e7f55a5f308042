//! The notice contract of a store that pushes them (`TokenStore::watch`), checked on the
//! `MemoryStore` (`tests/store.rs`) and on a real redis-server (`tests/fleet.rs`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use docplanner_auth::store::{Heard, SharedToken, TokenStore};
use docplanner_auth::AccessToken;
use tokio::sync::watch;
use tokio::time::Instant;

/// Wait (at most 5 s) until what `heard` says satisfies `done`.
async fn until(heard: &mut watch::Receiver<Heard>, done: impl FnMut(&Heard) -> bool) {
    tokio::time::timeout(Duration::from_secs(5), heard.wait_for(done))
        .await
        .expect("no notice within 5 s")
        .expect("the store stopped listening");
}

/// Taking the lock, publishing a token (carried in the notice) and releasing the lock
/// each reach a cache that watches the key, and a cache that starts watching later hears
/// the last token at once.
pub async fn notices_follow_the_lock_and_the_token(store: &dyn TokenStore, key: &str) {
    let mut heard = store
        .watch(key)
        .await
        .unwrap()
        .expect("a store with notices");
    assert!(!heard.borrow().is_locked(Instant::now()));
    assert!(heard.borrow().token.is_none());

    assert!(store
        .try_lock(key, "a", Duration::from_secs(5))
        .await
        .unwrap());
    until(&mut heard, |h| h.is_locked(Instant::now())).await;

    let token = AccessToken::new("n0tice-t0k3n", Duration::from_secs(60)).unwrap();
    store
        .publish(key, &SharedToken::from_token(&token))
        .await
        .unwrap();
    until(&mut heard, |h| {
        h.token.as_ref().is_some_and(|t| t.is(&token))
    })
    .await;

    store.unlock(key, "a").await.unwrap();
    until(&mut heard, |h| !h.is_locked(Instant::now())).await;

    let later = store.watch(key).await.unwrap().unwrap();
    assert!(later.borrow().token.as_ref().is_some_and(|t| t.is(&token)));
    assert!(!format!("{:?}", later.borrow()).contains("n0tice"));
}
