//! The HTTP listener: accept loop, per-connection HTTP/1.1 with header
//! timeouts and size limits, routing to Engine.IO endpoints and the
//! application, and graceful shutdown. Accepted sockets inherit TCP_NODELAY
//! from the listener, and a new websocket's 101 answer leaves in one write
//! with its first frame (the open packet).
//!
//! A connection hyper closes while its client may still be sending (after
//! a 413 or 401 answered before the body was read, after its own 431) is
//! closed lingering: FIN after the answer, then what the client still sends
//! is read and discarded, within bounds, so that it can read the answer
//! instead of a reset ([`crate::http::conn`]). Lingering connections keep
//! their place under [`ServerConfig::max_connections`]; shutdown does not wait
//! for them.
//!
//! Shutdown, as `axum::serve` does it: stop accepting; tell every Engine.IO
//! session to close (each gets a close packet, then a websocket close frame or
//! the answer to its pending poll); ask every HTTP connection to finish its
//! in-flight request and keep polling it; wait for all of that, bounded by the
//! drain time.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventfeed_protocol::engine::session::CloseReason;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{Engine, Handler};
use crate::http::Body;
use crate::http::conn::Socket;
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

    /// Whether a request for `path` gets its connection's slot
    /// ([`crate::http::ConnectionSlot`]) in its extensions (an event
    /// stream writes its records past hyper with it).
    fn takes_connection(&self, _path: &str) -> bool {
        false
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
        self.handle(req, Some(peer))
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

    /// Whether `path` lies under an Engine.IO endpoint's.
    fn under_engine(&self, path: &str) -> bool {
        self.engines.iter().any(|(prefix, _)| path.starts_with(prefix.as_str()))
    }

    fn takes_connection(&self, path: &str) -> bool {
        !self.under_engine(path) && self.fallback.takes_connection(path)
    }

    fn label(&self, path: &str) -> &'static str {
        if self.under_engine(path) { "engine.io" } else { self.fallback.route_label(path) }
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

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time allowed to send the request headers (slowloris bound).
    pub header_read_timeout: Duration,
    /// Largest request head; beyond it hyper answers 431.
    pub max_header_bytes: usize,
    /// Time allowed for the whole shutdown.
    pub drain_timeout: Duration,
    /// Open HTTP connections at most, lingering ones included; beyond it
    /// new ones are closed at once.
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
            tracing::warn!(target: "audit", action = "accept", outcome = "connection_limit", peer = %peer, max = config.max_connections, "connection limit reached; new connection closed");
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
            // The socket holds a share of the slot (a websocket keeps it for
            // as long as it holds the socket), and so does each upgrade
            // request, whose answer the socket may hold back, and each
            // request of a path whose service asks for it (an event stream).
            // Other requests carry nothing: no extensions map is allocated
            // for them.
            let (socket, slot) = Socket::new(stream, permit);
            let metrics = config.metrics.clone();
            let svc = service_fn(move |mut req: Request<Incoming>| {
                if req.headers().contains_key(http::header::UPGRADE) || router.takes_connection(req.uri().path()) {
                    req.extensions_mut().insert(slot.clone());
                }
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
