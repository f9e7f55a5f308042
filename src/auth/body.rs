//! [`ReplayBody`]: the request body the inner service sees, which remembers what it sent
//! (up to a limit) so that a request rejected with 401 can be sent again.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Default replay limit: 64 KiB.
///
/// A request whose body is at most this large is kept (as shared `Bytes`, not copied when
/// the body is already `Bytes`) while it is sent, so it can be replayed after a 401; a
/// larger one streams through unrecorded and its 401 goes back to the caller. 64 KiB is
/// linkerd's limit for the same purpose; Docplanner request bodies (a booking, a slot
/// list) are a few KiB.
///
/// The body is recorded as the inner service reads it: a request is replayed only if its
/// whole body was read before the 401 came back, as an HTTP client does (hyper writes the
/// body before the answer arrives). An inner service that answers 401 without reading the
/// body (an in-process mock, a server answering HTTP/2 early) gets its 401 back with
/// [`Unauthorized::NotReplayable`](crate::Unauthorized::NotReplayable).
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

pin_project! {
    /// The request body handed to the inner service of [`BearerAuth`](crate::BearerAuth).
    ///
    /// It yields the caller's body unchanged (as [`Bytes`] chunks) and records it, up to
    /// the replay limit, so that the request can be sent once more after a 401. The inner
    /// service's request body type is therefore `ReplayBody<B>`; hyper-util's client infers
    /// it, and any service generic over its body accepts it.
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Empty,
        Streaming {
            #[pin]
            body: B,
            // None: too large to record.
            tape: Option<SharedTape>,
        },
        Replaying {
            chunks: VecDeque<Bytes>,
            // Boxed: trailers are rare, and the body is moved with every request.
            trailers: Option<Box<HeaderMap>>,
        },
    }
}

