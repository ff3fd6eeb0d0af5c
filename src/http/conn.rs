//! One accepted connection as hyper reads and writes it ([`Socket`]), and
//! its place under the connection limit ([`ConnectionSlot`]), which travels
//! in the extensions of each of its upgrade requests and lets the Engine.IO
//! websocket upgrade ask for its 101 answer to leave together with the
//! session's first frame.
//!
//! # Writes past hyper
//!
//! The socket shares its stream (`Arc<TcpStream>`, read and written through
//! `&TcpStream`), and the slot keeps a weak copy for
//! [`ConnectionSlot::write_past`]: an event stream's record chunk, or a
//! quiet websocket's broadcast frame (`engine::conn`), written at once
//! while whoever writes the socket (hyper, the websocket's task) has written
//! everything it had — the socket's last write went out whole and it holds
//! nothing back. The rest of such a write that the kernel took only in part
//! waits in the slot; the socket sends it before its next bytes (its writer
//! flushes the socket when woken), so nothing interleaves.
//!
//! # Small writes in parts
//!
//! hyper writes vectored: a chunk of a streamed body as its size line, the
//! chunk and a CRLF; a head and a short body side by side. A [`Socket`] joins
//! a write in parts of at most [`JOIN_MAX`] bytes into one buffer and sends
//! it with a plain `send`, which costs the kernel less than `writev` does
//! (an event stream's record: 0.87 of the CPU per delivery, measured with
//! `bench/run.sh --compare`). Larger writes stay vectored, without a copy.
//!
//! # Lingering close
//!
//! hyper ends a connection while its client may still be sending: after an
//! answer given without reading the whole request body (413 over the body
//! limit, 401 before the body, ...: hyper reads what is at hand once, then
//! gives up on the rest), and after its own answer to a head it refuses
//! (431 over the size limit, 400, 414). It then shuts the socket's write side
//! down (a FIN after the answer) and drops it. (A head that times out gets
//! no answer and no shutdown: that connection is dropped and closes at once.)
//!
//! Closing a TCP socket with unread bytes, or receiving bytes after the
//! close, makes the kernel send a reset, and a client still writing its body
//! (Node's `http`, a raw socket: anything that writes the whole request
//! before reading) then fails with `EPIPE`/`ECONNRESET` and never reads the
//! answer that is waiting for it.
//!
//! So, as nginx's `lingering_close`: a [`Socket`] that hyper shut down while
//! its peer had not closed its side is not closed when dropped; a task keeps
//! reading and discarding what the peer still sends until the peer closes
//! (it got the FIN after the answer, so it does once its request is out),
//! or [`LINGER_BYTES`] were discarded, or [`LINGER_TIME`] passed, whichever
//! comes first, and closes it then.
//!
//! - It costs nothing on the usual paths: a connection whose peer closed first
//!   (a keep-alive client going away) skips even the shutdown system call (the
//!   close sends the FIN, nothing being unread), and an upgraded websocket is
//!   never shut down this way (hyper hands it over instead, and the websocket
//!   code drops it after its own close handshake), so it closes as before.
//! - A connection the server ends after a complete request (the client asked
//!   for `Connection: close`; shutdown ending an idle keep-alive connection)
//!   lingers too, as the socket cannot tell it apart, until the client closes
//!   on the FIN: a task, a read and a wake-up more than a plain close.
//! - A lingering connection keeps its place under the connection limit (it
//!   keeps its file descriptor): their number is bounded by the limit.
//! - The task is not tracked by the server's shutdown: the process does not
//!   wait for it, and the runtime drops it (closing the socket) on exit.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// A connection's place under the server's connection limit, in the
/// extensions of each of its upgrade requests. The place is free again once every
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
    /// The connection's stream, while its [`Socket`] lives (not kept open by
    /// the slot).
    tcp: Weak<TcpStream>,
    /// The socket's last write did not go out whole (hyper still holds
    /// bytes of it), or the socket holds bytes back: nothing may be written
    /// past it ([`ConnectionSlot::write_past`]).
    blocked: AtomicBool,
    /// The rest of a write past the socket that the kernel took only in
    /// part: the socket sends it before anything else.
    rest: Mutex<Option<Box<[u8]>>>,
    /// Whether `rest` holds bytes (read without the lock on every write).
    has_rest: AtomicBool,
}

