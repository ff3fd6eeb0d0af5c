//! The Socket.IO v5 server layer on top of the Engine.IO runtime.
//!
//! [`SocketIo`] is an [`engine::Handler`]: per Engine.IO session it keeps a
//! [`Client`] (the packet decoder, the connected namespaces, the connect
//! deadline) and routes packets to [`Namespace`]s. Namespaces are a static
//! set given at start; a CONNECT to another one is answered
//! `44/<nsp>,{"message":"Invalid namespace"}`.
//!
//! - [`namespace`]: a namespace typed by its handler, its rooms, broadcast,
//!   and its sockets ([`socket`]: typed data, emits, acknowledgements).
//! - [`adapter`]: the cluster-adapter seam — what reaches other servers
//!   (broadcasts and requests, sent and answered) — and the local adapter of
//!   a single server.
//!
//! Rules enforced here: a session that does not CONNECT within the connect
//! timeout is closed; a packet that cannot be decoded (bad type, bad JSON,
//! reserved event name, forged attachment index, too many attachments)
//! closes the session; a second CONNECT to a namespace already connected on
//! the same session replaces the first socket (the reference does the same,
//! and the official client sends one when `connect()` is called twice);
//! packets for a namespace the session is not connected to are ignored, as in
//! the reference.

pub mod adapter;
pub mod admin;
pub mod namespace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventfeed_protocol::engine::session::CloseReason;
use eventfeed_protocol::socket::session::{ConnectRefusal, Namespaces as Connected};
use eventfeed_protocol::socket::{Decoder, Packet, PacketType};
use serde_json::Value;

pub use adapter::{Adapter, AdapterError, LocalAdapter};
pub use namespace::socket::{self, AckError, AckReply, AckSender, Event, Socket};
pub use namespace::{
    Accept, AnyNamespace, Authorization, BroadcastOp, BroadcastStats, ConnectRejection, Connecting, Decision, Deferred,
    DisconnectReason, Namespace, NamespaceHandler, Observer,
};

use crate::engine::{self, Conn, Message};
pub use crate::metrics::SioMetrics;
use eventfeed_protocol::adapter::FetchedSocket;
use namespace::DynNamespace;

/// Socket.IO settings.
#[derive(Debug, Clone)]
pub struct SioConfig {
    /// Time a session has to CONNECT to a namespace.
    pub connect_timeout: Duration,
    /// Namespaces one session may be connected to at once.
    pub max_namespaces: usize,
    /// Binary attachments per packet.
    pub max_attachments: usize,
    /// Server-to-client acknowledgements pending per socket.
    pub max_pending_acks: usize,
    /// Where refusals at these bounds are counted.
    pub metrics: SioMetrics,
    /// The Socket.IO Admin UI's namespace, when on.
    pub admin: Option<admin::AdminConfig>,
}

impl Default for SioConfig {
    fn default() -> Self {
        SioConfig {
            connect_timeout: Duration::from_secs(45),
            max_namespaces: 8,
            max_attachments: eventfeed_protocol::socket::DEFAULT_MAX_ATTACHMENTS,
            max_pending_acks: 64,
            metrics: SioMetrics::default(),
            admin: None,
        }
    }
}

/// The server's namespaces, by name, whatever their handlers.
#[derive(Default, Clone)]
pub struct Namespaces {
    map: HashMap<String, Arc<dyn DynNamespace>>,
}

impl Namespaces {
    /// A namespace by name.
    pub fn get(&self, name: &str) -> Option<&dyn AnyNamespace> {
        self.map.get(name).map(|n| &**n as &dyn AnyNamespace)
    }

    /// Every namespace.
    pub fn iter(&self) -> impl Iterator<Item = &dyn AnyNamespace> {
        self.map.values().map(|n| &**n as &dyn AnyNamespace)
    }
}

impl std::fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.map.keys()).finish()
    }
}

/// The Socket.IO server: a static set of namespaces, and the adapter that
/// reaches the other servers of a cluster (none, with [`LocalAdapter`]).
pub struct SocketIo<A: Adapter = LocalAdapter> {
    config: SioConfig,
    namespaces: Arc<Namespaces>,
    adapter: A,
}

impl SocketIo {
    /// A single server (no cluster) with no namespace yet.
    pub fn new(config: SioConfig) -> Self {
        SocketIo::with_adapter(config, LocalAdapter)
    }
}