/// What a streaming body has sent so far.
#[derive(Debug, Default)]
pub(crate) struct Tape {
    /// The first chunk, then any more: most bodies are one chunk, which then needs no
    /// list of its own (one allocation per request less, see `benches/allocations.rs`).
    first: Option<Bytes>,
    more: Vec<Bytes>,
    size: usize,
    limit: usize,
    /// The body's length when known (exact size hint or `Content-Length`): hyper stops
    /// polling a body once that many bytes are written, without a final `None`.
    expected: Option<u64>,
    trailers: Option<HeaderMap>,
    state: TapeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum TapeState {
    #[default]
    Recording,
    Complete,
    /// Larger than the limit, or the body failed: cannot be replayed.
    Lost,
}

/// The means to replay a request body, kept by the response future.
#[derive(Debug)]
pub(crate) enum Replay {
    Empty,
    Tape(SharedTape),
}

/// A tape shared by the body being sent (which records into it) and the response future
/// (which replays from it).
#[derive(Debug, Clone)]
pub(crate) struct SharedTape(Arc<Mutex<Tape>>);

impl SharedTape {
    fn new(limit: usize, expected: Option<u64>) -> Self {
        Self(Arc::new(Mutex::new(Tape {
            limit,
            expected,
            ..Tape::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Tape> {
        // A tape is consistent after a panic (every update is a plain assignment).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<B> ReplayBody<B> {
    /// Wrap `body`, recording it up to `limit` bytes; `content_length` is the request's
    /// `Content-Length` header, if any. Returns the body to send and, when the body may be
    /// replayable, the means to replay it.
    pub(crate) fn new(body: B, limit: usize, content_length: Option<u64>) -> (Self, Option<Replay>)
    where
        B: Body,
    {
        if body.is_end_stream() {
            return (Self::empty(), Some(Replay::Empty));
        }
        if body.size_hint().lower() > limit as u64 {
            let kind = Kind::Streaming { body, tape: None };
            return (Self { kind }, None);
        }
        let tape = SharedTape::new(limit, body.size_hint().exact().or(content_length));
        let kind = Kind::Streaming {
            body,
            tape: Some(tape.clone()),
        };
        (Self { kind }, Some(Replay::Tape(tape)))
    }

    /// Wrap `body` without recording it (a request that is never replayed).
    pub(crate) fn unrecorded(body: B) -> Self {
        Self {
            kind: Kind::Streaming { body, tape: None },
        }
    }

    fn empty() -> Self {
        Self { kind: Kind::Empty }
    }
}

impl Replay {
    /// The body to send again, if all of it was recorded.
    pub(crate) fn body<B>(&self) -> Option<ReplayBody<B>> {
        match self {
            Replay::Empty => Some(ReplayBody::empty()),
            Replay::Tape(tape) => {
                let tape = tape.lock();
                (tape.state == TapeState::Complete).then(|| ReplayBody {
                    kind: Kind::Replaying {
                        chunks: tape.first.iter().chain(&tape.more).cloned().collect(),
                        trailers: tape.trailers.clone().map(Box::new),
                    },
                })
            }
        }
    }
}

impl Tape {
    fn record(&mut self, frame: &Frame<Bytes>) {
        if self.state != TapeState::Recording {
            return;
        }
        if let Some(data) = frame.data_ref() {
            self.size = self.size.saturating_add(data.len());
            if self.size > self.limit {
                self.lose();
            } else {
                if self.first.is_none() {
                    self.first = Some(data.clone());
                } else {
                    self.more.push(data.clone());
                }
                if self.expected == Some(self.size as u64) {
                    self.finish();
                }
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            // Trailers are the last frame: hyper polls no further.
            self.trailers = Some(trailers.clone());
            self.finish();
        }
    }

    fn lose(&mut self) {
        self.state = TapeState::Lost;
        self.first = None;
        self.more = Vec::new();
        self.trailers = None;
    }

    fn finish(&mut self) {
        if self.state == TapeState::Recording {
            self.state = TapeState::Complete;
        }
    }
}

fn with_tape(tape: &Option<SharedTape>, f: impl FnOnce(&mut Tape)) {
    if let Some(tape) = tape {
        f(&mut tape.lock());
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Streaming { mut body, tape } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                match frame {
                    Some(Ok(frame)) => {
                        let frame = frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
                        // hyper stops polling once `is_end_stream` says so: the end of the
                        // body may come without a final `None`.
                        let ended = body.is_end_stream();
                        with_tape(tape, |t| {
                            t.record(&frame);
                            if ended {
                                t.finish();
                            }
                        });
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(error)) => {
                        with_tape(tape, Tape::lose);
                        Poll::Ready(Some(Err(error)))
                    }
                    None => {
                        with_tape(tape, Tape::finish);
                        Poll::Ready(None)
                    }
                }
            }
            KindProj::Replaying { chunks, trailers } => {
                if let Some(chunk) = chunks.pop_front() {
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                } else if let Some(trailers) = trailers.take() {
                    Poll::Ready(Some(Ok(Frame::trailers(*trailers))))
                } else {
                    Poll::Ready(None)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Streaming { body, .. } => body.is_end_stream(),
            Kind::Replaying { chunks, trailers } => chunks.is_empty() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Streaming { body, .. } => body.size_hint(),
            Kind::Replaying { chunks, .. } => {
                SizeHint::with_exact(chunks.iter().map(|c| c.len() as u64).sum())
            }
        }
    }
}

impl<B> From<Bytes> for ReplayBody<B> {
    /// A body of these bytes (replayable as it is).
    fn from(bytes: Bytes) -> Self {
        let chunks = if bytes.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([bytes])
        };
        Self {
            kind: Kind::Replaying {
                chunks,
                trailers: None,
            },
        }
    }
}

impl<B> Default for ReplayBody<B> {
    /// An empty body.
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Streaming { tape: Some(_), .. } => "streaming (recorded)",
            Kind::Streaming { tape: None, .. } => "streaming (not recorded)",
            Kind::Replaying { .. } => "replaying",
        };
        f.debug_struct("ReplayBody").field("kind", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};

    async fn collect<B: Body<Data = Bytes>>(body: B) -> Vec<u8>
    where
        B::Error: fmt::Debug,
    {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn empty_and_full_replay() {
        let (body, replay) = ReplayBody::new(Empty::<Bytes>::new(), 10, None);
        assert!(body.is_end_stream());
        assert!(replay
            .unwrap()
            .body::<Empty<Bytes>>()
            .unwrap()
            .is_end_stream());

        let (body, replay) = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 10, None);
        let replay = replay.unwrap();
        assert!(replay.body::<Full<Bytes>>().is_none(), "not sent yet");
        assert_eq!(collect(body).await, b"hello");
        let again = replay.body::<Full<Bytes>>().unwrap();
        assert_eq!(again.size_hint().exact(), Some(5));
        assert_eq!(collect(again).await, b"hello");
    }

    #[tokio::test]
    async fn streams_up_to_the_limit_with_trailers() {
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::trailers(HeaderMap::new())),
        ];
        let stream = StreamBody::new(futures_util::stream::iter(frames));
        let (body, replay) = ReplayBody::new(stream, 4, None);
        assert_eq!(collect(body).await, b"abcd");
        let again = replay.unwrap().body::<Full<Bytes>>().unwrap();
        let collected = again.collect().await.unwrap();
        assert!(collected.trailers().is_some());
        assert_eq!(collected.to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn too_large_is_not_replayable() {
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"def"))),
        ];
        let stream = StreamBody::new(futures_util::stream::iter(frames));
        let (body, replay) = ReplayBody::new(stream, 4, None);
        assert_eq!(collect(body).await, b"abcdef");
        assert!(replay.unwrap().body::<Full<Bytes>>().is_none());

        // known to be too large up front: not even recorded
        let (_, replay) = ReplayBody::new(Full::new(Bytes::from_static(b"abcdef")), 4, None);
        assert!(replay.is_none());
    }

    /// hyper stops polling after the announced length or after trailers: the tape must be
    /// complete then, without a final `None`.
    #[tokio::test]
    async fn complete_at_the_announced_length_or_after_trailers() {
        let frames = || {
            vec![
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::data(Bytes::from_static(b"cd"))),
                Ok(Frame::trailers(HeaderMap::new())),
            ]
        };
        let (mut body, replay) = ReplayBody::new(
            StreamBody::new(futures_util::stream::iter(frames())),
            100,
            Some(4),
        );
        body.frame().await.unwrap().unwrap();
        let replay = replay.unwrap();
        assert!(replay.body::<Full<Bytes>>().is_none());
        body.frame().await.unwrap().unwrap();
        assert!(
            replay.body::<Full<Bytes>>().is_some(),
            "4 of 4 announced bytes"
        );
        drop(body);
        assert_eq!(
            collect(replay.body::<Full<Bytes>>().unwrap()).await,
            b"abcd"
        );

        let (mut body, replay) = ReplayBody::new(
            StreamBody::new(futures_util::stream::iter(frames())),
            100,
            None,
        );
        for _ in 0..3 {
            body.frame().await.unwrap().unwrap();
        }
        drop(body);
        assert!(
            replay.unwrap().body::<Full<Bytes>>().is_some(),
            "trailers end the body"
        );
    }

