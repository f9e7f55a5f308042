//! [`RedisStore`] (feature `redis`): one token for a whole fleet of replicas. It owns the
//! Redis side of the fleet protocol: the keys, the lock (and how a dead lock is taken
//! over), the notices it publishes and listens to (pub/sub), and where its connections
//! come from (a URL, the application's `redis::Client`, or the application's own
//! connection: a manager, a cluster or a sentinel connection).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{Client, Cmd, Pipeline, RedisFuture, Script, Value};
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{
    load_then_lock, publish_then_unlock, unix_ms, Found, Heard, SharedToken, StoreFuture,
    TokenStore, Watchers,
};
use crate::error::{BoxError, Error};

/// Compare-and-delete: delete the token KEYS[1] only if it is still ARGV[1] (the token a
/// replica saw rejected), and say so on the notice channel ARGV[2] (`dropped`), so that no
/// cache adopts it from an earlier notice.
const INVALIDATE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.pcall('PUBLISH', ARGV[2], 'dropped')
    return 1
end
return 0
"#;

/// Take the refresh lock KEYS[1] for owner ARGV[1] for ARGV[2] ms, if nobody holds it,
/// and say so on the notice channel ARGV[3] (`locked <ms>`), so that the other replicas
/// wait for the publication instead of trying the lock themselves. With a token key
/// KEYS[2], the token stored there is returned instead, if any, and the lock is not tried
/// ([`TokenStore::load_or_lock`]: a first look in one round trip).
/// Returns the stored token (a string), -1 if the lock is now ARGV[1]'s, else the
/// milliseconds its holder still keeps it.
/// A lock key without an expiry (PTTL -1: an operator's `SET`, a restored dump), or with
/// one longer than the lock's TTL (no replica with these settings took it), has no owner
/// that will release it in time: it is treated as dead and taken over, so the refresh
/// goes on and its token is published instead of every replica waiting, then fetching
/// alone, on each refresh. A token key of another type (`WRONGTYPE`) counts as no token:
/// the publication overwrites it.
/// Notices use `pcall`: an ACL user without the channel permission still locks (its
/// replicas then poll instead of being pushed to).
const LOCK: &str = r#"
if KEYS[2] then
    local stored = redis.pcall('GET', KEYS[2])
    if type(stored) == 'string' then
        return stored
    end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    local left = redis.call('PTTL', KEYS[1])
    if left ~= -1 and left <= tonumber(ARGV[2]) then
        return left
    end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.pcall('PUBLISH', ARGV[3], 'locked ' .. ARGV[2])
return -1
"#;

/// Release the refresh lock KEYS[1] if owner ARGV[1] still holds it, and say so on the
/// notice channel ARGV[2] (`released`).
const UNLOCK: &str = r#"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.pcall('PUBLISH', ARGV[2], 'released')
    return 1
end
return 0
"#;

/// Store the token ARGV[1] under KEYS[1] until ARGV[2] (Unix ms), and push it on the notice
/// channel ARGV[3] (`token <stored form>`): waiting replicas adopt it from the message.
/// With a lock key KEYS[2], also release that lock if owner ARGV[4] still holds it
/// ([`TokenStore::publish_and_unlock`]): the token's notice says the refresh is over, so
/// no `released` notice follows.
const PUBLISH: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
if KEYS[2] and redis.pcall('GET', KEYS[2]) == ARGV[4] then
    redis.call('DEL', KEYS[2])
end
redis.pcall('PUBLISH', ARGV[3], 'token ' .. ARGV[1])
return 1
"#;

