//! The conformance fixture: the settings and behaviour that the official
//! socketio/engine.io-protocol and socketio/socket.io-protocol test suites
//! expect, on our runtime.
//!
//! `cargo run --release --example conformance -- --port N` listens on
//! 127.0.0.1:N and serves:
//! - `/engine.io/`: raw Engine.IO that echoes every message, text or binary;
//! - `/socket.io/`: Socket.IO with namespaces `/` and `/custom`; on connect it
//!   emits `auth` with the CONNECT payload (or `{}`); on `/`, `message` → emit
//!   `message-back` with the same arguments, `message-with-ack` → ack with them.
//!
//! pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000, connect
//! timeout 1000 ms.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventfeed::engine::{self, Conn, Engine, EngineConfig, Message};
use eventfeed::server::{self, Router, ServerConfig};
use eventfeed::sio::{
    ConnectRejection, Event, Namespace, NamespaceHandler, SioConfig, Socket, SocketIo,
};
use eventfeed_protocol::engine::Frame;
use eventfeed_protocol::engine::session::{self, CloseReason};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// The raw Engine.IO echo application.
struct Echo;

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

/// The payload of the CONNECT packet, kept for the `auth` emit.
struct Auth(Value);

struct Fixture {
    echo_events: bool,
}

impl NamespaceHandler for Fixture {
    fn authorize(
        &self,
        socket: &Arc<Socket>,
        auth: Option<&Value>,
    ) -> Result<(), ConnectRejection> {
        let auth = auth.cloned().unwrap_or_else(|| Value::Object(Map::new()));
        let _ = socket.set_data(Auth(auth));
        Ok(())
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        let auth = socket
            .data::<Auth>()
            .map(|a| a.0.clone())
            .unwrap_or(Value::Null);
        let _ = socket.emit("auth", vec![auth], vec![]);
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        if !self.echo_events {
            return;
        }
        match event.name.as_str() {
            "message" => {
                let _ = socket.emit("message-back", event.args, event.attachments);
            }
            "message-with-ack" => {
                if let Some(ack) = event.ack {
                    let _ = ack.send(event.args, event.attachments);
                }
            }
            _ => {}
        }
    }
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

fn parse_port() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = 3000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let v = args.next().ok_or("--port needs a value")?;
                port = v
                    .parse()
                    .map_err(|_| format!("--port: not a port number: {v}"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: conformance --port N"
                ));
            }
        }
    }
    Ok(port)
}

#[tokio::main]
async fn main() {
    let port = match parse_port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();

    let sio = SocketIo::new(
        SioConfig {
            connect_timeout: Duration::from_millis(1000),
            ..SioConfig::default()
        },
        [
            Namespace::new("/", Fixture { echo_events: true }),
            Namespace::new("/custom", Fixture { echo_events: false }),
        ],
    );
    let router = Router::new()
        .engine("/engine.io/", Engine::new(engine_config(), Echo))
        .engine("/socket.io/", Engine::new(engine_config(), sio));

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    // The harness waits for this line.
    println!("listening on {local}");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal.cancel();
    });
    server::serve(listener, router, ServerConfig::default(), shutdown).await;
}
