//! [`ResponseFuture`]: the state machine behind one authenticated request. It decides
//! nothing about 401s itself: it asks the request's [`Reauth`] (the 401 policy, shared with
//! the reqwest middleware) and does what it says.
//!
//! ```text
//!   Refused ──► the error            Token (no usable token: wait for the single refresh)
//!   Passed ──► whatever it answers     │   (no credential set: sent untouched)
//!                                      │
//!                                      ▼
//!   (a usable token) ───────────────► First (the request is in flight)
//!                                      │ 401, and the policy says replay
//!                                      ▼
//!                                    Replacement (wait for a token other than the one used)
//!                                      │ a new token
//!                                      ▼
//!                                    Ready (poll_ready the inner service again)
//!                                      ▼
//!                                    Replayed ──► whatever it answers: never loops
//! ```
//!
//! Each state holds what it needs and nothing else. A value that the next state takes
//! over sits in an `Option` inside its state only so that it can be moved out; finding it
//! gone means the future was polled after it completed, which is answered with an error.

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
use crate::cache::{Reauth, Replacement, TokenCache, Unauthorized};
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
        // The inner service that was polled ready for this request.
        inner: S,
        // The 401 policy for this request; `None` when no credential set applies (refused,
        // or passed through untouched).
        reauth: Option<Reauth>,
        replay_limit: usize,
        // The head and the recorded body, kept for one replay; `None` once the request was
        // sent with a body that cannot be replayed.
        replay: Option<(Head, Replay)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, R> {
        // Refused before sending: this error is the answer.
        Refused { error: Option<Error> },
        // No credential set covers the request and pass-through is on: sent untouched, its
        // answer is the answer.
        Passed { #[pin] future: F },
        // No usable token: waiting for the single refresh before the first send.
        Token { token: TokenFuture, request: Option<Request<B>> },
        // The request is in flight.
        First { #[pin] future: F },
        // A 401 came back: waiting for a token other than the one the request carried, with
        // the 401 (handed back if there is none) and the request to send again.
        Replacement { token: Replacement, waiting: Option<(R, Request<ReplayBody<B>>)> },
        // A new token is on the request: waiting for the inner service to be ready.
        Ready { request: Option<Request<ReplayBody<B>>> },
        // The request is in flight once more: its answer is the answer.
        Replayed { #[pin] future: F },
    }
}

/// The request once more, if its head parses back and its body was recorded whole
/// (without a token yet).
fn again<B>(head: Head, replay: &Replay) -> Option<Request<ReplayBody<B>>> {
    let body = replay.body()?;
    Some(Request::from_parts(head.into_parts()?, body))
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    /// The future of a request refused before sending.
    pub(crate) fn refused(inner: S, error: Error) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
            inner,
            reauth: None,
            replay_limit: 0,
            replay: None,
        }
    }

    /// The future of a request that no credential set covers, sent untouched (the body is
    /// not recorded: there is no replay).
    pub(crate) fn passed(mut inner: S, request: Request<B>) -> Self {
        let (parts, body) = request.into_parts();
        let future = inner.call(Request::from_parts(parts, ReplayBody::unrecorded(body)));
        Self {
            state: State::Passed { future },
            inner,
            reauth: None,
            replay_limit: 0,
            replay: None,
        }
    }

    /// The future of `request`, with a token from `cache` (its credential set's), sent
    /// right away when a usable token is cached.
    #[inline]
    pub(crate) fn new(
        mut inner: S,
        cache: &TokenCache,
        config: &Config,
        request: Request<B>,
    ) -> Self
    where
        B: Body,
    {
        // The hot path: a usable token is one lock-free load away.
        let (state, used, replay) = match cache.header() {
            Some((header, id)) => {
                let (future, replay) = send(&mut inner, request, header, config.replay_limit);
                (State::First { future }, id, replay)
            }
            None => {
                let cache = cache.clone();
                let token: TokenFuture = Box::pin(async move { cache.token().await });
                let state = State::Token {
                    token,
                    request: Some(request),
                };
                (state, 0, None)
            }
        };
        Self {
            state,
            inner,
            reauth: Some(cache.reauth(used)),
            replay_limit: config.replay_limit,
            replay,
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

/// The future was polled after it completed.
fn gone() -> BoxError {
    Error::new(Kind::Config, "ResponseFuture polled after it completed").into()
}

/// `response` (a 401) with the reason it is handed back in its extensions.
fn unauthorized<RB>(mut response: Response<RB>, why: Unauthorized) -> Response<RB> {
    response.extensions_mut().insert(why);
    response
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
            match this.state.as_mut().project() {
                StateProj::Refused { error } => {
                    return Poll::Ready(Err(error.take().map_or_else(gone, BoxError::from)));
                }
                StateProj::Passed { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                StateProj::Token { token, request } => {
                    let token = ready!(token.as_mut().poll(cx))?;
                    let reauth = this.reauth.as_mut().ok_or_else(gone)?;
                    let request = request.take().ok_or_else(gone)?;
                    let header = token.header_value().clone();
                    let (future, replay) = send(this.inner, request, header, *this.replay_limit);
                    reauth.sent(&token);
                    *this.replay = replay;
                    this.state.set(State::First { future });
                }
                StateProj::First { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let reauth = this.reauth.as_mut().ok_or_else(gone)?;
                    if response.status() != StatusCode::UNAUTHORIZED {
                        reauth.accepted();
                        return Poll::Ready(Ok(response));
                    }
                    let again = this
                        .replay
                        .take()
                        .and_then(|(head, body)| again(head, &body));
                    match reauth.rejected(again.is_some()) {
                        Ok(token) => this.state.set(State::Replacement {
                            token,
                            waiting: again.map(|request| (response, request)),
                        }),
                        Err(why) => return Poll::Ready(Ok(unauthorized(response, why))),
                    }
                }
                StateProj::Replacement { token, waiting } => {
                    let result = ready!(token.as_mut().poll(cx));
                    let (rejected, mut request) = waiting.take().ok_or_else(gone)?;
                    let token = match result {
                        Ok(token) => token,
                        Err(why) => return Poll::Ready(Ok(unauthorized(rejected, why))),
                    };
                    // The 401 is not needed any more: drop it (and its body) before the replay.
                    drop(rejected);
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, token.header_value().clone());
                    this.reauth.as_mut().ok_or_else(gone)?.replaying(&token);
                    this.state.set(State::Ready {
                        request: Some(request),
                    });
                }
                StateProj::Ready { request } => {
                    ready!(this.inner.poll_ready(cx)).map_err(Into::into)?;
                    let request = request.take().ok_or_else(gone)?;
                    let future = this.inner.call(request);
                    this.state.set(State::Replayed { future });
                }
                StateProj::Replayed { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let reauth = this.reauth.as_mut().ok_or_else(gone)?;
                    if response.status() != StatusCode::UNAUTHORIZED {
                        reauth.accepted();
                        return Poll::Ready(Ok(response));
                    }
                    let why = reauth.rejected_again();
                    return Poll::Ready(Ok(unauthorized(response, why)));
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
            State::Passed { .. } => "passed through",
            State::Token { .. } => "waiting for a token",
            State::First { .. } => "sent",
            State::Replacement { .. } => "waiting for a new token after a 401",
            State::Ready { .. } => "waiting to replay",
            State::Replayed { .. } => "replayed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
