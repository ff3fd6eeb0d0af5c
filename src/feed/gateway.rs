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
//! One socket's requests are carried out in the order they came: when the
//! store answers later (Redis), the next ones wait behind it (at most
//! [`MAX_QUEUED_REQUESTS`]).
//!
//! Coming back (see [`super::recovery`]): a CONNECT with the `pid` and
//! `offset` of a session kept after an abnormal disconnect, with the same
//! credentials, within the window, gets the same socket id and every missed
//! `event_created` instead of a snapshot. One with `auth.sinceId` (an event
//! id) gets `replay_result {events, hasMore, gap}` with everything after it
//! instead of the snapshot — that works across restarts, where `pid` cannot.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use eventfeed_protocol::engine::session::CloseReason;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::delivery::send_event;
use super::error::FeedError;
use super::event::{array_json, page_json};
use super::paging::{PageRequest, TenantView, since_member};
use super::recovery::{Kept, Owner, recovery_point};
use super::store::{Answer, Opening, Store};
use super::{Feed, Principal, SNAPSHOT_LIMIT, TENANT_ROOM_PREFIX, tenant_room};
use crate::engine::Conn;
use crate::http::{Peer, claimed};
use crate::sio::{
    Accept, Authorization, ConnectRejection, Connecting, Decision, Deferred, DisconnectReason, Event, NamespaceHandler,
    Socket,
};

/// `replay`s and `post_event`s one socket may have waiting behind one the
/// store has not answered yet; more are refused (`rate_limited`) until some
/// are done.
pub const MAX_QUEUED_REQUESTS: usize = 64;

/// The namespace handler of the feed over the store `S`.
pub struct Gateway<S: Store> {
    feed: Arc<Feed<S>>,
}

impl<S: Store> Clone for Gateway<S> {
    fn clone(&self) -> Self {
        Gateway { feed: self.feed.clone() }
    }
}

impl<S: Store> Gateway<S> {
    /// A handler serving `feed`.
    pub fn new(feed: Arc<Feed<S>>) -> Self {
        Gateway { feed }
    }
}

/// What the gateway keeps on each socket.
pub struct Session {
    principal: Principal,
    token_digest: [u8; 32],
    /// How the socket starts, decided when its CONNECT was accepted.
    start: Start,
    /// The last `seq` the socket was sent in full at connect (snapshot,
    /// replay or recovery point), for a later recovery without an offset.
    base_seq: AtomicU64,
    /// Requests waiting behind one the store answers later.
    requests: Mutex<Requests>,
}