/// Whether this thread runs a single-threaded runtime: the only one where
/// writes past a connection's task are used (there they cost what the
/// task's would, minus its wake-up; with several threads the tasks write
/// in parallel, and a broadcast writing under a room's lock would make
/// other threads wait).
pub(crate) fn single_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|rt| rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// What [`ConnectionSlot::write_past`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrittenPast {
    /// All of it is on the wire.
    Whole,
    /// Part of it is on the wire; the socket sends the rest before its own
    /// next bytes, at its next write or flush: wake whoever drives it.
    Part,
    /// Nothing was written (hyper has unwritten bytes, the rest of an earlier
    /// write is still waiting, the socket's buffer is full, or it failed):
    /// send it the usual way.
    Not,
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

    /// Whether the rest of a write past the socket waits in it: whoever
    /// drives the socket flushes it.
    pub(crate) fn has_rest(&self) -> bool {
        self.0.has_rest.load(Ordering::Acquire)
    }

    /// Writes `bytes` to the connection at once, with one non-blocking
    /// write past whoever writes the socket (hyper, or an upgraded
    /// websocket's task), when nothing written through the socket is still
    /// unwritten (its last write went out whole, and it holds nothing
    /// back). The caller keeps the bytes whole units of what the writer
    /// would have written (an SSE chunk, framed as hyper frames one; a
    /// websocket frame) and writes only while the writer has nothing of its
    /// own to write (the body hyper polls is idle; the websocket task has
    /// written its queue).
    pub(crate) fn write_past(&self, bytes: &[u8]) -> WrittenPast {
        let shared = &self.0;
        if shared.blocked.load(Ordering::Acquire) || shared.has_rest.load(Ordering::Acquire) {
            return WrittenPast::Not;
        }
        let Some(tcp) = shared.tcp.upgrade() else { return WrittenPast::Not };
        match tcp.try_write(bytes) {
            Ok(n) if n == bytes.len() => WrittenPast::Whole,
            Ok(n) if n > 0 => {
                *shared.rest.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes[n..].into());
                shared.has_rest.store(true, Ordering::Release);
                WrittenPast::Part
            }
            _ => WrittenPast::Not,
        }
    }
}

/// Bytes a socket holds back at most; past it, a write goes out at once
/// (with what was held before it). The 101 answer is about 200 bytes.
const HOLD_MAX: usize = 1024;

/// How long a connection shut down while its peer was still sending keeps
/// reading (and discarding) what the peer sends, at most; then it is closed,
/// and whatever the peer sends after that gets a reset. Long enough for a
/// client to finish writing a body of several MiB and read the answer.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Bytes such a connection reads and discards at most; past them it is
/// closed at once (a client that keeps sending is not waited for), with a
/// reset if it sends on.
pub const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Bytes read by one system call while lingering (on the stack of the
/// lingering task's poll, not kept in it).
const LINGER_READ: usize = 16 * 1024;

/// What a [`Socket`] saw of the end of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both sides open, as far as the socket knows.
    Open,
    /// The peer closed its side (a read returned end of stream) or the
    /// connection failed: nothing more will come from it.
    PeerDone,
    /// The write side was shut down while the peer had not closed: the peer
    /// may still be sending, so a drop lingers.
    ShutDown,
}

/// An accepted TCP connection, as hyper reads and writes it: the stream, and
/// the bytes held back while its slot says so ([`ConnectionSlot::hold_writes`]).
/// Held bytes always go out before anything written after them, and before
/// a shutdown; a flush while holding succeeds without sending them, and the
/// first write after it sends them and ends the hold. Dropped after a
/// shutdown while the peer may still be sending, it lingers (see the
/// [module docs](self)).
/// (Small: it lives as long as the connection; the held bytes are boxed.)
pub struct Socket {
    /// Always there, but taken by the lingering task when dropped. Shared
    /// (reads and writes go through `&TcpStream`): writes past the socket
    /// go through the slot's weak copy ([`ConnectionSlot::write_past`]).
    tcp: Option<Arc<TcpStream>>,
    slot: Arc<SlotShared>,
    /// Written while held and not sent yet.
    held: Option<Box<[u8]>>,
    end: End,
}

