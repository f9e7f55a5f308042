//! The hot path with a fresh token: no await (the response future is ready on its first
//! poll when the inner service is), and at most two heap allocations beyond what inserting
//! the header costs anyway (the head kept for a replay, and the tape that records the
//! body), counted by a counting global allocator (per thread, so parallel tests do not
//! disturb it).
#![allow(clippy::unwrap_used)]
// A global allocator is unsafe to implement; it only counts and forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::{AccessToken, BearerAuthLayer, BoxError, ReplayBody, TokenCache};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tower::{service_fn, Layer, Service};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(future).poll(&mut cx)
}

const URI: &str = "https://www.doctoralia.es/api/v3/integration/facilities";

#[tokio::test(flavor = "current_thread")]
async fn a_fresh_token_costs_no_await_and_at_most_two_allocations_for_the_replay() {
    let cache = TokenCache::new(|| async {
        Ok::<_, BoxError>(AccessToken::new("hot-token", Duration::from_secs(3600))?)
    });
    cache.token().await.unwrap();
    let inner = service_fn(|_: Request<ReplayBody<Empty<Bytes>>>| async {
        Ok::<_, BoxError>(Response::new(()))
    });
    let mut service = BearerAuthLayer::new(cache.clone(), "https://www.doctoralia.es")
        .unwrap()
        .layer(inner);
    let header = cache.token().await.unwrap().header_value().clone();

    let warm_up = Request::get(URI).body(Empty::<Bytes>::new()).unwrap();
    assert!(poll_once(service.call(warm_up)).is_ready());

    for _ in 0..3 {
        // Ours: the whole request through the layer.
        let request = Request::get(URI).body(Empty::<Bytes>::new()).unwrap();
        let (poll, ours) = allocations(|| {
            assert!(poll_once(std::future::poll_fn(|cx| service.poll_ready(cx))).is_ready());
            let response = poll_once(service.call(request));
            matches!(response, Poll::Ready(Ok(_)))
        });
        assert!(poll, "ready on the first poll: no await on the hot path");

        // The floor: a static header inserted by hand (what tower-http's AddAuthorization does).
        let mut request = Request::get(URI).body(Empty::<Bytes>::new()).unwrap();
        let (_, floor) = allocations(|| {
            request.headers_mut().insert(AUTHORIZATION, header.clone());
            drop(request);
        });
        // The head kept for a replay: one buffer.
        assert_eq!(ours, floor + 1, "allocations: ours {ours}, floor {floor}");
    }

    // A realistic request: three headers and a JSON body that the inner service reads (as
    // hyper does); recording its head and its body for a replay costs two allocations,
    // whatever the number of headers.
    let inner = service_fn(|request: Request<ReplayBody<Full<Bytes>>>| async move {
        let mut body = std::pin::pin!(request.into_body());
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok::<_, BoxError>(Response::new(()))
    });
    let mut service = BearerAuthLayer::new(cache.clone(), "https://www.doctoralia.es")
        .unwrap()
        .layer(inner);
    let post = || {
        Request::post(URI)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header("x-request-id", "7f9c2a4e-1b3d-4c5e-8f6a-0b1c2d3e4f5a")
            .body(Full::new(Bytes::from_static(br#"{"duration":30}"#)))
            .unwrap()
    };
    assert!(poll_once(service.call(post())).is_ready()); // warm-up
    for _ in 0..3 {
        let request = post();
        let (poll, ours) = allocations(|| {
            let response = poll_once(service.call(request));
            matches!(response, Poll::Ready(Ok(_)))
        });
        assert!(poll, "ready on the first poll");

        let mut request = post();
        let (_, floor) = allocations(|| {
            request.headers_mut().insert(AUTHORIZATION, header.clone());
            drop(request);
        });
        assert_eq!(
            ours,
            floor + 2,
            "a realistic request: ours {ours}, floor {floor}"
        );
    }

    // The token lookup alone: one load and one header clone, nothing allocated.
    let (token, n) = allocations(|| cache.cached());
    assert!(token.is_some());
    assert_eq!(n, 0);
}
