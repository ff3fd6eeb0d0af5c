//! Socket.IO v5 rules, with raw Engine.IO frames: CONNECT (accepted,
//! rejected, unknown namespace), multiplexing, DISCONNECT from either side,
//! the connect timeout, invalid packets (each closes the session and nothing
//! else), events and acks both ways, binary events and acks over websocket
//! and polling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use apps::SioApp;
use common::TestServer;
use raw::{Eio, Ws, eventually, packets, recv, recv_binary, recv_text, send_binary, send_text, until_closed};
use serde_json::Value;
use tokio::time::Instant;

const PH0: &str = r#"{"_placeholder":true,"num":0}"#;
const PH1: &str = r#"{"_placeholder":true,"num":1}"#;

/// The test app with a quiet heartbeat (no pings during a test) and a 1 s
/// connect timeout.
async fn app() -> (SioApp, TestServer, Eio) {
    let app = SioApp::new(apps::config(10_000, 5_000, 10_000, 1_000_000), Duration::from_millis(1000));
    let server = TestServer::start(app.router.clone()).await;
    let eio = Eio::new(server.addr, "/socket.io/");
    (app, server, eio)
}

/// The conformance fixture (emits `auth` on connect; `message` → `message-back`).
async fn fixture() -> (TestServer, Eio) {
    let server = TestServer::start(apps::fixture::router()).await;
    let eio = Eio::new(server.addr, "/socket.io/");
    (server, eio)
}

/// The socket id in a CONNECT answer `40[<nsp>,]{"sid":"..."}`, which must
/// have that key only.
#[track_caller]
fn connect_sid(answer: &str, nsp: &str) -> String {
    let prefix = if nsp == "/" { "40".to_owned() } else { format!("40{nsp},") };
    let json = answer.strip_prefix(&prefix).unwrap_or_else(|| panic!("not a CONNECT answer for {nsp}: {answer:?}"));
    let v: Value = serde_json::from_str(json).expect("CONNECT answer JSON");
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["sid"], "only the sid: {answer}");
    obj["sid"].as_str().expect("sid is a string").to_owned()
}

/// Connects `ws` to `nsp` (no payload); returns the socket id.
async fn connect(ws: &mut Ws, nsp: &str) -> String {
    let packet = if nsp == "/" { "40".to_owned() } else { format!("40{nsp},") };
    send_text(ws, &packet).await;
    connect_sid(&recv_text(ws).await, nsp)
}

/// A websocket session connected to `/`.
async fn connected(eio: &Eio) -> Ws {
    let (mut ws, _) = eio.ws_open().await;
    connect(&mut ws, "/").await;
    ws
}

