//! The feed's Socket.IO namespace.
//!
//! CONNECT carries `auth: {tenantId, token}` (a tokens-file token or a JWT,
//! see [`super::auth`]); a refusal is CONNECT_ERROR with message
//! `unauthorized` and `data: {code, message}`, the code telling a client
//! whether to fetch a new token (`token_expired`, `invalid_token`) or give up
//! (`unauthorized`, `wrong_tenant`, `revoked`). On connect the socket joins
//! `tenant:{id}` and gets a `snapshot` — both under the tenant's store lock,
//! so no event falls between the snapshot and the first `event_created`, and
//! none comes twice.
//!
//! Client events ([`requests`]): `replay {sinceId?, limit?}`,
//! `post_event {message}` and `refresh_token {token}`, answered through the
//! ack when there is one, else with `replay_result` / `token_refreshed` /
//! the `error` event. Malformed arguments get `bad_request`; the socket stays.
//!
//! A socket opened with a JWT lives by it ([`session`]): `token_expiring`
//! once before its `exp`, then, without a refresh, `error {code:
//! token_expired}` and the end of its Engine.IO session (a transport close:
//! the official client reconnects by itself, and may recover). After a
//! reload of the credentials, [`Gateway::revalidate`] looks at each socket
//! again: revoked ones get `error {code: unauthorized}` and a DISCONNECT,
//! those whose key left the JWKS are closed like an expiry (`token_revoked`),
//! the others take their role as it is now.
//!
//! Coming back (see [`super::recovery`]): a CONNECT with the `pid` and
//! `offset` of a session kept after an abnormal disconnect, by the same
//! identity (tenant and token, or tenant and JWT user), within the window,
//! gets the same socket id and every missed `event_created` instead of a
//! snapshot. One with `auth.sinceId` (an event id) gets `replay_result
//! {events, hasMore, gap}` with everything after it instead of the snapshot —
//! that works across restarts, where `pid` cannot.

mod requests;
mod session;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use eventfeed_protocol::engine::session::CloseReason;
use futures_util::future::Either;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub use requests::MAX_QUEUED_REQUESTS;
pub use session::Session;

use super::auth::{AuthFailure, Authenticated, Check};
use super::delivery::send_event;
use super::error::FeedError;
use super::event::{array_json, page_json};
use super::paging::{TenantView, since_member};
use super::recovery::{Kept, Owner, recovery_point, went_back};
use super::store::{Answer, Opening, Store};
use super::{Feed, SNAPSHOT_LIMIT, TENANT_ROOM_PREFIX, tenant_room};
use crate::engine::Conn;
use crate::http::{Peer, claimed};
use crate::sio::{
    Accept, Authorization, ConnectRejection, Connecting, Decision, Deferred, DisconnectReason, Event, NamespaceHandler,
    Socket,
};
use session::Start;

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

type FeedSocket<S> = Socket<Gateway<S>>;

fn rejection(code: &str, message: &str) -> ConnectRejection {
    ConnectRejection { message: message.into(), data: Some(json!({"code": code, "message": message})) }
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn emit_raw<S: Store>(socket: &FeedSocket<S>, name: &str, body: &RawValue) {
    let frame = eventfeed_protocol::socket::encode_raw_event(socket.namespace().name(), name, &[body], None);
    let _ = socket.conn().send(frame);
}

/// Emits `error {code, message}` (a code the feed's errors do not have).
fn emit_error<S: Store>(socket: &FeedSocket<S>, code: &str, message: &str) {
    let _ = socket.emit("error", vec![json!({"code": code, "message": message})], vec![]);
}

/// A JWT's `exp` as the socket events tell it (ISO 8601, UTC).
fn iso(exp: i64) -> String {
    eventfeed_protocol::date::iso_string(exp as f64 * 1000.0).unwrap_or_default()
}

/// Sends the snapshot; returns the `seq` it covers up to.
fn send_snapshot<S: Store>(socket: &FeedSocket<S>, log: &impl TenantView) -> u64 {
    let snapshot = raw(array_json(&log.latest(SNAPSHOT_LIMIT).events));
    emit_raw(socket, "snapshot", &snapshot);
    log.last_seq()
}

/// The peer address as the audit log shows it (formatted only when a line is written).
fn peer_of(conn: &Conn) -> Peer {
    Peer(conn.peer())
}

/// What a CONNECT asks for besides its credentials (read before they are
/// checked, so a check that waits carries it along).
struct Asked {
    tenant: Option<String>,
    /// `auth.pid`, to recover a kept session.
    pid: Option<String>,
    /// `auth.offset`.
    offset: Option<Value>,
    /// `auth.sinceId`, checked later (after the credentials).
    since: Result<Option<Uuid>, FeedError>,
}

/// A CONNECT whose credentials and limits were checked.
struct Admission {
    who: Authenticated,
    binding: [u8; 32],
    pid: Option<String>,
    offset: Option<Value>,
    since: Option<Uuid>,
}

impl Admission {
    fn owner(&self) -> Owner<'_> {
        Owner { tenant: &self.who.principal.tenant, user: &self.who.principal.user, token_digest: &self.binding }
    }
}

