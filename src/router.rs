//! [`Router`]: several credential sets in one client. It only chooses: which [`Set`] (a
//! [`TokenCache`] and the API origins its token may go to) a request belongs to — by the
//! request's host (markets), or by a [`CredentialSet`] extension naming it (tenants, built
//! at run time by a lookup and dropped when idle) — or that the request passes through
//! untouched (hosts outside every set, when allowed). Each set keeps its own cache, so its
//! own single flight, store key, metrics and tracing name (the cache's
//! [name](crate::TokenCacheBuilder::name)) and [`status`](TokenCache::status).
//!
//! Both adapters consult it: [`BearerAuthLayer::routed`](crate::BearerAuthLayer::routed)
//! and, with feature `reqwest`,
//! [`BearerAuthMiddleware::routed`](crate::reqwest::BearerAuthMiddleware::routed).
//!
//! # How a request's set is chosen
//!
//! 1. A [`CredentialSet`] extension names the set: one of the router's sets by its name,
//!    else a tenant's, built by the [lookup](RouterBuilder::tenants) the first time the key
//!    is seen. The request must still be for one of that set's origins, or it is refused.
//! 2. Otherwise the set whose origins include the request's (`https`, host, port). With
//!    one set only, that set's own check decides (exactly as a single-set layer).
//! 3. No set: refused with [`Error::is_host_not_allowed`] by default (plain `http` to a
//!    set's host is refused with [`Error::is_insecure_scheme`] either way); with
//!    [`pass_through(true)`](RouterBuilder::pass_through), sent untouched: no token, no
//!    token request, no replay.
//!
//! Choosing among host-routed sets is one lookup of the request's authority as written in
//! a table of every set's `https` authorities (one hash, nearly always one slot), with no
//! allocation; only a miss (an upper-case host, plain `http`, a host outside every set)
//! asks each set in turn. Its cost next to a single set is measured by
//! `benches/hot_path.rs`, case `f_routed_16_sets` (see BENCHMARKS.md): about 15–20 ns
//! at 16 sets.
//!
//! # Redirects
//!
//! A set's token never follows a redirect to another set's host, and with the adapters'
//! own redirect policies no redirect crosses from one set to another, out of a set, or
//! from a host outside every set into one (the caller gets the `3xx`):
//!
//! * tower-http's `FollowRedirectLayer` outside the layer, with
//!   [`BearerAuthLayer::redirect_policy`](crate::BearerAuthLayer::redirect_policy)
//!   (feature `tower-http`). With another policy, each hop still goes through the router
//!   again, so a hop carries only the token of its own host's set — but a hop from market A
//!   to market B is then sent with B's token (a tenant's request changes account), and,
//!   with [`pass_through`](RouterBuilder::pass_through), a foreign host's redirect into
//!   the API becomes an authenticated call of its choosing. Tower-http 0.7's `Standard`
//!   policy keeps a request's extensions on a same-origin hop and drops them on a
//!   cross-origin one, so a [`CredentialSet`] survives only inside one origin.
//! * reqwest follows redirects inside the client: build it from
//!   [`BearerAuthMiddleware::client_builder`](crate::reqwest::BearerAuthMiddleware::client_builder),
//!   whose policy applies the same rule.
//!
//! # Fleet, metrics, tracing, status
//!
//! A set is its cache: give each its own name ([`TokenCacheBuilder::name`](crate::TokenCacheBuilder::name);
//! [`Markets::router`](crate::docplanner::Markets) names each after its domain), and, for
//! a fleet, its own store key. The `cache` label of every metric and span is that name;
//! [`Router::sets`] gives each set's [`TokenCache::status`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use docplanner_auth::router::{Router, Set};
//! use docplanner_auth::{AccessToken, BearerAuthLayer, BoxError, TokenCache};
//!
//! # fn main() -> Result<(), docplanner_auth::Error> {
//! let cache = |name: &str, token: &'static str| {
//!     TokenCache::builder(move || async move {
//!         Ok::<_, BoxError>(AccessToken::new(token, Duration::from_secs(3600))?)
//!     })
//!     .name(name)
//!     .build()
//! };
//! let spain = Set::new(cache("doctoralia.es", "es-token"), "https://www.doctoralia.es/api/v3/integration")?;
//! let poland = Set::new(cache("znanylekarz.pl", "pl-token"), "https://www.znanylekarz.pl/api/v3/integration")?;
//! let router = Router::builder(spain).set(poland).build()?;
//! let layer = BearerAuthLayer::routed(router);
//! # let _ = layer; Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Extensions, HeaderMap, Uri};
use tokio::time::Instant;

