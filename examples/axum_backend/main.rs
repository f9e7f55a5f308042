//! An axum backend that calls Docplanner: `cargo run --example axum_backend`.
//!
//! Its handlers share ONE authenticated client (one connection pool, one token cache) in
//! axum's `State`; see `app.rs` for the router and the error mapping.
//!
//! * Without credentials it starts a fake Docplanner (real HTTPS on 127.0.0.1), serves on
//!   `127.0.0.1` (port `PORT`, or any free one), prints the URL, makes a few demo requests
//!   to itself, and exits.
//! * With `DOCPLANNER_DOMAIN`, `DOCPLANNER_CLIENT_ID` and `DOCPLANNER_CLIENT_SECRET` set it
//!   proxies the real API (`Credentials::from_env()`).
//! * `--serve` keeps serving until Ctrl-C: `cargo run --example axum_backend -- --serve`,
//!   then `curl http://127.0.0.1:<port>/facilities`.

mod app;

use std::net::Ipv4Addr;

use bytes::Bytes;
use docplanner_auth::docplanner::{Credentials, ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_DOMAIN};
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{BearerAuth, BoxError};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let mut serve = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--serve" => serve = true,
            other => {
                eprintln!("unknown argument `{other}`\nusage: axum_backend [--serve]  (PORT=8080 to pick the port)");
                std::process::exit(2);
            }
        }
    }
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|_| format!("PORT=`{port}` is not a port number"))?,
        Err(_) => 0,
    };

    // One authenticated client for the whole backend.
    let (client, api_base, fake) = if [ENV_DOMAIN, ENV_CLIENT_ID, ENV_CLIENT_SECRET]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
    {
        let credentials = Credentials::from_env()?;
        println!(
            "Proxying the real Docplanner API of {}.",
            credentials.domain()
        );
        (credentials.client()?, credentials.domain().api_base(), None)
    } else {
        println!("No DOCPLANNER_* variables set: proxying a fake Docplanner on 127.0.0.1.");
        let fake = FakeDocplanner::builder().start().await?;
        let layer = fake.layer(fake.cache()?)?;
        let client = BearerAuth::new(fake.client()?, &layer);
        (client, fake.api_base(), Some(fake))
    };

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("axum backend listening on {url}  (GET {url}/facilities)\n");
    let router = app::app(client, &api_base);

    if serve {
        println!("Serving until Ctrl-C.");
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        return Ok(());
    }

    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    demo(&url, fake.as_ref()).await?;
    server.abort();
    Ok(())
}

/// A few requests to the backend, as a browser or another service would make them.
async fn demo(url: &str, fake: Option<&FakeDocplanner>) -> Result<(), BoxError> {
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |what: &'static str| {
        let http = http.clone();
        let url = format!("{url}/facilities");
        async move {
            let response = http.get(url.parse()?).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            println!(
                "{what}\n  GET {url} -> {status}\n  {}\n",
                String::from_utf8_lossy(&body)
            );
            Ok::<_, BoxError>(())
        }
    };
    get("Docplanner answers:").await?;
    if let Some(fake) = fake {
        fake.set_api_always_401(true);
        get("Docplanner answers 401 to everything, even after a token renewal:").await?;
        fake.set_api_always_401(false);
        let stats = fake.stats();
        println!(
            "fake Docplanner: token_requests={} api_requests={} api_forced_401={}",
            stats.token_requests, stats.api_requests, stats.api_forced_401
        );
    }
    Ok(())
}