impl<S: Store> Gateway<S> {
    /// Refuses a CONNECT whose credentials failed: counted, audited, and
    /// told with the code a client decides on.
    fn refused(&self, conn: &Conn, tenant: Option<&str>, failure: AuthFailure) -> ConnectRejection {
        self.feed.auth_failed("socket", failure);
        let peer = peer_of(conn);
        tracing::info!(target: "audit", action = "connect", outcome = "unauthorized", reason = failure.reason(), tenant = %claimed(tenant.unwrap_or("")), peer = %peer, "socket auth failed");
        ConnectRejection {
            message: "unauthorized".into(),
            data: Some(json!({"code": failure.code(), "message": failure.message()})),
        }
    }

    /// Checks the credentials' outcome and the tenant's connection limit.
    fn admit(
        &self,
        conn: &Conn,
        asked: Asked,
        authenticated: Result<Authenticated, AuthFailure>,
    ) -> Result<Admission, ConnectRejection> {
        let who = authenticated.map_err(|failure| self.refused(conn, asked.tenant.as_deref(), failure))?;
        let max = self.feed.config.max_tenant_connections;
        if self.feed.delivery().subscribers(&who.principal.tenant) >= max {
            // Bound hit: this tenant has as many sockets as allowed; refuse this one.
            self.feed.metrics.reject("tenant_connections");
            let peer = peer_of(conn);
            tracing::warn!(target: "audit", action = "connect", outcome = "tenant_connection_limit", tenant = %who.principal.tenant, user = %who.principal.user, peer = %peer, max, "socket refused");
            let refusal = FeedError::TooManyConnections { retry_after: 1 };
            return Err(ConnectRejection { message: "too many connections".into(), data: Some(refusal.to_value()) });
        }
        let since = asked.since.map_err(|e| rejection(e.code(), &e.to_string()))?;
        let binding = who.credential.binding();
        Ok(Admission { who, binding, pid: asked.pid, offset: asked.offset, since })
    }

    /// Opens the tenant in the store (taking the kept session asked for)
    /// and decides how the socket starts.
    fn open(
        &self,
        conn: &Arc<Conn>,
        admission: Admission,
    ) -> Answer<Decision<Session>, impl Deferred<Session> + use<S>> {
        let opening = Opening {
            tenant: &admission.who.principal.tenant,
            fresh: admission.since.is_some(),
            recover: admission.pid.as_deref().map(|pid| (pid, admission.owner())),
        };
        match self.feed.store.open(opening) {
            Answer::Now(opened) => Answer::Now(self.decide(conn, admission, opened)),
            Answer::Later(opened) => {
                let (gateway, conn) = (self.clone(), conn.clone());
                Answer::Later(async move { gateway.decide(&conn, admission, opened.await) })
            }
        }
    }

