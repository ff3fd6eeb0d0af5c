//! Engine.IO heartbeat rules on tokio's paused clock: the server pings every
//! pingInterval — the first ping one pingInterval after the handshake, not at
//! once — and closes the session when no pong comes within pingTimeout.
//!
//! The server runs in the test's runtime; with the clock paused, time only
//! moves when every task is idle (loopback I/O is polled first), so the
//! instants below are exact virtual times, not measurements.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use common::TestServer;
use raw::{Eio, assert_engine_error, eventually, recv_text, send_text, until_closed};
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(200);

async fn fixture() -> (std::sync::Arc<eventfeed::engine::Engine<apps::Echo>>, TestServer, Eio) {
    let (engine, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    (engine, server, eio)
}

#[track_caller]
fn assert_between(elapsed: Duration, low: Duration, high: Duration, what: &str) {
    assert!(elapsed >= low && elapsed < high, "{what} at {elapsed:?}, expected in [{low:?}, {high:?})");
}

#[tokio::test(start_paused = true)]
async fn polling_first_ping_comes_one_ping_interval_after_the_handshake() {
    let (_engine, _server, eio) = fixture().await;
    let t0 = Instant::now();
    let sid = eio.open().await;
    assert_eq!(eio.get_ok(&sid).await, "2");
    assert_between(t0.elapsed(), INTERVAL, INTERVAL + TIMEOUT, "first ping");
}

#[tokio::test(start_paused = true)]
async fn polling_pongs_keep_the_session_alive_and_each_schedules_the_next_ping() {
    let (engine, _server, eio) = fixture().await;
    let sid = eio.open().await;
    for round in 0..5 {
        assert_eq!(eio.get_ok(&sid).await, "2", "round {round}");
        let pong_at = Instant::now();
        eio.post_ok(&sid, b"3").await;
        assert_eq!(eio.get_ok(&sid).await, "2", "round {round}");
        assert_between(pong_at.elapsed(), INTERVAL, INTERVAL + TIMEOUT, "next ping after a pong");
        eio.post_ok(&sid, b"3").await;
    }
    // Well past several pingInterval + pingTimeout, and still open.
    assert_eq!(engine.session_count(), 1);
    eio.post_ok(&sid, b"4alive").await;
    assert_eq!(eio.get_ok(&sid).await, "4alive");
}

#[tokio::test(start_paused = true)]
async fn polling_missing_pong_closes_the_session() {
    let (engine, _server, eio) = fixture().await;
    let t0 = Instant::now();
    let sid = eio.open().await;
    assert_eq!(eio.get_ok(&sid).await, "2");
    // No pong. A GET held meanwhile is ended with a close packet.
    let res = eio.get(&sid).await;
    assert_between(t0.elapsed(), INTERVAL + TIMEOUT, INTERVAL + TIMEOUT + INTERVAL, "close");
    assert_eq!((res.status, res.text()), (200, "1"), "the held GET learns of the close");
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
    eventually("the session is gone", || engine.session_count() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn polling_session_without_pong_is_unknown_after_ping_interval_plus_ping_timeout() {
    // The official suite's "closes the session upon ping timeout": no GET
    // at all, then a GET once pingInterval + pingTimeout has passed.
    let (_engine, _server, eio) = fixture().await;
    let sid = eio.open().await;
    tokio::time::sleep(INTERVAL + TIMEOUT + Duration::from_millis(1)).await;
    assert_engine_error(&eio.get(&sid).await, 1, "Session ID unknown");
}

#[tokio::test(start_paused = true)]
async fn messages_do_not_count_as_pongs() {
    let (_engine, _server, eio) = fixture().await;
    let sid = eio.open().await;
    assert_eq!(eio.get_ok(&sid).await, "2");
    eio.post_ok(&sid, b"4not-a-pong").await;
    assert_eq!(eio.get_ok(&sid).await, "4not-a-pong");
    let res = eio.get(&sid).await;
    assert_eq!((res.status, res.text()), (200, "1"));
}

#[tokio::test(start_paused = true)]
async fn websocket_first_ping_comes_one_ping_interval_after_the_handshake() {
    let (_engine, _server, eio) = fixture().await;
    let t0 = Instant::now();
    let (mut ws, _) = eio.ws_open().await;
    assert_eq!(recv_text(&mut ws).await, "2");
    assert_between(t0.elapsed(), INTERVAL, INTERVAL + TIMEOUT, "first ping");
}

#[tokio::test(start_paused = true)]
async fn websocket_pongs_keep_the_session_alive() {
    let (engine, _server, eio) = fixture().await;
    let (mut ws, _) = eio.ws_open().await;
    let mut last = Instant::now();
    for _ in 0..5 {
        assert_eq!(recv_text(&mut ws).await, "2");
        assert_between(last.elapsed(), INTERVAL, INTERVAL + TIMEOUT, "ping");
        send_text(&mut ws, "3").await;
        last = Instant::now();
    }
    assert_eq!(engine.session_count(), 1);
    send_text(&mut ws, "4alive").await;
    assert_eq!(recv_text(&mut ws).await, "4alive");
}

#[tokio::test(start_paused = true)]
async fn websocket_missing_pong_closes_the_socket() {
    let (engine, _server, eio) = fixture().await;
    let t0 = Instant::now();
    let (mut ws, sid) = eio.ws_open().await;
    let closed = until_closed(&mut ws).await;
    assert_eq!(closed.messages, vec!["2".to_owned()], "a ping, then the end: {closed:?}");
    assert_between(t0.elapsed(), INTERVAL + TIMEOUT, INTERVAL + TIMEOUT + INTERVAL, "close");
    eventually("the session is gone", || engine.session_count() == 0).await;
    assert!(eio.is_unknown(&sid).await);
}

#[tokio::test(start_paused = true)]
async fn upgraded_session_keeps_its_heartbeat_on_the_websocket() {
    let (engine, _server, eio) = fixture().await;
    let t0 = Instant::now();
    let sid = eio.open().await;
    let mut ws = eio.upgrade(&sid).await;
    // The ping schedule started at the handshake and carries over.
    assert_eq!(recv_text(&mut ws).await, "2");
    assert_between(t0.elapsed(), INTERVAL, INTERVAL + TIMEOUT, "first ping");
    send_text(&mut ws, "3").await;
    assert_eq!(recv_text(&mut ws).await, "2");
    // No pong this time: closed.
    let closed = until_closed(&mut ws).await;
    assert!(closed.messages.is_empty(), "{closed:?}");
    eventually("the session is gone", || engine.session_count() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn every_abandoned_session_is_reaped_by_the_heartbeat() {
    let (engine, _server, eio) = fixture().await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        eio.open().await;
        // Keep the socket open but silent: only the heartbeat can end it.
        silent.push(eio.ws_open().await.0);
    }
    assert_eq!(engine.session_count(), 40);
    eventually("every session is reaped", || engine.session_count() == 0).await;
    drop(silent);
}
