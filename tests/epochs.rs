//! History epochs: a client holding an offset, a `pid` or a cursor from a
//! history that was lost never resumes into a different one — after a
//! memory-mode restart, a tenant whose stored history was deleted, a Redis
//! `FLUSHALL`, and a Redis rolled back to an older append-only file (with
//! the instances running through it, and with every instance restarted and
//! the new history grown past the client's offset). It gets a snapshot, or
//! `gap: true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::time::Duration;

use cluster::{Instance, RedisServer};
use common::TestServer;
use eventfeed::app::App;
use eventfeed::backend::redis::{RedisAdapter, RedisStore};
use eventfeed::config::RedisConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::SioConfig;
use feed::{A, FeedClient, post_event, quiet_engine};
use raw::eventually;
use serde_json::{Value, json};

type RedisApp = App<RedisStore, RedisAdapter>;

async fn instance(url: &str) -> (RedisApp, TestServer) {
    let redis = RedisConfig { url: url.to_owned(), timeout: Duration::from_secs(3), ..RedisConfig::default() };
    let config = FeedConfig { recovery_window: Duration::from_secs(60), ..FeedConfig::default() };
    let app = App::redis(redis, config, Tokens::demo(), quiet_engine(1_000_000), SioConfig::default()).unwrap();
    let server = TestServer::start(app.router()).await;
    eventually("the instance is ready", || app.feed.is_ready().is_ok()).await;
    (app, server)
}

fn auth() -> Value {
    json!({"tenantId": A.tenant, "token": A.token})
}

/// A client that saw `n` new events: its `pid`, its socket id and the offset
/// of the last event; its transport is then cut (the session is kept).
async fn client_that_saw(addr: SocketAddr, n: usize) -> (String, Value, String) {
    let (mut client, answer) = FeedClient::connect_answer(addr, auth()).await;
    let answer = answer.unwrap();
    let _ = client.take_event(|name| name == "snapshot").await;
    for i in 0..n {
        assert_eq!(post_event(addr, A, &format!("seen {i}")).await.status, 201);
    }
    let mut offset = String::new();
    for _ in 0..n {
        let (_, args) = client.take_event(|name| name == "event_created").await;
        offset = args[1].as_str().unwrap().to_owned();
    }
    drop(client);
    (answer["pid"].as_str().unwrap().to_owned(), answer["sid"].clone(), offset)
}

/// Comes back with `pid` and `offset`: whether it was recovered (the same
/// socket id, no snapshot) — else it must have a snapshot.
async fn comes_back(addr: SocketAddr, pid: &str, sid: &Value, offset: &str) -> bool {
    let mut auth = auth();
    auth["pid"] = pid.into();
    auth["offset"] = offset.into();
    let (mut client, answer) = FeedClient::connect_answer(addr, auth).await;
    let answer = answer.unwrap();
    if &answer["sid"] == sid {
        return true;
    }
    let _ = client.take_event(|name| name == "snapshot").await;
    false
}

fn epoch_of(offset: &str) -> &str {
    offset.split(':').next().unwrap()
}

