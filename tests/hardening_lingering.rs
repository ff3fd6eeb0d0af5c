//! The lingering close: a client that writes its whole request before it
//! reads (Node's `http`, a raw socket) and sends more than the server takes —
//! a body over the REST limit or over `maxPayload`, a head over 16 KiB —
//! reads the server's 413 or 431 in full instead of failing with
//! `EPIPE`/`ECONNRESET` mid-write; a client that sends on forever is cut off;
//! and the server serves everyone else throughout.
//!
//! On loopback the kernel grows a send buffer to several MiB and takes a
//! 3 MB body in one write before the server has read a byte, which hides the
//! problem; the raw clients here keep a send buffer the size of what a real
//! network has in flight, so they are still writing when the answer comes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/raw.rs"]
mod raw;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_node_ok, node};
use eventfeed::app::App;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::http::conn::LINGER_BYTES;
use eventfeed::sio::SioConfig;
use feed::{A, B, FeedClient, FeedServer, assert_feed_error, assert_serving};
use raw::{Eio, HttpConn, Response, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The REST body limit of these tests (the default).
const MAX_BODY: usize = 65536;
/// The Engine.IO `maxPayload` of these tests: far below the bodies sent.
const MAX_PAYLOAD: usize = 10_000;
/// The body every client sends: 3 MB.
const BIG: usize = 3 * 1024 * 1024;

/// The feed server, and a bystander of company_b connected throughout.
async fn start() -> (FeedServer, FeedClient) {
    let config = FeedConfig { max_body: MAX_BODY, ..FeedConfig::default() };
    let app = App::new(config, Tokens::demo(), feed::quiet_engine(MAX_PAYLOAD), SioConfig::default());
    let server = FeedServer::start(app).await;
    let bystander = FeedClient::connect(server.addr(), B).await;
    (server, bystander)
}

/// The end of every test: the server serves, and the bystander got every
/// new event of its tenant.
async fn finish(server: &FeedServer, mut bystander: FeedClient) {
    assert_serving(server.addr()).await;
    bystander.expect_all_of(server.addr(), B, 3).await;
}

/// A connection whose send buffer holds what a real network has in flight
/// (256 KiB), not the several MiB loopback allows.
async fn writer(addr: SocketAddr) -> HttpConn {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(256 * 1024).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    HttpConn::from_stream(addr, stream)
}

/// Writes all of `request`, then reads the answer: the write must not fail
/// (no `EPIPE`/`ECONNRESET`), the answer must come, say it is the last on
/// its connection, and then the connection must end.
async fn write_all_then_read(addr: SocketAddr, request: &[u8]) -> Response {
    let mut conn = writer(addr).await;
    let res = tokio::time::timeout(WAIT, async {
        conn.send_raw(request).await.expect("the whole request went out");
        conn.read_response().await.expect("the answer")
    })
    .await
    .expect("answered in time");
    assert_eq!(res.header("connection"), Some("close"), "{res:?}");
    assert!(conn.is_closed_by_server().await, "then the server closes the connection");
    res
}

/// A request head with `headers` (and `Host`), then `body`.
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `body` in chunks of 64 KiB, with the last chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1024);
    for chunk in body.chunks(64 * 1024) {
        out.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The headers of a write of company_a's admin.
const WRITE: [(&str, &str); 3] =
    [("X-TENANT-ID", "company_a"), ("X-User-Token", "token_admin_a"), ("Content-Type", "application/json")];

#[tokio::test]
async fn a_rest_body_over_the_limit_written_whole_before_reading_gets_its_413() {
    let (server, bystander) = start().await;
    let addr = server.addr();
    let body = vec![b'x'; BIG];

    let length = BIG.to_string();
    let with_length = [WRITE[0], WRITE[1], WRITE[2], ("Content-Length", &length)];
    let res = write_all_then_read(addr, &request(addr, "POST", "/api/events", &with_length, &body)).await;
    assert_feed_error(&res, 413, "payload_too_large");

    let chunked_headers = [WRITE[0], WRITE[1], WRITE[2], ("Transfer-Encoding", "chunked")];
    let res = write_all_then_read(addr, &request(addr, "POST", "/api/events", &chunked_headers, &chunked(&body))).await;
    assert_feed_error(&res, 413, "payload_too_large");

    // Refused before its body is read at all (no credentials): the same.
    let anonymous = [("Content-Type", "application/json"), ("Content-Length", &length)];
    let res = write_all_then_read(addr, &request(addr, "POST", "/api/events", &anonymous, &body)).await;
    assert_feed_error(&res, 401, "unauthorized");

    finish(&server, bystander).await;
}

#[tokio::test]
async fn node_http_posting_3_mb_reads_the_413() {
    let (server, bystander) = start().await;
    let out = node("lingering.mjs", &[&server.server.url()]).await;
    assert_node_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(" passed, 0 failed"));
    finish(&server, bystander).await;
}

