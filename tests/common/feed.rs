//! Raw clients of the feed for the hardening tests: a Socket.IO client of the
//! `/events` namespace written with raw Engine.IO websocket frames, REST calls
//! with the feed's headers, and a bystander that stays connected through a
//! test and must receive every event of its tenant.
//!
//! Included by the tests with `#[path = "common/feed.rs"] mod feed;`, next to
//! `#[path = "common/raw.rs"] mod raw;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use eventfeed::app::App;
use eventfeed::engine::EngineConfig;
use eventfeed::server::ServerConfig;
use eventfeed_protocol::engine::session;
use serde_json::{Value, json};

use crate::common::TestServer;
use crate::raw::{self, Eio, Response, WAIT, Ws, recv, send_text};

/// Engine settings with a quiet heartbeat (no ping during a test: a minute
/// apart) and this `maxPayload`.
pub fn quiet_engine(max_payload: usize) -> EngineConfig {
    EngineConfig {
        session: session::Config {
            ping_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(60),
            upgrade_timeout: Duration::from_secs(10),
        },
        max_payload,
        ..EngineConfig::default()
    }
}

/// The feed app served on a free loopback port.
pub struct FeedServer {
    /// The app (engine, namespace, metrics, shutdown token).
    pub app: App,
    /// The running server.
    pub server: TestServer,
}

impl FeedServer {
    /// Serves `app` with the default server settings.
    pub async fn start(app: App) -> Self {
        Self::start_with(app, ServerConfig::default()).await
    }

    /// Serves `app` with `config`.
    pub async fn start_with(app: App, config: ServerConfig) -> Self {
        let server = TestServer::start_with(app.router(), config).await;
        FeedServer { app, server }
    }

    /// Serves `app` until the app's own shutdown token is cancelled, as the
    /// binary does (a test cancelling it stops the listener too).
    pub async fn start_as_binary(app: App) -> Self {
        let server = TestServer::start_until(app.router(), ServerConfig::default(), app.shutdown_token()).await;
        FeedServer { app, server }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Open Engine.IO sessions.
    pub fn sessions(&self) -> usize {
        self.app.engine.session_count()
    }

    /// Waits until exactly `n` Engine.IO sessions are open.
    pub async fn sessions_become(&self, n: usize, what: &str) {
        raw::eventually(&format!("{n} sessions are left after {what}"), || self.sessions() == n).await;
    }
}

/// The feed's namespace in these tests.
pub const NSP: &str = "/events";

/// A tenant, one of its tokens and that token's user.
#[derive(Debug, Clone, Copy)]
pub struct Who {
    /// The tenant id.
    pub tenant: &'static str,
    /// The token.
    pub token: &'static str,
    /// The user the token belongs to.
    pub user: &'static str,
}

/// `token_admin_a`: admin of company_a (demo tokens).
pub const A: Who = Who { tenant: "company_a", token: "token_admin_a", user: "admin_a" };
/// `token_admin_b`: admin of company_b (demo tokens).
pub const B: Who = Who { tenant: "company_b", token: "token_admin_b", user: "admin_b" };
/// `token_reader_a`: reader of company_a (demo tokens).
pub const R: Who = Who { tenant: "company_a", token: "token_reader_a", user: "reader_a" };

/// The CONNECT packet of `who` to `/events`.
pub fn connect_packet(who: Who) -> String {
    format!("40{NSP},{}", json!({"tenantId": who.tenant, "token": who.token}))
}

/// Splits a Socket.IO frame `4<type>/events,[<ack id>]<json>` of the feed's
/// namespace into its type digit, ack id and JSON data (None when the frame is
/// not of that shape).
pub fn parse_frame(frame: &str) -> Option<(char, Option<u64>, Value)> {
    let rest = frame.strip_prefix('4')?;
    let mut chars = rest.chars();
    let kind = chars.next()?;
    let rest = chars.as_str().strip_prefix(NSP)?.strip_prefix(',')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 { Some(rest[..digits].parse().ok()?) } else { None };
    let data = serde_json::from_str(&rest[digits..]).ok()?;
    Some((kind, id, data))
}

/// An event frame `42/events,[name, args...]`: its name and arguments.
pub fn parse_event(frame: &str) -> Option<(String, Vec<Value>)> {
    match parse_frame(frame)? {
        ('2', None, Value::Array(mut items)) if !items.is_empty() => {
            let name = items.remove(0).as_str()?.to_owned();
            Some((name, items))
        }
        _ => None,
    }
}

/// A Socket.IO client of `/events` on a direct websocket session.
///
/// Frames read while looking for something else (an ack, say) are kept, in
/// order, for the next lookup: nothing the server sent is lost to the test.
pub struct FeedClient {
    /// The websocket.
    pub ws: Ws,
    /// The Engine.IO session id.
    pub sid: String,
    /// The events of the `snapshot` received on connect.
    pub snapshot: Vec<Value>,
    /// Frames read but not taken yet.
    pub pending: std::collections::VecDeque<String>,
}

impl FeedClient {
    /// Opens a websocket session on `addr`, CONNECTs as `who` and reads the
    /// CONNECT answer and the snapshot.
    pub async fn connect(addr: SocketAddr, who: Who) -> Self {
        let (ws, sid) = Eio::new(addr, "/socket.io/").ws_open().await;
        let mut client = FeedClient { ws, sid, snapshot: Vec::new(), pending: Default::default() };
        client.send(&connect_packet(who)).await;
        let answer = client.next_frame().await.expect("CONNECT answer");
        assert!(answer.starts_with(&format!("40{NSP},")), "CONNECT refused: {answer}");
        let (_, args) = client.take_event(|name| name == "snapshot").await;
        client.snapshot = args.first().and_then(Value::as_array).cloned().expect("snapshot is an array");
        client
    }