/// The largest write in parts that is joined into one buffer and sent with
/// one plain `send` (see [`Socket::poll_write_vectored`]); larger ones are
/// written vectored, without a copy.
const JOIN_MAX: usize = 2048;

thread_local! {
    /// Where a small write in parts is joined; its capacity stays
    /// [`JOIN_MAX`] at most, one per runtime thread.
    static JOINED: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(JOIN_MAX));
}

/// The error of a socket whose stream is gone (only after its drop began,
/// so nothing sees it in practice).
fn gone() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

impl Socket {
    /// Wraps an accepted connection that holds `permit` (its place under the
    /// connection limit); the slot goes into each of its requests.
    pub fn new(tcp: TcpStream, permit: OwnedSemaphorePermit) -> (Socket, ConnectionSlot) {
        let tcp = Arc::new(tcp);
        let shared = Arc::new(SlotShared {
            _permit: permit,
            hold: AtomicU8::new(SENDING),
            tcp: Arc::downgrade(&tcp),
            blocked: AtomicBool::new(false),
            rest: Mutex::new(None),
            has_rest: AtomicBool::new(false),
        });
        (Socket { tcp: Some(tcp), slot: shared.clone(), held: None, end: End::Open }, ConnectionSlot(shared))
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

    /// Puts the rest of a write past the socket ([`ConnectionSlot::write_past`])
    /// ahead of what the socket holds: it goes out first.
    fn take_rest(&mut self) {
        if !self.slot.has_rest.load(Ordering::Acquire) {
            return;
        }
        let rest = self.slot.rest.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.slot.has_rest.store(false, Ordering::Release);
        if let Some(rest) = rest {
            let mut held = Vec::from(rest);
            held.extend_from_slice(self.held.as_deref().unwrap_or_default());
            self.held = Some(held.into_boxed_slice());
        }
    }

    /// Records whether a write went out whole (`offered` bytes, `result`):
    /// nothing is written past the socket while it did not, or while the
    /// socket holds bytes.
    fn settle(&self, offered: usize, result: &Poll<io::Result<usize>>) {
        let whole = matches!(result, Poll::Ready(Ok(n)) if *n >= offered);
        self.slot.blocked.store(!whole || self.held.is_some(), Ordering::Release);
    }

    /// A write: held back, or sent after what is held.
    fn start_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.holds(buf.len()) {
            self.hold_back([buf]);
            return Poll::Ready(Ok(buf.len()));
        }
        if self.held.is_some() {
            let n = std::task::ready!(self.poll_send_held(cx, buf))?;
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
        }
        poll_write_with(self.tcp.as_deref().ok_or_else(gone)?, cx, buf.len(), |tcp| tcp.try_write(buf))
    }