impl<A: Adapter> SocketIo<A> {
    /// A server whose broadcasts and requests reach other servers through `adapter`.
    pub fn with_adapter(config: SioConfig, adapter: A) -> Self {
        SocketIo { config, namespaces: Arc::default(), adapter }
    }

    /// Adds `namespace` (before the server is shared).
    pub fn with<H: NamespaceHandler>(mut self, namespace: Arc<Namespace<H>>) -> Self {
        Arc::make_mut(&mut self.namespaces).map.insert(namespace.name().to_owned(), namespace);
        self
    }

    /// Makes `observer` hear of every socket of every namespace (once).
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        for namespace in self.namespaces.map.values() {
            namespace.observe(observer.clone());
        }
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&dyn AnyNamespace> {
        self.namespaces.get(name)
    }

    /// Every namespace, shareable (the adapter answers other servers from it).
    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.namespaces
    }

    /// The adapter.
    pub fn adapter(&self) -> &A {
        &self.adapter
    }

    fn get(&self, nsp: &str) -> Result<&Arc<dyn DynNamespace>, AdapterError> {
        self.namespaces.map.get(nsp).ok_or(AdapterError::UnknownNamespace)
    }

    /// Emits `event` with `args` to the sockets `op` selects in namespace
    /// `nsp`, on this server and on every other one of the cluster (encoded
    /// once for the sockets here); what it did here.
    pub fn broadcast(
        &self,
        nsp: &str,
        op: &BroadcastOp<'_>,
        event: &str,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
    ) -> Result<BroadcastStats, AdapterError> {
        let namespace = self.get(nsp)?;
        let packet = Packet::event(nsp, event, args, None, attachments);
        let stats = namespace.broadcast(op, &packet.encode());
        self.adapter.broadcast(nsp, op, packet.data.as_ref().unwrap_or(&Value::Null), &packet.attachments);
        Ok(stats)
    }

    /// The sockets `op` selects in `nsp`, here and on every other server.
    pub async fn fetch_sockets(&self, nsp: &str, op: &BroadcastOp<'_>) -> Result<Vec<FetchedSocket>, AdapterError> {
        let mut sockets = self.get(nsp)?.fetch(op);
        sockets.extend(self.adapter.fetch_sockets(nsp, op).await?);
        Ok(sockets)
    }

    /// The rooms with members in `nsp` (socket ids included, as Node lists
    /// them), here and on every other server, each once.
    pub async fn all_rooms(&self, nsp: &str) -> Result<Vec<String>, AdapterError> {
        let namespace = self.get(nsp)?;
        let mut rooms = namespace.room_names();
        rooms.extend(namespace.socket_ids(&BroadcastOp::default()));
        rooms.extend(self.adapter.all_rooms(nsp).await?);
        rooms.sort_unstable();
        rooms.dedup();
        Ok(rooms)
    }

    /// Makes the sockets `op` selects in `nsp` join `rooms`, here and on every other server.
    pub fn sockets_join(&self, nsp: &str, op: &BroadcastOp<'_>, rooms: &[&str]) -> Result<(), AdapterError> {
        self.get(nsp)?.join(op, rooms);
        self.adapter.sockets_join(nsp, op, rooms);
        Ok(())
    }

    /// Makes the sockets `op` selects in `nsp` leave `rooms`, here and on every other server.
    pub fn sockets_leave(&self, nsp: &str, op: &BroadcastOp<'_>, rooms: &[&str]) -> Result<(), AdapterError> {
        self.get(nsp)?.leave(op, rooms);
        self.adapter.sockets_leave(nsp, op, rooms);
        Ok(())
    }

    /// Disconnects the sockets `op` selects in `nsp` (`close`: their
    /// Engine.IO sessions too), here and on every other server.
    pub fn disconnect_sockets(&self, nsp: &str, op: &BroadcastOp<'_>, close: bool) -> Result<(), AdapterError> {
        self.get(nsp)?.disconnect(op, close);
        self.adapter.disconnect_sockets(nsp, op, close);
        Ok(())
    }

    /// Emits `event` with `args` to the server-side listeners of `nsp` on
    /// the *other* servers (as Node's `serverSideEmit`); with `ack`, waits
    /// that long for each one's answer and gives them.
    pub async fn server_side_emit(
        &self,
        nsp: &str,
        event: &str,
        args: Vec<Value>,
        ack: Option<Duration>,
    ) -> Result<Vec<Value>, AdapterError> {
        self.get(nsp)?;
        let mut data = Vec::with_capacity(args.len() + 1);
        data.push(Value::String(event.to_owned()));
        data.extend(args);
        self.adapter.server_side_emit(nsp, &Value::Array(data), ack).await
    }

    /// How many servers serve `nsp`, this one included.
    pub async fn server_count(&self, nsp: &str) -> Result<usize, AdapterError> {
        self.get(nsp)?;
        self.adapter.server_count(nsp).await
    }
}