#[tokio::test]
async fn a_memory_mode_restart_is_a_new_history() {
    let mut instance = tokio::task::spawn_blocking(|| Instance::start(None, &[])).await.unwrap();
    let (pid, sid, offset) = client_that_saw(instance.addr(), 3).await;
    let seen = feed::list_events(instance.addr(), A, "").await.json()["events"][2]["id"].clone();
    let mut instance = tokio::task::spawn_blocking(move || {
        instance.restart();
        instance
    })
    .await
    .unwrap();
    let addr = instance.addr();
    for i in 0..5 {
        post_event(addr, A, &format!("new history {i}")).await;
    }
    assert!(!comes_back(addr, &pid, &sid, &offset).await, "not recovered into the new history");
    // A cursor of the old history is a gap in the new one.
    let page = feed::list_events(addr, A, &format!("sinceId={}", seen.as_str().unwrap())).await.json();
    assert_eq!(page["gap"], true, "{page}");
    let (_, _, new_offset) = client_that_saw(addr, 1).await;
    assert_ne!(epoch_of(&new_offset), epoch_of(&offset), "a new epoch: {offset} → {new_offset}");
    tokio::task::spawn_blocking(move || instance.terminate()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_history_deleted_or_flushed_in_redis_is_a_new_history() {
    let redis = RedisServer::start();
    let (_a, a) = instance(&redis.url()).await;
    let (pid, sid, offset) = client_that_saw(a.addr, 5).await;
    let old_ids: Vec<Value> = feed::list_events(a.addr, A, "").await.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    // Control: with the history intact, the client recovers.
    assert!(comes_back(a.addr, &pid, &sid, &offset).await, "recovered while the history holds");
    let (pid, sid, offset) = client_that_saw(a.addr, 2).await;

    // The tenant's history is deleted (its kept session stays), then grows
    // again past the client's offset.
    for what in ["seq", "log", "ids", "epoch"] {
        redis.redis_cmd(&["DEL", &format!("eventfeed:{{{}}}:{what}", A.tenant)]);
    }
    for i in 0..10 {
        assert_eq!(post_event(a.addr, A, &format!("after the loss {i}")).await.status, 201);
    }
    assert!(!comes_back(a.addr, &pid, &sid, &offset).await, "not recovered into the new history");
    // The same from an instance that never saw the old history.
    let (_b, b) = instance(&redis.url()).await;
    assert!(!comes_back(b.addr, &pid, &sid, &offset).await, "nor on another instance");
    let page = feed::list_events(b.addr, A, &format!("sinceId={}", old_ids[4].as_str().unwrap())).await.json();
    assert_eq!(page["gap"], true, "an old cursor is a gap: {page}");
    let (_, _, new_offset) = client_that_saw(b.addr, 1).await;
    assert_ne!(epoch_of(&new_offset), epoch_of(&offset), "a new epoch");

    // FLUSHALL: everything is gone, sessions too; the next history is new again.
    let (pid, sid, offset) = client_that_saw(b.addr, 3).await;
    redis.redis_cmd(&["FLUSHALL"]);
    for i in 0..6 {
        assert_eq!(post_event(b.addr, A, &format!("after the flush {i}")).await.status, 201);
    }
    assert!(!comes_back(a.addr, &pid, &sid, &offset).await);
    assert!(!comes_back(b.addr, &pid, &sid, &offset).await);
}

/// Takes `n` `event_created`; the offset of the last.
async fn seen(client: &mut FeedClient, n: usize) -> String {
    let mut offset = String::new();
    for _ in 0..n {
        let (_, args) = client.take_event(|name| name == "event_created").await;
        offset = args[1].as_str().unwrap().to_owned();
    }
    offset
}

fn resets(text: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix("eventfeed_cluster_resets_total ")?.trim().parse().ok()).unwrap_or(0.0)
}

async fn metrics(addr: SocketAddr) -> String {
    raw::request(addr, "GET", "/metrics", &[], b"").await.text().to_owned()
}

/// A client connected (its session written to Redis while it lives) that
/// saw three events before the append-only file was copied as `older`, and
/// three after; then its transport is cut. Its pid, socket id and offset.
async fn saw_past_the_copy(redis: &RedisServer, addr: SocketAddr) -> (String, Value, String) {
    let (mut client, answer) = FeedClient::connect_answer(addr, auth()).await;
    let answer = answer.unwrap();
    let (pid, sid) = (answer["pid"].as_str().unwrap().to_owned(), answer["sid"].clone());
    let _ = client.take_event(|name| name == "snapshot").await;
    for i in 0..3 {
        assert_eq!(post_event(addr, A, &format!("kept {i}")).await.status, 201);
    }
    seen(&mut client, 3).await;
    let session = format!("eventfeed:session:{pid}");
    eventually("the session reached Redis", || redis.redis_int(&["EXISTS", &session]) == 1).await;
    redis.copy_aof("older");
    for i in 3..6 {
        assert_eq!(post_event(addr, A, &format!("rolled back {i}")).await.status, 201);
    }
    let offset = seen(&mut client, 3).await;
    drop(client);
    (pid, sid, offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rolled_back_under_running_instances_starts_a_new_epoch() {
    let mut redis = RedisServer::start();
    let (_a, a) = instance(&redis.url()).await;
    let (pid, sid, offset) = saw_past_the_copy(&redis, a.addr).await;
    let epoch_key = format!("eventfeed:{{{}}}:epoch", A.tenant);
    let epoch = redis.redis_cmd(&["GET", &epoch_key]);
    assert!(epoch.contains(epoch_of(&offset)), "{epoch} {offset}");

    // Redis comes back with the older file: the history is three events
    // shorter, its epoch key the same. The instance notices (its copy is
    // ahead) and starts a new epoch.
    redis.roll_back_to("older");
    eventually_async(|| async { resets(&metrics(a.addr).await) >= 1.0 }, "the instance noticed the rollback").await;
    eventually_async(
        || async { !redis.redis_cmd(&["GET", &epoch_key]).contains(epoch_of(&offset)) },
        "a new epoch in Redis",
    )
    .await;
    for i in 0..6 {
        assert_eq!(post_event(a.addr, A, &format!("new history {i}")).await.status, 201);
    }
    assert!(!comes_back(a.addr, &pid, &sid, &offset).await, "not recovered into the new history");
    let (_, _, new_offset) = client_that_saw(a.addr, 1).await;
    assert_ne!(epoch_of(&new_offset), epoch_of(&offset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rolled_back_while_no_instance_ran_is_not_resumed_into() {
    let mut redis = RedisServer::start();
    let (a_app, a) = instance(&redis.url()).await;
    let (pid, sid, offset) = saw_past_the_copy(&redis, a.addr).await;
    let seen_ids: Vec<Value> = feed::list_events(a.addr, A, "").await.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    // Every instance goes; Redis is rolled back; a new instance grows the
    // history past the client's offset before the client comes back: the
    // same epoch (nobody saw the old history go), but other events.
    a_app.shutdown_token().cancel();
    drop(a_app);
    drop(a);
    redis.roll_back_to("older");
    let (_b, b) = instance(&redis.url()).await;
    for i in 0..6 {
        assert_eq!(post_event(b.addr, A, &format!("regrown {i}")).await.status, 201);
    }
    assert!(!comes_back(b.addr, &pid, &sid, &offset).await, "the event at the offset is another one");
    // A cursor of the lost events is a gap; one of the kept events is not.
    let lost = feed::list_events(b.addr, A, &format!("sinceId={}", seen_ids[4].as_str().unwrap())).await.json();
    assert_eq!(lost["gap"], true, "{lost}");
    let kept = feed::list_events(b.addr, A, &format!("sinceId={}", seen_ids[1].as_str().unwrap())).await.json();
    assert_eq!(kept["gap"], false, "{kept}");
    assert_eq!(kept["events"][0]["message"], "kept 2");
    assert_eq!(kept["events"][1]["message"], "regrown 0");
}

/// Waits (bounded) until the async `check` holds.
async fn eventually_async<F: std::future::Future<Output = bool>>(check: impl Fn() -> F, what: &str) {
    let deadline = tokio::time::Instant::now() + raw::WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
