//! The Engine.IO v4 server runtime: handshake, long-polling, websocket, the
//! upgrade between them, heartbeat, and the session table.
//!
//! An [`Engine`] serves one path (e.g. `/socket.io/`). It hands every message
//! to a [`Handler`] — the Socket.IO layer, or a raw Engine.IO application — and
//! leaves every other path to the caller. Protocol decisions come from
//! `eventfeed_protocol::engine::session::Session`; this module only does the I/O.
//!
//! A polling session has one supervisor task (timers: pings, ping timeout;
//! cleanup when the session closes); a session that began on websocket has
//! one task that reads and writes the socket and runs its timers (an upgraded
//! session keeps its supervisor). Long-polling requests run in the HTTP
//! connection's task.

mod conn;
mod polling;
mod sessions;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventfeed_protocol::engine::session::{self as proto_session, CloseReason};
use eventfeed_protocol::engine::{EngineError, Query, Transport};
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

pub use crate::metrics::EngineMetrics;
pub use conn::{BroadcastTime, Conn, SendError};
pub use sessions::Sessions;

use crate::http::{self as h, Body, Cors};

/// Settings of one Engine.IO endpoint.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Heartbeat and upgrade timing.
    pub session: proto_session::Config,
    /// `maxPayload`: the largest polling body and websocket message accepted,
    /// and the budget of one polling response.
    pub max_payload: usize,
    /// Frames a session may have queued before it is closed as a slow consumer.
    pub max_queue: usize,
    /// Sessions this engine holds at most; a handshake beyond it gets 503.
    pub max_sessions: usize,
    /// Allowed browser origins (CORS and websocket origin check).
    pub cors: Cors,
    /// Time a polling POST body may take to arrive (slow-body bound).
    pub body_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            session: proto_session::Config::default(),
            max_payload: 1_000_000,
            max_queue: 1024,
            max_sessions: 100_000,
            cors: Cors::default(),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// An incoming Engine.IO message.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a Bytes),
}

/// What an engine's application does with sessions and their messages.
///
/// Calls for one session come in order, from one task at a time. They are
/// synchronous and must not block: queue packets with [`Conn::send`], spawn
/// work that has to wait.
pub trait Handler: Send + Sync + 'static {
    /// Per-session state of the application.
    type State: Send + Sync + 'static;

    /// A session opened.
    fn on_open(&self, conn: &Arc<Conn>) -> Self::State;

    /// A message arrived.
    fn on_message(&self, conn: &Arc<Conn>, state: &Self::State, message: Message<'_>);

    /// The session closed (called once).
    fn on_close(&self, conn: &Arc<Conn>, state: &Self::State, reason: CloseReason);

    /// The application's next deadline for this session, if any (the
    /// session's supervisor wakes for it and calls [`Handler::on_timeout`]).
    /// When it moves earlier, call [`Conn::reschedule`].
    fn poll_timeout(&self, _state: &Self::State) -> Option<Instant> {
        None
    }

    /// The deadline from [`Handler::poll_timeout`] passed.
    fn on_timeout(&self, _conn: &Arc<Conn>, _state: &Self::State, _now: Instant) {}

    /// The session moved from polling to its websocket (the upgrade finished).
    fn on_upgrade(&self, _conn: &Arc<Conn>, _state: &Self::State) {}
}

pub(crate) struct Entry<S> {
    pub(crate) conn: Arc<Conn>,
    pub(crate) state: S,
}

/// One Engine.IO endpoint.
pub struct Engine<H: Handler> {
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) handler: H,
    pub(crate) sessions: Sessions<Entry<H::State>>,
    pub(crate) metrics: Arc<EngineMetrics>,
    pub(crate) tasks: TaskTracker,
}

impl<H: Handler> Engine<H> {
    /// An engine serving `handler` with `config`.
    pub fn new(config: EngineConfig, handler: H) -> Arc<Self> {
        Self::with_metrics(config, handler, EngineMetrics::default())
    }

