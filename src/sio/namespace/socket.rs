//! A socket: one client's connection to one namespace, over one Engine.IO
//! session. Emits, acknowledgements both ways, rooms, and the application's
//! typed data.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use eventfeed_protocol::adapter::FetchedSocket;
use eventfeed_protocol::socket::session::{Acks, TooManyAcks};
use eventfeed_protocol::socket::{Encoded, Packet, encode_raw_ack};
use prometheus_client::metrics::counter::Counter;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{Accept, DisconnectReason, Namespace, NamespaceHandler};
use crate::engine::{Conn, SendError};
use crate::sio::{Client, DynSocket};

/// An event received from the client.
#[derive(Debug)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// The arguments after the name (placeholders stand for attachments).
    pub args: Vec<Value>,
    /// Binary attachments, in placeholder order.
    pub attachments: Vec<Bytes>,
    /// Present when the client asked for an acknowledgement.
    pub ack: Option<AckSender>,
}

/// Answers one client event's acknowledgement (once).
#[derive(Debug)]
pub struct AckSender {
    conn: Arc<Conn>,
    nsp: Arc<str>,
    id: u64,
}

impl AckSender {
    /// The ack id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends the acknowledgement with `args` (binary if `attachments` is not empty).
    pub fn send(self, args: Vec<Value>, attachments: Vec<Bytes>) -> Result<(), SendError> {
        self.conn.send_packet(&Packet::ack(&self.nsp, self.id, args, attachments).encode())
    }

    /// Sends the acknowledgement with arguments that are already JSON.
    pub fn send_raw(self, args: &[&RawValue]) -> Result<(), SendError> {
        self.conn.send(encode_raw_ack(&self.nsp, self.id, args))
    }
}

/// The client's answer to a server emit with ack.
#[derive(Debug, Clone, PartialEq)]
pub struct AckReply {
    /// The arguments.
    pub args: Vec<Value>,
    /// Binary attachments.
    pub attachments: Vec<Bytes>,
}

/// Why a server emit with ack got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No answer within the timeout.
    #[error("acknowledgement timed out")]
    Timeout,
    /// The socket disconnected first.
    #[error("socket disconnected")]
    Disconnected,
    /// The packet could not be queued.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Too many acknowledgements are pending on this socket.
    #[error(transparent)]
    TooMany(#[from] TooManyAcks),
}

/// What a socket is made of besides its namespace and the handler's decision.
pub struct SocketParts {
    /// The Engine.IO session.
    pub(super) conn: Arc<Conn>,
    /// The session's Socket.IO state.
    pub(super) client: Weak<Client>,
    /// Server-to-client acknowledgements pending at most.
    pub(super) max_acks: usize,
    /// Where refusals at that bound are counted.
    pub(super) ack_limit_rejections: Counter,
}

/// One client's connection to one namespace.
pub struct Socket<H: NamespaceHandler> {
    id: Arc<str>,
    pid: Option<Box<str>>,
    nsp: Arc<Namespace<H>>,
    conn: Arc<Conn>,
    client: Weak<Client>,
    rooms: Mutex<Vec<Arc<str>>>,
    acks: Mutex<Acks<oneshot::Sender<AckReply>>>,
    connected: AtomicBool,
    ack_limit_rejections: Counter,
    /// When the socket connected, ms since the Unix epoch (its handshake's
    /// `issued`, as `fetchSockets` and the Admin UI show it).
    issued: u64,
    data: H::Data,
}

