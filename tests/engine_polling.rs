//! Engine.IO long-polling rules, with raw HTTP: held GETs, POST `ok`,
//! payloads of several packets, binary as `b` + base64, duplicate polls,
//! maxPayload on responses (a budget) and on bodies (413), invalid payloads,
//! client close, and clients that vanish mid-poll.
//!
//! Tests that depend on "nothing happened for a while" run with tokio's
//! paused clock: the runtime only advances time when every task (server and
//! client, same thread) is idle, so those checks are exact and instant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use common::TestServer;
use raw::{Eio, HttpConn, assert_engine_error, eventually, packets};
use tokio::time::Instant;

async fn fixture() -> (TestServer, Eio) {
    let (_, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    (server, eio)
}

#[tokio::test(start_paused = true)]
async fn get_is_held_until_a_message_is_queued() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let get = tokio::spawn(eio.start_get(&sid).await.finish());
    // Nothing queued: the GET stays pending (well before the first ping).
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!get.is_finished(), "GET answered with nothing to send");
    eio.post_ok(&sid, b"4hello").await;
    let res = get.await.unwrap();
    assert_eq!((res.status, res.text()), (200, "4hello"));
    assert_eq!(res.header("content-type"), Some("text/plain; charset=UTF-8"));
}

#[tokio::test(start_paused = true)]
async fn get_is_held_until_the_first_ping_one_ping_interval_after_the_handshake() {
    let (_server, eio) = fixture().await;
    let t0 = Instant::now();
    let sid = eio.open().await;
    let res = eio.start_get(&sid).await.finish().await;
    let elapsed = t0.elapsed();
    assert_eq!((res.status, res.text()), (200, "2"), "the GET carries only the ping");
    assert!(elapsed >= Duration::from_millis(300), "first ping not before pingInterval: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(500), "first ping one pingInterval after the handshake: {elapsed:?}");
}

#[tokio::test]
async fn post_answers_ok_as_text_html() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let res = eio.post(&sid, b"4hello").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "ok");
    assert_eq!(res.header("content-type"), Some("text/html"));
    assert_eq!(eio.get_ok(&sid).await, "4hello");
}

#[tokio::test]
async fn several_packets_in_one_post_come_back_in_one_get_separated_by_record_separators() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    eio.post_ok(&sid, "4test1\x1e4test2\x1e4test3".as_bytes()).await;
    assert_eq!(eio.get_ok(&sid).await, "4test1\x1e4test2\x1e4test3");
    // Unicode text survives unchanged.
    eio.post_ok(&sid, "4héllo wörld ✓\x1e4🎉".as_bytes()).await;
    assert_eq!(eio.get_ok(&sid).await, "4héllo wörld ✓\x1e4🎉");
}

#[tokio::test]
async fn binary_messages_travel_as_b_base64_both_ways() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    // The echo app sends binary back as binary, so `b`+base64 comes back only
    // if the server decoded it into bytes and encoded them again.
    eio.post_ok(&sid, "4hello\x1ebAQIDBA==".as_bytes()).await;
    assert_eq!(eio.get_ok(&sid).await, "4hello\x1ebAQIDBA==");
    // Every padding length, and an empty binary message.
    eio.post_ok(&sid, "b/w==\x1eb//4=\x1ebAQID\x1eb".as_bytes()).await;
    assert_eq!(eio.get_ok(&sid).await, "b/w==\x1eb//4=\x1ebAQID\x1eb");
}

#[tokio::test]
async fn binary_posted_over_polling_reaches_a_websocket_as_a_binary_frame() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut ws = eio.upgrade(&sid).await;
    // After the upgrade the echo goes out on the websocket as raw bytes.
    raw::send_text(&mut ws, "4text").await;
    assert_eq!(raw::recv_text(&mut ws).await, "4text");
    raw::send_binary(&mut ws, &[0, 1, 2, 255]).await;
    assert_eq!(raw::recv_binary(&mut ws).await, vec![0, 1, 2, 255]);
}