    /// An engine that counts into `metrics` (counters shared with an exporter).
    pub fn with_metrics(config: EngineConfig, handler: H, metrics: EngineMetrics) -> Arc<Self> {
        Arc::new(Engine {
            config: Arc::new(config),
            handler,
            sessions: Sessions::new(),
            metrics: Arc::new(metrics),
            tasks: TaskTracker::new(),
        })
    }

    /// The application handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The counters.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions by the transport they currently write on: (polling, websocket).
    pub fn sessions_by_transport(&self) -> (usize, usize) {
        let mut polling = 0;
        let mut websocket = 0;
        self.sessions.for_each(|e| match e.conn.transport() {
            Transport::Polling => polling += 1,
            Transport::Websocket => websocket += 1,
        });
        (polling, websocket)
    }

    /// Closes every session (server shutdown): each gets a close packet.
    pub fn close_all(&self, reason: CloseReason) {
        let mut conns = Vec::new();
        self.sessions.for_each(|e| conns.push(e.conn.clone()));
        for c in conns {
            c.close(reason);
        }
    }

    /// Waits until every session task has finished (after [`Engine::close_all`]).
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// Serves one HTTP request addressed to this engine's path.
    ///
    /// Everything up to the answer or the wait runs here, at once: the
    /// routing, and every answer that needs no waiting (a handshake, an
    /// upgrade's 101, an error). Only a polling GET or POST gets a future of
    /// its own that waits, holding just what it needs (the session and the
    /// answer's finishing touches, not the request): small enough for the
    /// allocator's per-thread cache. (One future for every path, request
    /// included, was over 2 KiB: each request's allocation and free went
    /// through glibc's general path, `malloc_consolidate` included, about
    /// 4 % of a polling delivery's CPU.)
    pub fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: Option<SocketAddr>,
    ) -> BoxFuture<'static, Response<Body>> {
        let finish = Finish::of(self, &req);
        match self.route(req, finish.cors.is_allowed(), peer).unwrap_or_else(|e| Routed::Now(Err(e))) {
            Routed::Now(res) => Box::pin(std::future::ready(finish.answer(res))),
            Routed::Get(entry) => {
                let engine = self.clone();
                Box::pin(async move { finish.answer(polling::get(&engine, &entry).await) })
            }
            Routed::Post(entry, declared, body) => {
                let engine = self.clone();
                Box::pin(async move { finish.answer(polling::post(&engine, &entry, declared, body).await) })
            }
        }
    }

    fn route(
        self: &Arc<Self>,
        req: Request<Incoming>,
        origin_ok: bool,
        peer: Option<SocketAddr>,
    ) -> Result<Routed<H::State>, Reject> {
        if !origin_ok {
            h::audit_origin_refused("engine.io", &req, peer);
        }
        if req.method() == Method::OPTIONS {
            return Ok(Routed::Now(Ok(h::preflight(&req, origin_ok))));
        }
        let query = Query::parse(req.uri().query().unwrap_or(""))?;
        let is_upgrade = websocket::is_upgrade_request(&req);
        query.check_handshake_method(req.method() == Method::GET, is_upgrade)?;
        if !origin_ok {
            return Err(EngineError::Forbidden.into());
        }
        match (query.transport, query.sid) {
            (Transport::Polling, None) => Ok(Routed::Now(self.handshake_polling(peer))),
            (Transport::Polling, Some(sid)) => {
                let entry = self.sessions.get(&sid).ok_or(EngineError::UnknownSid)?;
                // Apply any deadline already passed (a missed pong) before
                // serving, so the answer never depends on the timer task's delay.
                entry.conn.on_timer(now());
                match *req.method() {
                    Method::GET => Ok(Routed::Get(entry)),
                    Method::POST => Ok(Routed::Post(entry, h::content_length(req.headers()), req.into_body())),
                    _ => Err(EngineError::BadRequest.into()),
                }
            }
            (Transport::Websocket, sid) => {
                if !is_upgrade {
                    return Err(EngineError::BadRequest.into());
                }
                Ok(Routed::Now(websocket::upgrade(self, req, sid, peer)))
            }
        }
    }

    fn handshake_polling(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<Response<Body>, Reject> {
        let entry = self.open_session(Transport::Polling, peer)?;
        let open = self.open_frame(&entry.conn, Transport::Polling);
        Ok(h::text_plain(StatusCode::OK, open.bytes().clone()))
    }

    /// Creates a session, registers it, and starts its supervisor.
    pub(crate) fn open_session(
        self: &Arc<Self>,
        transport: Transport,
        peer: Option<SocketAddr>,
    ) -> Result<Arc<Entry<H::State>>, Reject> {
        if self.sessions.len() >= self.config.max_sessions {
            self.metrics.session_limit_rejections.inc();
            // Bound hit: refuse new sessions; existing ones are unaffected.
            tracing::warn!(target: "audit", action = "handshake", outcome = "session_limit", peer = %h::Peer(peer), max = self.config.max_sessions, "session limit reached; handshake refused");
            return Err(Reject::TooManySessions);
        }
        let sid: Arc<str> = new_sid().into();
        let conn = Arc::new(Conn::new(
            sid.clone(),
            peer,
            transport,
            tokio::time::Instant::now().into_std(),
            self.config.clone(),
            self.metrics.clone(),
        ));
        let state = self.handler.on_open(&conn);
        let entry = Arc::new(Entry { conn, state });
        self.sessions.insert(sid, entry.clone());
        self.metrics.sessions_opened.inc();
        // A polling session gets a supervisor task for its timers; a websocket
        // session runs them in its websocket task (one task per connection).
        if transport == Transport::Polling {
            let engine = self.clone();
            let sup = entry.clone();
            self.tasks.spawn(async move { engine.supervise(sup).await });
        }
        Ok(entry)
    }

    pub(crate) fn open_frame(&self, conn: &Conn, transport: Transport) -> eventfeed_protocol::engine::Frame {
        let upgrades: &[&str] = match transport {
            Transport::Polling => &["websocket"],
            Transport::Websocket => &[],
        };
        eventfeed_protocol::engine::open_frame(
            conn.sid(),
            upgrades,
            self.config.session.ping_interval.as_millis() as u64,
            self.config.session.ping_timeout.as_millis() as u64,
            self.config.max_payload as u64,
        )
    }

    /// Runs the session's due timers (engine and application) at `now`;
    /// returns the next deadline, or `None` once the session is closed.
    pub(crate) fn run_timers(&self, entry: &Entry<H::State>) -> Option<tokio::time::Instant> {
        let now = now();
        if self.handler.poll_timeout(&entry.state).is_some_and(|d| d <= now) {
            self.handler.on_timeout(&entry.conn, &entry.state, now);
        }
        let mut next = entry.conn.on_timer(now)?;
        if let Some(app) = self.handler.poll_timeout(&entry.state) {
            next = next.min(app);
        }
        Some(tokio::time::Instant::from_std(next))
    }

    /// A polling session's supervisor: runs its timers until it closes, then
    /// cleans up. (A websocket session does both in its websocket task.)
    async fn supervise(self: Arc<Self>, entry: Arc<Entry<H::State>>) {
        let conn = &entry.conn;
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        while let Some(next) = self.run_timers(&entry) {
            sleep.as_mut().reset(next);
            tokio::select! {
                _ = &mut sleep => {}
                _ = conn.timer.notified() => {}
                _ = conn.closed() => break,
            }
        }
        // Closed: tell the application at once (a client that reconnects right
        // away must find its session kept for recovery), then forget the sid.
        let farewell = self.notify_closed(&entry);
        if farewell {
            // A client close over polling: keep the sid briefly for the GET
            // that may be racing it (it gets a noop, as the reference's would).
            tokio::time::sleep(FAREWELL_GRACE).await;
        }
        self.forget(conn);
    }

    /// Tells the application the session closed; returns whether a polling
    /// farewell noop is pending.
    pub(crate) fn notify_closed(&self, entry: &Entry<H::State>) -> bool {
        let conn = &entry.conn;
        let reason = conn.close_reason().unwrap_or(CloseReason::TransportClose);
        self.handler.on_close(conn, &entry.state, reason);
        tracing::debug!(sid = %conn.sid(), reason = reason.as_str(), "session closed");
        conn.lock().farewell_noop
    }

    /// Removes a closed session from the table.
    pub(crate) fn forget(&self, conn: &Conn) {
        self.sessions.remove(conn.sid());
        self.metrics.sessions_closed.inc();
    }

    /// Ends a session that has no supervisor (a websocket session's own task).
    pub(crate) fn finish(&self, entry: &Entry<H::State>) {
        entry.conn.close(CloseReason::TransportClose);
        self.notify_closed(entry);
        self.forget(&entry.conn);
    }

    pub(crate) fn dispatch(&self, entry: &Entry<H::State>, message: Message<'_>) {
        self.handler.on_message(&entry.conn, &entry.state, message);
    }
}

