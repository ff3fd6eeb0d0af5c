//! The feed's contract end to end: every REST call, socket event and error
//! code, driven by fetch and the official socket.io-client (tests/node/feed.mjs)
//! over websocket only, polling only, and the default upgrade.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, assert_node_ok, node};
use eventfeed::app::App;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::SioConfig;

const BUFFER: usize = 20;

fn demo_app() -> App {
    App::new(
        FeedConfig { buffer_size: BUFFER, ..FeedConfig::default() },
        Tokens::demo(),
        EngineConfig::default(),
        SioConfig::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_with_the_official_client() {
    let app = demo_app();
    let server = TestServer::start(app.router()).await;
    let out = node("feed.mjs", &[&server.url(), &BUFFER.to_string()]).await;
    assert_node_ok(&out);
    assert!(server.stop().await, "server drained in time");
    // Every socket the script opened is gone.
    assert_eq!(app.namespace.socket_count(), 0);
    assert_eq!(app.engine.session_count(), 0);
}
