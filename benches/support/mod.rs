//! Shared by the benchmarks: the no-op inner service, the hand-rolled baselines and the
//! published peer (huskarl), each a tower service that adds `Authorization: Bearer …`.
//!
//! None of this is in the library: these are the designs ours is measured against.
// Each benchmark uses a part of this module; `pub` is for the benchmarks that include it.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use docplanner_auth::{AccessToken, BoxError, TokenCache};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::Service;

/// The API origin every layer is configured for.
pub const API: &str = "https://www.doctoralia.es";
/// The request URI of every benchmark request.
pub const URI: &str = "https://www.doctoralia.es/api/v3/integration/facilities";
/// A token of a realistic length (Docplanner's are long random strings).
pub const TOKEN: &str = "ZjM2NGE3YTk4YjQxNTkxZTQ4ZDFmODhjNmU0OGZlNzI3ZGY0YjFhYjM1YjA4NGI2ZGQ4";
/// Long enough that no benchmark sees a token go stale.
pub const LONG: Duration = Duration::from_secs(86_400);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The inner service: answers `200` with an empty body at once, drops the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noop;

impl<B> Service<Request<B>> for Noop {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<()>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        drop(request);
        std::future::ready(Ok(Response::new(())))
    }
}

/// The bearer header of `token`, marked sensitive (as every design here does).
pub fn bearer(token: &str) -> HeaderValue {
    let mut header = HeaderValue::try_from(format!("Bearer {token}")).expect("header");
    header.set_sensitive(true);
    header
}

/// A token for the hand-rolled designs: its header and when it stops being usable.
#[derive(Clone, Debug)]
pub struct HandToken {
    pub header: HeaderValue,
    pub expires_at: Instant,
}

impl HandToken {
    fn usable(&self) -> Option<HeaderValue> {
        (Instant::now() < self.expires_at).then(|| self.header.clone())
    }
}

/// A token endpoint for the benchmarks: waits `latency` (real time), counts its calls,
/// hands out tokens that live `lifetime`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub latency: Duration,
    pub lifetime: Duration,
    pub calls: Arc<AtomicU64>,
}

impl Endpoint {
    pub fn new(latency: Duration, lifetime: Duration) -> Self {
        Self {
            latency,
            lifetime,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn wait(&self) -> u64 {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            precise_sleep(self.latency).await;
        }
        n
    }

    /// One token request, for the hand-rolled designs.
    pub async fn fetch(&self) -> HandToken {
        let n = self.wait().await;
        HandToken {
            header: bearer(&format!("{TOKEN}-{n}")),
            expires_at: Instant::now() + self.lifetime,
        }
    }

    /// This endpoint as a hand-rolled design's fetch.
    pub fn fetcher(&self) -> Fetch {
        let endpoint = self.clone();
        Arc::new(move || {
            let endpoint = endpoint.clone();
            Box::pin(async move { endpoint.fetch().await })
        })
    }

    /// Our cache over this endpoint.
    pub fn cache(&self) -> TokenCache {
        let endpoint = self.clone();
        TokenCache::builder(move || {
            let endpoint = endpoint.clone();
            async move {
                let n = endpoint.wait().await;
                Ok::<_, BoxError>(AccessToken::new(format!("{TOKEN}-{n}"), endpoint.lifetime)?)
            }
        })
        .build()
    }
}

/// Sleep `duration` of real time, to within a few tens of microseconds: tokio's timer
/// rounds a sleep up to its next 1 ms tick (a 5 ms sleep takes 5 to 6 ms), so the token
/// endpoints here are timed by a thread of their own instead. Works on any runtime.
pub async fn precise_sleep(duration: Duration) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    timer()
        .send((Instant::now() + duration, tx))
        .expect("the timer thread runs for the whole process");
    let _ = rx.await;
}

type Wake = (Instant, tokio::sync::oneshot::Sender<()>);

