//! Two ways to an authenticated hyper-util client: `cargo run --example hyper_client`.
//!
//! 1. **The built-in client**: hyper-util's pooled client over rustls, from
//!    `Credentials::new(domain, id, secret).client()` or `Credentials::from_env()?.client()`
//!    in one line.
//! 2. **Your own `hyper_util::client::legacy::Client`** (your connector, TLS roots, pool
//!    settings), composed with [`BearerAuthLayer`] through `tower::ServiceBuilder`, with
//!    tower-http's `TraceLayer` and `FollowRedirectLayer` and a timeout in the recommended
//!    order (see "Composing with tower-http" in the crate docs):
//!
//! ```text
//! TraceLayer  ->  TimeoutLayer  ->  FollowRedirectLayer  ->  BearerAuthLayer  ->  your client
//! (one span per    (one budget: token   (every hop goes back    (token, scope check,
//!  logical request) wait, replay, hops)  through the scope check) 401 replay)
//! ```
//!
//! Both stacks share one [`BearerAuthLayer`], hence one token cache: one token for both.
//! Its tokens are fetched through your own client too, wrapped in [`SharedClient`]
//! (`Credentials::client_credentials(SharedClient::new(client.clone()))`): the token call
//! shares your TLS settings *and your connection pool*, one client for both kinds of
//! request (the fake counts one TLS connection for the token and the API requests of
//! stack 2).
//!
//! Without credentials it runs against an embedded fake Docplanner (real HTTPS on
//! 127.0.0.1) and exits within a second or two. With `DOCPLANNER_DOMAIN`,
//! `DOCPLANNER_CLIENT_ID` and `DOCPLANNER_CLIENT_SECRET` set, it calls the real API with
//! `Credentials::from_env()`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::client::HttpsClient;
use docplanner_auth::docplanner::{Credentials, ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_DOMAIN};
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{
    source::SharedClient, BearerAuth, BearerAuthLayer, BoxError, ClientCredentials, ReplayBody,
    TokenCache,
};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_http::trace::TraceLayer;

/// The request body your client is built for: the layer hands it `ReplayBody<Full<Bytes>>`.
type Sent = ReplayBody<Full<Bytes>>;

/// Where the example sends its requests, and how it authenticates.
struct Target {
    api_base: String,
    /// One layer (one token cache, fetching tokens through your own client) shared by
    /// both stacks.
    layer: BearerAuthLayer,
    /// The built-in client type, trusting the right roots.
    built_in: HttpsClient<Sent>,
    /// Your own client: one pool for the token requests and the API requests.
    own: OwnClient,
    /// Kept alive for the whole run when there are no credentials.
    fake: Option<FakeDocplanner>,
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let target = if [ENV_DOMAIN, ENV_CLIENT_ID, ENV_CLIENT_SECRET]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
    {
        real_api()?
    } else {
        fake_api().await?
    };
    let facilities = format!("{}/facilities", target.api_base);

    // 1. The built-in client. `Credentials::client()` builds exactly this in one line, with
    //    a cache of its own.
    println!("1. Built-in client (hyper-util + rustls):");
    let built_in: BearerAuth<HttpsClient<Sent>> =
        BearerAuth::new(target.built_in.clone(), &target.layer);
    get(built_in, &facilities).await?;

    // 2. Your own hyper-util client, with tower-http around the layer.
    println!("2. Your own hyper-util client, composed with tower::ServiceBuilder:");
    let api = ServiceBuilder::new()
        // Outermost: one span per logical request (a 401 replay or a redirect hop is inside it).
        .layer(TraceLayer::new_for_http())
        // One budget for the whole logical request: waiting for a token, the request, the
        // replay after a 401 and every redirect hop. tower's timeout fails with `Elapsed`.
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(30)))
        // Outside the auth layer: each hop is a new request through the scope check, so a
        // redirect to another host or to plain http fails instead of carrying the token.
        .layer(FollowRedirectLayer::new())
        .layer(target.layer.clone())
        .service(target.own.clone());
    get(api.clone(), &facilities).await?;

    if let Some(fake) = &target.fake {
        // The fake's plain-http listener answers 301 to https, like the real site. The layer
        // refuses the plain-http URL before anything is sent: no token travels over http.
        let plain = format!(
            "{}/api/v3/integration/facilities",
            fake.plain_http_base().unwrap_or_default()
        );
        let request = Request::get(&plain).body(Full::default())?;
        match api.oneshot(request).await {
            Ok(response) => println!("   GET {plain} -> {} (unexpected)", response.status()),
            Err(error) => println!("   GET {plain} -> refused: {error}"),
        }
        let stats = fake.stats();
        println!(
            "\nfake Docplanner: token_requests={} api_ok={} plain_http_requests={} \
             tls_connections={} (stack 1's client, and one shared by the tokens and stack 2)",
            stats.token_requests, stats.api_ok, stats.plain_http_requests, stats.https_connections
        );
    }
    Ok(())
}

/// The real API, with the credentials of the environment.
fn real_api() -> Result<Target, BoxError> {
    let credentials = Credentials::from_env()?;
    let domain = credentials.domain().clone();
    println!("Calling the real Docplanner API of {domain}.\n");
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // `credentials.layer()?` would fetch tokens over a built-in client of their own.
    let own = your_own_client(roots)?;
    let source = credentials.client_credentials(SharedClient::new(own.clone()))?;
    Ok(Target {
        layer: BearerAuthLayer::new(TokenCache::new(source), &domain.api_base())?,
        api_base: domain.api_base(),
        built_in: docplanner_auth::client::https_client()?,
        own,
        fake: None,
    })
}

/// An embedded fake Docplanner over real HTTPS on 127.0.0.1.
async fn fake_api() -> Result<Target, BoxError> {
    println!("No DOCPLANNER_* variables set: using a fake Docplanner on 127.0.0.1.\n");
    let fake = FakeDocplanner::builder().start().await?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(der) = fake.certificate_der() {
        roots.add(der.to_vec().into())?;
    }
    let own = your_own_client(roots)?;
    // The fake's 127.0.0.1 token URL is not one of Docplanner's hosts: ask for
    // Docplanner's scope explicitly.
    let source =
        ClientCredentials::builder(&fake.token_url(), fake.client_id(), fake.client_secret())
            .scope("integration")
            .build(SharedClient::new(own.clone()))?;
    Ok(Target {
        api_base: fake.api_base(),
        layer: fake.layer(TokenCache::new(source))?,
        built_in: fake.client()?,
        own,
        fake: Some(fake),
    })
}

/// Your own client type, built for the body the layer sends.
type OwnClient = Client<HttpsConnector<HttpConnector>, Sent>;

/// Your own client: your TLS configuration, connector and pool settings. HTTPS only.
fn your_own_client(roots: rustls::RootCertStore) -> Result<OwnClient, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        .build(connector))
}

/// `GET url` through `client`; prints the status and the body.
async fn get<S, RB>(client: S, url: &str) -> Result<(), BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body,
    RB::Error: Into<BoxError>,
{
    let request = Request::get(url).body(Full::default())?;
    let response = client.oneshot(request).await.map_err(Into::into)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes();
    println!("   GET {url} -> {status}");
    println!("   {}", String::from_utf8_lossy(&body));
    Ok(())
}
