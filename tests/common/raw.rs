//! Raw clients for the Engine.IO / Socket.IO integration tests.
//!
//! HTTP/1.1 is written and read by hand over a `TcpStream`, so a test can send
//! exactly the bytes it wants (hostile ones included) and see exactly what
//! comes back. WebSockets use tokio-tungstenite's client, plus raw frames
//! (`Message::Frame`) where a test needs fragments or oversized frames.
//!
//! Included by the tests with `#[path = "common/raw.rs"] mod raw;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a test waits for something that should come (a guard against
/// hangs, not a timing assertion). Under paused time it is virtual.
pub const WAIT: Duration = Duration::from_secs(10);

/// The headers of a websocket upgrade request (RFC 6455's sample key).
pub const UPGRADE_HEADERS: [(&str, &str); 4] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// The record separator between packets of a polling payload.
pub const SEP: char = '\x1e';

// ---------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------

/// An HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The body as text (panics when it is not UTF-8).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("response body is UTF-8")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("response body is JSON")
    }
}

/// One HTTP/1.1 connection (keep-alive: several requests in a row).
pub struct HttpConn {
    addr: SocketAddr,
    stream: BufReader<TcpStream>,
}

impl HttpConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        HttpConn { addr, stream: BufReader::new(stream) }
    }

    /// Wraps a connected `stream`.
    pub fn from_stream(addr: SocketAddr, stream: TcpStream) -> Self {
        HttpConn { addr, stream: BufReader::new(stream) }
    }

    /// Writes `bytes` as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.get_mut().write_all(bytes).await?;
        self.stream.get_mut().flush().await
    }

    /// Writes a request: `Host` and, for a body or a POST/PUT, `Content-Length`
    /// are added unless `headers` has them.
    pub async fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("host") {
            head.push_str(&format!("Host: {}\r\n", self.addr));
        }
        if !has("content-length")
            && !has("transfer-encoding")
            && (!body.is_empty() || method == "POST" || method == "PUT")
        {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes).await
    }

    /// Reads the answer to a request already sent (a held GET), within [`WAIT`].
    pub async fn finish(mut self) -> Response {
        tokio::time::timeout(WAIT, self.read_response()).await.expect("answered in time").expect("a response")
    }

    /// Reads one response. `UnexpectedEof` when the server closed first.
    pub async fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_to("GET").await
    }

    /// Reads the response to a request with `method`: a HEAD's has headers only.
    pub async fn read_response_to(&mut self, method: &str) -> io::Result<Response> {
        let status_line = self.read_line().await?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad header {line:?}")))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut res = Response { status, headers, body: Vec::new() };
        if method == "HEAD" || status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(res);
        }
        if res.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            loop {
                let size_line = self.read_line().await?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.read_line().await?.is_empty() {}
                    break;
                }
                let at = res.body.len();
                res.body.resize(at + size, 0);
                self.stream.read_exact(&mut res.body[at..]).await?;
                self.read_line().await?;
            }
        } else if let Some(len) = res.header("content-length") {
            let len: usize =
                len.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
            res.body.resize(len, 0);
            self.stream.read_exact(&mut res.body).await?;
        } else {
            self.stream.read_to_end(&mut res.body).await?;
        }
        Ok(res)
    }

    async fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        let n = self.stream.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 head"))
    }

    /// Sends a request and reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.send(method, target, headers, body).await?;
        self.read_response().await
    }

    /// Whether the server closed the connection (EOF or reset) within `WAIT`,
    /// having sent nothing more.
    pub async fn is_closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(tokio::time::timeout(WAIT, self.stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    /// The socket, to drop it (a client that vanishes) or hand it on.
    pub fn into_inner(self) -> TcpStream {
        self.stream.into_inner()
    }
}

/// One request on a fresh connection.
pub async fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut conn = HttpConn::connect(addr).await;
    tokio::time::timeout(WAIT, conn.request(method, target, headers, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no response"))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// Asserts the reference's JSON error answer: 400 `{"code":N,"message":"..."}`.
#[track_caller]
pub fn assert_engine_error(res: &Response, code: u8, message: &str) {
    assert_eq!(res.status, 400, "status of {res:?}");
    assert_eq!(res.header("content-type"), Some("application/json"), "content type of {res:?}");
    assert_eq!(res.text(), format!(r#"{{"code":{code},"message":"{message}"}}"#));
}

// ---------------------------------------------------------------------------
// Engine.IO over HTTP
// ---------------------------------------------------------------------------

/// An Engine.IO endpoint of a test server (`/engine.io/`, `/socket.io/`).
#[derive(Debug, Clone)]
pub struct Eio {
    /// The server.
    pub addr: SocketAddr,
    /// The endpoint path, with its trailing slash.
    pub path: String,
}

impl Eio {
    /// The endpoint at `path` on `addr`.
    pub fn new(addr: SocketAddr, path: &str) -> Self {
        Eio { addr, path: path.to_owned() }
    }

    /// The request target for a polling request of `sid`.
    pub fn polling(&self, sid: &str) -> String {
        format!("{}?EIO=4&transport=polling&sid={sid}", self.path)
    }

    /// The request target for a websocket of `sid` (or a new one).
    pub fn websocket(&self, sid: Option<&str>) -> String {
        match sid {
            Some(sid) => format!("{}?EIO=4&transport=websocket&sid={sid}", self.path),
            None => format!("{}?EIO=4&transport=websocket", self.path),
        }
    }

    /// Opens a polling session; returns its sid and the handshake response.
    pub async fn handshake(&self) -> (String, Response) {
        let res = request(self.addr, "GET", &format!("{}?EIO=4&transport=polling", self.path), &[], b"").await;
        assert_eq!(res.status, 200, "handshake: {res:?}");
        (open_sid(res.text()), res)
    }

    /// Opens a polling session; returns its sid.
    pub async fn open(&self) -> String {
        self.handshake().await.0
    }

    /// A polling GET on a fresh connection.
    pub async fn get(&self, sid: &str) -> Response {
        request(self.addr, "GET", &self.polling(sid), &[], b"").await
    }

    /// A polling POST on a fresh connection.
    pub async fn post(&self, sid: &str, body: &[u8]) -> Response {
        request(self.addr, "POST", &self.polling(sid), &[("Content-Type", "text/plain;charset=UTF-8")], body).await
    }

    /// A polling POST that must be answered `ok`.
    pub async fn post_ok(&self, sid: &str, body: &[u8]) {
        let res = self.post(sid, body).await;
        assert_eq!((res.status, res.text()), (200, "ok"), "POST {:?}", String::from_utf8_lossy(body));
    }

    /// Starts a polling GET on its own connection; the response comes later.
    pub async fn start_get(&self, sid: &str) -> HttpConn {
        let mut conn = HttpConn::connect(self.addr).await;
        conn.send("GET", &self.polling(sid), &[], b"").await.unwrap();
        conn
    }

    /// A GET whose answer must be 200; returns the body.
    pub async fn get_ok(&self, sid: &str) -> String {
        let res = self.get(sid).await;
        assert_eq!(res.status, 200, "GET: {res:?}");
        res.text().to_owned()
    }

    /// Opens a websocket (`sid` for an upgrade).
    pub async fn ws(&self, sid: Option<&str>) -> Ws {
        ws_connect(self.addr, &self.websocket(sid)).await.expect("websocket handshake")
    }

    /// Opens a direct websocket session; returns it and its sid (the open
    /// packet has been read).
    pub async fn ws_open(&self) -> (Ws, String) {
        let mut ws = self.ws(None).await;
        let open = recv_text(&mut ws).await;
        (ws, open_sid(&open))
    }

    /// Upgrades polling session `sid` to a websocket (`2probe`, `3probe`, `5`).
    pub async fn upgrade(&self, sid: &str) -> Ws {
        let mut ws = self.ws(Some(sid)).await;
        send_text(&mut ws, "2probe").await;
        assert_eq!(recv_text(&mut ws).await, "3probe");
        send_text(&mut ws, "5").await;
        ws
    }

    /// Whether `sid` is gone: a GET gets 400 `Session ID unknown`.
    pub async fn is_unknown(&self, sid: &str) -> bool {
        let res = self.get(sid).await;
        res.status == 400 && res.text() == r#"{"code":1,"message":"Session ID unknown"}"#
    }
}

/// The sid of an open packet `0{...}`.
#[track_caller]
pub fn open_sid(open: &str) -> String {
    let json = open.strip_prefix('0').unwrap_or_else(|| panic!("not an open packet: {open:?}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("open packet JSON");
    v["sid"].as_str().expect("sid is a string").to_owned()
}

/// Splits a polling payload into its packets.
pub fn packets(body: &str) -> Vec<&str> {
    body.split(SEP).collect()
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

/// A client websocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens a websocket to `target` (path and query) on `addr`.
pub async fn ws_connect(addr: SocketAddr, target: &str) -> Result<Ws, tungstenite::Error> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
    let url = format!("ws://{addr}{target}");
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async_with_config(url, stream, Some(config)))
        .await
        .expect("websocket handshake timed out")?;
    Ok(ws)
}

/// Sends a text frame.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send text");
}

/// Sends a binary frame.
pub async fn send_binary(ws: &mut Ws, data: &[u8]) {
    ws.send(Message::binary(data.to_vec())).await.expect("send binary");
}

/// The next data message (text or binary), skipping websocket pings/pongs.
/// `None` once the socket is closed.
pub async fn recv(ws: &mut Ws) -> Option<Message> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("no websocket message in time");
        match msg {
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(m)) => return Some(m),
        }
    }
}

/// The next message, which must be text.
#[track_caller]
pub fn expect_text(msg: Option<Message>) -> String {
    match msg {
        Some(Message::Text(t)) => t.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next message, which must be a text frame.
pub async fn recv_text(ws: &mut Ws) -> String {
    let msg = recv(ws).await;
    expect_text(msg)
}

/// The next message, which must be a binary frame.
pub async fn recv_binary(ws: &mut Ws) -> Vec<u8> {
    match recv(ws).await {
        Some(Message::Binary(b)) => b.to_vec(),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

/// The next text frame that is not an Engine.IO ping (pings are answered
/// with a pong so the session stays up).
pub async fn recv_text_ponging(ws: &mut Ws) -> String {
    loop {
        let text = recv_text(ws).await;
        if text == "2" {
            send_text(ws, "3").await;
            continue;
        }
        return text;
    }
}

/// How a websocket ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Data messages received before the end (text as-is, binary as `<n bytes>`).
    pub messages: Vec<String>,
    /// The close frame's code (`Status`, 1005, for a close frame without
    /// one); `None` when the connection ended without a close frame.
    pub code: Option<CloseCode>,
}

/// Reads until the server ends the websocket (close frame, EOF or reset);
/// returns what came before and the close code.
pub async fn until_closed(ws: &mut Ws) -> Closed {
    let mut messages = Vec::new();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("websocket not closed in time");
        match msg {
            Some(Ok(Message::Text(t))) => messages.push(t.as_str().to_owned()),
            Some(Ok(Message::Binary(b))) => messages.push(format!("<{} bytes>", b.len())),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| f.code);
                // Let tungstenite answer the close and see the end of the stream.
                let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
                return Closed { messages, code: code.or(Some(CloseCode::Status)) };
            }
            None | Some(Err(_)) => return Closed { messages, code: None },
        }
    }
}

/// Polls `check` every few milliseconds until it holds; panics after `WAIT`.
/// For "eventually" conditions (a session gone, a count at zero).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