#[tokio::test(start_paused = true)]
async fn two_concurrent_gets_close_the_session() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let first = tokio::spawn(eio.start_get(&sid).await.finish());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!first.is_finished());
    let second = raw::request(eio.addr, "GET", &format!("{}&t=burst", eio.polling(&sid)), &[], b"").await;
    assert_eq!(second.status, 400, "the overlapping GET is refused: {second:?}");
    let first = first.await.unwrap();
    assert_eq!((first.status, first.text()), (200, "1"), "the pending GET gets a close packet");
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
    assert_engine_error(&eio.post(&sid, b"4x").await, 1, "Session ID unknown");
}

#[tokio::test]
async fn get_responses_never_exceed_max_payload_and_keep_every_message_in_order() {
    const MAX: usize = 1000;
    let (_, router) = apps::echo(apps::config(60_000, 60_000, 10_000, MAX));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let sid = eio.open().await;

    // Queue 300 messages of mixed sizes, text and binary, in POSTs within maxPayload.
    let mut expected = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let flush = |batch: &mut Vec<String>| {
        let body = batch.join("\x1e");
        batch.clear();
        body
    };
    for i in 0..300usize {
        let packet = if i % 7 == 3 {
            // Binary: i as 4 bytes, padded to a varying length (base64 grows it by 4/3).
            let mut bytes = (i as u32).to_be_bytes().to_vec();
            bytes.resize(4 + (i * 13) % 200, (i % 251) as u8);
            format!("b{}", base64(&bytes))
        } else {
            format!("4msg-{i:04}-{}", "x".repeat((i * 37) % 300))
        };
        if batch.iter().map(|p| p.len() + 1).sum::<usize>() + packet.len() > MAX {
            eio.post_ok(&sid, flush(&mut batch).as_bytes()).await;
        }
        expected.push(packet.clone());
        batch.push(packet);
    }
    eio.post_ok(&sid, flush(&mut batch).as_bytes()).await;

    let mut got = Vec::new();
    let mut responses = 0;
    while got.len() < expected.len() {
        let body = eio.get_ok(&sid).await;
        assert!(body.len() <= MAX, "a GET body of {} bytes exceeds maxPayload {MAX}", body.len());
        got.extend(packets(&body).into_iter().map(str::to_owned));
        responses += 1;
    }
    assert_eq!(got, expected, "every message, once, in order");
    assert!(responses > 1, "the queue was split over several responses");
}

#[tokio::test]
async fn post_body_of_exactly_max_payload_is_accepted() {
    const MAX: usize = 1000;
    let (_, router) = apps::echo(apps::config(60_000, 60_000, 10_000, MAX));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let sid = eio.open().await;
    let body = format!("4{}", "y".repeat(MAX - 1));
    eio.post_ok(&sid, body.as_bytes()).await;
    // A single packet as large as maxPayload still goes out.
    assert_eq!(eio.get_ok(&sid).await, body);
}

#[tokio::test]
async fn post_body_over_max_payload_is_413_and_closes_the_session() {
    const MAX: usize = 1000;
    let (engine, router) = apps::echo(apps::config(60_000, 60_000, 10_000, MAX));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");

    // Declared too big: refused before the body is read (the body is never sent).
    let sid = eio.open().await;
    let mut conn = HttpConn::connect(eio.addr).await;
    conn.send("POST", &eio.polling(&sid), &[("Content-Length", &(MAX + 1).to_string())], b"").await.unwrap();
    let res = conn.read_response().await.unwrap();
    assert_eq!(res.status, 413);
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");

    // Fully sent and too big by one byte.
    let sid = eio.open().await;
    let res = eio.post(&sid, format!("4{}", "z".repeat(MAX)).as_bytes()).await;
    assert_eq!(res.status, 413);
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");

    // Chunked, no length declared: the limit applies to what arrives.
    let sid = eio.open().await;
    let mut conn = HttpConn::connect(eio.addr).await;
    let chunk = format!("4{}", "c".repeat(MAX + 200));
    let body = format!("{:x}\r\n{chunk}\r\n", chunk.len());
    conn.send("POST", &eio.polling(&sid), &[("Transfer-Encoding", "chunked")], body.as_bytes()).await.unwrap();
    let res = conn.read_response().await.unwrap();
    assert_eq!(res.status, 413);
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");

    eventually("the sessions are gone", || engine.session_count() == 0).await;
}

