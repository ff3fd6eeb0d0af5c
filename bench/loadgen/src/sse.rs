//! `fanout --transport sse`: receivers on eventfeed's Server-Sent Events
//! stream `GET /api/events/stream` (the Node baseline has none: the run
//! stops at once with a message saying so).
//!
//! The response is `text/event-stream` in chunked transfer encoding over
//! HTTP/1.1; chunks are decoded as they come and SSE records are parsed
//! across chunk boundaries: `event:`, `data:` and `id:` lines, a blank line
//! ending a record, comments (`: keep-alive`) and `retry:` skipped. Each
//! `event_created` record is checked by the same [`Track`]/[`on_event`] as
//! the websocket receiver; a `gap` record is a protocol error (the server says
//! events were missed), an `error` record or the end of the stream a disconnect.
//!
//! Where a stream starts, exactly: before opening, the receiver reads the
//! tenant's latest event (`GET /api/events?limit=1`, the same headers as the
//! publishers: `X-TENANT-ID`, `X-User-Token`). If there is one, the stream is
//! opened with `?sinceId=<its id>`, and the checks are based on its seq: the
//! server sends every event after it (backlog, then live, joined under the
//! tenant's lock: none missed, none twice), so even an event published between
//! the look-up and the open arrives and is checked. If the tenant has none,
//! the stream is opened with `?snapshot=1000` (everything it holds by then,
//! normally nothing) and the checks are based on seq 0: a tenant's seqs are 1,
//! 2, 3, … with no holes (the contract), so its first event must be 1. Either
//! way the first event is checked against a known seq, never taken as the base.
//! The server joins the stream to its tenant before it answers, so a receiver
//! is ready once the response head (200) has arrived.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::HttpClient;
use crate::track::{Receiver, Shared, Track, on_event};
use crate::wire::{EventLite, clip};
use crate::ws::ClientConfig;

/// Response head bytes at most.
const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size or trailer line at most.
const MAX_CHUNK_LINE: usize = 4096;
/// An SSE line (one record's `data:`) at most.
const MAX_SSE_LINE: usize = 16 << 20;
/// Read buffer per receiver.
const READ_BUFFER: usize = 16 * 1024;
/// A tenant's events the stream starts with when the tenant had none at the
/// look-up (the server's largest `snapshot`).
const ALL_RETAINED: usize = 1000;

// ---------------------------------------------------------------- decoding

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// This many bytes of chunk data to go.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty one.
    Trailers,
    /// The body is over.
    Done,
}

/// An incremental `Transfer-Encoding: chunked` decoder: bytes in as they
/// are read, however split, payload out.
#[derive(Debug)]
struct Chunked {
    state: ChunkState,
    line: Vec<u8>,
}

impl Chunked {
    fn new() -> Chunked {
        Chunked { state: ChunkState::Size, line: Vec::new() }
    }

    /// Decodes `input`, appending the payload to `out`. `Ok(true)` once the
    /// last chunk and its trailers have passed (later bytes are ignored).
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(n) => {
                    let take = n.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if take == n { ChunkState::DataEnd } else { ChunkState::Data(n - take) };
                }
                state => {
                    let Some(i) = input.iter().position(|&b| b == b'\n') else {
                        if self.line.len() + input.len() > MAX_CHUNK_LINE {
                            return Err(format!("chunk line over {MAX_CHUNK_LINE} bytes"));
                        }
                        self.line.extend_from_slice(input);
                        break;
                    };
                    self.line.extend_from_slice(&input[..i]);
                    input = &input[i + 1..];
                    let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                    self.state = match state {
                        ChunkState::Size => {
                            let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                            let hex = std::str::from_utf8(hex).map_err(|_| "chunk size is not text".to_string())?;
                            match usize::from_str_radix(hex.trim(), 16) {
                                Ok(0) => ChunkState::Trailers,
                                Ok(n) => ChunkState::Data(n),
                                Err(_) => return Err(format!("bad chunk size {:?}", clip(hex))),
                            }
                        }
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err("no CRLF after a chunk's data".to_string()),
                        _ if line.is_empty() => ChunkState::Done,
                        other => other,
                    };
                    self.line.clear();
                }
            }
        }
        Ok(self.state == ChunkState::Done)
    }
}

/// How the response body is delimited.
#[derive(Debug)]
enum Framing {
    Chunked(Chunked),
    /// Bytes to go.
    Length(u64),
    UntilClose,
}