/// Asserts that nothing came back for what was sent before: a marker event
/// round-trips and its answer is the next frame.
async fn assert_nothing_pending(ws: &mut Ws) {
    send_text(ws, r#"42["echo","marker"]"#).await;
    assert_eq!(recv_text(ws).await, r#"42["echo-back","marker"]"#);
}

// --- CONNECT ---------------------------------------------------------------

#[tokio::test]
async fn connect_to_main_namespace_answers_a_new_sid_then_the_fixture_emits_auth() {
    let (_server, eio) = fixture().await;
    let (mut ws, engine_sid) = eio.ws_open().await;
    send_text(&mut ws, "40").await;
    let sid = connect_sid(&recv_text(&mut ws).await, "/");
    assert_ne!(sid, engine_sid, "the socket id is not the Engine.IO sid");
    assert_eq!(recv_text(&mut ws).await, r#"42["auth",{}]"#);
}

#[tokio::test]
async fn connect_payload_is_handed_to_the_namespace_verbatim() {
    let (_server, eio) = fixture().await;
    let (mut ws, _) = eio.ws_open().await;
    send_text(&mut ws, r#"40{"token":"123","z":{"b":1,"a":[true,null]},"n":-7}"#).await;
    connect_sid(&recv_text(&mut ws).await, "/");
    assert_eq!(recv_text(&mut ws).await, r#"42["auth",{"token":"123","z":{"b":1,"a":[true,null]},"n":-7}]"#);
}

#[tokio::test]
async fn connect_to_custom_namespace_with_or_without_trailing_comma() {
    let (_server, eio) = fixture().await;
    for packet in ["40/custom,", "40/custom"] {
        let (mut ws, _) = eio.ws_open().await;
        send_text(&mut ws, packet).await;
        connect_sid(&recv_text(&mut ws).await, "/custom");
        assert_eq!(recv_text(&mut ws).await, r#"42/custom,["auth",{}]"#);
    }
    let (mut ws, _) = eio.ws_open().await;
    send_text(&mut ws, r#"40/custom,{"token":"abc"}"#).await;
    connect_sid(&recv_text(&mut ws).await, "/custom");
    assert_eq!(recv_text(&mut ws).await, r#"42/custom,["auth",{"token":"abc"}]"#);
}

#[tokio::test]
async fn connect_to_unknown_namespace_answers_invalid_namespace_and_keeps_the_session() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    for (packet, nsp) in [("40/random", "/random"), ("40/random,", "/random"), ("40/a/b,{}", "/a/b")] {
        send_text(&mut ws, packet).await;
        assert_eq!(recv_text(&mut ws).await, format!(r#"44{nsp},{{"message":"Invalid namespace"}}"#));
    }
    connect(&mut ws, "/").await;
    assert_nothing_pending(&mut ws).await;
    assert_eq!(app.engine.session_count(), 1);
}

#[tokio::test]
async fn connect_handler_rejection_answers_connect_error_with_message_and_data() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    send_text(&mut ws, "40/private,").await;
    assert_eq!(recv_text(&mut ws).await, r#"44/private,{"message":"unauthorized","data":{"reason":"no token"}}"#);
    send_text(&mut ws, r#"40/private,{"token":"wrong"}"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"44/private,{"message":"unauthorized","data":{"reason":"no token"}}"#);
    assert_eq!(app.namespace("/private").socket_count(), 0);
    // The session stays; the same namespace can be connected with the right token.
    send_text(&mut ws, r#"40/private,{"token":"ok"}"#).await;
    connect_sid(&recv_text(&mut ws).await, "/private");
    assert_eq!(app.namespace("/private").socket_count(), 1);
    send_text(&mut ws, r#"42/private,["echo","in private"]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42/private,["echo-back","in private"]"#);
}

#[tokio::test]
async fn multiplexing_main_and_custom_on_one_session() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    let main = connect(&mut ws, "/").await;
    let custom = connect(&mut ws, "/custom").await;
    assert_ne!(main, custom);
    send_text(&mut ws, r#"42/custom,["echo","c"]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42/custom,["echo-back","c"]"#);
    send_text(&mut ws, r#"42["echo","m"]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["echo-back","m"]"#);
    send_text(&mut ws, r#"42/custom,5["ack","x"]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"43/custom,5["x"]"#);
    assert_eq!(app.namespace("/").socket_count(), 1);
    assert_eq!(app.namespace("/custom").socket_count(), 1);
    assert_eq!(app.engine.session_count(), 1);
}

#[tokio::test]
async fn leaving_one_namespace_keeps_the_other() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    connect(&mut ws, "/").await;
    connect(&mut ws, "/custom").await;
    // DISCONNECT from the client: no answer, the other namespace goes on.
    send_text(&mut ws, "41/custom,").await;
    assert_nothing_pending(&mut ws).await;
    assert_eq!(app.namespace("/custom").socket_count(), 0);
    assert_eq!(app.namespace("/").socket_count(), 1);
    // Packets for the namespace left are ignored.
    send_text(&mut ws, r#"42/custom,["echo","ignored"]"#).await;
    assert_nothing_pending(&mut ws).await;
    // It can be joined again (without the trailing comma this time).
    send_text(&mut ws, "40/custom").await;
    connect_sid(&recv_text(&mut ws).await, "/custom");
    assert!(app.log().contains(&"disconnect /custom client namespace disconnect".to_owned()), "{:?}", app.log());
}

#[tokio::test]
async fn disconnect_from_main_namespace_keeps_the_engine_session() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    let first = connect(&mut ws, "/").await;
    send_text(&mut ws, "41").await;
    eventually("the socket left", || app.namespace("/").socket_count() == 0).await;
    assert_eq!(app.engine.session_count(), 1);
    let second = connect(&mut ws, "/").await;
    assert_ne!(first, second, "a new socket");
    assert_nothing_pending(&mut ws).await;
}

#[tokio::test]
async fn events_for_a_namespace_not_connected_are_ignored() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    connect(&mut ws, "/").await;
    send_text(&mut ws, r#"42/custom,["echo","x"]"#).await;
    send_text(&mut ws, r#"42/custom,3["ack","x"]"#).await;
    send_text(&mut ws, "41/custom,").await;
    assert_nothing_pending(&mut ws).await;
    assert_eq!(app.engine.session_count(), 1);
}

#[tokio::test]
async fn server_side_disconnect_sends_disconnect_and_keeps_the_session() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    connect(&mut ws, "/").await;
    connect(&mut ws, "/custom").await;
    send_text(&mut ws, r#"42/custom,["disconnect-me"]"#).await;
    assert_eq!(recv_text(&mut ws).await, "41/custom,");
    eventually("the /custom socket left", || app.namespace("/custom").socket_count() == 0).await;
    assert_nothing_pending(&mut ws).await;
    send_text(&mut ws, r#"42["disconnect-me"]"#).await;
    assert_eq!(recv_text(&mut ws).await, "41");
    eventually("the / socket left, for a server namespace disconnect", || {
        app.namespace("/").socket_count() == 0
            && app.log().contains(&"disconnect / server namespace disconnect".to_owned())
    })
    .await;
    assert_eq!(app.engine.session_count(), 1);
}

#[tokio::test]
async fn closing_the_engine_session_disconnects_every_namespace() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    connect(&mut ws, "/").await;
    connect(&mut ws, "/custom").await;
    send_text(&mut ws, "1").await;
    until_closed(&mut ws).await;
    eventually("both sockets are disconnected for a transport close", || {
        let log = app.log();
        app.is_empty()
            && log.contains(&"disconnect / transport close".to_owned())
            && log.contains(&"disconnect /custom transport close".to_owned())
    })
    .await;
}

// --- connect timeout -----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn connect_timeout_closes_a_websocket_session_that_never_connects() {
    // The fixture's settings: pings every 300 ms (answered here), connect timeout 1 s.
    let (_server, eio) = fixture().await;
    let t0 = Instant::now();
    let (mut ws, sid) = eio.ws_open().await;
    let mut pings = 0;
    while let Some(m) = recv(&mut ws).await {
        match raw::expect_text(Some(m)).as_str() {
            "2" => {
                pings += 1;
                send_text(&mut ws, "3").await;
            }
            // The server may say goodbye with a close packet.
            "1" => {
                assert!(until_closed(&mut ws).await.messages.is_empty());
                break;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(1000), "not before the connect timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1300), "at the connect timeout: {elapsed:?}");
    assert!(pings >= 3, "the heartbeat went on meanwhile ({pings} pings)");
    assert!(eio.is_unknown(&sid).await);
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_closes_a_polling_session_that_never_connects() {
    let (app, _server, eio) = app().await;
    let t0 = Instant::now();
    let sid = eio.open().await;
    let res = eio.get(&sid).await;
    // The held GET ends with the close: a close packet.
    assert_eq!((res.status, res.text()), (200, "1"));
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(1000) && elapsed < Duration::from_millis(1300), "{elapsed:?}");
    eventually("the session is gone", || app.engine.session_count() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_connected_session_outlives_the_connect_timeout() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    connect(&mut ws, "/").await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_nothing_pending(&mut ws).await;
    // Leaving every namespace does not restart the connect timeout.
    send_text(&mut ws, "41").await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(app.engine.session_count(), 1);
}

// --- invalid packets -------------------------------------------------------------

/// Sends `frames` (text, or binary when prefixed with `bin:`) on a connected
/// session and asserts it is closed, while a bystander session goes on.
async fn assert_closes_the_session(frames: &[&str]) {
    let (app, _server, eio) = app().await;
    let mut bystander = connected(&eio).await;
    let mut ws = connected(&eio).await;
    for frame in frames {
        match frame.strip_prefix("bin:") {
            Some(bytes) => send_binary(&mut ws, bytes.as_bytes()).await,
            None => send_text(&mut ws, frame).await,
        }
    }
    let closed = until_closed(&mut ws).await;
    assert!(closed.messages.is_empty(), "after {frames:?}: {closed:?}");
    eventually("the session and its socket are gone, for a parse error", || {
        app.engine.session_count() == 1
            && app.namespace("/").socket_count() == 1
            && app.log().contains(&"disconnect / parse error".to_owned())
    })
    .await;
    assert_nothing_pending(&mut bystander).await;
}

#[tokio::test]
async fn unknown_packet_type_closes_the_session() {
    assert_closes_the_session(&["4abc"]).await;
    assert_closes_the_session(&["47"]).await;
    assert_closes_the_session(&["4"]).await;
}

#[tokio::test]
async fn unknown_packet_type_before_any_connect_closes_the_session() {
    let (app, _server, eio) = app().await;
    let (mut ws, _) = eio.ws_open().await;
    send_text(&mut ws, "4abc").await;
    assert!(until_closed(&mut ws).await.messages.is_empty());
    eventually("the session is gone", || app.engine.session_count() == 0).await;
}

#[tokio::test]
async fn invalid_json_closes_the_session() {
    assert_closes_the_session(&[r#"42["message""#]).await;
    assert_closes_the_session(&[r#"42abc["message-with-ack",1]"#]).await;
    assert_closes_the_session(&[r#"40{"token":}"#]).await;
}

#[tokio::test]
async fn payload_of_the_wrong_shape_closes_the_session() {
    assert_closes_the_session(&["42{}"]).await;
    assert_closes_the_session(&[r#"42"message""#]).await;
    assert_closes_the_session(&["42[]"]).await;
    assert_closes_the_session(&["42[{}]"]).await;
    assert_closes_the_session(&[r#"40"not an object""#]).await;
    assert_closes_the_session(&["431{}"]).await;
}

#[tokio::test]
async fn reserved_event_names_close_the_session() {
    for name in ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"] {
        assert_closes_the_session(&[&format!(r#"42["{name}"]"#)]).await;
    }
}

#[tokio::test]
async fn forged_placeholder_index_closes_the_session() {
    assert_closes_the_session(&[r#"451-["message",{"_placeholder":true,"num":5}]"#, "bin:x"]).await;
    assert_closes_the_session(&[r#"451-["message",{"_placeholder":true,"num":-1}]"#, "bin:x"]).await;
}

#[tokio::test]
async fn too_many_attachments_close_the_session() {
    let mut header = r#"4511-["message""#.to_owned();
    for i in 0..11 {
        header.push_str(&format!(r#",{{"_placeholder":true,"num":{i}}}"#));
    }
    header.push(']');
    assert_closes_the_session(&[&header]).await;
    assert_closes_the_session(&[r#"4599999999999999999999-["message"]"#]).await;
}

#[tokio::test]
async fn binary_part_without_a_header_closes_the_session() {
    assert_closes_the_session(&["bin:\x01\x02\x03"]).await;
}

#[tokio::test]
async fn text_packet_while_attachments_are_pending_closes_the_session() {
    assert_closes_the_session(&[&format!(r#"452-["echo",{PH0},{PH1}]"#), "bin:a", r#"42["echo","x"]"#]).await;
}

#[tokio::test]
async fn invalid_packet_over_polling_closes_the_session() {
    let (app, _server, eio) = app().await;
    let sid = eio.open().await;
    eio.post_ok(&sid, b"40").await;
    connect_sid(&eio.get_ok(&sid).await, "/");
    let _ = eio.post(&sid, br#"42["disconnect"]"#).await;
    assert!(eio.is_unknown(&sid).await);
    eventually("everything is gone", || app.is_empty()).await;
}

// --- events and acks ----------------------------------------------------------------

#[tokio::test]
async fn fixture_echoes_events_and_acks_with_json_kept_as_sent() {
    let (_server, eio) = fixture().await;
    let (mut ws, _) = eio.ws_open().await;
    send_text(&mut ws, "40").await;
    recv_text(&mut ws).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["auth",{}]"#);
    send_text(&mut ws, r#"42["message",1,"2",{"3":[true]}]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["message-back",1,"2",{"3":[true]}]"#);
    send_text(&mut ws, r#"42456["message-with-ack",1,"2",{"3":[false]}]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"43456[1,"2",{"3":[false]}]"#);
}

#[tokio::test]
async fn client_event_with_ack_is_acknowledged_with_its_id() {
    let (_app, _server, eio) = app().await;
    let mut ws = connected(&eio).await;
    send_text(&mut ws, r#"420["ack"]"#).await;
    assert_eq!(recv_text(&mut ws).await, "430[]");
    send_text(&mut ws, r#"4218446744073709551615["ack",{"k":"v"},[1,2]]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"4318446744073709551615[{"k":"v"},[1,2]]"#);
}

/// Reads the server's `ack-me` emit (`42<id>[...]` or `45N-<id>[...]`) and
/// returns its ack id and the rest.
fn ack_request(frame: &str, binary: Option<usize>) -> (u64, String) {
    let rest = match binary {
        None => frame.strip_prefix("42").expect("an EVENT"),
        Some(n) => frame.strip_prefix(&format!("45{n}-")).expect("a BINARY_EVENT"),
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(!digits.is_empty(), "the server asks for an ack: {frame}");
    (digits.parse().unwrap(), rest[digits.len()..].to_owned())
}

#[tokio::test]
async fn server_emit_with_ack_gets_the_client_answer() {
    let (_app, _server, eio) = app().await;
    let mut ws = connected(&eio).await;
    send_text(&mut ws, r#"42["request-ack","question",2]"#).await;
    let (id, rest) = ack_request(&recv_text(&mut ws).await, None);
    assert_eq!(rest, r#"["ack-me","question",2]"#);
    send_text(&mut ws, &format!(r#"43{id}["answer",{{"n":42}}]"#)).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","answer",{"n":42}]"#);
    // A second one gets another id.
    send_text(&mut ws, r#"42["request-ack"]"#).await;
    let (id2, _) = ack_request(&recv_text(&mut ws).await, None);
    assert_ne!(id, id2);
    // An answer to an unknown id is ignored; the real one still counts.
    send_text(&mut ws, &format!(r#"43{}["stray"]"#, id2 + 1000)).await;
    send_text(&mut ws, &format!(r#"43{id2}["late but fine"]"#)).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","late but fine"]"#);
}

#[tokio::test(start_paused = true)]
async fn server_emit_with_ack_times_out_without_an_answer() {
    let (_app, _server, eio) = app().await;
    let mut ws = connected(&eio).await;
    let t0 = Instant::now();
    send_text(&mut ws, r#"42["request-ack"]"#).await;
    let (id, _) = ack_request(&recv_text(&mut ws).await, None);
    assert_eq!(recv_text(&mut ws).await, r#"42["ack-result","acknowledgement timed out"]"#);
    assert!(t0.elapsed() >= Duration::from_millis(500));
    // A late answer is ignored.
    send_text(&mut ws, &format!(r#"43{id}["too late"]"#)).await;
    assert_nothing_pending(&mut ws).await;
}

#[tokio::test]
async fn binary_event_with_attachments_over_websocket() {
    let (_app, _server, eio) = app().await;
    let mut ws = connected(&eio).await;
    send_text(&mut ws, &format!(r#"452-["echo",{PH0},{{"nested":[{PH1}]}}]"#)).await;
    send_binary(&mut ws, &[1, 2, 3]).await;
    send_binary(&mut ws, &[4, 5, 6]).await;
    assert_eq!(recv_text(&mut ws).await, format!(r#"452-["echo-back",{PH0},{{"nested":[{PH1}]}}]"#));
    assert_eq!(recv_binary(&mut ws).await, vec![1, 2, 3]);
    assert_eq!(recv_binary(&mut ws).await, vec![4, 5, 6]);
    // On another namespace, with an empty attachment.
    connect(&mut ws, "/custom").await;
    send_text(&mut ws, &format!(r#"451-/custom,["echo",{PH0}]"#)).await;
    send_binary(&mut ws, &[]).await;
    assert_eq!(recv_text(&mut ws).await, format!(r#"451-/custom,["echo-back",{PH0}]"#));
    assert_eq!(recv_binary(&mut ws).await, Vec::<u8>::new());
}

#[tokio::test]
async fn binary_event_with_attachments_over_polling() {
    let (_app, _server, eio) = app().await;
    let sid = eio.open().await;
    eio.post_ok(&sid, b"40").await;
    connect_sid(&eio.get_ok(&sid).await, "/");
    // Header and parts in one payload, the parts as `b` + base64.
    eio.post_ok(&sid, format!("452-[\"echo\",{PH0},{PH1}]\x1ebAQID\x1ebBAUG").as_bytes()).await;
    let body = eio.get_ok(&sid).await;
    assert_eq!(packets(&body), vec![&format!(r#"452-["echo-back",{PH0},{PH1}]"#) as &str, "bAQID", "bBAUG"]);
    // Header and parts in separate POSTs.
    eio.post_ok(&sid, format!("451-[\"echo\",{PH0}]").as_bytes()).await;
    eio.post_ok(&sid, b"b/w==").await;
    assert_eq!(eio.get_ok(&sid).await, format!("451-[\"echo-back\",{PH0}]\x1eb/w=="));
}

#[tokio::test]
async fn binary_ack_both_ways() {
    let (_app, _server, eio) = app().await;
    let mut ws = connected(&eio).await;
    // Client → server event with ack; the ack carries binary: BINARY_ACK.
    send_text(&mut ws, &format!(r#"452-789["ack",{PH0},{PH1}]"#)).await;
    send_binary(&mut ws, &[1, 2, 3]).await;
    send_binary(&mut ws, &[4, 5, 6]).await;
    assert_eq!(recv_text(&mut ws).await, format!("462-789[{PH0},{PH1}]"));
    assert_eq!(recv_binary(&mut ws).await, vec![1, 2, 3]);
    assert_eq!(recv_binary(&mut ws).await, vec![4, 5, 6]);
    // Server → client binary event with ack, answered with a BINARY_ACK.
    send_text(&mut ws, &format!(r#"451-["request-ack",{PH0}]"#)).await;
    send_binary(&mut ws, &[9, 9]).await;
    let (id, rest) = ack_request(&recv_text(&mut ws).await, Some(1));
    assert_eq!(rest, format!(r#"["ack-me",{PH0}]"#));
    assert_eq!(recv_binary(&mut ws).await, vec![9, 9]);
    send_text(&mut ws, &format!("461-{id}[\"reply\",{PH0}]")).await;
    send_binary(&mut ws, &[7, 7, 7]).await;
    assert_eq!(recv_text(&mut ws).await, format!(r#"451-["ack-result","reply",{PH0}]"#));
    assert_eq!(recv_binary(&mut ws).await, vec![7, 7, 7]);
}

#[tokio::test]
async fn events_over_polling_upgraded_to_websocket_keep_their_order() {
    let (_app, _server, eio) = app().await;
    let sid = eio.open().await;
    eio.post_ok(&sid, b"40").await;
    connect_sid(&eio.get_ok(&sid).await, "/");
    eio.post_ok(&sid, br#"42["echo",1]"#).await;
    let mut ws = eio.upgrade(&sid).await;
    send_text(&mut ws, r#"42["echo",2]"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"42["echo-back",1]"#);
    assert_eq!(recv_text(&mut ws).await, r#"42["echo-back",2]"#);
}
