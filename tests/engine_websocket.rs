//! Engine.IO websocket rules, with raw websocket frames: direct sessions, the
//! upgrade from polling (`2probe` → `3probe`, the pending poll released with
//! `6`, then `5`), what is refused after an upgrade, upgrades that never
//! finish or whose client vanishes, maxPayload on messages and frames (close
//! code 1009), invalid packets and client close.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use raw::{
    Eio, HttpConn, assert_engine_error, eventually, recv_binary, recv_text, send_binary, send_text, until_closed,
    ws_connect,
};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

async fn fixture() -> (TestServer, Eio) {
    let (_, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    (server, eio)
}

#[tokio::test]
async fn websocket_session_echoes_text_and_binary_frames() {
    let (_server, eio) = fixture().await;
    let (mut ws, _sid) = eio.ws_open().await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello");
    // A binary frame is a message with raw bytes: no type byte, no base64.
    send_binary(&mut ws, &[1, 2, 3, 4]).await;
    assert_eq!(recv_binary(&mut ws).await, vec![1, 2, 3, 4]);
    send_text(&mut ws, "4héllo ✓").await;
    assert_eq!(recv_text(&mut ws).await, "4héllo ✓");
    // A websocket-level ping is answered by the websocket layer and is no packet.
    ws.send(Message::Ping(vec![9].into())).await.unwrap();
    send_text(&mut ws, "4after-ping").await;
    assert_eq!(recv_text(&mut ws).await, "4after-ping");
}

#[tokio::test]
async fn polling_requests_for_a_websocket_session_are_refused() {
    let (_server, eio) = fixture().await;
    let (mut ws, sid) = eio.ws_open().await;
    assert_engine_error(&eio.get(&sid).await, 3, "Bad request");
    assert_engine_error(&eio.post(&sid, b"4x").await, 3, "Bad request");
    send_text(&mut ws, "4still-here").await;
    assert_eq!(recv_text(&mut ws).await, "4still-here");
}

#[tokio::test(start_paused = true)]
async fn upgrade_answers_the_probe_releases_the_pending_get_with_a_noop_then_switches_on_5() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let get = tokio::spawn(eio.start_get(&sid).await.finish());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!get.is_finished());

    let mut ws = eio.ws(Some(&sid)).await;
    send_text(&mut ws, "2probe").await;
    // No open packet on an upgrading websocket: the first frame is the probe answer.
    assert_eq!(recv_text(&mut ws).await, "3probe");
    let res = get.await.unwrap();
    assert_eq!((res.status, res.text()), (200, "6"), "the pending GET is released with a noop");

    send_text(&mut ws, "5").await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello", "after 5 everything goes over the websocket");
}

#[tokio::test]
async fn a_get_during_the_probe_is_answered_with_a_noop() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut ws = eio.ws(Some(&sid)).await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(recv_text(&mut ws).await, "3probe");
    assert_eq!(eio.get_ok(&sid).await, "6");
    send_text(&mut ws, "5").await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello");
}

#[tokio::test]
async fn a_get_sent_after_the_upgrade_packet_is_refused_even_if_it_arrives_first() {
    // The official suite's "ignores HTTP requests with same sid after upgrade":
    // `2probe` and `5` go out back to back, then a GET on another connection,
    // which may reach the server before the websocket's `5` is processed.
    let (_server, eio) = fixture().await;
    for _ in 0..20 {
        let sid = eio.open().await;
        let mut ws = eio.ws(Some(&sid)).await;
        send_text(&mut ws, "2probe").await;
        send_text(&mut ws, "5").await;
        assert_engine_error(&eio.get(&sid).await, 3, "Bad request");
        assert_eq!(recv_text(&mut ws).await, "3probe");
        send_text(&mut ws, "4hello").await;
        assert_eq!(recv_text(&mut ws).await, "4hello");
    }
}

#[tokio::test(start_paused = true)]
async fn a_get_during_the_probe_waits_briefly_for_a_racing_upgrade_packet() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut ws = eio.ws(Some(&sid)).await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(recv_text(&mut ws).await, "3probe");
    let get = tokio::spawn(eio.start_get(&sid).await.finish());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!get.is_finished(), "held a moment, in case `5` is on its way");
    send_text(&mut ws, "5").await;
    assert_engine_error(&get.await.unwrap(), 3, "Bad request");
    send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello");
}

