//! Slow consumers: one client of a tenant stops reading while five others
//! of the same tenant read. The stalled one's bounded queue overflows and it
//! is disconnected (counted), what it did get is a gap-free prefix of the
//! stream, the others get every event in order, and posting never waits for
//! anyone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/frames.rs"]
mod frames;
#[path = "common/raw.rs"]
mod raw;

use std::sync::{Arc, Mutex};

use eventfeed::app::App;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::SioConfig;
use feed::{A, FeedClient, FeedServer, connect_packet};
use frames::RawWs;
use raw::{HttpConn, WAIT, eventually};
use serde_json::json;

/// Frames a session may have queued.
const MAX_QUEUE: usize = 16;
/// Readers that keep up.
const READERS: usize = 5;
/// A bound on the events posted before the stalled client must be gone.
const MAX_EVENTS: usize = 5000;
/// Events posted after it is gone.
const AFTER: usize = 20;

/// `POST /api/events` on a kept-alive connection; must be 201.
async fn post(conn: &mut HttpConn, message: &str) -> u64 {
    let body = json!({ "message": message }).to_string();
    let [t, k] = feed::auth_headers(A);
    let headers = [t, k, ("Content-Type", "application/json")];
    let res = tokio::time::timeout(WAIT, conn.request("POST", "/api/events", &headers, body.as_bytes()))
        .await
        .expect("a post is answered while a client is stalled")
        .unwrap();
    assert_eq!(res.status, 201, "{res:?}");
    res.json()["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn a_stalled_client_is_disconnected_and_the_others_get_every_event_in_order() {
    let engine = EngineConfig { max_queue: MAX_QUEUE, ..feed::quiet_engine(1_000_000) };
    let app = App::new(FeedConfig::default(), Tokens::demo(), engine, SioConfig::default());
    let server = FeedServer::start(app).await;
    let addr = server.addr();
    let metrics = server.app.engine.metrics().clone();

    // The stalled client: connected, then it never reads again.
    let mut stalled = RawWs::open_small(addr, "/socket.io/?EIO=4&transport=websocket", 4096).await.unwrap();
    assert!(stalled.read_text().await.starts_with("0{"));
    stalled.send_text(&connect_packet(A)).await;
    assert!(stalled.read_text().await.starts_with("40/events,{"));
    assert!(stalled.read_text().await.starts_with(r#"42/events,["snapshot""#));

    // Five clients that read everything, each into its own list of seqs.
    let mut seen = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut client = FeedClient::connect(addr, A).await;
        let seqs: Arc<Mutex<Vec<u64>>> = Arc::default();
        seen.push(seqs.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let event = client.events(1).await.remove(0);
                seqs.lock().unwrap().push(event["seq"].as_u64().unwrap());
            }
        }));
    }
    assert_eq!(server.app.namespace.room_size("tenant:company_a"), READERS + 1);

    // Large events (2048 four-byte characters) until the stalled client's
    // kernel buffers and then its queue are full.
    let message = "\u{1d11e}".repeat(2048);
    let mut conn = HttpConn::connect(addr).await;
    let mut last = 0;
    while metrics.slow_consumer_closes.get() == 0 {
        assert!((last as usize) < MAX_EVENTS, "the stalled client was not disconnected after {last} events");
        last = post(&mut conn, &message).await;
    }
    // Gone: its session, its socket, its place in the room.
    server.sessions_become(READERS, "the slow consumer was dropped").await;
    assert_eq!(server.app.namespace.socket_count(), READERS);
    assert_eq!(server.app.namespace.room_size("tenant:company_a"), READERS);
    // Posting goes on, and reaches the others.
    for i in 0..AFTER {
        last = post(&mut conn, &format!("after {i}")).await;
    }
    for (i, seqs) in seen.iter().enumerate() {
        eventually(&format!("reader {i} got all {last} events"), || seqs.lock().unwrap().len() >= last as usize).await;
        let seqs = seqs.lock().unwrap();
        assert!(seqs.iter().copied().eq(1..=last), "reader {i}: every event once, in order");
    }
    for r in &readers {
        assert!(!r.is_finished(), "the readers are still connected");
    }
    assert_eq!(metrics.slow_consumer_closes.get(), 1, "only the stalled client");
    let text = raw::request(addr, "GET", "/metrics", &[], b"").await;
    assert!(text.text().contains("eventfeed_slow_consumer_disconnects_total 1\n"), "{}", text.text());

    // The stalled client, reading again, finds a gap-free prefix of the
    // stream and then the end of its session: it knows to catch up.
    let ending = stalled.until_closed().await;
    let seqs: Vec<u64> = ending
        .texts
        .iter()
        .filter_map(|t| feed::parse_event(t))
        .filter(|(name, _)| name == "event_created")
        .map(|(_, args)| args[0]["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.iter().copied().eq(1..=seqs.len() as u64), "a prefix without holes: {seqs:?}");
    assert!((seqs.len() as u64) < last, "the stalled client missed the rest");
    for r in readers {
        r.abort();
    }
}
