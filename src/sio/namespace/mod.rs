//! Namespaces: the application's handler for one namespace, its sockets
//! ([`socket`]), its room index, and broadcast.
//!
//! A [`Namespace<H>`] is typed by its handler: the handler decides, when it
//! accepts a CONNECT, what the socket carries ([`NamespaceHandler::Data`]),
//! and reads it back typed ([`Socket::data`]). The server holds namespaces of
//! different handlers side by side through [`AnyNamespace`].
//!
//! A broadcast takes one encoded packet ([`Encoded`]) and queues the same
//! shared bytes to every recipient; nothing is serialized per socket. The
//! room index is sharded; a shard's lock is held while queueing to that
//! room's members (plain memory pushes — or, on a single-threaded runtime,
//! where no other thread waits for the lock, a non-blocking write to a quiet
//! websocket: [`Conn::send_broadcast`](crate::engine::Conn::send_broadcast);
//! no `.await`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

use eventfeed_protocol::engine::session::CloseReason;
use eventfeed_protocol::socket::{Encoded, Packet};
use foldhash::fast::RandomState;
use serde_json::Value;

pub mod socket;

use super::{Client, Event, SioConfig};
use crate::engine::Conn;
use eventfeed_protocol::adapter::FetchedSocket;
pub use socket::{Socket, SocketParts};

/// How a namespace answers a refused CONNECT: CONNECT_ERROR `{message, data}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRejection {
    /// The `message` the client's `connect_error` sees.
    pub message: String,
    /// Optional `data` for the client.
    pub data: Option<Value>,
}

impl ConnectRejection {
    /// A rejection with `message` and no data.
    pub fn new(message: impl Into<String>) -> Self {
        ConnectRejection { message: message.into(), data: None }
    }
}

/// Why a socket left its namespace (the reference's reason strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    ClientNamespaceDisconnect,
    /// The server disconnected the socket.
    ServerNamespaceDisconnect,
    /// The Engine.IO session closed for this reason.
    Transport(CloseReason),
}

impl DisconnectReason {
    /// The reason string the reference reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::Transport(r) => r.as_str(),
        }
    }
}

/// An accepted CONNECT: what the socket carries, and the ids it gets.
#[derive(Debug)]
pub struct Accept<D> {
    /// The application's data on the socket.
    pub data: D,
    /// A previous session's socket id to give back (connection state
    /// recovery); `None`: a new id.
    pub id: Option<String>,
    /// The private session id sent in the CONNECT answer (connection state
    /// recovery); `None`: recovery is off.
    pub pid: Option<String>,
}

impl<D> Accept<D> {
    /// Accepts with `data`, a new socket id and no `pid`.
    pub fn new(data: D) -> Self {
        Accept { data, id: None, pid: None }
    }
}

/// The outcome of an authorization: a socket's data, or the refusal.
pub type Decision<D> = Result<Accept<D>, ConnectRejection>;

/// An authorization that needs I/O (a shared store, say): bounded in time
/// (the session's connect timeout still applies while it runs).
pub trait Deferred<D>: Future<Output = Decision<D>> + Send + 'static {}

impl<D, F: Future<Output = Decision<D>> + Send + 'static> Deferred<D> for F {}

/// How a CONNECT is decided: at once, or later by a future.
pub enum Authorization<D, F> {
    /// Decided now.
    Now(Decision<D>),
    /// Decided when `F` resolves; the session stays usable meanwhile.
    Later(F),
}

impl<D> Authorization<D, std::future::Ready<Decision<D>>> {
    /// Decided now (fixes the type of the unused deferred variant).
    pub fn now(decision: Decision<D>) -> Self {
        Authorization::Now(decision)
    }
}

/// What a handler sees of a CONNECT it decides on.
pub struct Connecting<'a, H: NamespaceHandler> {
    /// The namespace asked for.
    pub namespace: &'a Arc<Namespace<H>>,
    /// The Engine.IO session.
    pub conn: &'a Arc<Conn>,
}