#[tokio::test]
async fn packets_queued_during_the_upgrade_go_out_on_the_websocket_in_order() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut ws = eio.ws(Some(&sid)).await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(recv_text(&mut ws).await, "3probe");
    // Still polling until `5`: POSTs are accepted; their echoes wait in the queue.
    eio.post_ok(&sid, "4q1\x1e4q2\x1ebAQIDBA==".as_bytes()).await;
    send_text(&mut ws, "5").await;
    assert_eq!(recv_text(&mut ws).await, "4q1");
    assert_eq!(recv_text(&mut ws).await, "4q2");
    assert_eq!(recv_binary(&mut ws).await, vec![1, 2, 3, 4]);
    send_text(&mut ws, "4after").await;
    assert_eq!(recv_text(&mut ws).await, "4after");
}

#[tokio::test]
async fn polling_requests_after_the_upgrade_get_400() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut ws = eio.upgrade(&sid).await;
    // Make sure `5` was processed: an echo round trip on the websocket.
    send_text(&mut ws, "4sync").await;
    assert_eq!(recv_text(&mut ws).await, "4sync");
    assert_engine_error(&eio.get(&sid).await, 3, "Bad request");
    assert_engine_error(&eio.post(&sid, b"4x").await, 3, "Bad request");
    // Refusing them does not close the session.
    send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello");
}

/// A second websocket for a sid that is upgrading or upgraded is refused.
/// As the reference (and the official suite, whose client has no error
/// listener there) it is accepted with 101 and closed at once, with no
/// Engine.IO packet on it; the session itself is not affected.
async fn assert_second_websocket_refused(eio: &Eio, sid: &str) {
    let mut second = ws_connect(eio.addr, &eio.websocket(Some(sid))).await.expect("101, then closed");
    let closed = until_closed(&mut second).await;
    assert!(closed.messages.is_empty(), "nothing is sent on a refused websocket: {closed:?}");
}

#[tokio::test]
async fn second_websocket_for_an_upgraded_sid_is_refused_and_the_session_survives() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut ws = eio.upgrade(&sid).await;
    send_text(&mut ws, "4sync").await;
    assert_eq!(recv_text(&mut ws).await, "4sync");
    assert_second_websocket_refused(&eio, &sid).await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello");
}

#[tokio::test]
async fn second_websocket_while_upgrading_is_refused_and_the_upgrade_completes() {
    let (_server, eio) = fixture().await;
    let sid = eio.open().await;
    let mut ws = eio.ws(Some(&sid)).await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(recv_text(&mut ws).await, "3probe");
    assert_second_websocket_refused(&eio, &sid).await;
    send_text(&mut ws, "5").await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello");
}

#[tokio::test]
async fn second_websocket_for_a_direct_websocket_session_is_refused() {
    let (_server, eio) = fixture().await;
    let (mut ws, sid) = eio.ws_open().await;
    assert_second_websocket_refused(&eio, &sid).await;
    send_text(&mut ws, "4hello").await;
    assert_eq!(recv_text(&mut ws).await, "4hello");
}