#[tokio::test]
async fn a_post_larger_than_the_fixture_max_payload_is_413() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut conn = HttpConn::connect(eio.addr).await;
    conn.send("POST", &eio.polling(&sid), &[("Content-Length", "1000001")], b"").await.unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 413);
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
}

#[tokio::test]
async fn invalid_polling_payloads_close_the_session() {
    let (_server, eio) = fixture().await;
    let cases: [&[u8]; 10] = [
        b"abc",
        b"",
        b"9",
        b"4a\x1e\x1e4b",
        b"4a\x1e",
        b"b!!!notbase64",
        b"\xff\xfe4hello",
        b"4ok\x1ex",
        b"2",
        b"\x1e",
    ];
    for body in cases {
        let sid = eio.open().await;
        let res = eio.post(&sid, body).await;
        // The reference answers `ok` and closes; a 400 would do as well.
        assert!(res.status == 200 || res.status == 400, "POST {body:?}: {res:?}");
        assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
    }
}

#[tokio::test]
async fn packets_before_an_invalid_one_in_the_same_payload_are_not_echoed_after_close() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let _ = eio.post(&sid, b"4first\x1eabc\x1e4third").await;
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
}

#[tokio::test(start_paused = true)]
async fn client_close_packet_ends_the_pending_get_with_a_noop_and_closes_the_session() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let get = tokio::spawn(eio.start_get(&sid).await.finish());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let res = eio.post(&sid, b"1").await;
    assert_eq!(res.status, 200);
    let get = get.await.unwrap();
    assert_eq!((get.status, get.text()), (200, "6"), "the reference ends the pending poll with a noop");
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
}

#[tokio::test]
async fn client_close_packet_without_a_pending_get_closes_the_session() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    eio.post_ok(&sid, b"4before\x1e1").await;
    // One GET racing the close still gets the reference's noop; then the sid is gone.
    let farewell = eio.get(&sid).await;
    assert_eq!((farewell.status, farewell.text()), (200, "6"));
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
}

#[tokio::test(start_paused = true)]
async fn client_vanishing_mid_poll_closes_the_session() {
    let (engine, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let sid = eio.open().await;
    let t0 = Instant::now();
    let conn = eio.start_get(&sid).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(engine.session_count(), 1);
    drop(conn.into_inner());
    eventually("the session is gone", || engine.session_count() == 0).await;
    // As the reference ("poll connection closed prematurely"): at once, not
    // only when the heartbeat expires.
    assert!(t0.elapsed() < Duration::from_millis(300), "closed after {:?}", t0.elapsed());
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
}

#[tokio::test(start_paused = true)]
async fn abandoned_polling_session_is_reaped_by_the_heartbeat() {
    let (engine, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let t0 = Instant::now();
    let sid = eio.open().await;
    eio.post_ok(&sid, b"4never-read").await;
    eventually("the session is gone", || engine.session_count() == 0).await;
    assert!(t0.elapsed() >= Duration::from_millis(500), "not before pingInterval + pingTimeout");
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
}

#[tokio::test]
async fn a_session_serves_many_sequential_polls_on_one_keep_alive_connection() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut conn = HttpConn::connect(eio.addr).await;
    for i in 0..20 {
        let body = format!("4n{i}");
        let res = conn.request("POST", &eio.polling(&sid), &[], body.as_bytes()).await.unwrap();
        assert_eq!(res.text(), "ok");
        let res = conn.request("GET", &eio.polling(&sid), &[], b"").await.unwrap();
        assert_eq!(res.text(), body);
    }
}

/// Standard base64 with padding (the polling payload's binary encoding).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
