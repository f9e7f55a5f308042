//! `client::native_roots` (feature `native-roots`) reads the operating system's store,
//! which `SSL_CERT_FILE` overrides: here a bundle holding only the fake Docplanner's CA,
//! as a corporate TLS-inspection CA would be. In a test binary of its own: it sets a
//! process-global variable.
#![cfg(feature = "native-roots")]
#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use bytes::Bytes;
use docplanner_auth::client::{native_roots, HttpsClientBuilder, Proxy};
use docplanner_auth::testing::FakeDocplanner;
use http_body_util::Full;

#[tokio::test]
async fn the_os_store_is_trusted() {
    let fake = FakeDocplanner::builder().start().await.unwrap();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(fake.certificate_der().unwrap())
    );
    let bundle = std::env::temp_dir().join(format!("native-roots-{}.pem", std::process::id()));
    std::fs::write(&bundle, pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &bundle);
    std::env::remove_var("SSL_CERT_DIR");

    let roots = native_roots().unwrap();
    std::fs::remove_file(&bundle).unwrap();
    assert_eq!(roots.len(), 1);
    let http = HttpsClientBuilder::new()
        .roots(roots)
        .proxy(Proxy::none())
        .build::<Full<Bytes>>()
        .unwrap();
    support::fetch_once(support::grant_over(&fake, http))
        .await
        .unwrap();
    assert_eq!(fake.stats().token_requests, 1);

    // An empty bundle: a config error that says what to do, not a client that trusts nothing.
    let empty = std::env::temp_dir().join(format!("native-roots-empty-{}.pem", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    std::env::set_var("SSL_CERT_FILE", &empty);
    let error = native_roots().unwrap_err();
    std::fs::remove_file(&empty).unwrap();
    assert!(
        error.is_config() && error.to_string().contains("SSL_CERT_FILE"),
        "{error}"
    );
}