/// The default Redis timeouts for connecting and for each answer: 500 ms, as the cache's
/// default store timeout. A replica never waits long on Redis: it fetches on its own
/// instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// A [`TokenStore`] on Redis: the replicas of a fleet share one token and make one
/// refresh per token lifetime.
///
/// * Three ways in: [`open`](Self::open) a `redis://` or `rediss://` URL (`AUTH` user and
///   password from the URL, a database number as the path: `redis://host/2`);
///   [`from_client`](Self::from_client) with your `redis::Client` (TLS certificates of
///   your own, for instance); or [`with_connection`](Self::with_connection) with any async
///   connection you built (a `ConnectionManager`, a cluster or sentinel connection).
/// * From a URL or a client it connects lazily and reconnects by itself: a Redis that is
///   down at start, killed, slow or flushed never fails a request (the cache fetches on
///   its own meanwhile).
/// * What it stores: under `<prefix>docplanner-auth:v1:<hash>` the access token with its
///   issue and expiry times (the key expires with the token), and under `…:lock` the
///   owner of the refresh lock, for at most twice the token request timeout. The hash is
///   of (token URL, client id, scope); the client secret is never stored. A lock key
///   without an expiry is taken over as dead.
/// * Releasing the lock and invalidating a token are compare-and-delete scripts: a
///   replica only releases its own lock and only deletes the token it saw rejected.
/// * One round trip per step: a replica's first look returns the stored token or else
///   takes the lock ([`TokenStore::load_or_lock`]), and the holder publishes its token
///   and releases the lock together ([`TokenStore::publish_and_unlock`]), each one script.
///   On your own connection (which may be a Redis Cluster's, where one script may only
///   touch keys of one slot), or once Redis refused such a script (`CROSSSLOT`: a proxy in
///   front of a cluster), each is several operations of one key each.
/// * Notices ([`TokenStore::watch`]): taking the lock, publishing a token (which ends the
///   lock), releasing the lock without a token and dropping a token after a 401 are
///   announced on the channel `…:notices` (the token travels in the message), and a
///   store made from a URL or a client listens on one pub/sub connection of its own,
///   opened on the first refresh: a replica that finds the lock taken waits for the
///   publication (and adopts the token from the message, without a `GET`) instead of
///   polling. So a store holds two connections to Redis: 1,000 replicas
///   are 2,000 clients (Redis accepts 10,000 by default). A store on your own
///   connection ([`with_connection`](Self::with_connection)) does not listen: its
///   replicas poll while they wait. An ACL user needs the channel permission
///   (`&docplanner-auth:*`) for the notices; without it everything works, by polling.
///
/// It leaves the process alone: it installs no rustls crypto provider. For `rediss://`,
/// redis-rs builds its TLS configuration from rustls' process default provider; if the
/// application installed none, rustls picks (and installs) the one its crate features
/// name: ring, which this crate's rustls features select. Install your own provider at
/// startup, before the first `rediss://` connection, if you want another one.
///
/// Security: the token grants access to patient data. Use `rediss://`, a password or an
/// ACL user restricted to the key and channel prefix (`~docplanner-auth:*
/// &docplanner-auth:*`, or your own prefix with [`prefix`](Self::prefix)), and a Redis
/// that only your replicas reach.
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
///
/// With a connection of your own (a cluster or sentinel connection works the same way):
///
/// ```no_run
/// use docplanner_auth::store::RedisStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = redis::Client::open("redis://redis.internal/")?;
/// let manager = client.get_connection_manager().await?;
/// let store = RedisStore::with_connection(manager).prefix("billing:");
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: Arc<str>,
    invalidate: Arc<Script>,
    lock: Arc<Script>,
    unlock: Arc<Script>,
    publish: Arc<Script>,
    /// Set once Redis refused a script on two keys (`CROSSSLOT`): one key per script.
    one_key: Arc<AtomicBool>,
}

/// Where the store's connection comes from.
#[derive(Clone)]
enum Connection {
    /// Our own connection manager over the application's client.
    Lazy(Arc<Lazy>),
    /// The application's connection, cloned for each operation.
    Given(Arc<dyn Fn() -> DynConnection + Send + Sync>),
}

/// A client, the connection manager made from it on first use (and again after a
/// failed attempt), and the pub/sub connection that listens to the notices.
struct Lazy {
    client: Client,
    /// The connection and response timeout of both connections.
    timeout: Duration,
    manager: Mutex<Option<ConnectionManager>>,
    listener: Mutex<Option<Listener>>,
}

impl Lazy {
    /// Nothing connected yet.
    fn new(client: Client, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            client,
            timeout,
            manager: Mutex::new(None),
            listener: Mutex::new(None),
        })
    }
}

