//! The conformance fixture driven by the official Node clients
//! (socket.io-client, engine.io-client) over polling, websocket, and
//! polling upgraded to websocket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "conformance/fixture.rs"]
mod fixture;

use common::{TestServer, assert_node_ok, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_pass_against_the_conformance_fixture() {
    let server = TestServer::start(fixture::router()).await;
    let out = node("conformance.mjs", &[&server.url()]).await;
    assert_node_ok(&out);
    assert!(server.stop().await, "server drained in time");
}