/// The application's side of a namespace. Calls are synchronous and must not
/// block; calls for one socket come in order.
pub trait NamespaceHandler: Send + Sync + Sized + 'static {
    /// What the application keeps on each socket, decided when its CONNECT
    /// is accepted.
    type Data: Send + Sync + 'static;

    /// Decides on a CONNECT, before the client is told. `auth` is the
    /// CONNECT payload.
    fn authorize(
        &self,
        connecting: &Connecting<'_, Self>,
        auth: Option<&Value>,
    ) -> Authorization<Self::Data, impl Deferred<Self::Data> + use<Self>>;

    /// The socket is connected (the client has been sent its `sid`).
    fn on_connect(&self, _socket: &Arc<Socket<Self>>) {}

    /// An event from the client.
    fn on_event(&self, _socket: &Arc<Socket<Self>>, _event: Event) {}

    /// The socket left the namespace.
    fn on_disconnect(&self, _socket: &Arc<Socket<Self>>, _reason: DisconnectReason) {}

    /// Whether a request of another server may make sockets of this
    /// namespace join or leave `room` (this server's own calls always may).
    fn allows_remote_room_change(&self, _room: &str) -> bool {
        true
    }

    /// The socket's next deadline, if any (its session's timer wakes for it
    /// and calls [`on_timeout`](Self::on_timeout)). When it moves earlier,
    /// call [`Conn::reschedule`].
    fn poll_timeout(&self, _socket: &Socket<Self>) -> Option<Instant> {
        None
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) passed.
    fn on_timeout(&self, _socket: &Arc<Socket<Self>>, _now: Instant) {}

    /// Another server emitted `event` to this namespace's server-side
    /// listeners (`serverSideEmit`); what this server acknowledges with when
    /// the sender asked for acknowledgements (`None`: an empty answer).
    fn on_server_event(&self, _event: &str, _args: &[Value]) -> Option<Value> {
        None
    }

    /// What operators may see of a socket's data (`fetchSockets`, the Admin
    /// UI): a JSON object, never a credential. Nothing by default.
    fn describe(&self, _socket: &Socket<Self>) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }

    /// Whether an operator (the Admin UI's `emit`) may send `event` to this
    /// namespace's sockets. Events the application sends itself should say
    /// no, so nobody can forge them.
    fn allows_operator_emit(&self, _event: &str) -> bool {
        true
    }
}

/// Hears what happens to the sockets of every namespace: the Admin UI's view
/// of the server ([`crate::sio::admin`]). Calls are synchronous, made where
/// things happen, and must not block.
pub trait Observer: Send + Sync + 'static {
    /// Whether anyone is listening now: nothing is built for the other calls
    /// when not.
    fn listening(&self) -> bool;
    /// A socket connected (as `fetchSockets` reports it).
    fn connected(&self, nsp: &str, socket: FetchedSocket);
    /// A socket left its namespace.
    fn disconnected(&self, nsp: &str, id: &str, reason: &str);
    /// A socket joined a room.
    fn joined(&self, nsp: &str, room: &str, id: &str);
    /// A socket left a room.
    fn left(&self, nsp: &str, room: &str, id: &str);
    /// A socket's session moved to another transport.
    fn upgraded(&self, nsp: &str, id: &str, transport: &str);
}

const ROOM_SHARDS: usize = 16;

/// Maps of ids and room names use a randomly seeded foldhash (cheaper than
/// SipHash; room names come from clients, so the seed must be random).
type Members<H> = HashMap<Arc<str>, Arc<Socket<H>>, RandomState>;

/// One shard of the rooms: room name → its members.
type RoomShard<H> = HashMap<Arc<str>, Members<H>, RandomState>;