/// The pub/sub connection: its sink subscribes; a task reads its messages into the
/// watchers, and when the connection ends it closes them (the caches then poll) and
/// marks the listener dead, so that the next watch opens a new one.
struct Listener {
    sink: PubSubSink,
    watchers: Arc<Watchers>,
    alive: Arc<AtomicBool>,
}

/// Any application connection, behind one type.
struct DynConnection(Box<dyn ConnectionLike + Send>);

impl ConnectionLike for DynConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://` or `rediss://`). Nothing is connected
    /// yet; a malformed URL is an error (its text is never echoed: it may hold a password).
    pub fn open(url: &str) -> Result<Self, Error> {
        let client = Client::open(url).map_err(|_| {
            Error::config(
                "the Redis URL is not valid: expected redis://[user:password@]host[:port][/db] \
                 or rediss://…",
            )
        })?;
        Ok(Self::from_client(client))
    }

    /// A store over your `redis::Client` (built with your own TLS certificates, for
    /// instance): it makes its own connection manager on first use, with 500 ms connection
    /// and response timeouts (see [`timeout`](Self::timeout)), and reconnects by itself.
    pub fn from_client(client: Client) -> Self {
        Self::new(Connection::Lazy(Lazy::new(client, REDIS_TIMEOUT)))
    }

    /// A store over a connection you built: a `redis::aio::ConnectionManager`, a cluster
    /// connection (`redis::cluster_async::ClusterConnection`), a sentinel's or a
    /// multiplexed connection. It is cloned for each operation; its reconnection and
    /// timeouts are yours (the cache still bounds each operation with its store timeout).
    pub fn with_connection<C>(connection: C) -> Self
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        Self::new(Connection::Given(Arc::new(move || {
            DynConnection(Box::new(connection.clone()))
        })))
    }

    fn new(connection: Connection) -> Self {
        Self {
            connection,
            prefix: Arc::from(""),
            invalidate: Arc::new(Script::new(INVALIDATE)),
            lock: Arc::new(Script::new(LOCK)),
            unlock: Arc::new(Script::new(UNLOCK)),
            publish: Arc::new(Script::new(PUBLISH)),
            one_key: Arc::default(),
        }
    }

    /// The connection and response timeout of the connections this store makes (from
    /// [`open`](Self::open) or [`from_client`](Self::from_client)): default 500 ms, the
    /// cache's default store timeout. Raise it with
    /// [`TokenCacheBuilder::store_timeout`](crate::TokenCacheBuilder::store_timeout) for a
    /// Redis that answers slower (each operation ends at the shorter of the two). Set it
    /// before the store is first used; a store on your own connection
    /// ([`with_connection`](Self::with_connection)) has your connection's timeouts, and
    /// this changes nothing. A zero timeout is refused.
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, Error> {
        if timeout.is_zero() {
            return Err(Error::config(
                "the Redis timeout must be longer than zero: every answer would time out",
            ));
        }
        if let Connection::Lazy(lazy) = &self.connection {
            self.connection = Connection::Lazy(Lazy::new(lazy.client.clone(), timeout));
        }
        Ok(self)
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

    fn channel(&self, key: &str) -> String {
        format!("{}{key}:notices", self.prefix)
    }

    /// Whether each script must touch one key only: on the application's connection,
    /// which may be a Redis Cluster's, where the keys of one script must share a slot
    /// (the token's key and its lock's do not), or once Redis refused a script on both
    /// (a proxy in front of a cluster). The look and the publication are then several
    /// operations of one key each.
    fn one_key_per_script(&self) -> bool {
        matches!(self.connection, Connection::Given(_)) || self.one_key.load(Ordering::Relaxed)
    }

    /// Whether `error` is Redis refusing a script whose keys are in two slots
    /// (`CROSSSLOT`, refused before it runs): if so, this store uses one key per script
    /// from now on.
    fn keys_span_slots(&self, error: &BoxError) -> bool {
        let cross_slot = error.downcast_ref::<redis::RedisError>().is_some_and(|e| {
            e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot)
        });
        if cross_slot {
            self.one_key.store(true, Ordering::Relaxed);
        }
        cross_slot
    }

    /// Run the lock script: take the lock of `key` for `owner` for `ttl`, unless `look`
    /// finds a token stored (then that token). A stored value this version cannot read
    /// (another program's) counts as none: the lock is tried on its own.
    async fn lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        look: bool,
    ) -> Result<Found, BoxError> {
        let mut connection = self.connection().await?;
        let mut invocation = self.lock.key(self.lock_key(key));
        if look {
            invocation.key(self.key(key));
        }
        let answer: Value = invocation
            .arg(owner)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(self.channel(key))
            .invoke_async(&mut connection)
            .await?;
        Ok(match answer {
            Value::Int(-1) => Found::Locked,
            Value::Int(left) => Found::Held(Some(Duration::from_millis(
                u64::try_from(left).unwrap_or(0),
            ))),
            stored => match decode(redis::from_redis_value(stored)?) {
                Some(token) => Found::Token(token),
                None => Box::pin(self.lock(key, owner, ttl, false)).await?,
            },
        })
    }

    /// Run the publish script: store `token` under `key` and announce it; with `owner`,
    /// also release the lock it holds. A token already expired is not stored.
    async fn publish_token(
        &self,
        key: &str,
        token: &SharedToken,
        owner: Option<&str>,
    ) -> Result<(), BoxError> {
        if token.expires_at_ms() <= unix_ms(SystemTime::now()) {
            return match owner {
                Some(owner) => self.unlock(key, owner).await,
                None => Ok(()),
            };
        }
        let mut connection = self.connection().await?;
        let mut invocation = self.publish.key(self.key(key));
        if owner.is_some() {
            invocation.key(self.lock_key(key));
        }
        let _: i64 = invocation
            .arg(token.encode().as_str())
            .arg(token.expires_at_ms())
            .arg(self.channel(key))
            .arg(owner.unwrap_or_default())
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    /// A connection for one operation.
    async fn connection(&self) -> Result<DynConnection, BoxError> {
        let lazy = match &self.connection {
            Connection::Given(connection) => return Ok(connection()),
            Connection::Lazy(lazy) => lazy,
        };
        let mut slot = lazy.manager.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(DynConnection(Box::new(connection.clone())));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(lazy.timeout))
            .set_response_timeout(Some(lazy.timeout))
            .set_number_of_retries(1);
        let connection = lazy
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *slot = Some(connection.clone());
        Ok(DynConnection(Box::new(connection)))
    }

    /// Listen to the notices of `key`: on the listener's connection (opened, or opened
    /// again after it ended), subscribed before returning.
    async fn listen(&self, lazy: &Lazy, key: &str) -> Result<watch::Receiver<Heard>, BoxError> {
        let mut slot = lazy.listener.lock().await;
        if !slot
            .as_ref()
            .is_some_and(|l| l.alive.load(Ordering::Acquire))
        {
            let pubsub =
                tokio::time::timeout(lazy.timeout, lazy.client.get_async_pubsub()).await??;
            let (sink, stream) = pubsub.split();
            let listener = Listener {
                sink,
                watchers: Arc::default(),
                alive: Arc::new(AtomicBool::new(true)),
            };
            let ended = Ended {
                watchers: Arc::clone(&listener.watchers),
                alive: Arc::clone(&listener.alive),
            };
            drop(tokio::spawn(async move {
                let mut stream = stream;
                while let Some(message) = stream.next().await {
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    let payload = Zeroizing::new(payload);
                    hear(&ended.watchers, message.get_channel_name(), &payload);
                }
                drop(ended);
            }));
            *slot = Some(listener);
        }
        let Some(listener) = slot.as_mut() else {
            return Err("the notice listener is gone".into());
        };
        let channel = self.channel(key);
        let (receiver, created) = listener.watchers.subscribe(&channel);
        if created {
            let subscribe = tokio::time::timeout(lazy.timeout, listener.sink.subscribe(&channel));
            if let Err(error) = subscribe.await.map_err(BoxError::from).and_then(|r| Ok(r?)) {
                listener.watchers.forget(&channel);
                return Err(error);
            }
        }
        Ok(receiver)
    }
}

