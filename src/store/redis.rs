//! [`RedisStore`] (feature `redis`): one token for a whole fleet of replicas.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio::sync::Mutex;

use super::{unix_ms, SharedToken, StoreFuture, TokenStore};
use crate::error::{BoxError, Error};

/// Compare-and-delete: delete KEYS[1] only if it holds ARGV[1].
const COMPARE_AND_DELETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
else
    return 0
end
"#;

/// Redis timeouts for connecting and for each answer: 500 ms, as the cache's default
/// store timeout. A replica never waits long on Redis: it fetches on its own instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// A [`TokenStore`] on Redis: the replicas of a fleet share one token and make one
/// refresh per token lifetime.
///
/// * `redis://` and `rediss://` (TLS, rustls with ring) URLs; `AUTH` (user and password)
///   from the URL; a database number as the path (`redis://host/2`).
/// * It connects lazily and reconnects by itself: a Redis that is down at start, killed,
///   slow or flushed never fails a request (the cache fetches on its own meanwhile).
/// * What it stores: under `<prefix>docplanner-auth:v1:<hash>` the access token with its
///   issue and expiry times (the key expires with the token), and under `…:lock` the
///   owner of the refresh lock, for at most twice the token request timeout. The hash is
///   of (token URL, client id, scope); the client secret is never stored.
/// * Releasing the lock and invalidating a token are compare-and-delete scripts: a
///   replica only releases its own lock and only deletes the token it saw rejected.
///
/// Security: the token grants access to patient data. Use `rediss://`, a password or an
/// ACL user restricted to the key prefix (`~docplanner-auth:*`, or your own prefix with
/// [`prefix`](Self::prefix)), and a Redis that only your replicas reach.
///
/// ```no_run
/// use docplanner_auth::docplanner::Credentials;
/// use docplanner_auth::store::RedisStore;
///
/// # fn main() -> Result<(), docplanner_auth::Error> {
/// let credentials = Credentials::from_env()?;
/// let store = RedisStore::open("rediss://:password@redis.internal:6379/0")?;
/// let cache = credentials.shared_cache(store)?; // one token for every replica
/// # let _ = cache;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: Arc<str>,
    connection: Arc<Mutex<Option<ConnectionManager>>>,
    compare_and_delete: Arc<Script>,
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://` or `rediss://`). Nothing is connected
    /// yet; a malformed URL is an error (its text is never echoed: it may hold a password).
    pub fn open(url: &str) -> Result<Self, Error> {
        // rediss:// uses rustls' process default provider: make it ours (ring) unless the
        // application installed one.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url).map_err(|_| {
            Error::config(
                "the Redis URL is not valid: expected redis://[user:password@]host[:port][/db] \
                 or rediss://…",
            )
        })?;
        Ok(Self {
            client,
            prefix: Arc::from(""),
            connection: Arc::new(Mutex::new(None)),
            compare_and_delete: Arc::new(Script::new(COMPARE_AND_DELETE)),
        })
    }

    /// Prefix every key with `prefix` (for ACLs restricted to a key pattern, or several
    /// applications on one Redis).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}{key}:lock", self.prefix)
    }

    /// The shared connection, made on first use (and again after a failed attempt).
    async fn connection(&self) -> Result<ConnectionManager, BoxError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        let connection = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

impl TokenStore for RedisStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let stored: Option<String> = redis::cmd("GET")
                .arg(self.key(key))
                .query_async(&mut connection)
                .await?;
            Ok(stored.and_then(|s| SharedToken::decode(&s).ok()))
        })
    }

    fn publish<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if token.expires_at_ms() <= unix_ms(SystemTime::now()) {
                return Ok(());
            }
            let mut connection = self.connection().await?;
            let () = redis::cmd("SET")
                .arg(self.key(key))
                .arg(token.encode().as_str())
                .arg("PXAT")
                .arg(token.expires_at_ms())
                .query_async(&mut connection)
                .await?;
            Ok(())
        })
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let taken: Option<String> = redis::cmd("SET")
                .arg(self.lock_key(key))
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                .query_async(&mut connection)
                .await?;
            Ok(taken.is_some())
        })
    }

    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let _: i64 = self
                .compare_and_delete
                .key(self.lock_key(key))
                .arg(owner)
                .invoke_async(&mut connection)
                .await?;
            Ok(())
        })
    }

    fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let deleted: i64 = self
                .compare_and_delete
                .key(self.key(key))
                .arg(token.encode().as_str())
                .invoke_async(&mut connection)
                .await?;
            Ok(deleted == 1)
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection info may hold a password: show the address only.
        f.debug_struct("RedisStore")
            .field(
                "addr",
                &format_args!("{}", self.client.get_connection_info().addr),
            )
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
