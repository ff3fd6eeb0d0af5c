//! Engine.IO server-wide rules: the bounded outgoing queue (a client that
//! does not read is disconnected, counted), the session limit, the origin
//! policy, and graceful shutdown (every session gets a close packet).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/raw.rs"]
mod raw;

use common::TestServer;
use eventfeed::engine::EngineConfig;
use eventfeed::http::Cors;
use raw::{Eio, WAIT, assert_engine_error, eventually, recv_text, request, until_closed, ws_connect};

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_when_its_queue_overflows() {
    let (engine, router) = apps::echo(EngineConfig { max_queue: 8, ..apps::config(60_000, 60_000, 10_000, 100_000) });
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");

    // Up to the bound, packets wait for the next poll.
    let sid = eio.open().await;
    let eight: Vec<String> = (0..8).map(|i| format!("4m{i}")).collect();
    eio.post_ok(&sid, eight.join("\x1e").as_bytes()).await;
    assert_eq!(eio.get_ok(&sid).await, eight.join("\x1e"));
    assert_eq!(engine.metrics().slow_consumer_closes.get(), 0);

    // One more than the bound without a poll: the session is closed, not grown.
    let nine: Vec<String> = (0..9).map(|i| format!("4m{i}")).collect();
    let _ = eio.post(&sid, nine.join("\x1e").as_bytes()).await;
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
    assert_eq!(engine.metrics().slow_consumer_closes.get(), 1);
    eventually("the session is gone", || engine.session_count() == 0).await;
}

#[tokio::test]
async fn handshakes_beyond_the_session_limit_get_503_and_others_go_on() {
    let (engine, router) = apps::echo(EngineConfig { max_sessions: 3, ..apps::fixture_config() });
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let sids = [eio.open().await, eio.open().await, eio.open().await];
    let res = request(eio.addr, "GET", "/engine.io/?EIO=4&transport=polling", &[], b"").await;
    assert_eq!(res.status, 503);
    assert_eq!(res.header("retry-after"), Some("1"));
    assert!(ws_connect(eio.addr, &eio.websocket(None)).await.is_err(), "no websocket session either");
    assert_eq!(engine.session_count(), 3);
    eio.post_ok(&sids[0], b"4fine").await;
    assert_eq!(eio.get_ok(&sids[0]).await, "4fine");
    // Room again once one closes.
    eio.post_ok(&sids[1], b"1").await;
    eventually("a session closed", || engine.session_count() == 2).await;
    eio.open().await;
}

#[tokio::test]
async fn origins_outside_the_policy_are_refused() {
    let config = EngineConfig { cors: Cors::new(["https://app.example.com".to_owned()]), ..apps::fixture_config() };
    let (_engine, router) = apps::echo(config);
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let handshake = "/engine.io/?EIO=4&transport=polling";

    // No Origin (a non-browser client): allowed, no CORS headers.
    let res = request(eio.addr, "GET", handshake, &[], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), None);
    // A listed origin: allowed, echoed with credentials.
    let res = request(eio.addr, "GET", handshake, &[("Origin", "https://app.example.com")], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    // The server's own origin.
    let own = format!("http://{}", eio.addr);
    let res = request(eio.addr, "GET", handshake, &[("Origin", &own)], b"").await;
    assert_eq!(res.status, 200);
    // Anything else, and `null`: 403, for polling and websocket alike.
    for origin in ["https://evil.example.com", "null"] {
        let res = request(eio.addr, "GET", handshake, &[("Origin", origin)], b"").await;
        assert_eq!(res.status, 403, "{origin}");
        assert_eq!(res.text(), r#"{"code":4,"message":"Forbidden"}"#);
        let res = request(
            eio.addr,
            "GET",
            "/engine.io/?EIO=4&transport=websocket",
            &[[("Origin", origin)].as_slice(), &raw::UPGRADE_HEADERS].concat(),
            b"",
        )
        .await;
        assert_eq!(res.status, 403, "websocket from {origin}");
    }
    // Preflight.
    let res = request(
        eio.addr,
        "OPTIONS",
        handshake,
        &[("Origin", "https://app.example.com"), ("Access-Control-Request-Headers", "content-type")],
        b"",
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(res.header("access-control-allow-headers"), Some("content-type"));
    let res = request(eio.addr, "OPTIONS", handshake, &[("Origin", "https://evil.example.com")], b"").await;
    assert_eq!(res.status, 403);
}

#[tokio::test]
async fn graceful_shutdown_sends_every_session_a_close_packet() {
    let (engine, router) = apps::echo(apps::config(60_000, 60_000, 10_000, 1_000_000));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");

    let polling = eio.open().await;
    let mut pending = eio.start_get(&polling).await;
    let _idle_polling = eio.open().await;
    let (mut ws, _) = eio.ws_open().await;
    let upgraded = eio.open().await;
    let mut up = eio.upgrade(&upgraded).await;
    raw::send_text(&mut up, "4sync").await;
    assert_eq!(recv_text(&mut up).await, "4sync");
    assert_eq!(engine.session_count(), 4);

    let stopped = tokio::spawn(server.stop());
    let res = tokio::time::timeout(WAIT, pending.read_response()).await.unwrap().unwrap();
    assert_eq!((res.status, res.text()), (200, "1"), "the pending poll gets the close packet");
    for ws in [&mut ws, &mut up] {
        let closed = until_closed(ws).await;
        assert_eq!(closed.messages, vec!["1".to_owned()], "a close packet, then the close frame");
        assert!(closed.code.is_some(), "a close frame: {closed:?}");
    }
    assert!(stopped.await.unwrap(), "the drain finished in time");
    assert_eq!(engine.session_count(), 0);
}
