//! Engine.IO handshake rules, with raw HTTP and raw websocket bytes: the open
//! packet over polling and websocket, and the reference's 400 answers
//! (`{"code":N,"message":"..."}`) for every malformed request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/raw.rs"]
mod raw;

use common::TestServer;
use raw::{Eio, HttpConn, assert_engine_error, open_sid, recv_text, request, ws_connect};

async fn server() -> (TestServer, Eio) {
    let (_, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    (server, eio)
}

/// The open packet with its sid replaced by `SID`, for exact comparisons.
fn normalized(open: &str) -> String {
    let sid = open_sid(open);
    open.replacen(&sid, "SID", 1)
}

#[tokio::test]
async fn polling_handshake_answers_the_open_packet_with_exact_keys_in_order() {
    let (_server, eio) = server().await;
    let (sid, res) = eio.handshake().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/plain; charset=UTF-8"));
    assert_eq!(
        normalized(res.text()),
        r#"0{"sid":"SID","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#
    );
    assert_eq!(sid.len(), 20, "a 20-character sid: {sid}");
    assert!(sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "URL-safe sid: {sid}");
}

#[tokio::test]
async fn open_packet_reports_the_engine_settings() {
    let (_, router) = apps::echo(apps::config(1234, 567, 1000, 4321));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let (_, res) = eio.handshake().await;
    assert_eq!(
        normalized(res.text()),
        r#"0{"sid":"SID","upgrades":["websocket"],"pingInterval":1234,"pingTimeout":567,"maxPayload":4321}"#
    );
}

#[tokio::test]
async fn every_handshake_gets_a_new_sid() {
    let (_server, eio) = server().await;
    let mut sids = std::collections::HashSet::new();
    for _ in 0..50 {
        assert!(sids.insert(eio.open().await), "sids are unique");
    }
}

#[tokio::test]
async fn websocket_handshake_sends_the_open_packet_first_with_no_upgrades() {
    let (_server, eio) = server().await;
    let mut ws = eio.ws(None).await;
    let open = recv_text(&mut ws).await;
    assert_eq!(
        normalized(&open),
        r#"0{"sid":"SID","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#
    );
    // The session is live on that socket.
    raw::send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello");
}

#[tokio::test]
async fn unknown_query_parameters_are_ignored() {
    let (_server, eio) = server().await;
    let res = request(eio.addr, "GET", "/engine.io/?t=abc&EIO=4&foo=bar&transport=polling&b64=1", &[], b"").await;
    assert_eq!(res.status, 200);
    let sid = open_sid(res.text());
    let res =
        request(eio.addr, "POST", &format!("/engine.io/?EIO=4&transport=polling&sid={sid}&t=burst"), &[], b"4x").await;
    assert_eq!(res.text(), "ok");
}

#[tokio::test]
async fn missing_or_unsupported_eio_is_400_code_5() {
    let (_server, eio) = server().await;
    for target in [
        "/engine.io/?transport=polling",
        "/engine.io/?EIO=abc&transport=polling",
        "/engine.io/?EIO=3&transport=polling",
        "/engine.io/?EIO=5&transport=polling",
        "/engine.io/?EIO=&transport=polling",
        "/engine.io/?EIO=4&EIO=4&transport=polling",
    ] {
        let res = request(eio.addr, "GET", target, &[], b"").await;
        assert_engine_error(&res, 5, "Unsupported protocol version");
    }
    // Over websocket too (with a proper upgrade request).
    for target in ["/engine.io/?transport=websocket", "/engine.io/?EIO=abc&transport=websocket"] {
        let res = request(eio.addr, "GET", target, &raw::UPGRADE_HEADERS, b"").await;
        assert_engine_error(&res, 5, "Unsupported protocol version");
    }
}

#[tokio::test]
async fn missing_or_unknown_transport_is_400_code_0() {
    let (_server, eio) = server().await;
    for target in [
        "/engine.io/?EIO=4",
        "/engine.io/?EIO=4&transport=abc",
        "/engine.io/?EIO=4&transport=",
        "/engine.io/?EIO=4&transport=Polling",
        "/engine.io/?EIO=4&transport=polling&transport=polling",
        "/engine.io/",
    ] {
        let res = request(eio.addr, "GET", target, &[], b"").await;
        assert_engine_error(&res, 0, "Transport unknown");
    }
    for target in ["/engine.io/?EIO=4", "/engine.io/?EIO=4&transport=abc"] {
        let res = request(eio.addr, "GET", target, &raw::UPGRADE_HEADERS, b"").await;
        assert_engine_error(&res, 0, "Transport unknown");
    }
}

#[tokio::test]
async fn unknown_sid_is_400_code_1() {
    let (_server, eio) = server().await;
    for sid in ["nope", "AAAAAAAAAAAAAAAAAAAA", "%ZZ", "a%00b", &"x".repeat(4000)] {
        let res = eio.get(sid).await;
        assert_engine_error(&res, 1, "Session ID unknown");
        let res = eio.post(sid, b"4hello").await;
        assert_engine_error(&res, 1, "Session ID unknown");
    }
    // A websocket for an unknown sid is refused at the HTTP level.
    let res = request(eio.addr, "GET", &eio.websocket(Some("nope")), &raw::UPGRADE_HEADERS, b"").await;
    assert_engine_error(&res, 1, "Session ID unknown");
    assert!(ws_connect(eio.addr, &eio.websocket(Some("nope"))).await.is_err());
}

#[tokio::test]
async fn sid_of_a_closed_session_is_400_code_1() {
    let (_server, eio) = server().await;
    let sid = eio.open().await;
    eio.post_ok(&sid, b"1").await;
    // The client's own GET may race its close on another connection: the
    // first GET right after still gets the noop the reference would send.
    let farewell = eio.get(&sid).await;
    assert_eq!((farewell.status, farewell.body.as_slice()), (200, &b"6"[..]));
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
    assert_engine_error(&eio.post(&sid, b"4x").await, 1, "Session ID unknown");
}

#[tokio::test]
async fn post_or_put_without_sid_is_400_code_2_bad_handshake_method() {
    let (_server, eio) = server().await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let res = request(eio.addr, method, "/engine.io/?EIO=4&transport=polling", &[], b"").await;
        assert_engine_error(&res, 2, "Bad handshake method");
    }
    let res = request(eio.addr, "POST", "/engine.io/?EIO=4&transport=polling", &[], b"4hello").await;
    assert_engine_error(&res, 2, "Bad handshake method");
}

