//! Operations: the origin policy on every transport (websocket upgrades,
//! polling, REST, CORS preflights), `/healthz`, `/readyz` and `/metrics`,
//! and graceful shutdown with websocket, polling and REST clients in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/frames.rs"]
mod frames;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use eventfeed::app::App;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::http::Cors;
use eventfeed::server::{self, ServerConfig};
use eventfeed::sio::SioConfig;
use feed::{A, B, FeedClient, FeedServer, assert_feed_error, connect_packet, list_events, post_event};
use frames::RawWs;
use raw::{Eio, HttpConn, WAIT, eventually, until_closed};

const ALLOWED: &str = "http://allowed.example";

fn app_with(config: FeedConfig, engine: EngineConfig) -> App {
    App::new(config, Tokens::demo(), engine, SioConfig::default())
}

/// The value of one sample line of the exposition (`name{labels}`), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn the_origin_policy_holds_for_websocket_polling_rest_and_preflights() {
    let cors = Cors::new([ALLOWED.to_owned()]);
    let engine = EngineConfig { cors: cors.clone(), ..feed::quiet_engine(100_000) };
    let server = FeedServer::start(app_with(FeedConfig { cors, ..FeedConfig::default() }, engine)).await;
    let addr = server.addr();
    let own = format!("http://{addr}");
    let ws_target = "/socket.io/?EIO=4&transport=websocket";
    let handshake = "/socket.io/?EIO=4&transport=polling";

    // Websocket upgrades: the listed origin, the server's own, and no Origin
    // (a non-browser client) work; any other origin, `null` included, is 403.
    let mut kept = Vec::new();
    for origin in [Some(ALLOWED), Some(own.as_str()), None] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let mut ws = RawWs::open(addr, ws_target, &headers).await.unwrap_or_else(|head| panic!("{origin:?}: {head}"));
        assert!(ws.read_text().await.starts_with("0{"), "{origin:?}: a session");
        ws.send_text(&connect_packet(A)).await;
        assert!(ws.read_text().await.starts_with("40/events,{"), "{origin:?}: connected");
        kept.push(ws);
    }
    let refused = [
        "http://evil.example",
        "null",
        "https://allowed.example",
        "http://allowed.example:8080",
        "http://allowed.example.evil.example",
        "http://evil.example/http://allowed.example",
        "http://127.0.0.1:1",
        "",
    ];
    for origin in refused {
        let head = RawWs::open(addr, ws_target, &[("Origin", origin)]).await.err().expect("refused");
        assert!(head.starts_with("HTTP/1.1 403"), "websocket from {origin:?}: {head}");
    }
    // Same origin is judged on the Host header the client sent.
    let mut upgrade = raw::UPGRADE_HEADERS.to_vec();
    upgrade.extend([("Host", "feed.example:8443"), ("Origin", "https://feed.example:8443")]);
    let mut same_origin = HttpConn::connect(addr).await;
    let res = same_origin.request("GET", ws_target, &upgrade, b"").await.unwrap();
    assert_eq!(res.status, 101, "same origin behind another name");
    let mut upgrade = raw::UPGRADE_HEADERS.to_vec();
    upgrade.extend([("Host", "feed.example:8443"), ("Origin", "https://feed.example")]);
    assert_eq!(raw::request(addr, "GET", ws_target, &upgrade, b"").await.status, 403, "another port");
    assert_eq!(server.sessions(), 4, "a session for each upgrade allowed, none for those refused");
    drop((kept, same_origin));
    server.sessions_become(0, "the websockets closed").await;

    // Polling: handshakes, and requests on an existing session.
    let res = raw::request(addr, "GET", handshake, &[("Origin", ALLOWED)], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), Some(ALLOWED));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    let sid = raw::open_sid(res.text());
    let res = raw::request(addr, "GET", handshake, &[], b"").await;
    assert_eq!((res.status, res.header("access-control-allow-origin")), (200, None));
    for origin in ["http://evil.example", "null"] {
        let res = raw::request(addr, "GET", handshake, &[("Origin", origin)], b"").await;
        assert_eq!(res.status, 403, "polling handshake from {origin}");
        assert_eq!(res.header("access-control-allow-origin"), None);
        let eio = Eio::new(addr, "/socket.io/");
        let res = raw::request(addr, "POST", &eio.polling(&sid), &[("Origin", origin)], b"40").await;
        assert_eq!(res.status, 403, "polling POST from {origin}");
    }
    let target = Eio::new(addr, "/socket.io/").polling(&sid);
    let res = raw::request(addr, "POST", &target, &[("Origin", ALLOWED)], connect_packet(B).as_bytes()).await;
    assert_eq!((res.status, res.text()), (200, "ok"), "the session is untouched by the refused requests");

    // REST: allowed responses carry the CORS headers; others are 403.
    let [tenant, token] = feed::auth_headers(A);
    let res = raw::request(addr, "GET", "/api/events", &[tenant, token, ("Origin", ALLOWED)], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), Some(ALLOWED));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(res.header("vary"), Some("Origin"));
    let body = br#"{"message":"from the allowed origin"}"#;
    let json = ("Content-Type", "application/json");
    let res = raw::request(addr, "POST", "/api/events", &[tenant, token, json, ("Origin", ALLOWED)], body).await;
    assert_eq!((res.status, res.header("access-control-allow-origin")), (201, Some(ALLOWED)));
    let res = raw::request(addr, "GET", "/api/events", &[tenant, token, ("Origin", &own)], b"").await;
    assert_eq!((res.status, res.header("access-control-allow-origin")), (200, Some(own.as_str())));
    for origin in ["http://evil.example", "null"] {
        let res = raw::request(addr, "GET", "/api/events", &[tenant, token, ("Origin", origin)], b"").await;
        assert_feed_error(&res, 403, "forbidden");
        assert_eq!(res.json()["error"]["message"], "this origin is not allowed");
        assert_eq!(res.header("access-control-allow-origin"), None);
        let res = raw::request(addr, "POST", "/api/events", &[tenant, token, json, ("Origin", origin)], body).await;
        assert_feed_error(&res, 403, "forbidden");
    }
    let events = list_events(addr, A, "").await.json()["events"].as_array().unwrap().len();
    assert_eq!(events, 1, "refused writes created nothing");

    // CORS preflights.
    let preflight = |origin: &'static str, target: &'static str| async move {
        raw::request(
            addr,
            "OPTIONS",
            target,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type,x-tenant-id,x-user-token"),
            ],
            b"",
        )
        .await
    };
    for target in ["/api/events", handshake] {
        let res = preflight(ALLOWED, target).await;
        assert_eq!(res.status, 204, "{target}");
        assert_eq!(res.header("access-control-allow-origin"), Some(ALLOWED), "{target}");
        assert_eq!(res.header("access-control-allow-credentials"), Some("true"), "{target}");
        assert!(res.header("access-control-allow-methods").unwrap().contains("POST"), "{target}");
        let allowed_headers = res.header("access-control-allow-headers").unwrap().to_ascii_lowercase();
        for h in ["content-type", "x-tenant-id", "x-user-token"] {
            assert!(allowed_headers.contains(h), "{target}: {h} in {allowed_headers}");
        }
        for origin in ["http://evil.example", "null"] {
            let res = preflight(origin, target).await;
            assert_eq!(res.status, 403, "{target} from {origin}");
            assert_eq!(res.header("access-control-allow-origin"), None);
        }
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_reflect_the_server() {
    let app = app_with(FeedConfig::default(), feed::quiet_engine(100_000));
    let config = ServerConfig { metrics: Some(app.metrics.clone()), ..ServerConfig::default() };
    let server = FeedServer::start_with(app, config).await;
    let addr = server.addr();
    let eio = Eio::new(addr, "/socket.io/");
    let get = |path: &'static str| async move { raw::request(addr, "GET", path, &[], b"").await };

    let res = get("/healthz").await;
    assert_eq!((res.status, res.text()), (200, r#"{"status":"ok"}"#));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(get("/readyz").await.status, 200);
    let res = raw::request(addr, "POST", "/healthz", &[], b"").await;
    assert_feed_error(&res, 405, "method_not_allowed");

    // One websocket socket of company_a, one polling socket of company_b.
    let mut ws_client = FeedClient::connect(addr, A).await;
    let sid = eio.open().await;
    eio.post_ok(&sid, connect_packet(B).as_bytes()).await;
    assert!(eio.get_ok(&sid).await.starts_with("40/events,{"));
    // Three events for company_a, delivered to its one socket.
    for i in 0..3 {
        assert_eq!(post_event(addr, A, &format!("event {i}")).await.status, 201);
    }
    assert_eq!(ws_client.events(3).await.len(), 3);
    // Failed authentications, over REST and socket.
    let bad = feed::Who { tenant: "company_a", token: "nope", user: "" };
    assert_feed_error(&post_event(addr, bad, "x").await, 401, "unauthorized");
    assert_feed_error(&list_events(addr, feed::Who { tenant: "company_b", ..A }, "").await, 401, "unauthorized");
    let (mut refused, _) = eio.ws_open().await;
    raw::send_text(&mut refused, &connect_packet(bad)).await;
    assert!(raw::recv_text(&mut refused).await.starts_with(r#"44/events,{"message":"unauthorized""#));
    drop(refused);
    server.sessions_become(2, "the refused socket left").await;

    let res = get("/metrics").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = res.text();
    for (series, value) in [
        (r#"eventfeed_connections{transport="websocket"}"#, 1.0),
        (r#"eventfeed_connections{transport="polling"}"#, 1.0),
        (r#"eventfeed_sockets{namespace="/events"}"#, 2.0),
        ("eventfeed_events_created_total", 3.0),
        ("eventfeed_deliveries_total", 3.0),
        (r#"eventfeed_auth_failures_total{channel="rest",reason="invalid"}"#, 1.0),
        (r#"eventfeed_auth_failures_total{channel="rest",reason="wrong_tenant"}"#, 1.0),
        (r#"eventfeed_auth_failures_total{channel="socket",reason="invalid"}"#, 1.0),
        ("eventfeed_sessions_opened_total", 3.0),
        ("eventfeed_sessions_closed_total", 1.0),
        (r#"eventfeed_http_request_duration_seconds_count{route="api_events"}"#, 5.0),
        (r#"eventfeed_http_request_duration_seconds_count{route="ops"}"#, 3.0),
    ] {
        assert_eq!(sample(text, series), value, "{series} in\n{text}");
    }
    // Series that start at 0 are there before their first hit.
    for series in [
        r#"eventfeed_auth_failures_total{channel="stream",reason="expired"} 0"#,
        r#"eventfeed_auth_failures_total{channel="socket",reason="revoked"} 0"#,
        "eventfeed_token_refreshes_total 0",
        "eventfeed_token_expiries_total 0",
        r#"eventfeed_config_reloads_total{outcome="ok"} 0"#,
        r#"eventfeed_config_reloads_total{outcome="failed"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
    }
    assert!(text.contains("# TYPE eventfeed_http_request_duration_seconds histogram"), "{text}");
    assert!(text.contains(r#"eventfeed_http_request_duration_seconds_bucket{route="api_events",le="+Inf"} 5"#));
    assert!(sample(text, r#"eventfeed_http_request_duration_seconds_count{route="engine.io"}"#) >= 4.0, "{text}");
    for name in ["rate_limited", "limit_rejections", "delivery_failures", "slow_consumer_disconnects"] {
        assert!(text.contains(&format!("# TYPE eventfeed_{name}_total counter")), "{name} in\n{text}");
    }

    // The gauges follow the live connections.
    drop(ws_client);
    server.sessions_become(1, "the websocket client left").await;
    let text = get("/metrics").await.text().to_owned();
    assert_eq!(sample(&text, r#"eventfeed_connections{transport="websocket"}"#), 0.0, "{text}");
    assert_eq!(sample(&text, r#"eventfeed_sockets{namespace="/events"}"#), 1.0, "{text}");

    // Draining: /readyz fails, /healthz still answers.
    server.app.shutdown_token().cancel();
    let res = get("/readyz").await;
    assert_eq!(res.status, 503);
    assert_eq!(res.json()["status"], "shutting down");
    assert_eq!(get("/healthz").await.status, 200);
}

#[tokio::test]
async fn graceful_shutdown_closes_every_session_finishes_requests_and_stops_listening() {
    let app = app_with(FeedConfig::default(), feed::quiet_engine(100_000));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = app.shutdown_token();
    let config = ServerConfig {
        drain_timeout: Duration::from_secs(5),
        metrics: Some(app.metrics.clone()),
        ..ServerConfig::default()
    };
    let serving = tokio::spawn(server::serve(listener, app.router(), config, shutdown.clone()));
    let eio = Eio::new(addr, "/socket.io/");

    // A websocket socket, a polling socket with a GET pending, a session
    // upgraded from polling, and a REST write whose body is still arriving.
    let mut ws_client = FeedClient::connect(addr, A).await;
    let sid = eio.open().await;
    eio.post_ok(&sid, connect_packet(B).as_bytes()).await;
    assert!(eio.get_ok(&sid).await.starts_with("40/events,{"));
    let mut pending = eio.start_get(&sid).await;
    let upgraded_sid = eio.open().await;
    let mut upgraded = eio.upgrade(&upgraded_sid).await;
    let mut write = HttpConn::connect(addr).await;
    let body = br#"{"message":"in flight during the shutdown"}"#;
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\nX-TENANT-ID: company_a\r\nX-User-Token: token_admin_a\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    write.send_raw(head.as_bytes()).await.unwrap();
    // `100 Continue` comes once the handler reads the body: the request is in flight.
    assert_eq!(write.read_response().await.unwrap().status, 100);
    write.send_raw(&body[..10]).await.unwrap();
    eventually("every session is open", || app.engine.session_count() == 3).await;

    shutdown.cancel();
    // Every session gets the Engine.IO close packet: websockets then a close frame.
    for ws in [&mut ws_client.ws, &mut upgraded] {
        let closed = until_closed(ws).await;
        assert_eq!(closed.messages, ["1"], "the close packet, then a close frame");
        assert!(closed.code.is_some(), "a close frame: {closed:?}");
    }
    let res = tokio::time::timeout(WAIT, pending.read_response()).await.expect("the pending GET is answered").unwrap();
    assert_eq!((res.status, res.text()), (200, "1"));
    // The request in flight finishes.
    write.send_raw(&body[10..]).await.unwrap();
    let res = tokio::time::timeout(WAIT, write.read_response()).await.expect("answered").unwrap();
    assert_eq!(res.status, 201, "{res:?}");
    assert_eq!(res.header("connection"), Some("close"), "and the connection closes after it");

    let drained = tokio::time::timeout(WAIT, serving).await.expect("serve returned").unwrap();
    assert!(drained, "the drain finished within the drain timeout");
    assert_eq!(app.engine.session_count(), 0);
    assert_eq!(app.namespace.socket_count(), 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connection after the shutdown");
}