    /// Decides how the socket starts, given what the store said when the
    /// tenant was opened: the kept session its `pid` named, if it was found
    /// for this identity and its credentials still hold.
    fn decide(&self, conn: &Conn, admission: Admission, opened: Result<Option<Kept>, FeedError>) -> Decision<Session> {
        let kept = opened.map_err(|e| ConnectRejection { message: "unavailable".into(), data: Some(e.to_value()) })?;
        let Admission { who, pid, offset, since, .. } = admission;
        let principal = &who.principal;
        let mut start = Start::Snapshot;
        let mut accept_id = None;
        let mut accept_pid = None;
        if self.feed.config.recovery() {
            if let (Some(pid), Some(kept)) = (pid, kept) {
                let peer = peer_of(conn);
                let point = if self.feed.credentials.keeps(&kept) {
                    let room_for = self.feed.config.max_recovered_events;
                    let store = &self.feed.store;
                    let (point, back) = store.with_tenant(&kept.tenant, |log| {
                        (
                            recovery_point(log, &kept, offset.as_ref(), room_for),
                            went_back(log, &kept).then(|| log.epoch()),
                        )
                    });
                    if let Some(epoch) = back {
                        // This session was sent events the history no longer
                        // reaches: it went back, and starts a new epoch.
                        tracing::warn!(tenant = %principal.tenant, "a kept session is ahead of the tenant's history: the history went back; starting a new epoch");
                        store.history_went_back(&kept.tenant, epoch);
                    }
                    point
                } else {
                    tracing::info!(target: "audit", action = "connect", outcome = "not_recoverable", reason = "revoked", tenant = %principal.tenant, user = %principal.user, peer = %peer, "the kept session's credentials were revoked; fresh session");
                    None
                };
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
        let session = Session::new(who.principal, who.credential, start, self.feed.credentials.leeway());
        Ok(Accept { data: session, id: accept_id, pid: accept_pid })
    }

    /// Looks at a live socket's credentials again (after a reload, or a
    /// JWKS change): revoked ones get `error {code: unauthorized}` and a
    /// namespace DISCONNECT (the client does not come back by itself); a JWT
    /// whose key left the JWKS ends like an expiry (`token_revoked`, a
    /// transport close: the client comes back with a current token); the
    /// others keep going with their role as it is now.
    pub fn revalidate(&self, socket: &Arc<FeedSocket<S>>) {
        let session = socket.data();
        let who = &session.principal;
        match self.feed.credentials.check(&who.tenant, &session.credential()) {
            Check::Accepted(role) => session.set_role(role),
            Check::Revoked => {
                let peer = peer_of(socket.conn());
                tracing::info!(target: "audit", action = "disconnect", outcome = "credentials_revoked", tenant = %who.tenant, user = %who.user, peer = %peer, "socket's credentials no longer accepted");
                emit_error(socket, "unauthorized", "these credentials are no longer accepted");
                socket.disconnect();
            }
            Check::KeyGone => {
                let peer = peer_of(socket.conn());
                tracing::info!(target: "audit", action = "disconnect", outcome = "token_revoked", tenant = %who.tenant, user = %who.user, peer = %peer, "socket's token was signed by a key no longer in the JWKS");
                emit_error(
                    socket,
                    "token_revoked",
                    "the token's signing key was withdrawn; reconnect with a new token",
                );
                socket.conn().close(CloseReason::CredentialsExpired);
            }
        }
    }
}

impl<S: Store> NamespaceHandler for Gateway<S> {
    type Data = Session;

    fn authorize(
        &self,
        connecting: &Connecting<'_, Self>,
        auth: Option<&Value>,
    ) -> Authorization<Session, impl Deferred<Session> + use<S>> {
        let empty = Map::new();
        let auth = auth.and_then(Value::as_object).unwrap_or(&empty);
        let tenant = auth.get("tenantId").and_then(Value::as_str);
        let token = auth.get("token").and_then(Value::as_str);
        let asked = Asked {
            tenant: tenant.map(str::to_owned),
            pid: match auth.get("pid") {
                Some(Value::String(pid)) if self.feed.config.recovery() => Some(pid.clone()),
                _ => None,
            },
            offset: auth.get("offset").cloned(),
            since: since_member(auth.get("sinceId")),
        };
        let conn = connecting.conn;
        match self.feed.authenticate(tenant, token) {
            Answer::Now(authenticated) => match self.admit(conn, asked, authenticated) {
                Err(refusal) => Authorization::Now(Err(refusal)),
                Ok(admission) => match self.open(conn, admission) {
                    Answer::Now(decision) => Authorization::Now(decision),
                    Answer::Later(decision) => Authorization::Later(Either::Left(decision)),
                },
            },
            // A JWT whose key the JWKS may have gained: decided after a refetch.
            Answer::Later(authenticated) => {
                let (gateway, conn) = (self.clone(), conn.clone());
                Authorization::Later(Either::Right(async move {
                    let admission = gateway.admit(&conn, asked, authenticated.await)?;
                    gateway.open(&conn, admission).await
                }))
            }
        }
    }

    fn on_connect(&self, socket: &Arc<FeedSocket<S>>) {
        let session = socket.data();
        let who = &session.principal;
        let room = tenant_room(&who.tenant);
        let with_offsets = self.feed.config.recovery();
        self.feed.store.with_tenant(&who.tenant, |log| {
            let epoch = log.epoch();
            let _ = session.base_epoch.set(epoch);
            let offset_in = with_offsets.then_some(epoch);
            // Under the tenant's lock: nothing is appended (or delivered) until
            // the socket is in the room and has its starting events queued.
            socket.join(&room);
            let base = match &session.start {
                Start::Recover { after_seq } => match log.after_seq(*after_seq, usize::MAX) {
                    Some(page) => {
                        for e in &page.events {
                            send_event(socket, e, offset_in);
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
            self.feed.store.session_opened(pid, || session.kept(socket.id()));
        }
        if session.deadline().is_some() {
            // The session's timer now has this socket's expiry to wake for.
            socket.conn().reschedule();
        }
    }

    fn on_event(&self, socket: &Arc<FeedSocket<S>>, event: Event) {
        match event.name.as_str() {
            "replay" | "post_event" => self.request(socket, event),
            "refresh_token" => self.refresh_token(socket, event),
            _ => {}
        }
    }

    fn poll_timeout(&self, socket: &FeedSocket<S>) -> Option<Instant> {
        socket.data().deadline()
    }

    fn on_timeout(&self, socket: &Arc<FeedSocket<S>>, now: Instant) {
        let session = socket.data();
        let (warn, ended) = session.due(now);
        let who = &session.principal;
        if ended {
            self.feed.metrics.token_expiries.inc();
            let peer = peer_of(socket.conn());
            tracing::info!(target: "audit", action = "disconnect", outcome = "token_expired", tenant = %who.tenant, user = %who.user, peer = %peer, "socket's token expired");
            emit_error(socket, "token_expired", "the token expired; reconnect with a new token");
            // A transport close, not a DISCONNECT: the client reconnects by
            // itself (with a fresh token) and recovers what it missed.
            socket.conn().close(CloseReason::CredentialsExpired);
        } else if let Some(exp) = warn {
            let _ = socket.emit("token_expiring", vec![json!({"expiresAt": iso(exp)})], vec![]);
        }
    }

    fn on_disconnect(&self, socket: &Arc<FeedSocket<S>>, reason: DisconnectReason) {
        let session = socket.data();
        let who = &session.principal;
        if reason == DisconnectReason::Transport(CloseReason::SlowConsumer) {
            let peer = peer_of(socket.conn());
            tracing::warn!(target: "audit", action = "disconnect", outcome = "slow_consumer", tenant = %who.tenant, user = %who.user, peer = %peer, "socket dropped: its queue overflowed");
        }
        // Kept for recovery only when the client lost it without meaning to.
        let abnormal = matches!(reason, DisconnectReason::Transport(r) if r.is_abnormal());
        if let Some(pid) = socket.pid() {
            self.feed.store.session_closed(pid, abnormal, || session.kept(socket.id()));
        }
    }

    fn allows_remote_room_change(&self, room: &str) -> bool {
        // A tenant's room is joined and left only by this server: tenant isolation.
        !room.starts_with(TENANT_ROOM_PREFIX)
    }

    fn describe(&self, socket: &FeedSocket<S>) -> Map<String, Value> {
        // Who the socket is, for operators; never its token.
        let who = &socket.data().principal;
        let mut data = Map::new();
        data.insert("tenant".into(), Value::String(who.tenant.clone()));
        data.insert("user".into(), Value::String(who.user.clone()));
        data
    }

    fn allows_operator_emit(&self, event: &str) -> bool {
        // The feed's own events are its history and its answers: an operator
        // emitting one would forge them.
        !matches!(event, "event_created" | "snapshot" | "replay_result" | "error") && !event.starts_with("token_")
    }
}
