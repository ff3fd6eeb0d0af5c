//! A socket: one client's connection to one namespace, over one Engine.IO
//! session. Emits, acknowledgements both ways, rooms, per-socket data.

use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use eventfeed_protocol::socket::session::{Acks, TooManyAcks};
use eventfeed_protocol::socket::{Encoded, Packet, encode_raw_ack};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::Client;
use super::namespace::{DisconnectReason, Namespace};
use crate::engine::{Conn, SendError};

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
    socket: Arc<Socket>,
    id: u64,
}

impl AckSender {
    /// The ack id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends the acknowledgement with `args` (binary if `attachments` is not empty).
    pub fn send(self, args: Vec<Value>, attachments: Vec<Bytes>) -> Result<(), SendError> {
        let packet = Packet::ack(self.socket.nsp.name(), self.id, args, attachments);
        self.socket.conn.send_packet(&packet.encode())
    }

    /// Sends the acknowledgement with arguments that are already JSON.
    pub fn send_raw(self, args: &[&RawValue]) -> Result<(), SendError> {
        self.socket.conn.send(encode_raw_ack(self.socket.nsp.name(), self.id, args))
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

/// One client's connection to one namespace.
pub struct Socket {
    id: OnceLock<Arc<str>>,
    pid: OnceLock<String>,
    nsp: Arc<Namespace>,
    conn: Arc<Conn>,
    client: Weak<Client>,
    rooms: Mutex<Vec<Arc<str>>>,
    acks: Mutex<Acks<oneshot::Sender<AckReply>>>,
    data: OnceLock<Box<dyn Any + Send + Sync>>,
    connected: AtomicBool,
    ack_limit_rejections: Counter,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.id()).field("nsp", &self.nsp.name()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Socket {
    pub(crate) fn new(
        nsp: Arc<Namespace>,
        conn: Arc<Conn>,
        client: Weak<Client>,
        max_acks: usize,
        ack_limit_rejections: Counter,
    ) -> Self {
        Socket {
            id: OnceLock::new(),
            pid: OnceLock::new(),
            nsp,
            conn,
            client,
            rooms: Mutex::new(Vec::new()),
            acks: Mutex::new(Acks::new(max_acks)),
            data: OnceLock::new(),
            connected: AtomicBool::new(false),
            ack_limit_rejections,
        }
    }

    /// The socket id (sent to the client in the CONNECT answer). Empty until
    /// the CONNECT is accepted.
    pub fn id(&self) -> &str {
        self.id.get().map_or("", |id| id)
    }

    pub(crate) fn id_arc(&self) -> Arc<str> {
        self.id.get_or_init(|| crate::engine::new_sid().into()).clone()
    }

    /// Gives the socket a previous session's id (connection state recovery).
    /// Only before the CONNECT is accepted; returns whether it took effect.
    pub fn restore_id(&self, id: &str) -> bool {
        self.id.set(id.into()).is_ok()
    }

    /// Sets the private session id sent in the CONNECT answer (connection
    /// state recovery); only before the CONNECT is accepted.
    pub fn set_pid(&self, pid: String) -> bool {
        self.pid.set(pid).is_ok()
    }

    /// The private session id, when recovery is on.
    pub fn pid(&self) -> Option<&str> {
        self.pid.get().map(String::as_str)
    }

    /// The namespace.
    pub fn namespace(&self) -> &Arc<Namespace> {
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

    pub(crate) fn set_connected(&self, v: bool) -> bool {
        self.connected.swap(v, Ordering::AcqRel)
    }

    /// Attaches application data (once; a second call returns it back).
    pub fn set_data<T: Any + Send + Sync>(&self, data: T) -> Result<(), T> {
        let mut slot = Some(data);
        self.data.get_or_init(|| Box::new(slot.take().expect("taken once")));
        match slot {
            None => Ok(()),
            Some(d) => Err(d),
        }
    }

    /// The application data, if set and of type `T`.
    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.data.get()?.downcast_ref()
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

    pub(crate) fn resolve_ack(&self, id: u64, reply: AckReply) {
        if let Some(tx) = lock(&self.acks).resolve(id) {
            let _ = tx.send(reply);
        }
    }

    pub(crate) fn ack_sender(self: &Arc<Self>, id: u64) -> AckSender {
        AckSender { socket: self.clone(), id }
    }

    /// Joins `room`.
    pub fn join(self: &Arc<Self>, room: &str) {
        let mut rooms = lock(&self.rooms);
        if rooms.iter().any(|r| &**r == room) || !self.is_connected() {
            return;
        }
        let room: Arc<str> = room.into();
        rooms.push(room.clone());
        self.nsp.join(room, self);
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) {
        let mut rooms = lock(&self.rooms);
        if let Some(i) = rooms.iter().position(|r| &**r == room) {
            rooms.swap_remove(i);
            self.nsp.leave(room, self.id());
        }
    }

    /// The rooms this socket is in.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        lock(&self.rooms).clone()
    }

    pub(crate) fn in_any(&self, rooms: &[&str]) -> bool {
        !rooms.is_empty() && lock(&self.rooms).iter().any(|r| rooms.contains(&&**r))
    }

    pub(crate) fn take_rooms(&self) -> Vec<Arc<str>> {
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
            client.remove_socket(self, DisconnectReason::ServerNamespaceDisconnect);
        }
    }

    /// Removes the socket from its namespace and rooms, fails its pending
    /// acks, and tells the handler. Runs once.
    pub(crate) fn cleanup(self: &Arc<Self>, reason: DisconnectReason) {
        if !self.set_connected(false) {
            return;
        }
        self.nsp.remove(self);
        // Dropping the senders wakes every waiter with `Disconnected`.
        drop(lock(&self.acks).drain().collect::<Vec<_>>());
        self.nsp.handler().on_disconnect(self, reason);
    }
}
