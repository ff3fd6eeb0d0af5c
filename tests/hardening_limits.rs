//! Every limit of the server, hit on purpose: write rate limits per user and
//! per tenant (REST and socket), connections, Engine.IO sessions, sockets per
//! tenant, namespaces per session, server acks pending per socket, and the
//! timeouts on request heads, REST bodies, polling bodies and upgrades.
//!
//! Limits that depend on time run with tokio's paused clock: the runtime only
//! moves time forward when every task (server and client, one thread) is
//! idle, so a bucket refills or a timeout fires exactly when the test says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use eventfeed::app::App;
use eventfeed::config::Rate;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::server::ServerConfig;
use eventfeed::sio::SioConfig;
use eventfeed_protocol::engine::session;
use feed::{A, B, FeedClient, FeedServer, NSP, Who, assert_feed_error, connect_packet, list_events, post_event};
use raw::{Eio, HttpConn, WAIT, assert_engine_error, eventually, recv_text, send_text, until_closed};
use serde_json::Value;

fn per_second(count: u32, burst: u32) -> Option<Rate> {
    Some(Rate { count, per: Duration::from_secs(1), burst })
}

fn app(config: FeedConfig, tokens: Tokens, engine: EngineConfig) -> App {
    App::new(config, tokens, engine, SioConfig::default())
}

/// `GET /metrics`, as text.
async fn metrics(server: &FeedServer) -> String {
    let res = raw::request(server.addr(), "GET", "/metrics", &[], b"").await;
    assert_eq!(res.status, 200);
    res.text().to_owned()
}

/// The value of one sample line of the exposition (`name{labels}`), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The number of events of `who`'s tenant, read over REST.
async fn event_count(server: &FeedServer, who: Who) -> usize {
    let res = list_events(server.addr(), who, "limit=1000").await;
    assert_eq!(res.status, 200);
    res.json()["events"].as_array().unwrap().len()
}

