//! Identity with the real binary: the official `socket.io-client` with an
//! `auth` function across a token's expiry (recovered, nothing missed,
//! nothing twice), a refresh, refused CONNECT codes and a user revoked by
//! `SIGHUP` (tests/node/identity.mjs); then `SIGHUP` removing a
//! tokens-file token (the reload counted and audited), and a broken tokens
//! file that keeps the previous tokens in force.

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

use cluster::Instance;
use common::{assert_node_ok, node};
use jwt::Dir;
use raw::eventually;
use serde_json::Value;

const TOKENS: &str = r#"{"tokens":[
    {"token":"svc_one","user":"one","tenants":["*"],"role":"reader"},
    {"token":"svc_two","user":"two","tenants":["*"],"role":"reader"}
]}"#;

fn hup(instance: &Instance) {
    let pid = instance.pid().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

fn status(instance: &Instance, token: &str) -> u16 {
    cluster::http_request(
        instance.addr(),
        "GET",
        "/api/events",
        &[("X-TENANT-ID", "acme"), ("X-User-Token", token)],
        None,
    )
    .0
}

fn reloads(instance: &Instance, outcome: &str) -> String {
    let (_, text) = instance.get("/metrics");
    let series = format!("eventfeed_config_reloads_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).unwrap_or("none").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_lives_by_its_jwt_and_sighup_reloads_credentials() {
    let dir = Dir::new("identity");
    let tokens = dir.write("tokens.json", TOKENS);
    let revocations = dir.write("revocations.json", r#"{"revoked":[]}"#);
    let (tokens_path, revocations_path) = (tokens.display().to_string(), revocations.display().to_string());
    let (t, r) = (tokens_path.clone(), revocations_path.clone());
    let instance = tokio::task::spawn_blocking(move || {
        let env = [
            ("NB_BACKEND_TOKENS_FILE", t.as_str()),
            ("NB_BACKEND_JWT_SECRET", jwt::SECRET),
            ("NB_BACKEND_JWT_REVOCATIONS", r.as_str()),
            ("NB_BACKEND_JWT_LEEWAY", "0"),
            ("NB_BACKEND_LOG", "info"),
        ];
        Instance::start(None, &env)
    })
    .await
    .unwrap();
    let logs = instance.logs();
    assert!(!logs.contains("DEMO tokens"), "no demo tokens with a tokens file and JWTs");

    let pid = instance.pid().unwrap().to_string();
    let out = node("identity.mjs", &[&instance.url(), &pid, &revocations_path, jwt::SECRET]).await;
    assert_node_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 passed, 0 failed"));
    assert_eq!(reloads(&instance, "ok"), "1", "the Node script's SIGHUP");

    // SIGHUP after svc_two left the tokens file: refused within a second or so.
    assert_eq!(status(&instance, "svc_two"), 200);
    dir.write("tokens.json", r#"{"tokens":[{"token":"svc_one","user":"one","tenants":["*"],"role":"reader"}]}"#);
    hup(&instance);
    eventually("svc_two is refused", || status(&instance, "svc_two") == 401).await;
    assert_eq!(status(&instance, "svc_one"), 200);
    eventually("the reload is counted", || reloads(&instance, "ok") == "2").await;

    // A broken tokens file: counted as failed, the previous tokens stay.
    dir.write("tokens.json", r#"{"tokens":[{"token":"svc_one","user":"one","tenants":["*"],"role":"boss"}]}"#);
    hup(&instance);
    eventually("the failed reload is counted", || reloads(&instance, "failed") == "1").await;
    assert_eq!(status(&instance, "svc_one"), 200, "the previous tokens are in force");
    let reload_lines = || -> Vec<Value> {
        instance
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "audit" && v["action"] == "config_reloaded")
            .collect()
    };
    // The counter moves before the line reaches the log reader: wait for it.
    eventually("the third reload's audit line", || reload_lines().len() >= 3).await;
    let audit = reload_lines();
    assert_eq!(audit.len(), 3, "one audit line per reload: {audit:?}");
    assert_eq!(audit[2]["outcome"], "failed");
    let logs = instance.logs();
    for secret in ["svc_one", "svc_two", jwt::SECRET] {
        assert!(!logs.contains(secret), "no token in the logs: {secret}");
    }
    assert!(logs.contains("role"), "the failure names the field: {logs}");
    for action in ["token_expired", "token_refreshed", "credentials_revoked"] {
        assert!(
            logs.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| v["target"] == "audit" && (v["outcome"] == action || v["action"] == action)),
            "an audit line for {action}"
        );
    }
}
