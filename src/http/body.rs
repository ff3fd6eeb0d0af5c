//! The response body of every route: one buffer (almost everything), or a
//! stream of chunks a task feeds through a bounded channel (Server-Sent
//! Events), which the task can abort — hyper then drops the connection
//! instead of ending the response cleanly.

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

/// The receiving end of a streamed body.
#[derive(Debug)]
pub struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
    abort: Arc<Abort>,
}

#[derive(Debug, Default)]
struct Abort {
    aborted: AtomicBool,
    waker: AtomicWaker,
}

/// Feeds a streamed body (see [`channel`]).
#[derive(Debug, Clone)]
pub struct BodySender {
    tx: mpsc::Sender<Bytes>,
    abort: Arc<Abort>,
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
pub fn channel(capacity: usize) -> (BodySender, Body) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let abort = Arc::new(Abort::default());
    (BodySender { tx, abort: abort.clone() }, Body::Stream(StreamBody { rx, abort }))
}

impl BodySender {
    /// Queues `chunk`, waiting while `capacity` chunks are already queued.
    pub async fn send(&self, chunk: Bytes) -> Result<(), Gone> {
        self.tx.send(chunk).await.map_err(|_| Gone)
    }

    /// Ends the response abnormally: the connection is dropped (also while
    /// chunks still wait, e.g. for a client that stopped reading).
    pub fn abort(&self) {
        self.abort.aborted.store(true, Ordering::Release);
        self.abort.waker.wake();
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
                stream.abort.waker.register(cx.waker());
                if stream.abort.aborted.load(Ordering::Acquire) {
                    return Poll::Ready(Some(Err(Aborted)));
                }
                stream.rx.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
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

    #[tokio::test]
    async fn a_full_body_is_one_frame_of_known_length() {
        let body = Body::from(Bytes::from_static(b"hello"));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert!(hyper::body::Body::is_end_stream(&Body::default()));
    }

    #[tokio::test]
    async fn a_stream_ends_when_its_sender_is_dropped_and_fails_when_aborted() {
        let (tx, body) = channel(2);
        let reader = tokio::spawn(body.collect());
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        tx.send(Bytes::from_static(b"b")).await.unwrap();
        drop(tx);
        assert_eq!(reader.await.unwrap().unwrap().to_bytes(), "ab");

        let (tx, mut body) = channel(1);
        tx.send(Bytes::from_static(b"waiting")).await.unwrap();
        tx.abort();
        let frame = body.frame().await;
        assert!(matches!(frame, Some(Err(Aborted))), "aborted even with a chunk waiting");
        drop(body);
        assert_eq!(tx.send(Bytes::new()).await, Err(Gone));
    }
}
