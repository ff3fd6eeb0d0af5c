//! One Socket.IO client over the Engine.IO websocket transport: TCP connect,
//! websocket handshake, open packet, CONNECT to the namespace, snapshot.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use eventfeed_protocol::engine::{Handshake, Packet, decode_text};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::target::Target;
use crate::wire::{ConnectAnswer, EventArgs, Incoming, Wire, clip};

/// A websocket to the server.
pub type Ws = WebSocketStream<TcpStream>;

/// What every client of a run shares.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server.
    pub target: Arc<Target>,
    /// Frames of the namespace.
    pub wire: Wire,
    /// The token sent in CONNECT.
    pub token: String,
    /// Bound on the whole open (TCP connect to snapshot).
    pub timeout: Duration,
    /// Small buffers: many thousands of clients live in one process.
    pub ws_config: WebSocketConfig,
}

impl ClientConfig {
    /// The websocket config for `read_buffer` bytes of read buffer, eager writes.
    pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(read_buffer.max(256))
            .write_buffer_size(0)
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20))
    }
}

/// An open Socket.IO session that has received its snapshot.
#[derive(Debug)]
pub struct Session {
    /// The websocket.
    pub ws: Ws,
    /// The largest seq of the snapshot, `None` when it was empty.
    pub snapshot_max_seq: Option<u64>,
}

/// Opens a session for `tenant`, bounded by the config's timeout.
pub async fn open(cfg: &ClientConfig, tenant: &str, source: Option<IpAddr>) -> Result<Session> {
    tokio::time::timeout(cfg.timeout, open_inner(cfg, tenant, source))
        .await
        .map_err(|_| anyhow!("no snapshot within {:?} (TCP connect, handshake, CONNECT)", cfg.timeout))?
}

async fn open_inner(cfg: &ClientConfig, tenant: &str, source: Option<IpAddr>) -> Result<Session> {
    let mut ws = engine_open_inner(cfg, source).await?;
    ws.send(Message::text(cfg.wire.connect(tenant, &cfg.token))).await.context("sending CONNECT")?;
    let mut connected = false;
    loop {
        let text = next_text(&mut ws).await?.ok_or_else(|| anyhow!("closed before the snapshot"))?;
        match cfg.wire.classify(text.as_str()).map_err(|e| anyhow!(e))? {
            Incoming::Ping => ws.send(Message::text("3")).await.context("sending pong")?,
            Incoming::Connected => connected = true,
            Incoming::ConnectError(m) => bail!("CONNECT refused: {m}"),
            Incoming::Closed => bail!("the server closed the session before the snapshot"),
            Incoming::Event(EventArgs::Snapshot { max_seq, .. }) => {
                if !connected {
                    bail!("snapshot before the CONNECT answer");
                }
                return Ok(Session { ws, snapshot_max_seq: max_seq });
            }
            Incoming::Event(_) | Incoming::Ack(..) | Incoming::Ignored => {}
        }
    }
}

/// An open session with the ids of its CONNECT answer.
#[derive(Debug)]
pub struct IdSession {
    /// The session (websocket and snapshot).
    pub session: Session,
    /// The CONNECT answer's `sid` and `pid`.
    pub answer: ConnectAnswer,
}

/// As [`open`], also keeping the CONNECT answer's `sid` and `pid` (for
/// connection state recovery), bounded by the config's timeout.
pub async fn open_with_ids(cfg: &ClientConfig, tenant: &str, source: Option<IpAddr>) -> Result<IdSession> {
    tokio::time::timeout(cfg.timeout, async {
        let mut ws = engine_open_inner(cfg, source).await?;
        ws.send(Message::text(cfg.wire.connect(tenant, &cfg.token))).await.context("sending CONNECT")?;
        let mut answer = None;
        loop {
            let text = next_text(&mut ws).await?.ok_or_else(|| anyhow!("closed before the snapshot"))?;
            match cfg.wire.classify(text.as_str()).map_err(|e| anyhow!(e))? {
                Incoming::Ping => ws.send(Message::text("3")).await.context("sending pong")?,
                Incoming::Connected => {
                    let ids = cfg.wire.connect_answer(text.as_str());
                    answer =
                        Some(ids.ok_or_else(|| anyhow!("CONNECT answer without a sid: {:?}", clip(text.as_str())))?);
                }
                Incoming::ConnectError(m) => bail!("CONNECT refused: {m}"),
                Incoming::Closed => bail!("the server closed the session before the snapshot"),
                Incoming::Event(EventArgs::Snapshot { max_seq, .. }) => {
                    let Some(answer) = answer else { bail!("snapshot before the CONNECT answer") };
                    return Ok(IdSession { session: Session { ws, snapshot_max_seq: max_seq }, answer });
                }
                Incoming::Event(_) | Incoming::Ack(..) | Incoming::Ignored => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no snapshot within {:?} (TCP connect, handshake, CONNECT)", cfg.timeout))?
}

/// The Engine.IO part of an open: TCP connect, websocket handshake and the
/// open packet, bounded by the config's timeout. The caller sends its own CONNECT.
pub async fn engine_open(cfg: &ClientConfig, source: Option<IpAddr>) -> Result<Ws> {
    tokio::time::timeout(cfg.timeout, engine_open_inner(cfg, source))
        .await
        .map_err(|_| anyhow!("no Engine.IO open packet within {:?} (TCP connect, handshake)", cfg.timeout))?
}

/// TCP connect, websocket handshake, the Engine.IO open packet (unbounded: the caller bounds it).
pub(crate) async fn engine_open_inner(cfg: &ClientConfig, source: Option<IpAddr>) -> Result<Ws> {
    let stream = cfg.target.connect(source, cfg.timeout).await?;
    let url = format!("ws://{}{}/socket.io/?EIO=4&transport=websocket", cfg.target.host, cfg.target.base_path);
    let (mut ws, _response) = tokio_tungstenite::client_async_with_config(url, stream, Some(cfg.ws_config))
        .await
        .context("websocket handshake")?;
    let open = next_text(&mut ws).await?.ok_or_else(|| anyhow!("closed before the Engine.IO open packet"))?;
    match decode_text(open.as_str()) {
        // The fields are not needed; a server that adds its own is still served.
        Ok(Packet::Open(json)) if Handshake::parse(json).is_ok() || json.starts_with('{') => Ok(ws),
        _ => bail!("expected the Engine.IO open packet, got {:?}", clip(open.as_str())),
    }
}

/// The next text message; `None` when the websocket closed. Binary messages
/// are skipped (the feed sends none); websocket pings are answered by tungstenite.
pub async fn next_text(ws: &mut Ws) -> Result<Option<Utf8Bytes>> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(anyhow!(e).context("websocket read")),
            Some(Ok(Message::Text(t))) => return Ok(Some(t)),
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
}

/// Sends a pong (`3`).
pub async fn pong(ws: &mut Ws) -> Result<()> {
    ws.send(Message::text("3")).await.context("sending pong")
}
