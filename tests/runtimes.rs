//! Runtimes and threads: a runtime that nobody drives never strands callers elsewhere,
//! refreshes on several runtimes stay one per runtime, nothing panics on purpose (the
//! panic hook never fires), and a caller outside any runtime gets a typed error instead
//! of a hang.
//!
//! This binary installs a panic hook that counts panics: keep every test in it free of
//! expected panics.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use bytes::Bytes;
use docplanner_auth::cache::Backoff;
use docplanner_auth::{
    AccessToken, BearerAuthLayer, BoxError, ReplayBody, TokenCache, TokenSource,
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt};

const API: &str = "https://www.doctoralia.es/api/v3/integration";

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// A source whose first call takes `first` (on the timer of the runtime that polls it)
/// and whose later calls answer at once; counts its calls.
fn slow_then_fast(first: Duration) -> (TokenCache, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let cache = TokenCache::new(move || {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if call == 0 {
                tokio::time::sleep(first).await;
            }
            Ok::<_, BoxError>(AccessToken::new(
                format!("token-{call}"),
                Duration::from_secs(3600),
            )?)
        }
    });
    (cache, calls)
}

fn current_thread(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap()
}

/// A source whose call 0 gives a stale token (obtained 3500 s ago, it lives 3600 s: past
/// its refresh moment, usable for 70 s more), call 1 never answers, call `failing` (if
/// any) fails, and the others give new tokens `token-N`; and its count of calls.
fn stale_then_stuck(failing: Option<usize>) -> (impl TokenSource, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source = move || {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let lifetime = Duration::from_secs(3600);
            let token = match call {
                0 => {
                    let long_ago = tokio::time::Instant::now()
                        .checked_sub(Duration::from_secs(3500))
                        .unwrap();
                    AccessToken::obtained_at("token-0", long_ago, lifetime)?
                }
                1 => std::future::pending().await,
                _ if Some(call) == failing => {
                    return Err::<AccessToken, BoxError>("the token endpoint is down".into())
                }
                _ => AccessToken::new(format!("token-{call}"), lifetime)?,
            };
            Ok(token)
        }
    };
    (source, calls)
}

/// On `runtime`, a caller served the stale token: a background refresh starts there
/// (unless one runs), and is let run until it waits.
fn serve_stale(runtime: &tokio::runtime::Runtime, cache: &TokenCache) {
    runtime.block_on(async {
        cache.token().await.unwrap();
        assert!(cache.cached().is_some(), "stale, still served");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
}

/// A minimal executor for a thread with no Tokio runtime (as `futures::executor::block_on`).
fn block_on_plain_thread<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

#[test]
fn a_refresh_stranded_on_an_idle_runtime_does_not_strand_callers_on_another() {
    count_panics();
    let (cache, calls) = slow_then_fast(Duration::from_secs(60));

    // Runtime A starts the refresh, then nobody drives A any more (it is kept alive).
    let idle = current_thread(false);
    let stranded = idle.spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    idle.block_on(async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1, "A's refresh is under way");

    // A caller on runtime B gets a token from a refresh of its own, at once: its paused
    // clock would run any wait out instantly, so a wait on A shows up as a timeout.
    let other = current_thread(true);
    let token =
        other.block_on(async { tokio::time::timeout(Duration::from_secs(5), cache.token()).await });
    let token = token.expect("not stranded").unwrap();
    assert_eq!(token.secret(), "token-1");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one refresh per runtime");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    drop(stranded);
}

#[test]
fn a_caller_outside_any_runtime_gets_a_typed_error_and_no_panic_fires() {
    count_panics();
    let (cache, calls) = slow_then_fast(Duration::from_millis(200));

    // A multi-threaded runtime drives a refresh...
    let driven = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let task = driven.spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    while calls.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }

    // ...while a plain thread (no runtime at all) asks for a token: it cannot fetch one,
    // and says so, without waiting and without a panic.
    let from_plain_thread = std::thread::spawn({
        let cache = cache.clone();
        move || block_on_plain_thread(cache.token())
    })
    .join()
    .unwrap();
    let error = from_plain_thread.unwrap_err();
    assert!(error.is_config(), "{error}");
    assert!(error.to_string().contains("Tokio runtime"), "{error}");

    // The driven refresh completes; afterwards the plain thread is served from the cache.
    let token = driven.block_on(task).unwrap().unwrap();
    let cached = std::thread::spawn(move || block_on_plain_thread(cache.token()))
        .join()
        .unwrap()
        .unwrap();
    assert!(cached.same_secret(&token));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panic hook fired");
}

/// A background refresh whose runtime shuts down before it ends does not hold the stale
/// path back: the next stale caller, on another runtime, starts a refresh of its own at
/// once (not after the abandoned refresh's deadline, 15 s later).
#[test]
fn a_background_refresh_cancelled_with_its_runtime_is_restarted_by_the_next_stale_caller() {
    count_panics();
    // Call 0: a stale token. Call 1: never answers. Call 2: a new token.
    let (source, calls) = stale_then_stuck(None);
    let cache = TokenCache::new(source);

    // Runtime A gets the stale token; serving it starts a background refresh on A, which
    // then shuts down while that refresh waits for its answer.
    let a = current_thread(false);
    serve_stale(&a, &cache);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "A's background refresh ran"
    );
    drop(a);

    // On runtime B the stale token starts a new background refresh right away.
    let b = current_thread(false);
    let renewed = b.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let token = cache.cached().unwrap();
                if token.secret() == "token-2" {
                    return token;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    });
    assert!(renewed.is_ok(), "no new refresh in 5 s");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one refresh more, on B");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panic hook fired");
}

/// The stale path asks, under the lock, whether a refresh runs *or* the endpoint backs off,
/// not both: a refresh that fails on one runtime sets the backoff (here none) and the
/// lock-free shortcut to its end while another runtime's refresh still runs, and the next
/// stale caller must then find that refresh running and start no other (3 source calls,
/// not 4).
#[test]
fn a_failure_on_one_runtime_does_not_start_a_second_refresh_beside_another_runtimes() {
    count_panics();
    // Call 0: a stale token. Call 1: never answers. Call 2: fails. Later: a new token.
    let (source, calls) = stale_then_stuck(Some(2));
    let mut no_backoff = Backoff::default();
    no_backoff.base = Duration::ZERO;
    no_backoff.cap = Duration::ZERO;
    no_backoff.permanent_base = Duration::ZERO;
    no_backoff.permanent_cap = Duration::ZERO;
    let cache = TokenCache::builder(source).backoff(no_backoff).build();

    // Runtime A: serving the stale token starts a background refresh, which waits for its
    // answer (A stays alive, so that refresh stays under way).
    let a = current_thread(false);
    serve_stale(&a, &cache);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "A's background refresh runs"
    );

    // Runtime B: a 401 for the stale token; the replay waits for a refresh of B's own,
    // which fails (backoff: none), and the 401 comes back.
    let b = current_thread(false);
    let unauthorized = tower::service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
        let mut response = Response::new(Full::<Bytes>::default());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        Ok::<_, BoxError>(response)
    });
    let client = BearerAuthLayer::new(cache.clone(), API)
        .unwrap()
        .layer(unauthorized);
    let status = b.block_on(async {
        let request = Request::get(format!("{API}/facilities"))
            .body(Full::<Bytes>::default())
            .unwrap();
        client.oneshot(request).await.unwrap().status()
    });
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "B's refresh failed");

    // The next stale caller, on B: A's refresh still runs; nothing else starts.
    serve_stale(&b, &cache);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "a second refresh started");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panic hook fired");
    drop(a);
}
