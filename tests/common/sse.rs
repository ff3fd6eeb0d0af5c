//! A raw Server-Sent Events client: the request written by hand, the
//! chunked response read as it comes, split into records.
//!
//! Included by the tests with `#[path = "common/sse.rs"] mod sse;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::raw::WAIT;

/// One record of the stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// `id:`
    pub id: Option<String>,
    /// `event:`
    pub event: Option<String>,
    /// `data:` lines, joined by newlines.
    pub data: Option<String>,
    /// `retry:`
    pub retry: Option<String>,
    /// `: comment` lines.
    pub comments: Vec<String>,
}

impl Record {
    /// The `data` as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("a data line")).expect("data is JSON")
    }

    /// Whether this is an `event_created` record.
    pub fn is_event(&self) -> bool {
        self.event.as_deref() == Some("event_created")
    }
}

/// An open stream.
pub struct SseClient {
    /// The status.
    pub status: u16,
    /// Header names (lowercased) and values.
    pub headers: Vec<(String, String)>,
    /// The body of a response that is not a stream (an error).
    pub body: Vec<u8>,
    stream: BufReader<TcpStream>,
    text: String,
    ended: bool,
}

impl SseClient {
    /// `GET target` on `addr` with `headers`; reads the response head (and
    /// the whole body when it is not chunked).
    pub async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> SseClient {
        Self::get_on(TcpStream::connect(addr).await.expect("connect"), addr, target, headers).await
    }

    /// The same on a connected socket (a test may have set its buffers).
    pub async fn get_on(mut tcp: TcpStream, addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await.expect("send the request");
        let mut stream = BufReader::new(tcp);
        let line = read_line(&mut stream).await.expect("a status line");
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut stream).await.expect("a header line");
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("a header");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut client = SseClient { status, headers, body: Vec::new(), stream, text: String::new(), ended: false };
        if let Some(len) = client.header("content-length") {
            let mut body = vec![0; len.parse().expect("a length")];
            client.stream.read_exact(&mut body).await.expect("the body");
            client.body = body;
            client.ended = true;
        }
        client
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body of an error answer, as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Reads one more chunk; `Ok(false)` at the end of the response.
    async fn read_chunk(&mut self) -> io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let size_line = read_line(&mut self.stream).await?;
        let size = usize::from_str_radix(size_line.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            read_line(&mut self.stream).await?;
            self.ended = true;
            return Ok(false);
        }
        let mut data = vec![0; size];
        self.stream.read_exact(&mut data).await?;
        read_line(&mut self.stream).await?;
        self.text.push_str(std::str::from_utf8(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?);
        Ok(true)
    }

    /// The next record (within [`WAIT`]); `None` when the stream ended
    /// cleanly. Panics when the connection breaks.
    pub async fn next(&mut self) -> Option<Record> {
        self.try_next().await.expect("the stream broke")
    }

    /// The next record; `Err` when the connection breaks (reset, EOF
    /// without the chunked end), `Ok(None)` at a clean end.
    pub async fn try_next(&mut self) -> io::Result<Option<Record>> {
        loop {
            if let Some(at) = self.text.find("\n\n") {
                let raw: String = self.text.drain(..at + 2).collect();
                return Ok(Some(parse(&raw)));
            }
            let more = tokio::time::timeout(WAIT, self.read_chunk())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no record in time"))??;
            if !more {
                return Ok(None);
            }
        }
    }

    /// The next `n` `event_created` records (other records skipped), as JSON.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let record = self.next().await.expect("the stream ended first");
            if record.is_event() {
                assert_eq!(record.id.as_deref(), record.json()["id"].as_str(), "the record's id is the event's");
                out.push(record.json());
            }
        }
        out
    }
}

fn parse(raw: &str) -> Record {
    let mut r = Record::default();
    for line in raw.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            r.comments.push(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => r.id = Some(value.to_owned()),
            "event" => r.event = Some(value.to_owned()),
            "retry" => r.retry = Some(value.to_owned()),
            "data" => match &mut r.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => r.data = Some(value.to_owned()),
            },
            other => panic!("an unknown field {other:?} in {raw:?}"),
        }
    }
    r
}

async fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
