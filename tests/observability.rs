//! What the crate tells the outside world through `tracing`: the output of a full run
//! has its spans and events, and no secret or token anywhere.
#![allow(clippy::unwrap_used)]

mod support;

use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use support::Captured;

const SECRET: &str = "Obs3rvable-Secret-9d1c";

#[tokio::test]
async fn tracing_shows_the_story_and_never_a_secret() {
    let (captured, _guard) = Captured::install(tracing::Level::TRACE);

    let fake = FakeDocplanner::builder()
        .client_id("clinic-7")
        .client_secret(SECRET)
        .start()
        .await
        .unwrap();
    support::full_run(&fake).await.unwrap();

    let text = captured.text();
    for expected in [
        "docplanner_auth.refresh",
        "trigger=\"waiting\"",
        "outcome=\"ok\"",
        "new access token stored",
        "token rejected (401): suspect until a new one arrives",
        "replaying a request",
        "token refresh failed; backing off",
        "request refused before sending",
        "check the client id and secret",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("clinic-7:{SECRET}"));
    assert!(!text.contains(SECRET), "the secret leaked");
    assert!(!text.contains(&basic), "the basic credentials leaked");
    let tokens = fake.issued_tokens();
    assert!(tokens.len() >= 2);
    for token in tokens {
        assert!(!text.contains(&token), "a token leaked");
    }
    if std::env::var_os("SHOW_TRACING").is_some() {
        println!("{text}");
    }
}

/// A refresh serves every caller: its span is a root of its own (linked to the request that
/// triggered it), not a child of that request's span.
#[tokio::test]
async fn the_refresh_span_is_not_a_child_of_the_triggering_request() {
    use tracing::Instrument as _;
    let (captured, _guard) = Captured::install(tracing::Level::INFO);
    let cache = docplanner_auth::TokenCache::new(|| async {
        Ok::<_, docplanner_auth::BoxError>(docplanner_auth::AccessToken::new(
            "t0k3n",
            std::time::Duration::from_secs(3600),
        )?)
    });
    cache
        .token()
        .instrument(tracing::info_span!("caller_request", id = 7))
        .await
        .unwrap();
    let text = captured.text();
    let stored = text
        .lines()
        .find(|line| line.contains("new access token stored"))
        .unwrap_or_else(|| panic!("no stored event in:\n{text}"));
    assert!(stored.contains("docplanner_auth.refresh{"), "{stored}");
    assert!(!stored.contains("caller_request"), "{stored}");
}

