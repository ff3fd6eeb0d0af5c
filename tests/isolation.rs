//! Randomized tenant isolation with the official client: many tenants, many
//! clients on random transports, concurrent posts over REST and socket.
//! Every client gets exactly its own tenant's events, once each, in seq order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, assert_node_ok, node};
use eventfeed::app::App;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::SioConfig;

const TENANTS: usize = 8;
const CLIENTS: usize = 6;
const POSTS: usize = 40;

fn tokens() -> Tokens {
    let entries: Vec<String> = (0..TENANTS)
        .map(|t| format!(r#"{{"token":"tok_t{t}","user":"user{t}","tenants":["t{t}"],"role":"admin"}}"#))
        .collect();
    Tokens::parse(&format!(r#"{{"tokens":[{}]}}"#, entries.join(",")), "test").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_exactly_its_tenants_events_in_order() {
    let seed = std::env::var("ISOLATION_SEED").unwrap_or_else(|_| {
        let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 1_000_000;
        s.to_string()
    });
    println!("ISOLATION_SEED={seed}");
    let app = App::new(FeedConfig::default(), tokens(), EngineConfig::default(), SioConfig::default());
    let server = TestServer::start(app.router()).await;
    let args = [server.url(), TENANTS.to_string(), CLIENTS.to_string(), POSTS.to_string(), seed];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = node("isolation.mjs", &args).await;
    assert_node_ok(&out);
    for t in 0..TENANTS {
        let page = app.feed.store.bus().latest(&format!("t{t}"), 1000);
        assert_eq!(page.events.len(), POSTS, "tenant t{t} stored every post once");
    }
    assert!(server.stop().await);
}
