//! One accepted connection as hyper reads and writes it ([`Socket`]), and
//! its place under the connection limit ([`ConnectionSlot`]), which travels
//! in the extensions of each of its requests and lets the Engine.IO
//! websocket upgrade ask for its 101 answer to leave together with the
//! session's first frame.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// A connection's place under the server's connection limit, in the
/// extensions of each of its requests. The place is free again once every
/// copy is dropped (the connection's socket keeps one): when the connection
/// ends, or, for a websocket, when the upgraded socket is dropped.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(Arc<SlotShared>);

#[derive(Debug)]
struct SlotShared {
    _permit: OwnedSemaphorePermit,
    /// Whether the connection's socket holds back what is written to it
    /// ([`Socket`]): [`SENDING`], [`HOLDING`] or [`HELD_FLUSHED`].
    hold: AtomicU8,
}

/// Writes go out at once.
const SENDING: u8 = 0;
/// Writes are held back.
const HOLDING: u8 = 1;
/// Writes are held back and were flushed: the next write sends them.
const HELD_FLUSHED: u8 = 2;

impl ConnectionSlot {
    /// The connection's socket holds back what is written to it from now on
    /// (the 101 answer of a new websocket, which hyper writes and flushes)
    /// until the first write after a flush (the websocket's open packet):
    /// both go out in that one write — a system call and a TCP segment fewer
    /// per connect.
    pub(crate) fn hold_writes(&self) {
        self.0.hold.store(HOLDING, Ordering::Release);
    }

