//! The feed's Socket.IO namespace.
//!
//! CONNECT carries `auth: {tenantId, token}`; a refusal is CONNECT_ERROR with
//! message `unauthorized`. On connect the socket joins `tenant:{id}` and gets
//! a `snapshot` — both under the tenant's store lock, so no event falls
//! between the snapshot and the first `event_created`, and none comes twice.
//!
//! Client events: `replay {sinceId?, limit?}` and `post_event {message}`,
//! answered through the ack when there is one, else with `replay_result` /
//! the `error` event. Malformed arguments get `bad_request`; the socket stays.
//!
//! Coming back (see [`super::recovery`]): a CONNECT with the `pid` and
//! `offset` of a session kept after an abnormal disconnect, with the same
//! credentials, within the window, gets the same socket id and every missed
//! `event_created` instead of a snapshot. One with `auth.sinceId` (an event
//! id) gets `replay_result {events, hasMore, gap}` with everything after it
//! instead of the snapshot — that works across restarts, where `pid` cannot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::FeedError;
use super::event::{array_json, page_json};
use super::recovery::Kept;
use super::store::TenantLog;
use super::{DEFAULT_LIMIT, Feed, MAX_LIMIT, Principal, SNAPSHOT_LIMIT, tenant_room};
use crate::sio::{ConnectRejection, DisconnectReason, Event, NamespaceHandler, PendingAuthorization, Socket};
use eventfeed_protocol::engine::session::CloseReason;

/// The namespace handler of the feed.
pub struct Gateway {
    feed: Arc<Feed>,
}

impl Gateway {
    /// A handler serving `feed`.
    pub fn new(feed: Arc<Feed>) -> Self {
        Gateway { feed }
    }
}

/// What the gateway keeps on each socket.
struct Session {
    principal: Principal,
    token_digest: [u8; 32],
    /// How the socket starts, decided when its CONNECT was accepted.
    start: Start,
    /// The last `seq` the socket was sent in full at connect (snapshot,
    /// replay or recovery point), for a later recovery without an offset.
    base_seq: AtomicU64,
    /// `replay`s and `post_event`s waiting for Redis, in the order they came
    /// (Redis mode).
    requests: Mutex<Requests>,
}

/// A socket's requests in Redis mode, carried out one after another: one
/// client's events get `seq`s in the order it sent them, as in memory mode,
/// and a client cannot have more than [`MAX_QUEUED_REQUESTS`] Redis calls
/// pending.
#[derive(Default)]
struct Requests {
    queue: VecDeque<Event>,
    /// A task is carrying them out.
    running: bool,
}

/// `replay`s and `post_event`s one socket may have waiting for Redis; more
/// are refused (`rate_limited`) until some are done.
const MAX_QUEUED_REQUESTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// A snapshot of the latest events.
    Snapshot,
    /// Everything after this event id, as `replay_result`.
    Resume(Uuid),
    /// Connection state recovery: every event after this `seq`.
    Recover { after_seq: u64 },
}

/// The offset argument of an `event_created`: the event's `seq` as a JSON string.
pub fn offset_json(seq: u64) -> Box<RawValue> {
    use eventfeed_protocol::json::{decimal_len, push_decimal};
    // `"` digits `"`, written without the formatting machinery into a buffer
    // of the exact length (no reallocation when it is boxed).
    let mut json = Vec::with_capacity(decimal_len(seq) + 2);
    json.push(b'"');
    push_decimal(&mut json, seq);
    json.push(b'"');
    raw(String::from_utf8(json).unwrap_or_default())
}

fn rejection(code: &str, message: &str) -> ConnectRejection {
    ConnectRejection { message: message.into(), data: Some(json!({"code": code, "message": message})) }
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Reads `{sinceId?, limit?}` as REST reads its query.
fn replay_args(args: &[Value]) -> Result<(Option<Uuid>, usize), FeedError> {
    let obj = match args.first() {
        None | Some(Value::Null) => return Ok((None, DEFAULT_LIMIT)),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(FeedError::bad_request("replay expects an object {sinceId?, limit?}")),
    };
    let since = match obj.get("sinceId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(Uuid::parse_str(s).map_err(|_| FeedError::bad_request("sinceId must be an event id (UUID)"))?)
        }
        Some(_) => return Err(FeedError::bad_request("sinceId must be a string")),
    };
    let limit = match obj.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
            _ => return Err(FeedError::bad_request("limit must be an integer from 1 to 1000")),
        },
    };
    Ok((since, limit))
}

