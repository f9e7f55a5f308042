//! [`ResponseFuture`]: the state machine behind one authenticated request.
//!
//! ```text
//!            token cached? ──no──► Token (wait for the single refresh)
//!                 │ yes                   │
//!                 ▼                       ▼
//!              Called ◄───────────────────┘
//!                 │ 401, token still current, body replayable
//!                 ▼
//!              Refresh (invalidate by CAS, wait for the new token)
//!                 │ a different token
//!                 ▼
//!              Ready (poll_ready the inner service again)
//!                 ▼
//!              Replayed ──► whatever it answers, 401 included: never loops
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::{Replay, ReplayBody};
use super::head::Head;
use super::layer::Config;
use crate::cache::{CacheHandle, Rejection};
use crate::error::{BoxError, Error, Kind};
use crate::token::AccessToken;

type TokenFuture = Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send>>;

pin_project! {
    /// The response future of [`BearerAuth`](crate::BearerAuth).
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future, B, S::Response>,
        attempt: Option<Attempt<S, B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, R> {
        Refused { error: Option<Error> },
        // Slow paths keep their request (and the 401 answer) boxed, so that the hot path's
        // future stays small (it is moved a few times per request).
        Token { token: TokenFuture, request: Option<Box<Request<B>>> },
        Called { #[pin] future: F },
        Refresh { token: TokenFuture, rejected: Option<Box<R>> },
        Ready { request: Option<Box<Request<ReplayBody<B>>>> },
        Replayed { #[pin] future: F },
    }
}

/// Everything needed to send the request, and to send it again once.
struct Attempt<S, B> {
    /// The inner service that was polled ready for this request.
    inner: S,
    cache: CacheHandle,
    replay_limit: usize,
    /// The id of the token the request was sent with.
    used: u64,
    /// The head and the recorded body, for one replay.
    replay: Option<(Head, Replay)>,
    _body: std::marker::PhantomData<fn(B)>,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn refused(error: Error) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
            attempt: None,
        }
    }

    #[inline]
    pub(crate) fn new(mut inner: S, config: &Config, request: Request<B>) -> Self
    where
        B: Body,
    {
        // This thread's handle on the cache, for a 401 (see `CacheHandle`).
        let cache = config.cache.handle();
        // The hot path: a usable token is one lock-free load away. The future is built
        // once, in its final shape, with the inner future already in it.
        let (state, used, replay) = match config.cache.header() {
            Some((header, id)) => {
                let (future, replay) = send(&mut inner, request, header, config.replay_limit);
                (State::Called { future }, id, replay)
            }
            None => (
                State::Token {
                    token: token_future(&cache),
                    request: Some(Box::new(request)),
                },
                0,
                None,
            ),
        };
        Self {
            state,
            attempt: Some(Attempt {
                inner,
                cache,
                replay_limit: config.replay_limit,
                used,
                replay,
                _body: std::marker::PhantomData,
            }),
        }
    }
}

/// Attach the token and call the (ready) inner service; also returns what a replay needs
/// (the head and the recorded body) when the body may be replayed.
#[inline]
fn send<S, B>(
    inner: &mut S,
    request: Request<B>,
    header: HeaderValue,
    replay_limit: usize,
) -> (S::Future, Option<(Head, Replay)>)
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body,
{
    let (mut parts, body) = request.into_parts();
    // `Content-Length` only matters for a body that is not empty.
    let content_length = if body.is_end_stream() {
        None
    } else {
        parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    };
    let (body, replay) = ReplayBody::new(body, replay_limit, content_length);
    let replay = replay.map(|replay| (Head::record(&parts), replay));
    parts.headers.insert(AUTHORIZATION, header);
    (inner.call(Request::from_parts(parts, body)), replay)
}

fn token_future(cache: &CacheHandle) -> TokenFuture {
    let cache = cache.clone();
    Box::pin(async move { cache.token().await })
}

fn gone() -> BoxError {
    Error::new(Kind::Config, "ResponseFuture polled after it completed").into()
}

impl<S, B> Attempt<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    /// Whether the request can be sent again: its head is kept and its body recorded whole.
    fn can_replay(&self) -> bool {
        self.replay
            .as_ref()
            .is_some_and(|(_, replay)| replay.is_complete())
    }

    /// The request once more, with `token`, if its body was recorded whole.
    fn replay_with(&mut self, token: &AccessToken) -> Option<Request<ReplayBody<B>>> {
        let (head, replay) = self.replay.take()?;
        let body = replay.body()?;
        let mut parts = head.into_parts()?;
        parts
            .headers
            .insert(AUTHORIZATION, token.header_value().clone());
        self.used = token.id();
        Some(Request::from_parts(parts, body))
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let Some(attempt) = this.attempt.as_mut() else {
                let error = match this.state.as_mut().project() {
                    StateProj::Refused { error } => error.take().map(BoxError::from),
                    _ => None,
                };
                return Poll::Ready(Err(error.unwrap_or_else(gone)));
            };
            match this.state.as_mut().project() {
                StateProj::Refused { .. } => return Poll::Ready(Err(gone())),
                StateProj::Token { token, request } => {
                    let token = ready!(token.as_mut().poll(cx))?;
                    let request = request.take().ok_or_else(gone)?;
                    let header = token.header_value().clone();
                    let (future, replay) =
                        send(&mut attempt.inner, *request, header, attempt.replay_limit);
                    attempt.used = token.id();
                    attempt.replay = replay;
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if response.status() != StatusCode::UNAUTHORIZED {
                        return Poll::Ready(Ok(response));
                    }
                    let rejection = attempt.cache.reject(attempt.used);
                    // Only wait for a new token if the request can be sent again with it.
                    if rejection == Rejection::RateLimited || !attempt.can_replay() {
                        return Poll::Ready(Ok(response));
                    }
                    this.state.set(State::Refresh {
                        token: token_future(&attempt.cache),
                        rejected: Some(Box::new(response)),
                    });
                }
                StateProj::Refresh { token, rejected } => {
                    let result = ready!(token.as_mut().poll(cx));
                    let rejected = rejected.take().ok_or_else(gone)?;
                    let request = match result {
                        Ok(token) if token.id() != attempt.used => attempt.replay_with(&token),
                        Ok(_) => None, // the endpoint handed out the rejected token again
                        Err(error) => {
                            tracing::warn!(%error, "no new token after a 401; returning the 401");
                            None
                        }
                    };
                    let Some(request) = request else {
                        return Poll::Ready(Ok(*rejected));
                    };
                    // The 401 is not needed any more: drop it (and its body) before the replay.
                    drop(rejected);
                    this.state.set(State::Ready {
                        request: Some(Box::new(request)),
                    });
                }
                StateProj::Ready { request } => {
                    ready!(attempt.inner.poll_ready(cx)).map_err(Into::into)?;
                    let request = request.take().ok_or_else(gone)?;
                    attempt.cache.count_replay();
                    let future = attempt.inner.call(*request);
                    this.state.set(State::Replayed { future });
                }
                StateProj::Replayed { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if response.status() == StatusCode::UNAUTHORIZED {
                        // Rejected twice: drop that token too (rate-limited), never loop.
                        attempt.cache.reject(attempt.used);
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Refused { .. } => "refused",
            State::Token { .. } => "waiting for a token",
            State::Called { .. } => "called",
            State::Refresh { .. } => "waiting for a new token after a 401",
            State::Ready { .. } => "waiting to replay",
            State::Replayed { .. } => "replayed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
