//! Heap allocations and bytes per request, counted by a counting global allocator:
//! (a) the inner service alone, (b) tower-http's `AddAuthorization`, (c) our `BearerAuth`,
//! (d) the hand-rolled `RwLock` layer, (e) huskarl. Two requests: a bare `GET`, and a
//! realistic `POST` (3 headers, a small JSON body, an inner service that reads the body as
//! hyper does). Every figure counts the whole request: building it (from a `&str` URL, as
//! callers do), the call, the response, dropping everything.
//!
//! `cargo bench --bench allocations`
// A global allocator is unsafe to implement; this one only counts and forwards to `System`.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::BearerAuthLayer;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::Request;
use http_body_util::{Empty, Full};
use support::{Drain, Endpoint, HuskarlAuth, Noop, RwLockAuth, API, LONG, TOKEN, URI};
use tower::{Layer, Service};
use tower_http::auth::AddAuthorizationLayer;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(size: usize) {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    let _ = BYTES.try_with(|n| n.set(n.get() + size as u64));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUNDS: u64 = 1_000;
const JSON: &[u8] =
    br#"{"address_service_id":"9","duration":30,"patient":{"name":"Ana","surname":"Ruiz"}}"#;

fn bare() -> Request<Empty<Bytes>> {
    Request::get(URI).body(Empty::new()).expect("request")
}

fn realistic() -> Request<Full<Bytes>> {
    Request::post(URI)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .header("x-request-id", "7f9c2a4e-1b3d-4c5e-8f6a-0b1c2d3e4f5a")
        .body(Full::new(Bytes::from_static(JSON)))
        .expect("request")
}

/// Allocations and bytes per request.
type PerRequest = (f64, f64);

/// Allocations and bytes per request, averaged over `ROUNDS` after a warm-up.
fn per_request<S, B>(mut service: S, make: fn() -> Request<B>) -> PerRequest
where
    S: Service<Request<B>>,
{
    let mut one = || {
        let request = make();
        let response = support::ready(service.call(request));
        assert!(response.is_ok());
    };
    for _ in 0..100 {
        one();
    }
    let (a0, b0) = (ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get));
    for _ in 0..ROUNDS {
        one();
    }
    let (a1, b1) = (ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get));
    (
        (a1 - a0) as f64 / ROUNDS as f64,
        (b1 - b0) as f64 / ROUNDS as f64,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends: nothing to list
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = Endpoint::new(Duration::ZERO, LONG);
    let cache = endpoint.cache();
    runtime.block_on(cache.token()).expect("token");
    let ours = BearerAuthLayer::new(cache, API).expect("layer");
    let floor = AddAuthorizationLayer::bearer(TOKEN).as_sensitive(true);
    let rwlock = RwLockAuth::new(Noop, endpoint.clone());
    let huskarl = HuskarlAuth::new(Noop, endpoint.clone());
    // Warm the peers' caches (one token request each); measure outside the runtime.
    runtime.block_on(async {
        rwlock.clone().call(bare()).await.expect("warm");
        huskarl.clone().call(bare()).await.expect("warm");
    });

    let rows: Vec<(&str, PerRequest, PerRequest)> = vec![
        (
            "a_inner_alone",
            per_request(Noop, bare),
            per_request(Drain, realistic),
        ),
        (
            "b_add_authorization",
            per_request(floor.layer(Noop), bare),
            per_request(floor.layer(Drain), realistic),
        ),
        (
            "c_bearer_auth",
            per_request(ours.layer(Noop), bare),
            per_request(ours.layer(Drain), realistic),
        ),
        (
            "d_rwlock_hand_rolled",
            per_request(rwlock.clone(), bare),
            per_request(rwlock.with_inner(Drain), realistic),
        ),
        (
            "e_huskarl",
            per_request(huskarl.clone(), bare),
            per_request(huskarl.with_inner(Drain), realistic),
        ),
    ];
    let (floor_bare, floor_real) = (rows[1].1, rows[1].2);
    println!("\nallocations per request (whole request: build, call, response, drop)");
    println!(
        "| {:<22} | {:>11} | {:>11} | {:>9} | {:>11} | {:>11} | {:>9} |",
        "variant", "GET allocs", "GET bytes", "vs (b)", "POST allocs", "POST bytes", "vs (b)"
    );
    println!(
        "|{:-<24}|{:->13}|{:->13}|{:->11}|{:->13}|{:->13}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    for (name, (ga, gb), (pa, pb)) in &rows {
        println!(
            "| {:<22} | {:>11.2} | {:>11.1} | {:>+9.2} | {:>11.2} | {:>11.1} | {:>+9.2} |",
            name,
            ga,
            gb,
            ga - floor_bare.0,
            pa,
            pb,
            pa - floor_real.0
        );
    }
    println!("(vs (b): allocations per request more than tower-http's AddAuthorization)");
    let post = |name: &str| rows.iter().find(|row| row.0 == name).map(|row| row.2 .0);
    support::Verdict::new("allocations")
        .at_most(
            "realistic POST: ours allocations <= AddAuthorization + 2",
            post("c_bearer_auth"),
            post("b_add_authorization").map(|floor| floor + 2.0),
        )
        .print();
}