impl Session {
    /// Who the socket is.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    fn requests(&self) -> MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A socket's requests, carried out one after another: one client's events
/// get `seq`s in the order it sent them, and a client cannot have more than
/// [`MAX_QUEUED_REQUESTS`] waiting.
#[derive(Default)]
struct Requests {
    queue: VecDeque<Event>,
    /// A task is carrying them out.
    running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// A snapshot of the latest events.
    Snapshot,
    /// Everything after this event id, as `replay_result`.
    Resume(Uuid),
    /// Connection state recovery: every event after this `seq`.
    Recover { after_seq: u64 },
}

type FeedSocket<S> = Socket<Gateway<S>>;

fn rejection(code: &str, message: &str) -> ConnectRejection {
    ConnectRejection { message: message.into(), data: Some(json!({"code": code, "message": message})) }
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned())
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
fn answer<S: Store>(
    socket: &FeedSocket<S>,
    event: Event,
    result: Result<Box<RawValue>, FeedError>,
    no_ack_event: Option<&str>,
) {
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

fn emit_raw<S: Store>(socket: &FeedSocket<S>, name: &str, body: &RawValue) {
    let frame = eventfeed_protocol::socket::encode_raw_event(socket.namespace().name(), name, &[body], None);
    let _ = socket.conn().send(frame);
}

/// Sends the snapshot; returns the `seq` it covers up to.
fn send_snapshot<S: Store>(socket: &FeedSocket<S>, log: &impl TenantView) -> u64 {
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

impl Admission {
    fn owner(&self) -> Owner<'_> {
        Owner { tenant: &self.principal.tenant, user: &self.principal.user, token_digest: &self.token_digest }
    }
}

/// The peer address as the audit log shows it (formatted only when a line is written).
fn peer_of(conn: &Conn) -> Peer {
    Peer(conn.peer())
}

impl<S: Store> Gateway<S> {
    /// Checks the credentials and the tenant's socket limit, and reads what
    /// the CONNECT asks for.
    fn admit(&self, connecting: &Connecting<'_, Self>, auth: Option<&Value>) -> Result<Admission, ConnectRejection> {
        let empty = Map::new();
        let auth = auth.and_then(Value::as_object).unwrap_or(&empty);
        let tenant = auth.get("tenantId").and_then(Value::as_str);
        let token = auth.get("token").and_then(Value::as_str);
        let (principal, token_digest) = match self.feed.authenticate_with_digest(tenant, token) {
            Ok(p) => p,
            Err(e) => {
                let peer = peer_of(connecting.conn);
                self.feed.auth_failed("socket");
                tracing::info!(target: "audit", action = "connect", outcome = "unauthorized", tenant = %claimed(tenant.unwrap_or("")), peer = %peer, "socket auth failed");
                return Err(ConnectRejection { message: "unauthorized".into(), data: Some(e.to_value()) });
            }
        };
        let max = self.feed.config.max_tenant_connections;
        if self.feed.delivery().subscribers(&principal.tenant) >= max {
            // Bound hit: this tenant has as many sockets as allowed; refuse this one.
            self.feed.metrics.reject("tenant_connections");
            let peer = peer_of(connecting.conn);
            tracing::warn!(target: "audit", action = "connect", outcome = "tenant_connection_limit", tenant = %principal.tenant, user = %principal.user, peer = %peer, max, "socket refused");
            let refusal = FeedError::TooManyConnections { retry_after: 1 };
            return Err(ConnectRejection { message: "too many connections".into(), data: Some(refusal.to_value()) });
        }
        let since = since_member(auth.get("sinceId")).map_err(|e| rejection(e.code(), &e.to_string()))?;
        let pid = match auth.get("pid") {
            Some(Value::String(pid)) if self.feed.config.recovery() => Some(pid.clone()),
            _ => None,
        };
        Ok(Admission { principal, token_digest, pid, offset: auth.get("offset").cloned(), since })
    }

    /// Decides how the socket starts, given what the store said when the
    /// tenant was opened: the kept session its `pid` named, if it was found
    /// for these credentials.
    fn decide(&self, conn: &Conn, admission: Admission, opened: Result<Option<Kept>, FeedError>) -> Decision<Session> {
        let kept = opened.map_err(|e| ConnectRejection { message: "unavailable".into(), data: Some(e.to_value()) })?;
        let Admission { principal, token_digest, pid, offset, since } = admission;
        let mut start = Start::Snapshot;
        let mut accept_id = None;
        let mut accept_pid = None;
        if self.feed.config.recovery() {
            if let (Some(pid), Some(kept)) = (pid, kept) {
                let room_for = self.feed.config.max_recovered_events;
                let point = self
                    .feed
                    .store
                    .with_tenant(&kept.tenant, |log| recovery_point(log, &kept, offset.as_ref(), room_for));
                let peer = peer_of(conn);
                match point {
                    Some(after_seq) => {
                        accept_id = Some(kept.sid);
                        accept_pid = Some(pid);
                        start = Start::Recover { after_seq };
                        tracing::info!(target: "audit", action = "connect", outcome = "recovered", tenant = %principal.tenant, user = %principal.user, peer = %peer, "session recovered");
                    }
                    None => {
                        tracing::info!(target: "audit", action = "connect", outcome = "not_recoverable", tenant = %principal.tenant, user = %principal.user, peer = %peer, "missed events no longer retained; fresh session");
                    }
                }
            }
            accept_pid = Some(accept_pid.unwrap_or_else(crate::engine::new_sid));
        }
        if start == Start::Snapshot
            && let Some(id) = since
        {
            start = Start::Resume(id);
        }
        let session = Session {
            principal,
            token_digest,
            start,
            base_seq: AtomicU64::new(0),
            requests: Mutex::new(Requests::default()),
        };
        Ok(Accept { data: session, id: accept_id, pid: accept_pid })
    }

    /// Carries out a `replay` or `post_event`: answers it now when the store
    /// answers now, else gives the work that answers it later.
    fn begin(
        &self,
        socket: &Arc<FeedSocket<S>>,
        event: Event,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<S>> {
        use futures_util::future::Either;
        match event.name.as_str() {
            "replay" => self.replay(socket, event).map(Either::Left),
            "post_event" => self.post_event(socket, event).map(Either::Right),
            _ => None,
        }
    }

    fn replay(
        &self,
        socket: &Arc<FeedSocket<S>>,
        event: Event,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<S>> {
        let page = match PageRequest::from_value(event.args.first()) {
            Ok(request) => self.feed.read(&socket.data().principal, request),
            Err(e) => Answer::Now(Err(e)),
        };
        let body = |page: Result<super::Page, FeedError>| page.map(|p| raw(page_json(&p.events, p.has_more, p.gap)));
        match page {
            Answer::Now(result) => {
                answer(socket, event, body(result), Some("replay_result"));
                None
            }
            Answer::Later(page) => {
                let socket = socket.clone();
                Some(async move { answer(&socket, event, body(page.await), Some("replay_result")) })
            }
        }
    }

    fn post_event(
        &self,
        socket: &Arc<FeedSocket<S>>,
        event: Event,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<S>> {
        let created = match post_args(&event.args) {
            Ok(message) => self.feed.post(&socket.data().principal, message),
            Err(e) => Answer::Now(Err(e)),
        };
        let reply = |socket: &FeedSocket<S>, event: Event, result: Result<Arc<super::StoredEvent>, FeedError>| {
            let who = &socket.data().principal;
            let peer = peer_of(socket.conn());
            let result = match result {
                Ok(e) => {
                    tracing::info!(target: "audit", action = "post_event", outcome = "created", tenant = %who.tenant, user = %who.user, event_id = %e.id, peer = %peer, "event created");
                    Ok(event_body(&e))
                }
                Err(e) => {
                    tracing::info!(target: "audit", action = "post_event", outcome = e.code(), tenant = %who.tenant, user = %who.user, peer = %peer, "event refused");
                    Err(e)
                }
            };
            answer(socket, event, result, None);
        };
        match created {
            Answer::Now(result) => {
                reply(socket, event, result);
                None
            }
            Answer::Later(created) => {
                let socket = socket.clone();
                Some(async move { reply(&socket, event, created.await) })
            }
        }
    }

    /// Takes a `replay` or `post_event` in turn: at once when nothing of this
    /// socket's is waiting for the store, else behind what is.
    fn request(&self, socket: &Arc<FeedSocket<S>>, event: Event) {
        {
            let mut requests = socket.data().requests();
            if requests.running {
                if requests.queue.len() >= MAX_QUEUED_REQUESTS {
                    // Bound hit: the client asks faster than the store answers; refuse this one.
                    drop(requests);
                    answer(socket, event, Err(FeedError::RateLimited { retry_after: 1 }), None);
                } else {
                    requests.queue.push_back(event);
                }
                return;
            }
        }
        let Some(first) = self.begin(socket, event) else { return };
        socket.data().requests().running = true;
        let (gateway, socket) = (self.clone(), socket.clone());
        tokio::spawn(async move {
            first.await;
            loop {
                let next = {
                    let mut requests = socket.data().requests();
                    match requests.queue.pop_front() {
                        Some(event) => event,
                        None => {
                            requests.running = false;
                            return;
                        }
                    }
                };
                if let Some(work) = gateway.begin(&socket, next) {
                    work.await;
                }
            }
        });
    }
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

/// What is kept of a socket for its recovery.
fn kept<S: Store>(socket: &FeedSocket<S>) -> Kept {
    let session = socket.data();
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

impl<S: Store> NamespaceHandler for Gateway<S> {
    type Data = Session;

    fn authorize(
        &self,
        connecting: &Connecting<'_, Self>,
        auth: Option<&Value>,
    ) -> Authorization<Session, impl Deferred<Session> + use<S>> {
        let admission = match self.admit(connecting, auth) {
            Ok(a) => a,
            Err(rejection) => return Authorization::Now(Err(rejection)),
        };
        let opening = Opening {
            tenant: &admission.principal.tenant,
            fresh: admission.since.is_some(),
            recover: admission.pid.as_deref().map(|pid| (pid, admission.owner())),
        };
        match self.feed.store.open(opening) {
            Answer::Now(opened) => Authorization::Now(self.decide(connecting.conn, admission, opened)),
            Answer::Later(opened) => {
                let (gateway, conn) = (self.clone(), connecting.conn.clone());
                Authorization::Later(async move { gateway.decide(&conn, admission, opened.await) })
            }
        }
    }

    fn on_connect(&self, socket: &Arc<FeedSocket<S>>) {
        let session = socket.data();
        let who = &session.principal;
        let room = tenant_room(&who.tenant);
        let with_offsets = self.feed.config.recovery();
        self.feed.store.with_tenant(&who.tenant, |log| {
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
        if let Some(pid) = socket.pid() {
            self.feed.store.session_opened(pid, || kept(socket));
        }
    }

    fn on_event(&self, socket: &Arc<FeedSocket<S>>, event: Event) {
        if matches!(event.name.as_str(), "replay" | "post_event") {
            self.request(socket, event);
        }
    }

    fn on_disconnect(&self, socket: &Arc<FeedSocket<S>>, reason: DisconnectReason) {
        let who = &socket.data().principal;
        if reason == DisconnectReason::Transport(CloseReason::SlowConsumer) {
            let peer = peer_of(socket.conn());
            tracing::warn!(target: "audit", action = "disconnect", outcome = "slow_consumer", tenant = %who.tenant, user = %who.user, peer = %peer, "socket dropped: its queue overflowed");
        }
        // Kept for recovery only when the client lost it without meaning to.
        let abnormal = matches!(reason, DisconnectReason::Transport(r) if r.is_abnormal());
        if let Some(pid) = socket.pid() {
            self.feed.store.session_closed(pid, abnormal, || kept(socket));
        }
    }

    fn allows_remote_room_change(&self, room: &str) -> bool {
        // A tenant's room is joined and left only by this server: tenant isolation.
        !room.starts_with(TENANT_ROOM_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_arguments() {
        assert_eq!(post_args(&[json!({"message": "hi"})]).unwrap(), "hi");
        for bad in [json!({}), json!({"message": 5}), json!("hi"), json!(null)] {
            assert_eq!(post_args(std::slice::from_ref(&bad)).unwrap_err().code(), "bad_request", "{bad}");
        }
        assert_eq!(post_args(&[]).unwrap_err().code(), "bad_request");
    }
}
