//! `GET /api/events/stream`: Server-Sent Events of a tenant's events — the
//! start (`snapshot`, `sinceId`, `Last-Event-ID`), resumption after a cut
//! with exactly the missed events, the `gap` record, a backlog far larger
//! than the queue bound read page by page, tenant isolation, the tenant
//! connection limit, a slow consumer dropped, keep-alive comments, a clean
//! end at shutdown, errors, metrics, and `curl -N`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/feed.rs"]
mod feed;
#[path = "common/raw.rs"]
mod raw;
#[path = "common/sse.rs"]
mod sse;

use std::time::Duration;

use eventfeed::app::App;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::SioConfig;
use feed::{A, B, FeedClient, FeedServer, Who, assert_feed_error, auth_headers, post_event, quiet_engine};
use raw::eventually;
use serde_json::Value;
use sse::SseClient;

const STREAM: &str = "/api/events/stream";

fn app_with(config: FeedConfig, engine: EngineConfig) -> App {
    App::new(config, Tokens::demo(), engine, SioConfig::default())
}

async fn server() -> FeedServer {
    FeedServer::start(app_with(FeedConfig::default(), quiet_engine(1_000_000))).await
}

async fn stream(server: &FeedServer, who: Who, query: &str, extra: &[(&str, &str)]) -> SseClient {
    let [t, k] = auth_headers(who);
    let mut headers = vec![t, k];
    headers.extend_from_slice(extra);
    SseClient::get(server.addr(), &format!("{STREAM}{query}"), &headers).await
}