/// How long a polling session closed by its client stays known, for a GET racing the close.
const FAREWELL_GRACE: Duration = Duration::from_millis(100);

/// Why an Engine.IO request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// A protocol error, answered with the reference's code and message.
    Engine(EngineError),
    /// The session limit is reached: 503.
    TooManySessions,
    /// A polling body over `maxPayload`: 413.
    PayloadTooLarge,
}

impl From<EngineError> for Reject {
    fn from(e: EngineError) -> Self {
        Reject::Engine(e)
    }
}

/// A new session id: 20 URL-safe characters from 120 random bits.
pub fn new_sid() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: [u8; 15] = rand::random();
    let mut out = String::with_capacity(20);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    out
}

/// Where a request stands once routed: answered, or a poll to wait on.
enum Routed<S> {
    /// The answer (or refusal), without waiting.
    Now(Result<Response<Body>, Reject>),
    /// A polling GET of this session.
    Get(Arc<Entry<S>>),
    /// A polling POST of this session: its declared length, and its body
    /// still to read.
    Post(Arc<Entry<S>>, Option<u64>, Incoming),
}

/// What every answer of the engine gets before it leaves: the error's answer,
/// the origin's CORS headers, `no-store`, and `Connection: close` when the
/// request's body was left unread.
struct Finish {
    cors: h::CorsDecision,
    /// The request has a body.
    body: bool,
    /// The request is a POST.
    post: bool,
}