/// Several credential sets: every event of a set's cache carries the set's name (its
/// cache's), so a refresh or a 401 says which market or tenant it is about.
#[tokio::test]
async fn each_credential_set_names_its_spans() {
    use bytes::Bytes;
    use docplanner_auth::router::{Router, Set};
    use docplanner_auth::{AccessToken, BearerAuthLayer, BoxError, ReplayBody, TokenCache};
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use tower::{service_fn, Layer, ServiceExt};

    let (captured, _guard) = Captured::install(tracing::Level::INFO);
    let set = |name: &'static str| {
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let cache = TokenCache::builder(move || {
            let n = fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move {
                Ok::<_, BoxError>(AccessToken::new(
                    format!("{name}-{n}"),
                    std::time::Duration::from_secs(3600),
                )?)
            }
        })
        .name(name)
        .build();
        Set::new(cache, &format!("https://www.{name}.test")).unwrap()
    };
    let router = Router::builder(set("es")).set(set("pl")).build().unwrap();
    // The API rejects Poland's first token once.
    let api = service_fn(|request: Request<ReplayBody<Full<Bytes>>>| {
        let rejected = request.headers()["authorization"] == "Bearer pl-1";
        async move {
            let mut response = Response::new(Full::new(Bytes::new()));
            if rejected {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
            }
            Ok::<_, BoxError>(response)
        }
    });
    let client = BearerAuthLayer::routed(router).layer(api);
    for host in ["es", "pl"] {
        let request = Request::get(format!("https://www.{host}.test/x"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let text = captured.text();
    let lines = |what: &str, name: &str| {
        text.lines()
            .filter(|l| l.contains(what) && l.contains(&format!("cache={name}")))
            .count()
    };
    assert_eq!(lines("new access token stored", "es"), 1, "{text}");
    assert_eq!(lines("new access token stored", "pl"), 2, "{text}");
    assert_eq!(lines("token rejected (401)", "pl"), 1, "{text}");
    assert_eq!(lines("token rejected (401)", "es"), 0, "{text}");
}

/// The token request's own span, `docplanner_auth.token_fetch` (debug), ends with the
/// request's outcome, which is what a tracing exporter sees when the span closes: `ok`,
/// `transient_error` (retried with backoff) or `permanent_error`.
#[tokio::test]
async fn the_token_fetch_span_closes_with_its_outcome() {
    use docplanner_auth::testing::TokenFault;
    use docplanner_auth::TokenSource as _;
    use http::StatusCode;

    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeDocplanner::builder().in_process();
    let source = fake.credentials().unwrap();
    source.fetch().await.unwrap();
    let unavailable = TokenFault::Status {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: None,
    };
    fake.fail_next_token_requests(1, unavailable);
    source.fetch().await.unwrap_err();
    fake.fail_next_token_requests(1, TokenFault::InvalidClient(StatusCode::BAD_REQUEST));
    source.fetch().await.unwrap_err();

    let text = captured.text();
    let outcomes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("docplanner_auth.token_fetch{") && l.contains("close"))
        .map(|l| {
            let field = l.split("outcome=\"").nth(1).unwrap_or("");
            field.split('"').next().unwrap_or("")
        })
        .collect();
    assert_eq!(
        outcomes,
        ["ok", "transient_error", "permanent_error"],
        "{text}"
    );
    assert_eq!(fake.stats().token_requests, 3);
}

/// The review's example, end to end: id `lkgpde`, secret `YnvqjAxqfvmp` (no digit, so no
/// heuristic catches them), echoed by the token endpoint in `expires_in` (a string), in
/// `token_type`, and as the Basic credential in `error`/`error_description`: scrubbed by
/// value from `Display`, `Debug` and the logs. (Here, not in tests/security.rs: every test
/// of this binary installs its subscriber first, so no other thread's events race
/// tracing's callsite interest cache and the "failures were logged" check holds.)
#[tokio::test]
async fn an_echoed_secret_or_basic_credential_is_scrubbed_by_value_everywhere() {
    let (captured, _logs) = Captured::install(tracing::Level::TRACE);
    const ID: &str = "lkgpde";
    const SECRET: &str = "YnvqjAxqfvmp";
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ID}:{SECRET}"));
    assert_eq!(basic, "bGtncGRlOlludnFqQXhxZnZtcA==");
    let fake = FakeDocplanner::builder()
        .client_id(ID)
        .client_secret(SECRET)
        .in_process();

    let bodies = [
        (
            200,
            format!(r#"{{"access_token":"abc","expires_in":"{SECRET}"}}"#),
        ),
        (
            200,
            format!(r#"{{"access_token":"abc","token_type":"{SECRET}"}}"#),
        ),
        (
            200,
            format!(r#"{{"access_token":"abc","token_type":"Basic {basic}"}}"#),
        ),
        (401, format!(r#"{{"error":"{basic}"}}"#)),
        (
            400,
            format!(
                r#"{{"error":"invalid_client","error_description":"got Basic {basic} for {ID}:{SECRET}"}}"#
            ),
        ),
        (
            503,
            format!(r#"{{"error":"temporarily_unavailable","error_description":"{SECRET}"}}"#),
        ),
    ];
    let mut printed = Vec::new();
    for (status, body) in bodies {
        let fresh = fake.cache().unwrap();
        fake.fail_next_token_requests(
            1,
            TokenFault::Body {
                status: http::StatusCode::from_u16(status).unwrap(),
                content_type: "application/json",
                body,
            },
        );
        let error = fresh.token().await.unwrap_err();
        assert!(error.is_token_endpoint(), "{error}");
        printed.push(format!("{error}"));
        printed.push(format!("{error:?}"));
    }
    let logs = captured.text();
    assert!(logs.contains("WARN"), "the failures were logged: {logs}");
    printed.push(logs);
    let unpadded = basic.trim_end_matches('=');
    for text in &printed {
        assert!(!text.contains(SECRET), "secret in: {text}");
        assert!(!text.contains(unpadded), "Basic credential in: {text}");
    }
    assert!(
        printed[..12].iter().all(|t| t.contains("[redacted]")),
        "{printed:?}"
    );
}

/// "The token store works again" ends a fault episode: a store that never failed does
/// not say it, however many times the cache uses it.
#[tokio::test]
async fn a_healthy_store_never_says_it_works_again() {
    let (captured, _guard) = Captured::install(tracing::Level::TRACE);
    let fake = FakeDocplanner::builder().in_process();
    let credentials = fake.credentials().unwrap();
    let key = credentials.store_key();
    let cache = docplanner_auth::TokenCache::builder(credentials)
        .store(docplanner_auth::store::MemoryStore::new(), key)
        .build();
    for _ in 0..3 {
        let token = cache.token().await.unwrap();
        assert!(cache.invalidate(&token));
    }
    cache.token().await.unwrap();
    // Each invalidated token is deleted from the store too, and a new one fetched: the
    // store is read, written and locked on each of the 4 token requests.
    assert_eq!(fake.stats().token_requests, 4);
    assert_eq!(cache.stats().store_adoptions, 0);
    let text = captured.text();
    assert!(text.contains("new access token stored"), "{text}");
    assert!(!text.contains("works again"), "{text}");
}

/// A store fault's log line says why, in the store's own words (scrubbed: a word that
/// looks like a credential is withheld), once per episode.
#[tokio::test]
async fn a_store_fault_is_logged_with_its_cause_scrubbed() {
    use docplanner_auth::store::{MemoryStore, SharedToken, StoreFuture, TokenStore};
    struct Refusing(MemoryStore);
    impl TokenStore for Refusing {
        fn load<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<SharedToken>> {
            Box::pin(async {
                Err("WRONGTYPE Operation against a key holding sk4Lm9Qz7Xw2Rt8Yp3Nv6Bc1".into())
            })
        }
        fn publish<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, ()> {
            self.0.publish(key, token)
        }
        fn try_lock<'a>(
            &'a self,
            key: &'a str,
            owner: &'a str,
            ttl: std::time::Duration,
        ) -> StoreFuture<'a, bool> {
            self.0.try_lock(key, owner, ttl)
        }
        fn unlock<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
            self.0.unlock(key, owner)
        }
        fn invalidate<'a>(&'a self, key: &'a str, token: &'a SharedToken) -> StoreFuture<'a, bool> {
            self.0.invalidate(key, token)
        }
    }
    let (captured, _guard) = Captured::install(tracing::Level::TRACE);
    let fake = FakeDocplanner::builder().in_process();
    let credentials = fake.credentials().unwrap();
    let key = credentials.store_key();
    let cache = docplanner_auth::TokenCache::builder(credentials)
        .store(Refusing(MemoryStore::new()), key)
        .build();
    cache.token().await.unwrap();
    assert_eq!(fake.stats().token_requests, 1, "fetched alone");
    assert_eq!(cache.stats().store_faults, 1);
    let text = captured.text();
    assert!(text.contains("token store fault"), "{text}");
    assert!(text.contains("WRONGTYPE Operation against a key"), "{text}");
    assert!(!text.contains("sk4Lm9Qz7Xw2Rt8Yp3Nv6Bc1"), "{text}");
}
