//! Redis mode interop (tests/node/interop.mjs): two `eventfeed` instances on
//! one Redis, next to a Node socket.io@4 server using
//! `@socket.io/redis-adapter@8` and a `@socket.io/redis-emitter@5` publisher;
//! the official client connected to each. Events posted on one instance reach
//! the tenant's clients on every server exactly once and in `seq` order; Node's
//! and the emitter's broadcasts (rooms, namespace-wide, binary) reach eventfeed
//! clients; `serverCount`, `fetchSockets` and `allRooms` from Node see the
//! instances; the event store is shared.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/cluster.rs"]
mod cluster;

use std::time::Duration;

use cluster::{Instance, RedisServer};
use common::{assert_node_ok, node_with_env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventfeed_interoperates_with_the_node_redis_adapter_and_emitter() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (a, b) = tokio::task::spawn_blocking(move || {
        let a = Instance::start(Some(&url), &[]);
        let b = Instance::start(Some(&url), &[]);
        a.wait_ready(Duration::from_secs(10));
        b.wait_ready(Duration::from_secs(10));
        (a, b)
    })
    .await
    .unwrap();
    let out =
        node_with_env("interop.mjs", &[], &[("EF_A", &a.url()), ("EF_B", &b.url()), ("REDIS_URL", &redis.url())]).await;
    if !out.status.success() {
        eprintln!("---- instance A ({}) ----\n{}", a.url(), a.logs());
        eprintln!("---- instance B ({}) ----\n{}", b.url(), b.logs());
        eprintln!("---- redis ----\n{}", redis.log_tail());
    }
    assert_node_ok(&out);
}