/// Posts `n` events as `who`; returns them.
async fn post_n(server: &FeedServer, who: Who, n: usize, prefix: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..n {
        let res = post_event(server.addr(), who, &format!("{prefix}{i}")).await;
        assert_eq!(res.status, 201);
        out.push(res.json());
    }
    out
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_stream_starts_with_the_latest_or_after_an_id_then_goes_live() {
    let server = server().await;
    let posted = post_n(&server, A, 5, "before-").await;

    let mut latest = stream(&server, A, "?snapshot=2", &[]).await;
    assert_eq!(latest.status, 200);
    assert_eq!(latest.header("content-type"), Some("text/event-stream"));
    assert_eq!(latest.header("cache-control"), Some("no-store"));
    let first = latest.next().await.unwrap();
    assert_eq!(first.retry.as_deref(), Some("2000"), "the stream starts with retry: {first:?}");
    assert_eq!(seqs(&latest.events(2).await), vec![4, 5]);

    let mut after = stream(&server, A, &format!("?sinceId={}", posted[1]["id"].as_str().unwrap()), &[]).await;
    assert_eq!(seqs(&after.events(3).await), vec![3, 4, 5]);
    let mut plain = stream(&server, A, "", &[]).await;

    let live = post_n(&server, A, 3, "live-").await;
    for client in [&mut latest, &mut after, &mut plain] {
        let got = client.events(3).await;
        assert_eq!(got, live, "exactly the live events, in order, with the stored JSON");
    }
    // Last-Event-ID wins over sinceId.
    let mut resumed = stream(
        &server,
        A,
        &format!("?sinceId={}", posted[0]["id"].as_str().unwrap()),
        &[("Last-Event-ID", live[1]["id"].as_str().unwrap())],
    )
    .await;
    assert_eq!(seqs(&resumed.events(1).await), vec![8]);
}

#[tokio::test]
async fn resuming_with_last_event_id_after_a_cut_gets_exactly_the_missed_events() {
    let server = server().await;
    let mut client = stream(&server, A, "", &[]).await;
    post_n(&server, A, 3, "a").await;
    let seen = client.events(3).await;
    drop(client); // the cut
    let missed = post_n(&server, A, 4, "b").await;
    let last = seen.last().unwrap()["id"].as_str().unwrap().to_owned();
    let mut back = stream(&server, A, "", &[("Last-Event-ID", &last)]).await;
    let replayed = back.events(4).await;
    assert_eq!(replayed, missed, "the missed events, none twice");
    let live = post_n(&server, A, 1, "c").await;
    assert_eq!(back.events(1).await, live, "then live, with no duplicate and no gap");
}

#[tokio::test]
async fn an_unknown_or_evicted_id_gives_a_gap_record_then_the_oldest_retained() {
    let config = FeedConfig { buffer_size: 5, ..FeedConfig::default() };
    let server = FeedServer::start(app_with(config, quiet_engine(1_000_000))).await;
    let posted = post_n(&server, A, 8, "m").await;
    for since in [posted[0]["id"].as_str().unwrap().to_owned(), uuid::Uuid::new_v4().to_string()] {
        let mut client = stream(&server, A, "", &[("Last-Event-ID", &since)]).await;
        let mut records = Vec::new();
        while records.iter().filter(|r: &&sse::Record| r.is_event()).count() < 5 {
            records.push(client.next().await.unwrap());
        }
        let gap = records.iter().position(|r| r.event.as_deref() == Some("gap")).expect("a gap record");
        assert_eq!(records[gap].json(), serde_json::json!({"gap": true}));
        assert!(records[gap].id.is_none(), "a gap record does not move Last-Event-ID");
        let events: Vec<Value> = records[gap..].iter().filter(|r| r.is_event()).map(|r| r.json()).collect();
        assert_eq!(seqs(&events), vec![4, 5, 6, 7, 8], "from the oldest retained");
    }
}

#[tokio::test]
async fn a_backlog_far_larger_than_the_queue_bound_is_read_page_by_page() {
    // 3,000 retained events; a stream may fall behind the live ones by 64.
    let config = FeedConfig { buffer_size: 3000, ..FeedConfig::default() };
    let engine = EngineConfig { max_queue: 64, ..quiet_engine(1_000_000) };
    let server = FeedServer::start(app_with(config, engine)).await;
    let posted = post_n(&server, A, 2500, "m").await;
    let mut client = stream(&server, A, &format!("?sinceId={}", posted[0]["id"].as_str().unwrap()), &[]).await;
    let got = client.events(2499).await;
    assert_eq!(seqs(&got), (2..=2500).collect::<Vec<_>>());
    let live = post_n(&server, A, 2, "live").await;
    assert_eq!(client.events(2).await, live);
    assert_eq!(server.app.metrics.engine.slow_consumer_closes.get(), 0);
}

#[tokio::test]
async fn tenants_never_see_each_others_events() {
    let server = server().await;
    let mut a = stream(&server, A, "?snapshot=10", &[]).await;
    let mut b = stream(&server, B, "?snapshot=10", &[]).await;
    post_n(&server, A, 3, "secret-of-a-").await;
    let mine = post_n(&server, B, 1, "b-").await;
    assert_eq!(b.events(1).await, mine, "B's first event is its own");
    let got = a.events(3).await;
    assert!(got.iter().all(|e| e["tenant_id"] == "company_a"));
    // An id of another tenant is as unknown as any: a gap, never its events.
    let foreign = got[0]["id"].as_str().unwrap();
    let mut probe = stream(&server, B, "", &[("Last-Event-ID", foreign)]).await;
    let mut records = Vec::new();
    while records.iter().filter(|r: &&sse::Record| r.is_event()).count() < 1 {
        records.push(probe.next().await.unwrap());
    }
    assert!(records.iter().any(|r| r.event.as_deref() == Some("gap")));
    assert!(records.iter().filter(|r| r.is_event()).all(|r| r.json()["tenant_id"] == "company_b"));
}

#[tokio::test]
async fn streams_count_toward_the_tenants_connection_limit() {
    // A client that left is noticed at the stream's next write: the
    // keep-alive comment bounds when that is.
    let config = FeedConfig {
        max_tenant_connections: 2,
        stream_keep_alive: Duration::from_millis(100),
        ..FeedConfig::default()
    };
    let server = FeedServer::start(app_with(config, quiet_engine(1_000_000))).await;
    let first = stream(&server, A, "", &[]).await;
    let _socket = FeedClient::connect(server.addr(), A).await;
    let refused = stream(&server, A, "", &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["error"]["code"], "too_many_connections");
    // A socket is refused too while the stream and the socket are there.
    let (mut ws, _) = raw::Eio::new(server.addr(), "/socket.io/").ws_open().await;
    raw::send_text(&mut ws, &feed::connect_packet(A)).await;
    assert!(raw::recv_text(&mut ws).await.starts_with(r#"44/events,{"message":"too many connections""#));
    // Another tenant is not affected; when the stream goes, a new one fits.
    let other_tenant = stream(&server, B, "", &[]).await;
    assert_eq!(other_tenant.status, 200);
    drop(first);
    eventually("the first stream is gone", || server.app.feed.delivery().streams().open() == 1).await;
    assert_eq!(stream(&server, A, "", &[]).await.status, 200);
}

#[tokio::test]
async fn a_stream_that_falls_behind_is_dropped_as_a_slow_consumer() {
    let engine = EngineConfig { max_queue: 16, ..quiet_engine(1_000_000) };
    let server = FeedServer::start(app_with(FeedConfig::default(), engine)).await;
    // A client that never reads, with a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr()).await.unwrap();
    let [t, k] = auth_headers(A);
    let mut stalled = SseClient::get_on(tcp, server.addr(), STREAM, &[t, k]).await;
    assert_eq!(stalled.status, 200);
    let big = "x".repeat(2000);
    let mut posted = 0;
    while server.app.metrics.engine.slow_consumer_closes.get() == 0 {
        assert!(posted < 20_000, "the stream was never dropped");
        assert_eq!(post_event(server.addr(), A, &big).await.status, 201);
        posted += 1;
    }
    // Its connection is dropped, not ended: reading runs into the break.
    let mut ended_cleanly = false;
    loop {
        match stalled.try_next().await {
            Ok(Some(_)) => {}
            Ok(None) => {
                ended_cleanly = true;
                break;
            }
            Err(_) => break,
        }
    }
    assert!(!ended_cleanly, "a dropped stream does not end as if complete");
    eventually("the stream left the registry", || server.app.feed.delivery().streams().open() == 0).await;
    // Everyone else is served.
    let mut fine = stream(&server, A, "", &[]).await;
    let live = post_n(&server, A, 1, "after").await;
    assert_eq!(fine.events(1).await, live);
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    let config = FeedConfig { stream_keep_alive: Duration::from_millis(50), ..FeedConfig::default() };
    let server = FeedServer::start(app_with(config, quiet_engine(1_000_000))).await;
    let mut client = stream(&server, A, "", &[]).await;
    client.next().await.unwrap(); // retry
    let record = client.next().await.unwrap();
    assert_eq!(record.comments, vec!["keep-alive"], "{record:?}");
    assert!(record.id.is_none() && record.data.is_none());
}

#[tokio::test]
async fn shutdown_ends_every_stream_cleanly() {
    let server = FeedServer::start_as_binary(app_with(FeedConfig::default(), quiet_engine(1_000_000))).await;
    let mut a = stream(&server, A, "", &[]).await;
    let mut b = stream(&server, B, "", &[]).await;
    a.next().await.unwrap();
    b.next().await.unwrap();
    let addr = server.addr();
    assert!(server.server.stop().await, "the drain finished in time");
    for client in [&mut a, &mut b] {
        assert_eq!(client.try_next().await.unwrap(), None, "the response ended cleanly");
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn errors_and_metrics() {
    let server = server().await;
    let no_auth = SseClient::get(server.addr(), STREAM, &[]).await;
    assert_eq!(no_auth.status, 401);
    let bad = stream(&server, A, "", &[("Last-Event-ID", "not-an-id")]).await;
    assert_eq!((bad.status, bad.json()["error"]["code"].as_str()), (400, Some("bad_request")));
    let bad = stream(&server, A, "?snapshot=1001", &[]).await;
    assert_eq!(bad.status, 400);
    let [t, k] = auth_headers(A);
    let post = raw::request(server.addr(), "POST", STREAM, &[t, k], b"").await;
    assert_feed_error(&post, 405, "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET"));
    // `stream` is a route, not an event id.
    let id_route = raw::request(server.addr(), "GET", "/api/events/not-a-uuid", &[t, k], b"").await;
    assert_feed_error(&id_route, 400, "bad_request");

    let mut open = stream(&server, A, "", &[]).await;
    post_n(&server, A, 2, "m").await;
    open.events(2).await;
    let metrics = raw::request(server.addr(), "GET", "/metrics", &[], b"").await;
    let text = metrics.text();
    assert!(text.contains("eventfeed_streams 1"), "{text}");
    assert!(text.contains("eventfeed_stream_deliveries_total 2"), "{text}");
    // The runtime's tasks are counted: at least the open stream's.
    let tasks = text.lines().find_map(|l| l.strip_prefix("eventfeed_tasks ")).expect("eventfeed_tasks");
    assert!(tasks.trim().parse::<i64>().unwrap() >= 1, "{text}");
}

#[tokio::test]
async fn browsers_from_allowed_origins_only() {
    let config = FeedConfig {
        cors: eventfeed::http::Cors::new(["https://app.example.com".to_owned()]),
        ..FeedConfig::default()
    };
    let server = FeedServer::start(app_with(config, quiet_engine(1_000_000))).await;
    let ok = stream(&server, A, "", &[("Origin", "https://app.example.com")]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example.com"));
    let refused = stream(&server, A, "", &[("Origin", "https://evil.example.com")]).await;
    assert_eq!(refused.status, 403);
}

#[tokio::test]
async fn curl_can_follow_a_stream() {
    let server = server().await;
    post_n(&server, A, 2, "before").await;
    let url = format!("http://{}{STREAM}?snapshot=1", server.addr());
    let mut curl = tokio::process::Command::new("curl")
        .args(["-sN", "-H", "X-TENANT-ID: company_a", "-H", "X-User-Token: token_admin_a", &url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl is needed for this test (apt-get install curl)");
    let stdout = curl.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut data = Vec::new();
    let addr = server.addr();
    while data.len() < 2 {
        let line = tokio::time::timeout(raw::WAIT, lines.next_line()).await.unwrap().unwrap().expect("curl's output");
        if let Some(json) = line.strip_prefix("data: ") {
            data.push(serde_json::from_str::<Value>(json).unwrap());
            if data.len() == 1 {
                // Once curl shows the backlog, one live event.
                assert_eq!(post_event(addr, A, "live for curl").await.status, 201);
            }
        }
    }
    assert_eq!(seqs(&data), vec![2, 3]);
    assert_eq!(data[1]["message"], "live for curl");
}

#[tokio::test]
async fn live_records_to_an_idle_stream_are_written_at_once_and_arrive_whole() {
    let server = server().await;
    let mut client = stream(&server, A, "", &[]).await;
    client.next().await.unwrap(); // retry
    let direct = || server.app.metrics.stream_records_written_direct.get();
    // Each event posted once the last one arrived: hyper has written
    // everything and waits on the body, so the record goes out at once,
    // framed as hyper frames a chunk (the client reads the chunked body).
    for i in 0..5 {
        let posted = post_n(&server, A, 1, &format!("live-{i}-")).await;
        assert_eq!(client.events(1).await, posted);
    }
    assert_eq!(direct(), 5);
    // A keep-alive or a page through hyper in between changes nothing.
    let more = post_n(&server, A, 3, "more-").await;
    assert_eq!(client.events(3).await, more);
}

#[tokio::test]
async fn a_stream_over_http_1_0_gets_its_records_through_hyper_unframed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server().await;
    let [(tk, tv), (kk, kv)] = auth_headers(A);
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(format!("GET {STREAM} HTTP/1.0\r\n{tk}: {tv}\r\n{kk}: {kv}\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    // Reads until what arrived, as text, satisfies `done`.
    let read_until = async |tcp: &mut tokio::net::TcpStream, got: &mut Vec<u8>, done: &dyn Fn(&str) -> bool| {
        let mut buf = [0u8; 4096];
        while !done(&String::from_utf8_lossy(got)) {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(got));
            got.extend_from_slice(&buf[..n]);
        }
    };
    read_until(&mut tcp, &mut got, &|text| text.contains("retry: 2000\n\n")).await;
    let posted = post_n(&server, A, 2, "old-").await;
    let last = posted[1]["id"].as_str().unwrap().to_owned();
    let last_line = format!("id: {last}\n");
    read_until(&mut tcp, &mut got, &|text| text.contains(&last_line) && text.ends_with("\n\n")).await;
    let text = String::from_utf8(got).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    assert!(body.starts_with("retry: 2000\n\n"), "no chunk framing: {body:?}");
    assert!(body.contains(&format!("id: {last}\nevent: event_created\n")), "{body:?}");
    assert_eq!(server.app.metrics.stream_records_written_direct.get(), 0, "hyper frames HTTP/1.0 bodies itself");
}