impl Finish {
    fn of<H: Handler>(engine: &Engine<H>, req: &Request<Incoming>) -> Self {
        Finish {
            cors: engine.config.cors.headers_for(req.headers().get(header::ORIGIN), req.headers().get(header::HOST)),
            body: h::has_body(req),
            post: req.method() == Method::POST,
        }
    }

    fn answer(self, res: Result<Response<Body>, Reject>) -> Response<Body> {
        let mut res = match res {
            Ok(res) => res,
            Err(Reject::Engine(e)) => engine_error(e),
            Err(Reject::TooManySessions) => h::unavailable(),
            Err(Reject::PayloadTooLarge) => h::text_plain(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new()),
        };
        // Only a polling POST answered `ok` (the one POST answered 200) has
        // read its body to the end; any other answer to a request with a body
        // left some of it unread (a 101 hands the connection over instead).
        let body_read = self.post && res.status() == StatusCode::OK;
        if self.body && !body_read && res.status() != StatusCode::SWITCHING_PROTOCOLS {
            h::last_on_connection(&mut res);
        }
        let _ = self.cors.apply(res.headers_mut());
        res.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        res
    }
}

/// Whether `s` has the shape of an id made by [`new_sid`] (20 characters of
/// the URL-safe base64 alphabet).
pub fn is_sid_shaped(s: &str) -> bool {
    s.len() == 20 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The reference's JSON error answer for an Engine.IO request error.
pub(crate) fn engine_error(e: EngineError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    h::json(status, Bytes::from(e.body()))
}

/// The current time as the protocol crate takes it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_have_their_shape_and_rooms_do_not() {
        for _ in 0..100 {
            assert!(is_sid_shaped(&new_sid()));
        }
        for room in ["tenant:company_a", "vip", "", "AAAAAAAAAAAAAAAAAAA=", "AAAAAAAAAAAAAAAAAAAAA"] {
            assert!(!is_sid_shaped(room), "{room}");
        }
    }
}
