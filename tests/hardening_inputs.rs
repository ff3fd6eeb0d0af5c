//! The bad-input catalogue: one or more hostile inputs per class of the
//! published engine.io / socket.io-parser / ws advisories, sent to the feed
//! server as raw bytes.
//!
//! Every test runs one server with a bystander: a well-behaved Socket.IO
//! client of another tenant (company_b) connected to `/events` throughout.
//! Each hostile input must get its error answer or close, only its own
//! session may go, the server must keep serving, and at the end the
//! bystander must receive every new event of its tenant, in seq order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/frames.rs"]
mod frames;
#[path = "common/raw.rs"]
mod raw;

use eventfeed::app::App;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::SioConfig;
use feed::{A, B, FeedClient, FeedServer, NSP, assert_feed_error, assert_serving, connect_packet, list_events};
use frames::{BINARY, CLOSE, CONT, PING, RawWs, TEXT, client_frame, frame};
use raw::{Eio, HttpConn, WAIT, assert_engine_error, send_binary, send_text, until_closed};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Events the bystander must receive at the end of each test.
const CHECK_EVENTS: usize = 5;

fn app(max_payload: usize, max_body: usize) -> App {
    let config = FeedConfig { max_body, ..FeedConfig::default() };
    App::new(config, Tokens::demo(), feed::quiet_engine(max_payload), SioConfig::default())
}

/// Starts the server and connects the bystander.
async fn start(max_payload: usize, max_body: usize) -> (FeedServer, FeedClient) {
    let server = FeedServer::start(app(max_payload, max_body)).await;
    let bystander = FeedClient::connect(server.addr(), B).await;
    assert_eq!(server.sessions(), 1);
    (server, bystander)
}

/// The end of every test: the server serves, only the bystander's session is
/// left, and the bystander gets every new event of its tenant in order.
async fn finish(server: &FeedServer, mut bystander: FeedClient) {
    assert_serving(server.addr()).await;
    server.sessions_become(1, "the test").await;
    bystander.expect_all_of(server.addr(), B, CHECK_EVENTS).await;
    assert_eq!(server.app.namespace.socket_count(), 1, "only the bystander's socket");
}

