//! Cost per request with a fresh token and a no-op inner service:
//! the inner service alone, a static header inserted by hand (the floor), and our layer.
//! `cargo bench --bench hot_path`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use docplanner_auth::{AccessToken, BearerAuthLayer, BoxError, ReplayBody, TokenCache};
use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{service_fn, Layer, Service};

const URI: &str = "https://www.doctoralia.es/api/v3/integration/facilities";

fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the hot path never waits"),
    }
}

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = TokenCache::new(|| async {
        Ok::<_, BoxError>(AccessToken::new(
            "bench-token",
            Duration::from_secs(86_400),
        )?)
    });
    let header = runtime
        .block_on(cache.token())
        .expect("token")
        .header_value()
        .clone();
    let uri: http::Uri = URI.parse().expect("uri");

    let mut group = c.benchmark_group("hot_path");
    group.bench_function("inner_alone", |b| {
        let mut inner =
            service_fn(|_: Request<Empty<Bytes>>| async { Ok::<_, BoxError>(Response::new(())) });
        b.iter(|| {
            let request = Request::get(uri.clone())
                .body(Empty::new())
                .expect("request");
            black_box(ready(inner.call(request)))
        })
    });
    group.bench_function("static_header", |b| {
        let mut inner =
            service_fn(|_: Request<Empty<Bytes>>| async { Ok::<_, BoxError>(Response::new(())) });
        b.iter(|| {
            let mut request = Request::get(uri.clone())
                .body(Empty::new())
                .expect("request");
            request.headers_mut().insert(AUTHORIZATION, header.clone());
            black_box(ready(inner.call(request)))
        })
    });
    group.bench_function("bearer_auth", |b| {
        let inner = service_fn(|_: Request<ReplayBody<Empty<Bytes>>>| async {
            Ok::<_, BoxError>(Response::new(()))
        });
        let mut service = BearerAuthLayer::new(cache.clone(), "https://www.doctoralia.es")
            .expect("layer")
            .layer(inner);
        b.iter(|| {
            let request = Request::get(uri.clone())
                .body(Empty::new())
                .expect("request");
            black_box(ready(service.call(request)))
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
