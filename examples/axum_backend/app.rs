//! The backend's router: handlers that call Docplanner through ONE authenticated client
//! shared in axum's `State`. `main.rs` serves it; `tests/axum.rs` includes this file and
//! drives it over real HTTP.
//!
//! Error mapping (the answers never contain a token or the client secret):
//!
//! | Docplanner call | our answer |
//! |---|---|
//! | any answer but 401 | passed through: status, content type, body |
//! | 401 although the layer renewed the token | `502` `{"error":"docplanner_rejected",…}` |
//! | token endpoint failing for now (5xx, 429, timeout, connection) | `503` `docplanner_unavailable`, with `Retry-After` when Docplanner sent one |
//! | token refused for good (bad credentials…), request refused by the layer (not https, not the API host) | `502` `docplanner_auth_failed` |
//! | the API itself unreachable | `502` `docplanner_unreachable` |
//!
//! `GET /healthz` reports the token cache's [`status`](docplanner_auth::TokenCache::status):
//! `503` while the token endpoint is failing and no usable token is left, else `200`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use docplanner_auth::client::HttpsClient;
use docplanner_auth::{BearerAuth, BoxError, ReplayBody};
use http_body_util::Full;
use serde_json::json;
use tower::ServiceExt;

/// The authenticated client: the built-in HTTPS client behind the auth layer. Build it once
/// per process; its clones share the connection pool and the token cache.
pub(crate) type DocplannerClient = BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>>;

/// What every handler shares.
#[derive(Clone)]
struct Docplanner {
    client: DocplannerClient,
    /// `https://www.{domain}/api/v3/integration`, without a trailing slash.
    api_base: Arc<str>,
}

/// The router: `GET /facilities`, proxied to Docplanner's `GET /facilities`, and
/// `GET /healthz`.
pub(crate) fn app(client: DocplannerClient, api_base: &str) -> Router {
    let docplanner = Docplanner {
        client,
        api_base: api_base.trim_end_matches('/').into(),
    };
    Router::new()
        .route("/facilities", get(facilities))
        .route("/healthz", get(healthz))
        .with_state(docplanner)
}

/// The token cache's state: `503` while requests would fail fast (no usable token, the
/// token endpoint backing off), `200` otherwise (an empty cache fetches on first use).
async fn healthz(State(docplanner): State<Docplanner>) -> Response {
    let status = docplanner.client.cache().status();
    let code = if status.is_failing() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "token": status.state.as_str(),
        "expires_in_s": status.expires_in.map(|d| d.as_secs()),
        "backing_off_for_s": status.backing_off_for.map(|d| d.as_secs()),
        "consecutive_failures": status.consecutive_failures,
        // Error messages never contain a secret or a token.
        "last_error": status.last_error.map(|e| e.to_string()),
    });
    (code, Json(body)).into_response()
}

async fn facilities(State(docplanner): State<Docplanner>) -> Response {
    docplanner.get("/facilities").await
}

impl Docplanner {
    /// `GET {api_base}{path}` through the shared client, mapped to our answer.
    async fn get(&self, path: &str) -> Response {
        let url = format!("{}{path}", self.api_base);
        let request = match http::Request::get(url).body(Full::default()) {
            Ok(request) => request,
            Err(error) => {
                let message = format!("could not build the Docplanner request: {error}");
                return failure(StatusCode::INTERNAL_SERVER_ERROR, "bad_request", message);
            }
        };
        // A clone per request is cheap (an Arc and a pool handle) and is how tower services
        // are shared: `oneshot` waits for readiness, then calls.
        match self.client.clone().oneshot(request).await {
            Ok(response) if response.status() == StatusCode::UNAUTHORIZED => failure(
                StatusCode::BAD_GATEWAY,
                "docplanner_rejected",
                "Docplanner answered 401 Unauthorized, and renewing the access token did not \
                 help: this API client may not have access to this resource"
                    .to_owned(),
            ),
            Ok(response) => pass_through(response),
            Err(error) => from_error(&error),
        }
    }
}

/// Docplanner's answer as it is: status, content type and the body, streamed.
fn pass_through(response: http::Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = response.into_parts();
    let mut ours = Response::new(Body::new(body));
    *ours.status_mut() = parts.status;
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        ours.headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    ours
}

/// The error of the authenticated client: ours (`docplanner_auth::Error`, whose message
/// never contains a secret) or the HTTP client's.
fn from_error(error: &BoxError) -> Response {
    let Some(auth) = error.downcast_ref::<docplanner_auth::Error>() else {
        tracing::warn!(%error, "Docplanner unreachable");
        let message = format!("could not reach Docplanner: {error}");
        return failure(StatusCode::BAD_GATEWAY, "docplanner_unreachable", message);
    };
    tracing::warn!(error = %auth, "no authenticated Docplanner request");
    if auth.is_transient() {
        let mut response = failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "docplanner_unavailable",
            auth.to_string(),
        );
        if let Some(delay) = auth.retry_after() {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return response;
    }
    failure(
        StatusCode::BAD_GATEWAY,
        "docplanner_auth_failed",
        auth.to_string(),
    )
}

/// `{"error": code, "message": message}` with `status`.
fn failure(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}