/// The end of a listener's task, however it ends (its connection closed, or its runtime
/// shut down and dropped it): the listener is dead and its watchers are closed, so the
/// caches poll meanwhile and the next watch opens a new one.
struct Ended {
    watchers: Arc<Watchers>,
    alive: Arc<AtomicBool>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
        self.watchers.clear();
    }
}

/// A stored value as a token, if this version can read it (another program's value, or
/// bytes that are not UTF-8, count as none). The bytes are wiped either way.
fn decode(stored: Vec<u8>) -> Option<SharedToken> {
    let stored = Zeroizing::new(stored);
    std::str::from_utf8(&stored)
        .ok()
        .and_then(|s| SharedToken::decode(s).ok())
}

/// One notice heard on `channel`: a published token, a lock taken for some milliseconds,
/// a lock released, or the token dropped after a 401. Anything else is ignored.
fn hear(watchers: &Watchers, channel: &str, payload: &str) {
    if let Some(stored) = payload.strip_prefix("token ") {
        if let Ok(token) = SharedToken::decode(stored) {
            // A published token ends the refresh: its holder released the lock with it
            // (an older version's holder says `released` after it, which changes nothing).
            watchers.heard(channel, |heard| {
                heard.token = Some(token);
                heard.locked_until = None;
            });
        }
    } else if let Some(ms) = payload.strip_prefix("locked ") {
        if let Ok(ms) = ms.parse::<u64>() {
            let until = Instant::now() + Duration::from_millis(ms);
            watchers.heard(channel, |heard| heard.locked_until = Some(until));
        }
    } else if payload == "released" {
        watchers.heard(channel, |heard| heard.locked_until = None);
    } else if payload == "dropped" {
        watchers.heard(channel, |heard| heard.token = None);
    }
}