fn post_args(args: &[Value]) -> Result<&str, FeedError> {
    match args.first() {
        Some(Value::Object(o)) => match o.get("message") {
            Some(Value::String(m)) => Ok(m),
            Some(_) => Err(FeedError::bad_request("message must be a string")),
            None => Err(FeedError::bad_request("message is required")),
        },
        _ => Err(FeedError::bad_request("post_event expects an object {message}")),
    }
}

/// Answers through the ack if there is one, else emits `event` (or `error`
/// for failures) to the socket.
fn answer(socket: &Arc<Socket>, event: Event, result: Result<Box<RawValue>, FeedError>, no_ack_event: Option<&str>) {
    match (event.ack, result) {
        (Some(ack), Ok(body)) => {
            let _ = ack.send_raw(&[&body]);
        }
        (Some(ack), Err(e)) => {
            let _ = ack.send(vec![json!({"error": e.to_value()})], vec![]);
        }
        (None, Ok(body)) => {
            if let Some(name) = no_ack_event {
                emit_raw(socket, name, &body);
            }
        }
        (None, Err(e)) => {
            let _ = socket.emit("error", vec![e.to_value()], vec![]);
        }
    }
}

fn emit_raw(socket: &Socket, name: &str, body: &RawValue) {
    let frame = eventfeed_protocol::socket::encode_raw_event(socket.namespace().name(), name, &[body], None);
    let _ = socket.conn().send(frame);
}

impl Gateway {
    /// Where a recovery resumes: after the client's `offset` (a `seq`), or
    /// after the kept session's base when the client saw no event yet. `None`
    /// when that cannot be served: a malformed offset, events no longer
    /// retained, or more missed events than a socket's queue takes at once.
    fn recovery_point(&self, kept: &Kept, offset: Option<&Value>) -> Option<u64> {
        let after_seq = match offset {
            None | Some(Value::Null) => kept.base_seq,
            Some(Value::String(s)) => s.parse().ok()?,
            Some(_) => return None,
        };
        let room_for = self.feed.config.max_recovered_events;
        self.feed.bus.with_log(&kept.tenant, |log| {
            let missed = log.last_seq().checked_sub(after_seq)?;
            let served = log.after_seq(after_seq, 0).is_some();
            (served && missed as usize <= room_for).then_some(after_seq)
        })
    }
}

fn send_event(socket: &Socket, e: &super::StoredEvent, with_offset: bool) {
    let offset = offset_json(e.seq);
    let args: &[&RawValue] = if with_offset { &[e.json(), &offset] } else { &[e.json()] };
    let frame = eventfeed_protocol::socket::encode_raw_event(socket.namespace().name(), "event_created", args, None);
    let _ = socket.conn().send(frame);
}

/// Sends the snapshot; returns the `seq` it covers up to.
fn send_snapshot(socket: &Socket, log: &TenantLog) -> u64 {
    let snapshot = raw(array_json(&log.latest(SNAPSHOT_LIMIT).events));
    emit_raw(socket, "snapshot", &snapshot);
    log.last_seq()
}

/// What a CONNECT asks for, once its credentials are checked.
struct Admission {
    principal: Principal,
    token_digest: [u8; 32],
    /// `auth.pid`, to recover a kept session.
    pid: Option<String>,
    /// `auth.offset`.
    offset: Option<Value>,
    /// `auth.sinceId`, checked.
    since: Option<Uuid>,
}

/// The socket's peer address as the audit log shows it (formatted only for a log line).
fn peer_of(socket: &Socket) -> String {
    socket.conn().peer().map(|p| p.to_string()).unwrap_or_default()
}

