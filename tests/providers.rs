//! Any OAuth2 provider, over real HTTPS against the fake in generic-OAuth2 mode: scopes,
//! extra parameters, each client-authentication method (with what the server received),
//! Docplanner's Basic credentials, messages, and the fallback for the user's own routes.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::source::ClientAuth;
use docplanner_auth::testing::{FakeDocplanner, FakeDocplannerBuilder, TokenFault};
use docplanner_auth::{BearerAuthLayer, ClientCredentials, Error, TokenCache, TokenSource};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};

/// Characters that RFC 6749's form-urlencoding changes: `:` in the id, `@`, space, `%`,
/// `+` and a non-ASCII letter in the secret.
const ID: &str = "app:1";
const SECRET: &str = "p@ss w%rd+é";

async fn start(builder: FakeDocplannerBuilder) -> FakeDocplanner {
    builder
        .client_id(ID)
        .client_secret(SECRET)
        .start()
        .await
        .unwrap()
}

/// A token from `fake` with a source shaped by `tune`, over HTTPS.
async fn fetch(
    fake: &FakeDocplanner,
    tune: impl FnOnce(
        docplanner_auth::source::ClientCredentialsBuilder,
    ) -> docplanner_auth::source::ClientCredentialsBuilder,
) -> Result<(), Error> {
    let builder = ClientCredentials::builder(&fake.token_url(), ID, SECRET);
    let source = tune(builder).build(fake.client::<Full<Bytes>>().unwrap())?;
    let cache = TokenCache::new(source);
    tokio::time::timeout(Duration::from_secs(10), cache.token())
        .await
        .expect("the token request hung")
        .map(|_| ())
}

#[tokio::test]
async fn rfc_basic_is_the_default_for_other_providers() {
    let fake = start(
        FakeDocplanner::builder()
            .oauth2()
            .client_auth(&[ClientAuth::Basic]),
    )
    .await;
    fetch(&fake, |b| b).await.unwrap();
    let seen = &fake.token_requests_seen()[0];
    // RFC 6749 §2.3.1: id and secret form-urlencoded, then joined by `:`.
    assert_eq!(
        seen.basic.as_deref(),
        Some("app%3A1:p%40ss+w%25rd%2B%C3%A9")
    );
    assert_eq!(seen.authenticated_with, Some(ClientAuth::Basic));
    // No scope unless asked for: only the grant type.
    assert_eq!(
        seen.form,
        vec![("grant_type".to_owned(), "client_credentials".to_owned())]
    );
    // A `:` in the id cannot travel in Basic as given: refused before any request.
    let error = fetch(&fake, |b| b.client_auth(ClientAuth::BasicAsGiven))
        .await
        .unwrap_err();
    assert!(error.is_config(), "{error}");
    assert_eq!(fake.stats().token_requests, 1);
}

#[tokio::test]
async fn client_secret_post() {
    let fake = start(
        FakeDocplanner::builder()
            .oauth2()
            .client_auth(&[ClientAuth::Post]),
    )
    .await;
    fetch(&fake, |b| b.client_auth(ClientAuth::Post))
        .await
        .unwrap();
    let seen = &fake.token_requests_seen()[0];
    assert_eq!(seen.basic, None);
    assert_eq!(seen.authenticated_with, Some(ClientAuth::Post));
    assert_eq!(seen.field("client_id"), Some(ID));
    assert_eq!(seen.field("client_secret"), Some(SECRET));
    assert!(
        !format!("{seen:?}").contains("w%rd"),
        "Debug redacts the secret"
    );
    // A Basic client is refused by a post-only server, as a credentials error.
    let error = fetch(&fake, |b| b).await.unwrap_err();
    assert!(error.is_credentials(), "{error}");
}