use crate::cache::TokenCache;
use crate::error::{Error, Kind};
use crate::origin::{check_host_header, Origin, Scope};

/// Default most tenant sets kept at once: 1,024. Past it, the least recently used is
/// dropped (and built again by the lookup if it comes back): a few hundred bytes each plus
/// its token and its key (at most [`MAX_CREDENTIAL_SET_KEY`] bytes), so at most a few MiB
/// however many tenants there are.
pub const DEFAULT_MAX_TENANTS: usize = 1024;

/// Default time after which a tenant set nobody used is dropped: 1 h. Longer than the
/// refresh lead and the usual gap between a tenant's requests, shorter than Docplanner's
/// 24 h token lifetime, so an idle tenant costs one token request when it comes back.
pub const DEFAULT_TENANT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest [`CredentialSet`] key, in bytes: 256. A longer key (or an empty one, or one
/// with control characters) is refused with [`Error::is_config`] before any lookup, so a
/// tenant costs a bounded amount of memory and a key is never echoed at length.
pub const MAX_CREDENTIAL_SET_KEY: usize = 256;

/// A request extension naming the credential set a request is sent with: one of the
/// router's sets by its [name](TokenCache::name) ([`set`](Self::set)), or a tenant's set,
/// built by the router's tenant lookup ([`tenant`](Self::tenant)). The two never mix: a
/// tenant key equal to a set's name is still a tenant (a customer-chosen key never selects
/// the operator's own credentials). It takes precedence over routing by host; the set's
/// token still only goes to that set's origins.
///
/// ```
/// use docplanner_auth::router::CredentialSet;
///
/// let request = http::Request::get("https://www.doctoralia.es/api/v3/integration/facilities")
///     .extension(CredentialSet::tenant("customer-42"))
///     .body(())
///     .unwrap();
/// # let _ = request;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CredentialSet {
    key: Arc<str>,
    tenant: bool,
}

impl CredentialSet {
    /// One of the router's sets, by its name.
    pub fn set(name: impl Into<Arc<str>>) -> Self {
        Self {
            key: name.into(),
            tenant: false,
        }
    }

    /// A tenant's (or customer's) set: the one the router's
    /// [lookup](RouterBuilder::tenants) built for `key`, built the first time it is seen.
    pub fn tenant(key: impl Into<Arc<str>>) -> Self {
        Self {
            key: key.into(),
            tenant: true,
        }
    }

    /// The set's name or the tenant's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this names a tenant (not one of the router's sets).
    pub fn is_tenant(&self) -> bool {
        self.tenant
    }

    /// A key fit to use: not empty, at most [`MAX_CREDENTIAL_SET_KEY`] bytes, no control
    /// characters. The refusal never quotes the key.
    fn checked_key(&self) -> Result<&str, Error> {
        let key = &*self.key;
        if key.is_empty() || key.len() > MAX_CREDENTIAL_SET_KEY || key.chars().any(char::is_control)
        {
            return Err(Error::config(format!(
                "a CredentialSet key must be 1 to {MAX_CREDENTIAL_SET_KEY} bytes without \
                 control characters; this one has {} bytes",
                key.len()
            )));
        }
        Ok(key)
    }
}

/// One credential set: a [`TokenCache`] and the API origins its token may be sent to.
#[derive(Clone, Debug)]
pub struct Set {
    cache: TokenCache,
    scope: Scope,
}

impl Set {
    /// The set whose token, from `cache`, goes to the host of `api_base` (for example
    /// `https://www.doctoralia.es/api/v3/integration`) and nowhere else. Its name is the
    /// cache's [name](TokenCache::name).
    ///
    /// Fails when `api_base` is not an absolute `https` URL (or `http` to a loopback host).
    pub fn new(cache: TokenCache, api_base: &str) -> Result<Self, Error> {
        let origin = Origin::parse_config("API base", api_base)?;
        Ok(Self {
            cache,
            scope: Scope::new(origin),
        })
    }

    /// Also send this set's token to the host of `api_base`.
    pub fn allow_api_base(mut self, api_base: &str) -> Result<Self, Error> {
        self.scope.add(Origin::parse_config("API base", api_base)?);
        Ok(self)
    }

