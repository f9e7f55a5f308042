//! The contract of a store that pushes notices (`TokenStore::watch`) and looks and
//! publishes in one operation each (`load_or_lock`, `publish_and_unlock`), checked on the
//! `MemoryStore` (`tests/store.rs`) and on a real redis-server (`tests/fleet.rs`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use docplanner_auth::store::{Found, Heard, SharedToken, TokenStore};
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

    // A token invalidated after a 401 is forgotten by the notices too.
    let stored = store.load(key).await.unwrap().unwrap();
    assert!(store.invalidate(key, &stored).await.unwrap());
    until(&mut heard, |h| h.token.is_none()).await;
    assert!(store
        .watch(key)
        .await
        .unwrap()
        .unwrap()
        .borrow()
        .token
        .is_none());
}

/// `load_or_lock` takes the lock when nothing is stored and says how long another holder
/// keeps it; `publish_and_unlock` stores the token and releases its owner's lock (only
/// its owner's), after which the notices say both (the token, the lock ended); a look at
/// a stored token returns it and leaves the lock alone.
pub async fn one_look_and_one_publication(store: &dyn TokenStore, key: &str) {
    let mut heard = store
        .watch(key)
        .await
        .unwrap()
        .expect("a store with notices");
    let ttl = Duration::from_secs(5);
    assert_eq!(
        store.load_or_lock(key, "a", ttl).await.unwrap(),
        Found::Locked
    );
    until(&mut heard, |h| h.is_locked(Instant::now())).await;
    match store.load_or_lock(key, "b", ttl).await.unwrap() {
        Found::Held(Some(left)) => assert!(
            left <= ttl && left > ttl - Duration::from_secs(2),
            "held for {left:?} more"
        ),
        other => panic!("a held lock was reported as {other:?}"),
    }
    assert!(!store.try_lock(key, "b", ttl).await.unwrap());

    // A publication by another owner leaves the lock to its holder.
    let stray = AccessToken::new("str4y-t0k3n", Duration::from_secs(60)).unwrap();
    store
        .publish_and_unlock(key, &SharedToken::from_token(&stray), "b")
        .await
        .unwrap();
    assert!(!store.try_lock(key, "c", ttl).await.unwrap());

    let token = AccessToken::new("0ne-l00k-t0k3n", Duration::from_secs(60)).unwrap();
    store
        .publish_and_unlock(key, &SharedToken::from_token(&token), "a")
        .await
        .unwrap();
    until(&mut heard, |h| {
        h.token.as_ref().is_some_and(|t| t.is(&token)) && !h.is_locked(Instant::now())
    })
    .await;
    match store.load_or_lock(key, "c", ttl).await.unwrap() {
        Found::Token(stored) => assert!(stored.is(&token)),
        other => panic!("the stored token was reported as {other:?}"),
    }
    // The look found a token, so it did not take the lock: another replica still can.
    assert!(store.try_lock(key, "d", ttl).await.unwrap());
    store.unlock(key, "d").await.unwrap();
}