impl Gateway {
    /// Checks the credentials and the tenant's socket limit, and reads what
    /// the CONNECT asks for.
    fn admit(&self, socket: &Arc<Socket>, auth: Option<&Value>) -> Result<Admission, ConnectRejection> {
        let empty = Map::new();
        let auth = auth.and_then(Value::as_object).unwrap_or(&empty);
        let tenant = auth.get("tenantId").and_then(Value::as_str);
        let token = auth.get("token").and_then(Value::as_str);
        let (principal, token_digest) = match self.feed.authenticate_with_digest(tenant, token) {
            Ok(p) => p,
            Err(e) => {
                let peer = peer_of(socket);
                self.feed.auth_failed("socket");
                tracing::info!(target: "audit", action = "connect", outcome = "unauthorized", tenant = tenant.unwrap_or(""), peer, "socket auth failed");
                return Err(ConnectRejection { message: "unauthorized".into(), data: Some(e.to_value()) });
            }
        };
        let max = self.feed.config.max_tenant_connections;
        if socket.namespace().room_size(&tenant_room(&principal.tenant)) >= max {
            // Bound hit: this tenant has as many sockets as allowed; refuse this one.
            self.feed.metrics.reject("tenant_connections");
            let peer = peer_of(socket);
            tracing::warn!(target: "audit", action = "connect", outcome = "tenant_connection_limit", tenant = %principal.tenant, user = %principal.user, peer, max, "socket refused");
            return Err(ConnectRejection {
                message: "too many connections".into(),
                data: Some(
                    json!({"code": "too_many_connections", "message": "this tenant has too many open connections"}),
                ),
            });
        }
        let since = match auth.get("sinceId").filter(|v| !v.is_null()) {
            None => None,
            Some(v) => match v.as_str().and_then(|s| Uuid::try_parse(s).ok()) {
                Some(id) => Some(id),
                None => return Err(rejection("bad_request", "sinceId must be an event id (UUID)")),
            },
        };
        let pid = match auth.get("pid") {
            Some(Value::String(pid)) if self.feed.recovery.enabled() => Some(pid.clone()),
            _ => None,
        };
        Ok(Admission { principal, token_digest, pid, offset: auth.get("offset").cloned(), since })
    }

    /// Decides how the socket starts, given the kept session its `pid` named
    /// (if any was found for these credentials).
    fn decide(&self, socket: &Arc<Socket>, admission: Admission, kept: Option<Kept>) {
        let Admission { principal, token_digest, pid, offset, since } = admission;
        let mut start = Start::Snapshot;
        if self.feed.recovery.enabled() {
            let mut restored = None;
            if let (Some(pid), Some(kept)) = (pid, kept) {
                match self.recovery_point(&kept, offset.as_ref()) {
                    Some(after_seq) => {
                        socket.restore_id(&kept.sid);
                        restored = Some(pid);
                        start = Start::Recover { after_seq };
                        let peer = peer_of(socket);
                        tracing::info!(target: "audit", action = "connect", outcome = "recovered", tenant = %principal.tenant, user = %principal.user, peer, "session recovered");
                    }
                    None => {
                        let peer = peer_of(socket);
                        tracing::info!(target: "audit", action = "connect", outcome = "not_recoverable", tenant = %principal.tenant, user = %principal.user, peer, "missed events no longer retained; fresh session");
                    }
                }
            }
            socket.set_pid(restored.unwrap_or_else(crate::engine::new_sid));
        }
        if start == Start::Snapshot
            && let Some(id) = since
        {
            start = Start::Resume(id);
        }
        let _ = socket.set_data(Session {
            principal,
            token_digest,
            start,
            base_seq: AtomicU64::new(0),
            requests: Mutex::new(Requests::default()),
        });
    }
}

/// Answers a `replay`.
async fn replay(feed: Arc<Feed>, socket: Arc<Socket>, event: Event) {
    let Some(session) = socket.data::<Session>() else { return };
    let result = match replay_args(&event.args) {
        Ok((since, limit)) => feed
            .read(&session.principal, since.as_ref(), limit)
            .await
            .map(|page| raw(page_json(&page.events, page.has_more, page.gap))),
        Err(e) => Err(e),
    };
    answer(&socket, event, result, Some("replay_result"));
}

/// Creates the event a `post_event` asks for and answers it.
async fn post_event(feed: Arc<Feed>, socket: Arc<Socket>, event: Event) {
    let Some(session) = socket.data::<Session>() else { return };
    let who = &session.principal;
    let result = match post_args(&event.args) {
        Ok(message) => feed.post(who, message).await,
        Err(e) => Err(e),
    };
    let result = match result {
        Ok(e) => {
            tracing::info!(target: "audit", action = "post_event", outcome = "created", tenant = %who.tenant, user = %who.user, event_id = %e.id, peer = peer_of(&socket), "event created");
            Ok(event_body(&e))
        }
        Err(e) => {
            tracing::info!(target: "audit", action = "post_event", outcome = e.code(), tenant = %who.tenant, user = %who.user, peer = peer_of(&socket), "event refused");
            Err(e)
        }
    };
    answer(&socket, event, result, None);
}

