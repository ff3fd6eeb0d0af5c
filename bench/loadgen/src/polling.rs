//! `fanout --transport polling`: a Socket.IO client on the Engine.IO v4 HTTP
//! long-polling transport that never upgrades, as the official client is
//! with `transports: ["polling"]` behind a keep-alive agent.
//!
//! The handshake `GET /socket.io/?EIO=4&transport=polling` answers the open
//! packet `0{"sid":..,"pingInterval":..,"pingTimeout":..}` (maybe followed by
//! more packets, separated by the record separator `\x1e`); the CONNECT
//! `40/events,{..}` is POSTed; then one long-poll GET after another, each
//! answered with every packet queued (at least a ping every pingInterval).
//! Packets are classified exactly as on the websocket: the CONNECT answer,
//! the `snapshot` (the client is ready), then `event_created`s, checked by the
//! same [`Track`]/[`on_event`] as the websocket receiver. A ping `2` is
//! answered by POSTing `3`, alongside the next GET.
//!
//! Each client keeps one keep-alive connection for its GETs and a second
//! one, opened at its first POST, for its POSTs (the server closes either
//! when idle: a request on a closed one reconnects). The open is bounded by
//! `--timeout`; each long poll by the handshake's pingInterval + pingTimeout
//! (the server answers a held GET at least every pingInterval, with a ping),
//! and never less than `--timeout`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout_at};

use crate::http::HttpClient;
use crate::track::{Receiver, Shared, Track, on_event};
use crate::wire::{EventArgs, Incoming, Wire, clip};
use crate::ws::ClientConfig;

/// Separates the packets of a polling payload.
const RECORD_SEPARATOR: char = '\x1e';
/// The reference's defaults, when the open packet lacks them (ms).
const DEFAULT_PING_INTERVAL: u64 = 25_000;
const DEFAULT_PING_TIMEOUT: u64 = 20_000;
/// The GET connection's own bound, above any long poll's: every GET is bounded
/// from outside (the open by `--timeout`, a long poll by the ping bound).
const GET_CLIENT_BOUND: Duration = Duration::from_secs(86_400);
/// The official client's headers, and keep-alive said out loud.
const GET_HEADERS: &str = "Accept: */*\r\nConnection: keep-alive\r\n";
const POST_HEADERS: &str = "Accept: */*\r\nConnection: keep-alive\r\nContent-Type: text/plain;charset=UTF-8\r\n";
const HANDSHAKE_PATH: &str = "/socket.io/?EIO=4&transport=polling";

/// The fields of the open packet the client needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Open {
    sid: String,
    ping_interval: Option<u64>,
    ping_timeout: Option<u64>,
}

impl Open {
    /// How long a long poll may be held: pingInterval + pingTimeout, as the
    /// official client's ping timer, and at least `floor`.
    fn poll_bound(&self, floor: Duration) -> Duration {
        let ms = self.ping_interval.unwrap_or(DEFAULT_PING_INTERVAL).min(86_400_000)
            + self.ping_timeout.unwrap_or(DEFAULT_PING_TIMEOUT).min(86_400_000);
        Duration::from_millis(ms).max(floor)
    }
}

/// Splits the handshake's answer into the open packet and the packets after it.
fn parse_open(body: &str) -> Result<(Open, &str), String> {
    let (first, rest) = body.split_once(RECORD_SEPARATOR).unwrap_or((body, ""));
    let json = first.strip_prefix('0').ok_or_else(|| format!("expected the open packet, got {:?}", clip(first)))?;
    let open: Open = serde_json::from_str(json).map_err(|e| format!("bad open packet {:?}: {e}", clip(first)))?;
    if open.sid.is_empty() || !open.sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("the open packet's sid {:?} is not URL-safe", clip(&open.sid)));
    }
    Ok((open, rest))
}

/// Where a session is, packet after packet.
#[derive(Debug, Default)]
struct Session {
    /// The CONNECT answer arrived.
    connected: bool,
    /// The snapshot arrived: the client is ready and checks deliveries.
    ready: bool,
    /// A ping arrived and its pong is not sent yet.
    pong_due: bool,
}