    /// A write in parts: held back, or sent after what is held (joined
    /// into one buffer when small).
    fn start_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.holds(len) {
            self.hold_back(bufs.iter().map(|b| &b[..]));
            return Poll::Ready(Ok(len));
        }
        std::task::ready!(self.poll_send_held(cx, &[]))?;
        let tcp = self.tcp.as_deref().ok_or_else(gone)?;
        if bufs.len() > 1 && len <= JOIN_MAX {
            // A small write in parts (a chunk's size line, the chunk and its
            // CRLF; a head and a short body) goes out as one plain `send`:
            // copying a few hundred bytes costs less than the kernel's
            // vectored-write path (file-position lock, iovec import).
            return JOINED.with_borrow_mut(|joined| {
                joined.clear();
                for buf in bufs {
                    joined.extend_from_slice(buf);
                }
                poll_write_with(tcp, cx, joined.len(), |tcp| tcp.try_write(joined))
            });
        }
        poll_write_with(tcp, cx, len, |tcp| tcp.try_write_vectored(bufs))
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
            let tcp = self.tcp.as_deref().ok_or_else(gone)?;
            let slices = [IoSlice::new(held), IoSlice::new(buf)];
            let n = std::task::ready!(
                poll_write_with(tcp, cx, held.len() + buf.len(), |tcp| tcp.try_write_vectored(&slices))
            )?;
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
        let this = self.get_mut();
        let tcp = this.tcp.as_deref().ok_or_else(gone)?;
        let (before, room) = (buf.filled().len(), buf.remaining() > 0);
        let read = std::task::ready!(poll_read_into(tcp, cx, buf));
        // End of stream (nothing read into room for it), or a failed
        // connection: the peer sends nothing more, nothing to linger for.
        if read.is_err() || (room && buf.filled().len() == before) {
            this.end = End::PeerDone;
        }
        Poll::Ready(read)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_rest();
        let result = this.start_write(cx, buf);
        this.settle(buf.len(), &result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_rest();
        let result = this.start_write_vectored(cx, bufs);
        this.settle(bufs.iter().map(|b| b.len()).sum(), &result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_rest();
        match this.slot.hold.load(Ordering::Acquire) {
            HOLDING => this.slot.hold.store(HELD_FLUSHED, Ordering::Release),
            HELD_FLUSHED => {}
            _ => {
                // hyper flushes the socket once its own buffer is empty:
                // with what is held sent, nothing is unwritten.
                let sent = this.poll_send_held(cx, &[]);
                this.slot.blocked.store(this.held.is_some(), Ordering::Release);
                std::task::ready!(sent)?;
            }
        }
        // A TCP stream buffers nothing of its own.
        Poll::Ready(Ok(()))
    }

    /// Sends what is held, then the FIN — unless the peer closed its side
    /// already: then the close in the drop sends the FIN (nothing is left
    /// unread), and the shutdown would be a system call for nothing.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_rest();
        std::task::ready!(this.poll_send_held(cx, &[]))?;
        if this.end == End::PeerDone {
            return Poll::Ready(Ok(()));
        }
        let tcp = this.tcp.as_deref().ok_or_else(gone)?;
        socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write)?;
        this.end = End::ShutDown;
        Poll::Ready(Ok(()))
    }
}

impl Drop for Socket {
    /// Closes the connection, or, when it was shut down while the peer may
    /// still be sending, hands it to a lingering task (which keeps its place
    /// under the connection limit). Outside a runtime (it is shutting down)
    /// the connection is closed at once.
    fn drop(&mut self) {
        if self.end != End::ShutDown {
            return;
        }
        if let (Some(tcp), Ok(runtime)) = (self.tcp.take(), tokio::runtime::Handle::try_current()) {
            // Not tracked: shutdown does not wait for it (the runtime drops it).
            runtime.spawn(linger(tcp, self.slot.clone()));
        }
    }
}

/// Reads and discards what the peer of a shut-down connection still sends,
/// until it closes, or [`LINGER_BYTES`] or [`LINGER_TIME`] are reached; the
/// connection is closed, and its place under the limit freed, when this ends.
async fn linger(tcp: Arc<TcpStream>, slot: Arc<SlotShared>) {
    let mut left = LINGER_BYTES;
    let discard = async {
        while left > 0 {
            if tcp.readable().await.is_err() || !discard_ready(&tcp, &mut left) {
                return;
            }
        }
    };
    // Bound hit (time or bytes): the connection closes, with a reset if the
    // peer sends on.
    let _ = tokio::time::timeout(LINGER_TIME, discard).await;
    drop(tcp);
    drop(slot);
}