/// `{"event":<the event's JSON>}`, the answer to a `post_event`: the stored
/// JSON is copied in, not parsed again.
fn event_body(event: &super::StoredEvent) -> Box<RawValue> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        event: &'a RawValue,
    }
    serde_json::value::to_raw_value(&Body { event: event.json() }).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Redis mode: queues a `replay` or `post_event` behind the socket's earlier
/// ones, and starts the task that carries them out in order if none runs.
fn queue_request(feed: Arc<Feed>, socket: Arc<Socket>, event: Event) {
    let Some(session) = socket.data::<Session>() else { return };
    let start = {
        let mut writes = session.requests.lock().unwrap_or_else(|e| e.into_inner());
        if writes.queue.len() >= MAX_QUEUED_REQUESTS {
            // Bound hit: the client asks faster than Redis answers; refuse this one.
            drop(writes);
            answer(&socket, event, Err(FeedError::RateLimited { retry_after: 1 }), None);
            return;
        }
        writes.queue.push_back(event);
        !std::mem::replace(&mut writes.running, true)
    };
    if start {
        tokio::spawn(async move {
            loop {
                let next = {
                    let Some(session) = socket.data::<Session>() else { return };
                    let mut requests = session.requests.lock().unwrap_or_else(|e| e.into_inner());
                    match requests.queue.pop_front() {
                        Some(event) => event,
                        None => {
                            requests.running = false;
                            return;
                        }
                    }
                };
                if next.name == "replay" {
                    replay(feed.clone(), socket.clone(), next).await;
                } else {
                    post_event(feed.clone(), socket.clone(), next).await;
                }
            }
        });
    }
}

/// What is kept of a socket for its recovery.
fn kept(socket: &Socket, session: &Session) -> Kept {
    let who = &session.principal;
    Kept {
        sid: socket.id().to_owned(),
        tenant: who.tenant.clone(),
        user: who.user.clone(),
        token_digest: session.token_digest,
        rooms: vec![tenant_room(&who.tenant)],
        base_seq: session.base_seq.load(Ordering::Relaxed),
    }
}

/// Runs a handler's work now when it needs no waiting (in-memory mode),
/// else on its own task (Redis mode).
fn run_now_or_spawn(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut work = Box::pin(work);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if work.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(work);
    }
}

impl NamespaceHandler for Gateway {
    fn authorize(&self, socket: &Arc<Socket>, auth: Option<&Value>) -> Result<(), ConnectRejection> {
        let admission = self.admit(socket, auth)?;
        let kept = admission.pid.as_deref().and_then(|pid| {
            let who = &admission.principal;
            self.feed.recovery.take(pid, &who.tenant, &who.user, &admission.token_digest)
        });
        self.decide(socket, admission, kept);
        Ok(())
    }