    /// Opens a websocket session on `addr` and CONNECTs with `auth`; the
    /// client once it got its first event (`snapshot`, or `replay_result`
    /// for a resume; a recovery's first `event_created` stays to be taken),
    /// or the CONNECT_ERROR's data.
    pub async fn connect_auth(addr: SocketAddr, auth: Value) -> Result<Self, Value> {
        let (ws, sid) = Eio::new(addr, "/socket.io/").ws_open().await;
        let mut client = FeedClient { ws, sid, snapshot: Vec::new(), pending: Default::default() };
        client.send(&format!("40{NSP},{auth}")).await;
        let answer = client.next_frame().await.expect("CONNECT answer");
        match parse_frame(&answer) {
            Some(('0', None, _)) => {}
            Some(('4', None, data)) => return Err(data),
            _ => panic!("not a CONNECT answer: {answer}"),
        }
        if auth.get("pid").is_none() && auth.get("sinceId").is_none() {
            let (_, args) = client.take_event(|name| name == "snapshot").await;
            client.snapshot = args.first().and_then(Value::as_array).cloned().expect("snapshot is an array");
        }
        Ok(client)
    }

    /// The CONNECT answer's data (`{sid, pid?}`) is not kept by
    /// [`FeedClient::connect_auth`]; this one keeps it.
    pub async fn connect_answer(addr: SocketAddr, auth: Value) -> (Self, Result<Value, Value>) {
        let (ws, sid) = Eio::new(addr, "/socket.io/").ws_open().await;
        let mut client = FeedClient { ws, sid, snapshot: Vec::new(), pending: Default::default() };
        client.send(&format!("40{NSP},{auth}")).await;
        let answer = client.next_frame().await.expect("CONNECT answer");
        let answer = match parse_frame(&answer) {
            Some(('0', None, data)) => Ok(data),
            Some(('4', None, data)) => Err(data),
            _ => panic!("not a CONNECT answer: {answer}"),
        };
        (client, answer)
    }

    /// Emits `name` with `arg` and ack `id`; the ack's first argument.
    pub async fn call(&mut self, id: u64, name: &str, arg: Value) -> Value {
        let frame = format!("42{NSP},{id}{}", json!([name, arg]));
        self.send(&frame).await;
        self.ack(id).await
    }

    /// Reads frames until the server ends the session; the Engine.IO frames
    /// and Socket.IO events seen on the way.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut seen: Vec<String> = self.pending.drain(..).collect();
        while let Some(frame) = next_frame(&mut self.ws).await {
            seen.push(frame);
        }
        seen
    }

    /// Reads frames until the server's namespace DISCONNECT (or the end of
    /// the session); the frames seen on the way, the DISCONNECT last.
    pub async fn until_closed_or_disconnected(&mut self) -> Vec<String> {
        let disconnect = format!("41{NSP},");
        let mut seen: Vec<String> = self.pending.drain(..).collect();
        if seen.contains(&disconnect) {
            return seen;
        }
        while let Some(frame) = next_frame(&mut self.ws).await {
            let done = frame == disconnect;
            seen.push(frame);
            if done {
                break;
            }
        }
        seen
    }

    /// The next frame (kept ones first) that is not an Engine.IO ping.
    pub async fn next_frame(&mut self) -> Option<String> {
        match self.pending.pop_front() {
            Some(frame) => Some(frame),
            None => next_frame(&mut self.ws).await,
        }
    }

    /// The first frame, kept or new, for which `pick` gives a value; frames
    /// passed over are kept.
    pub async fn take<T>(&mut self, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        if let Some(i) = self.pending.iter().position(|f| pick(f).is_some()) {
            let frame = self.pending.remove(i).unwrap();
            return pick(&frame).unwrap();
        }
        loop {
            let frame = next_frame(&mut self.ws).await.expect("the socket ended first");
            match pick(&frame) {
                Some(v) => return v,
                None => self.pending.push_back(frame),
            }
        }
    }

