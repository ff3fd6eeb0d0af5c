//! The response body of every route: one buffer (almost everything), or a
//! stream of chunks (Server-Sent Events). A stream's chunks come from a task
//! through a bounded channel, which the task can abort — hyper then drops
//! the connection instead of ending the response cleanly — and, once the task
//! says so ([`BodySender::go_live`]), also from a [`Source`] the body takes
//! from itself: hyper's connection task polls it, so a live chunk reaches the
//! socket with no other task woken on the way.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// One buffer (taken when sent).
    Full(Option<Bytes>),
    /// Chunks from a [`BodySender`], until it is dropped (the end) or aborts.
    Stream(StreamBody),
}

impl Default for Body {
    fn default() -> Self {
        Body::Full(None)
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::Full(Some(bytes))
    }
}

/// Chunks a streamed body takes itself, after its channel's (see
/// [`channel`]).
pub trait Source: Send + Sync + 'static {
    /// The next chunk, or `Pending` having arranged for `cx` to be woken
    /// when there is one. A source never ends the body: its sender does.
    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Bytes>;
}

/// The receiving end of a streamed body.
pub struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
    source: Option<Arc<dyn Source>>,
}

impl std::fmt::Debug for StreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBody").field("shared", &self.shared).finish_non_exhaustive()
    }
}

/// What a sender tells its body besides chunks.
#[derive(Debug, Default)]
struct Shared {
    aborted: AtomicBool,
    /// The body takes from its source too.
    live: AtomicBool,
    waker: AtomicWaker,
}

/// Feeds a streamed body (see [`channel`]).
#[derive(Debug, Clone)]
pub struct BodySender {
    tx: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

/// The client is gone: nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client is gone")]
pub struct Gone;

/// What hyper sees of an aborted body: the connection is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the response was aborted")]
pub struct Aborted;

/// A streamed body and its sender. At most `capacity` chunks wait to be
/// written: a sender that gets ahead of the client waits ([`BodySender::send`]).
/// Once the sender [goes live](BodySender::go_live), the body also takes
/// chunks from `source`: whatever waits in the channel first, then the
/// source's, then the channel's again.
pub fn channel(capacity: usize, source: Option<Arc<dyn Source>>) -> (BodySender, Body) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared::default());
    (BodySender { tx, shared: shared.clone() }, Body::Stream(StreamBody { rx, shared, source }))
}

impl BodySender {
    /// Queues `chunk`, waiting while `capacity` chunks are already queued.
    pub async fn send(&self, chunk: Bytes) -> Result<(), Gone> {
        self.tx.send(chunk).await.map_err(|_| Gone)
    }

    /// Ends the response abnormally: the connection is dropped (also while
    /// chunks still wait, e.g. for a client that stopped reading).
    pub fn abort(&self) {
        self.shared.aborted.store(true, Ordering::Release);
        self.shared.waker.wake();
    }

    /// From now on the body takes chunks from its source as well, after
    /// those already sent.
    pub fn go_live(&self) {
        self.shared.live.store(true, Ordering::Release);
        self.shared.waker.wake();
    }

    /// Resolves when the client is gone (the body was dropped).
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(stream) => {
                stream.shared.waker.register(cx.waker());
                if stream.shared.aborted.load(Ordering::Acquire) {
                    return Poll::Ready(Some(Err(Aborted)));
                }
                if let Poll::Ready(chunk) = stream.rx.poll_recv(cx) {
                    return Poll::Ready(chunk.map(|b| Ok(Frame::data(b))));
                }
                match &stream.source {
                    Some(source) if stream.shared.live.load(Ordering::Acquire) => {
                        source.poll_chunk(cx).map(|b| Some(Ok(Frame::data(b))))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    #[tokio::test]
    async fn a_full_body_is_one_frame_of_known_length() {
        let body = Body::from(Bytes::from_static(b"hello"));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert!(hyper::body::Body::is_end_stream(&Body::default()));
    }

    #[tokio::test]
    async fn a_stream_ends_when_its_sender_is_dropped_and_fails_when_aborted() {
        let (tx, body) = channel(2, None);
        let reader = tokio::spawn(body.collect());
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        tx.send(Bytes::from_static(b"b")).await.unwrap();
        drop(tx);
        assert_eq!(reader.await.unwrap().unwrap().to_bytes(), "ab");

        let (tx, mut body) = channel(1, None);
        tx.send(Bytes::from_static(b"waiting")).await.unwrap();
        tx.abort();
        let frame = body.frame().await;
        assert!(matches!(frame, Some(Err(Aborted))), "aborted even with a chunk waiting");
        drop(body);
        assert_eq!(tx.send(Bytes::new()).await, Err(Gone));
    }

    /// A source that hands out what was put in it, one chunk at a time.
    #[derive(Default)]
    struct Queue {
        chunks: std::sync::Mutex<std::collections::VecDeque<Bytes>>,
        waker: AtomicWaker,
    }

    impl Queue {
        fn put(&self, chunk: &'static str) {
            self.chunks.lock().unwrap().push_back(Bytes::from_static(chunk.as_bytes()));
            self.waker.wake();
        }
    }

    impl Source for Queue {
        fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Bytes> {
            self.waker.register(cx.waker());
            self.chunks.lock().unwrap().pop_front().map_or(Poll::Pending, Poll::Ready)
        }
    }

    #[tokio::test]
    async fn a_live_stream_takes_from_its_source_after_what_was_sent_first() {
        let source = Arc::new(Queue::default());
        let (tx, mut body) = channel(4, Some(source.clone()));
        source.put("live1");
        tx.send(Bytes::from_static(b"backlog")).await.unwrap();
        let next = |body: &mut Body| {
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            match Pin::new(body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => Some(frame.into_data().unwrap()),
                Poll::Ready(other) => panic!("unexpected {other:?}"),
                Poll::Pending => None,
            }
        };
        assert_eq!(next(&mut body).as_deref(), Some(&b"backlog"[..]));
        assert_eq!(next(&mut body), None, "the source is not taken from before the sender goes live");
        tx.go_live();
        assert_eq!(next(&mut body).as_deref(), Some(&b"live1"[..]));
        assert_eq!(next(&mut body), None, "a live stream waits on both");
        // The body wakes for either.
        let (got_tx, mut got) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let _ = got_tx.send(frame.unwrap().into_data().unwrap());
            }
        });
        source.put("live2");
        assert_eq!(got.recv().await.as_deref(), Some(&b"live2"[..]));
        tx.send(Bytes::from_static(b"keep-alive")).await.unwrap();
        assert_eq!(got.recv().await.as_deref(), Some(&b"keep-alive"[..]));
        source.put("never taken");
        drop(tx);
        assert_eq!(got.recv().await, None, "the sender ends the body, not the source");
    }
}
