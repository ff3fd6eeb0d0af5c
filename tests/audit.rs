//! The audit log (the real binary, JSON log lines): one line for every write
//! and every refusal — auth failures, writes refused, requests and
//! websocket upgrades refused for their `Origin` (REST and Engine.IO) — all of
//! one shape: `target` `audit`, `action`, `outcome`, and `peer` written
//! `ip:port` the same way everywhere; a tenant a client merely claims is cut
//! short; no token ever appears.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/raw.rs"]
mod raw;

use cluster::Instance;
use feed::{A, FeedClient};
use raw::{Eio, eventually};
use serde_json::Value;

const EVIL: &str = "http://evil.example";

fn audit_lines(instance: &Instance) -> Vec<Value> {
    instance
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect()
}

/// Waits (bounded) for an audit line with this action and outcome.
async fn line(instance: &Instance, action: &str, outcome: &str) -> Value {
    let find = || audit_lines(instance).into_iter().find(|v| v["action"] == action && v["outcome"] == outcome);
    eventually(&format!("an audit line {action}/{outcome}"), || find().is_some()).await;
    find().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_and_refusal_has_one_audit_line_of_one_shape() {
    let instance = tokio::task::spawn_blocking(|| {
        Instance::start(None, &[("NB_BACKEND_ALLOWED_ORIGINS", "http://ok.example"), ("NB_BACKEND_LOG", "info")])
    })
    .await
    .unwrap();
    let addr = instance.addr();
    let [tenant, token] = feed::auth_headers(A);

    // REST: a write, an auth failure (with a long claimed tenant), an origin refusal.
    assert_eq!(feed::post_event(addr, A, "audited").await.status, 201);
    let long_tenant = "t".repeat(5000);
    let res = raw::request(
        addr,
        "GET",
        "/api/events",
        &[("X-TENANT-ID", &long_tenant), ("X-User-Token", "bad-token-xyz")],
        b"",
    )
    .await;
    assert_eq!(res.status, 401);
    let res = raw::request(addr, "GET", "/api/events", &[tenant, token, ("Origin", EVIL)], b"").await;
    assert_eq!(res.status, 403);

    // Engine.IO: a polling handshake and a websocket upgrade from a refused origin.
    let res = raw::request(addr, "GET", "/socket.io/?EIO=4&transport=polling", &[("Origin", EVIL)], b"").await;
    assert_eq!(res.status, 403);
    let upgrade = [
        ("Origin", EVIL),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let res = raw::request(addr, "GET", "/socket.io/?EIO=4&transport=websocket", &upgrade, b"").await;
    assert_eq!(res.status, 403);

    // Socket.IO: a refused CONNECT, and a post_event.
    let (mut ws, _) = Eio::new(addr, "/socket.io/").ws_open().await;
    raw::send_text(&mut ws, r#"40/events,{"tenantId":"company_a","token":"wrong-token"}"#).await;
    assert!(raw::recv_text(&mut ws).await.starts_with("44/events,"));
    let mut client = FeedClient::connect(addr, A).await;
    assert!(client.post(1, "over the socket").await["event"].is_object());

    let created = line(&instance, "create_event", "created").await;
    assert!(created["event_id"].as_str().is_some_and(|id| id.len() == 36), "{created}");
    assert_eq!((created["tenant"].as_str(), created["user"].as_str()), (Some("company_a"), Some("admin_a")));
    let refused = line(&instance, "authenticate", "unauthorized").await;
    assert_eq!(refused["tenant"].as_str().map(str::len), Some(128), "a claimed tenant is cut short: {refused}");
    let rest_origin = line(&instance, "request", "origin_not_allowed").await;
    eventually("three origin refusals (REST, polling, websocket)", || {
        audit_lines(&instance).iter().filter(|v| v["outcome"] == "origin_not_allowed").count() == 3
    })
    .await;
    assert_eq!(rest_origin["origin"], EVIL);
    let vias: Vec<Value> = audit_lines(&instance)
        .into_iter()
        .filter(|v| v["outcome"] == "origin_not_allowed")
        .map(|v| v["via"].clone())
        .collect();
    assert_eq!(vias, ["rest", "engine.io", "engine.io"]);
    line(&instance, "connect", "unauthorized").await;
    line(&instance, "post_event", "created").await;

    // One shape: every audit line has an action, an outcome and a peer
    // written ip:port; no line anywhere holds a token.
    let lines = audit_lines(&instance);
    assert_eq!(lines.len(), 7, "one line for each write and refusal above: {lines:?}");
    for v in &lines {
        assert!(v["action"].is_string() && v["outcome"].is_string(), "{v}");
        let peer = v["peer"].as_str().unwrap_or_default();
        let (ip, port) = peer.rsplit_once(':').unwrap_or_default();
        assert!(ip == "127.0.0.1" && port.parse::<u16>().is_ok(), "peer written ip:port: {v}");
    }
    // (The start-up warning names the public demo tokens on purpose.)
    let all = instance.logs();
    let logged = all.lines().filter(|l| !l.contains("DEMO tokens"));
    for line in logged {
        for secret in ["token_admin_a", "wrong-token", "bad-token-xyz"] {
            assert!(!line.contains(secret), "a token in the logs: {line}");
        }
    }
}
