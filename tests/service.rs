//! The tower contract, with tower-test mocks: readiness, the service that was polled
//! ready is the one called, the replay goes through `poll_ready` again, the 401 is dropped
//! before the replay, inner errors pass through.
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::{AccessToken, BearerAuthLayer, BoxError, ReplayBody, TokenCache};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio_test::{assert_pending, assert_ready_ok};
use tower_test::mock;

mod support;

const API: &str = "https://www.doctoralia.es/api/v3/integration";

/// A cold cache of tokens `t1`, `t2`, … and the number handed out.
fn numbered_cache() -> (TokenCache, Arc<AtomicU32>) {
    let count = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&count);
    let cache = TokenCache::new(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok::<_, BoxError>(AccessToken::new(
                format!("t{n}"),
                Duration::from_secs(3600),
            )?)
        }
    });
    (cache, count)
}

/// [`numbered_cache`] with `t1` cached already, so that `call` reaches the inner service
/// at once (the hot path).
async fn numbered_tokens() -> (TokenCache, Arc<AtomicU32>) {
    let (cache, count) = numbered_cache();
    cache.token().await.unwrap();
    (cache, count)
}

/// A response body that records when it is dropped.
#[derive(Debug)]
struct Tracked(Arc<AtomicBool>);

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(None)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

type Sent = Request<ReplayBody<Full<Bytes>>>;

/// The next request the inner mock receives, or a failure after [`support::PEER_WAIT`]
/// (a layer that never sends must fail the test, not hang it).
async fn next(
    handle: &mut mock::Handle<Sent, Response<Tracked>>,
) -> (Sent, mock::SendResponse<Response<Tracked>>) {
    support::within("the inner service's next request", handle.next_request())
        .await
        .expect("the service is still alive")
}

fn get() -> Request<Full<Bytes>> {
    Request::get(format!("{API}/facilities"))
        .body(Full::default())
        .unwrap()
}

