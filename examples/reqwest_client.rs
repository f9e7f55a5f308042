//! A reqwest client that authenticates every request:
//! `cargo run --example reqwest_client --features reqwest`.
//!
//! Without credentials it starts a fake Docplanner (real HTTPS on 127.0.0.1), sends
//! `GET /facilities` through a reqwest-middleware client with [`BearerAuthMiddleware`], and
//! prints the answer.
//!
//! One HTTP stack: the tokens are fetched through the same `reqwest::Client`
//! ([`ReqwestClient`]), so its TLS, roots, proxies and connection pool serve both, and the
//! crate's own hyper-util client is not needed (`default-features = false,
//! features = ["reqwest"]`).
//!
//! With `DOCPLANNER_CLIENT_ID`, `DOCPLANNER_CLIENT_SECRET` and `DOCPLANNER_DOMAIN` (a
//! domain such as `doctoralia.es`, or a country code such as `es`) set, it calls the real
//! API instead.

use docplanner_auth::docplanner::{Credentials, ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_DOMAIN};
use docplanner_auth::reqwest::{client_builder, BearerAuthMiddleware};
use docplanner_auth::source::ReqwestClient;
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{BoxError, ClientCredentials, TokenCache};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // This example's reqwest has `rustls-no-provider`: ring is the crypto provider, installed
    // once for the process before any client is built. (With reqwest's default `rustls`
    // feature, aws-lc-rs is used and this line is not needed.)
    let _ = rustls::crypto::ring::default_provider().install_default();

    let any_set = [ENV_DOMAIN, ENV_CLIENT_ID, ENV_CLIENT_SECRET]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if any_set {
        // The error names any variable that is missing.
        let credentials = Credentials::from_env()?;
        let api_base = credentials.domain().api_base();
        println!(
            "Calling the real Docplanner API of {} ({api_base}).",
            credentials.domain()
        );
        // Redirects never leave the API; the operating system's roots (reqwest's platform
        // verifier).
        let http = client_builder(&api_base)?.build()?;
        let source = credentials.client_credentials(ReqwestClient::new(http.clone()))?;
        return get_facilities(http, source, &api_base).await;
    }

    println!("No DOCPLANNER_* credentials set: calling a fake Docplanner on 127.0.0.1 instead.");
    let fake = FakeDocplanner::builder().start().await?;
    let certificate = fake
        .certificate_der()
        .ok_or("the fake has no certificate")?;
    // Redirects never leave the API; only the fake's certificate is trusted.
    let http = client_builder(&fake.api_base())?
        .tls_certs_only([reqwest::Certificate::from_der(certificate)?])
        .build()?;
    // The fake's 127.0.0.1 token URL is not one of Docplanner's hosts: ask for Docplanner's
    // scope explicitly.
    let source =
        ClientCredentials::builder(&fake.token_url(), fake.client_id(), fake.client_secret())
            .scope("integration")
            .build(ReqwestClient::new(http.clone()))?;
    get_facilities(http, source, &fake.api_base()).await?;
    let stats = fake.stats();
    println!(
        "token requests made to the fake: {}, TLS connections: {} (one pool for both)",
        stats.token_requests, stats.https_connections
    );
    Ok(())
}

/// `GET /facilities` through `http`, authenticated with tokens from `source`, which fetches
/// them through a clone of the same `http`. `http` comes from `client_builder(api_base)`:
/// see the `reqwest` module's docs.
async fn get_facilities(
    http: reqwest::Client,
    source: ClientCredentials<ReqwestClient>,
    api_base: &str,
) -> Result<(), BoxError> {
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(BearerAuthMiddleware::new(
            TokenCache::new(source),
            api_base,
        )?)
        .build();
    let response = client.get(format!("{api_base}/facilities")).send().await?;
    println!("GET /facilities -> {}", response.status());
    println!("{}", response.text().await?);
    Ok(())
}