    fn authorize_async(&self, socket: &Arc<Socket>, auth: Option<&Value>) -> Option<PendingAuthorization> {
        let cluster = self.feed.cluster()?.clone();
        let admission = match self.admit(socket, auth) {
            Ok(a) => a,
            Err(rejection) => return Some(Box::pin(std::future::ready(Err(rejection)))),
        };
        let gateway = Gateway { feed: self.feed.clone() };
        let socket = socket.clone();
        Some(Box::pin(async move {
            let who = &admission.principal;
            // The snapshot, recovery and replay on connect come from this
            // instance's copy of the tenant's log: make sure it is there.
            if let Err(e) = cluster.ensure_tenant(&who.tenant, admission.since.is_some()).await {
                return Err(ConnectRejection { message: "unavailable".into(), data: Some(e.to_value()) });
            }
            let kept = match &admission.pid {
                Some(pid) => cluster.take_session(pid, &who.tenant, &who.user, &admission.token_digest).await,
                None => Ok(None),
            };
            // Redis failing here only costs the recovery: a fresh session.
            gateway.decide(&socket, admission, kept.unwrap_or(None));
            Ok(())
        }))
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        let Some(session) = socket.data::<Session>() else { return };
        let who = &session.principal;
        let room = tenant_room(&who.tenant);
        let with_offsets = self.feed.recovery.enabled();
        self.feed.bus.with_log(&who.tenant, |log| {
            // Under the tenant's lock: nothing is appended (or delivered) until
            // the socket is in the room and has its starting events queued.
            socket.join(&room);
            let base = match &session.start {
                Start::Recover { after_seq } => match log.after_seq(*after_seq, usize::MAX) {
                    Some(page) => {
                        for e in &page.events {
                            send_event(socket, e, with_offsets);
                        }
                        *after_seq
                    }
                    // Evicted in the instant since the CONNECT was accepted:
                    // say so with a snapshot rather than leave a hole.
                    None => send_snapshot(socket, log),
                },
                Start::Resume(since) => {
                    let page = log.after(since, usize::MAX);
                    emit_raw(socket, "replay_result", &raw(page_json(&page.events, false, page.gap)));
                    log.last_seq()
                }
                Start::Snapshot => send_snapshot(socket, log),
            };
            session.base_seq.store(base, Ordering::Relaxed);
        });
        // Redis mode: the session is kept from now on (renewed while the
        // socket lives), so the client can recover elsewhere even if this
        // instance crashes.
        if let (Some(cluster), Some(pid)) = (self.feed.cluster(), socket.pid()) {
            cluster.keep_session_later(pid, kept(socket, session));
        }
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        if socket.data::<Session>().is_none() {
            return;
        }
        let (feed, socket) = (self.feed.clone(), socket.clone());
        match event.name.as_str() {
            "replay" | "post_event" if feed.cluster().is_some() => queue_request(feed, socket, event),
            "replay" => run_now_or_spawn(replay(feed, socket, event)),
            "post_event" => run_now_or_spawn(post_event(feed, socket, event)),
            _ => {}
        }
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        let Some(session) = socket.data::<Session>() else { return };
        let who = &session.principal;
        if reason == DisconnectReason::Transport(CloseReason::SlowConsumer) {
            let peer = peer_of(socket);
            tracing::warn!(target: "audit", action = "disconnect", outcome = "slow_consumer", tenant = %who.tenant, user = %who.user, peer, "socket dropped: its queue overflowed");
        }
        // Keep the session for recovery only when the client lost it without
        // meaning to.
        let abnormal = matches!(reason, DisconnectReason::Transport(r) if r.is_abnormal());
        let Some(pid) = socket.pid() else { return };
        match (self.feed.cluster(), abnormal) {
            (None, true) => self.feed.recovery.keep(pid.to_owned(), kept(socket, session)),
            (None, false) => {}
            // Kept in Redis, so the client can come back on any instance.
            (Some(cluster), true) => cluster.keep_session_later(pid, kept(socket, session)),
            (Some(cluster), false) => cluster.forget_session_later(pid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_arguments() {
        assert_eq!(replay_args(&[]).unwrap(), (None, 100));
        assert_eq!(replay_args(&[json!({})]).unwrap(), (None, 100));
        assert_eq!(replay_args(&[json!({"limit": 5})]).unwrap(), (None, 5));
        let id = Uuid::new_v4();
        assert_eq!(replay_args(&[json!({"sinceId": id.to_string()})]).unwrap(), (Some(id), 100));
        for bad in [
            json!("x"),
            json!({"limit": 0}),
            json!({"limit": 1001}),
            json!({"limit": "5"}),
            json!({"limit": 1.5}),
            json!({"sinceId": "nope"}),
            json!({"sinceId": 5}),
        ] {
            assert_eq!(replay_args(std::slice::from_ref(&bad)).unwrap_err().code(), "bad_request", "{bad}");
        }
    }

    #[test]
    fn offsets_are_json_strings_of_the_seq() {
        for seq in [0, 7, 10, 42, 1234, u64::MAX] {
            assert_eq!(offset_json(seq).get(), format!("\"{seq}\""));
        }
    }

    #[test]
    fn post_arguments() {
        assert_eq!(post_args(&[json!({"message": "hi"})]).unwrap(), "hi");
        for bad in [json!({}), json!({"message": 5}), json!("hi"), json!(null)] {
            assert_eq!(post_args(std::slice::from_ref(&bad)).unwrap_err().code(), "bad_request", "{bad}");
        }
        assert_eq!(post_args(&[]).unwrap_err().code(), "bad_request");
    }
}