fn timer() -> &'static std::sync::mpsc::Sender<Wake> {
    static TIMER: std::sync::OnceLock<std::sync::mpsc::Sender<Wake>> = std::sync::OnceLock::new();
    TIMER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Wake>();
        std::thread::spawn(move || {
            use std::cmp::Reverse;
            use std::sync::mpsc::RecvTimeoutError;
            let mut due = std::collections::BinaryHeap::new();
            let mut senders = std::collections::HashMap::new();
            let mut next_id = 0_u64;
            loop {
                let received = match due.peek() {
                    Some(Reverse((at, _))) => {
                        rx.recv_timeout(Instant::saturating_duration_since(at, Instant::now()))
                    }
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match received {
                    Ok((at, tx)) => {
                        due.push(Reverse((at, next_id)));
                        senders.insert(next_id, tx);
                        next_id += 1;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                while let Some(Reverse((at, id))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    if let Some(tx) = senders.remove(&id) {
                        let _ = tx.send(());
                    }
                }
            }
        });
        tx
    })
}

fn take<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// (d) The usual hand-rolled layer: the token in an `Arc<tokio::sync::RwLock<Option<_>>>`,
/// read per request in a boxed future; an expired or missing token is fetched under the
/// write lock (a blocking refresh at expiry: everyone waits for it).
#[derive(Clone)]
pub struct RwLockAuth<S> {
    inner: S,
    token: Arc<tokio::sync::RwLock<Option<HandToken>>>,
    fetch: Fetch,
}

/// How a hand-rolled design obtains a token.
pub type Fetch = Arc<dyn Fn() -> BoxFuture<HandToken> + Send + Sync>;

impl<S> RwLockAuth<S> {
    pub fn new(inner: S, endpoint: Endpoint) -> Self {
        Self::with_fetch(inner, endpoint.fetcher())
    }

    pub fn with_fetch(inner: S, fetch: Fetch) -> Self {
        Self {
            inner,
            token: Arc::default(),
            fetch,
        }
    }

    /// The same token slot in front of another inner service.
    pub fn with_inner<T>(&self, inner: T) -> RwLockAuth<T> {
        RwLockAuth {
            inner,
            token: Arc::clone(&self.token),
            fetch: Arc::clone(&self.fetch),
        }
    }
}

