//! `RedisStore` leaves the process alone: opening one, and using it over `redis://`,
//! installs no rustls crypto provider; and `rediss://` works in a process where the
//! application installed none. Its own test binary (one test, run in order), so that no
//! other test's provider install can interfere.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use docplanner_auth::store::{RedisStore, SharedToken, StoreKey, TokenStore};
use docplanner_auth::AccessToken;
use rustls::crypto::CryptoProvider;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

/// Publish a token through `store` and read it back.
async fn round_trip(store: &RedisStore, secret: &str) {
    let key = StoreKey::custom("provider-test");
    let token = AccessToken::new(secret, Duration::from_secs(60)).unwrap();
    let shared = SharedToken::from_token(&token);
    store.publish(key.as_str(), &shared).await.unwrap();
    let stored = store.load(key.as_str()).await.unwrap().unwrap();
    assert!(stored.to_token().unwrap().same_secret(&token));
}

#[tokio::test]
async fn redis_store_installs_no_crypto_provider() {
    assert!(
        CryptoProvider::get_default().is_none(),
        "nobody installed one yet"
    );

    // Opening: the URL forms, and a client of the application's.
    let _ = RedisStore::open("redis://127.0.0.1:1/").unwrap();
    let _ = RedisStore::open("rediss://:password@127.0.0.1:1/0").unwrap();
    let _ = RedisStore::from_client(redis::Client::open("redis://127.0.0.1:1/").unwrap());
    assert!(
        CryptoProvider::get_default().is_none(),
        "RedisStore::open installed a process-wide crypto provider"
    );

    // Using it over redis://.
    let Some(plain) = RedisServer::start("redis_store_installs_no_crypto_provider") else {
        return;
    };
    round_trip(&RedisStore::open(&plain.url()).unwrap(), "plain-t0k3n").await;
    assert!(
        CryptoProvider::get_default().is_none(),
        "a redis:// RedisStore installed a process-wide crypto provider"
    );

    // rediss:// with no process default installed by the application: a certificate of
    // our own for 127.0.0.1, trusted through the application's redis::Client.
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir =
        std::env::temp_dir().join(format!("docplanner-auth-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let Some(tls) = RedisServer::start_tls("redis_store_installs_no_crypto_provider", &cert, &key)
    else {
        return;
    };
    let client = redis::Client::build_with_tls(
        tls.tls_url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(generated.cert.pem().into_bytes()),
        },
    )
    .unwrap();
    round_trip(&RedisStore::from_client(client), "tls-t0k3n").await;
    // redis-rs builds its TLS configuration with `rustls::ClientConfig::builder()`, which
    // installs the provider rustls' crate features name (ring) when there is none: the
    // crate docs say so. If this changes, update the docs of `RedisStore`.
    assert!(CryptoProvider::get_default().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