/// A socket as its session drives it, whatever its namespace's handler.
pub(crate) trait DynSocket: Send + Sync {
    /// An event from the client.
    fn on_event(self: Arc<Self>, event: Event);
    /// The client answered a server emit with ack.
    fn resolve_ack(&self, id: u64, reply: AckReply);
    /// Answers the client's ack `id`.
    fn ack_sender(&self, id: u64) -> AckSender;
    /// Leaves the namespace (once).
    fn cleanup(self: Arc<Self>, reason: DisconnectReason);
    /// The socket's next deadline (its handler's).
    fn poll_timeout(&self) -> Option<Instant>;
    /// Runs the socket's deadline if it passed.
    fn on_timeout(self: Arc<Self>, now: Instant);
    /// Its session moved to the websocket.
    fn on_upgrade(&self);
}

/// Per Engine.IO session state of the Socket.IO layer.
pub struct Client {
    inner: Mutex<ClientInner>,
}

struct ClientInner {
    decoder: Decoder,
    connected: Connected,
    sockets: HashMap<String, Arc<dyn DynSocket>, foldhash::fast::RandomState>,
    /// Namespaces whose CONNECT is being authorized asynchronously: another
    /// CONNECT to one of them is ignored until it is answered (one pending
    /// authorization per namespace and session, so a flood spawns nothing).
    authorizing: Vec<Arc<str>>,
}

impl Client {
    fn lock(&self) -> MutexGuard<'_, ClientInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn socket(&self, nsp: &str) -> Option<Arc<dyn DynSocket>> {
        self.lock().sockets.get(nsp).cloned()
    }

    /// Marks a CONNECT to `nsp` as being authorized (or no longer).
    fn authorizing(&self, nsp: &Arc<str>, on: bool) {
        let mut inner = self.lock();
        if on {
            inner.authorizing.push(nsp.clone());
        } else {
            inner.authorizing.retain(|n| n != nsp);
        }
    }

    /// Records the socket connected to `nsp`; false when the namespace can no
    /// longer take it (the session's state says so).
    fn insert_socket(&self, nsp: &str, socket: Arc<dyn DynSocket>) -> bool {
        let mut inner = self.lock();
        if inner.connected.connected(nsp).is_err() {
            return false;
        }
        inner.sockets.insert(nsp.to_owned(), socket);
        true
    }

    /// Removes the socket connected to `nsp` (if any) and cleans it up.
    fn remove_socket(&self, nsp: &str, reason: DisconnectReason) {
        let removed = {
            let mut inner = self.lock();
            inner.connected.disconnected(nsp);
            inner.sockets.remove(nsp)
        };
        if let Some(socket) = removed {
            socket.cleanup(reason);
        }
    }
}

impl<A: Adapter> engine::Handler for SocketIo<A> {
    type State = Arc<Client>;

    fn on_open(&self, _conn: &Arc<Conn>) -> Arc<Client> {
        Arc::new(Client {
            inner: Mutex::new(ClientInner {
                decoder: Decoder::new(self.config.max_attachments),
                connected: Connected::new(engine::now(), self.config.connect_timeout, self.config.max_namespaces),
                sockets: HashMap::default(),
                authorizing: Vec::new(),
            }),
        })
    }

