//! The built-in client through an HTTP `CONNECT` proxy: a small proxy on 127.0.0.1:0
//! counts the tunnels it opened, in front of the fake Docplanner over real HTTPS.
//!
//! The environment is never changed here: the variables are given to
//! `Proxy::from_lookup` (tests/proxy_env.rs checks, in a binary of its own, that the
//! default client reads the real environment).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use docplanner_auth::client::{HttpsClient, HttpsClientBuilder, Proxy};
use docplanner_auth::source::SharedClient;
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::{BearerAuth, ClientCredentials, ReplayBody, TokenCache};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// One `CONNECT` the proxy received.
#[derive(Debug, Clone)]
struct Connect {
    target: String,
    proxy_authorization: Option<String>,
}

/// A minimal HTTP `CONNECT` proxy: answers every tunnel request with `status`, and when
/// it is 200, splices the client to the target.
struct ConnectProxy {
    port: u16,
    seen: Arc<Mutex<Vec<Connect>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    async fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let _ = tunnel(client, status, &log).await;
                });
            }
        });
        Self { port, seen, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connects(&self) -> Vec<Connect> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tunnel(
    mut client: TcpStream,
    status: u16,
    log: &Mutex<Vec<Connect>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        let mut byte = [0u8; 1];
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let Some(target) = request_line
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
    else {
        return client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            .await;
    };
    let proxy_authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    log.lock().unwrap().push(Connect {
        target: target.to_owned(),
        proxy_authorization,
    });
    if status != 200 {
        let answer = format!("HTTP/1.1 {status} Refused\r\ncontent-length: 0\r\n\r\n");
        return client.write_all(answer.as_bytes()).await;
    }
    let mut upstream = TcpStream::connect(target).await?;
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The fake's grant over the built-in client configured with `proxy`.
fn grant_via(fake: &FakeDocplanner, proxy: Proxy) -> ClientCredentials<HttpsClient<Full<Bytes>>> {
    let http = HttpsClientBuilder::new()
        .roots(support::fake_roots(fake))
        .proxy(proxy)
        .build()
        .unwrap();
    support::grant_over(fake, http)
}

fn fake_authority(fake: &FakeDocplanner) -> String {
    let uri: http::Uri = fake.token_url().parse().unwrap();
    uri.authority().unwrap().to_string()
}

fn lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

#[tokio::test]
async fn an_explicit_proxy_tunnels_the_token_request() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let proxy = ConnectProxy::start(200).await;
    support::fetch_once(grant_via(&fake, Proxy::url(&proxy.url()).unwrap()))
        .await
        .unwrap();

    let connects = proxy.connects();
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(connects[0].target, fake_authority(&fake));
    assert_eq!(connects[0].proxy_authorization, None);
    assert_eq!(fake.stats().token_requests, 1);
}

#[tokio::test]
async fn https_proxy_from_the_environment_with_credentials() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let proxy = ConnectProxy::start(200).await;
    let with_credentials = format!("http://proxy-user:proxy-pa%3Ass@127.0.0.1:{}", proxy.port);
    let config = Proxy::from_lookup(lookup(vec![("https_proxy", with_credentials)])).unwrap();
    assert!(!format!("{config:?}").contains("proxy-pa"));
    support::fetch_once(grant_via(&fake, config)).await.unwrap();

    let connects = proxy.connects();
    assert_eq!(connects.len(), 1, "{connects:?}");
    let expected = base64::engine::general_purpose::STANDARD.encode("proxy-user:proxy-pa:ss");
    assert_eq!(
        connects[0].proxy_authorization.as_deref(),
        Some(format!("Basic {expected}").as_str())
    );
    assert_eq!(fake.stats().token_requests, 1);
}

#[tokio::test]
async fn no_proxy_bypasses_the_proxy() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let proxy = ConnectProxy::start(200).await;
    let config = Proxy::from_lookup(lookup(vec![
        ("HTTPS_PROXY", proxy.url()),
        ("NO_PROXY", "localhost, 127.0.0.1".to_owned()),
    ]))
    .unwrap();
    support::fetch_once(grant_via(&fake, config)).await.unwrap();

    assert!(proxy.connects().is_empty(), "{:?}", proxy.connects());
    assert_eq!(fake.stats().token_requests, 1);
}

#[tokio::test]
async fn a_refusing_proxy_is_a_transient_error_that_names_it() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let proxy = ConnectProxy::start(403).await;
    let url = format!("http://u:proxy-secret@127.0.0.1:{}", proxy.port);
    let error = support::fetch_once(grant_via(&fake, Proxy::url(&url).unwrap()))
        .await
        .unwrap_err();

    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("proxy"), "{error}");
    let mut chain = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&error);
    while let Some(e) = cause {
        chain.push(e.to_string());
        cause = e.source();
    }
    let chain = chain.join(" / ");
    assert!(
        chain.contains(&format!("through the proxy 127.0.0.1:{}", proxy.port)),
        "{chain}"
    );
    assert!(!chain.contains("proxy-secret") && !format!("{error:?}").contains("proxy-secret"));
    assert_eq!(proxy.connects().len(), 1);
    assert_eq!(fake.stats().token_requests, 0);
}

#[tokio::test]
async fn token_and_api_requests_share_one_tunnel() {
    // Behind a corporate proxy, one client for both kinds of request: one tunnel.
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let proxy = ConnectProxy::start(200).await;
    let http = HttpsClientBuilder::new()
        .roots(support::fake_roots(&fake))
        .proxy(Proxy::url(&proxy.url()).unwrap())
        .build::<ReplayBody<Full<Bytes>>>()
        .unwrap();
    let source = support::grant_over(&fake, SharedClient::new(http.clone()));
    let api = BearerAuth::new(http, &fake.layer(TokenCache::new(source)).unwrap());

    for _ in 0..2 {
        let request = http::Request::get(format!("{}/facilities", fake.api_base()))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = support::within(
            "the API's answer through the tunnel",
            api.clone().oneshot(request),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
    }

    let stats = fake.stats();
    assert_eq!((stats.token_requests, stats.api_ok), (1, 2));
    assert_eq!(proxy.connects().len(), 1, "{:?}", proxy.connects());
    assert_eq!(stats.https_connections, 1);
}