    /// Allow plain `http` requests to this set's loopback hosts, for tests against a local
    /// mock (see [`BearerAuthLayer::allow_http_loopback`](crate::BearerAuthLayer::allow_http_loopback)).
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        self.scope.allow_http_loopback(allow);
        self
    }

    /// The set's cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// The set's name: its cache's.
    pub fn name(&self) -> &str {
        self.cache.name()
    }

    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    pub(crate) fn scope_mut(&mut self) -> &mut Scope {
        &mut self.scope
    }

    pub(crate) fn from_parts(cache: TokenCache, scope: Scope) -> Self {
        Self { cache, scope }
    }

    /// The full check (scheme, origin, `Host` header) before this set's token is attached;
    /// a refusal is counted on the set's cache.
    #[inline]
    fn check(&self, target: &impl Target) -> Result<(), Error> {
        self.counted(target.check(&self.scope))
    }

    /// `checked`, a refusal counted on this set's cache.
    #[inline]
    fn counted(&self, checked: Result<(), Error>) -> Result<(), Error> {
        if let Err(error) = &checked {
            self.cache.count_refused(error);
        }
        checked
    }
}

/// A request as the router sees it: each adapter describes its own (an `http::Uri` and
/// headers for the tower layer, a `reqwest::Url` and headers for the middleware).
pub(crate) trait Target {
    /// Whether the request falls in `scope` (cheap, no error built).
    fn admitted_by(&self, scope: &Scope) -> bool;
    /// The full check before a token of `scope` is attached.
    fn check(&self, scope: &Scope) -> Result<(), Error>;
    /// Only the last part of [`check`](Self::check): a caller's `Host` header names the
    /// request's own authority. For a request whose scheme and authority are known good
    /// (found in the router's table).
    fn check_host_header(&self) -> Result<(), Error>;
    /// The request's host.
    fn host(&self) -> &str;
    /// Whether the request is `https`.
    fn is_https(&self) -> bool;
    /// The authority as written (`host[:port]`), for an `https` request.
    fn https_authority(&self) -> Option<&str>;
}

/// The tower layer's request: its URI and headers.
pub(crate) struct HttpTarget<'a> {
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
}

impl Target for HttpTarget<'_> {
    #[inline]
    fn admitted_by(&self, scope: &Scope) -> bool {
        scope.admits(self.uri)
    }

    #[inline]
    fn check(&self, scope: &Scope) -> Result<(), Error> {
        scope.check_request(self.uri, self.headers)
    }

    #[inline]
    fn check_host_header(&self) -> Result<(), Error> {
        match self.uri.authority() {
            Some(authority) => check_host_header(self.headers, self.is_https(), authority.as_str()),
            None => Ok(()), // asked after a table hit only: there is an authority
        }
    }

    fn host(&self) -> &str {
        self.uri.host().unwrap_or_default()
    }

    fn is_https(&self) -> bool {
        self.uri.scheme() == Some(&http::uri::Scheme::HTTPS)
    }

    #[inline]
    fn https_authority(&self) -> Option<&str> {
        match (self.uri.scheme(), self.uri.authority()) {
            (Some(scheme), Some(authority)) if *scheme == http::uri::Scheme::HTTPS => {
                Some(authority.as_str())
            }
            _ => None,
        }
    }
}

/// What the router chose for a request.
#[derive(Debug)]
pub(crate) enum Route<'a> {
    /// A set chosen by host, or a named one.
    Set(&'a Set),
    /// A tenant's set, built by the lookup.
    Tenant(Arc<Set>),
    /// No set: the request goes out untouched.
    PassThrough,
}

impl Route<'_> {
    /// The chosen set, if any.
    pub(crate) fn set(&self) -> Option<&Set> {
        match self {
            Route::Set(set) => Some(set),
            Route::Tenant(set) => Some(set),
            Route::PassThrough => None,
        }
    }
}

/// Several credential sets, and how a request's set is chosen; see the [module docs](self).
/// Cheap to clone (one `Arc`); every clone shares the same tenant sets.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