impl Session {
    /// Takes one packet. `Err` ends the session: a close, a refused CONNECT,
    /// or before the snapshot, anything the protocol does not allow.
    fn on_packet(
        &mut self,
        wire: &Wire,
        packet: &str,
        track: &mut Track,
        shared: &Shared,
        tenant: &str,
    ) -> Result<(), String> {
        match wire.classify(packet) {
            Ok(Incoming::Event(EventArgs::Created(ev))) => {
                // Before the snapshot: ignored, as the websocket open does.
                if self.ready {
                    on_event(track, shared, tenant, &ev);
                }
            }
            Ok(Incoming::Ping) => self.pong_due = true,
            Ok(Incoming::Connected) => self.connected = true,
            Ok(Incoming::Event(EventArgs::Snapshot { max_seq, .. })) if !self.ready => {
                if !self.connected {
                    return Err("snapshot before the CONNECT answer".to_string());
                }
                self.ready = true;
                track.ready(max_seq);
            }
            Ok(Incoming::ConnectError(m)) => return Err(format!("CONNECT refused: {m}")),
            Ok(Incoming::Closed) => return Err("the server closed the session".to_string()),
            Ok(Incoming::Event(EventArgs::Other(name))) if self.ready => {
                track.protocol_error(format!("unexpected event {name:?}: {}", clip(packet)));
            }
            // Noop `6`, pong, other namespaces, acks, a second snapshot.
            Ok(_) => {}
            Err(e) if self.ready => track.protocol_error(e),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Takes every packet of a payload.
    fn on_payload(
        &mut self,
        wire: &Wire,
        payload: &[u8],
        track: &mut Track,
        shared: &Shared,
        tenant: &str,
    ) -> Result<(), String> {
        let text = std::str::from_utf8(payload).map_err(|e| format!("polling payload is not UTF-8: {e}"))?;
        if text.is_empty() {
            return Ok(());
        }
        for packet in text.split(RECORD_SEPARATOR) {
            self.on_packet(wire, packet, track, shared, tenant)?;
        }
        Ok(())
    }
}

/// One receiving client on long-polling: open, report ready at the
/// snapshot, then check every delivery until stopped.
pub(crate) async fn receiver(r: Receiver) -> Track {
    let Receiver { cfg, shared, tenant_index, tenant, source, ready, stop } = r;
    let mut track = Track::new(tenant_index);
    let mut ready = Some(ready);
    if let Err(e) = run(&cfg, &shared, &tenant, source, &mut track, &mut ready, stop).await {
        match ready.take() {
            // Not ready yet: a failed connect.
            Some(r) => {
                let _ = r.send(Err(e));
            }
            None => track.disconnect(e),
        }
    }
    track
}

/// The session, until stopped (`Ok`) or ended (`Err`).
async fn run(
    cfg: &ClientConfig,
    shared: &Shared,
    tenant: &str,
    source: Option<IpAddr>,
    track: &mut Track,
    ready: &mut Option<mpsc::UnboundedSender<Result<(), String>>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let open_deadline = Instant::now() + cfg.timeout;
    let mut get = HttpClient::new(Arc::clone(&cfg.target), source, GET_CLIENT_BOUND);
    let mut post = HttpClient::new(Arc::clone(&cfg.target), source, cfg.timeout);
    let mut session = Session::default();

    // The handshake, on the GET connection.
    let (path, bound) = {
        let r = timeout_at(open_deadline, get.request("GET", HANDSHAKE_PATH, GET_HEADERS, b""))
            .await
            .map_err(|_| format!("no handshake answer within {:?}", cfg.timeout))?
            .map_err(|e| format!("handshake: {e:#}"))?;
        if r.status != 200 {
            return Err(format!("handshake: HTTP {}: {}", r.status, clip(&String::from_utf8_lossy(r.body))));
        }
        let body = std::str::from_utf8(r.body).map_err(|e| format!("handshake answer is not UTF-8: {e}"))?;
        let (open, rest) = parse_open(body)?;
        if !rest.is_empty() {
            session.on_payload(&cfg.wire, rest.as_bytes(), track, shared, tenant)?;
        }
        (format!("/socket.io/?EIO=4&transport=polling&sid={}", open.sid), open.poll_bound(cfg.timeout))
    };

    // CONNECT, on the POST connection (opened now).
    let connect = cfg.wire.connect(tenant, &cfg.token);
    timeout_at(open_deadline, post_packets(&mut post, &path, &connect))
        .await
        .map_err(|_| format!("CONNECT not accepted within {:?}", cfg.timeout))??;

    loop {
        if session.ready
            && let Some(r) = ready.take()
        {
            let _ = r.send(Ok(()));
        }
        // Until the snapshot the whole open is bounded by --timeout; then
        // each long poll by the ping bound.
        let until = if session.ready { Instant::now() + bound } else { open_deadline };
        let poll = timeout_at(until, get.request("GET", &path, GET_HEADERS, b""));
        let got = if std::mem::take(&mut session.pong_due) {
            // The pong goes on its own connection while the next poll is held.
            let pong = post_packets(&mut post, &path, "3");
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                (got, pong) = future::join(poll, pong) => {
                    pong.map_err(|e| format!("pong: {e}"))?;
                    got
                }
            }
        } else {
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                got = poll => got,
            }
        };
        let r = got
            .map_err(|_| {
                if session.ready {
                    format!("long poll unanswered for {bound:?} (pingInterval + pingTimeout)")
                } else {
                    format!("no snapshot within {:?} (handshake, CONNECT, polls)", cfg.timeout)
                }
            })?
            .map_err(|e| format!("long-poll GET: {e:#}"))?;
        if r.status != 200 {
            return Err(format!("long-poll GET: HTTP {}: {}", r.status, clip(&String::from_utf8_lossy(r.body))));
        }
        session.on_payload(&cfg.wire, r.body, track, shared, tenant)?;
    }
}