impl<H: NamespaceHandler> std::fmt::Debug for Socket<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.id).field("nsp", &self.nsp.name()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<H: NamespaceHandler> Socket<H> {
    pub(super) fn new(nsp: Arc<Namespace<H>>, parts: SocketParts, accept: Accept<H::Data>) -> Self {
        let id: Arc<str> = match accept.id {
            Some(id) => id.into(),
            None => crate::engine::new_sid().into(),
        };
        Socket {
            id,
            pid: accept.pid.map(String::into_boxed_str),
            nsp,
            conn: parts.conn,
            client: parts.client,
            rooms: Mutex::new(Vec::new()),
            acks: Mutex::new(Acks::new(parts.max_acks)),
            connected: AtomicBool::new(false),
            ack_limit_rejections: parts.ack_limit_rejections,
            issued: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            data: accept.data,
        }
    }

    /// The socket id (sent to the client in the CONNECT answer).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// The private session id, when recovery is on.
    pub fn pid(&self) -> Option<&str> {
        self.pid.as_deref()
    }

    /// The application's data, decided when the CONNECT was accepted.
    pub fn data(&self) -> &H::Data {
        &self.data
    }

    /// The namespace.
    pub fn namespace(&self) -> &Arc<Namespace<H>> {
        &self.nsp
    }

    /// The Engine.IO session under this socket.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Whether the socket is still connected to its namespace.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire) && !self.conn.is_closed()
    }

    pub(super) fn set_connected(&self, v: bool) -> bool {
        self.connected.swap(v, Ordering::AcqRel)
    }

    /// Emits `event` with `args` (binary if `attachments` is not empty).
    pub fn emit(&self, event: &str, args: Vec<Value>, attachments: Vec<Bytes>) -> Result<(), SendError> {
        self.send_encoded(&Packet::event(self.nsp.name(), event, args, None, attachments).encode())
    }

    /// Queues an already encoded packet (built for this namespace).
    pub fn send_encoded(&self, packet: &Encoded) -> Result<(), SendError> {
        self.conn.send_packet(packet)
    }

    /// Emits `event` and waits up to `timeout` for the client's acknowledgement.
    pub fn emit_with_ack(
        self: &Arc<Self>,
        event: &str,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<AckReply, AckError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = lock(&self.acks)
            .insert(crate::engine::now(), timeout, tx)
            .map_err(|e| {
                // Bound hit: refuse this emit at once (counted) rather than queue more.
                self.ack_limit_rejections.inc();
                AckError::from(e)
            })
            .and_then(|id| {
                let packet = Packet::event(self.nsp.name(), event, args, Some(id), attachments);
                match self.conn.send_packet(&packet.encode()) {
                    Ok(()) => Ok(id),
                    Err(e) => {
                        lock(&self.acks).resolve(id);
                        Err(AckError::from(e))
                    }
                }
            });
        let socket = self.clone();
        async move {
            let id = queued?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(AckError::Disconnected),
                Err(_) => {
                    lock(&socket.acks).resolve(id);
                    Err(AckError::Timeout)
                }
            }
        }
    }

    /// Joins `room`.
    pub fn join(self: &Arc<Self>, room: &str) {
        {
            let mut rooms = lock(&self.rooms);
            if rooms.iter().any(|r| &**r == room) || !self.is_connected() {
                return;
            }
            let room: Arc<str> = room.into();
            rooms.push(room.clone());
            // Under the socket's lock: its list and the room index agree.
            self.nsp.join(room, self);
        }
        if let Some(o) = self.nsp.observing() {
            o.joined(self.nsp.name(), room, &self.id);
        }
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) {
        {
            let mut rooms = lock(&self.rooms);
            let Some(i) = rooms.iter().position(|r| &**r == room) else { return };
            rooms.swap_remove(i);
            self.nsp.leave(room, self.id());
        }
        if let Some(o) = self.nsp.observing() {
            o.left(self.nsp.name(), room, &self.id);
        }
    }

    /// The rooms this socket is in.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        lock(&self.rooms).clone()
    }

    pub(super) fn in_any(&self, rooms: &[&str]) -> bool {
        !rooms.is_empty() && (rooms.contains(&&*self.id) || lock(&self.rooms).iter().any(|r| rooms.contains(&&**r)))
    }

    pub(super) fn take_rooms(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *lock(&self.rooms))
    }

    /// Disconnects the socket from its namespace (the client gets DISCONNECT);
    /// the Engine.IO session stays for other namespaces.
    pub fn disconnect(self: &Arc<Self>) {
        if !self.is_connected() {
            return;
        }
        let _ = self.conn.send_packet(&Packet::disconnect(self.nsp.name()).encode());
        if let Some(client) = self.client.upgrade() {
            client.remove_socket(self.nsp.name(), DisconnectReason::ServerNamespaceDisconnect);
        }
    }

    /// Disconnects the socket (DISCONNECT: the client stays away); with
    /// `close`, closes its Engine.IO session instead, as Node does — the
    /// client sees "transport close", comes back by itself, and may recover.
    pub fn disconnect_and_close(self: &Arc<Self>, close: bool) {
        if close {
            self.conn.close(eventfeed_protocol::engine::session::CloseReason::ServerClose);
        } else {
            self.disconnect();
        }
    }

    /// Removes the socket from its namespace and rooms, fails its pending
    /// acks, and tells the handler. Runs once.
    pub(super) fn cleanup(self: &Arc<Self>, reason: DisconnectReason) {
        if !self.set_connected(false) {
            return;
        }
        self.nsp.remove(self);
        if let Some(o) = self.nsp.observing() {
            o.disconnected(self.nsp.name(), &self.id, reason.as_str());
        }
        // Dropping the senders wakes every waiter with `Disconnected`.
        drop(lock(&self.acks).drain().collect::<Vec<_>>());
        self.nsp.handler().on_disconnect(self, reason);
    }

    /// What `fetchSockets` reports of this socket to another server (and the
    /// Admin UI shows): its id, rooms (its own id among them, as Node's
    /// sockets are in theirs), peer address, and as `data` what the handler
    /// describes plus `_admin: {clientId, transport}` (where Node's Admin UI
    /// instrumentation keeps them). Never the CONNECT payload nor a header:
    /// they hold credentials. `clientId` names the Engine.IO session without
    /// giving its `sid` away (which would let anyone poll as that client).
    pub(crate) fn fetched(&self) -> FetchedSocket {
        let mut rooms = vec![self.id.to_string()];
        rooms.extend(self.rooms().iter().map(|r| r.to_string()));
        let address = self.conn.peer().map(|p| p.ip().to_string()).unwrap_or_default();
        let mut data = self.nsp.handler().describe(self);
        data.insert(
            "_admin".into(),
            json!({"clientId": client_id(self.conn.sid()), "transport": self.conn.transport().as_str()}),
        );
        FetchedSocket {
            id: self.id.to_string(),
            handshake: json!({
                "headers": {},
                "time": eventfeed_protocol::date::iso_string(self.issued as f64).unwrap_or_default(),
                "address": address,
                "xdomain": false,
                "secure": false,
                "issued": self.issued,
                "url": "/socket.io/",
                "query": {},
                "auth": {},
            }),
            rooms,
            data: Value::Object(data),
        }
    }
}