#[derive(Clone)]
struct Shared {
    /// The sets chosen by host (or by name); the first is the default set.
    sets: Vec<Set>,
    /// The fast path of the choice by host: an `https` request's authority as written
    /// (lower case) → its set, built once. A miss falls back to asking each set (upper
    /// case, origins added later), so it is only ever a shortcut.
    by_authority: HostTable,
    pass_through: bool,
    tenants: Option<Arc<Tenants>>,
}

/// A user-supplied lookup that builds the set of a tenant key.
type Lookup = dyn Fn(&str) -> Result<Set, Error> + Send + Sync;

struct Tenants {
    lookup: Box<Lookup>,
    live: Mutex<Live>,
    max: usize,
    idle_timeout: Duration,
}

/// The tenant sets built so far, and when the idle ones were last dropped.
struct Live {
    sets: HashMap<Arc<str>, Tenant>,
    swept: Instant,
}

struct Tenant {
    set: Arc<Set>,
    last_used: Instant,
}

/// Builds a [`Router`]; see [`Router::builder`].
pub struct RouterBuilder {
    sets: Vec<Set>,
    pass_through: bool,
    lookup: Option<Box<Lookup>>,
    max_tenants: Option<usize>,
    tenant_idle_timeout: Option<Duration>,
}

impl Router {
    /// A router whose first (default) set is `first`; add more with
    /// [`set`](RouterBuilder::set).
    pub fn builder(first: Set) -> RouterBuilder {
        RouterBuilder {
            sets: vec![first],
            pass_through: false,
            lookup: None,
            max_tenants: None,
            tenant_idle_timeout: None,
        }
    }

    /// The sets chosen by host, the default one first.
    pub fn sets(&self) -> &[Set] {
        &self.shared.sets
    }

    /// The scopes of the sets chosen by host, for a redirect policy.
    #[cfg(any(feature = "reqwest", feature = "tower-http"))]
    pub(crate) fn scopes(&self) -> Vec<Scope> {
        self.shared.sets.iter().map(|s| s.scope.clone()).collect()
    }

    /// The default set (the first one given).
    pub fn default_set(&self) -> &Set {
        // `builder` takes the first set, and nothing removes one.
        &self.shared.sets[0]
    }

    /// How many tenant sets are live now: built by the lookup and used within the idle
    /// timeout. (An idle one is dropped by the next tenant request.)
    pub fn live_tenants(&self) -> usize {
        self.shared.tenants.as_ref().map_or(0, |t| t.live_count())
    }

    /// A router over one set with no pass-through: the single-set layer and middleware.
    pub(crate) fn single(set: Set) -> Self {
        Self {
            shared: Arc::new(Shared {
                sets: vec![set],
                by_authority: HostTable::default(),
                pass_through: false,
                tenants: None,
            }),
        }
    }

    /// The default set, to change: only before the router is shared (the adapters'
    /// `allow_http_loopback`).
    pub(crate) fn default_set_mut(&mut self) -> &mut Set {
        &mut Arc::make_mut(&mut self.shared).sets[0]
    }

    /// Add the origin of `api_base` to the default set (the adapters' `allow_api_base`).
    /// Refused when another set owns it: each origin belongs to one set, as
    /// [`build`](RouterBuilder::build) checks.
    pub(crate) fn allow_api_base(&mut self, api_base: &str) -> Result<(), Error> {
        let origin = Origin::parse_config("API base", api_base)?;
        let shared = Arc::make_mut(&mut self.shared);
        if let Some(owner) = shared.sets[1..].iter().find(|s| s.scope.has(&origin)) {
            return Err(Error::config(format!(
                "the API origin {origin:?} belongs to the credential set `{}`: each origin \
                 belongs to one set (add it to that set, not to the default one)",
                owner.name()
            )));
        }
        shared.sets[0].scope.add(origin);
        shared.by_authority = HostTable::new(&shared.sets);
        Ok(())
    }