    /// `From<Bytes>` is how a token request reaches a shared HTTP client whose body type is
    /// `ReplayBody<_>`: the bytes, whole, with their exact length.
    #[tokio::test]
    async fn from_bytes_is_those_bytes() {
        let body = ReplayBody::<Empty<Bytes>>::from(Bytes::from_static(b"grant_type=x"));
        assert_eq!(body.size_hint().exact(), Some(12));
        assert!(!body.is_end_stream());
        assert_eq!(collect(body).await, b"grant_type=x");
        let empty = ReplayBody::<Empty<Bytes>>::from(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    /// A public type: its Debug says which kind of body it is, never a byte of it.
    #[tokio::test]
    async fn debug_says_the_kind_and_no_byte() {
        let full = || Full::new(Bytes::from_static(b"s3cr3t"));
        let (recorded, replay) = ReplayBody::new(full(), 10, None);
        let (unrecorded, _) = ReplayBody::new(full(), 2, None);
        let (empty, _) = ReplayBody::new(Empty::<Bytes>::new(), 10, None);
        let mut shown = vec![
            format!("{recorded:?}"),
            format!("{unrecorded:?}"),
            format!("{empty:?}"),
        ];
        assert_eq!(collect(recorded).await, b"s3cr3t");
        let again = replay.unwrap().body::<Full<Bytes>>().unwrap();
        shown.push(format!("{again:?}"));
        assert_eq!(
            shown,
            [
                r#"ReplayBody { kind: "streaming (recorded)" }"#,
                r#"ReplayBody { kind: "streaming (not recorded)" }"#,
                r#"ReplayBody { kind: "empty" }"#,
                r#"ReplayBody { kind: "replaying" }"#,
            ]
        );
    }

    #[tokio::test]
    async fn partly_sent_is_not_replayable() {
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ];
        let stream = StreamBody::new(futures_util::stream::iter(frames));
        let (mut body, replay) = ReplayBody::new(stream, 100, None);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        drop(body);
        assert!(replay.unwrap().body::<Full<Bytes>>().is_none());
    }
}
