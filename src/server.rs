//! The HTTP listener: accept loop, per-connection HTTP/1.1 with header
//! timeouts and size limits, routing to Engine.IO endpoints and the
//! application, and graceful shutdown. Accepted sockets inherit TCP_NODELAY
//! from the listener, and a new websocket's 101 answer leaves in one write
//! with its first frame (the open packet).
//!
//! Shutdown, as `axum::serve` does it: stop accepting; tell every Engine.IO
//! session to close (each gets a close packet, then a websocket close frame or
//! the answer to its pending poll); ask every HTTP connection to finish its
//! in-flight request and keep polling it; wait for all of that, bounded by the
//! drain time.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use eventfeed_protocol::engine::session::CloseReason;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{Engine, Handler};
use crate::http::Body;
use crate::metrics::Metrics;

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Something that answers HTTP requests (the application's routes).
pub trait Service: Send + Sync + 'static {
    /// Answers one request; `peer` is the client's address.
    fn call(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture;

    /// The metrics label of a path this service answers (a small fixed set).
    fn route_label(&self, _path: &str) -> &'static str {
        "app"
    }
}

/// An Engine.IO endpoint as the router sees it.
pub trait EngineEndpoint: Send + Sync + 'static {
    /// Answers one request for the endpoint's path; `peer` is the client's address.
    fn call(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture;
    /// Closes every session (shutdown).
    fn close_all(&self);
    /// Resolves when every session task ended.
    fn wait_idle(self: Arc<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl<H: Handler> EngineEndpoint for Engine<H> {
    fn call(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        Box::pin(async move { self.handle(req, Some(peer)).await })
    }

    fn close_all(&self) {
        Engine::close_all(self, CloseReason::ServerShutdown)
    }

    fn wait_idle(self: Arc<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { Engine::wait_idle(&self).await })
    }
}

/// Routes requests: Engine.IO paths first (by prefix), the application for the rest.
#[derive(Clone)]
pub struct Router {
    engines: Vec<(String, Arc<dyn EngineEndpoint>)>,
    fallback: Arc<dyn Service>,
}

struct NotFound;

impl Service for NotFound {
    fn call(self: Arc<Self>, _req: Request<Incoming>, _peer: SocketAddr) -> ResponseFuture {
        Box::pin(async {
            crate::http::json(
                http::StatusCode::NOT_FOUND,
                bytes::Bytes::from_static(br#"{"error":{"code":"not_found","message":"no such route"}}"#),
            )
        })
    }
}

impl Default for Router {
    fn default() -> Self {
        Router { engines: Vec::new(), fallback: Arc::new(NotFound) }
    }
}

impl Router {
    /// An empty router: every request gets 404.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `engine` at `path` (e.g. `/socket.io/`; with or without the
    /// trailing slash the path matches).
    pub fn engine(mut self, path: &str, engine: Arc<dyn EngineEndpoint>) -> Self {
        let path = path.trim_end_matches('/').to_owned();
        self.engines.push((path, engine));
        self
    }

    /// Serves every other path with `service`.
    pub fn fallback(mut self, service: Arc<dyn Service>) -> Self {
        self.fallback = service;
        self
    }

    fn label(&self, path: &str) -> &'static str {
        if self.engines.iter().any(|(prefix, _)| path.starts_with(prefix.as_str())) {
            "engine.io"
        } else {
            self.fallback.route_label(path)
        }
    }

    fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture {
        let path = req.uri().path();
        for (prefix, engine) in &self.engines {
            if let Some(rest) = path.strip_prefix(prefix.as_str())
                && (rest.is_empty() || rest == "/")
            {
                return engine.clone().call(req, peer);
            }
        }
        self.fallback.clone().call(req, peer)
    }
}

/// A connection's place under [`ServerConfig::max_connections`], in the
/// extensions of each of its requests. The place is free again once every
/// copy is dropped (the connection's socket keeps one): when the connection
/// ends, or, for a websocket, when the upgraded socket is dropped.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(Arc<SlotShared>);

#[derive(Debug)]
struct SlotShared {
    _permit: tokio::sync::OwnedSemaphorePermit,
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
struct Socket {
    tcp: TcpStream,
    slot: Arc<SlotShared>,
    /// Written while held and not sent yet.
    held: Option<Box<[u8]>>,
}

impl Socket {
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

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time allowed to send the request headers (slowloris bound).
    pub header_read_timeout: Duration,
    /// Largest request head; beyond it hyper answers 431.
    pub max_header_bytes: usize,
    /// Time allowed for the whole shutdown.
    pub drain_timeout: Duration,
    /// Open HTTP connections at most; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// Where request durations and refused connections are counted.
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            drain_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            metrics: None,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains.
/// Returns whether the drain finished in time.
///
/// The accept loop runs as a task of the runtime, not in the caller's future:
/// under `Runtime::block_on` the caller is not a worker thread, and accepting
/// there would cost two cross-thread wake-ups per connection (the worker that
/// polls the listener wakes the caller, which hands the connection back to a
/// worker). Dropping the returned future still stops the server at once.
pub async fn serve(listener: TcpListener, router: Router, config: ServerConfig, shutdown: CancellationToken) -> bool {
    let mut task = AbortOnDrop(tokio::spawn(accept_loop(listener, router, config, shutdown)));
    match (&mut task.0).await {
        Ok(drained) => drained,
        Err(e) => {
            tracing::error!(error = %e, "the accept loop ended abnormally");
            false
        }
    }
}

/// Aborts the task when dropped (the caller of [`serve`] gave up on it).
struct AbortOnDrop(tokio::task::JoinHandle<bool>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn accept_loop(listener: TcpListener, router: Router, config: ServerConfig, shutdown: CancellationToken) -> bool {
    let tracker = TaskTracker::new();
    let router = Arc::new(router);
    let limit = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    // Accepted sockets should inherit TCP_NODELAY (no Nagle delay for small frames).
    let _ = socket2::SockRef::from(&listener).set_tcp_nodelay(true);
    let mut nodelay_inherited: Option<bool> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Bound hit: too many connections; this one is closed unanswered.
            tracing::warn!(max = config.max_connections, "connection limit reached; closing new connection");
            if let Some(m) = &config.metrics {
                m.reject("connections");
            }
            drop(stream);
            continue;
        };
        // Linux gives accepted sockets the listener's TCP_NODELAY (checked
        // once, on the first connection): no system call per connection then.
        if !*nodelay_inherited.get_or_insert_with(|| stream.nodelay().unwrap_or(false)) {
            let _ = stream.set_nodelay(true);
        }
        let router = router.clone();
        let shutdown = shutdown.clone();
        let config = config.clone();
        tracker.spawn(async move {
            // Each request carries a share of the slot, and so does the
            // socket: a websocket keeps it for as long as it holds the socket.
            let shared = Arc::new(SlotShared { _permit: permit, hold: AtomicU8::new(SENDING) });
            let socket = Socket { tcp: stream, slot: shared.clone(), held: None };
            let slot = ConnectionSlot(shared);
            let metrics = config.metrics.clone();
            let svc = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(slot.clone());
                let started = std::time::Instant::now();
                let label = router.label(req.uri().path());
                let fut = router.route(req, peer);
                let metrics = metrics.clone();
                async move {
                    let res = fut.await;
                    if let Some(m) = &metrics {
                        m.observe_request(label, started.elapsed());
                    }
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(config.header_read_timeout)
                .max_buf_size(config.max_header_bytes.max(8192));
            let conn = builder.serve_connection(TokioIo::new(socket), svc).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::trace!(error = %e, %peer, "http connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    let engines: Vec<_> = router.engines.iter().map(|(_, e)| e.clone()).collect();
    for e in &engines {
        e.close_all();
    }
    let drained = tokio::time::timeout(config.drain_timeout, async {
        for e in engines {
            e.wait_idle().await;
        }
        tracker.wait().await;
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!("shutdown drain timed out");
    }
    drained
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The server side of a loopback connection as [`Socket`], and its peer.
    async fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let permit = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().unwrap();
        let slot = Arc::new(SlotShared { _permit: permit, hold: AtomicU8::new(SENDING) });
        let socket = Socket { tcp: accepted.unwrap().0, slot, held: None };
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
