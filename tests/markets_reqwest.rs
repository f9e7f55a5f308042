//! Several credential sets in one reqwest-middleware client: three fake Docplanner markets
//! over real HTTPS on loopback (each its own origin, token endpoint and credentials), a
//! redirect from one market's host to another's, and a host outside every set.
#![cfg(feature = "reqwest")]
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::reqwest::BearerAuthMiddleware;
use docplanner_auth::router::{CredentialSet, Router, RouterBuilder, Set};
use docplanner_auth::testing::FakeDocplanner;
use http_body_util::Full;
use reqwest::StatusCode;
use reqwest_middleware::ClientWithMiddleware;

/// Every wait on a server or the client is bounded: a broken build fails, never hangs.
const PATIENCE: Duration = Duration::from_secs(20);

/// A market: a fake started on its own port, with its own credentials.
async fn market(name: &str, redirect_to: Option<String>) -> FakeDocplanner {
    let mut builder = FakeDocplanner::builder()
        .client_id(&format!("{name}-id"))
        .client_secret(&format!("{name}-secret"));
    if let Some(location) = redirect_to {
        // Every path outside the API (`/hop`) answers `302 Location: <location>`.
        builder = builder.fallback(tower::service_fn(move |_: http::Request<Full<Bytes>>| {
            let location = location.clone();
            async move {
                let response = http::Response::builder()
                    .status(302)
                    .header("location", location)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        }));
    }
    builder.start().await.unwrap()
}

fn set(fake: &FakeDocplanner, name: &str) -> Set {
    let cache = fake.cache_builder().unwrap().name(name).build();
    Set::new(cache, &fake.api_base()).unwrap()
}

/// Spain (whose `/hop` redirects to Poland's API), Poland, Italy, and a fourth fake outside
/// every set (whose `/hop` redirects to Spain's API).
struct Setup {
    es: FakeDocplanner,
    pl: FakeDocplanner,
    it: FakeDocplanner,
    other: FakeDocplanner,
}

async fn setup() -> Setup {
    let pl = market("pl", None).await;
    let es = market("es", Some(format!("{}/facilities", pl.api_base()))).await;
    let other = market("other", Some(format!("{}/facilities", es.api_base()))).await;
    Setup {
        es,
        pl,
        it: market("it", None).await,
        other,
    }
}

impl Setup {
    fn router(&self) -> RouterBuilder {
        Router::builder(set(&self.es, "es"))
            .set(set(&self.pl, "pl"))
            .set(set(&self.it, "it"))
    }

    /// The documented client (the middleware's `client_builder`), trusting every fake.
    fn client(&self, middleware: BearerAuthMiddleware) -> ClientWithMiddleware {
        self.client_from(middleware.client_builder(), middleware)
    }

    fn client_from(
        &self,
        http: reqwest::ClientBuilder,
        middleware: BearerAuthMiddleware,
    ) -> ClientWithMiddleware {
        // The dev-dependency is reqwest with `rustls-no-provider`: ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certificates = [&self.es, &self.pl, &self.it, &self.other]
            .map(|f| reqwest::Certificate::from_der(f.certificate_der().unwrap()).unwrap());
        let http = http.tls_certs_only(certificates).build().unwrap();
        reqwest_middleware::ClientBuilder::new(http)
            .with(middleware)
            .build()
    }

    fn token_requests(&self) -> [u64; 4] {
        [&self.es, &self.pl, &self.it, &self.other].map(|f| f.stats().token_requests)
    }
}

async fn get(
    client: &ClientWithMiddleware,
    url: String,
) -> Result<reqwest::Response, reqwest_middleware::Error> {
    tokio::time::timeout(PATIENCE, client.get(url).send())
        .await
        .expect("the request did not complete in time")
}

fn refusal(error: reqwest_middleware::Error) -> docplanner_auth::Error {
    match error {
        reqwest_middleware::Error::Middleware(error) => error
            .downcast_ref::<docplanner_auth::Error>()
            .unwrap()
            .clone(),
        other => panic!("not a refusal: {other}"),
    }
}

#[tokio::test]
async fn each_market_host_gets_its_own_token_and_a_redirect_to_another_market_carries_none() {
    let s = setup().await;
    let middleware = BearerAuthMiddleware::routed(s.router().build().unwrap());
    let client = s.client(middleware.clone());
    for fake in [&s.es, &s.pl, &s.it] {
        for _ in 0..3 {
            let response = get(&client, format!("{}/facilities", fake.api_base())).await;
            assert_eq!(response.unwrap().status(), StatusCode::OK);
        }
        let stats = fake.stats();
        assert_eq!((stats.token_requests, stats.api_ok), (1, 3));
        assert_eq!(stats.api_unknown_token, 0, "another market's token arrived");
    }

    // Spain's `/hop` redirects to Poland's API: the client stops there (the 302 is the
    // answer) and Poland sees nothing, with or without a token.
    let before = s.pl.stats().api_requests;
    let response = get(&client, format!("{}/hop", s.es.base_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        s.pl.stats().api_requests,
        before,
        "the hop was not followed"
    );

    assert_eq!(s.token_requests(), [1, 1, 1, 0]);

    // A client with reqwest's default policy follows it; reqwest drops `Authorization`
    // when the port (here; the host in production) changes, so Poland gets the request
    // without Spain's token (and, as the middleware saw only the first hop, without its
    // own). Poland's 401 comes back as it is: a 401 from outside Spain's origins says
    // nothing about Spain's token, so there is no replay.
    let client = s.client_from(reqwest::Client::builder(), middleware);
    let response = get(&client, format!("{}/hop", s.es.base_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = s.pl.stats();
    assert_eq!(stats.api_requests - before, 1, "{stats:?}");
    assert_eq!(stats.api_no_token, 1, "{stats:?}");
    assert_eq!(
        s.es.stats().token_requests,
        1,
        "Spain's token is not suspect"
    );
    assert_eq!(stats.api_unknown_token, 0, "Spain's token reached Poland");
}

#[tokio::test]
async fn a_host_outside_every_set_is_refused_by_default_and_passes_through_untouched_on_request() {
    let s = setup().await;
    let other = format!("{}/facilities", s.other.api_base());

    let client = s.client(BearerAuthMiddleware::routed(s.router().build().unwrap()));
    let error = refusal(get(&client, other.clone()).await.unwrap_err());
    assert!(error.is_host_not_allowed(), "{error}");
    assert_eq!(s.other.stats().api_requests, 0, "nothing sent");

    let client = s.client(BearerAuthMiddleware::routed(
        s.router().pass_through(true).build().unwrap(),
    ));
    let response = get(&client, other).await.unwrap();
    // The fake answers 401 to a request without a token: it arrived untouched.
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response
        .extensions()
        .get::<docplanner_auth::Unauthorized>()
        .is_none());
    let stats = s.other.stats();
    assert_eq!((stats.api_requests, stats.api_no_token), (1, 1));
    assert_eq!(s.token_requests(), [0, 0, 0, 0], "no token request");

    // The host outside every set (the caller authenticates to it on its own) redirects
    // into Spain's API: not followed (a foreign host never chooses an authenticated call),
    // Spain hears nothing.
    let own = s
        .other
        .cache_builder()
        .unwrap()
        .build()
        .token()
        .await
        .unwrap();
    let response = tokio::time::timeout(
        PATIENCE,
        client
            .get(format!("{}/hop", s.other.base_url()))
            .bearer_auth(own.secret())
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(s.es.stats().api_requests, 0);
    assert_eq!(
        s.token_requests(),
        [0, 0, 0, 1],
        "only the caller's own token"
    );
}

#[tokio::test]
async fn a_credential_set_extension_picks_a_set_whose_token_stays_on_its_origins() {
    let s = setup().await;
    let client = s.client(BearerAuthMiddleware::routed(s.router().build().unwrap()));
    // Named explicitly, for its own host: fine.
    let response = tokio::time::timeout(
        PATIENCE,
        client
            .get(format!("{}/facilities", s.it.api_base()))
            .with_extension(CredentialSet::set("it"))
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Named for another market's host: refused, nothing sent, no token fetched for it.
    let error = tokio::time::timeout(
        PATIENCE,
        client
            .get(format!("{}/facilities", s.es.api_base()))
            .with_extension(CredentialSet::set("pl"))
            .send(),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(refusal(error).is_host_not_allowed());
    assert_eq!(s.es.stats().api_requests, 0);
    assert_eq!(s.token_requests(), [0, 0, 1, 0]);
}

/// A routed middleware checks a caller's `Host` header as the single-set one does: a
/// request for Spain whose `Host` names Poland's authority is refused before anything is
/// sent; Spain's own authority is fine.
#[tokio::test]
async fn a_host_header_naming_another_market_is_refused() {
    let s = setup().await;
    let router = s.router().build().unwrap();
    let client = s.client(BearerAuthMiddleware::routed(router.clone()));
    let url = format!("{}/facilities", s.es.api_base());
    let authority = |fake: &FakeDocplanner| {
        let base = reqwest::Url::parse(&fake.api_base()).unwrap();
        format!("{}:{}", base.host_str().unwrap(), base.port().unwrap())
    };
    let send = |host: String| {
        let request = client.get(&url).header(reqwest::header::HOST, host);
        async move {
            tokio::time::timeout(PATIENCE, request.send())
                .await
                .expect("the request did not complete in time")
        }
    };
    let error = refusal(send(authority(&s.pl)).await.unwrap_err());
    assert!(error.is_host_not_allowed(), "{error}");
    assert_eq!(
        (s.es.stats().api_requests, s.pl.stats().api_requests),
        (0, 0)
    );
    assert_eq!(s.token_requests(), [0, 0, 0, 0]);
    assert_eq!(router.sets()[0].cache().stats().refused_requests, 1);

    let response = send(authority(&s.es)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(s.es.stats().api_ok, 1);
}
