//! Several credential sets in one tower layer (`docplanner_auth::router`): markets chosen
//! by host, tenants chosen per request and built at run time (bounded), hosts outside
//! every set refused or passed through. The inner service records what each request
//! carried; each set's token source counts its token requests.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::router::{CredentialSet, Router, Set};
use docplanner_auth::store::{MemoryStore, StoreKey};
use docplanner_auth::{
    AccessToken, BearerAuthLayer, BoxError, ReplayBody, TokenCache, TokenCacheBuilder,
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{service_fn, Layer, Service, ServiceExt};

/// Every wait on a request is bounded: a broken build fails, never hangs.
const PATIENCE: Duration = Duration::from_secs(20);

/// One market: its name, its API base and how many tokens its source handed out.
#[derive(Clone)]
struct Market {
    name: String,
    api_base: String,
    fetches: Arc<AtomicUsize>,
}

impl Market {
    fn new(i: usize) -> Self {
        Self {
            name: format!("m{i}"),
            api_base: format!("https://www.market{i}.test/api/v3/integration"),
            fetches: Arc::default(),
        }
    }

    /// The set: tokens `<name>-<n>`, each fetch taking 10 ms (of the paused clock) so that
    /// concurrent callers overlap.
    fn set(&self) -> Set {
        Set::new(self.cache_builder().build(), &self.api_base).unwrap()
    }

    /// The cache of [`set`](Self::set), to build.
    fn cache_builder(&self) -> TokenCacheBuilder {
        let (name, fetches) = (self.name.clone(), Arc::clone(&self.fetches));
        TokenCache::builder(move || {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("{name}-{n}");
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<_, BoxError>(AccessToken::new(token, Duration::from_secs(3600))?)
            }
        })
        .name(self.name.clone())
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn url(&self) -> String {
        format!("{}/facilities", self.api_base)
    }
}

/// What the inner service saw: host and `Authorization`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// An inner service that records every request and answers 401 to tokens named in
/// `revoked`, a redirect to market 1's API to `…/hop`, 200 to anything else.
fn api(
    seen: Seen,
    revoked: Arc<Mutex<HashSet<String>>>,
) -> impl Service<
    Request<ReplayBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
        let authorization = request
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        let host = request.uri().host().unwrap_or_default().to_owned();
        seen.lock().unwrap().push((host, authorization.clone()));
        let hop = request.uri().path() == "/api/v3/integration/hop";
        let rejected = authorization
            .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
            .is_some_and(|t| revoked.lock().unwrap().contains(&t));
        let status = if rejected {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        async move {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            if hop && status == StatusCode::OK {
                // Market 0's `/hop` redirects to market 1's API.
                *response.status_mut() = StatusCode::FOUND;
                response.headers_mut().insert(
                    "location",
                    http::HeaderValue::from_static(
                        "https://www.market1.test/api/v3/integration/facilities",
                    ),
                );
            }
            Ok::<_, BoxError>(response)
        }
    })
}