    /// Choose the set for a request, check that its token may go with it, or say that it
    /// passes through untouched.
    #[inline]
    pub(crate) fn choose(
        &self,
        target: &impl Target,
        extensions: &Extensions,
    ) -> Result<Route<'_>, Error> {
        let shared = &*self.shared;
        if let Some(key) = extensions.get::<CredentialSet>() {
            return shared.by_key(key, target);
        }
        let sets = shared.sets.as_slice();
        let set = match sets {
            // One set and no pass-through: its own check says why a request is refused.
            [only] if !shared.pass_through => only,
            _ => {
                if let Some(set) = shared.lookup(target) {
                    // In the table: an `https` request for one of this set's origins,
                    // written as configured. Only its `Host` header is left to check.
                    set.counted(target.check_host_header())?;
                    return Ok(Route::Set(set));
                }
                let admitted = sets.iter().find(|s| target.admitted_by(&s.scope));
                // Else a set's host by plain http: a mistake, not another API; its check
                // says what is wrong.
                let plain_http = || {
                    sets.iter()
                        .find(|s| !target.is_https() && s.scope.has_host(target.host()))
                };
                match admitted.or_else(plain_http) {
                    Some(set) => set,
                    None if shared.pass_through => return Ok(Route::PassThrough),
                    None => return Err(shared.no_set(target.host())),
                }
            }
        };
        set.check(target)?;
        Ok(Route::Set(set))
    }
}

impl Shared {
    /// The set of an `https` request whose authority is in the table.
    #[inline]
    fn lookup(&self, target: &impl Target) -> Option<&Set> {
        let index = self.by_authority.get(target.https_authority()?)?;
        self.sets.get(index)
    }

    /// The set named by a request's [`CredentialSet`]: a set of the router by name, else a
    /// tenant's (built by the lookup if it is not live).
    fn by_key(&self, named: &CredentialSet, target: &impl Target) -> Result<Route<'_>, Error> {
        let key = named.checked_key()?;
        if !named.is_tenant() {
            let set = self.sets.iter().find(|s| s.name() == key).ok_or_else(|| {
                Error::config(format!(
                    "no credential set named {key:?}: add it to the router (a tenant's key \
                     goes in CredentialSet::tenant)"
                ))
            })?;
            set.check(target)?;
            return Ok(Route::Set(set));
        }
        let tenants = self.tenants.as_ref().ok_or_else(|| {
            Error::config(
                "a request names a tenant (CredentialSet::tenant) but the router has no \
                 tenant lookup: give it one with RouterBuilder::tenants",
            )
        })?;
        let set = tenants.get(&named.key)?;
        set.check(target)?;
        Ok(Route::Tenant(set))
    }

    /// The refusal of a request that no set claims.
    fn no_set(&self, host: &str) -> Error {
        let sets: Vec<&str> = self.sets.iter().map(Set::name).collect();
        let error = Error::new(
            Kind::HostNotAllowed,
            format!(
                "refused to send a request for {host}: no credential set ({}) covers it; \
                 add its API base to a set, or let such requests through untouched with \
                 RouterBuilder::pass_through(true)",
                sets.join(", ")
            ),
        );
        self.sets[0].cache.count_refused(&error);
        error
    }
}

impl Tenants {
    /// The live set of `key`, or a new one from the lookup; drops idle and least recently
    /// used sets past the bounds. The lookup runs under the lock, so concurrent first
    /// requests of a tenant share one set (one cache, one token request).
    fn get(&self, key: &Arc<str>) -> Result<Arc<Set>, Error> {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        // Idle sets go at most every eighth of the timeout: a scan, not one per request.
        if now.saturating_duration_since(live.swept) >= self.idle_timeout / 8 {
            live.sets.retain(|_, t| !self.is_idle(t, now));
            live.swept = now;
        }
        match live.sets.get_mut(key) {
            Some(tenant) if !self.is_idle(tenant, now) => {
                tenant.last_used = now;
                return Ok(Arc::clone(&tenant.set));
            }
            // Idle since the last scan: built again, as if it had been dropped.
            Some(_) => {
                live.sets.remove(key);
            }
            None => {}
        }
        let set = Arc::new((self.lookup)(key)?);
        while live.sets.len() >= self.max {
            let oldest = live
                .sets
                .iter()
                .min_by_key(|(_, t)| t.last_used)
                .map(|(k, _)| Arc::clone(k));
            match oldest {
                Some(oldest) => live.sets.remove(&oldest),
                None => break,
            };
        }
        live.sets.insert(
            Arc::clone(key),
            Tenant {
                set: Arc::clone(&set),
                last_used: now,
            },
        );
        Ok(set)
    }

    fn is_idle(&self, tenant: &Tenant, now: Instant) -> bool {
        now.saturating_duration_since(tenant.last_used) >= self.idle_timeout
    }

    /// The tenant sets used within the idle timeout.
    fn live_count(&self) -> usize {
        let now = Instant::now();
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.sets.values().filter(|t| !self.is_idle(t, now)).count()
    }
}

