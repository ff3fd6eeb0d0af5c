//! The Socket.IO v5 server layer on top of the Engine.IO runtime.
//!
//! [`SocketIo`] is an [`engine::Handler`]: per Engine.IO session it keeps a
//! [`Client`] (the packet decoder, the connected namespaces, the connect
//! deadline) and routes packets to [`Namespace`]s. Namespaces are a static
//! set given at start; a CONNECT to another one is answered
//! `44/<nsp>,{"message":"Invalid namespace"}`.
//!
//! Rules enforced here: a session that does not CONNECT within the connect
//! timeout is closed; a packet that cannot be decoded (bad type, bad JSON,
//! reserved event name, forged attachment index, too many attachments)
//! closes the session; a second CONNECT to a namespace already connected on
//! the same session replaces the first socket (the reference does the same,
//! and the official client sends one when `connect()` is called twice);
//! packets for a namespace the session is not connected to are ignored, as in
//! the reference.

pub mod namespace;
pub mod socket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use eventfeed_protocol::engine::session::CloseReason;
use eventfeed_protocol::socket::session::{ConnectRefusal, Namespaces};
use eventfeed_protocol::socket::{Decoder, Packet, PacketType};
use serde_json::Value;

pub use namespace::{
    BroadcastOp, BroadcastStats, ConnectRejection, DisconnectReason, Namespace, NamespaceHandler, PendingAuthorization,
};
pub use socket::{AckError, AckReply, AckSender, Event, Socket};

use crate::engine::{self, Conn, Message};
pub use crate::metrics::SioMetrics;

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
}

impl Default for SioConfig {
    fn default() -> Self {
        SioConfig {
            connect_timeout: Duration::from_secs(45),
            max_namespaces: 8,
            max_attachments: eventfeed_protocol::socket::DEFAULT_MAX_ATTACHMENTS,
            max_pending_acks: 64,
            metrics: SioMetrics::default(),
        }
    }
}

/// The Socket.IO server: a static set of namespaces.
pub struct SocketIo {
    config: SioConfig,
    namespaces: HashMap<String, Arc<Namespace>>,
}

impl SocketIo {
    /// A server with `namespaces`.
    pub fn new(config: SioConfig, namespaces: impl IntoIterator<Item = Arc<Namespace>>) -> Self {
        SocketIo { config, namespaces: namespaces.into_iter().map(|n| (n.name().to_owned(), n)).collect() }
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    /// Every namespace.
    pub fn namespaces(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.values()
    }
}

/// Per Engine.IO session state of the Socket.IO layer.
pub struct Client {
    inner: Mutex<ClientInner>,
}

struct ClientInner {
    decoder: Decoder,
    namespaces: Namespaces,
    sockets: HashMap<String, Arc<Socket>, foldhash::fast::RandomState>,
    /// Namespaces whose CONNECT is being authorized asynchronously: another
    /// CONNECT to one of them is ignored until it is answered (one pending
    /// authorization per namespace and session, so a flood spawns nothing).
    authorizing: Vec<String>,
}

impl Client {
    fn lock(&self) -> MutexGuard<'_, ClientInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn socket(&self, nsp: &str) -> Option<Arc<Socket>> {
        self.lock().sockets.get(nsp).cloned()
    }

    pub(crate) fn remove_socket(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        let removed = {
            let mut inner = self.lock();
            let nsp = socket.namespace().name();
            inner.namespaces.disconnected(nsp);
            inner.sockets.remove(nsp)
        };
        if removed.is_some() {
            socket.cleanup(reason);
        }
    }
}

impl engine::Handler for SocketIo {
    type State = Arc<Client>;