impl<S, B> Service<Request<B>> for RwLockAuth<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut inner = take(&mut self.inner);
        let token = Arc::clone(&self.token);
        let fetch = Arc::clone(&self.fetch);
        Box::pin(async move {
            let header = token.read().await.as_ref().and_then(HandToken::usable);
            let header = match header {
                Some(header) => header,
                None => {
                    let mut slot = token.write().await;
                    match slot.as_ref().and_then(HandToken::usable) {
                        Some(header) => header,
                        None => {
                            let fresh = fetch().await;
                            let header = fresh.header.clone();
                            *slot = Some(fresh);
                            header
                        }
                    }
                }
            };
            request.headers_mut().insert(AUTHORIZATION, header);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

/// (ii) golang.org/x/oauth2's `reuseTokenSource`: one mutex, locked by every request and
/// held across the fetch.
#[derive(Clone, Debug)]
pub struct MutexAuth<S> {
    inner: S,
    token: Arc<tokio::sync::Mutex<Option<HandToken>>>,
    endpoint: Endpoint,
}

impl<S> MutexAuth<S> {
    pub fn new(inner: S, endpoint: Endpoint) -> Self {
        Self {
            inner,
            token: Arc::default(),
            endpoint,
        }
    }
}

impl<S, B> Service<Request<B>> for MutexAuth<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut inner = take(&mut self.inner);
        let token = Arc::clone(&self.token);
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let header = {
                let mut slot = token.lock().await;
                match slot.as_ref().and_then(HandToken::usable) {
                    Some(header) => header,
                    None => {
                        let fresh = endpoint.fetch().await;
                        let header = fresh.header.clone();
                        *slot = Some(fresh);
                        header
                    }
                }
            };
            request.headers_mut().insert(AUTHORIZATION, header);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

/// (i) No single flight: a lock-free read (as ours), and every caller that finds no usable
/// token fetches one itself.
#[derive(Clone, Debug)]
pub struct NoFlightAuth<S> {
    inner: S,
    token: Arc<ArcSwapOption<HandToken>>,
    endpoint: Endpoint,
}

impl<S> NoFlightAuth<S> {
    pub fn new(inner: S, endpoint: Endpoint) -> Self {
        Self {
            inner,
            token: Arc::default(),
            endpoint,
        }
    }
}

impl<S, B> Service<Request<B>> for NoFlightAuth<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut inner = take(&mut self.inner);
        let token = Arc::clone(&self.token);
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let cached = token.load().as_deref().and_then(HandToken::usable);
            let header = match cached {
                Some(header) => header,
                None => {
                    let fresh = endpoint.fetch().await;
                    let header = fresh.header.clone();
                    token.store(Some(Arc::new(fresh)));
                    header
                }
            };
            request.headers_mut().insert(AUTHORIZATION, header);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

/// (e) The published peer: huskarl 0.11's `InMemoryTokenCache` (an `ArcSwap` read, a
/// tokio mutex around the fetch, early refresh by `try_lock`) behind its `HttpAuthorizer`,
/// whose `get_headers` is what a request asks for its `Authorization` header. huskarl ships
/// no tower layer: this is the thin one a user writes.
#[derive(Clone)]
pub struct HuskarlAuth<S> {
    inner: S,
    authorizer: Arc<huskarl::authorizer::HttpAuthorizer>,
}

impl<S> HuskarlAuth<S> {
    pub fn new(inner: S, endpoint: Endpoint) -> Self {
        let cache = huskarl::cache::InMemoryTokenCache::builder()
            .source(HuskarlSource(endpoint))
            .build();
        Self {
            inner,
            authorizer: Arc::new(
                huskarl::authorizer::HttpAuthorizer::builder()
                    .cache(cache)
                    .build(),
            ),
        }
    }

    /// The same cache in front of another inner service.
    pub fn with_inner<T>(&self, inner: T) -> HuskarlAuth<T> {
        HuskarlAuth {
            inner,
            authorizer: Arc::clone(&self.authorizer),
        }
    }
}

/// Our token endpoint as a huskarl token source.
struct HuskarlSource(Endpoint);

impl huskarl::cache::TokenSource for HuskarlSource {
    fn token(
        &self,
    ) -> huskarl::core::platform::MaybeSendBoxFuture<
        '_,
        Result<Arc<huskarl::grant::core::TokenResponse>, huskarl::TokenError>,
    > {
        Box::pin(async move {
            let n = self.0.wait().await;
            let raw = huskarl::grant::core::RawTokenResponse::builder()
                .access_token(format!("{TOKEN}-{n}"))
                .token_type("Bearer")
                .expires_in(self.0.lifetime.as_secs())
                .build();
            let response = raw
                .into_token_response(None, std::time::SystemTime::now())
                .expect("a bearer token response");
            Ok(Arc::new(response))
        })
    }
}

impl<S, B> Service<Request<B>> for HuskarlAuth<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut inner = take(&mut self.inner);
        let authorizer = Arc::clone(&self.authorizer);
        Box::pin(async move {
            let headers = authorizer
                .get_headers(request.method(), request.uri())
                .await
                .map_err(|e| BoxError::from(e.to_string()))?;
            request.headers_mut().extend(headers);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

/// Poll `future` once with a no-op waker: the hot path never waits, and polling outside
/// any runtime keeps tokio's `test-util` clock (a mutex) out of the measurement.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the hot path never waits"),
    }
}

/// Where criterion writes its estimates: `$CARGO_TARGET_DIR/criterion` or `target/criterion`.
pub fn criterion_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    std::path::PathBuf::from(target).join("criterion")
}

/// Criterion configured for these benchmarks: modest times, estimates where
/// [`criterion_dir`] finds them.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// The median (ns) criterion estimated for `group/function` in this run, if it ran.
pub fn median_ns(group: &str, function: &str, since: std::time::SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None; // left over from an earlier run (this one was filtered out)
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Print a comparison table of `functions` in `group`: median and ratio to `base`.
pub fn print_comparison(group: &str, functions: &[&str], base: &str, since: std::time::SystemTime) {
    let Some(base_ns) = median_ns(group, base, since) else {
        return;
    };
    println!("\n{group}: median per request, ratio to {base}");
    println!("| {:<28} | {:>12} | {:>8} |", "variant", "median", "ratio");
    println!("|{:-<30}|{:->14}|{:->10}|", "", "", "");
    for function in functions {
        if let Some(ns) = median_ns(group, function, since) {
            println!(
                "| {:<28} | {:>9.1} ns | {:>8.3} |",
                function,
                ns,
                ns / base_ns
            );
        }
    }
}

/// The inner service for a request with a body: reads the whole body (as hyper does when it
/// sends it), then answers `200` at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drain;

impl<B> Service<Request<B>> for Drain
where
    B: http_body::Body,
{
    type Response = Response<()>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<()>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut body = std::pin::pin!(request.into_body());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            if frame.is_err() {
                break;
            }
        }
        std::future::ready(Ok(Response::new(())))
    }
}