impl RouterBuilder {
    /// Add a set, chosen for requests to its origins (or by its name in a
    /// [`CredentialSet`] extension).
    pub fn set(mut self, set: Set) -> Self {
        self.sets.push(set);
        self
    }

    /// Let requests to hosts outside every set go out untouched: no token, no token
    /// request. Off by default: such requests are refused with
    /// [`Error::is_host_not_allowed`].
    pub fn pass_through(mut self, allow: bool) -> Self {
        self.pass_through = allow;
        self
    }

    /// Build the set of a tenant key (a [`CredentialSet`] extension that names none of the
    /// router's sets) with `lookup`, the first time the key is seen. Give each set's cache
    /// the tenant's name ([`TokenCacheBuilder::name`](crate::TokenCacheBuilder::name)) so
    /// that its metrics and spans say which tenant they are about. At most
    /// [`DEFAULT_MAX_TENANTS`] sets are kept, and one idle for longer than
    /// [`DEFAULT_TENANT_IDLE_TIMEOUT`] is dropped by the next tenant request (no timer
    /// runs); a dropped one is built again when its key returns (and fetches a token again,
    /// unless its cache shares a [store](crate::store)). Only a
    /// [`CredentialSet::tenant`] key reaches the lookup, never a set's name.
    ///
    /// The lookup runs under the router's tenant lock, so that concurrent first requests of
    /// a tenant share one set: keep it quick (build a cache from credentials already at
    /// hand, no I/O). An error it returns is the request's; a panic in it propagates to the
    /// caller, and the router stays usable.
    pub fn tenants<F>(mut self, lookup: F) -> Self
    where
        F: Fn(&str) -> Result<Set, Error> + Send + Sync + 'static,
    {
        self.lookup = Some(Box::new(lookup));
        self
    }

    /// The most tenant sets kept at once (default [`DEFAULT_MAX_TENANTS`]; at least 1).
    /// Without a [tenant lookup](Self::tenants), [`build`](Self::build) refuses it.
    pub fn max_tenants(mut self, max: usize) -> Self {
        self.max_tenants = Some(max.max(1));
        self
    }

    /// How long a tenant set nobody uses is kept (default
    /// [`DEFAULT_TENANT_IDLE_TIMEOUT`]): the first tenant request after that drops it.
    /// Without a [tenant lookup](Self::tenants), [`build`](Self::build) refuses it.
    pub fn tenant_idle_timeout(mut self, timeout: Duration) -> Self {
        self.tenant_idle_timeout = Some(timeout);
        self
    }

    /// The router. Fails when two sets share a name or an origin (a request could not say
    /// which token it should carry).
    pub fn build(self) -> Result<Router, Error> {
        for (i, a) in self.sets.iter().enumerate() {
            for b in &self.sets[i + 1..] {
                if a.name() == b.name() {
                    return Err(Error::config(format!(
                        "two credential sets are named `{}`: give each cache its own name \
                         (TokenCacheBuilder::name)",
                        a.name()
                    )));
                }
                if a.scope.overlaps(&b.scope) {
                    return Err(Error::config(format!(
                        "the credential sets `{}` and `{}` share an API origin: each origin \
                         belongs to one set",
                        a.name(),
                        b.name()
                    )));
                }
            }
        }
        let tenants = match self.lookup {
            Some(lookup) => Some(Arc::new(Tenants {
                lookup,
                live: Mutex::new(Live {
                    sets: HashMap::new(),
                    swept: Instant::now(),
                }),
                max: self.max_tenants.unwrap_or(DEFAULT_MAX_TENANTS),
                idle_timeout: self
                    .tenant_idle_timeout
                    .unwrap_or(DEFAULT_TENANT_IDLE_TIMEOUT),
            })),
            None if self.max_tenants.is_some() || self.tenant_idle_timeout.is_some() => {
                return Err(Error::config(
                    "max_tenants and tenant_idle_timeout bound the sets of a tenant lookup, \
                     and this router has none: give it one with RouterBuilder::tenants",
                ))
            }
            None => None,
        };
        Ok(Router {
            shared: Arc::new(Shared {
                by_authority: HostTable::new(&self.sets),
                sets: self.sets,
                pass_through: self.pass_through,
                tenants,
            }),
        })
    }
}