#[tokio::test]
async fn scopes_and_extra_parameters() {
    let fake = start(
        FakeDocplanner::builder()
            .oauth2()
            .require_param("scope", "orders:read orders:write")
            .require_param("audience", "https://api.example.com/"),
    )
    .await;
    fetch(&fake, |b| {
        b.scopes(["orders:read", "orders:write"])
            .param("audience", "https://api.example.com/")
            .param("resource", "urn:a b")
            .param("resource", "urn:c")
    })
    .await
    .unwrap();
    let seen = &fake.token_requests_seen()[0];
    assert_eq!(seen.field("scope"), Some("orders:read orders:write"));
    assert_eq!(seen.field("audience"), Some("https://api.example.com/"));
    assert_eq!(
        seen.fields("resource").collect::<Vec<_>>(),
        ["urn:a b", "urn:c"]
    );

    // Without the scope: the server's invalid_scope, with advice that fits a non-Docplanner
    // provider and the port of the token URL.
    let error = fetch(&fake, |b| b.param("audience", "https://api.example.com/"))
        .await
        .unwrap_err();
    let shown = error.to_string();
    assert!(error.is_permanent(), "{shown}");
    assert!(shown.contains("no scope was sent"), "{shown}");
    let authority = fake.base_url().trim_start_matches("https://").to_owned();
    assert!(shown.contains(&authority), "{shown}");
    assert!(!shown.contains("Docplanner"), "{shown}");
    // Without the audience: invalid_request.
    let error = fetch(&fake, |b| b.scope("orders:read orders:write"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid_request"), "{error}");
    assert_eq!(fake.stats().tokens_issued, 1);
}

/// Docplanner's guide sends id and secret as `curl -u` does; a Docplanner-mode fake checks
/// them as given, and the crate's Docplanner defaults (Basic as given, scope
/// `integration`) pass, even with characters RFC encoding would change.
#[tokio::test]
async fn docplanner_keeps_basic_as_given() {
    let fake = FakeDocplanner::builder()
        .client_id("42_abc")
        .client_secret(SECRET)
        .start()
        .await
        .unwrap();
    let cache = fake.cache().unwrap();
    cache.token().await.unwrap();
    let seen = &fake.token_requests_seen()[0];
    assert_eq!(seen.basic.as_deref(), Some(&*format!("42_abc:{SECRET}")));
    assert_eq!(seen.authenticated_with, Some(ClientAuth::BasicAsGiven));
    assert_eq!(seen.field("scope"), Some("integration"));
    // The RFC form of the same secret is other bytes, which Docplanner's check refuses.
    let source = ClientCredentials::builder(&fake.token_url(), "42_abc", SECRET)
        .scope("integration")
        .client_auth(ClientAuth::Basic)
        .build(fake.client::<Full<Bytes>>().unwrap())
        .unwrap();
    let error = TokenCache::new(source).token().await.unwrap_err();
    assert!(error.is_credentials(), "{error}");
    assert_eq!(fake.stats().tokens_issued, 1);
}

#[tokio::test]
async fn messages_for_other_providers_name_the_host_and_port_not_docplanner() {
    let fake = start(FakeDocplanner::builder().oauth2()).await;
    fake.fail_next_token_requests(
        1,
        TokenFault::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    let error = fetch(&fake, |b| b).await.unwrap_err();
    let shown = error.to_string();
    let authority = fake.base_url().trim_start_matches("https://").to_owned();
    assert!(shown.contains(&authority), "{shown}");
    assert!(shown.contains("the token endpoint's side"), "{shown}");
    assert!(!shown.contains("Docplanner"), "{shown}");
    // The default cache name of a source is its token URL's host and port.
    let source = ClientCredentials::new(
        fake.client::<Full<Bytes>>().unwrap(),
        &fake.token_url(),
        ID,
        SECRET,
    )
    .unwrap();
    assert_eq!(source.cache_name(), Some(authority.as_str()));
}

#[tokio::test]
async fn the_fallback_answers_routes_of_your_own_behind_the_bearer_check() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let orders = tower::service_fn(move |request: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = format!("{} {}", request.method(), request.uri().path());
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
        }
    });
    let fake = start(FakeDocplanner::builder().oauth2().fallback(orders)).await;
    let url = format!("{}/v1/orders", fake.base_url());

    // Without a token: the fake's 401, the fallback is not called.
    let plain = fake.client::<Full<Bytes>>().unwrap();
    let request = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
    let response = plain.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // With the layer: the user's route answers.
    let layer = BearerAuthLayer::new(fake.cache().unwrap(), &fake.base_url()).unwrap();
    let client = layer.layer(fake.client().unwrap());
    let request = Request::post(&url).body(Full::new(Bytes::new())).unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"POST /v1/orders");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = fake.stats();
    assert_eq!((stats.api_ok, stats.api_no_token), (1, 1));
}
