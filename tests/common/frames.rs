//! A websocket client written byte by byte: the HTTP upgrade by hand, then
//! frames built from their fields, so a test can send what no websocket
//! library would (reserved bits and opcodes, unmasked frames, broken close
//! payloads, invalid UTF-8, half frames) and read what the server answers.
//!
//! Included by the tests with `#[path = "common/frames.rs"] mod frames;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A guard against hangs, not a timing assertion.
const WAIT: Duration = Duration::from_secs(10);

/// Opcodes.
pub const CONT: u8 = 0x0;
/// Text frame.
pub const TEXT: u8 = 0x1;
/// Binary frame.
pub const BINARY: u8 = 0x2;
/// Close frame.
pub const CLOSE: u8 = 0x8;
/// Ping frame.
pub const PING: u8 = 0x9;

/// One frame as a client sends it: FIN, RSV bits (0..=7), opcode, masked or
/// not, and the payload (masked here when `masked`).
pub fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (rsv & 7) << 4 | (opcode & 0x0f));
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A complete, masked, final client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, true, payload)
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// FIN.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What the server sent until it ended the websocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Text messages before the close frame.
    pub texts: Vec<String>,
    /// The close frame's code: `Some(1005)` for a close frame without one,
    /// `None` when no close frame came before the end of the stream.
    pub close_code: Option<u16>,
}

/// A raw websocket connection.
pub struct RawWs {
    /// The TCP stream (the upgrade's response has been read off it).
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `target` on `addr` with `extra` request headers; returns the
    /// connection, or the status line and head when the answer is not 101.
    pub async fn open(addr: SocketAddr, target: &str, extra: &[(&str, &str)]) -> Result<RawWs, String> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::open_on(stream, addr, target, extra).await
    }

    /// As [`RawWs::open`], with a kernel receive buffer of `recv_buffer`
    /// bytes (a client that stops reading fills it sooner).
    pub async fn open_small(addr: SocketAddr, target: &str, recv_buffer: u32) -> Result<RawWs, String> {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(recv_buffer).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        Self::open_on(stream, addr, target, &[]).await
    }

    async fn open_on(
        mut stream: TcpStream,
        addr: SocketAddr,
        target: &str,
        extra: &[(&str, &str)],
    ) -> Result<RawWs, String> {
        stream.set_nodelay(true).unwrap();
        let mut head = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("write upgrade request");
        let mut ws = RawWs { stream, buf: Vec::new() };
        let response = tokio::time::timeout(WAIT, ws.read_head()).await.expect("upgrade answered").expect("head");
        if response.starts_with("HTTP/1.1 101") { Ok(ws) } else { Err(response) }
    }

    async fn fill(&mut self, want: usize) -> io::Result<()> {
        while self.buf.len() < want {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    async fn read_head(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return Ok(head);
            }
            let want = self.buf.len() + 1;
            self.fill(want).await?;
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Sends a complete masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send(&client_frame(TEXT, text.as_bytes())).await.expect("send text frame");
    }

    /// Reads one frame; `None` at the end of the stream (EOF or reset).
    pub async fn read_frame(&mut self) -> Option<ServerFrame> {
        tokio::time::timeout(WAIT, self.read_frame_inner()).await.expect("a frame or the end in time").ok()
    }

    async fn read_frame_inner(&mut self) -> io::Result<ServerFrame> {
        self.fill(2).await?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "a server frame is never masked");
        let (len, at) = match b1 & 0x7f {
            126 => {
                self.fill(4).await?;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await?;
                (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.fill(at + len).await?;
        let payload = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Ok(ServerFrame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, payload })
    }

    /// The next text frame (answering Engine.IO pings); panics on anything else.
    pub async fn read_text(&mut self) -> String {
        loop {
            let f = self.read_frame().await.expect("a text frame");
            assert_eq!((f.fin, f.opcode), (true, TEXT), "{f:?}");
            let text = String::from_utf8(f.payload).expect("UTF-8 text");
            if text == "2" {
                self.send_text("3").await;
                continue;
            }
            return text;
        }
    }

    /// Reads until the server ends the websocket.
    pub async fn until_closed(&mut self) -> Ending {
        let mut texts = Vec::new();
        loop {
            match self.read_frame().await {
                None => return Ending { texts, close_code: None },
                Some(f) if f.opcode == CLOSE => {
                    let code =
                        if f.payload.len() >= 2 { u16::from_be_bytes([f.payload[0], f.payload[1]]) } else { 1005 };
                    return Ending { texts, close_code: Some(code) };
                }
                Some(f) if f.opcode == TEXT => texts.push(String::from_utf8_lossy(&f.payload).into_owned()),
                Some(_) => {}
            }
        }
    }

    /// Drops the connection with a TCP reset (SO_LINGER 0), as a client that
    /// crashes or loses its network does.
    pub fn reset(self) {
        reset(self.stream);
    }
}

/// Drops `stream` with a TCP reset instead of an orderly FIN.
pub fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