/// The redirect rule of both adapters' policies (tower-http's and reqwest's): a hop is
/// followed when it stays inside the origins of the set of the hop before it, or when
/// neither hop is in any set (no token goes with either); a hop into a set from outside
/// every set (a foreign host would choose an authenticated call), out of a set, or from
/// one set to another stops, and the caller gets the `3xx`. `previous` and `next` say
/// whether a scope admits each hop.
#[cfg(any(feature = "reqwest", feature = "tower-http"))]
pub(crate) fn follows_redirect(
    scopes: &[Scope],
    previous: impl Fn(&Scope) -> bool,
    next: impl Fn(&Scope) -> bool,
) -> bool {
    match scopes.iter().find(|scope| next(scope)) {
        Some(scope) => previous(scope),
        None => !scopes.iter().any(previous),
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each set prints its cache (state and counters, never a token) and its origins.
        f.debug_struct("Router")
            .field("sets", &self.shared.sets)
            .field("pass_through", &self.shared.pass_through)
            .field("tenants", &self.shared.tenants.is_some())
            .field("live_tenants", &self.live_tenants())
            .finish()
    }
}

impl fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("sets", &self.sets)
            .field("pass_through", &self.pass_through)
            .field("tenants", &self.lookup.is_some())
            .finish()
    }
}

/// The router's fast path: each set's `https` authorities (as configured: lower case,
/// `host` and `host:port`) → the set's index. A lookup hashes the authority eight bytes at
/// a time and reads its slot, the next one if that holds another authority, and so on
/// (at least four slots per authority: the first one, nearly always), comparing the full
/// hash before the key. Plainer than a `HashMap` and a few ns faster (`benches/hot_path.rs`:
/// the budget of choosing a set is 25 ns). The table holds what the application
/// configured; a request can only look up.
#[derive(Clone, Debug, Default)]
struct HostTable {
    /// A power of two of slots, never full (none when no set has an `https` origin).
    slots: Box<[Option<Slot>]>,
    /// `64 - log2(slots)`: an authority's first slot is the top bits of its hash.
    shift: u32,
}

#[derive(Clone, Debug)]
struct Slot {
    hash: u64,
    authority: Box<str>,
    set: usize,
}

impl HostTable {
    /// The hash's multiplier (2^64 / φ, odd).
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new(sets: &[Set]) -> Self {
        let authorities: Vec<(&str, usize)> = sets
            .iter()
            .enumerate()
            .flat_map(|(index, set)| set.scope.https_authorities().map(move |a| (a, index)))
            .collect();
        if authorities.is_empty() {
            return Self::default();
        }
        let size = (authorities.len() * 4).next_power_of_two();
        let mut table = Self {
            slots: vec![None; size].into_boxed_slice(),
            shift: 64 - size.trailing_zeros(),
        };
        for (authority, set) in authorities {
            let hash = Self::hash(authority);
            let at = table.search(hash, authority);
            // Each origin belongs to one set (checked by the builder): the first one
            // listed keeps it.
            if table.slots[at].is_none() {
                table.slots[at] = Some(Slot {
                    hash,
                    authority: authority.into(),
                    set,
                });
            }
        }
        table
    }