    fn on_message(&self, conn: &Arc<Conn>, client: &Arc<Client>, message: Message<'_>) {
        let decoded = {
            let mut inner = client.lock();
            match message {
                Message::Text(text) => inner.decoder.decode_text(text),
                Message::Binary(data) => inner.decoder.decode_binary(data.clone()),
            }
        };
        match decoded {
            Ok(Some(packet)) => self.on_packet(conn, client, packet),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(sid = %conn.sid(), error = %e, "invalid socket.io packet; closing session");
                conn.close(CloseReason::ParseError);
            }
        }
    }

    fn on_close(&self, _conn: &Arc<Conn>, client: &Arc<Client>, reason: CloseReason) {
        let sockets: Vec<Arc<dyn DynSocket>> = {
            let mut inner = client.lock();
            inner.sockets.drain().map(|(_, s)| s).collect()
        };
        for socket in sockets {
            socket.cleanup(DisconnectReason::Transport(reason));
        }
    }

    fn poll_timeout(&self, client: &Arc<Client>) -> Option<Instant> {
        let inner = client.lock();
        let sockets = inner.sockets.values().filter_map(|s| s.poll_timeout());
        sockets.chain(inner.connected.poll_timeout()).min()
    }

    fn on_upgrade(&self, _conn: &Arc<Conn>, client: &Arc<Client>) {
        let sockets: Vec<Arc<dyn DynSocket>> = client.lock().sockets.values().cloned().collect();
        for socket in sockets {
            socket.on_upgrade();
        }
    }

    fn on_timeout(&self, conn: &Arc<Conn>, client: &Arc<Client>, now: Instant) {
        let sockets: Vec<Arc<dyn DynSocket>> = {
            let inner = client.lock();
            if inner.connected.connect_expired(now) {
                drop(inner);
                tracing::debug!(sid = %conn.sid(), "no CONNECT within the connect timeout; closing session");
                conn.close(CloseReason::ForcedClose);
                return;
            }
            inner.sockets.values().cloned().collect()
        };
        for socket in sockets {
            socket.on_timeout(now);
        }
    }
}

impl<A: Adapter> SocketIo<A> {
    fn on_packet(&self, conn: &Arc<Conn>, client: &Arc<Client>, packet: Packet) {
        match packet.kind {
            PacketType::Connect => self.connect(conn, client, packet),
            PacketType::Disconnect => client.remove_socket(&packet.nsp, DisconnectReason::ClientNamespaceDisconnect),
            PacketType::Event | PacketType::BinaryEvent => {
                let Some(socket) = client.socket(&packet.nsp) else {
                    return;
                };
                let ack = packet.id.map(|id| socket.ack_sender(id));
                let Some(Value::Array(mut data)) = packet.data else {
                    return;
                };
                let name = match data.first_mut() {
                    Some(Value::String(name)) => std::mem::take(name),
                    _ => return, // the decoder guarantees a string name
                };
                data.remove(0);
                socket.on_event(Event { name, args: data, attachments: packet.attachments, ack });
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let (Some(socket), Some(id)) = (client.socket(&packet.nsp), packet.id) else {
                    return;
                };
                let args = match packet.data {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                socket.resolve_ack(id, AckReply { args, attachments: packet.attachments });
            }
            // Only servers send CONNECT_ERROR; the reference ignores it from clients.
            PacketType::ConnectError => {}
        }
    }

    fn connect(&self, conn: &Arc<Conn>, client: &Arc<Client>, packet: Packet) {
        let nsp = packet.nsp.as_str();
        let Some(namespace) = self.namespaces.map.get(nsp) else {
            let _ = conn.send_packet(&Packet::connect_error(nsp, "Invalid namespace", None).encode());
            return;
        };
        let check = {
            let inner = client.lock();
            if inner.authorizing.iter().any(|n| &**n == nsp) {
                // Bound: one authorization in flight per namespace; this CONNECT
                // is answered by that one's outcome.
                return;
            }
            inner.connected.check_connect(nsp)
        };
        match check {
            Ok(()) => {}
            Err(ConnectRefusal::AlreadyConnected) => {
                // The official client sends this when `connect()` is called while
                // connecting. As in the reference, the newest socket wins; the old
                // one is cleaned up instead of leaking.
                client.remove_socket(nsp, DisconnectReason::ClientNamespaceDisconnect);
            }
            Err(ConnectRefusal::TooManyNamespaces { .. }) => {
                self.config.metrics.namespace_limit_rejections.inc();
                // Bound hit: refuse this namespace; the others stay connected.
                let _ = conn.send_packet(&Packet::connect_error(nsp, "Too many namespaces", None).encode());
                return;
            }
        }
        namespace.connect(conn, client, packet.data, &self.config);
    }
}