/// POSTs a payload; the server answers 200 `ok`.
async fn post_packets(post: &mut HttpClient, path: &str, payload: &str) -> Result<(), String> {
    let r = post.request("POST", path, POST_HEADERS, payload.as_bytes()).await.map_err(|e| format!("POST: {e:#}"))?;
    if r.status != 200 {
        return Err(format!("POST: HTTP {}: {}", r.status, clip(&String::from_utf8_lossy(r.body))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(std::time::Instant::now())
    }

    #[test]
    fn open_packet_and_what_follows() -> Result<(), String> {
        let body = "0{\"sid\":\"abc-_1\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}\x1e40/events,{\"sid\":\"x\"}";
        let (open, rest) = parse_open(body)?;
        assert_eq!(open.sid, "abc-_1");
        assert_eq!(rest, "40/events,{\"sid\":\"x\"}");
        assert_eq!(open.poll_bound(Duration::from_secs(10)), Duration::from_secs(45));
        assert_eq!(open.poll_bound(Duration::from_secs(60)), Duration::from_secs(60));
        let (open, rest) = parse_open("0{\"sid\":\"s\"}")?;
        assert_eq!((open.poll_bound(Duration::ZERO), rest), (Duration::from_secs(45), ""));
        assert!(parse_open("40/events,{}").is_err());
        assert!(parse_open("0{\"sid\":\"a&b\"}").is_err());
        assert!(parse_open("0{").is_err());
        Ok(())
    }

    #[test]
    fn a_session_from_connect_to_events() -> Result<(), String> {
        let (wire, shared) = (Wire::new("/events"), shared());
        let mut track = Track::new(0);
        let mut s = Session::default();
        let ev = |seq: u64| {
            format!(r#"42/events,["event_created",{{"seq":{seq},"tenant_id":"t0","message":"b:t0:r{seq}:1"}}]"#)
        };
        // An event before the snapshot is not counted (as on the websocket).
        let early = format!("40/events,{{\"sid\":\"x\"}}\x1e{}", ev(3));
        s.on_payload(&wire, early.as_bytes(), &mut track, &shared, "t0")?;
        assert!(s.connected && !s.ready);
        s.on_payload(&wire, br#"42/events,["snapshot",[{"seq":3}]]"#, &mut track, &shared, "t0")?;
        assert!(s.ready);
        let batch = format!("{}\x1e{}\x1e2\x1e6\x1e{}", ev(4), ev(5), ev(5));
        s.on_payload(&wire, batch.as_bytes(), &mut track, &shared, "t0")?;
        assert!(s.pong_due);
        assert_eq!((track.unique, track.duplicates, track.out_of_order), (2, 1, 0));
        s.on_payload(&wire, br#"42/events,["error",{"code":"x"}]"#, &mut track, &shared, "t0")?;
        assert_eq!(track.protocol_errors, 1);
        assert!(s.on_payload(&wire, b"1", &mut track, &shared, "t0").is_err());
        Ok(())
    }

    #[test]
    fn refusals_end_the_open() {
        let (wire, shared) = (Wire::new("/events"), shared());
        let mut track = Track::new(0);
        let mut s = Session::default();
        assert!(s.on_payload(&wire, br#"42/events,["snapshot",[]]"#, &mut track, &shared, "t0").is_err());
        let refused = br#"44/events,{"message":"unauthorized"}"#;
        assert!(s.on_payload(&wire, refused, &mut track, &shared, "t0").is_err());
        assert!(s.on_payload(&wire, b"42/events,[1", &mut track, &shared, "t0").is_err());
    }
}