impl Framing {
    /// Decodes `input` into `out`; `Ok(true)` once the body is over.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        match self {
            Framing::Chunked(c) => c.feed(input, out),
            Framing::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(input.len());
                out.extend_from_slice(&input[..take]);
                *left -= take as u64;
                Ok(*left == 0)
            }
            Framing::UntilClose => {
                out.extend_from_slice(input);
                Ok(false)
            }
        }
    }
}

/// An incremental Server-Sent Events parser: lines end in LF or CRLF
/// (the server's are LF), a record ends at a blank line; a record with no
/// `data:` line (a comment, `retry:`) is not dispatched.
#[derive(Debug, Default)]
struct SseParser {
    /// The start of a line whose end has not arrived.
    partial: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Parses `input`, calling `on_record(event, data)` for each complete record.
    fn feed(&mut self, mut input: &[u8], on_record: &mut impl FnMut(&str, &str)) -> Result<(), String> {
        while let Some(i) = input.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&input[..i], on_record)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&input[..i]);
                let r = self.line(&line, on_record);
                line.clear();
                self.partial = line;
                r?;
            }
            input = &input[i + 1..];
        }
        if self.partial.len() + input.len() > MAX_SSE_LINE {
            return Err(format!("SSE line over {MAX_SSE_LINE} bytes"));
        }
        self.partial.extend_from_slice(input);
        Ok(())
    }

    fn line(&mut self, line: &[u8], on_record: &mut impl FnMut(&str, &str)) -> Result<(), String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                on_record(if self.event.is_empty() { "message" } else { &self.event }, &self.data);
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| "SSE line is not UTF-8".to_string())?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` (the checks use seq), `retry`, and unknown fields.
            _ => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- opening

/// The latest event of a page (`GET /api/events?limit=1`).
#[derive(Debug, Deserialize)]
struct Latest {
    id: String,
    seq: u64,
}

#[derive(Debug, Deserialize)]
struct Page {
    events: Vec<Latest>,
}

/// The headers of every request of `tenant` (as the REST publishers send).
fn auth_headers(cfg: &ClientConfig, tenant: &str) -> String {
    format!("X-TENANT-ID: {tenant}\r\nX-User-Token: {}\r\n", cfg.token)
}

/// The tenant's latest event, if any.
async fn latest(cfg: &ClientConfig, tenant: &str, source: Option<IpAddr>) -> Result<Option<Latest>, String> {
    let mut client = HttpClient::new(Arc::clone(&cfg.target), source, cfg.timeout);
    let headers = format!("{}Connection: close\r\n", auth_headers(cfg, tenant));
    let r = client
        .request("GET", "/api/events?limit=1", &headers, b"")
        .await
        .map_err(|e| format!("GET /api/events?limit=1: {e:#}"))?;
    if r.status != 200 {
        return Err(format!("GET /api/events?limit=1: HTTP {}: {}", r.status, clip(&String::from_utf8_lossy(r.body))));
    }
    let page: Page = serde_json::from_slice(r.body).map_err(|e| format!("GET /api/events?limit=1: {e}"))?;
    let last = page.events.into_iter().last();
    if let Some(l) = &last
        && !l.id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        return Err(format!("event id {:?} is not a UUID", clip(&l.id)));
    }
    Ok(last)
}

/// An open stream: the connection, the body's framing, and body bytes read with the head.
struct Stream {
    tcp: TcpStream,
    framing: Framing,
    early: Vec<u8>,
}

/// Opens `GET /api/events/stream?<query>` and reads the response head; an
/// answer other than 200 `text/event-stream` is an error that quotes it.
async fn open_stream(cfg: &ClientConfig, tenant: &str, source: Option<IpAddr>, query: &str) -> Result<Stream, String> {
    let mut tcp = cfg.target.connect(source, cfg.timeout).await.map_err(|e| format!("{e:#}"))?;
    let request = format!(
        "GET {}/api/events/stream?{query} HTTP/1.1\r\nHost: {}\r\n{}Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        cfg.target.base_path,
        cfg.target.host,
        auth_headers(cfg, tenant)
    );
    tcp.write_all(request.as_bytes()).await.map_err(|e| format!("sending the stream request: {e}"))?;
    let mut buf = vec![0u8; READ_BUFFER];
    let mut filled = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf[..filled]).map_err(|e| format!("malformed HTTP response: {e}"))? {
            httparse::Status::Complete(len) => {
                let status = resp.code.unwrap_or(0);
                let mut framing = Framing::UntilClose;
                let mut event_stream = false;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        if h.value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked")) {
                            framing = Framing::Chunked(Chunked::new());
                        }
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                        framing = Framing::Length(n.ok_or_else(|| "bad Content-Length".to_string())?);
                    } else if h.name.eq_ignore_ascii_case("content-type") {
                        event_stream = h.value.starts_with(b"text/event-stream");
                    }
                }
                let mut early = Vec::new();
                framing.feed(&buf[len..filled], &mut early)?;
                if status != 200 || !event_stream {
                    return Err(format!(
                        "GET /api/events/stream: HTTP {status}{}: {}",
                        if event_stream { "" } else { ", not text/event-stream" },
                        clip(&String::from_utf8_lossy(&early))
                    ));
                }
                return Ok(Stream { tcp, framing, early });
            }
            httparse::Status::Partial => {
                if filled == buf.len() {
                    if filled >= MAX_HEAD {
                        return Err(format!("response head over {MAX_HEAD} bytes"));
                    }
                    buf.resize(filled * 2, 0);
                }
                let n = tcp.read(&mut buf[filled..]).await.map_err(|e| format!("reading the stream's head: {e}"))?;
                if n == 0 {
                    return Err("the server closed the connection before the stream's head".to_string());
                }
                filled += n;
            }
        }
    }
}

/// Opens a receiver's stream where its checks can start exactly (see the
/// module's doc): the stream and the seq the checks are based on.
async fn open(cfg: &ClientConfig, tenant: &str, source: Option<IpAddr>) -> Result<(Stream, u64), String> {
    let (query, base) = match latest(cfg, tenant, source).await? {
        Some(l) => (format!("sinceId={}", l.id), l.seq),
        None => (format!("snapshot={ALL_RETAINED}"), 0),
    };
    Ok((open_stream(cfg, tenant, source, &query).await?, base))
}

/// Checks that the server has the event stream, before any receiver: the
/// Node baseline has none, and the run says so instead of failing 1000 times.
pub(crate) async fn check(cfg: &ClientConfig, tenant: &str) -> Result<()> {
    let opened = tokio::time::timeout(cfg.timeout, open_stream(cfg, tenant, None, "snapshot=0"))
        .await
        .map_err(|_| anyhow!("GET /api/events/stream: no answer within {:?}", cfg.timeout))?;
    match opened {
        Ok(_stream) => Ok(()),
        Err(e) => Err(anyhow!(
            "--transport sse needs a server with the event stream GET /api/events/stream (eventfeed; \
             the Node baseline has none): {e}"
        )),
    }
}

// ---------------------------------------------------------------- receiving

/// One receiving client on the event stream: open, report ready at the
/// response head, then check every record until stopped.
pub(crate) async fn receiver(r: Receiver) -> Track {
    let Receiver { cfg, shared, tenant_index, tenant, source, ready, mut stop } = r;
    let mut track = Track::new(tenant_index);
    let opened = tokio::time::timeout(cfg.timeout, open(&cfg, &tenant, source))
        .await
        .unwrap_or_else(|_| Err(format!("stream not open within {:?} (look-up, TCP connect, head)", cfg.timeout)));
    let (mut stream, base) = match opened {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return track;
        }
    };
    track.ready(Some(base));
    let _ = ready.send(Ok(()));
    drop(ready);

    let mut checks = Checks { track: &mut track, shared: &shared, tenant: &tenant, ended: None };
    let mut parser = SseParser::default();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut decoded = std::mem::take(&mut stream.early);
    let mut result = parser.feed(&decoded, &mut |e, d| checks.on_record(e, d)).map(|()| false);
    while let Ok(false) = result {
        if checks.ended.is_some() {
            break;
        }
        let n = tokio::select! {
            biased;
            _ = stop.changed() => break,
            n = stream.tcp.read(&mut buf) => n,
        };
        result = match n {
            Ok(0) => Err("the server closed the stream".to_string()),
            Ok(n) => {
                decoded.clear();
                stream.framing.feed(&buf[..n], &mut decoded).and_then(|over| {
                    parser.feed(&decoded, &mut |e, d| checks.on_record(e, d))?;
                    Ok(over)
                })
            }
            Err(e) => Err(format!("reading the stream: {e}")),
        };
    }
    let why = match (checks.ended.take(), result) {
        (Some(e), _) | (None, Err(e)) => Some(e),
        (None, Ok(true)) => Some("the server ended the stream".to_string()),
        (None, Ok(false)) => None,
    };
    if let Some(why) = why {
        track.disconnect(why);
    }
    track
}

/// A receiver's checks, record by record.
struct Checks<'a> {
    track: &'a mut Track,
    shared: &'a Shared,
    tenant: &'a str,
    /// Set by an `error` record: the stream is over.
    ended: Option<String>,
}

impl Checks<'_> {
    fn on_record(&mut self, event: &str, data: &str) {
        match event {
            "event_created" => match serde_json::from_str::<EventLite<'_>>(data) {
                Ok(ev) => on_event(self.track, self.shared, self.tenant, &ev),
                Err(e) => self.track.protocol_error(format!("bad event_created record {}: {e}", clip(data))),
            },
            "gap" => self.track.protocol_error("a gap record: the server says events were missed".to_string()),
            "error" => {
                self.ended.get_or_insert_with(|| format!("the stream ended with an error record: {}", clip(data)));
            }
            other => self.track.protocol_error(format!("unexpected record {other:?}: {}", clip(data))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(parser: &mut SseParser, input: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        parser.feed(input, &mut |e: &str, d: &str| out.push((e.to_string(), d.to_string())))?;
        Ok(out)
    }

    const STREAM: &[u8] = b"retry: 2000\n\nid: a\nevent: event_created\ndata: {\"seq\":1}\n\n: keep-alive\n\nid: b\nevent: event_created\ndata: {\"seq\":2}\n\nevent: gap\ndata: {\"gap\":true}\n\n";

    #[test]
    fn sse_records_across_any_split() -> Result<(), String> {
        let want = vec![
            ("event_created".to_string(), "{\"seq\":1}".to_string()),
            ("event_created".to_string(), "{\"seq\":2}".to_string()),
            ("gap".to_string(), "{\"gap\":true}".to_string()),
        ];
        for split in 0..=STREAM.len() {
            let mut p = SseParser::default();
            let mut got = records(&mut p, &STREAM[..split])?;
            got.extend(records(&mut p, &STREAM[split..])?);
            assert_eq!(got, want, "split at {split}");
        }
        // Byte by byte.
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for b in STREAM {
            got.extend(records(&mut p, std::slice::from_ref(b))?);
        }
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn sse_fields() -> Result<(), String> {
        let mut p = SseParser::default();
        let got = records(&mut p, b"data: a\r\ndata:b\r\n\r\ndata\n\nevent: x\n\n: c\ndata: d\n")?;
        assert_eq!(got, vec![("message".into(), "a\nb".into()), ("message".into(), String::new())]);
        assert_eq!(records(&mut p, b"\n")?, vec![("message".into(), "d".into())]);
        Ok(())
    }

    #[test]
    fn chunked_across_any_split() -> Result<(), String> {
        let body = b"d\r\nretry: 2000\n\n\r\n5;ext=1\r\nid: a\r\n3\r\n\nda\r\n0\r\nTrailer: x\r\n\r\n";
        for split in 0..=body.len() {
            let mut c = Chunked::new();
            let mut out = Vec::new();
            let first = c.feed(&body[..split], &mut out)?;
            let done = c.feed(&body[split..], &mut out)?;
            assert_eq!(out, b"retry: 2000\n\nid: a\nda", "split at {split}");
            assert!(done && (!first || split == body.len()), "split at {split}");
        }
        let mut c = Chunked::new();
        assert!(c.feed(b"zz\r\n", &mut Vec::new()).is_err());
        let mut c = Chunked::new();
        assert!(c.feed(b"2\r\nabX\r\n", &mut Vec::new()).is_err());
        Ok(())
    }

    #[test]
    fn length_framing() -> Result<(), String> {
        let mut f = Framing::Length(5);
        let mut out = Vec::new();
        assert!(!f.feed(b"abc", &mut out)?);
        assert!(f.feed(b"defgh", &mut out)?);
        assert_eq!(out, b"abcde");
        Ok(())
    }

    #[test]
    fn latest_page() -> Result<(), serde_json::Error> {
        let page: Page = serde_json::from_str(
            r#"{"events":[{"id":"7d3c1c3e-2b0e-4b8f-9a51-6f1f1c2d9e10","seq":42,"tenant_id":"t","message":"m"}],"hasMore":false,"gap":false}"#,
        )?;
        assert_eq!(page.events.last().map(|l| l.seq), Some(42));
        let empty: Page = serde_json::from_str(r#"{"events":[],"hasMore":false,"gap":false}"#)?;
        assert!(empty.events.is_empty());
        Ok(())
    }
}