impl TokenStore for RedisStore {
    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let stored: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.key(key))
                .query_async(&mut connection)
                .await?;
            Ok(stored.and_then(decode))
        })
    }

    fn publish<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, ()> {
        Box::pin(self.publish_token(key, token, None))
    }

    fn publish_and_unlock<'a>(
        &'a self,
        key: &'a str,
        token: &'a SharedToken,
        owner: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if !self.one_key_per_script() {
                match self.publish_token(key, token, Some(owner)).await {
                    Err(error) if self.keys_span_slots(&error) => {}
                    done => return done,
                }
            }
            publish_then_unlock(self, key, token, owner).await
        })
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let found = self.lock(key, owner, ttl, false).await?;
            Ok(found == Found::Locked)
        })
    }

    fn load_or_lock<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Found> {
        Box::pin(async move {
            if !self.one_key_per_script() {
                match self.lock(key, owner, ttl, true).await {
                    Err(error) if self.keys_span_slots(&error) => {}
                    found => return found,
                }
            }
            load_then_lock(self, key, owner, ttl).await
        })
    }

    fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let _: i64 = self
                .unlock
                .key(self.lock_key(key))
                .arg(owner)
                .arg(self.channel(key))
                .invoke_async(&mut connection)
                .await?;
            Ok(())
        })
    }

    fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let deleted: i64 = self
                .invalidate
                .key(self.key(key))
                .arg(token.encode().as_str())
                .arg(self.channel(key))
                .invoke_async(&mut connection)
                .await?;
            Ok(deleted == 1)
        })
    }

    fn watch<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<watch::Receiver<Heard>>> {
        Box::pin(async move {
            match &self.connection {
                Connection::Lazy(lazy) => Ok(Some(self.listen(lazy, key).await?)),
                Connection::Given(_) => Ok(None),
            }
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection info may hold a password: show the address only.
        let mut debug = f.debug_struct("RedisStore");
        match &self.connection {
            Connection::Lazy(lazy) => debug.field(
                "addr",
                &format_args!("{}", lazy.client.get_connection_info().addr()),
            ),
            Connection::Given(_) => debug.field("addr", &"[the application's connection]"),
        };
        debug.field("prefix", &self.prefix).finish_non_exhaustive()
    }
}
