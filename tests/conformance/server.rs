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

mod fixture;

use std::net::SocketAddr;

use eventfeed::server::{self, ServerConfig};
use tokio_util::sync::CancellationToken;

fn parse_port() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = 3000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let v = args.next().ok_or("--port needs a value")?;
                port = v.parse().map_err(|_| format!("--port: not a port number: {v}"))?;
            }
            other => {
                return Err(format!("unknown argument {other}; usage: conformance --port N"));
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
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())).init();

    let router = fixture::router();

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