    /// Sends a text frame.
    pub async fn send(&mut self, text: &str) {
        send_text(&mut self.ws, text).await;
    }

    /// Emits `post_event {message}` with ack `id` and returns the ack's argument.
    pub async fn post(&mut self, id: u64, message: &str) -> Value {
        let frame = format!("42{NSP},{id}{}", json!(["post_event", {"message": message}]));
        self.send(&frame).await;
        self.ack(id).await
    }

    /// The ack `id`'s first argument.
    pub async fn ack(&mut self, id: u64) -> Value {
        self.take(|f| match parse_frame(f) {
            Some(('3', Some(got), Value::Array(args))) if got == id => {
                Some(args.into_iter().next().unwrap_or(Value::Null))
            }
            _ => None,
        })
        .await
    }

    /// The first event whose name `pick` accepts: its name and arguments.
    pub async fn take_event(&mut self, pick: impl Fn(&str) -> bool) -> (String, Vec<Value>) {
        self.take(|f| parse_event(f).filter(|(name, _)| pick(name))).await
    }

    /// The next event other than `event_created`.
    pub async fn next_other_event(&mut self) -> (String, Vec<Value>) {
        self.take_event(|name| name != "event_created").await
    }

    /// The next `n` `event_created` events.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, args) = self.take_event(|name| name == "event_created").await;
            out.push(args.into_iter().next().expect("event_created carries the event"));
        }
        out
    }

    /// Posts `count` events for `who` over REST and checks that this client
    /// (of `who`'s tenant) receives every one of them, in seq order, and
    /// no event of another tenant.
    pub async fn expect_all_of(&mut self, addr: SocketAddr, who: Who, count: usize) {
        let mut messages = Vec::new();
        for i in 0..count {
            let message = format!("bystander check {i}");
            let res = post_event(addr, who, &message).await;
            assert_eq!(res.status, 201, "{res:?}");
            messages.push((res.json()["seq"].as_u64().unwrap(), message));
        }
        let got = self.events(count).await;
        for (event, (seq, message)) in got.iter().zip(&messages) {
            assert_eq!(event["tenant_id"], who.tenant, "{event}");
            assert_eq!(event["seq"].as_u64(), Some(*seq), "in seq order: {event}");
            assert_eq!(event["message"].as_str(), Some(message.as_str()), "{event}");
        }
        assert!(self.pending.iter().all(|f| parse_event(f).is_none_or(|(n, _)| n != "event_created")), "nothing else");
    }
}

/// The next frame of a websocket that is not an Engine.IO ping (pings are
/// answered with a pong). `None` once the socket ended.
pub async fn next_frame(ws: &mut Ws) -> Option<String> {
    loop {
        match recv(ws).await? {
            tokio_tungstenite::tungstenite::Message::Text(t) if t.as_str() == "2" => send_text(ws, "3").await,
            tokio_tungstenite::tungstenite::Message::Text(t) => return Some(t.as_str().to_owned()),
            other => return Some(format!("<binary {} bytes>", other.len())),
        }
    }
}

/// The feed's REST headers for `who`.
pub fn auth_headers(who: Who) -> [(&'static str, &'static str); 2] {
    [("X-TENANT-ID", who.tenant), ("X-User-Token", who.token)]
}

/// `POST /api/events {"message": message}` as `who`.
pub async fn post_event(addr: SocketAddr, who: Who, message: &str) -> Response {
    let body = json!({ "message": message }).to_string();
    let [t, k] = auth_headers(who);
    raw::request(addr, "POST", "/api/events", &[t, k, ("Content-Type", "application/json")], body.as_bytes()).await
}

/// `GET /api/events?<query>` as `who`.
pub async fn list_events(addr: SocketAddr, who: Who, query: &str) -> Response {
    let [t, k] = auth_headers(who);
    let target = if query.is_empty() { "/api/events".to_owned() } else { format!("/api/events?{query}") };
    raw::request(addr, "GET", &target, &[t, k], b"").await
}

/// Asserts the feed's error answer: `status` and `{"error":{"code":code,"message":...}}`.
#[track_caller]
pub fn assert_feed_error(res: &Response, status: u16, code: &str) {
    assert_eq!(res.status, status, "status of {res:?}");
    let body = res.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// Asserts the server still answers: `GET /healthz` is 200.
pub async fn assert_serving(addr: SocketAddr) {
    let res = tokio::time::timeout(WAIT, async { raw::request(addr, "GET", "/healthz", &[], b"").await })
        .await
        .expect("/healthz answered");
    assert_eq!((res.status, res.text()), (200, r#"{"status":"ok"}"#));
}