/// A target's verdict, computed from every one of its conditions: `met` only when each
/// condition was measured in this run and holds; `MISSED` otherwise, naming each condition
/// that failed or whose data is missing. Printed as one `verdict:` line that BENCHMARKS.md
/// quotes.
#[derive(Debug)]
pub struct Verdict {
    target: String,
    conditions: Vec<(String, Option<bool>)>,
}

impl Verdict {
    /// A verdict on `target` (as BENCHMARKS.md names it), with no condition yet.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            conditions: Vec::new(),
        }
    }

    /// One condition: `holds` is `None` when its data is missing from this run.
    pub fn check(mut self, condition: impl Into<String>, holds: Option<bool>) -> Self {
        self.conditions.push((condition.into(), holds));
        self
    }

    /// `value <= limit`, both measured in this run (`None`: missing), printed with figures.
    pub fn at_most(self, what: &str, value: Option<f64>, limit: Option<f64>) -> Self {
        let text = format!("{what}: {} <= {}", figure(value), figure(limit));
        let holds = value.zip(limit).map(|(v, l)| v <= l);
        self.check(text, holds)
    }

    /// `value < limit`, both measured in this run (`None`: missing), printed with figures.
    pub fn less_than(self, what: &str, value: Option<f64>, limit: Option<f64>) -> Self {
        let text = format!("{what}: {} < {}", figure(value), figure(limit));
        let holds = value.zip(limit).map(|(v, l)| v < l);
        self.check(text, holds)
    }

    /// `value >= floor`, both measured in this run (`None`: missing), printed with figures.
    pub fn at_least(self, what: &str, value: Option<f64>, floor: Option<f64>) -> Self {
        let text = format!("{what}: {} >= {}", figure(value), figure(floor));
        let holds = value.zip(floor).map(|(v, f)| v >= f);
        self.check(text, holds)
    }

    /// Met: there is at least one condition, and every one was measured and holds.
    pub fn met(&self) -> bool {
        !self.conditions.is_empty()
            && self
                .conditions
                .iter()
                .all(|(_, holds)| *holds == Some(true))
    }

    /// The `verdict:` line: `met`, or `MISSED` with the failing and missing conditions.
    pub fn line(&self) -> String {
        let all = |(text, _): &(String, Option<bool>)| text.clone();
        if self.met() {
            let conditions: Vec<String> = self.conditions.iter().map(all).collect();
            return format!("verdict: {}: met ({})", self.target, conditions.join("; "));
        }
        let mut why: Vec<String> = Vec::new();
        if self.conditions.is_empty() {
            why.push("no data".to_owned());
        }
        for (text, holds) in &self.conditions {
            match holds {
                Some(true) => {}
                Some(false) => why.push(format!("FAILED {text}")),
                None => why.push(format!("NO DATA {text}")),
            }
        }
        format!("verdict: {}: MISSED ({})", self.target, why.join("; "))
    }

    /// Print [`Verdict::line`].
    pub fn print(&self) {
        println!("{}", self.line());
    }
}

fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "missing".to_owned(), |v| format!("{v:.3}"))
}
