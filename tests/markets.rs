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
use docplanner_auth::{AccessToken, BearerAuthLayer, BoxError, ReplayBody, TokenCache};
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
        let (name, fetches) = (self.name.clone(), Arc::clone(&self.fetches));
        let cache = TokenCache::builder(move || {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("{name}-{n}");
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<_, BoxError>(AccessToken::new(token, Duration::from_secs(3600))?)
            }
        })
        .name(self.name.clone())
        .build();
        Set::new(cache, &self.api_base).unwrap()
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
        .extension(CredentialSet::new(key))
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
    let error = send(client.clone(), for_tenant(&markets[0].url(), "acme"))
        .await
        .unwrap_err();
    assert!(error
        .downcast_ref::<docplanner_auth::Error>()
        .unwrap()
        .is_host_not_allowed());
    // The extension may also name a set of the router by its name.
    send(client.clone(), for_tenant(&markets[0].url(), "m0"))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().last().unwrap().1.as_deref(),
        Some("Bearer m0-1")
    );
    assert_eq!(router.live_tenants(), 1);

    // Without a lookup, an unknown key is a configuration error that names it.
    let client = BearerAuthLayer::routed(Router::builder(Market::new(1).set()).build().unwrap())
        .layer(api(Seen::default(), Arc::default()));
    let error = send(client, for_tenant(&markets[0].url(), "nobody"))
        .await
        .unwrap_err();
    let error = error.downcast_ref::<docplanner_auth::Error>().unwrap();
    assert!(
        error.is_config() && error.to_string().contains("nobody"),
        "{error}"
    );
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

    // Idle ones go after the idle timeout, at the next new tenant.
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
    tokio::time::advance(Duration::from_secs(61)).await;
    send(
        client.clone(),
        for_tenant("https://tenants.test/api/x", "late"),
    )
    .await
    .unwrap();
    assert_eq!(router.live_tenants(), 1, "the idle ones were dropped");
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

    // Named for market 0: tower-http builds each hop without the first request's
    // extensions, so the hop is routed by its host again; market 0's token stays home.
    let response = tokio::time::timeout(PATIENCE, client.oneshot(for_tenant(hop, "m0")))
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
