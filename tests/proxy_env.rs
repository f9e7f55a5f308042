//! The default built-in client reads `HTTPS_PROXY` from the real environment. In a test
//! binary of its own: the environment is process-global, and this is its only test.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::client::https_client_with_roots;
use docplanner_auth::testing::FakeDocplanner;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn the_default_client_goes_through_https_proxy() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    // A "proxy" that refuses every tunnel, counting them: reaching it is what is checked.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refusing = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let n = stream.read(&mut head).await.unwrap();
        stream
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8_lossy(&head[..n]).into_owned()
    });
    for name in [
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("HTTPS_PROXY", format!("http://127.0.0.1:{port}"));

    let http = https_client_with_roots::<Full<Bytes>>(support::fake_roots(&fake)).unwrap();
    let error = support::fetch_once(support::grant_over(&fake, http))
        .await
        .unwrap_err();

    let head = tokio::time::timeout(Duration::from_secs(10), refusing)
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("CONNECT 127.0.0.1:"), "{head}");
    assert!(error.is_transient(), "{error}");
    assert_eq!(fake.stats().token_requests, 0);
}
