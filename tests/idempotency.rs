//! Idempotent writes, in memory and in Redis mode: a retried write with the
//! same `Idempotency-Key` (or `post_event`'s `idempotencyKey`) gets the
//! original event (201, `Idempotent-Replayed: true`), nothing is created or
//! broadcast again, and a replay does not count against the rate limits;
//! concurrent duplicates make one event; another message with the key is
//! 422; a malformed key 400; a refused write remembers nothing; keys are
//! forgotten past the per-tenant bound and the window; in Redis mode a retry
//! on another instance, after the first instance's answer was lost, gets the
//! original.

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

use cluster::RedisServer;
use common::TestServer;
use eventfeed::app::App;
use eventfeed::config::{Rate, RedisConfig};
use eventfeed::feed::idempotency::KeyLimits;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::SioConfig;
use feed::{A, B, FeedClient, FeedServer, NSP, Who, assert_feed_error, auth_headers, list_events, quiet_engine};
use raw::eventually;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

async fn post_keyed(addr: SocketAddr, who: Who, message: &str, key: &str) -> raw::Response {
    let body = json!({ "message": message }).to_string();
    let [t, k] = auth_headers(who);
    let headers = [t, k, ("Content-Type", "application/json"), ("Idempotency-Key", key)];
    raw::request(addr, "POST", "/api/events", &headers, body.as_bytes()).await
}

fn app(config: FeedConfig) -> App {
    App::new(config, Tokens::demo(), quiet_engine(1_000_000), SioConfig::default())
}

async fn events(addr: SocketAddr, who: Who) -> Vec<Value> {
    list_events(addr, who, "limit=1000").await.json()["events"].as_array().unwrap().clone()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(-1.0)
}

async fn metrics(addr: SocketAddr) -> String {
    raw::request(addr, "GET", "/metrics", &[], b"").await.text().to_owned()
}

#[tokio::test]
async fn a_retried_write_gets_the_original_event_once() {
    let server = FeedServer::start(app(FeedConfig::default())).await;
    let addr = server.addr();
    let mut watcher = FeedClient::connect(addr, A).await;

    let first = post_keyed(addr, A, "order 42 shipped", "order-42").await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let retry = post_keyed(addr, A, "order 42 shipped", "order-42").await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.json(), first.json(), "the same event, byte for byte");
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(events(addr, A).await.len(), 1, "one event stored");
    // Broadcast once: the next event the watcher gets is a later one.
    assert_eq!(watcher.events(1).await[0]["id"], first.json()["id"]);
    feed::post_event(addr, A, "later").await;
    assert_eq!(watcher.events(1).await[0]["message"], "later", "no second broadcast of the replay");

    // Keys are per user and per tenant.
    let other_user = post_keyed(addr, feed::R, "order 42 shipped", "order-42").await;
    assert_feed_error(&other_user, 403, "forbidden"); // a reader; nothing remembered either
    let other_tenant = post_keyed(addr, B, "order 42 shipped", "order-42").await;
    assert_eq!(other_tenant.status, 201);
    assert_eq!(other_tenant.header("idempotent-replayed"), None, "another tenant's key");

    // Over a socket: post_event's idempotencyKey, the same {event} ack; the
    // REST key of the same user answers the socket too.
    let mut socket = FeedClient::connect(addr, A).await;
    let frame = |id: u64, key: &str, message: &str| {
        format!("42{NSP},{id}{}", json!(["post_event", {"message": message, "idempotencyKey": key}]))
    };
    socket.send(&frame(1, "order-42", "order 42 shipped")).await;
    assert_eq!(socket.ack(1).await["event"], first.json(), "the REST write's event");
    socket.send(&frame(2, "sock-1", "from the socket")).await;
    let made = socket.ack(2).await;
    socket.send(&frame(3, "sock-1", "from the socket")).await;
    assert_eq!(socket.ack(3).await, made);
    let retry = post_keyed(addr, A, "from the socket", "sock-1").await;
    assert_eq!(retry.json(), made["event"]);
    assert_eq!(events(addr, A).await.len(), 3, "order-42, later, sock-1");

    let text = metrics(addr).await;
    assert_eq!(metric(&text, "eventfeed_idempotent_replays_total"), 4.0, "{text}");
    assert_eq!(metric(&text, "eventfeed_events_created_total"), 4.0, "{text}");
    assert!(server.server.stop().await);
}