    /// The next write sends the held bytes and ends the hold, as after a
    /// flush (whoever took the upgraded socket over says so: it does not
    /// depend on hyper having flushed its answer).
    pub(crate) fn release_with_next_write(&self) {
        let _ = self.0.hold.compare_exchange(HOLDING, HELD_FLUSHED, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Bytes a socket holds back at most; past it, a write goes out at once
/// (with what was held before it). The 101 answer is about 200 bytes.
const HOLD_MAX: usize = 1024;

/// An accepted TCP connection, as hyper reads and writes it: the stream, and
/// the bytes held back while its slot says so ([`ConnectionSlot::hold_writes`]).
/// Held bytes always go out before anything written after them, and before
/// a shutdown; a flush while holding succeeds without sending them, and the
/// first write after it sends them and ends the hold.
/// (Small: it lives as long as the connection; the held bytes are boxed.)
pub struct Socket {
    tcp: TcpStream,
    slot: Arc<SlotShared>,
    /// Written while held and not sent yet.
    held: Option<Box<[u8]>>,
}

impl Socket {
    /// Wraps an accepted connection that holds `permit` (its place under the
    /// connection limit); the slot goes into each of its requests.
    pub fn new(tcp: TcpStream, permit: OwnedSemaphorePermit) -> (Socket, ConnectionSlot) {
        let shared = Arc::new(SlotShared { _permit: permit, hold: AtomicU8::new(SENDING) });
        (Socket { tcp, slot: shared.clone(), held: None }, ConnectionSlot(shared))
    }

    /// Whether a write of `len` bytes is to be held back; the first write
    /// after a flush of held bytes ends the hold.
    fn holds(&mut self, len: usize) -> bool {
        match self.slot.hold.load(Ordering::Acquire) {
            SENDING => false,
            HOLDING if self.held_len() + len <= HOLD_MAX => true,
            _ => {
                self.slot.hold.store(SENDING, Ordering::Release);
                false
            }
        }
    }

    fn held_len(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.len())
    }

    /// Adds `parts` to the held bytes (one allocation for all of them).
    fn hold_back<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) {
        let mut held = self.held.take().map(Vec::from).unwrap_or_default();
        for part in parts {
            held.extend_from_slice(part);
        }
        self.held = Some(held.into_boxed_slice());
    }

    /// Sends the held bytes, followed in the same write by as much of `buf`
    /// as the socket takes; ready with how many bytes of `buf` went out.
    fn poll_send_held(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        while let Some(held) = &mut self.held {
            let slices = [IoSlice::new(held), IoSlice::new(buf)];
            let n = std::task::ready!(Pin::new(&mut self.tcp).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n >= held.len() {
                let past = n - held.len();
                self.held = None;
                return Poll::Ready(Ok(past));
            }
            *held = held[n..].into();
        }
        Poll::Ready(Ok(0))
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holds(buf.len()) {
            this.hold_back([buf]);
            return Poll::Ready(Ok(buf.len()));
        }
        if this.held.is_some() {
            let n = std::task::ready!(this.poll_send_held(cx, buf))?;
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if this.holds(len) {
            this.hold_back(bufs.iter().map(|b| &b[..]));
            return Poll::Ready(Ok(len));
        }
        std::task::ready!(this.poll_send_held(cx, &[]))?;
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.slot.hold.load(Ordering::Acquire) {
            HOLDING => this.slot.hold.store(HELD_FLUSHED, Ordering::Release),
            HELD_FLUSHED => {}
            _ => {
                std::task::ready!(this.poll_send_held(cx, &[]))?;
            }
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_held(cx, &[]))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The server side of a loopback connection as [`Socket`], and its peer.
    async fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let permit = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().unwrap();
        let (socket, _slot) = Socket::new(accepted.unwrap().0, permit);
        (socket, client.unwrap())
    }

    fn hold(socket: &Socket) {
        ConnectionSlot(socket.slot.clone()).hold_writes();
    }

    async fn read_exactly(peer: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        peer.read_exact(&mut got).await.unwrap();
        got
    }

    /// The socket holds nothing and no longer holds writes back, and the
    /// peer received exactly `expected`.
    async fn assert_all_sent(socket: &Socket, peer: &mut TcpStream, expected: &[u8]) {
        assert!(socket.held.is_none(), "nothing left held");
        assert_eq!(socket.slot.hold.load(Ordering::Acquire), SENDING, "the hold ended");
        assert_eq!(read_exactly(peer, expected.len()).await, expected);
    }

    #[tokio::test]
    async fn held_bytes_go_out_ahead_of_the_first_write_after_a_flush() {
        let (mut socket, mut peer) = pair().await;
        socket.write_all(b"before ").await.unwrap();
        assert!(socket.held.is_none(), "nothing is held before hold_writes");
        hold(&socket);
        let parts = [IoSlice::new(b"HTTP/1.1 101 "), IoSlice::new(b"Switching\r\n\r\n")];
        assert_eq!(socket.write_vectored(&parts).await.unwrap(), 26, "held whole");
        socket.flush().await.unwrap();
        assert_eq!(
            socket.held.as_deref(),
            Some(&b"HTTP/1.1 101 Switching\r\n\r\n"[..]),
            "a flush while holding sends nothing"
        );
        socket.flush().await.unwrap();
        assert!(socket.held.is_some(), "nor does a second flush");
        socket.write_all(b"open").await.unwrap();
        assert!(socket.held.is_none(), "the first write after the flush took the held bytes along");
        assert_eq!(socket.slot.hold.load(Ordering::Acquire), SENDING, "and ended the hold");
        socket.write_all(b" next").await.unwrap();
        assert_all_sent(&socket, &mut peer, b"before HTTP/1.1 101 Switching\r\n\r\nopen next").await;
    }

    #[tokio::test]
    async fn a_release_sends_the_held_bytes_with_the_next_write_even_without_a_flush() {
        let (mut socket, mut peer) = pair().await;
        hold(&socket);
        socket.write_all(b"HTTP/1.1 101\r\n\r\n").await.unwrap();
        ConnectionSlot(socket.slot.clone()).release_with_next_write();
        socket.write_all(b"open").await.unwrap();
        assert_all_sent(&socket, &mut peer, b"HTTP/1.1 101\r\n\r\nopen").await;
    }

    #[tokio::test]
    async fn a_write_past_the_bound_goes_out_with_what_was_held() {
        let (mut socket, mut peer) = pair().await;
        hold(&socket);
        socket.write_all(b"head").await.unwrap();
        let big = vec![b'x'; HOLD_MAX];
        socket.write_all(&big).await.unwrap();
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&big);
        assert_all_sent(&socket, &mut peer, &expected).await;
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_held() {
        let (mut socket, mut peer) = pair().await;
        hold(&socket);
        socket.write_all(b"HTTP/1.1 101\r\n\r\n").await.unwrap();
        socket.flush().await.unwrap();
        socket.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 101\r\n\r\n");
    }
}
