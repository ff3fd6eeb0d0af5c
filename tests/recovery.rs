//! Connection state recovery and resume-from-cursor with the official client
//! (tests/node/recovery.mjs): cut transports over websocket, polling and
//! upgrade; five cuts in a row; a client with no prior event; evicted and
//! expired sessions; stolen pids; 1,000 clients cut and recovering at once;
//! `auth.sinceId` on connect with and without a gap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, assert_node_ok, node};
use eventfeed::app::App;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::SioConfig;

const BUFFER: usize = 50;

fn tokens() -> Tokens {
    Tokens::parse(
        r#"{"tokens":[
            {"token":"tok_x1","user":"x1","tenants":["*"],"role":"admin"},
            {"token":"tok_x2","user":"x2","tenants":["*"],"role":"admin"},
            {"token":"tok_y","user":"y","tenants":["only_y"],"role":"admin"}
        ]}"#,
        "test",
    )
    .unwrap()
}

fn app(window: Duration) -> App {
    app_with_queue(window, EngineConfig::default().max_queue)
}

fn app_with_queue(window: Duration, max_queue: usize) -> App {
    App::new(
        FeedConfig { buffer_size: BUFFER, recovery_window: window, ..FeedConfig::default() },
        tokens(),
        EngineConfig { max_queue, ..EngineConfig::default() },
        SioConfig::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_recovers_every_missed_event() {
    let main = app(Duration::from_secs(30));
    let short = app(Duration::from_millis(300));
    let small_queue = app_with_queue(Duration::from_secs(30), 16);
    let server = TestServer::start(main.router()).await;
    let short_server = TestServer::start(short.router()).await;
    let small_server = TestServer::start(small_queue.router()).await;
    let args = [server.url(), short_server.url(), BUFFER.to_string(), small_server.url()];
    let out = node("recovery.mjs", &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_node_ok(&out);
    assert!(server.stop().await);
    assert!(short_server.stop().await);
    assert!(small_server.stop().await);
    assert_eq!(
        small_queue.metrics.encode().lines().find(|l| l.starts_with("eventfeed_slow_consumer_disconnects_total")),
        Some("eventfeed_slow_consumer_disconnects_total 0")
    );
    // Every socket is gone; what recovery keeps is bounded by its window and
    // count (sessions cut for good by the shutdown may still be kept).
    assert_eq!(main.namespace.socket_count(), 0);
    assert!(main.feed.store.sessions().len() <= 1_100);
}
