//! Namespaces: the application's handler for one namespace, its sockets,
//! its room index, and broadcast.
//!
//! A broadcast takes one encoded packet ([`Encoded`]) and queues the same
//! shared bytes to every recipient; nothing is serialized per socket. The
//! room index is sharded; a shard's lock is held while queueing to that
//! room's members (plain memory pushes, no I/O, no `.await`).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use eventfeed_protocol::socket::Encoded;
use foldhash::fast::RandomState;
use serde_json::Value;

use super::socket::{Event, Socket};

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
    Transport(eventfeed_protocol::engine::session::CloseReason),
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

/// The application's side of a namespace. Calls are synchronous and must not
/// block; calls for one socket come in order.
pub trait NamespaceHandler: Send + Sync + 'static {
    /// Decides on a CONNECT, before the client is told. `auth` is the CONNECT
    /// payload. The socket may be given data here ([`Socket::set_data`]).
    fn authorize(&self, _socket: &Arc<Socket>, _auth: Option<&Value>) -> Result<(), ConnectRejection> {
        Ok(())
    }

    /// Decides on a CONNECT asynchronously, when the decision needs I/O (a
    /// shared store, say). `Some` replaces [`authorize`](Self::authorize) for
    /// this CONNECT: the session stays usable meanwhile, and the client is
    /// answered when the future resolves. The future must be bounded in time
    /// (the session's connect timeout still applies). `None` (the default)
    /// means "decide synchronously".
    fn authorize_async(&self, _socket: &Arc<Socket>, _auth: Option<&Value>) -> Option<PendingAuthorization> {
        None
    }

    /// The socket is connected (the client has been sent its `sid`).
    fn on_connect(&self, _socket: &Arc<Socket>) {}

    /// An event from the client.
    fn on_event(&self, _socket: &Arc<Socket>, _event: Event) {}

    /// The socket left the namespace.
    fn on_disconnect(&self, _socket: &Arc<Socket>, _reason: DisconnectReason) {}
}

/// An authorization decided later (see [`NamespaceHandler::authorize_async`]).
pub type PendingAuthorization =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ConnectRejection>> + Send + 'static>>;

const ROOM_SHARDS: usize = 16;

/// Maps of ids and room names use a randomly seeded foldhash (cheaper than
/// SipHash; room names come from clients, so the seed must be random).
type Members = HashMap<Arc<str>, Arc<Socket>, RandomState>;

/// One shard of the rooms: room name → its members.
type RoomShard = HashMap<Arc<str>, Members, RandomState>;

/// Which sockets a broadcast reaches.
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
pub struct Namespace {
    name: String,
    handler: Box<dyn NamespaceHandler>,
    sockets: Mutex<Members>,
    rooms: Vec<Mutex<RoomShard>>,
    hasher: RandomState,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Namespace {
    /// A namespace named `name` (e.g. `/events`) served by `handler`.
    pub fn new(name: impl Into<String>, handler: impl NamespaceHandler) -> Arc<Self> {
        Arc::new(Namespace {
            name: name.into(),
            handler: Box::new(handler),
            sockets: Mutex::new(HashMap::default()),
            rooms: (0..ROOM_SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            hasher: RandomState::default(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn handler(&self) -> &dyn NamespaceHandler {
        &*self.handler
    }

    /// How many sockets are connected.
    pub fn socket_count(&self) -> usize {
        lock(&self.sockets).len()
    }

    /// A connected socket by id.
    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
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

    fn room_shard(&self, room: &str) -> MutexGuard<'_, RoomShard> {
        lock(&self.rooms[(self.hasher.hash_one(room) as usize) % ROOM_SHARDS])
    }

    pub(crate) fn add(&self, socket: &Arc<Socket>) {
        lock(&self.sockets).insert(socket.id_arc(), socket.clone());
    }

    pub(crate) fn remove(&self, socket: &Socket) {
        for room in socket.take_rooms() {
            self.leave(&room, socket.id());
        }
        lock(&self.sockets).remove(socket.id());
    }

    pub(crate) fn join(&self, room: Arc<str>, socket: &Arc<Socket>) {
        self.room_shard(&room).entry(room).or_default().insert(socket.id_arc(), socket.clone());
    }

    pub(crate) fn leave(&self, room: &str, socket_id: &str) {
        let mut shard = self.room_shard(room);
        if let Some(members) = shard.get_mut(room) {
            members.remove(socket_id);
            if members.is_empty() {
                shard.remove(room);
            }
        }
    }

    /// The sockets in any of `rooms` (every socket when `rooms` is empty),
    /// minus those in any of `except`.
    pub fn sockets_in(&self, rooms: &[&str], except: &[&str]) -> Vec<Arc<Socket>> {
        let mut out: Vec<Arc<Socket>> = Vec::new();
        if rooms.is_empty() {
            out.extend(lock(&self.sockets).values().cloned());
        } else {
            let mut seen: HashSet<Arc<str>, RandomState> = HashSet::default();
            for room in rooms {
                if let Some(members) = self.room_shard(room).get(*room) {
                    out.extend(members.values().filter(|s| seen.insert(s.id_arc())).cloned());
                }
            }
        }
        out.retain(|s| !s.in_any(except));
        out
    }

    /// The names of the rooms that have members.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.iter().flat_map(|shard| lock(shard).keys().map(|r| r.to_string()).collect::<Vec<_>>()).collect()
    }

    /// Queues `packet` to every socket `op` selects. The packet is encoded
    /// once by the caller; each recipient gets the same bytes.
    pub fn broadcast(&self, op: &BroadcastOp<'_>, packet: &Encoded) -> BroadcastStats {
        let mut stats = BroadcastStats::default();
        let mut deliver = |socket: &Socket| {
            if op.except_socket == Some(socket.id()) || socket.in_any(op.except_rooms) {
                return;
            }
            match socket.conn().send_packet(packet) {
                Ok(()) => stats.delivered += 1,
                Err(_) => stats.failed += 1,
            }
        };
        match op.rooms {
            [] => lock(&self.sockets).values().for_each(|s| deliver(s)),
            [room] => {
                if let Some(members) = self.room_shard(room).get(*room) {
                    members.values().for_each(|s| deliver(s));
                }
            }
            rooms => {
                let mut seen: HashSet<Arc<str>, RandomState> = HashSet::default();
                for room in rooms {
                    if let Some(members) = self.room_shard(room).get(*room) {
                        for s in members.values() {
                            if seen.insert(s.id_arc()) {
                                deliver(s);
                            }
                        }
                    }
                }
            }
        }
        stats
    }
}
