//! JWTs in Redis mode: each instance verifies on its own (the same secret),
//! and a socket whose token expired on one instance comes back on another
//! with a fresh token of the same user and recovers every missed event —
//! the session kept in Redis carries the JWT's identity and `iat`/`jti`, so a
//! revocation on the second instance drops it too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/jwt.rs"]
mod jwt;
#[path = "common/raw.rs"]
mod raw;

use std::path::PathBuf;
use std::time::Duration;

use cluster::RedisServer;
use common::TestServer;
use eventfeed::app::App;
use eventfeed::backend::redis::{RedisAdapter, RedisStore};
use eventfeed::config::{JwtConfig, RedisConfig};
use eventfeed::feed::{Credentials, FeedConfig};
use eventfeed::sio::SioConfig;
use feed::{FeedClient, quiet_engine};
use jwt::{Dir, claims, hs, with};
use raw::eventually;
use serde_json::{Value, json};

type RedisApp = App<RedisStore, RedisAdapter>;

async fn instance(url: &str, revocations: PathBuf) -> (RedisApp, TestServer) {
    let redis = RedisConfig { url: url.to_owned(), timeout: Duration::from_secs(3), ..RedisConfig::default() };
    let config = FeedConfig { recovery_window: Duration::from_secs(60), ..FeedConfig::default() };
    let jwt = JwtConfig { revocations: Some(revocations), ..jwt::secret_config() };
    let credentials = Credentials::load(None, &jwt).unwrap();
    let app = App::redis(redis, config, credentials, quiet_engine(1_000_000), SioConfig::default()).unwrap();
    let server = TestServer::start(app.router()).await;
    eventually("the instance is ready (its subscription is up)", || app.feed.is_ready().is_ok()).await;
    (app, server)
}

async fn post(server: &TestServer, message: &str) -> Value {
    let auth = format!("Bearer {}", hs(&claims("writer", "acme", 600)));
    let headers = [("X-TENANT-ID", "acme"), ("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let res =
        raw::request(server.addr, "POST", "/api/events", &headers, json!({"message": message}).to_string().as_bytes())
            .await;
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_socket_recovers_on_another_instance_and_a_revocation_there_drops_its_session() {
    let redis = RedisServer::start();
    let dir = Dir::new("jwt-cluster");
    let revocations = dir.write("revocations.json", r#"{"revoked":[]}"#);
    let (_a, server_a) = instance(&redis.url(), revocations.clone()).await;
    let (b, server_b) = instance(&redis.url(), revocations).await;

    // alice on A with a 2 s token; it expires, the session is kept in Redis.
    let (mut alice, answer) = FeedClient::connect_answer(
        server_a.addr,
        json!({"tenantId": "acme", "token": hs(&claims("alice", "acme", 2))}),
    )
    .await;
    let answer = answer.unwrap();
    let (sid, pid) = (answer["sid"].clone(), answer["pid"].as_str().unwrap().to_owned());
    post(&server_a, "seen").await;
    let (_, args) = alice.take_event(|n| n == "event_created").await;
    let offset = args[1].as_str().unwrap().to_owned();
    let frames = alice.until_closed().await;
    assert!(frames.iter().any(|f| f.contains("token_expired")), "{frames:?}");
    let missed = post(&server_a, "missed").await;

    // Back on B with a fresh token of the same user: recovered.
    let fresh = hs(&claims("alice", "acme", 600));
    let auth = json!({"tenantId": "acme", "token": fresh, "pid": pid, "offset": offset});
    let (mut back, answer) = FeedClient::connect_answer(server_b.addr, auth).await;
    assert_eq!(answer.unwrap()["sid"], sid, "recovered on the other instance");
    assert_eq!(back.events(1).await[0]["id"], missed["id"]);

    // bob (token jti b-1) then carol leave A abnormally; b-1 is revoked by
    // B's reload. carol, written to Redis after bob, recovers on B: so bob's
    // session is there too, and is not taken back with a fresh token.
    let (a, _) = (&_a, ());
    let connect = |sub: &str, extra: Value| {
        let token = hs(&with(claims(sub, "acme", 600), extra));
        FeedClient::connect_answer(server_a.addr, json!({"tenantId": "acme", "token": token}))
    };
    let (bob, answer) = connect("bob", json!({"jti": "b-1"})).await;
    let bob_pid = answer.unwrap()["pid"].as_str().unwrap().to_owned();
    let (carol, answer) = connect("carol", json!({})).await;
    let answer = answer.unwrap();
    let (carol_sid, carol_pid) = (answer["sid"].clone(), answer["pid"].as_str().unwrap().to_owned());
    drop(bob);
    eventually("bob left A", || a.namespace.socket_count() == 1).await;
    drop(carol);
    eventually("carol left A", || a.namespace.socket_count() == 0).await;
    dir.write("revocations.json", &json!({"revoked": [{"jti": "b-1"}]}).to_string());
    assert!(b.reload().await.failed.is_empty());
    let deadline = tokio::time::Instant::now() + raw::WAIT;
    loop {
        let auth =
            json!({"tenantId": "acme", "token": hs(&claims("carol", "acme", 600)), "pid": carol_pid, "offset": offset});
        let (_, answer) = FeedClient::connect_answer(server_b.addr, auth).await;
        if answer.unwrap()["sid"] == carol_sid {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "carol's session never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let auth = json!({"tenantId": "acme", "token": hs(&claims("bob", "acme", 600)), "pid": bob_pid, "offset": offset});
    let (_, answer) = FeedClient::connect_answer(server_b.addr, auth).await;
    assert_ne!(answer.unwrap()["pid"], json!(bob_pid), "the revoked token's session is not taken back");
}
