//! The conformance fixture's application: shared by the `conformance`
//! example (the standalone server) and the integration tests.

use std::sync::Arc;
use std::time::Duration;

use eventfeed::engine::{self, Conn, Engine, EngineConfig, Message};
use eventfeed::server::Router;
use eventfeed::sio::{
    Accept, Authorization, Connecting, Deferred, Event, Namespace, NamespaceHandler, SioConfig, Socket, SocketIo,
};
use eventfeed_protocol::engine::Frame;
use eventfeed_protocol::engine::session::{self, CloseReason};
use serde_json::{Map, Value};

/// The raw Engine.IO echo application: every message, text or binary, goes
/// back unchanged.
pub struct Echo;

impl engine::Handler for Echo {
    type State = ();

    fn on_open(&self, _conn: &Arc<Conn>) {}

    fn on_message(&self, conn: &Arc<Conn>, _state: &(), message: Message<'_>) {
        let frame = match message {
            Message::Text(text) => Frame::message(text),
            Message::Binary(data) => Frame::Binary(data.clone()),
        };
        let _ = conn.send(frame);
    }

    fn on_close(&self, _conn: &Arc<Conn>, _state: &(), _reason: CloseReason) {}
}

struct Fixture {
    echo_events: bool,
}

impl NamespaceHandler for Fixture {
    /// The payload of the CONNECT packet, kept for the `auth` emit.
    type Data = Value;

    fn authorize(
        &self,
        _connecting: &Connecting<'_, Self>,
        auth: Option<&Value>,
    ) -> Authorization<Value, impl Deferred<Value> + use<>> {
        Authorization::now(Ok(Accept::new(auth.cloned().unwrap_or_else(|| Value::Object(Map::new())))))
    }

    fn on_connect(&self, socket: &Arc<Socket<Self>>) {
        let _ = socket.emit("auth", vec![socket.data().clone()], vec![]);
    }

    fn on_event(&self, socket: &Arc<Socket<Self>>, event: Event) {
        if !self.echo_events {
            return;
        }
        match event.name.as_str() {
            "message" => {
                let _ = socket.emit("message-back", event.args, event.attachments);
            }
            // Beyond the official suites, for the client harness: a server
            // emit with ack, and a server-side namespace disconnect.
            "request-ack" => request_ack(socket, event, Duration::from_secs(5)),
            "disconnect-me" => socket.disconnect(),
            "message-with-ack" => {
                if let Some(ack) = event.ack {
                    let _ = ack.send(event.args, event.attachments);
                }
            }
            _ => {}
        }
    }
}

/// The router serving both endpoints.
pub fn router() -> Router {
    let sio = SocketIo::new(SioConfig { connect_timeout: Duration::from_millis(1000), ..SioConfig::default() })
        .with(Namespace::new("/", Fixture { echo_events: true }))
        .with(Namespace::new("/custom", Fixture { echo_events: false }));
    Router::new()
        .engine("/engine.io/", Engine::new(engine_config(), Echo))
        .engine("/socket.io/", Engine::new(engine_config(), sio))
}

/// Emits `ack-me` with the event's arguments and an ack, then reports the
/// client's answer (or the failure) as `ack-result`.
pub fn request_ack<H: NamespaceHandler>(socket: &Arc<Socket<H>>, event: Event, timeout: Duration) {
    let reply = socket.emit_with_ack("ack-me", event.args, event.attachments, timeout);
    let socket = socket.clone();
    tokio::spawn(async move {
        let _ = match reply.await {
            Ok(r) => socket.emit("ack-result", r.args, r.attachments),
            Err(e) => socket.emit("ack-result", vec![Value::String(e.to_string())], vec![]),
        };
    });
}

/// The fixture's engine settings.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        session: session::Config {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            upgrade_timeout: Duration::from_millis(10_000),
        },
        max_payload: 1_000_000,
        ..EngineConfig::default()
    }
}