    fn on_open(&self, conn: &Arc<Conn>) -> Arc<Client> {
        let _ = conn;
        Arc::new(Client {
            inner: Mutex::new(ClientInner {
                decoder: Decoder::new(self.config.max_attachments),
                namespaces: Namespaces::new(engine::now(), self.config.connect_timeout, self.config.max_namespaces),
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
        let sockets: Vec<Arc<Socket>> = {
            let mut inner = client.lock();
            inner.sockets.drain().map(|(_, s)| s).collect()
        };
        for socket in sockets {
            socket.cleanup(DisconnectReason::Transport(reason));
        }
    }

    fn poll_timeout(&self, client: &Arc<Client>) -> Option<Instant> {
        client.lock().namespaces.poll_timeout()
    }

    fn on_timeout(&self, conn: &Arc<Conn>, client: &Arc<Client>, now: Instant) {
        if client.lock().namespaces.connect_expired(now) {
            tracing::debug!(sid = %conn.sid(), "no CONNECT within the connect timeout; closing session");
            conn.close(CloseReason::ForcedClose);
        }
    }
}

impl SocketIo {
    fn on_packet(&self, conn: &Arc<Conn>, client: &Arc<Client>, packet: Packet) {
        match packet.kind {
            PacketType::Connect => self.connect(conn, client, packet),
            PacketType::Disconnect => {
                if let Some(socket) = client.socket(&packet.nsp) {
                    client.remove_socket(&socket, DisconnectReason::ClientNamespaceDisconnect);
                }
            }
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
                let event = Event { name, args: data, attachments: packet.attachments, ack };
                socket.namespace().handler().on_event(&socket, event);
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
        let Some(namespace) = self.namespaces.get(nsp) else {
            let _ = conn.send_packet(&Packet::connect_error(nsp, "Invalid namespace", None).encode());
            return;
        };
        if client.lock().authorizing.iter().any(|n| n == nsp) {
            // Bound: one authorization in flight per namespace; this CONNECT
            // is answered by that one's outcome.
            return;
        }
        let check = client.lock().namespaces.check_connect(nsp);
        match check {
            Ok(()) => {}
            Err(ConnectRefusal::AlreadyConnected) => {
                // The official client sends this when `connect()` is called while
                // connecting. As in the reference, the newest socket wins; the old
                // one is cleaned up instead of leaking.
                if let Some(old) = client.socket(nsp) {
                    client.remove_socket(&old, DisconnectReason::ClientNamespaceDisconnect);
                }
            }
            Err(ConnectRefusal::TooManyNamespaces { .. }) => {
                self.config.metrics.namespace_limit_rejections.inc();
                // Bound hit: refuse this namespace; the others stay connected.
                let _ = conn.send_packet(&Packet::connect_error(nsp, "Too many namespaces", None).encode());
                return;
            }
        }
        let socket = Arc::new(Socket::new(
            namespace.clone(),
            conn.clone(),
            Arc::downgrade(client),
            self.config.max_pending_acks,
            self.config.metrics.ack_limit_rejections.clone(),
        ));
        if let Some(pending) = namespace.handler().authorize_async(&socket, packet.data.as_ref()) {
            client.lock().authorizing.push(nsp.to_owned());
            let (namespace, conn, client) = (namespace.clone(), conn.clone(), client.clone());
            tokio::spawn(async move {
                let decision = pending.await;
                client.lock().authorizing.retain(|n| n != namespace.name());
                finish_connect(&namespace, &conn, &client, socket, decision);
            });
            return;
        }
        let decision = namespace.handler().authorize(&socket, packet.data.as_ref());
        finish_connect(namespace, conn, client, socket, decision);
    }
}

/// Answers a CONNECT once it is decided: CONNECT_ERROR, or the socket joins
/// the namespace, the client gets its `sid` (and `pid`), and the handler's
/// `on_connect` runs.
fn finish_connect(
    namespace: &Arc<Namespace>,
    conn: &Arc<Conn>,
    client: &Arc<Client>,
    socket: Arc<Socket>,
    decision: Result<(), ConnectRejection>,
) {
    let nsp = namespace.name();
    if let Err(rejection) = decision {
        let _ = conn.send_packet(&Packet::connect_error(nsp, &rejection.message, rejection.data).encode());
        return;
    }
    if conn.is_closed() {
        // Decided after the session ended (an asynchronous authorization).
        return;
    }
    {
        let mut inner = client.lock();
        if inner.namespaces.connected(nsp).is_err() {
            return;
        }
        inner.sockets.insert(nsp.to_owned(), socket.clone());
    }
    let id = socket.id_arc();
    socket.set_connected(true);
    namespace.add(&socket);
    let _ = conn.send(eventfeed_protocol::socket::encode_connect_ok(nsp, &id, socket.pid()));
    namespace.handler().on_connect(&socket);
    if conn.is_closed() {
        // The session died meanwhile: on_close may have run before the insert,
        // or after it but before the socket was marked connected (then its
        // cleanup did nothing). Cleaning up runs once, so do both.
        let reason = DisconnectReason::Transport(CloseReason::TransportClose);
        client.remove_socket(&socket, reason);
        socket.cleanup(reason);
    }
}