    /// The hash of `authority`: its bytes eight at a time, each word mixed in by one
    /// multiplication (three for a typical `www.doctoralia.com.br`), the last one padded
    /// with zeros (an authority holds no NUL byte), then one more multiplication.
    #[inline]
    fn hash(authority: &str) -> u64 {
        let mix = |hash: u64, word: [u8; 8]| {
            (hash ^ u64::from_le_bytes(word))
                .wrapping_mul(Self::K)
                .rotate_left(23)
        };
        let mut words = authority.as_bytes().chunks_exact(8);
        let mut hash = 0;
        for word in words.by_ref() {
            // Eight bytes: a plain load (no copy of a slice of unknown length).
            hash = mix(hash, word.try_into().unwrap_or_default());
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        mix(hash, last).wrapping_mul(Self::K)
    }

    /// Where the search for `hash` starts: the multiplication leaves its best bits high.
    #[inline]
    fn first_slot(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// The slot holding `authority`, or the free one where the search for it ends (the
    /// table is never full): from the hash's first slot onwards, the full hash compared
    /// before the key.
    #[inline]
    fn search(&self, hash: u64, authority: &str) -> usize {
        let mut at = self.first_slot(hash);
        while let Some(slot) = &self.slots[at] {
            if slot.hash == hash && *slot.authority == *authority {
                break;
            }
            at = (at + 1) & (self.slots.len() - 1);
        }
        at
    }

    /// The set of `authority` if the table holds it (exactly as written).
    #[inline]
    fn get(&self, authority: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let hash = Self::hash(authority);
        let slot = self.slots[self.search(hash, authority)].as_ref()?;
        Some(slot.set)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(name: &str, api_base: &str) -> Set {
        let cache = TokenCache::builder(|| async {
            Ok::<_, crate::BoxError>(crate::AccessToken::new("t", Duration::from_secs(60))?)
        })
        .name(name)
        .build();
        Set::new(cache, api_base).unwrap()
    }

    /// Every configured authority is found, under both its spellings; anything else,
    /// including an authority that hashes like a configured one, is not.
    #[test]
    fn the_host_table_finds_exactly_the_configured_authorities() {
        let sets: Vec<Set> = (0..40)
            .map(|i| set(&format!("m{i}"), &format!("https://www.market{i}.test")))
            .chain([set("port", "https://api.example:8443")])
            .collect();
        let table = HostTable::new(&sets);
        assert_eq!(table.slots.len(), 512, "four slots per authority at least");
        let slots: Vec<(usize, &Slot)> = table
            .slots
            .iter()
            .enumerate()
            .filter_map(|(at, slot)| Some((at, slot.as_ref()?)))
            .collect();
        assert_eq!(slots.len(), 81, "every authority is in the table");
        let moved = slots
            .iter()
            .filter(|(at, slot)| *at != table.first_slot(slot.hash))
            .count();
        // Some found their first slot taken and were placed further; most were not (the
        // hash spreads them: a table searched from one slot would still answer, slowly).
        assert!((1..=16).contains(&moved), "{moved} of 81 moved");
        for i in 0..40 {
            assert_eq!(table.get(&format!("www.market{i}.test")), Some(i));
            assert_eq!(table.get(&format!("www.market{i}.test:443")), Some(i));
            assert_eq!(
                table.get(&format!("WWW.market{i}.test")),
                None,
                "as configured"
            );
        }
        assert_eq!(table.get("api.example:8443"), Some(40));
        for other in [
            "api.example",
            "www.market1.tes",
            "",
            "www.market40.test",
            "x",
        ] {
            assert_eq!(table.get(other), None, "{other:?}");
        }
        assert!(HostTable::new(&[]).get("www.market1.test").is_none());

        // Every byte counts, wherever it is (in a whole word or in the padded last one).
        let authority = "www.market1.test:8443";
        for at in 0..authority.len() {
            let mut changed = authority.as_bytes().to_vec();
            changed[at] ^= 1;
            let changed = String::from_utf8(changed).unwrap();
            assert_ne!(
                HostTable::hash(&changed),
                HostTable::hash(authority),
                "{at}"
            );
        }

        // The hash is no secret: a request may name an authority made to hash like a
        // configured one. Such an authority finds the slot, and is still not the set's.
        let forged = colliding("www.market1.test");
        assert_ne!(forged, "www.market1.test");
        assert_eq!(
            HostTable::hash(&forged),
            HostTable::hash("www.market1.test")
        );
        assert_eq!(table.get(&forged), None, "{forged:?}");
    }

    /// Another 16-byte ASCII string with the same hash as `target` (16 bytes): its first
    /// eight bytes chosen, its last eight solved for.
    fn colliding(target: &str) -> String {
        const K: u64 = HostTable::K;
        let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap());
        let first = |w: u64| w.wrapping_mul(K).rotate_left(23);
        let bytes = target.as_bytes();
        let (head, tail) = (word(&bytes[..8]), word(&bytes[8..]));
        (0u64..)
            .map(|n| {
                // Seven bits of `n` in each byte: ASCII.
                let head2 = (0..8).fold(0, |w, i| w | ((n >> (7 * i)) & 0x7f) << (8 * i));
                let tail2 = tail ^ first(head) ^ first(head2);
                [head2.to_le_bytes(), tail2.to_le_bytes()].concat()
            })
            .find(|forged| forged.is_ascii() && forged != bytes)
            .map(|forged| String::from_utf8(forged).unwrap())
            .unwrap()
    }
}