/// A raw websocket session connected to `/events` as company_a.
async fn raw_feed_socket(server: &FeedServer) -> RawWs {
    let mut ws = RawWs::open(server.addr(), "/socket.io/?EIO=4&transport=websocket", &[]).await.expect("upgrade");
    assert!(ws.read_text().await.starts_with("0{"), "open packet first");
    ws.send_text(&connect_packet(A)).await;
    assert!(ws.read_text().await.starts_with("40/events,{"), "CONNECT answer");
    assert!(ws.read_text().await.starts_with(r#"42/events,["snapshot","#), "snapshot");
    ws
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// `data` as one-byte frames: a first frame of `opcode`, then continuation
/// frames, the last one final if `ends`.
fn fragments(opcode: u8, data: &[u8], ends: bool) -> Vec<u8> {
    let last = data.len() - 1;
    let mut out = Vec::with_capacity(data.len() * 7);
    for (i, b) in data.iter().enumerate() {
        out.extend(frame(ends && i == last, 0, if i == 0 { opcode } else { CONT }, true, &[*b]));
    }
    out
}

/// `data` as a message of one-byte frames.
fn one_byte_fragments(opcode: u8, data: &[u8]) -> Vec<u8> {
    fragments(opcode, data, true)
}

#[tokio::test]
async fn malformed_websocket_frames_fail_only_their_own_connection() {
    const MAX_PAYLOAD: usize = 4096;
    let (server, bystander) = start(MAX_PAYLOAD, 65536).await;

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a reserved data opcode (3)", client_frame(0x3, b"4x"), 1002),
        ("a reserved control opcode (0xB)", client_frame(0xb, b""), 1002),
        ("RSV1 without a negotiated extension", frame(true, 0b100, TEXT, true, b"4x"), 1002),
        ("RSV2 and RSV3", frame(true, 0b011, TEXT, true, b"4x"), 1002),
        ("an unmasked client frame", frame(true, 0, TEXT, false, b"4x"), 1002),
        ("a continuation frame with no message started", client_frame(CONT, b"4x"), 1002),
        (
            "a new data frame inside a fragmented message",
            [frame(false, 0, TEXT, true, b"4a"), client_frame(TEXT, b"4b")].concat(),
            1002,
        ),
        ("a fragmented ping", frame(false, 0, PING, true, b"x"), 1002),
        ("a ping over 125 bytes", client_frame(PING, &[b'p'; 126]), 1002),
        ("a close frame with a one-byte payload", client_frame(CLOSE, &[0x03]), 1002),
        ("a close frame with code 999", client_frame(CLOSE, &close_payload(999, b"")), 1002),
        ("a close frame with the reserved code 1005", client_frame(CLOSE, &close_payload(1005, b"")), 1002),
        ("a close frame with code 5000", client_frame(CLOSE, &close_payload(5000, b"")), 1002),
        ("a close reason that is not UTF-8", client_frame(CLOSE, &close_payload(1000, b"\xff\xfe")), 1007),
        ("a text frame that is not UTF-8", client_frame(TEXT, b"4\xff\xfe"), 1007),
        ("an overlong UTF-8 encoding", client_frame(TEXT, b"4\xc0\xaf"), 1007),
        ("a UTF-16 surrogate in UTF-8", client_frame(TEXT, b"4\xed\xa0\x80"), 1007),
        (
            "a text message that is not UTF-8 across its fragments",
            [frame(false, 0, TEXT, true, b"4\xe2\x82"), frame(true, 0, CONT, true, b"\x28")].concat(),
            1007,
        ),
        (
            "a frame announcing 2^63 - 1 bytes",
            vec![0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4],
            1009,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut ws = raw_feed_socket(&server).await;
        ws.send(&bytes).await.unwrap();
        let ending = ws.until_closed().await;
        assert_eq!(ending, frames::Ending { texts: vec![], close_code: Some(code) }, "{what}");
        server.sessions_become(1, what).await;
    }

    // A message of thousands of one-byte frames within maxPayload is one
    // message: a post_event whose ack comes back.
    let mut ws = raw_feed_socket(&server).await;
    let message = "f".repeat(2000);
    let packet = format!(r#"42{NSP},1["post_event",{{"message":"{message}"}}]"#);
    assert!(packet.len() < MAX_PAYLOAD);
    ws.send(&one_byte_fragments(TEXT, packet.as_bytes())).await.unwrap();
    let ack = loop {
        let text = ws.read_text().await;
        if text.starts_with("43/events,1") {
            break text;
        }
    };
    let (_, _, ack) = feed::parse_frame(&ack).expect("an ack");
    assert_eq!(ack[0]["event"]["message"].as_str(), Some(message.as_str()), "{ack}");
    // Pings between the fragments are allowed and answered.
    let data = br#"42/events,2["replay",{"limit":1}]"#;
    let mut bytes = fragments(TEXT, &data[..10], false);
    bytes.extend(client_frame(PING, b"mid"));
    bytes.extend(one_byte_fragments(CONT, &data[10..]));
    bytes.extend(client_frame(PING, b"after"));
    ws.send(&bytes).await.unwrap();
    let (mut pongs, mut answered) = (Vec::new(), false);
    while !answered || pongs.len() < 2 {
        let f = ws.read_frame().await.expect("frames");
        match f.opcode {
            0xa => pongs.push(f.payload),
            TEXT => answered |= f.payload.starts_with(b"43/events,2"),
            _ => {}
        }
    }
    assert_eq!(pongs, [b"mid".to_vec(), b"after".to_vec()]);
    // Over maxPayload in one-byte frames: 1009 once the bound is passed.
    ws.send(&one_byte_fragments(TEXT, &[b'4'; MAX_PAYLOAD + 1000])).await.unwrap();
    let ending = ws.until_closed().await;
    assert_eq!(ending.close_code, Some(1009), "{ending:?}");
    server.sessions_become(1, "a fragmented message over maxPayload").await;
    // The same in binary frames.
    let mut ws = raw_feed_socket(&server).await;
    ws.send(&one_byte_fragments(BINARY, &[7; MAX_PAYLOAD + 1])).await.unwrap();
    assert_eq!(ws.until_closed().await.close_code, Some(1009));
    server.sessions_become(1, "a fragmented binary message over maxPayload").await;

    finish(&server, bystander).await;
}

#[tokio::test]
async fn abrupt_resets_mid_request_and_mid_frame_leave_the_server_serving() {
    let (server, bystander) = start(100_000, 65536).await;
    let addr = server.addr();
    let eio = Eio::new(addr, "/socket.io/");
    let [tenant, token] = feed::auth_headers(A);
    let auth = format!("{}: {}\r\n{}: {}\r\n", tenant.0, tenant.1, token.0, token.1);

    // Half a request head.
    let mut conn = HttpConn::connect(addr).await;
    conn.send_raw(format!("POST /api/events HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Ty").as_bytes()).await.unwrap();
    frames::reset(conn.into_inner());
    // A whole head and half the body it announces.
    let mut conn = HttpConn::connect(addr).await;
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    conn.send_raw(format!(r#"{head}{{"message":"half"#).as_bytes()).await.unwrap();
    frames::reset(conn.into_inner());
    // Half a chunked body.
    let mut conn = HttpConn::connect(addr).await;
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    conn.send_raw(format!("{head}40\r\n{{\"message\":\"").as_bytes()).await.unwrap();
    frames::reset(conn.into_inner());
    assert_serving(addr).await;
    let res = list_events(addr, A, "").await;
    assert_eq!(res.json()["events"], serde_json::json!([]), "a request cut short creates nothing");

    // A polling session: a POST cut mid-body closes the session.
    let sid = eio.open().await;
    let mut conn = HttpConn::connect(addr).await;
    conn.send_raw(
        format!(
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: 500\r\n\r\n40/events,{{",
            eio.polling(&sid)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    frames::reset(conn.into_inner());
    server.sessions_become(1, "a polling POST cut mid-body").await;
    // A pending GET whose client vanishes closes the session.
    let sid = eio.open().await;
    let conn = eio.start_get(&sid).await;
    frames::reset(conn.into_inner());
    server.sessions_become(1, "a pending GET reset").await;
    // Half an upgrade request.
    let mut conn = HttpConn::connect(addr).await;
    conn.send_raw(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nConnection: Upgr").await.unwrap();
    frames::reset(conn.into_inner());

    // Websocket sessions cut mid-frame: in the header, in the mask, in the payload.
    let big = client_frame(TEXT, format!(r#"42{NSP},["post_event",{{"message":"{}"}}]"#, "m".repeat(300)).as_bytes());
    for cut in [1, 3, 6, 50] {
        let mut ws = raw_feed_socket(&server).await;
        assert_eq!(server.sessions(), 2);
        ws.send(&big[..cut]).await.unwrap();
        ws.reset();
        server.sessions_become(1, &format!("a websocket reset {cut} bytes into a frame")).await;
    }
    // And in the middle of a fragmented message.
    let mut ws = raw_feed_socket(&server).await;
    ws.send(&frame(false, 0, TEXT, true, b"42/events,")).await.unwrap();
    ws.reset();
    server.sessions_become(1, "a websocket reset mid-message").await;
    // An orderly FIN mid-frame too.
    let mut ws = raw_feed_socket(&server).await;
    ws.send(&big[..20]).await.unwrap();
    drop(ws);
    server.sessions_become(1, "a websocket closed mid-frame").await;

    let res = list_events(addr, A, "").await;
    assert_eq!(res.json()["events"], serde_json::json!([]), "nothing half-sent was created");
    finish(&server, bystander).await;
}

#[tokio::test]
async fn hostile_http_requests_get_their_error_status() {
    const MAX_PAYLOAD: usize = 200_000;
    const MAX_BODY: usize = 150_000;
    let (server, bystander) = start(MAX_PAYLOAD, MAX_BODY).await;
    let addr = server.addr();
    let eio = Eio::new(addr, "/socket.io/");
    let [tenant, token] = feed::auth_headers(A);
    let json_headers = [tenant, token, ("Content-Type", "application/json")];
    let post = |body: Vec<u8>| async move { raw::request(addr, "POST", "/api/events", &json_headers, &body).await };

    // Invalid Engine.IO query parameters.
    for (target, code, message) in [
        ("/socket.io/?EIO=3&transport=polling", 5, "Unsupported protocol version"),
        ("/socket.io/?EIO=abc&transport=polling", 5, "Unsupported protocol version"),
        ("/socket.io/?EIO=%FF&transport=polling", 5, "Unsupported protocol version"),
        ("/socket.io/?transport=polling", 5, "Unsupported protocol version"),
        ("/socket.io/?EIO=4&transport=carrier-pigeon", 0, "Transport unknown"),
        ("/socket.io/?EIO=4&transport=", 0, "Transport unknown"),
        ("/socket.io/?EIO=4&transport=polling&sid=not-a-session", 1, "Session ID unknown"),
        ("/socket.io/?EIO=4&transport=polling&sid=%00%FF", 1, "Session ID unknown"),
    ] {
        assert_engine_error(&raw::request(addr, "GET", target, &[], b"").await, code, message);
    }
    // Invalid REST query parameters and ids.
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=1e3",
        "limit=%31",
        "limit=%FF",
        "limit=99999999999999999999999",
        "sinceId=not-a-uuid",
        "sinceId=%FF%FE",
        "sinceId=00000000-0000-0000-0000-00000000000g",
    ] {
        assert_feed_error(&list_events(addr, A, query).await, 400, "bad_request");
    }
    for id in ["not-a-uuid", "%FF", "1%2F2"] {
        let res = raw::request(addr, "GET", &format!("/api/events/{id}"), &[tenant, token], b"").await;
        assert_feed_error(&res, 400, "bad_request");
    }
    // Raw bytes outside ASCII in the request target: refused by the HTTP parser.
    let auth = "X-TENANT-ID: company_a\r\nX-User-Token: token_admin_a\r\n";
    for query in [&b"limit=\xc3\xa9"[..], b"limit=\xff", b"sinceId=\xff\xfe", b"x=\xc0\xaf"] {
        let mut conn = HttpConn::connect(addr).await;
        let mut head = b"GET /api/events?".to_vec();
        head.extend_from_slice(query);
        head.extend_from_slice(format!(" HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").as_bytes());
        conn.send_raw(&head).await.unwrap();
        let res = conn.read_response().await.unwrap();
        assert_eq!(res.status, 400, "{query:?}: {res:?}");
    }

    // Header floods: one header over 16 KiB, many headers over 16 KiB in all,
    // and more header lines than the parser takes.
    let huge = "x".repeat(17 * 1024);
    let res = raw::request(addr, "GET", "/healthz", &[("X-Flood", &huge)], b"").await;
    assert_eq!(res.status, 431);
    let filler = "y".repeat(100);
    let names: Vec<String> = (0..90).map(|i| format!("X-Flood-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), filler.as_str())).collect();
    let mut conn = HttpConn::connect(addr).await;
    let res = conn.request("GET", "/healthz", &many, b"").await.unwrap();
    assert_eq!(res.status, 200, "90 headers of 110 bytes fit");
    let names: Vec<String> = (0..200).map(|i| format!("X-Flood-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), filler.as_str())).collect();
    let res = raw::request(addr, "GET", "/healthz", &many, b"").await;
    assert_eq!(res.status, 431, "200 headers of 110 bytes: over 16 KiB");
    let tiny: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let res = raw::request(addr, "GET", "/healthz", &tiny, b"").await;
    assert_eq!(res.status, 431, "200 header lines");
    // A request line over 16 KiB.
    let res = raw::request(addr, "GET", &format!("/api/events?{}", "a".repeat(17 * 1024)), &[], b"").await;
    assert!([414, 431].contains(&res.status), "{res:?}");

    // REST bodies over the body limit: declared, and chunked without a length.
    let message = "m".repeat(MAX_BODY);
    let over = serde_json::json!({ "message": message }).to_string().into_bytes();
    assert_feed_error(&post(over.clone()).await, 413, "payload_too_large");
    let mut chunked = Vec::new();
    for chunk in over.chunks(8192) {
        chunked.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let res = raw::request(
        addr,
        "POST",
        "/api/events",
        &[tenant, token, ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
        &chunked,
    )
    .await;
    assert_feed_error(&res, 413, "payload_too_large");
    // A message over 2048 characters within the body limit.
    let long = serde_json::json!({ "message": "x".repeat(2049) }).to_string().into_bytes();
    assert_feed_error(&post(long).await, 413, "payload_too_large");

    // Invalid UTF-8 in a REST JSON body, and in the tenant header.
    assert_feed_error(&post(b"{\"message\":\"\xff\xfe\"}".to_vec()).await, 400, "bad_request");
    assert_feed_error(&post(b"{\"message\":\"\xed\xa0\x80\"}".to_vec()).await, 400, "bad_request");
    assert_feed_error(&post(br#"{"message":"\ud800"}"#.to_vec()).await, 400, "bad_request");
    let mut conn = HttpConn::connect(addr).await;
    conn.send_raw(
        format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nX-User-Token: token_admin_a\r\nX-TENANT-ID: company_")
            .as_bytes(),
    )
    .await
    .unwrap();
    conn.send_raw(b"\xe9\r\n\r\n").await.unwrap();
    assert_feed_error(&conn.read_response().await.unwrap(), 401, "unauthorized");

    // Deeply nested JSON in a REST body: an error, not a stack overflow.
    let deep = "[".repeat(100_000);
    assert_feed_error(&post(format!(r#"{{"message":{deep}"#).into_bytes()).await, 400, "bad_request");
    assert_feed_error(&post(deep.clone().into_bytes()).await, 400, "bad_request");
    let closed = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    assert_feed_error(&post(format!(r#"{{"message":{closed}}}"#).into_bytes()).await, 400, "bad_request");
    let objects = r#"{"a":"#.repeat(20_000);
    assert_feed_error(&post(format!(r#"{{"message":"x","extra":{objects}"#).into_bytes()).await, 400, "bad_request");

    // Polling: a body over maxPayload gets 413 and closes the session.
    let sid = eio.open().await;
    let res = eio.post(&sid, format!("4{}", "p".repeat(MAX_PAYLOAD)).as_bytes()).await;
    assert_eq!(res.status, 413);
    assert!(eio.is_unknown(&sid).await, "the session is closed");
    // Declared over maxPayload, body never sent: 413 at once.
    let sid = eio.open().await;
    let mut conn = HttpConn::connect(addr).await;
    let head =
        format!("POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n", eio.polling(&sid), 10 * MAX_PAYLOAD);
    conn.send_raw(head.as_bytes()).await.unwrap();
    let res = tokio::time::timeout(WAIT, conn.read_response()).await.unwrap().unwrap();
    assert_eq!(res.status, 413);
    assert!(eio.is_unknown(&sid).await, "the session is closed");
    // Invalid UTF-8 in a polling body closes the session.
    for body in [&b"4\xff\xfe"[..], b"40/events,{}\x1e4\xc0\xaf", b"\xed\xa0\x80"] {
        let sid = eio.open().await;
        let _ = eio.post(&sid, body).await;
        assert!(eio.is_unknown(&sid).await, "the session is closed after {body:?}");
    }
    // Deeply nested JSON in a polling body, to a connected socket.
    let sid = eio.open().await;
    eio.post_ok(&sid, connect_packet(A).as_bytes()).await;
    assert!(eio.get_ok(&sid).await.starts_with("40/events,{"), "connected over polling");
    let _ = eio.post(&sid, format!(r#"42{NSP},["post_event",{deep}"#).as_bytes()).await;
    assert!(eio.is_unknown(&sid).await, "the session is closed");

    server.sessions_become(1, "the hostile polling bodies").await;
    let res = list_events(addr, A, "").await;
    assert_eq!(res.json()["events"], serde_json::json!([]), "no hostile request created anything");
    finish(&server, bystander).await;
}

#[tokio::test]
async fn hostile_socketio_packets_close_only_their_own_session() {
    const MAX_PAYLOAD: usize = 200_000;
    let (server, bystander) = start(MAX_PAYLOAD, 65536).await;
    let addr = server.addr();
    const PH: &str = r#"{"_placeholder":true,"num":0}"#;

    // Each sequence is sent by a socket of company_a, which the server closes.
    let deep = format!(r#"42{NSP},["post_event",{}"#, "[".repeat(100_000));
    let deep_closed = format!(r#"42{NSP},["post_event",{}{}]"#, "[".repeat(50_000), "]".repeat(50_000));
    let eleven = format!(r#"4511-{NSP},["post_event"{}]"#, format!(",{PH}").repeat(11));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("a forged placeholder index", vec![r#"451-/events,["post_event",{"_placeholder":true,"num":5}]"#, "bin:x"]),
        ("a negative placeholder index", vec![r#"451-/events,["post_event",{"_placeholder":true,"num":-1}]"#, "bin:x"]),
        (
            "a placeholder with a string index",
            vec![r#"451-/events,["post_event",{"_placeholder":true,"num":"0"}]"#, "bin:x"],
        ),
        ("more attachments than allowed", vec![&eleven]),
        ("an attachment count that overflows", vec![r#"4599999999999999999999-/events,["post_event"]"#]),
        ("a binary part with no header", vec!["bin:\x01\x02"]),
        ("a numeric event name", vec![r#"42/events,[1]"#]),
        ("an object event name", vec![r#"42/events,[{"a":1},"x"]"#]),
        ("a null event name", vec![r#"42/events,[null]"#]),
        ("no event name", vec![r#"42/events,[]"#]),
        ("an event that is not an array", vec![r#"42/events,{"name":"post_event"}"#]),
        ("the reserved name disconnect", vec![r#"42/events,["disconnect"]"#]),
        ("the reserved name connect", vec![r#"42/events,["connect",{}]"#]),
        ("the reserved name connect_error", vec![r#"42/events,["connect_error"]"#]),
        ("the reserved name disconnecting", vec![r#"42/events,["disconnecting"]"#]),
        ("the reserved name newListener", vec![r#"42/events,["newListener","x"]"#]),
        ("the reserved name removeListener", vec![r#"42/events,["removeListener"]"#]),
        ("100k nested arrays", vec![&deep]),
        ("50k nested, closed arrays", vec![&deep_closed]),
        ("an unknown packet type", vec!["47/events,[]"]),
        ("an unknown Engine.IO packet type", vec!["9"]),
        ("a bad ack id", vec![r#"42/events,12a["post_event"]"#]),
    ];
    for (what, frames) in cases {
        let mut client = FeedClient::connect(addr, A).await;
        for f in &frames {
            match f.strip_prefix("bin:") {
                Some(bytes) => send_binary(&mut client.ws, bytes.as_bytes()).await,
                None => send_text(&mut client.ws, f).await,
            }
        }
        let closed = until_closed(&mut client.ws).await;
        assert!(closed.messages.is_empty(), "{what}: {closed:?}");
        assert!(closed.code.is_some(), "{what}: a close frame: {closed:?}");
        server.sessions_become(1, what).await;
    }

    // Well-formed packets with wrong arguments for a feed event: `bad_request`,
    // as the `error` event without an ack, and the socket stays.
    let mut client = FeedClient::connect(addr, A).await;
    for args in [
        r#"["post_event"]"#,
        r#"["post_event",5]"#,
        r#"["post_event",{"message":5}]"#,
        r#"["post_event",{"_placeholder":true,"num":0}]"#,
        r#"["replay","x"]"#,
        r#"["replay",{"limit":"5"}]"#,
    ] {
        client.send(&format!("42{NSP},{args}")).await;
        let (name, answer) = client.next_other_event().await;
        assert_eq!((name.as_str(), answer[0]["code"].as_str()), ("error", Some("bad_request")), "{args}: {answer:?}");
    }
    client.send(&format!(r#"42{NSP},7["post_event",{{"message":[]}}]"#)).await;
    assert_eq!(client.ack(7).await["error"]["code"], "bad_request");
    // Unknown events are ignored.
    client.send(&format!(r#"42{NSP},["no_such_event",1,2,3]"#)).await;
    client.send(&format!(r#"42{NSP},8["no_such_event"]"#)).await;
    // So is an acknowledgement the server never asked for (a late one, say),
    // text or binary: the socket stays.
    client.send(&format!(r#"43{NSP},99["late"]"#)).await;
    client.send(&format!(r#"43{NSP},0[]"#)).await;
    client.send(&format!(r#"461-{NSP},98[{{"_placeholder":true,"num":0}}]"#)).await;
    send_binary(&mut client.ws, b"late bytes").await;
    let ack = client.post(9, "after wrong arguments").await;
    assert_eq!(ack["event"]["seq"], 1, "nothing was created before: {ack}");
    drop(client);
    server.sessions_become(1, "a client that left").await;

    // A message over maxPayload: 1009.
    let mut client = FeedClient::connect(addr, A).await;
    let huge = format!(r#"42{NSP},["post_event",{{"message":"{}"}}]"#, "h".repeat(MAX_PAYLOAD));
    send_text(&mut client.ws, &huge).await;
    assert_eq!(until_closed(&mut client.ws).await.code, Some(CloseCode::Size));
    server.sessions_become(1, "a websocket message over maxPayload").await;

    // An unknown namespace: CONNECT_ERROR; the session and its other socket stay.
    let mut client = FeedClient::connect(addr, A).await;
    client.send(r#"40/nope,{"tenantId":"company_a","token":"token_admin_a"}"#).await;
    assert_eq!(client.next_frame().await.unwrap(), r#"44/nope,{"message":"Invalid namespace"}"#);
    client.send(r#"40/admin"#).await;
    assert_eq!(client.next_frame().await.unwrap(), r#"44/admin,{"message":"Invalid namespace"}"#);
    // The main namespace is not served either.
    client.send("40").await;
    assert_eq!(client.next_frame().await.unwrap(), r#"44{"message":"Invalid namespace"}"#);
    // Events to a namespace the session is not connected to are ignored.
    client.send(r#"42/nope,["post_event",{"message":"ignored"}]"#).await;
    let ack = client.post(1, "after unknown namespaces").await;
    assert_eq!(ack["event"]["message"], "after unknown namespaces", "{ack}");
    assert_eq!(ack["event"]["seq"], 2, "the ignored event created nothing");

    // A double CONNECT replaces the socket: one socket in the tenant's room,
    // a second snapshot, and each event once.
    client.pending.clear(); // the event_created of the post above
    client.send(&connect_packet(A)).await;
    assert!(client.next_frame().await.unwrap().starts_with("40/events,{"));
    let (name, args) = client.next_other_event().await;
    assert_eq!(name, "snapshot");
    assert_eq!(args[0].as_array().map(Vec::len), Some(2));
    assert_eq!(server.app.namespace.room_size("tenant:company_a"), 1);
    assert_eq!(server.app.namespace.socket_count(), 2, "the bystander's and this one");
    let res = feed::post_event(addr, A, "once").await;
    assert_eq!(res.status, 201);
    let got = client.events(1).await;
    assert_eq!(got[0]["message"], "once");
    let ack = client.post(2, "still here").await;
    assert_eq!(ack["event"]["seq"], 4, "{ack}");
    // A CONNECT with another tenant's credentials on the same session is
    // refused, and the socket it would replace is gone: no event of either
    // tenant reaches this session any more.
    client.send(r#"40/events,{"tenantId":"company_b","token":"token_admin_a"}"#).await;
    let refused = client.take(|f| f.starts_with("44").then(|| f.to_owned())).await;
    assert!(refused.starts_with(r#"44/events,{"message":"unauthorized""#), "{refused}");
    assert_eq!(server.app.namespace.room_size("tenant:company_a"), 0);
    assert_eq!(server.app.namespace.room_size("tenant:company_b"), 1, "the bystander only");
    drop(client);

    finish(&server, bystander).await;
}