#[tokio::test]
async fn reused_and_malformed_keys_and_refused_writes() {
    let config = FeedConfig {
        rate_limit: Some(Rate { count: 3, per: Duration::from_secs(60), burst: 3 }),
        ..FeedConfig::default()
    };
    let server = FeedServer::start(app(config)).await;
    let addr = server.addr();
    assert_eq!(post_keyed(addr, A, "one", "k1").await.status, 201);
    assert_feed_error(&post_keyed(addr, A, "another", "k1").await, 422, "idempotency_key_reused");
    for bad in ["with space", &"k".repeat(256), "caf\u{e9}"] {
        assert_feed_error(&post_keyed(addr, A, "x", bad).await, 400, "bad_request");
    }
    let [t, k] = auth_headers(A);
    let two = [t, k, ("Content-Type", "application/json"), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")];
    assert_feed_error(
        &raw::request(addr, "POST", "/api/events", &two, br#"{"message":"m"}"#).await,
        400,
        "bad_request",
    );
    assert_eq!(post_keyed(addr, A, "one", &"k".repeat(255)).await.status, 201, "255 characters");

    // A refused write remembers nothing: the retry is a fresh attempt.
    assert_feed_error(&post_keyed(addr, A, "   ", "k2").await, 422, "validation_failed");
    let res = post_keyed(addr, A, "now valid", "k2").await;
    assert_eq!((res.status, res.header("idempotent-replayed")), (201, None));
    // The burst (3) is spent: a new key is rate limited, and remembered nothing…
    assert_feed_error(&post_keyed(addr, A, "limited", "k3").await, 429, "rate_limited");
    // …while replays do not count against the limit.
    for _ in 0..5 {
        assert_eq!(post_keyed(addr, A, "one", "k1").await.header("idempotent-replayed"), Some("true"));
    }
    // Over a socket: a malformed key is bad_request, the socket stays.
    let mut socket = FeedClient::connect(addr, A).await;
    socket.send(&format!("42{NSP},1{}", json!(["post_event", {"message": "m", "idempotencyKey": 5}]))).await;
    assert_eq!(socket.ack(1).await["error"]["code"], "bad_request");
    socket.send(&format!("42{NSP},2{}", json!(["post_event", {"message": "m", "idempotencyKey": ""}]))).await;
    assert_eq!(socket.ack(2).await["error"]["code"], "bad_request");
    assert!(server.server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_make_one_event() {
    let server = FeedServer::start(app(FeedConfig::default())).await;
    let addr = server.addr();
    for round in 0..5 {
        let key = format!("burst-{round}");
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let key = key.clone();
                tokio::spawn(async move { post_keyed(addr, A, "the same write", &key).await })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        let (mut created, mut replayed, mut conflicts) = (0, 0, 0);
        for t in tasks {
            let res = t.await.unwrap();
            match (res.status, res.header("idempotent-replayed")) {
                (201, None) => created += 1,
                (201, Some("true")) => replayed += 1,
                (409, _) => {
                    assert_feed_error(&res, 409, "conflict");
                    assert_eq!(res.header("retry-after"), Some("1"));
                    conflicts += 1;
                }
                other => panic!("unexpected {other:?}: {}", res.text()),
            }
            if res.status == 201 {
                ids.insert(res.json()["id"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(created, 1, "one write created it ({replayed} replayed, {conflicts} conflicts)");
        assert_eq!(ids.len(), 1, "every 201 is the same event");
    }
    assert_eq!(events(addr, A).await.len(), 5);
    assert!(server.server.stop().await);
}

#[tokio::test(start_paused = false)]
async fn keys_are_forgotten_past_the_bound_and_the_window() {
    let config =
        FeedConfig { idempotency: KeyLimits { window: Duration::from_secs(1), max_keys: 3 }, ..FeedConfig::default() };
    let server = FeedServer::start(app(config)).await;
    let addr = server.addr();
    for i in 0..4 {
        assert_eq!(post_keyed(addr, A, &format!("m{i}"), &format!("k{i}")).await.status, 201);
    }
    // k0 went to make room for k3: its retry is a new write.
    let res = post_keyed(addr, A, "m0", "k0").await;
    assert_eq!((res.status, res.header("idempotent-replayed")), (201, None));
    let res = post_keyed(addr, A, "m3", "k3").await;
    assert_eq!(res.header("idempotent-replayed"), Some("true"));
    // Past the window, every key is forgotten.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = post_keyed(addr, A, "m3", "k3").await;
    assert_eq!((res.status, res.header("idempotent-replayed")), (201, None));
    let text = metrics(addr).await;
    assert!(metric(&text, "eventfeed_idempotency_evictions_total") >= 2.0, "{text}");
    assert!(server.server.stop().await);
}

#[tokio::test]
async fn browsers_may_send_the_key_and_read_the_replay_header() {
    let cors = eventfeed::http::Cors::new(["http://app.example".to_owned()]);
    let server = FeedServer::start(app(FeedConfig { cors, ..FeedConfig::default() })).await;
    let addr = server.addr();
    let pre = raw::request(
        addr,
        "OPTIONS",
        "/api/events",
        &[
            ("Origin", "http://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "idempotency-key"),
        ],
        b"",
    )
    .await;
    assert!(pre.header("access-control-allow-headers").unwrap().to_ascii_lowercase().contains("idempotency-key"));
    let [t, k] = auth_headers(A);
    let headers =
        [t, k, ("Content-Type", "application/json"), ("Idempotency-Key", "b1"), ("Origin", "http://app.example")];
    let res = raw::request(addr, "POST", "/api/events", &headers, br#"{"message":"m"}"#).await;
    let exposed = res.header("access-control-expose-headers").unwrap().to_ascii_lowercase();
    assert!(exposed.contains("idempotent-replayed") && exposed.contains("location"), "{exposed}");
    assert!(server.server.stop().await);
}

type RedisApp = App<eventfeed::backend::redis::RedisStore, eventfeed::backend::redis::RedisAdapter>;

async fn instance(url: &str, keys: KeyLimits) -> (RedisApp, TestServer) {
    let redis = RedisConfig { url: url.to_owned(), timeout: Duration::from_secs(3), ..RedisConfig::default() };
    let config = FeedConfig { idempotency: keys, ..FeedConfig::default() };
    let app = App::redis(redis, config, Tokens::demo(), quiet_engine(1_000_000), SioConfig::default()).unwrap();
    let server = TestServer::start(app.router()).await;
    eventually("the instance is ready", || app.feed.is_ready().is_ok()).await;
    (app, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_mode_a_retry_on_another_instance_gets_the_original() {
    let redis = RedisServer::start();
    let (_a, a) = instance(&redis.url(), KeyLimits::default()).await;
    let (_b, b) = instance(&redis.url(), KeyLimits::default()).await;

    let first = post_keyed(a.addr, A, "paid invoice 7", "inv-7").await;
    assert_eq!(first.status, 201);
    let retry = post_keyed(b.addr, A, "paid invoice 7", "inv-7").await;
    assert_eq!((retry.status, retry.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(retry.json(), first.json());
    assert_feed_error(&post_keyed(b.addr, A, "paid invoice 8", "inv-7").await, 422, "idempotency_key_reused");

    // The first instance's answer is lost: the request is written and the
    // connection dropped before the answer is read. The retry on B gets the
    // event if it was stored, and creates it once if it was not.
    let body = json!({"message": "lost answer"}).to_string();
    let request = format!(
        "POST /api/events HTTP/1.1\r\nHost: x\r\nX-TENANT-ID: company_a\r\nX-User-Token: token_admin_a\r\n\
         Content-Type: application/json\r\nIdempotency-Key: lost-1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    drop(tcp);
    let retry = post_keyed(b.addr, A, "lost answer", "lost-1").await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    let again = post_keyed(a.addr, A, "lost answer", "lost-1").await;
    assert_eq!(again.json()["id"], retry.json()["id"]);
    let stored: Vec<Value> = events(b.addr, A).await;
    assert_eq!(stored.iter().filter(|e| e["message"] == "lost answer").count(), 1, "created once");

    // Concurrent duplicates on both instances: one event.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            tokio::spawn(async move { post_keyed(addr, A, "race", "race-1").await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let res = t.await.unwrap();
        assert!(matches!(res.status, 201 | 409), "{}", res.text());
        if res.status == 201 {
            ids.insert(res.json()["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(events(a.addr, A).await.iter().filter(|e| e["message"] == "race").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_mode_keys_are_forgotten_past_the_bound_and_the_window() {
    let redis = RedisServer::start();
    let limits = KeyLimits { window: Duration::from_secs(1), max_keys: 2 };
    let (_a, a) = instance(&redis.url(), limits).await;
    for i in 0..3 {
        assert_eq!(post_keyed(a.addr, A, &format!("m{i}"), &format!("k{i}")).await.status, 201);
    }
    let res = post_keyed(a.addr, A, "m0", "k0").await;
    assert_eq!((res.status, res.header("idempotent-replayed")), (201, None), "k0 was forgotten for k2");
    assert_eq!(post_keyed(a.addr, A, "m2", "k2").await.header("idempotent-replayed"), Some("true"));
    let text = metrics(a.addr).await;
    assert!(metric(&text, "eventfeed_idempotency_evictions_total") >= 1.0, "{text}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = post_keyed(a.addr, A, "m2", "k2").await;
    assert_eq!((res.status, res.header("idempotent-replayed")), (201, None), "past the window");
    // The tenant's keys in Redis stay within the bound.
    assert!(redis.redis_int(&["ZCARD", "eventfeed:{company_a}:idem"]) <= 2);
}
