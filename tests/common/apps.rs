//! Small applications for the Engine.IO / Socket.IO integration tests, built
//! from the library's parts so a test keeps handles on the engine (session
//! table) and namespaces (sockets, rooms).
//!
//! Included by the tests with `#[path = "common/apps.rs"] mod apps;`.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventfeed::engine::{Engine, EngineConfig};
use eventfeed::server::Router;
use eventfeed::sio::{
    Accept, AnyNamespace, Authorization, BroadcastOp, ConnectRejection, Connecting, Deferred, DisconnectReason, Event,
    Namespace, NamespaceHandler, SioConfig, Socket, SocketIo,
};
use eventfeed_protocol::engine::session;
use eventfeed_protocol::socket::Packet;
use serde_json::{Value, json};

/// The conformance fixture's application, for its echo handler and settings.
#[path = "../conformance/fixture.rs"]
pub mod fixture;

/// A raw Engine.IO echo application (the conformance fixture's `/engine.io/`).
pub use fixture::Echo;

/// Engine settings with the given timings (milliseconds) and `maxPayload`.
pub fn config(ping_interval: u64, ping_timeout: u64, upgrade_timeout: u64, max_payload: usize) -> EngineConfig {
    EngineConfig {
        session: session::Config {
            ping_interval: Duration::from_millis(ping_interval),
            ping_timeout: Duration::from_millis(ping_timeout),
            upgrade_timeout: Duration::from_millis(upgrade_timeout),
        },
        max_payload,
        ..EngineConfig::default()
    }
}

/// The conformance fixture's settings: 300/200 ms, maxPayload 1e6, upgrade 10 s.
pub use fixture::engine_config as fixture_config;

/// An echo engine with `config`, served at `/engine.io/`.
pub fn echo(config: EngineConfig) -> (Arc<Engine<Echo>>, Router) {
    let engine = Engine::new(config, Echo);
    let router = Router::new().engine("/engine.io/", engine.clone());
    (engine, router)
}

// ---------------------------------------------------------------------------
// Socket.IO
// ---------------------------------------------------------------------------

/// What the test namespaces saw: `connect <nsp>`, `disconnect <nsp> <reason>`.
pub type Log = Arc<Mutex<Vec<String>>>;

/// A namespace handler for the tests. Events:
/// - `echo` → emits `echo-back` with the same arguments and attachments;
/// - `ack` → acknowledges with the same arguments and attachments;
/// - `request-ack` → emits `ack-me` with ack (timeout `ack_timeout`), then
///   emits `ack-result` with the reply, or the error's text;
/// - `disconnect-me` → the server disconnects the socket;
/// - `join` / `leave` `room...` → joins or leaves, then acknowledges;
/// - `rooms` → acknowledges with the socket's rooms, sorted;
/// - `broadcast` `{rooms, exceptRooms, exceptSelf, data}` → broadcasts `news`
///   `[data]` (with the event's attachments) encoded once, and acknowledges
///   `{delivered, failed}`.
pub struct TestNs {
    /// CONNECT needs `{"token":"ok"}`; otherwise CONNECT_ERROR
    /// `{"message":"unauthorized","data":{"reason":"no token"}}`.
    pub require_token: bool,
    /// Timeout of the server's emits with ack.
    pub ack_timeout: Duration,
    /// Connects and disconnects.
    pub log: Log,
}

impl NamespaceHandler for TestNs {
    type Data = ();

    fn authorize(
        &self,
        _connecting: &Connecting<'_, Self>,
        auth: Option<&Value>,
    ) -> Authorization<(), impl Deferred<()> + use<>> {
        if !self.require_token || auth.and_then(|a| a.get("token")).and_then(Value::as_str) == Some("ok") {
            return Authorization::now(Ok(Accept::new(())));
        }
        Authorization::now(Err(ConnectRejection {
            message: "unauthorized".to_owned(),
            data: Some(json!({"reason": "no token"})),
        }))
    }

    fn on_connect(&self, socket: &Arc<Socket<Self>>) {
        self.log.lock().unwrap().push(format!("connect {}", socket.namespace().name()));
    }