/// A stable, short name for an Engine.IO session that does not reveal its
/// `sid`: 12 hex digits of a hash of it.
fn client_id(sid: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    sid.hash(&mut h);
    format!("{:012x}", h.finish() >> 16)
}

impl<H: NamespaceHandler> DynSocket for Socket<H> {
    fn on_event(self: Arc<Self>, event: Event) {
        self.nsp.handler().on_event(&self, event);
    }

    fn resolve_ack(&self, id: u64, reply: AckReply) {
        if let Some(tx) = lock(&self.acks).resolve(id) {
            let _ = tx.send(reply);
        }
    }

    fn ack_sender(&self, id: u64) -> AckSender {
        AckSender { conn: self.conn.clone(), nsp: self.nsp.name_arc().clone(), id }
    }

    fn cleanup(self: Arc<Self>, reason: DisconnectReason) {
        Socket::cleanup(&self, reason);
    }

    fn on_upgrade(&self) {
        if let Some(o) = self.nsp.observing() {
            o.upgraded(self.nsp.name(), &self.id, self.conn.transport().as_str());
        }
    }

    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.nsp.handler().poll_timeout(self)
    }

    fn on_timeout(self: Arc<Self>, now: std::time::Instant) {
        if self.nsp.handler().poll_timeout(&self).is_some_and(|at| at <= now) {
            self.nsp.handler().on_timeout(&self, now);
        }
    }
}