/// Answer `200` to the inner request, and check the layer hands it back (within
/// [`support::PEER_WAIT`]).
async fn answer_ok<F>(send: mock::SendResponse<Response<Tracked>>, response: F)
where
    F: std::future::Future<Output = Result<Response<Tracked>, BoxError>>,
{
    send.send_response(respond(StatusCode::OK, &Arc::new(AtomicBool::new(false))));
    let response = support::within("the response", response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn respond(status: StatusCode, dropped: &Arc<AtomicBool>) -> Response<Tracked> {
    let mut response = Response::new(Tracked(Arc::clone(dropped)));
    *response.status_mut() = status;
    response
}

#[tokio::test]
async fn backpressure_passes_through_and_the_ready_service_is_called() {
    let (cache, _) = numbered_tokens().await;
    let layer = BearerAuthLayer::new(cache, API).unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<Sent, Response<Tracked>, _>(layer);

    handle.allow(0);
    assert_pending!(service.poll_ready());
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    // tower-test panics if `call` reaches a clone that was not polled ready.
    let response = service.call(get());
    // Its Debug says where the request is, and nothing else (no token).
    assert_eq!(
        format!("{response:?}"),
        r#"ResponseFuture { state: "sent" }"#
    );
    let (request, send) = next(&mut handle).await;
    assert_eq!(request.headers()["authorization"], "Bearer t1");
    assert!(request.headers()["authorization"].is_sensitive());
    answer_ok(send, response).await;
}

#[tokio::test]
async fn the_replay_polls_ready_again_and_the_401_is_dropped_first() {
    let (cache, tokens) = numbered_tokens().await;
    let layer = BearerAuthLayer::new(cache, API).unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<Sent, Response<Tracked>, _>(layer);

    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut response = tokio_test::task::spawn(service.call(get()));
    assert_pending!(response.poll());
    let (first, send) = next(&mut handle).await;
    assert_eq!(first.headers()["authorization"], "Bearer t1");
    let rejected = Arc::new(AtomicBool::new(false));
    send.send_response(respond(StatusCode::UNAUTHORIZED, &rejected));

    // The inner service has no capacity: the replay waits in poll_ready.
    for _ in 0..10 {
        assert_pending!(response.poll());
        tokio::task::yield_now().await;
    }
    assert_eq!(tokens.load(Ordering::SeqCst), 2, "a new token was fetched");
    assert!(
        handle.poll_request().is_pending(),
        "no call without readiness"
    );
    assert!(
        rejected.load(Ordering::SeqCst),
        "the 401 was dropped before the replay"
    );

    handle.allow(1);
    assert_pending!(response.poll());
    let (second, send) = next(&mut handle).await;
    assert_eq!(second.headers()["authorization"], "Bearer t2");
    assert_eq!(second.uri(), first.uri());
    answer_ok(send, response).await;
}

/// A request that waited for the first token and got a 401 makes that token suspect: the
/// replay carries a new one (t2), not the rejected t1 again.
#[tokio::test]
async fn a_401_after_a_cold_start_is_replayed_with_a_new_token() {
    let (cache, count) = numbered_cache();
    let layer = BearerAuthLayer::new(cache, API).unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<Sent, Response<Tracked>, _>(layer);
    handle.allow(2);
    assert_ready_ok!(service.poll_ready());
    let response = tokio::spawn(service.call(get()));
    let (first, send) = next(&mut handle).await;
    assert_eq!(first.headers()["authorization"], "Bearer t1");
    send.send_response(respond(
        StatusCode::UNAUTHORIZED,
        &Arc::new(AtomicBool::new(false)),
    ));
    let (second, send) = next(&mut handle).await;
    assert_eq!(second.headers()["authorization"], "Bearer t2");
    send.send_response(respond(StatusCode::OK, &Arc::new(AtomicBool::new(false))));
    let response = support::within("the response", response).await.unwrap();
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_replayed_request_keeps_method_uri_headers_and_body() {
    let (cache, _) = numbered_tokens().await;
    let layer = BearerAuthLayer::new(cache, API).unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<Sent, Response<Tracked>, _>(layer);
    handle.allow(2);
    assert_ready_ok!(service.poll_ready());
    let request = Request::post(format!(
        "{API}/facilities/1/doctors/2/addresses/3/slots/x/book"
    ))
    .header("x-request-id", "abc")
    .body(Full::new(Bytes::from_static(b"{\"duration\":30}")))
    .unwrap();
    let response = tokio::spawn(service.call(request));
    let (first, send) = next(&mut handle).await;
    // The inner service reads the body before answering, as an HTTP client does.
    let first_body = support::within("the first body", first.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    send.send_response(respond(
        StatusCode::UNAUTHORIZED,
        &Arc::new(AtomicBool::new(false)),
    ));
    let (second, send) = next(&mut handle).await;
    assert_eq!(second.method(), http::Method::POST);
    assert_eq!(second.headers()["x-request-id"], "abc");
    assert_eq!(second.headers()["authorization"], "Bearer t2");
    let second_body = support::within("the replayed body", second.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(first_body, second_body);
    assert_eq!(&second_body[..], b"{\"duration\":30}");
    send.send_response(respond(
        StatusCode::CREATED,
        &Arc::new(AtomicBool::new(false)),
    ));
    assert_eq!(
        support::within("the response", response)
            .await
            .unwrap()
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
}

#[derive(Debug)]
struct InnerError;
impl std::fmt::Display for InnerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("inner failed")
    }
}
impl std::error::Error for InnerError {}

#[tokio::test]
async fn inner_errors_pass_through_unchanged() {
    let (cache, _) = numbered_tokens().await;
    let layer = BearerAuthLayer::new(cache, API).unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<Sent, Response<Tracked>, _>(layer);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let response = service.call(get());
    let (_, send) = next(&mut handle).await;
    send.send_error(InnerError);
    let error = support::within("the inner error", response)
        .await
        .unwrap_err();
    assert!(error.downcast_ref::<InnerError>().is_some(), "{error}");

    handle.send_error(InnerError);
    let ready = std::future::poll_fn(|_| service.poll_ready());
    let error = support::within("poll_ready's error", ready)
        .await
        .unwrap_err();
    assert!(error.downcast_ref::<InnerError>().is_some(), "{error}");
}

/// A 401 for a request whose body was not read (so cannot be replayed) goes back at once:
/// the future does not wait for a new token it could not use (here, one that never comes).
#[tokio::test]
async fn an_unreplayable_401_does_not_wait_for_a_new_token() {
    let count = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&count);
    let cache = TokenCache::new(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n > 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(AccessToken::new("t1", Duration::from_secs(3600))?)
        }
    });
    cache.token().await.unwrap();
    let layer = BearerAuthLayer::new(cache, API).unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<Sent, Response<Tracked>, _>(layer);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let request = Request::post(format!(
        "{API}/facilities/1/doctors/2/addresses/3/slots/x/book"
    ))
    .body(Full::new(Bytes::from_static(b"{\"duration\":30}")))
    .unwrap();
    let response = tokio::spawn(service.call(request));
    let (unread, send) = next(&mut handle).await;
    send.send_response(respond(
        StatusCode::UNAUTHORIZED,
        &Arc::new(AtomicBool::new(false)),
    ));
    let response = support::within("the 401, without waiting for a token", response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    drop(unread);
}