/// Reads from `tcp` into `buf` once it is readable: `TcpStream`'s own
/// `poll_read`, through a shared reference.
///
/// As there, a read that fills less than the room it had clears the
/// readiness (the kernel had no more): the next poll registers for the next
/// event instead of trying a read that would find nothing.
fn poll_read_into(tcp: &TcpStream, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    loop {
        std::task::ready!(tcp.poll_read_ready(cx))?;
        let room = buf.remaining();
        let mut got = 0;
        // A short read answers `WouldBlock` to `try_io`, which clears the
        // readiness (of the event it began with only: a newer one stays).
        let read = tcp.try_io(Interest::READABLE, || {
            got = tcp.try_read_buf(buf)?;
            if got > 0 && got < room { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got == 0 => {}
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
            _ => return Poll::Ready(Ok(())),
        }
    }
}

/// Writes with `write` (a `try_write` of `tcp` of `len` bytes) once `tcp` is
/// writable: `TcpStream`'s own `poll_write`, through a shared reference (a
/// partial write clears the readiness, as a short read does).
fn poll_write_with(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    len: usize,
    mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        std::task::ready!(tcp.poll_write_ready(cx))?;
        let mut put = 0;
        let written = tcp.try_io(Interest::WRITABLE, || {
            put = write(tcp)?;
            if put > 0 && put < len { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(put) }
        });
        match written {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && put == 0 => {}
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
            _ => return Poll::Ready(Ok(put)),
        }
    }
}

/// Reads and discards what is at hand, at most `left` bytes more (counted
/// down). False when the lingering is over: the peer closed, the connection
/// failed, or the bound was reached.
fn discard_ready(tcp: &TcpStream, left: &mut usize) -> bool {
    let mut buf = [0u8; LINGER_READ];
    while *left > 0 {
        match tcp.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => *left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

    /// The server side of a loopback connection as [`Socket`], and its peer.
    async fn pair() -> (Socket, TcpStream) {
        let (socket, peer, _limit) = pair_under_limit().await;
        (socket, peer)
    }

    /// [`pair`], and the connection limit of one its socket holds the place of.
    async fn pair_under_limit() -> (Socket, TcpStream, Arc<Semaphore>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let limit = Arc::new(Semaphore::new(1));
        let permit = limit.clone().try_acquire_owned().unwrap();
        let (socket, _slot) = Socket::new(accepted.unwrap().0, permit);
        (socket, client.unwrap(), limit)
    }

    /// Waits (a guard against hangs, not a timing assertion) until the place
    /// under the limit is free again: the connection is closed.
    async fn place_freed(limit: &Semaphore) {
        let freed = tokio::time::timeout(Duration::from_secs(30), limit.acquire()).await;
        assert!(freed.is_ok(), "the connection was closed and its place freed");
    }

    /// The answer a server gives before giving up on the rest of a request.
    const ANSWER: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";

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
    async fn writes_past_the_socket_keep_their_order_with_its_own_even_cut_short() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut peer, limit) = (client.unwrap(), Arc::new(Semaphore::new(1)));
        let (mut socket, slot) = Socket::new(accepted.unwrap().0, limit.try_acquire_owned().unwrap());
        // The socket's own write went out whole: a write past it may go.
        socket.write_all(b"head|").await.unwrap();
        assert_eq!(slot.write_past(b"past|"), WrittenPast::Whole);
        // The peer reads nothing: writes past the socket fill its buffers
        // until one is taken in part (or not at all).
        let unit = vec![b'x'; 1000];
        let mut expected = b"head|past|".to_vec();
        let outcome = loop {
            match slot.write_past(&unit) {
                WrittenPast::Whole => expected.extend_from_slice(&unit),
                other => break other,
            }
            assert!(expected.len() < 256 * 1024 * 1024, "the buffers filled");
        };
        if outcome == WrittenPast::Part {
            // The rest waits for the socket's next bytes, nothing more goes
            // past it meanwhile.
            expected.extend_from_slice(&unit);
            assert_eq!(slot.write_past(b"never"), WrittenPast::Not);
        }
        // The socket's next write sends the rest first, then its own bytes.
        let reader = tokio::spawn(async move {
            let mut got = vec![0; expected.len() + 5];
            peer.read_exact(&mut got).await.unwrap();
            assert_eq!(got[..expected.len()], expected[..], "the rest first");
            assert_eq!(&got[expected.len()..], b"|tail");
        });
        socket.write_all(b"|tail").await.unwrap();
        socket.flush().await.unwrap();
        reader.await.unwrap();
        // All out: writes past it may go again.
        assert_eq!(slot.write_past(b"again"), WrittenPast::Whole);
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
    async fn writes_in_parts_arrive_whole_and_in_order_joined_or_vectored() {
        let (mut socket, mut peer) = pair().await;
        let mut expected = Vec::new();
        // Small (joined into one send), at the bound, and past it (vectored).
        for size in [3, JOIN_MAX, JOIN_MAX + 1] {
            let parts: Vec<Vec<u8>> =
                (0..3u8).map(|k| vec![b'a' + k; size / 3 + usize::from(k == 0) * (size % 3)]).collect();
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            // Whole in one write: an idle loopback socket takes far more.
            assert_eq!(socket.write_vectored(&slices).await.unwrap(), size, "{size} bytes in one write");
            expected.extend(parts.concat());
        }
        socket.flush().await.unwrap();
        assert_all_sent(&socket, &mut peer, &expected).await;
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

    #[tokio::test]
    async fn a_socket_shut_down_while_its_peer_sends_lets_the_peer_finish_and_read_the_answer() {
        let (mut socket, mut peer, limit) = pair_under_limit().await;
        // The peer writes a body much larger than the socket buffers before
        // reading anything; the server answers after the first bytes, shuts
        // down and drops the socket without reading the rest. (A send buffer
        // of its own size, not loopback's, which grows to take it all at once.)
        socket2::SockRef::from(&peer).set_send_buffer_size(256 * 1024).unwrap();
        let body = vec![b'x'; 3 * 1024 * 1024];
        let mut first = [0u8; 1024];
        let (sent, ()) = tokio::join!(peer.write_all(&body), async {
            socket.read_exact(&mut first).await.unwrap();
            socket.write_all(ANSWER).await.unwrap();
            socket.shutdown().await.unwrap();
            drop(socket);
        });
        sent.expect("the whole body went out: the dropped socket kept reading");
        assert_eq!(limit.available_permits(), 0, "a lingering connection keeps its place");
        let mut answer = Vec::new();
        peer.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, ANSWER, "the answer, then end of stream");
        drop(peer);
        place_freed(&limit).await;
    }

    #[tokio::test]
    async fn a_socket_whose_peer_closed_first_closes_at_once() {
        let (mut socket, mut peer, limit) = pair_under_limit().await;
        peer.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut request = Vec::new();
        socket.read_to_end(&mut request).await.unwrap();
        socket.write_all(ANSWER).await.unwrap();
        socket.shutdown().await.unwrap();
        assert_eq!(socket.end, End::PeerDone, "no shutdown was needed");
        drop(socket);
        assert_eq!(limit.available_permits(), 1, "closed on the spot, no lingering");
        let mut answer = Vec::new();
        peer.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, ANSWER);
    }

    #[tokio::test]
    async fn a_socket_dropped_without_a_shutdown_closes_at_once() {
        // As an upgraded websocket ends: hyper handed the socket over, and the
        // websocket code drops it after its close handshake.
        let (socket, mut peer, limit) = pair_under_limit().await;
        drop(socket);
        assert_eq!(limit.available_permits(), 1);
        assert_eq!(peer.read(&mut [0u8; 1]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_peer_that_sends_past_the_byte_bound_is_cut_off() {
        let (mut socket, peer, limit) = pair_under_limit().await;
        socket.shutdown().await.unwrap();
        drop(socket);
        let (mut from_peer, mut to_peer) = peer.into_split();
        // The peer reads the end of stream and writes on regardless.
        assert_eq!(from_peer.read(&mut [0u8; 1]).await.unwrap(), 0);
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        let failed = loop {
            match to_peer.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(e) => break e,
            }
            assert!(sent <= 64 * LINGER_BYTES, "the connection is closed after LINGER_BYTES");
        };
        assert!(matches!(failed.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset), "reset: {failed}");
        assert!(sent >= LINGER_BYTES, "at least the bound was read: {sent}");
        place_freed(&limit).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_neither_sends_nor_closes_is_cut_off_after_the_time_bound() {
        let (mut socket, _peer, limit) = pair_under_limit().await;
        socket.shutdown().await.unwrap();
        drop(socket);
        tokio::time::advance(LINGER_TIME - Duration::from_millis(1)).await;
        assert_eq!(limit.available_permits(), 0, "still lingering just before the bound");
        // Paused time moves on to the bound once everything is idle.
        place_freed(&limit).await;
    }
}