/// Which sockets an operation reaches.
#[derive(Debug, Clone, Copy, Default)]
pub struct BroadcastOp<'a> {
    /// The rooms to reach (a socket in several gets the packet once); empty
    /// means every socket of the namespace.
    pub rooms: &'a [&'a str],
    /// Sockets in any of these rooms are skipped.
    pub except_rooms: &'a [&'a str],
    /// This socket is skipped (the sender, typically).
    pub except_socket: Option<&'a str>,
}

/// What a broadcast did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastStats {
    /// Sockets the packet was queued to.
    pub delivered: usize,
    /// Sockets whose queue refused it (closed, or closed now as slow consumers).
    pub failed: usize,
}

/// A namespace: its handler, sockets and rooms.
pub struct Namespace<H: NamespaceHandler> {
    name: Arc<str>,
    handler: H,
    sockets: Mutex<Members<H>>,
    rooms: Vec<Mutex<RoomShard<H>>>,
    hasher: RandomState,
    /// Itself, to give each new socket a strong handle.
    this: Weak<Namespace<H>>,
    /// Who hears of connects, disconnects and rooms (set once, if ever).
    observer: OnceLock<Arc<dyn Observer>>,
}

impl<H: NamespaceHandler> std::fmt::Debug for Namespace<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<H: NamespaceHandler> Namespace<H> {
    /// A namespace named `name` (e.g. `/events`) served by `handler`.
    pub fn new(name: impl Into<String>, handler: H) -> Arc<Self> {
        let name: String = name.into();
        Arc::new_cyclic(|this| Namespace {
            name: name.into(),
            handler,
            sockets: Mutex::new(HashMap::default()),
            rooms: (0..ROOM_SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            hasher: RandomState::default(),
            this: this.clone(),
            observer: OnceLock::new(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The application's handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// How many sockets are connected.
    pub fn socket_count(&self) -> usize {
        lock(&self.sockets).len()
    }

    /// Every connected socket (a copy of the list, taken at once).
    pub fn sockets(&self) -> Vec<Arc<Socket<H>>> {
        lock(&self.sockets).values().cloned().collect()
    }

    /// A connected socket by id.
    pub fn socket(&self, id: &str) -> Option<Arc<Socket<H>>> {
        lock(&self.sockets).get(id).cloned()
    }

    /// How many rooms have members.
    pub fn room_count(&self) -> usize {
        self.rooms.iter().map(|s| lock(s).len()).sum()
    }

    /// How many sockets are in `room`.
    pub fn room_size(&self, room: &str) -> usize {
        self.room_shard(room).get(room).map_or(0, HashMap::len)
    }

    fn room_shard(&self, room: &str) -> MutexGuard<'_, RoomShard<H>> {
        lock(&self.rooms[(self.hasher.hash_one(room) as usize) % ROOM_SHARDS])
    }

    pub(super) fn add(&self, socket: &Arc<Socket<H>>) {
        lock(&self.sockets).insert(socket.id_arc().clone(), socket.clone());
    }

    pub(super) fn remove(&self, socket: &Socket<H>) {
        for room in socket.take_rooms() {
            self.leave(&room, socket.id());
            if let Some(o) = self.observing() {
                o.left(&self.name, &room, socket.id());
            }
        }
        lock(&self.sockets).remove(socket.id());
    }

    pub(super) fn join(&self, room: Arc<str>, socket: &Arc<Socket<H>>) {
        self.room_shard(&room).entry(room).or_default().insert(socket.id_arc().clone(), socket.clone());
    }

    pub(super) fn leave(&self, room: &str, socket_id: &str) {
        {
            let mut shard = self.room_shard(room);
            if let Some(members) = shard.get_mut(room) {
                members.remove(socket_id);
                if members.is_empty() {
                    shard.remove(room);
                }
            }
        }
    }

    /// The socket `room` names when it is a socket's id: each socket is in
    /// the room named by its id, as in Node, kept implicit (no index entry
    /// per socket). Only an id-shaped name is looked up, so a broadcast to a
    /// room with no members here (a tenant's) takes no extra lock.
    fn socket_as_room(&self, room: &str) -> Option<Arc<Socket<H>>> {
        crate::engine::is_sid_shaped(room).then(|| self.socket(room)).flatten()
    }

    /// The observer, when one is set and listening.
    pub(super) fn observing(&self) -> Option<&Arc<dyn Observer>> {
        self.observer.get().filter(|o| o.listening())
    }

    /// The sockets `op` selects: those in any of its rooms (every socket when
    /// it names none), minus those in any of its excepted rooms and the
    /// excepted socket.
    pub fn sockets_in(&self, op: &BroadcastOp<'_>) -> Vec<Arc<Socket<H>>> {
        let mut out: Vec<Arc<Socket<H>>> = Vec::new();
        if op.rooms.is_empty() {
            out.extend(lock(&self.sockets).values().cloned());
        } else {
            let mut seen: HashSet<Arc<str>, RandomState> = HashSet::default();
            for room in op.rooms {
                if let Some(members) = self.room_shard(room).get(*room) {
                    out.extend(members.values().filter(|s| seen.insert(s.id_arc().clone())).cloned());
                } else if let Some(socket) = self.socket_as_room(room)
                    && seen.insert(socket.id_arc().clone())
                {
                    out.push(socket);
                }
            }
        }
        out.retain(|s| op.except_socket != Some(s.id()) && !s.in_any(op.except_rooms));
        out
    }

    /// The names of the rooms that have members.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.iter().flat_map(|shard| lock(shard).keys().map(|r| r.to_string()).collect::<Vec<_>>()).collect()
    }

    /// Queues `packet` to every socket `op` selects, on this server only (or
    /// writes it at once: [`Conn::send_broadcast`](crate::engine::Conn::send_broadcast)).
    /// The packet is encoded once by the caller; each recipient gets the
    /// same bytes.
    pub fn broadcast(&self, op: &BroadcastOp<'_>, packet: &Encoded) -> BroadcastStats {
        self.broadcast_at(op, packet, crate::engine::BroadcastTime::now())
    }

    /// [`Namespace::broadcast`], for a broadcast that began at `time` (one
    /// event's broadcast that also goes to other subscribers counts once).
    pub fn broadcast_at(
        &self,
        op: &BroadcastOp<'_>,
        packet: &Encoded,
        time: crate::engine::BroadcastTime,
    ) -> BroadcastStats {
        let mut stats = BroadcastStats::default();
        let mut deliver = |socket: &Socket<H>| {
            if op.except_socket == Some(socket.id()) || socket.in_any(op.except_rooms) {
                return;
            }
            match socket.conn().send_broadcast(packet, time) {
                Ok(()) => stats.delivered += 1,
                Err(_) => stats.failed += 1,
            }
        };
        match op.rooms {
            [] => lock(&self.sockets).values().for_each(|s| deliver(s)),
            [room] => {
                if let Some(members) = self.room_shard(room).get(*room) {
                    members.values().for_each(|s| deliver(s));
                } else if let Some(socket) = self.socket_as_room(room) {
                    deliver(&socket);
                }
            }
            rooms => {
                let mut seen: HashSet<Arc<str>, RandomState> = HashSet::default();
                for room in rooms {
                    if let Some(members) = self.room_shard(room).get(*room) {
                        for s in members.values() {
                            if seen.insert(s.id_arc().clone()) {
                                deliver(s);
                            }
                        }
                    } else if let Some(socket) = self.socket_as_room(room)
                        && seen.insert(socket.id_arc().clone())
                    {
                        deliver(&socket);
                    }
                }
            }
        }
        stats
    }
}

/// What every namespace offers, whatever its handler: the server's
/// operations on its local sockets, by name (fetching, joining, leaving,
/// disconnecting, broadcasting) — what the cluster adapter needs to answer
/// the requests of other servers.
pub trait AnyNamespace: Send + Sync + 'static {
    /// The namespace's name.
    fn name(&self) -> &str;
    /// How many sockets are connected here.
    fn socket_count(&self) -> usize;
    /// How many rooms have members here.
    fn room_count(&self) -> usize;
    /// How many sockets are in `room` here.
    fn room_size(&self, room: &str) -> usize;
    /// The rooms with members here.
    fn room_names(&self) -> Vec<String>;
    /// The ids of the sockets `op` selects here.
    fn socket_ids(&self, op: &BroadcastOp<'_>) -> Vec<String>;
    /// What `fetchSockets` reports of the sockets `op` selects here.
    fn fetch(&self, op: &BroadcastOp<'_>) -> Vec<FetchedSocket>;
    /// Makes the sockets `op` selects here join `rooms`.
    fn join(&self, op: &BroadcastOp<'_>, rooms: &[&str]);
    /// Makes the sockets `op` selects here leave `rooms`.
    fn leave(&self, op: &BroadcastOp<'_>, rooms: &[&str]);
    /// Disconnects the sockets `op` selects here (`close`: their Engine.IO
    /// sessions too).
    fn disconnect(&self, op: &BroadcastOp<'_>, close: bool);
    /// Makes the socket `id`, if connected here, join `rooms`; whether it is.
    fn join_one(&self, id: &str, rooms: &[&str]) -> bool;
    /// Makes the socket `id`, if connected here, leave `rooms`; whether it is.
    fn leave_one(&self, id: &str, rooms: &[&str]) -> bool;
    /// Disconnects the socket `id`, if connected here; whether it is.
    fn disconnect_one(&self, id: &str, close: bool) -> bool;
    /// Queues `packet` to the sockets `op` selects here.
    fn broadcast(&self, op: &BroadcastOp<'_>, packet: &Encoded) -> BroadcastStats;
    /// Whether a request of another server may make sockets join or leave `room`.
    fn allows_remote_room_change(&self, room: &str) -> bool;
    /// Whether an operator may emit `event` to this namespace's sockets.
    fn allows_operator_emit(&self, event: &str) -> bool;
    /// Another server's `serverSideEmit` (`data` is `[name, ...args]`); the
    /// acknowledgement, if any.
    fn server_event(&self, data: &Value) -> Option<Value>;
}

impl<H: NamespaceHandler> AnyNamespace for Namespace<H> {
    fn name(&self) -> &str {
        Namespace::name(self)
    }

    fn socket_count(&self) -> usize {
        Namespace::socket_count(self)
    }

    fn room_count(&self) -> usize {
        Namespace::room_count(self)
    }

    fn room_size(&self, room: &str) -> usize {
        Namespace::room_size(self, room)
    }

    fn room_names(&self) -> Vec<String> {
        Namespace::room_names(self)
    }

    fn socket_ids(&self, op: &BroadcastOp<'_>) -> Vec<String> {
        self.sockets_in(op).iter().map(|s| s.id().to_owned()).collect()
    }

    fn fetch(&self, op: &BroadcastOp<'_>) -> Vec<FetchedSocket> {
        self.sockets_in(op).iter().map(|s| s.fetched()).collect()
    }

    fn join(&self, op: &BroadcastOp<'_>, rooms: &[&str]) {
        for socket in self.sockets_in(op) {
            rooms.iter().for_each(|r| socket.join(r));
        }
    }

    fn leave(&self, op: &BroadcastOp<'_>, rooms: &[&str]) {
        for socket in self.sockets_in(op) {
            rooms.iter().for_each(|r| socket.leave(r));
        }
    }

    fn disconnect(&self, op: &BroadcastOp<'_>, close: bool) {
        for socket in self.sockets_in(op) {
            socket.disconnect_and_close(close);
        }
    }

    fn join_one(&self, id: &str, rooms: &[&str]) -> bool {
        self.socket(id).map(|s| rooms.iter().for_each(|r| s.join(r))).is_some()
    }

    fn leave_one(&self, id: &str, rooms: &[&str]) -> bool {
        self.socket(id).map(|s| rooms.iter().for_each(|r| s.leave(r))).is_some()
    }

    fn disconnect_one(&self, id: &str, close: bool) -> bool {
        self.socket(id).map(|s| s.disconnect_and_close(close)).is_some()
    }

    fn broadcast(&self, op: &BroadcastOp<'_>, packet: &Encoded) -> BroadcastStats {
        Namespace::broadcast(self, op, packet)
    }

    fn allows_remote_room_change(&self, room: &str) -> bool {
        self.handler.allows_remote_room_change(room)
    }

    fn allows_operator_emit(&self, event: &str) -> bool {
        self.handler.allows_operator_emit(event)
    }

    fn server_event(&self, data: &Value) -> Option<Value> {
        match data.as_array()?.split_first()? {
            (Value::String(event), args) => self.handler.on_server_event(event, args),
            _ => None,
        }
    }
}

/// A namespace as the server's session layer drives it: CONNECTs.
pub(super) trait DynNamespace: AnyNamespace {
    /// Decides on a CONNECT to this namespace and answers it.
    fn connect(&self, conn: &Arc<Conn>, client: &Arc<Client>, auth: Option<Value>, config: &SioConfig);
    /// Sets the observer (once; later calls change nothing).
    fn observe(&self, observer: Arc<dyn Observer>);
}

impl<H: NamespaceHandler> DynNamespace for Namespace<H> {
    fn observe(&self, observer: Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }

    fn connect(&self, conn: &Arc<Conn>, client: &Arc<Client>, auth: Option<Value>, config: &SioConfig) {
        let Some(namespace) = self.this.upgrade() else { return };
        let connecting = Connecting { namespace: &namespace, conn };
        let parts = SocketParts {
            conn: conn.clone(),
            client: Arc::downgrade(client),
            max_acks: config.max_pending_acks,
            ack_limit_rejections: config.metrics.ack_limit_rejections.clone(),
        };
        match self.handler.authorize(&connecting, auth.as_ref()) {
            Authorization::Now(decision) => finish_connect(&namespace, client, parts, decision),
            Authorization::Later(decided) => {
                let nsp = self.name.clone();
                client.authorizing(&nsp, true);
                let client = client.clone();
                tokio::spawn(async move {
                    let decision = decided.await;
                    client.authorizing(&nsp, false);
                    finish_connect(&namespace, &client, parts, decision);
                });
            }
        }
    }
}

/// Answers a CONNECT once it is decided: CONNECT_ERROR, or the socket joins
/// the namespace, the client gets its `sid` (and `pid`), and the handler's
/// `on_connect` runs.
fn finish_connect<H: NamespaceHandler>(
    namespace: &Arc<Namespace<H>>,
    client: &Arc<Client>,
    parts: SocketParts,
    decision: Decision<H::Data>,
) {
    let nsp = namespace.name();
    let conn = parts.conn.clone();
    let accept = match decision {
        Ok(accept) => accept,
        Err(rejection) => {
            let _ = conn.send_packet(&Packet::connect_error(nsp, &rejection.message, rejection.data).encode());
            return;
        }
    };
    if conn.is_closed() {
        // Decided after the session ended (an asynchronous authorization).
        return;
    }
    let socket = Arc::new(Socket::new(namespace.clone(), parts, accept));
    if !client.insert_socket(nsp, socket.clone()) {
        return;
    }
    socket.set_connected(true);
    namespace.add(&socket);
    if let Some(o) = namespace.observing() {
        o.connected(nsp, socket.fetched());
    }
    let _ = conn.send(eventfeed_protocol::socket::encode_connect_ok(nsp, socket.id(), socket.pid()));
    namespace.handler.on_connect(&socket);
    if conn.is_closed() {
        // The session died meanwhile: on_close may have run before the insert,
        // or after it but before the socket was marked connected (then its
        // cleanup did nothing). Cleaning up runs once, so do both.
        let reason = DisconnectReason::Transport(CloseReason::TransportClose);
        client.remove_socket(nsp, reason);
        socket.cleanup(reason);
    }
}