#[tokio::test]
async fn a_head_over_16_kib_followed_by_a_body_gets_its_431() {
    let (server, bystander) = start().await;
    let addr = server.addr();
    let filler = "h".repeat(1000);
    let names: Vec<String> = (0..20).map(|i| format!("X-Filler-{i}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), filler.as_str())).collect();
    let length = BIG.to_string();
    headers.extend([WRITE[0], WRITE[1], WRITE[2], ("Content-Length", &length)]);
    let res = write_all_then_read(addr, &request(addr, "POST", "/api/events", &headers, &vec![b'x'; BIG])).await;
    assert_eq!(res.status, 431, "{res:?}");
    finish(&server, bystander).await;
}

#[tokio::test]
async fn a_polling_body_over_max_payload_written_whole_before_reading_gets_its_413() {
    let (server, bystander) = start().await;
    let addr = server.addr();
    let eio = Eio::new(addr, "/socket.io/");
    let body = vec![b'p'; BIG];
    let length = BIG.to_string();

    let sid = eio.open().await;
    let headers = [("Content-Type", "text/plain;charset=UTF-8"), ("Content-Length", &length)];
    let res = write_all_then_read(addr, &request(addr, "POST", &eio.polling(&sid), &headers, &body)).await;
    assert_eq!(res.status, 413, "{res:?}");
    assert!(eio.is_unknown(&sid).await, "the session is closed");

    let sid = eio.open().await;
    let headers = [("Content-Type", "text/plain;charset=UTF-8"), ("Transfer-Encoding", "chunked")];
    let res = write_all_then_read(addr, &request(addr, "POST", &eio.polling(&sid), &headers, &chunked(&body))).await;
    assert_eq!(res.status, 413, "{res:?}");
    assert!(eio.is_unknown(&sid).await, "the session is closed");

    finish(&server, bystander).await;
}

#[tokio::test]
async fn a_client_that_sends_on_forever_is_cut_off() {
    let (server, bystander) = start().await;
    let addr = server.addr();
    // Declares 1 GiB and keeps writing; reads the answer meanwhile.
    let stream = writer(addr).await.into_inner();
    let (mut from_server, mut to_server) = stream.into_split();
    let head =
        request(addr, "POST", "/api/events", &[WRITE[0], WRITE[1], WRITE[2], ("Content-Length", "1073741824")], b"");
    to_server.write_all(&head).await.unwrap();
    let send_forever = async {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        loop {
            if let Err(e) = to_server.write_all(&chunk).await {
                return (sent, e);
            }
            sent += chunk.len();
        }
    };
    let read_all = async {
        let mut answer = Vec::new();
        let end = from_server.read_to_end(&mut answer).await;
        (answer, end)
    };
    // A guard against hangs, not a timing assertion: the bounds are 4 MiB
    // and 5 s.
    let ((sent, failed), (answer, _)) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(send_forever, read_all) })
            .await
            .expect("the server cut the connection off");
    assert!(
        matches!(failed.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset),
        "the writes end with a reset: {failed}"
    );
    assert!(sent < 1 << 30, "cut off long before the declared length: {sent}");
    assert!(sent >= LINGER_BYTES / 2, "after lingering a while: {sent}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "the answer came first: {answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    finish(&server, bystander).await;
}

#[tokio::test]
async fn the_server_serves_others_while_clients_linger() {
    let (server, bystander) = start().await;
    let addr = server.addr();
    let body = vec![b'x'; BIG];
    let length = BIG.to_string();
    let with_length = [WRITE[0], WRITE[1], WRITE[2], ("Content-Length", &length)];
    let big = request(addr, "POST", "/api/events", &with_length, &body);
    let uploads = async {
        let all = (0..4).map(|_| write_all_then_read(addr, &big));
        for res in futures_util::future::join_all(all).await {
            assert_feed_error(&res, 413, "payload_too_large");
        }
    };
    let others = async {
        for i in 0..20 {
            assert_eq!(feed::post_event(addr, A, &format!("meanwhile {i}")).await.status, 201);
            assert_serving(addr).await;
        }
    };
    tokio::join!(uploads, others);
    finish(&server, bystander).await;
}

#[tokio::test]
async fn only_answers_that_leave_a_body_unread_end_the_connection() {
    let (server, bystander) = start().await;
    let addr = server.addr();
    let eio = Eio::new(addr, "/socket.io/");
    let mut conn = HttpConn::connect(addr).await;
    let mut keeps = async |method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]| {
        let res = conn.request(method, target, headers, body).await.unwrap();
        assert_eq!(res.header("connection"), None, "{method} {target}: {res:?}");
        res
    };
    // Bodies read to their end, whatever the answer: the connection stays.
    assert_eq!(keeps("POST", "/api/events", &WRITE, br#"{"message":"kept"}"#).await.status, 201);
    assert_feed_error(&keeps("POST", "/api/events", &WRITE, b"not json").await, 400, "bad_request");
    let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(2049));
    assert_feed_error(&keeps("POST", "/api/events", &WRITE, long.as_bytes()).await, 413, "payload_too_large");
    // No body to leave unread.
    assert_feed_error(&keeps("POST", "/api/events", &[WRITE[2]], b"").await, 401, "unauthorized");
    assert_eq!(keeps("GET", "/healthz", &[], b"").await.status, 200);
    let sid = eio.open().await;
    let connect = feed::connect_packet(A);
    let ok =
        keeps("POST", &eio.polling(&sid), &[("Content-Type", "text/plain;charset=UTF-8")], connect.as_bytes()).await;
    assert_eq!((ok.status, ok.text()), (200, "ok"));

    // Refused before its (small) body was read: the last answer on the connection.
    let res = conn.request("POST", "/api/events", &[WRITE[2]], br#"{"message":"anonymous"}"#).await.unwrap();
    assert_feed_error(&res, 401, "unauthorized");
    assert_eq!(res.header("connection"), Some("close"));
    assert!(conn.is_closed_by_server().await);
    // The same for the other routes, and for Engine.IO.
    for (target, status) in [("/healthz", 405), ("/nowhere", 404), (&*eio.polling("unknown"), 400)] {
        let mut conn = HttpConn::connect(addr).await;
        let res = conn.request("POST", target, &[], b"a body").await.unwrap();
        assert_eq!((res.status, res.header("connection")), (status, Some("close")), "{target}: {res:?}");
        assert!(conn.is_closed_by_server().await, "{target}");
    }
    finish(&server, bystander).await;
}