#[tokio::test(start_paused = true)]
async fn upgrade_that_never_sends_5_times_out_and_the_session_stays_usable_on_polling() {
    let (engine, router) = apps::echo(apps::config(10_000, 5_000, 1_000, 1_000_000));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let sid = eio.open().await;
    let t0 = Instant::now();
    let mut ws = eio.ws(Some(&sid)).await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(recv_text(&mut ws).await, "3probe");
    let closed = until_closed(&mut ws).await;
    assert!(closed.messages.is_empty(), "{closed:?}");
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(1_000), "not before the upgrade timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(5_000), "bounded by the upgrade timeout: {elapsed:?}");

    // Back on polling, fully usable.
    assert_eq!(engine.sessions_by_transport(), (1, 0));
    eio.post_ok(&sid, b"4still-polling").await;
    assert_eq!(eio.get_ok(&sid).await, "4still-polling");
    // And a new upgrade may be tried and succeed.
    let mut ws = eio.upgrade(&sid).await;
    send_text(&mut ws, "4upgraded").await;
    assert_eq!(recv_text(&mut ws).await, "4upgraded");
    assert_eq!(engine.sessions_by_transport(), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn upgrade_websocket_that_never_probes_times_out() {
    let (engine, router) = apps::echo(apps::config(10_000, 5_000, 1_000, 1_000_000));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let sid = eio.open().await;
    let mut ws = eio.ws(Some(&sid)).await;
    let closed = until_closed(&mut ws).await;
    assert!(closed.messages.is_empty(), "{closed:?}");
    eio.post_ok(&sid, b"4still-polling").await;
    assert_eq!(eio.get_ok(&sid).await, "4still-polling");
    assert_eq!(engine.session_count(), 1);
}

#[tokio::test]
async fn anything_but_a_probe_aborts_the_upgrade_and_the_session_stays_on_polling() {
    let (_server, eio) = fixture().await;
    for first in ["4hello", "2", "3probe", "abc", ""] {
        let sid = eio.open().await;
        let mut ws = eio.ws(Some(&sid)).await;
        send_text(&mut ws, first).await;
        let closed = until_closed(&mut ws).await;
        assert!(closed.messages.is_empty(), "after {first:?}: {closed:?}");
        eio.post_ok(&sid, b"4polling").await;
        assert_eq!(eio.get_ok(&sid).await, "4polling", "after {first:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn client_vanishing_mid_upgrade_leaves_no_session_once_the_heartbeat_expires() {
    let (engine, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");

    // After the probe, and before it.
    let sid = eio.open().await;
    let mut ws = eio.ws(Some(&sid)).await;
    send_text(&mut ws, "2probe").await;
    assert_eq!(recv_text(&mut ws).await, "3probe");
    drop(ws);
    let sid2 = eio.open().await;
    let ws2 = eio.ws(Some(&sid2)).await;
    drop(ws2);
    // A half-finished upgrade request: the upgrade headers, then nothing.
    let sid3 = eio.open().await;
    let mut half = HttpConn::connect(eio.addr).await;
    half.send_raw(
        format!("GET {} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n", eio.websocket(Some(&sid3))).as_bytes(),
    )
    .await
    .unwrap();
    drop(half);

    eventually("every session is reaped", || engine.session_count() == 0).await;
    for sid in [sid, sid2, sid3] {
        assert!(eio.is_unknown(&sid).await);
    }
}

#[tokio::test]
async fn websocket_for_an_unknown_sid_is_refused() {
    let (_server, eio) = fixture().await;
    assert!(ws_connect(eio.addr, &eio.websocket(Some("unknown-sid"))).await.is_err());
}

async fn small_payload_server() -> (std::sync::Arc<eventfeed::engine::Engine<apps::Echo>>, TestServer, Eio) {
    let (engine, router) = apps::echo(apps::config(60_000, 60_000, 10_000, 1000));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    (engine, server, eio)
}

#[tokio::test]
async fn messages_up_to_max_payload_are_accepted() {
    let (_engine, _server, eio) = small_payload_server().await;
    let (mut ws, _) = eio.ws_open().await;
    let text = format!("4{}", "a".repeat(999));
    send_text(&mut ws, &text).await;
    assert_eq!(recv_text(&mut ws).await, text);
    send_binary(&mut ws, &[7; 1000]).await;
    assert_eq!(recv_binary(&mut ws).await, vec![7; 1000]);
    // Fragmented, within the limit once reassembled.
    ws.send(Message::Frame(Frame::message(format!("4{}", "b".repeat(499)), OpCode::Data(Data::Text), false)))
        .await
        .unwrap();
    ws.send(Message::Frame(Frame::message("c".repeat(500), OpCode::Data(Data::Continue), true))).await.unwrap();
    assert_eq!(recv_text(&mut ws).await, format!("4{}{}", "b".repeat(499), "c".repeat(500)));
}

async fn assert_closed_1009(engine: &eventfeed::engine::Engine<apps::Echo>, ws: &mut raw::Ws) {
    let closed = until_closed(ws).await;
    assert_eq!(closed.code, Some(CloseCode::Size), "close code 1009: {closed:?}");
    assert!(closed.messages.is_empty(), "{closed:?}");
    eventually("the session is gone", || engine.session_count() == 0).await;
}

#[tokio::test]
async fn text_message_over_max_payload_closes_with_1009() {
    let (engine, _server, eio) = small_payload_server().await;
    let (mut ws, _) = eio.ws_open().await;
    send_text(&mut ws, &format!("4{}", "a".repeat(1000))).await;
    assert_closed_1009(&engine, &mut ws).await;
}

#[tokio::test]
async fn binary_frame_over_max_payload_closes_with_1009() {
    let (engine, _server, eio) = small_payload_server().await;
    let (mut ws, _) = eio.ws_open().await;
    send_binary(&mut ws, &[1; 1001]).await;
    assert_closed_1009(&engine, &mut ws).await;
}

#[tokio::test]
async fn fragmented_message_over_max_payload_closes_with_1009() {
    let (engine, _server, eio) = small_payload_server().await;
    let (mut ws, _) = eio.ws_open().await;
    // Every frame is under the limit; the reassembled message is not.
    ws.send(Message::Frame(Frame::message(format!("4{}", "x".repeat(599)), OpCode::Data(Data::Text), false)))
        .await
        .unwrap();
    ws.send(Message::Frame(Frame::message("y".repeat(600), OpCode::Data(Data::Continue), true))).await.unwrap();
    assert_closed_1009(&engine, &mut ws).await;
}

#[tokio::test]
async fn unfinished_frame_announcing_more_than_max_payload_closes_with_1009() {
    let (engine, _server, eio) = small_payload_server().await;
    let (ws, _) = eio.ws_open().await;
    // A masked binary frame header announcing 1 MiB, then only a few bytes:
    // refused from the header alone, without waiting for (or buffering) the rest.
    let mut tcp = ws.into_inner();
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]); // mask key
    frame.extend_from_slice(&[0; 16]);
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &frame).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tcp,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    assert_closed_1009(&engine, &mut ws).await;
}

#[tokio::test]
async fn message_over_the_fixture_max_payload_closes_with_1009() {
    let (engine, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let (mut ws, _) = eio.ws_open().await;
    send_text(&mut ws, &format!("4{}", "m".repeat(1_000_000))).await;
    assert_closed_1009(&engine, &mut ws).await;
}

#[tokio::test]
async fn invalid_engine_packets_on_a_websocket_close_the_session() {
    let (engine, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    // Unknown type, empty frame, garbage, a ping from the client (v4: only the
    // server pings), an open packet from the client.
    for bad in ["9", "", "abc", "2", "0{}", "\u{0}"] {
        let (mut ws, sid) = eio.ws_open().await;
        send_text(&mut ws, bad).await;
        let closed = until_closed(&mut ws).await;
        assert!(closed.messages.is_empty(), "after {bad:?}: {closed:?}");
        eventually("the session is gone", || engine.session_count() == 0).await;
        assert!(eio.is_unknown(&sid).await);
    }
}

#[tokio::test]
async fn client_close_packet_on_a_websocket_closes_the_session() {
    let (engine, router) = apps::echo(apps::fixture_config());
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let (mut ws, sid) = eio.ws_open().await;
    send_text(&mut ws, "1").await;
    let closed = until_closed(&mut ws).await;
    assert!(closed.messages.is_empty(), "{closed:?}");
    eventually("the session is gone", || engine.session_count() == 0).await;
    assert!(eio.is_unknown(&sid).await);
}

#[tokio::test]
async fn websocket_close_frame_or_dropped_connection_closes_the_session_at_once() {
    let (engine, router) = apps::echo(apps::config(60_000, 60_000, 10_000, 1_000_000));
    let server = TestServer::start(router).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    let (mut ws, _) = eio.ws_open().await;
    ws.close(None).await.unwrap();
    eventually("closed by a close frame", || engine.session_count() == 0).await;
    let (ws, _) = eio.ws_open().await;
    drop(ws);
    // The heartbeat would take a minute here: the EOF alone ends the session.
    eventually("closed by the dropped connection", || engine.session_count() == 0).await;
}

/// An echo engine that keeps every session's [`Conn`], for the tests that
/// send broadcasts themselves, with the instants they choose. Its heartbeat
/// is a minute: no Engine.IO ping comes between the frames they expect, or
/// flushes what they check the task flushes by itself.
fn keeping() -> (std::sync::Arc<eventfeed::engine::Engine<Keep>>, Keep) {
    let keep = Keep::default();
    let mut config = apps::fixture_config();
    config.session.ping_interval = Duration::from_secs(60);
    config.session.ping_timeout = Duration::from_secs(60);
    (eventfeed::engine::Engine::new(config, keep.clone()), keep)
}

#[derive(Clone, Default)]
struct Keep(std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<eventfeed::engine::Conn>>>>);

impl Keep {
    fn only(&self) -> std::sync::Arc<eventfeed::engine::Conn> {
        let conns = self.0.lock().unwrap();
        assert_eq!(conns.len(), 1, "one session");
        conns[0].clone()
    }
}

impl eventfeed::engine::Handler for Keep {
    type State = ();

    fn on_open(&self, conn: &std::sync::Arc<eventfeed::engine::Conn>) {
        self.0.lock().unwrap().push(conn.clone());
    }

    fn on_message(
        &self,
        conn: &std::sync::Arc<eventfeed::engine::Conn>,
        _: &(),
        message: eventfeed::engine::Message<'_>,
    ) {
        eventfeed::engine::Handler::on_message(&apps::Echo, conn, &(), message);
    }

    fn on_close(
        &self,
        _: &std::sync::Arc<eventfeed::engine::Conn>,
        _: &(),
        _: eventfeed_protocol::engine::session::CloseReason,
    ) {
    }
}

/// A broadcast at `t` (on a thread that is not busy).
fn at(t: std::time::Instant) -> eventfeed::engine::BroadcastTime {
    eventfeed::engine::BroadcastTime::at(t)
}

/// A broadcast packet (a text frame) `4<text>`.
fn broadcast_packet(text: &str) -> eventfeed_protocol::socket::Encoded {
    eventfeed_protocol::socket::Encoded { text: eventfeed_protocol::engine::Frame::message(text), binary: Vec::new() }
}

async fn keeping_fixture() -> (TestServer, Eio, std::sync::Arc<eventfeed::engine::Engine<Keep>>, Keep) {
    use eventfeed::server::Router;
    let (engine, keep) = keeping();
    let server = TestServer::start(Router::new().engine("/engine.io/", engine.clone())).await;
    let eio = Eio::new(server.addr, "/engine.io/");
    (server, eio, engine, keep)
}

/// A websocket session of [`keeping_fixture`] after a round trip (the task
/// wrote its queue, the open packet and the echo, and lent the slot out):
/// the server, the engine, the session's `Conn` and the client's websocket.
async fn ready_session()
-> (TestServer, std::sync::Arc<eventfeed::engine::Engine<Keep>>, std::sync::Arc<eventfeed::engine::Conn>, raw::Ws) {
    let (server, eio, engine, keep) = keeping_fixture().await;
    let (mut ws, _sid) = eio.ws_open().await;
    send_text(&mut ws, "4ready").await;
    assert_eq!(recv_text(&mut ws).await, "4ready");
    let conn = keep.only();
    (server, engine, conn, ws)
}

#[tokio::test]
async fn broadcast_frames_to_an_idle_websocket_are_written_at_once_and_stay_in_order_with_queued_ones() {
    let (_server, engine, conn, mut ws) = ready_session().await;
    let direct = || engine.metrics().frames_written_direct.get();
    let t0 = std::time::Instant::now();

    // The first broadcast goes out at once; one less than the gap after it,
    // through the task (its frames may pile up and go out together), and so
    // does whatever is queued behind it.
    conn.send_broadcast(&broadcast_packet("a"), at(t0)).unwrap();
    assert_eq!(direct(), 1, "written at once");
    conn.send_broadcast(&broadcast_packet("b"), at(t0 + Duration::from_millis(1))).unwrap();
    conn.send(eventfeed_protocol::engine::Frame::message("c")).unwrap();
    assert_eq!(direct(), 1, "a frame soon after another is queued");
    for expected in ["4a", "4b", "4c"] {
        assert_eq!(recv_text(&mut ws).await, expected);
    }
    // Once the task wrote its queue, a broadcast long enough after the last
    // one is written at once again.
    conn.send_broadcast(&broadcast_packet("d"), at(t0 + Duration::from_millis(10))).unwrap();
    assert_eq!(direct(), 2);
    assert_eq!(recv_text(&mut ws).await, "4d");
    // A binary packet (attachments) always goes through the task.
    let binary = eventfeed_protocol::socket::Encoded {
        text: eventfeed_protocol::engine::Frame::message("e"),
        binary: vec![eventfeed_protocol::engine::Frame::Binary(bytes::Bytes::from_static(&[7, 8]))],
    };
    conn.send_broadcast(&binary, at(t0 + Duration::from_millis(20))).unwrap();
    assert_eq!(direct(), 2);
    assert_eq!(recv_text(&mut ws).await, "4e");
    assert_eq!(recv_binary(&mut ws).await, vec![7, 8]);
}

#[tokio::test]
async fn direct_writes_that_fill_the_socket_hand_the_rest_to_the_task_whole_and_in_order() {
    let (_server, engine, conn, mut ws) = ready_session().await;
    let metrics = engine.metrics();
    let (direct0, queued0) = (metrics.frames_written_direct.get(), metrics.frames_queued.get());
    // The client reads nothing meanwhile: broadcasts, each long after the
    // last, are written at once until the socket's buffers are full; of the
    // one the socket takes in part, the rest waits in the socket (sent
    // before anything else), and the ones after it are queued (25 more).
    let t0 = std::time::Instant::now();
    let padding = "x".repeat(480);
    let mut sent = 0u64;
    let mut after_full = None;
    while after_full.is_none_or(|n| sent < n + 25) {
        assert!(sent < 1_000_000, "the socket's buffers filled");
        let text = format!("{sent:07}{padding}");
        conn.send_broadcast(&broadcast_packet(&text), at(t0 + Duration::from_millis(3) * (sent as u32))).unwrap();
        sent += 1;
        let queued = (metrics.frames_queued.get() - queued0) - (metrics.frames_written_direct.get() - direct0);
        if after_full.is_none() && queued > 0 {
            after_full = Some(sent);
        }
    }
    assert!(metrics.frames_written_direct.get() - direct0 > 100, "most went out at once");
    // Every frame arrives whole (the client's websocket parser sees no torn
    // frame) and in order.
    for i in 0..sent {
        assert_eq!(recv_text(&mut ws).await, format!("4{i:07}{padding}"));
    }
    // Everything written, the slot is lent again: the next one goes out at once.
    let direct = metrics.frames_written_direct.get();
    conn.send_broadcast(&broadcast_packet("last"), at(t0 + Duration::from_secs(3600))).unwrap();
    assert_eq!(metrics.frames_written_direct.get(), direct + 1);
    assert_eq!(recv_text(&mut ws).await, "4last");
}

#[tokio::test]
async fn the_rest_of_a_direct_write_cut_short_is_flushed_by_the_task_with_nothing_queued_after_it() {
    let (_server, engine, conn, mut ws) = ready_session().await;
    let metrics = engine.metrics();
    // Broadcasts written at once until the socket's buffers are full, and
    // none after the first the kernel took only in part: its rest goes out
    // only because the task flushes it (no frame of the task's follows).
    // Should the socket refuse a frame whole first (queued), the client
    // reads everything and the filling starts over.
    let t0 = std::time::Instant::now();
    let padding = "y".repeat(480);
    let (mut sent, mut received, mut cut_short) = (0u32, 0u32, false);
    for _round in 0..20 {
        loop {
            assert!(sent - received < 100_000, "the socket's buffers filled");
            let direct = metrics.frames_written_direct.get();
            let text = format!("{sent:07}{padding}");
            conn.send_broadcast(&broadcast_packet(&text), at(t0 + Duration::from_millis(3) * sent)).unwrap();
            sent += 1;
            if metrics.frames_written_direct.get() == direct {
                break; // Refused whole: queued.
            }
            if !conn.lends_for_direct_writes() {
                cut_short = true; // Written in part: the rest waits in the socket.
                break;
            }
        }
        while received < sent {
            assert_eq!(recv_text(&mut ws).await, format!("4{received:07}{padding}"));
            received += 1;
        }
        if cut_short {
            break;
        }
    }
    assert!(cut_short, "no direct write was cut short in 20 fillings");
    // Flushed, the slot is lent again.
    conn.send_broadcast(&broadcast_packet("last"), at(t0 + Duration::from_secs(3600))).unwrap();
    assert_eq!(recv_text(&mut ws).await, "4last");
    assert!(conn.lends_for_direct_writes());
}

#[tokio::test]
async fn a_client_that_sends_websocket_pings_still_gets_broadcasts_written_at_once_and_every_pong_whole() {
    let (_server, eio, engine, keep) = keeping_fixture().await;
    let (mut ws, _sid) = eio.ws_open().await;
    send_text(&mut ws, "4ready").await;
    assert_eq!(recv_text(&mut ws).await, "4ready");
    let conn = keep.only();
    let t0 = std::time::Instant::now();
    let mut pongs = Vec::new();
    for i in 0..3u8 {
        ws.send(Message::Ping(vec![i].into())).await.unwrap();
        conn.send_broadcast(&broadcast_packet(&format!("n{i}")), at(t0 + Duration::from_secs(i.into()))).unwrap();
        // The frame and the pong, both whole, in whichever order.
        let mut text = None;
        while text.is_none() || pongs.len() <= usize::from(i) {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("in time") {
                Some(Ok(Message::Pong(p))) => pongs.push(p.to_vec()),
                Some(Ok(Message::Text(t))) => text = Some(t.as_str().to_owned()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(text.as_deref(), Some(format!("4n{i}").as_str()));
    }
    assert_eq!(pongs, vec![vec![0], vec![1], vec![2]]);
    assert_eq!(engine.metrics().frames_written_direct.get(), 3, "a ping does not stop writes at once");
}