async fn send<S>(
    client: S,
    request: Request<Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError>,
{
    tokio::time::timeout(PATIENCE, client.oneshot(request))
        .await
        .expect("the request did not complete in time")
}

/// The error a request fails with, as the crate's typed error.
async fn refusal<S>(client: S, request: Request<Full<Bytes>>) -> docplanner_auth::Error
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError>,
{
    let error = send(client, request).await.unwrap_err();
    error
        .downcast_ref::<docplanner_auth::Error>()
        .unwrap()
        .clone()
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

fn router(markets: &[Market]) -> docplanner_auth::router::RouterBuilder {
    let mut builder = Router::builder(markets[0].set());
    for market in &markets[1..] {
        builder = builder.set(market.set());
    }
    builder
}

#[tokio::test(start_paused = true)]
async fn each_host_gets_its_own_sets_token_and_no_other() {
    let markets: Vec<Market> = (0..3).map(Market::new).collect();
    let layer = BearerAuthLayer::routed(router(&markets).build().unwrap());
    let seen = Seen::default();
    let client = layer.layer(api(seen.clone(), Arc::default()));
    for _ in 0..2 {
        for market in &markets {
            let response = send(client.clone(), get(&market.url())).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    for (host, authorization) in seen.lock().unwrap().iter() {
        let market = host
            .trim_start_matches("www.market")
            .trim_end_matches(".test");
        assert_eq!(
            authorization.as_deref(),
            Some(format!("Bearer m{market}-1").as_str()),
            "{host} got another set's token"
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 6);
    // The same host written otherwise (explicit port, upper case) is the same set.
    for url in [
        "https://www.market1.test:443/api/v3/integration/x",
        "https://WWW.Market1.TEST/api/v3/integration/x",
    ] {
        send(client.clone(), get(url)).await.unwrap();
        let last = seen.lock().unwrap().last().unwrap().1.clone();
        assert_eq!(last.as_deref(), Some("Bearer m1-1"), "{url}");
    }
    let debug = format!("{layer:?}");
    assert!(debug.contains("m2") && !debug.contains("m2-1"), "{debug}");
    for (market, set) in markets.iter().zip(layer.router().sets()) {
        assert_eq!(market.fetches(), 1, "{}", market.name);
        assert_eq!(set.name(), market.name);
        assert!(set.cache().status().is_usable(), "{}", market.name);
    }
}

#[tokio::test(start_paused = true)]
async fn ten_sets_times_a_thousand_cold_requests_make_ten_token_requests_and_a_revocation_refreshes_one_set(
) {
    let markets: Vec<Market> = (0..10).map(Market::new).collect();
    let layer = BearerAuthLayer::routed(router(&markets).build().unwrap());
    let revoked = Arc::new(Mutex::new(HashSet::new()));
    let seen = Seen::default();
    let client = layer.layer(api(seen.clone(), Arc::clone(&revoked)));
    let burst = |client: &docplanner_auth::BearerAuth<_>| {
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            for market in &markets {
                let (client, url) = (client.clone(), market.url());
                tasks.push(tokio::spawn(async move { send(client, get(&url)).await }));
            }
        }
        tasks
    };
    for task in burst(&client) {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let fetches: Vec<usize> = markets.iter().map(Market::fetches).collect();
    assert_eq!(fetches, [1; 10], "one token request per set");

    // Market 3's token is revoked: a burst over every set refreshes market 3 only.
    revoked.lock().unwrap().insert("m3-1".to_owned());
    for task in burst(&client) {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let fetches: Vec<usize> = markets.iter().map(Market::fetches).collect();
    let mut expected = [1; 10];
    expected[3] = 2;
    assert_eq!(fetches, expected, "only the revoked set refreshed");
}

#[tokio::test(start_paused = true)]
async fn a_host_outside_every_set_is_refused_by_default_and_passes_through_untouched_on_request() {
    let markets: Vec<Market> = (0..2).map(Market::new).collect();
    let other = "https://api.other.test/v1/things";

    // Default: refused before the inner service or any token endpoint is called.
    let seen = Seen::default();
    let client = BearerAuthLayer::routed(router(&markets).build().unwrap())
        .layer(api(seen.clone(), Arc::default()));
    let error = send(client, get(other)).await.unwrap_err();
    let error = error.downcast_ref::<docplanner_auth::Error>().unwrap();
    assert!(error.is_host_not_allowed(), "{error}");
    assert!(error.to_string().contains("pass_through"), "{error}");
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(markets[0].fetches() + markets[1].fetches(), 0);

    // Pass-through: sent as it is, no token, no token request; the sets still work.
    let markets: Vec<Market> = (0..2).map(Market::new).collect();
    let seen = Seen::default();
    let client = BearerAuthLayer::routed(router(&markets).pass_through(true).build().unwrap())
        .layer(api(seen.clone(), Arc::default()));
    let request = Request::get(other)
        .header("authorization", "Bearer callers-own")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send(client.clone(), request).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        send(client.clone(), get(other)).await.unwrap().status(),
        StatusCode::OK
    );
    // Plain http to a host of no set is not a mistaken market request: it passes too.
    assert_eq!(
        send(client.clone(), get("http://api.other.test/v1/things"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (
                "api.other.test".to_owned(),
                Some("Bearer callers-own".to_owned())
            ),
            ("api.other.test".to_owned(), None),
            ("api.other.test".to_owned(), None),
        ],
        "untouched"
    );
    assert_eq!(
        markets[0].fetches() + markets[1].fetches(),
        0,
        "no token request"
    );
    send(client.clone(), get(&markets[1].url())).await.unwrap();
    assert_eq!(
        seen.lock().unwrap()[3].1.as_deref(),
        Some("Bearer m1-1"),
        "the sets are still authenticated"
    );
    // Plain http to a set's host is not "another host": it is refused, never passed.
    let error = send(client, get("http://www.market0.test/api/v3/integration/x"))
        .await
        .unwrap_err();
    let error = error.downcast_ref::<docplanner_auth::Error>().unwrap();
    assert!(error.is_insecure_scheme(), "{error}");
    assert_eq!(seen.lock().unwrap().len(), 4);
}

/// A request that passes through untouched keeps its body too: the inner service reads
/// every byte the caller sent (the body is not recorded, there is no replay).
#[tokio::test(start_paused = true)]
async fn a_request_passed_through_keeps_its_body() {
    use http_body_util::BodyExt as _;

    let markets: Vec<Market> = (0..2).map(Market::new).collect();
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let api = {
        let received = Arc::clone(&received);
        service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
            let received = Arc::clone(&received);
            async move {
                let body = request.into_body().collect().await?.to_bytes();
                received.lock().unwrap().push(body);
                Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
            }
        })
    };
    let client =
        BearerAuthLayer::routed(router(&markets).pass_through(true).build().unwrap()).layer(api);
    let request = Request::post("https://api.other.test/v1/things")
        .body(Full::new(Bytes::from_static(b"{\"passed\":true}")))
        .unwrap();
    assert_eq!(
        send(client, request).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(*received.lock().unwrap(), [&b"{\"passed\":true}"[..]]);
    assert_eq!(
        markets[0].fetches() + markets[1].fetches(),
        0,
        "no token request"
    );
}

/// Counts the live caches built by a tenant lookup: one guard per cache, dropped with it.
#[derive(Default, Clone)]
struct Live(Arc<AtomicUsize>);

struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Live {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// A lookup building a set per tenant key whose token is `<key>-token`, for the
    /// origin `https://tenants.test`, counting its token requests in `fetches`.
    fn lookup(
        &self,
        fetches: Arc<AtomicUsize>,
    ) -> impl Fn(&str) -> Result<Set, docplanner_auth::Error> + Send + Sync + 'static {
        let live = Arc::clone(&self.0);
        move |key: &str| {
            live.fetch_add(1, Ordering::SeqCst);
            let guard = Guard(Arc::clone(&live));
            let (token, fetches) = (format!("{key}-token"), Arc::clone(&fetches));
            let cache = TokenCache::builder(move || {
                let _held = &guard;
                fetches.fetch_add(1, Ordering::SeqCst);
                let token = token.clone();
                async move { Ok::<_, BoxError>(AccessToken::new(token, Duration::from_secs(3600))?) }
            })
            .name(key)
            .build();
            Set::new(cache, "https://tenants.test/api")
        }
    }
}

fn for_tenant(url: &str, key: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .extension(CredentialSet::tenant(key))
        .body(Full::default())
        .unwrap()
}

fn for_set(url: &str, name: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .extension(CredentialSet::set(name))
        .body(Full::default())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_request_extension_chooses_a_tenant_built_once_by_the_lookup() {
    let markets = [Market::new(0)];
    let (live, fetches) = (Live::default(), Arc::new(AtomicUsize::new(0)));
    let router = router(&markets)
        .tenants(live.lookup(Arc::clone(&fetches)))
        .build()
        .unwrap();
    let seen = Seen::default();
    let client = BearerAuthLayer::routed(router.clone()).layer(api(seen.clone(), Arc::default()));

    // 100 concurrent first requests of one tenant: one set, one token request.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                send(client, for_tenant("https://tenants.test/api/x", "acme")).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!((live.count(), fetches.load(Ordering::SeqCst)), (1, 1));
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|(_, a)| a.as_deref() == Some("Bearer acme-token")));

    // A tenant's token only goes to the tenant's origins, never to a market's host.
    let error = refusal(client.clone(), for_tenant(&markets[0].url(), "acme")).await;
    assert!(error.is_host_not_allowed(), "{error}");
    // The extension may also name a set of the router by its name.
    send(client.clone(), for_set(&markets[0].url(), "m0"))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().last().unwrap().1.as_deref(),
        Some("Bearer m0-1")
    );
    assert_eq!(router.live_tenants(), 1);

    // A tenant key equal to a set's name is a tenant: the lookup builds its own set (for
    // its own origin), and the market's token is never chosen by it.
    let error = refusal(client.clone(), for_tenant(&markets[0].url(), "m0")).await;
    assert!(error.is_host_not_allowed(), "{error}");
    assert_eq!((router.live_tenants(), markets[0].fetches()), (2, 1));

    // Keys that are empty, too long or carry control characters: refused before any
    // lookup, never quoted.
    let long = "k".repeat(docplanner_auth::router::MAX_CREDENTIAL_SET_KEY + 1);
    for key in ["", long.as_str(), "evil\nINFO forged log line"] {
        for request in [
            for_tenant(&markets[0].url(), key),
            for_set(&markets[0].url(), key),
        ] {
            let error = refusal(client.clone(), request).await;
            assert!(error.is_config(), "{error}");
            assert!(error.to_string().len() < 200 && !error.to_string().contains("forged"));
        }
    }
    assert_eq!(router.live_tenants(), 2);

    // Without a lookup, an unknown set is a configuration error that names it, and a
    // tenant one that says what is missing.
    let client = BearerAuthLayer::routed(Router::builder(Market::new(1).set()).build().unwrap())
        .layer(api(Seen::default(), Arc::default()));
    let error = refusal(client.clone(), for_set(&markets[0].url(), "nobody")).await;
    assert!(
        error.is_config() && error.to_string().contains("nobody"),
        "{error}"
    );
    let error = refusal(client, for_tenant(&markets[0].url(), "acme")).await;
    assert!(
        error.is_config() && error.to_string().contains("tenant lookup"),
        "{error}"
    );
    // Tenant bounds without a lookup would do nothing: refused.
    let error = Router::builder(Market::new(1).set())
        .max_tenants(10)
        .build()
        .unwrap_err();
    assert!(error.is_config(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_tenants_keep_memory_flat() {
    let markets = [Market::new(0)];
    let (live, fetches) = (Live::default(), Arc::new(AtomicUsize::new(0)));
    let router = router(&markets)
        .tenants(live.lookup(Arc::clone(&fetches)))
        .max_tenants(100)
        .build()
        .unwrap();
    let client =
        BearerAuthLayer::routed(router.clone()).layer(api(Seen::default(), Arc::default()));
    let mut most = 0;
    for i in 0..10_000 {
        let request = for_tenant("https://tenants.test/api/x", &format!("tenant-{i}"));
        send(client.clone(), request).await.unwrap();
        most = most.max(live.count());
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        10_000,
        "one token per tenant"
    );
    assert!(
        most <= 100,
        "at most the cap of caches alive at once: {most}"
    );
    assert_eq!(router.live_tenants(), 100);
    assert_eq!(live.count(), 100, "the dropped sets' caches are gone");

    // Idle ones go after the idle timeout, at the next tenant request.
    let (live, fetches) = (Live::default(), Arc::new(AtomicUsize::new(0)));
    let router = Router::builder(Market::new(1).set())
        .tenants(live.lookup(Arc::clone(&fetches)))
        .tenant_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    drop(client);
    let client =
        BearerAuthLayer::routed(router.clone()).layer(api(Seen::default(), Arc::default()));
    for i in 0..10 {
        send(
            client.clone(),
            for_tenant("https://tenants.test/api/x", &format!("t{i}")),
        )
        .await
        .unwrap();
    }
    assert_eq!(router.live_tenants(), 10);
    let tenant = |key: &str| for_tenant("https://tenants.test/api/x", key);
    tokio::time::advance(Duration::from_secs(55)).await;
    send(client.clone(), tenant("t0")).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        router.live_tenants(),
        1,
        "idle ones are not counted as live"
    );
    // A key idle past the timeout is built again (one more token request), even between
    // two scans for idle sets.
    let before = fetches.load(Ordering::SeqCst);
    send(client.clone(), tenant("t3")).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);
    assert_eq!(router.live_tenants(), 2);
    // The next scan (an eighth of the timeout later) drops every idle set and its cache.
    tokio::time::advance(Duration::from_secs(8)).await;
    send(client.clone(), tenant("late")).await.unwrap();
    assert_eq!(router.live_tenants(), 3, "t0, t3 and late");
    assert_eq!(live.count(), 3, "the idle sets' caches are gone");
}

#[test]
fn sets_with_the_same_name_or_origin_are_refused() {
    let a = Market::new(0);
    let mut b = Market::new(1);
    b.name = a.name.clone();
    let error = Router::builder(a.set()).set(b.set()).build().unwrap_err();
    assert!(
        error.is_config() && error.to_string().contains("named"),
        "{error}"
    );

    let mut c = Market::new(2);
    c.api_base = a.api_base.clone();
    let error = Router::builder(a.set()).set(c.set()).build().unwrap_err();
    assert!(
        error.is_config() && error.to_string().contains("origin"),
        "{error}"
    );
}

/// Two replicas, each with a router over the same two markets, share one store: each set
/// keeps its own store key (a replica adopts the other's token per market) and its own
/// single flight (a revocation in one market refreshes that market only). (The set's name
/// in spans: `observability::each_credential_set_names_its_spans`.)
#[tokio::test(start_paused = true)]
async fn each_set_shares_its_own_store_key_and_single_flight() {
    let markets: Vec<Market> = (0..2).map(Market::new).collect();
    let store = MemoryStore::new();
    let replica = || {
        let mut sets = markets.iter().map(|market| {
            let key = StoreKey::new(
                &format!(
                    "https://www.market{}.test/oauth/v2/token",
                    &market.name[1..]
                ),
                &format!("{}-id", market.name),
                "integration",
            );
            let cache = market.cache_builder().store(store.clone(), key).build();
            Set::new(cache, &market.api_base).unwrap()
        });
        let router = Router::builder(sets.next().unwrap())
            .set(sets.next().unwrap())
            .build()
            .unwrap();
        BearerAuthLayer::routed(router)
    };
    let (a, b) = (replica(), replica());
    let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen = Seen::default();
    let a = a.layer(api(seen.clone(), revoked.clone()));
    let b = b.layer(api(seen.clone(), revoked.clone()));
    for client in [&a, &b] {
        for market in &markets {
            let response = send(client.clone(), get(&market.url())).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    let fetches = || markets.iter().map(Market::fetches).collect::<Vec<_>>();
    assert_eq!(fetches(), [1, 1], "replica b adopted both markets' tokens");

    revoked.lock().unwrap().insert("m1-1".to_owned());
    for client in [&b, &a] {
        for market in &markets {
            let response = send(client.clone(), get(&market.url())).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{}", market.name);
        }
    }
    assert_eq!(
        fetches(),
        [1, 2],
        "one refresh of market 1 for both replicas, none of market 0"
    );
    let carried: Vec<Option<String>> = seen.lock().unwrap()[4..]
        .iter()
        .map(|(_, auth)| auth.clone())
        .collect();
    assert_eq!(
        carried.iter().map(Option::as_deref).collect::<Vec<_>>(),
        [
            Some("Bearer m0-1"),
            Some("Bearer m1-1"),
            Some("Bearer m1-2"),
            Some("Bearer m0-1"),
            Some("Bearer m1-1"),
            Some("Bearer m1-2"),
        ]
    );
}

/// The layer's `allow_api_base` adds an origin to the default set after the router is
/// built: another set's origin is refused (it would carry the default set's token to that
/// set's host for a request naming the default set), a new one is routed to the default set.
#[tokio::test(start_paused = true)]
async fn allow_api_base_on_a_routed_layer_keeps_each_origin_in_one_set() {
    let markets: Vec<Market> = (0..3).map(Market::new).collect();
    let layer = BearerAuthLayer::routed(router(&markets).build().unwrap());
    let error = layer
        .clone()
        .allow_api_base(&markets[2].api_base)
        .unwrap_err();
    assert!(
        error.is_config() && error.to_string().contains("`m2`"),
        "{error}"
    );

    let layer = layer
        .allow_api_base("https://files.market0.test:8443")
        .unwrap();
    let seen = Seen::default();
    let client = layer.layer(api(seen.clone(), Arc::default()));
    for url in [
        "https://files.market0.test:8443/upload",
        "https://www.market2.test/api/v3/integration/x",
    ] {
        let response = send(client.clone(), get(url)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
    }
    let named_m0 = for_set("https://www.market2.test/api/v3/integration/x", "m0");
    let error = send(client.clone(), named_m0).await.unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter()
            .map(|(host, auth)| (host.as_str(), auth.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("files.market0.test", Some("Bearer m0-1")),
            ("www.market2.test", Some("Bearer m2-1")),
        ]
    );
}

/// tower-http's `FollowRedirectLayer` outside the routed layer: every hop goes through the
/// router again, so a redirect from market 0's host to market 1's carries market 1's
/// token (its own host), never market 0's, even when the first request named market 0.
#[tokio::test(start_paused = true)]
async fn a_redirect_to_another_markets_host_never_carries_the_first_markets_token() {
    use tower_http::follow_redirect::FollowRedirectLayer;

    let markets: Vec<Market> = (0..2).map(Market::new).collect();
    let seen = Seen::default();
    let client = tower::ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(BearerAuthLayer::routed(router(&markets).build().unwrap()))
        .service(api(seen.clone(), Arc::default()));
    let hop = "https://www.market0.test/api/v3/integration/hop";
    let response = tokio::time::timeout(PATIENCE, client.clone().oneshot(get(hop)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (
                "www.market0.test".to_owned(),
                Some("Bearer m0-1".to_owned())
            ),
            (
                "www.market1.test".to_owned(),
                Some("Bearer m1-1".to_owned())
            ),
        ]
    );

    // Named for market 0: tower-http's `Standard` policy drops the extensions on a
    // cross-origin hop, so the hop is routed by its host again; market 0's token stays home.
    let response = tokio::time::timeout(PATIENCE, client.oneshot(for_set(hop, "m0")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for (host, authorization) in seen.lock().unwrap().iter() {
        if host == "www.market1.test" {
            assert_eq!(authorization.as_deref(), Some("Bearer m1-1"));
        }
    }
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert_eq!((markets[0].fetches(), markets[1].fetches()), (1, 1));
}

/// tower-http's `FollowRedirectLayer` with the layer's own `redirect_policy`: a redirect is
/// followed inside one set's origins (a tenant's request keeps the tenant's token), and
/// between hosts outside every set; it stops from one market to another, and from a host
/// outside every set into a market's API (a foreign host never chooses an authenticated
/// call); at most `MAX_REDIRECTS` hops.
#[cfg(feature = "tower-http")]
#[tokio::test(start_paused = true)]
async fn the_redirect_policy_follows_only_inside_one_set_or_outside_every_set() {
    use std::collections::HashMap;
    use tower_http::follow_redirect::FollowRedirectLayer;

    let markets: Vec<Market> = (0..2).map(Market::new).collect();
    let (live, fetches) = (Live::default(), Arc::new(AtomicUsize::new(0)));
    let router = router(&markets)
        .pass_through(true)
        .tenants(live.lookup(Arc::clone(&fetches)))
        .build()
        .unwrap();
    let auth = BearerAuthLayer::routed(router);
    // The API: a redirect (307) for every URL in `hops`, 200 for the rest.
    let hops: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let seen = Seen::default();
    let api = {
        let (hops, seen) = (Arc::clone(&hops), seen.clone());
        service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
            let url = request.uri().to_string();
            let authorization = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push((url.clone(), authorization));
            let next = hops.lock().unwrap().get(&url).cloned();
            async move {
                let mut response = Response::new(Full::new(Bytes::new()));
                if let Some(next) = next {
                    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                    response
                        .headers_mut()
                        .insert("location", next.parse().unwrap());
                }
                Ok::<_, BoxError>(response)
            }
        })
    };
    let client = tower::ServiceBuilder::new()
        .layer(FollowRedirectLayer::with_policy(auth.redirect_policy()))
        .layer(auth)
        .service(api);
    let m0 = |path: &str| format!("https://www.market0.test/api/v3/integration/{path}");
    let m1 = |path: &str| format!("https://www.market1.test/api/v3/integration/{path}");
    let partner = |path: &str| format!("https://webhook.partner.test/{path}");
    let tenants = |path: &str| format!("https://tenants.test/api/{path}");
    for (from, to) in [
        (m0("a"), m0("b")),
        (m0("cross"), m1("x")),
        (partner("notify"), m0("slots")),
        (partner("a"), partner("b")),
        (tenants("a"), tenants("b")),
    ] {
        hops.lock().unwrap().insert(from, to);
    }
    for i in 0..20 {
        hops.lock()
            .unwrap()
            .insert(m0(&format!("loop{i}")), m0(&format!("loop{}", i + 1)));
    }
    let run = |request: Request<Full<Bytes>>| {
        seen.lock().unwrap().clear();
        let (client, seen) = (client.clone(), seen.clone());
        async move {
            let response = tokio::time::timeout(PATIENCE, client.oneshot(request))
                .await
                .expect("in time")
                .unwrap();
            let seen = seen.lock().unwrap().clone();
            (response.status(), seen)
        }
    };
    let auth = |token: &str| Some(format!("Bearer {token}"));

    // Inside one market: followed, with that market's token on both hops.
    let (status, seen_now) = run(get(&m0("a"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen_now, [(m0("a"), auth("m0-1")), (m0("b"), auth("m0-1"))]);
    // From one market to another: stopped; market 1 never hears of it.
    let (status, seen_now) = run(get(&m0("cross"))).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(seen_now, [(m0("cross"), auth("m0-1"))]);
    // A foreign host (passed through) redirecting into the API: stopped, no token sent.
    let (status, seen_now) = run(get(&partner("notify"))).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(seen_now, [(partner("notify"), None)]);
    // Between hosts outside every set: followed, untouched.
    let (status, seen_now) = run(get(&partner("a"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen_now, [(partner("a"), None), (partner("b"), None)]);
    // A tenant's request inside its own origin keeps the tenant's token.
    let (status, seen_now) = run(for_tenant(&tenants("a"), "acme")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen_now,
        [
            (tenants("a"), auth("acme-token")),
            (tenants("b"), auth("acme-token"))
        ]
    );
    // A redirect loop inside one set: the first request and MAX_REDIRECTS hops, then the
    // caller gets the 3xx.
    let (status, seen_now) = run(get(&m0("loop0"))).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(seen_now.len(), 1 + docplanner_auth::auth::MAX_REDIRECTS);
    assert_eq!(
        (
            markets[0].fetches(),
            markets[1].fetches(),
            fetches.load(Ordering::SeqCst)
        ),
        (1, 0, 1)
    );
}

/// A set on a port other than 443 owns that port only: with pass-through on, a request to
/// the same host on 443 is another origin and passes through untouched (the router's host
/// table holds `host:port` for such a set, the bare host only for port 443).
#[tokio::test(start_paused = true)]
async fn a_set_on_another_port_does_not_claim_the_hosts_443() {
    let mut market = Market::new(7);
    market.api_base = "https://www.market7.test:8443/api".to_owned();
    let router = Router::builder(Market::new(0).set())
        .set(market.set())
        .pass_through(true)
        .build()
        .unwrap();
    let seen = Seen::default();
    let client = BearerAuthLayer::routed(router).layer(api(seen.clone(), Arc::default()));
    for url in [
        "https://www.market7.test:8443/api/x",
        "https://www.market7.test/api/x",
    ] {
        let response = send(client.clone(), get(url)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
    }
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, auth)| auth.as_deref())
            .collect::<Vec<_>>(),
        [Some("Bearer m7-1"), None]
    );
    assert_eq!(market.fetches(), 1);
}

/// A routed layer checks a caller's `Host` header as the single-set layer does: a request
/// for market 0 whose `Host` names market 1 (or anything else) is refused before anything
/// is sent, and counted on market 0's set; its own host, written otherwise, is fine.
#[tokio::test(start_paused = true)]
async fn a_host_header_naming_another_host_is_refused_by_a_routed_layer() {
    let markets: Vec<Market> = (0..2).map(Market::new).collect();
    let layer = BearerAuthLayer::routed(router(&markets).build().unwrap());
    let seen = Seen::default();
    let client = layer.layer(api(seen.clone(), Arc::default()));
    let with_host = |host: &str| {
        Request::get(markets[0].url())
            .header(http::header::HOST, host)
            .body(Full::default())
            .unwrap()
    };
    for host in ["www.market1.test", "evil.example", "www.market0.test:8443"] {
        let error = refusal(client.clone(), with_host(host)).await;
        assert!(error.is_host_not_allowed(), "{host}: {error}");
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
    assert_eq!((markets[0].fetches(), markets[1].fetches()), (0, 0));
    assert_eq!(layer.router().sets()[0].cache().stats().refused_requests, 3);
    assert_eq!(layer.router().sets()[1].cache().stats().refused_requests, 0);

    for host in ["www.market0.test", "WWW.market0.test:443"] {
        let response = send(client.clone(), with_host(host)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|(_, a)| a.as_deref() == Some("Bearer m0-1")));
}

/// A router of one set with pass-through lets other hosts through untouched, as one of
/// several sets does (the single set's shortcut is only for a router without it).
#[tokio::test(start_paused = true)]
async fn one_set_with_pass_through_lets_other_hosts_through_untouched() {
    let market = Market::new(0);
    let router = Router::builder(market.set()).pass_through(true).build();
    let layer = BearerAuthLayer::routed(router.unwrap());
    let seen = Seen::default();
    let client = layer.layer(api(seen.clone(), Arc::default()));
    let response = send(client.clone(), get("https://other.example/x")).await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    send(client.clone(), get(&market.url())).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("other.example".to_owned(), None),
            (
                "www.market0.test".to_owned(),
                Some("Bearer m0-1".to_owned())
            )
        ]
    );
    assert_eq!(market.fetches(), 1);
}