    fn on_disconnect(&self, socket: &Arc<Socket<Self>>, reason: DisconnectReason) {
        self.log.lock().unwrap().push(format!("disconnect {} {}", socket.namespace().name(), reason.as_str()));
    }

    fn on_event(&self, socket: &Arc<Socket<Self>>, event: Event) {
        let strings = || event.args.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>();
        match event.name.as_str() {
            "echo" => {
                let _ = socket.emit("echo-back", event.args, event.attachments);
            }
            "ack" => {
                if let Some(ack) = event.ack {
                    let _ = ack.send(event.args, event.attachments);
                }
            }
            "request-ack" => fixture::request_ack(socket, event, self.ack_timeout),
            "disconnect-me" => socket.disconnect(),
            "join" => {
                for room in strings() {
                    socket.join(&room);
                }
                if let Some(ack) = event.ack {
                    let _ = ack.send(vec![], vec![]);
                }
            }
            "leave" => {
                for room in strings() {
                    socket.leave(&room);
                }
                if let Some(ack) = event.ack {
                    let _ = ack.send(vec![], vec![]);
                }
            }
            "rooms" => {
                let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
                rooms.sort();
                if let Some(ack) = event.ack {
                    let _ = ack.send(vec![json!(rooms)], vec![]);
                }
            }
            "broadcast" => {
                let spec = event.args.first().cloned().unwrap_or(Value::Null);
                let list = |key: &str| -> Vec<String> {
                    spec[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
                };
                let rooms = list("rooms");
                let except_rooms = list("exceptRooms");
                let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
                let except_rooms: Vec<&str> = except_rooms.iter().map(String::as_str).collect();
                let except_self = spec["exceptSelf"].as_bool().unwrap_or(false);
                let op = BroadcastOp {
                    rooms: &rooms,
                    except_rooms: &except_rooms,
                    except_socket: except_self.then(|| socket.id()),
                };
                let nsp = socket.namespace();
                let packet = Packet::event(nsp.name(), "news", vec![spec["data"].clone()], None, event.attachments);
                let stats = nsp.broadcast(&op, &packet.encode());
                if let Some(ack) = event.ack {
                    let _ = ack.send(vec![json!({"delivered": stats.delivered, "failed": stats.failed})], vec![]);
                }
            }
            _ => {}
        }
    }
}

/// A Socket.IO server for the tests, with handles on its parts.
pub struct SioApp {
    /// The engine (session table).
    pub engine: Arc<Engine<SocketIo>>,
    /// Connects and disconnects seen by the namespaces.
    pub log: Log,
    /// Serves the engine at `/socket.io/`.
    pub router: Router,
}

impl SioApp {
    /// Namespaces `/` and `/custom` (open) and `/private` (needs a token),
    /// all served by [`TestNs`].
    pub fn new(config: EngineConfig, connect_timeout: Duration) -> Self {
        Self::with_sio(config, SioConfig { connect_timeout, ..SioConfig::default() }, Duration::from_millis(500))
    }

    /// The same namespaces with Socket.IO settings `sio`; the server's emits
    /// with ack time out after `ack_timeout`.
    pub fn with_sio(config: EngineConfig, sio: SioConfig, ack_timeout: Duration) -> Self {
        let log: Log = Arc::default();
        let ns = |name: &str, require_token: bool| {
            Namespace::new(name, TestNs { require_token, ack_timeout, log: log.clone() })
        };
        let sio = SocketIo::new(sio).with(ns("/", false)).with(ns("/custom", false)).with(ns("/private", true));
        let engine = Engine::new(config, sio);
        let router = Router::new().engine("/socket.io/", engine.clone());
        SioApp { engine, log, router }
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> &dyn AnyNamespace {
        self.engine.handler().namespace(name).expect("namespace exists")
    }

    /// The log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether nothing is left: no session, no socket, no room.
    pub fn is_empty(&self) -> bool {
        self.engine.session_count() == 0
            && self.engine.handler().namespaces().iter().all(|n| n.socket_count() == 0 && n.room_count() == 0)
    }
}

/// A binary attachment for [`Packet::event`].
pub fn bin(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}