// --- write rate limits -------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn rest_writes_over_the_user_rate_limit_get_429_with_retry_after_and_create_nothing() {
    // 2 writes a second per user, 3 at once.
    let config = FeedConfig { rate_limit: per_second(2, 3), ..FeedConfig::default() };
    let server = FeedServer::start(app(config, Tokens::demo(), feed::quiet_engine(100_000))).await;
    let addr = server.addr();

    for i in 0..3 {
        assert_eq!(post_event(addr, A, &format!("burst {i}")).await.status, 201, "write {i} is within the burst");
    }
    let refused = post_event(addr, A, "one too many").await;
    assert_feed_error(&refused, 429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(event_count(&server, A).await, 3, "a refused write creates nothing");
    // Reads are not limited; another user has a bucket of their own.
    for _ in 0..10 {
        assert_eq!(list_events(addr, A, "").await.status, 200);
    }
    assert_eq!(post_event(addr, B, "another user").await.status, 201);
    // A refused write does not count as an attempt that delays the refill.
    assert_feed_error(&post_event(addr, A, "still too many").await, 429, "rate_limited");

    // 2/s: one write every 500 ms comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(post_event(addr, A, "refilled").await.status, 201);
    assert_feed_error(&post_event(addr, A, "not yet").await, 429, "rate_limited");
    tokio::time::sleep(Duration::from_secs(10)).await;
    for i in 0..3 {
        assert_eq!(post_event(addr, A, &format!("burst again {i}")).await.status, 201, "the bucket is full again");
    }
    assert_feed_error(&post_event(addr, A, "over again").await, 429, "rate_limited");

    let events: Vec<String> = list_events(addr, A, "").await.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        ["burst 0", "burst 1", "burst 2", "refilled", "burst again 0", "burst again 1", "burst again 2"]
    );
    let text = metrics(&server).await;
    assert_eq!(sample(&text, r#"eventfeed_rate_limited_total{scope="user"}"#), 4.0, "{text}");
    assert_eq!(sample(&text, r#"eventfeed_rate_limited_total{scope="tenant"}"#), 0.0, "{text}");
    assert_eq!(sample(&text, "eventfeed_events_created_total"), 8.0, "{text}");
}

#[tokio::test(start_paused = true)]
async fn socket_writes_over_the_rate_limit_answer_rate_limited_and_the_socket_stays() {
    let config = FeedConfig { rate_limit: per_second(1, 2), ..FeedConfig::default() };
    let server = FeedServer::start(app(config, Tokens::demo(), feed::quiet_engine(100_000))).await;
    let addr = server.addr();
    let mut client = FeedClient::connect(addr, A).await;

    assert_eq!(client.post(0, "one").await["event"]["seq"], 1);
    assert_eq!(client.post(1, "two").await["event"]["seq"], 2);
    // With an ack: the ack carries the error.
    let ack = client.post(2, "three").await;
    assert_eq!(ack["error"]["code"], "rate_limited", "{ack}");
    assert!(ack["error"]["message"].is_string(), "{ack}");
    assert!(ack.get("event").is_none(), "{ack}");
    // Without an ack: the `error` event.
    client.send(&format!(r#"42{NSP},["post_event",{{"message":"four"}}]"#)).await;
    let (name, args) = client.next_other_event().await;
    assert_eq!(name, "error");
    assert_eq!(args[0]["code"], "rate_limited", "{args:?}");
    // REST shares the user's bucket.
    assert_feed_error(&post_event(addr, A, "five").await, 429, "rate_limited");
    assert_eq!(event_count(&server, A).await, 2, "refused writes create nothing");
    // The two events created arrived, the refused ones never did.
    let got = client.events(2).await;
    assert_eq!(got.iter().map(|e| e["message"].as_str().unwrap()).collect::<Vec<_>>(), ["one", "two"]);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let ack = client.post(3, "after a second").await;
    assert_eq!(ack["event"]["seq"], 3, "{ack}");
    let text = metrics(&server).await;
    assert_eq!(sample(&text, r#"eventfeed_rate_limited_total{scope="user"}"#), 3.0, "{text}");
}

#[tokio::test(start_paused = true)]
async fn the_tenant_bucket_is_shared_by_its_users() {
    let tokens = Tokens::parse(
        r#"{"tokens": [
            {"token": "token_one", "user": "one", "tenants": ["acme"], "role": "admin"},
            {"token": "token_two", "user": "two", "tenants": ["acme"], "role": "admin"},
            {"token": "token_other", "user": "other", "tenants": ["globex"], "role": "admin"}
        ]}"#,
        "test tokens",
    )
    .unwrap();
    let one = Who { tenant: "acme", token: "token_one", user: "one" };
    let two = Who { tenant: "acme", token: "token_two", user: "two" };
    let other = Who { tenant: "globex", token: "token_other", user: "other" };
    // Users may write 10 at once; the tenant 3 at once, 1 a second.
    let config =
        FeedConfig { rate_limit: per_second(5, 10), tenant_rate_limit: per_second(1, 3), ..FeedConfig::default() };
    let server = FeedServer::start(app(config, tokens, feed::quiet_engine(100_000))).await;
    let addr = server.addr();

    assert_eq!(post_event(addr, one, "one 1").await.status, 201);
    assert_eq!(post_event(addr, one, "one 2").await.status, 201);
    assert_eq!(post_event(addr, two, "two 1").await.status, 201);
    // The tenant's bucket is empty for both users, over REST and socket alike.
    let refused = post_event(addr, two, "two 2").await;
    assert_feed_error(&refused, 429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_feed_error(&post_event(addr, one, "one 3").await, 429, "rate_limited");
    let mut socket = FeedClient::connect(addr, two).await;
    assert_eq!(socket.snapshot.len(), 3);
    assert_eq!(socket.post(0, "two over socket").await["error"]["code"], "rate_limited");
    // Another tenant is not affected.
    assert_eq!(post_event(addr, other, "globex 1").await.status, 201);
    assert_eq!(event_count(&server, one).await, 3);

    // One write a second comes back, for whichever user takes it first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(socket.post(1, "two after a second").await["event"]["seq"], 4);
    assert_feed_error(&post_event(addr, one, "one 4").await, 429, "rate_limited");

    let text = metrics(&server).await;
    assert_eq!(sample(&text, r#"eventfeed_rate_limited_total{scope="tenant"}"#), 4.0, "{text}");
    assert_eq!(sample(&text, r#"eventfeed_rate_limited_total{scope="user"}"#), 0.0, "{text}");
}

// --- connections, sessions, sockets, namespaces, acks --------------------------

#[tokio::test]
async fn connections_over_max_connections_are_closed_at_once() {
    const MAX: usize = 3;
    let app = app(FeedConfig::default(), Tokens::demo(), feed::quiet_engine(100_000));
    let config = ServerConfig { max_connections: MAX, metrics: Some(app.metrics.clone()), ..ServerConfig::default() };
    let server = FeedServer::start_with(app, config).await;
    let addr = server.addr();
    let rejections =
        || sample(&server.app.metrics.encode(), r#"eventfeed_limit_rejections_total{limit="connections"}"#);

    // MAX keep-alive connections, each with a request answered.
    let mut open = Vec::new();
    for _ in 0..MAX {
        let mut conn = HttpConn::connect(addr).await;
        assert_eq!(conn.request("GET", "/healthz", &[], b"").await.unwrap().status, 200);
        open.push(conn);
    }
    // The next one is closed unanswered.
    let mut extra = HttpConn::connect(addr).await;
    let _ = extra.send("GET", "/healthz", &[], b"").await;
    assert!(extra.is_closed_by_server().await, "connection over the limit closed at once");
    assert_eq!(rejections(), 1.0);
    // The open ones still work.
    for conn in &mut open {
        assert_eq!(conn.request("GET", "/healthz", &[], b"").await.unwrap().status, 200);
    }
    // A websocket holds its connection for as long as it is open.
    drop(open.pop());
    let mut ws = None;
    for _ in 0..100 {
        match raw::ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await {
            Ok(w) => {
                ws = Some(w);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let mut ws = ws.expect("a slot came free when a connection closed");
    assert!(recv_text(&mut ws).await.starts_with("0{"));
    let mut extra = HttpConn::connect(addr).await;
    let _ = extra.send("GET", "/healthz", &[], b"").await;
    assert!(extra.is_closed_by_server().await, "two keep-alive connections and a websocket make three");
    // Closing the websocket frees its slot.
    drop(ws);
    let mut answered = false;
    for _ in 0..100 {
        let mut conn = HttpConn::connect(addr).await;
        if let Ok(Ok(res)) = tokio::time::timeout(WAIT, conn.request("GET", "/healthz", &[], b"")).await {
            assert_eq!(res.status, 200);
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered, "a slot came free when the websocket closed");
}

#[tokio::test]
async fn handshakes_over_max_sessions_get_503_with_retry_after() {
    let engine = EngineConfig { max_sessions: 2, ..feed::quiet_engine(100_000) };
    let server = FeedServer::start(app(FeedConfig::default(), Tokens::demo(), engine)).await;
    let addr = server.addr();
    let eio = Eio::new(addr, "/socket.io/");

    let mut a = FeedClient::connect(addr, A).await;
    let polling = eio.open().await;
    for target in ["/socket.io/?EIO=4&transport=polling", "/socket.io/?EIO=4&transport=websocket"] {
        let res = raw::request(addr, "GET", target, &raw::UPGRADE_HEADERS, b"").await;
        assert_eq!(res.status, 503, "{target}: {res:?}");
        assert_eq!(res.header("retry-after"), Some("1"));
        assert_eq!(res.json()["error"]["code"], "unavailable");
    }
    assert_eq!(server.sessions(), 2);
    let text = metrics(&server).await;
    assert_eq!(sample(&text, "eventfeed_session_limit_rejections_total"), 2.0, "{text}");
    // The sessions there go on.
    assert_eq!(a.post(0, "still served").await["event"]["seq"], 1);
    eio.post_ok(&polling, connect_packet(B).as_bytes()).await;
    assert!(eio.get_ok(&polling).await.starts_with("40/events,{"));
    // Room again once one closes.
    drop(a);
    server.sessions_become(1, "a client left").await;
    FeedClient::connect(addr, A).await;
}

#[tokio::test]
async fn sockets_over_the_tenant_connection_limit_get_connect_error() {
    let config = FeedConfig { max_tenant_connections: 2, ..FeedConfig::default() };
    let server = FeedServer::start(app(config, Tokens::demo(), feed::quiet_engine(100_000))).await;
    let addr = server.addr();

    let first = FeedClient::connect(addr, A).await;
    let mut second = FeedClient::connect(addr, feed::R).await;
    // The third socket of company_a, whichever its user, is refused.
    let (mut ws, _) = Eio::new(addr, "/socket.io/").ws_open().await;
    send_text(&mut ws, &connect_packet(A)).await;
    let refused = recv_text(&mut ws).await;
    let (kind, _, data) = feed::parse_frame(&refused).expect("a CONNECT_ERROR");
    assert_eq!(kind, '4', "{refused}");
    assert_eq!(data["message"], "too many connections", "{refused}");
    assert_eq!(data["data"]["code"], "too_many_connections", "{refused}");
    assert_eq!(server.app.namespace.room_size("tenant:company_a"), 2);
    // Another tenant connects.
    let mut b = FeedClient::connect(addr, B).await;
    // The refused session may try again once a socket of its tenant leaves.
    drop(first);
    eventually("a socket of company_a left", || server.app.namespace.room_size("tenant:company_a") == 1).await;
    send_text(&mut ws, &connect_packet(A)).await;
    assert!(recv_text(&mut ws).await.starts_with("40/events,{"), "connected once there is room");
    // Everyone connected gets the events of their tenant.
    assert_eq!(post_event(addr, A, "to company_a").await.status, 201);
    assert_eq!(second.events(1).await[0]["message"], "to company_a");
    b.expect_all_of(addr, B, 2).await;
    let text = metrics(&server).await;
    assert_eq!(sample(&text, r#"eventfeed_limit_rejections_total{limit="tenant_connections"}"#), 1.0, "{text}");
}

#[tokio::test]
async fn namespaces_over_max_namespaces_get_connect_error_and_the_others_stay() {
    let sio = SioConfig { max_namespaces: 1, ..SioConfig::default() };
    let app = apps::SioApp::with_sio(feed::quiet_engine(100_000), sio, Duration::from_millis(500));
    let server = common::TestServer::start(app.router.clone()).await;
    let (mut ws, _) = Eio::new(server.addr, "/socket.io/").ws_open().await;

    send_text(&mut ws, "40").await;
    assert!(recv_text(&mut ws).await.starts_with("40{"));
    send_text(&mut ws, "40/custom,").await;
    assert_eq!(recv_text(&mut ws).await, r#"44/custom,{"message":"Too many namespaces"}"#);
    // The first namespace is still connected.
    send_text(&mut ws, r#"42["echo","still here"]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["echo-back","still here"]"#);
    assert_eq!(app.namespace("/custom").socket_count(), 0);
    // Leaving it makes room.
    send_text(&mut ws, "41").await;
    send_text(&mut ws, "40/custom,").await;
    assert!(recv_text(&mut ws).await.starts_with("40/custom,{"));
    assert_eq!(app.namespace("/").socket_count(), 0);
    assert_eq!(app.namespace("/custom").socket_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_acks_over_max_pending_acks_fail_with_too_many() {
    let sio = SioConfig { max_pending_acks: 2, ..SioConfig::default() };
    let app = apps::SioApp::with_sio(feed::quiet_engine(100_000), sio, Duration::from_secs(5));
    let server = common::TestServer::start(app.router.clone()).await;
    let (mut ws, _) = Eio::new(server.addr, "/socket.io/").ws_open().await;
    send_text(&mut ws, "40").await;
    assert!(recv_text(&mut ws).await.starts_with("40{"));

    // Two server emits with ack pending, unanswered; the third fails at once.
    for i in 0..2 {
        send_text(&mut ws, &format!(r#"42["request-ack",{i}]"#)).await;
        assert_eq!(recv_text(&mut ws).await, format!(r#"42{i}["ack-me",{i}]"#));
    }
    send_text(&mut ws, r#"42["request-ack",2]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","too many pending acknowledgements (at most 2)"]"#);
    // An answer frees a slot.
    send_text(&mut ws, r#"430["answer 0"]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","answer 0"]"#);
    send_text(&mut ws, r#"42["request-ack",3]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"422["ack-me",3]"#);
    send_text(&mut ws, r#"42["request-ack",4]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","too many pending acknowledgements (at most 2)"]"#);
    // A timeout frees slots too.
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","acknowledgement timed out"]"#);
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","acknowledgement timed out"]"#);
    send_text(&mut ws, r#"42["request-ack",5]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"423["ack-me",5]"#);
    // A late answer to a timed-out ack is ignored; the right one resolves.
    send_text(&mut ws, r#"431["late"]"#).await;
    send_text(&mut ws, r#"433["answer 3"]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","answer 3"]"#);
}

// --- timeouts ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_request_head_that_never_completes_is_closed_after_the_header_timeout() {
    let app = app(FeedConfig::default(), Tokens::demo(), feed::quiet_engine(100_000));
    let config = ServerConfig { header_read_timeout: Duration::from_secs(2), ..ServerConfig::default() };
    let server = FeedServer::start_with(app, config).await;
    let addr = server.addr();

    // Half a head, then nothing (slowloris).
    let mut slow = HttpConn::connect(addr).await;
    slow.send_raw(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: 1\r\n").as_bytes()).await.unwrap();
    // A connection that sends nothing at all.
    let mut silent = HttpConn::connect(addr).await;
    // A head trickled in a byte at a time, slower than the timeout in total.
    let mut trickle = HttpConn::connect(addr).await;
    let trickled = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
            if trickle.send_raw(&[*b]).await.is_err() {
                return trickle;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        trickle
    });
    assert!(slow.is_closed_by_server().await, "an incomplete head is cut off");
    assert!(silent.is_closed_by_server().await, "a silent connection is cut off");
    assert!(trickled.await.unwrap().is_closed_by_server().await, "a trickled head is cut off");
    // Complete requests are served, on new connections and kept-alive ones.
    let mut conn = HttpConn::connect(addr).await;
    assert_eq!(conn.request("GET", "/healthz", &[], b"").await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(conn.request("GET", "/healthz", &[], b"").await.unwrap().status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_rest_body_that_never_completes_gets_408_and_creates_nothing() {
    let config = FeedConfig { body_timeout: Duration::from_secs(3), ..FeedConfig::default() };
    let server = FeedServer::start(app(config, Tokens::demo(), feed::quiet_engine(100_000))).await;
    let addr = server.addr();

    let mut conn = HttpConn::connect(addr).await;
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\nX-TENANT-ID: company_a\r\nX-User-Token: token_admin_a\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    conn.send_raw(format!(r#"{head}{{"message":"#).as_bytes()).await.unwrap();
    let res = tokio::time::timeout(WAIT, conn.read_response()).await.expect("answered").unwrap();
    assert_feed_error(&res, 408, "request_timeout");
    assert_eq!(event_count(&server, A).await, 0);
    // A body that arrives in time, even slowly, is fine.
    let mut conn = HttpConn::connect(addr).await;
    let body = br#"{"message":"slow but in time"}"#;
    let head = head.replace("Content-Length: 100", &format!("Content-Length: {}", body.len()));
    conn.send_raw(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        conn.send_raw(chunk).await.unwrap();
    }
    assert_eq!(conn.read_response().await.unwrap().status, 201);
    assert_eq!(event_count(&server, A).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_polling_body_that_never_completes_closes_the_session() {
    let engine = EngineConfig { body_timeout: Duration::from_secs(3), ..feed::quiet_engine(100_000) };
    let server = FeedServer::start(app(FeedConfig::default(), Tokens::demo(), engine)).await;
    let addr = server.addr();
    let eio = Eio::new(addr, "/socket.io/");

    let sid = eio.open().await;
    let mut conn = HttpConn::connect(addr).await;
    let head = format!("POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n40/events,", eio.polling(&sid));
    conn.send_raw(head.as_bytes()).await.unwrap();
    let res = tokio::time::timeout(WAIT, conn.read_response()).await.expect("answered").unwrap();
    assert_engine_error(&res, 3, "Bad request");
    assert!(eio.is_unknown(&sid).await, "the session is closed");
    assert_eq!(server.sessions(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_upgrade_that_never_completes_times_out_and_the_session_stays_on_polling() {
    let mut engine = feed::quiet_engine(100_000);
    engine.session = session::Config { upgrade_timeout: Duration::from_secs(2), ..engine.session };
    let server = FeedServer::start(app(FeedConfig::default(), Tokens::demo(), engine)).await;
    let addr = server.addr();
    let eio = Eio::new(addr, "/socket.io/");

    let sid = eio.open().await;
    eio.post_ok(&sid, connect_packet(A).as_bytes()).await;
    let answer = eio.get_ok(&sid).await;
    assert!(answer.starts_with("40/events,{"), "{answer}");
    // Probe, then never send the upgrade packet.
    let mut ws = eio.ws(Some(&sid)).await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(recv_text(&mut ws).await, "3probe");
    let closed = until_closed(&mut ws).await;
    assert!(closed.messages.is_empty(), "{closed:?}");
    // A websocket that never even probes times out the same way.
    let mut ws = eio.ws(Some(&sid)).await;
    assert!(until_closed(&mut ws).await.messages.is_empty());
    // The session goes on over polling and gets the feed's events.
    assert_eq!(post_event(addr, A, "over polling").await.status, 201);
    let body = loop {
        let body = eio.get_ok(&sid).await;
        if body != "6" {
            break body;
        }
    };
    let (name, args) =
        raw::packets(&body).into_iter().find_map(feed::parse_event).unwrap_or_else(|| panic!("an event in {body:?}"));
    assert_eq!((name.as_str(), &args[0]["message"]), ("event_created", &Value::from("over polling")));
    assert_eq!(server.sessions(), 1);
}
