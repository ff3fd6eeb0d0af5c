//! A small keep-alive HTTP/1.1 client: one request at a time on one TCP
//! connection, reconnecting when the server closes it. Content-Length and
//! chunked bodies; every request bounded by a timeout.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::Target;

const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One keep-alive connection (opened lazily, reopened after a close or an error).
#[derive(Debug)]
pub struct HttpClient {
    target: Arc<Target>,
    source: Option<IpAddr>,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed: `buf[..filled]`.
    buf: Vec<u8>,
    filled: usize,
    request: Vec<u8>,
    body: Vec<u8>,
    /// How many TCP connections this client opened.
    pub connects: u64,
}

/// A response: its status and body (borrowed from the client until the next request).
#[derive(Debug)]
pub struct Response<'a> {
    /// HTTP status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: &'a [u8],
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl HttpClient {
    /// A client for `target`; nothing is connected yet.
    pub fn new(target: Arc<Target>, source: Option<IpAddr>, timeout: Duration) -> HttpClient {
        HttpClient {
            target,
            source,
            timeout,
            stream: None,
            buf: vec![0; 16 * 1024],
            filled: 0,
            request: Vec::with_capacity(512),
            body: Vec::new(),
            connects: 0,
        }
    }

    /// Opens the connection now (instead of on the first request).
    pub async fn ensure_connected(&mut self) -> Result<()> {
        if self.stream.is_none() {
            self.stream = Some(self.target.connect(self.source, self.timeout).await?);
            self.connects += 1;
            self.filled = 0;
        }
        Ok(())
    }

    /// Sends one request and reads its response, bounded by the timeout. On any
    /// error the connection is dropped (the next request reconnects).
    /// `headers` are complete lines, each ending in `\r\n`.
    pub async fn request(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> Result<Response<'_>> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, self.exchange(method, path, headers, body)).await;
        let (status, close) = match result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.reset();
                return Err(e);
            }
            Err(_) => {
                self.reset();
                bail!("{method} {path}: no response within {timeout:?}");
            }
        };
        if close {
            self.reset();
        }
        Ok(Response { status, body: &self.body })
    }

    fn reset(&mut self) {
        self.stream = None;
        self.filled = 0;
    }

    async fn exchange(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> Result<(u16, bool)> {
        self.request.clear();
        write!(
            self.request,
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\n{headers}",
            self.target.base_path, self.target.host
        )?;
        if !body.is_empty() || method == "POST" || method == "PUT" {
            write!(self.request, "Content-Length: {}\r\n", body.len())?;
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);

        // A kept-alive connection the server closed meanwhile fails on first use:
        // retry once on a fresh connection if nothing of the response was read.
        let reused = self.stream.is_some();
        match self.send_and_read(method).await {
            Err(e) if reused && e.downcast_ref::<Stale>().is_some() => {
                self.reset();
                self.send_and_read(method).await
            }
            other => other,
        }
    }

    async fn send_and_read(&mut self, method: &str) -> Result<(u16, bool)> {
        self.ensure_connected().await?;
        let Some(stream) = self.stream.as_mut() else { bail!("no connection") };
        if let Err(e) = stream.write_all(&self.request).await {
            return Err(anyhow!(Stale).context(e));
        }
        self.read_response(method == "HEAD").await
    }

    async fn read_response(&mut self, head: bool) -> Result<(u16, bool)> {
        // Headers.
        let (status, header_len, framing, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[..self.filled]).context("malformed HTTP response")? {
                httparse::Status::Complete(len) => {
                    let status = resp.code.unwrap_or(0);
                    let mut framing = Framing::UntilClose;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                            framing = Framing::Length(v.ok_or_else(|| anyhow!("bad Content-Length"))?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            if h.value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked")) {
                                framing = Framing::Chunked;
                            }
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.windows(5).any(|w| w.eq_ignore_ascii_case(b"close"));
                        }
                    }
                    if head || status == 204 || status == 304 || (100..200).contains(&status) {
                        framing = Framing::Length(0);
                    }
                    break (status, len, framing, close);
                }
                httparse::Status::Partial => {
                    if self.filled >= MAX_HEADER_BYTES {
                        bail!("response headers over {MAX_HEADER_BYTES} bytes");
                    }
                    let nothing_yet = self.filled == 0;
                    let read = self.fill().await;
                    match read {
                        Ok(0) if nothing_yet => return Err(anyhow!(Stale)),
                        Ok(0) => bail!("connection closed inside the response headers"),
                        Ok(_) => {}
                        Err(e) if nothing_yet => return Err(e.context(Stale)),
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        self.consume(header_len);
        self.body.clear();
        match framing {
            Framing::Length(n) => {
                if n > MAX_BODY_BYTES {
                    bail!("response body of {n} bytes");
                }
                self.read_exact_into_body(n).await?;
            }
            Framing::Chunked => self.read_chunked().await?,
            Framing::UntilClose => {
                loop {
                    self.body.extend_from_slice(&self.buf[..self.filled]);
                    self.filled = 0;
                    if self.body.len() > MAX_BODY_BYTES {
                        bail!("response body over {MAX_BODY_BYTES} bytes");
                    }
                    if self.fill().await? == 0 {
                        break;
                    }
                }
                return Ok((status, true));
            }
        }
        Ok((status, close))
    }

    async fn read_exact_into_body(&mut self, n: usize) -> Result<()> {
        while self.body.len() + self.filled < n {
            let take = self.filled;
            self.body.extend_from_slice(&self.buf[..take]);
            self.filled = 0;
            if self.fill().await? == 0 {
                bail!("connection closed inside a response body");
            }
        }
        let need = n - self.body.len();
        self.body.extend_from_slice(&self.buf[..need]);
        self.consume(need);
        Ok(())
    }

    async fn read_chunked(&mut self) -> Result<()> {
        loop {
            let line = self.read_line().await?;
            let size_hex = line.split(|&b| b == b';').next().unwrap_or_default();
            let size_str = std::str::from_utf8(size_hex).context("bad chunk size")?.trim();
            let size = usize::from_str_radix(size_str, 16).with_context(|| format!("bad chunk size {size_str:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(());
            }
            if self.body.len() + size > MAX_BODY_BYTES {
                bail!("response body over {MAX_BODY_BYTES} bytes");
            }
            let target = self.body.len() + size;
            while self.body.len() < target {
                if self.filled == 0 && self.fill().await? == 0 {
                    bail!("connection closed inside a chunk");
                }
                let take = (target - self.body.len()).min(self.filled);
                self.body.extend_from_slice(&self.buf[..take]);
                self.consume(take);
            }
            if !self.read_line().await?.is_empty() {
                bail!("missing CRLF after a chunk");
            }
        }
    }

    /// One line without its CRLF.
    async fn read_line(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf[..self.filled].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.consume(i + 2);
                return Ok(line);
            }
            if self.filled >= MAX_HEADER_BYTES {
                bail!("chunk line too long");
            }
            if self.fill().await? == 0 {
                bail!("connection closed inside a chunked body");
            }
        }
    }

    /// Reads more bytes after `filled`, growing the buffer when full. Returns 0 at EOF.
    async fn fill(&mut self) -> Result<usize> {
        if self.filled == self.buf.len() {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let Some(stream) = self.stream.as_mut() else { bail!("no connection") };
        let n = stream.read(&mut self.buf[self.filled..]).await.context("reading the response")?;
        self.filled += n;
        Ok(n)
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// The connection was found closed before any of the response arrived.
#[derive(Debug)]
struct Stale;

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("kept-alive connection was closed by the server")
    }
}

impl std::error::Error for Stale {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request with the next canned response.
    async fn canned(responses: Vec<&'static [u8]>) -> Result<Arc<Target>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = vec![0u8; 4096];
            for r in responses {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                // Bodies of the test requests are small and come in the same read.
                if s.write_all(r).await.is_err() {
                    return;
                }
            }
        });
        Ok(Arc::new(Target::resolve(&format!("http://{addr}")).await?))
    }

    #[tokio::test]
    async fn keep_alive_with_length_and_chunked() -> Result<()> {
        let target = canned(vec![
            b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ])
        .await?;
        let mut c = HttpClient::new(target, None, Duration::from_secs(5));
        let r = c.request("POST", "/api/events", "Content-Type: application/json\r\n", b"{}").await?;
        assert_eq!((r.status, r.body), (201, &b"hello"[..]));
        let r = c.request("GET", "/api/events?limit=5", "", b"").await?;
        assert_eq!((r.status, r.body), (200, &b"abcde"[..]));
        let r = c.request("GET", "/x", "", b"").await?;
        assert_eq!((r.status, r.body), (404, &b""[..]));
        assert_eq!(c.connects, 1);
        Ok(())
    }

    #[tokio::test]
    async fn closed_server_is_an_error_not_a_hang() -> Result<()> {
        let target = canned(vec![]).await?;
        let mut c = HttpClient::new(target, None, Duration::from_secs(2));
        assert!(c.request("GET", "/", "", b"").await.is_err());
        Ok(())
    }
}