#[tokio::test]
async fn websocket_transport_without_upgrade_headers_is_400_code_3() {
    let (_server, eio) = server().await;
    let res = request(eio.addr, "GET", "/engine.io/?EIO=4&transport=websocket", &[], b"").await;
    assert_engine_error(&res, 3, "Bad request");
    // Half an upgrade request: Upgrade without Connection, or the reverse.
    let res = request(eio.addr, "GET", "/engine.io/?EIO=4&transport=websocket", &[("Upgrade", "websocket")], b"").await;
    assert_engine_error(&res, 3, "Bad request");
    let res =
        request(eio.addr, "GET", "/engine.io/?EIO=4&transport=websocket", &[("Connection", "Upgrade")], b"").await;
    assert_engine_error(&res, 3, "Bad request");
    // An upgrade request with a wrong websocket version, or no key.
    let res = request(
        eio.addr,
        "GET",
        "/engine.io/?EIO=4&transport=websocket",
        &[("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "8")],
        b"",
    )
    .await;
    assert_engine_error(&res, 3, "Bad request");
    // No session was opened by any of these.
    let sid = eio.open().await;
    eio.post_ok(&sid, b"4still-works").await;
    assert_eq!(eio.get_ok(&sid).await, "4still-works");
}

#[tokio::test]
async fn other_methods_on_a_session_are_400_code_3() {
    let (_server, eio) = server().await;
    let sid = eio.open().await;
    for method in ["PUT", "DELETE", "PATCH"] {
        let res = request(eio.addr, method, &eio.polling(&sid), &[], b"").await;
        assert_engine_error(&res, 3, "Bad request");
    }
}

#[tokio::test]
async fn malformed_http_is_refused_and_the_server_keeps_serving() {
    let (_server, eio) = server().await;
    let mut conn = HttpConn::connect(eio.addr).await;
    conn.send_raw(b"GARBAGE\x00\x01\x02 / HTTP/9.9\r\n\r\n").await.unwrap();
    // An error answer, or the connection closed without one.
    if let Ok(res) = conn.read_response().await {
        assert!(res.status >= 400, "{res:?}");
    }
    // Headers over the 16 KiB limit get 431 (or the connection closed).
    let mut conn = HttpConn::connect(eio.addr).await;
    let big = "a".repeat(20 * 1024);
    let sent = conn.send("GET", "/engine.io/?EIO=4&transport=polling", &[("X-Big", &big)], b"").await;
    if sent.is_ok()
        && let Ok(res) = conn.read_response().await
    {
        assert_eq!(res.status, 431);
    }
    let sid = eio.open().await;
    eio.post_ok(&sid, b"4still-serving").await;
    assert_eq!(eio.get_ok(&sid).await, "4still-serving");
}
