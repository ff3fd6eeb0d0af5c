//! Live connections and their credentials: `token_expiring`, the end of the
//! session at expiry and a recovery with a fresh token (no gap, no
//! duplicate), `refresh_token` (moves the expiry, applies the role, never
//! changes the identity), a reload that revokes a token, a tenant, a user or
//! a `jti` while other sockets are untouched (and drops their kept
//! sessions), a role lowered by a reload, a broken reload keeping the old
//! credentials, and a JWKS URL rotating a key out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/feed.rs"]
mod feed;
#[path = "common/jwt.rs"]
mod jwt;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::time::Duration;

use eventfeed::config::{JwksSource, JwtConfig};
use feed::{FeedClient, FeedServer, NSP};
use jwt::{Dir, JwksServer, claims, hs, jwks, signed, unix, with};
use serde_json::{Value, json};

async fn post(addr: SocketAddr, tenant: &str, token: &str, message: &str) -> Value {
    let auth = format!("Bearer {token}");
    let headers = [("X-TENANT-ID", tenant), ("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let res =
        raw::request(addr, "POST", "/api/events", &headers, json!({"message": message}).to_string().as_bytes()).await;
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()
}

fn iso(exp: i64) -> String {
    eventfeed_protocol::date::iso_string(exp as f64 * 1000.0).unwrap()
}

/// The CONNECT answer's `{sid, pid}` and the client.
async fn connect(addr: SocketAddr, auth: Value) -> (FeedClient, Value) {
    let (client, answer) = FeedClient::connect_answer(addr, auth).await;
    (client, answer.expect("CONNECT accepted"))
}

/// Whether the frames end with the server's namespace DISCONNECT (`41/events,`).
fn disconnected(frames: &[String]) -> bool {
    frames.iter().any(|f| f == &format!("41{NSP},"))
}

/// The `error` events among `frames`.
fn errors(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .filter_map(|f| feed::parse_event(f))
        .filter(|(name, _)| name == "error")
        .map(|(_, args)| args[0].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_expiry_the_session_closes_and_a_fresh_token_recovers_every_missed_event() {
    let server = FeedServer::start(jwt::app(None, &jwt::secret_config())).await;
    let addr = server.addr();
    let writer = hs(&claims("writer", "acme", 600));
    let first = claims("alice", "acme", 3);
    let exp = first["exp"].as_i64().unwrap();
    let (mut client, answer) = connect(addr, json!({"tenantId": "acme", "token": hs(&first)})).await;
    let (sid, pid) = (answer["sid"].as_str().unwrap().to_owned(), answer["pid"].as_str().unwrap().to_owned());

    // Events while connected, each with its offset.
    for i in 0..3 {
        post(addr, "acme", &writer, &format!("before {i}")).await;
    }
    let mut offset = String::new();
    for _ in 0..3 {
        let (_, args) = client.take_event(|n| n == "event_created").await;
        offset = args[1].as_str().unwrap().to_owned();
    }
    // Warned once, with the token's exp; then the end.
    let (_, args) = client.take_event(|n| n == "token_expiring").await;
    assert_eq!(args[0], json!({"expiresAt": iso(exp)}));
    let frames = client.until_closed().await;
    assert_eq!(
        errors(&frames),
        vec![json!({"code": "token_expired", "message": "the token expired; reconnect with a new token"})]
    );
    assert!(!disconnected(&frames), "a transport close, not a namespace DISCONNECT: {frames:?}");
    assert!(frames.iter().all(|f| feed::parse_event(f).is_none_or(|(n, _)| n != "token_expiring")), "warned once");

    // Missed while away.
    let mut missed = Vec::new();
    for i in 0..4 {
        missed.push(post(addr, "acme", &writer, &format!("missed {i}")).await["id"].clone());
    }
    // The same user, a fresh token: the same socket, exactly the missed events.
    let fresh = hs(&claims("alice", "acme", 600));
    let auth = json!({"tenantId": "acme", "token": fresh, "pid": pid, "offset": offset});
    let (mut back, answer) = connect(addr, auth).await;
    assert_eq!(answer["sid"], sid, "recovered: {answer}");
    let got: Vec<Value> = back.events(4).await.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(got, missed, "every missed event, in order");
    post(addr, "acme", &writer, "after").await;
    let after = back.events(1).await;
    assert_eq!(after[0]["message"], "after", "none twice, and live again");
    assert!(back.pending.iter().all(|f| !f.contains("snapshot")), "no snapshot on a recovery");

    // Another user's fresh token does not recover alice's session.
    let (_, answer) = connect(addr, json!({"tenantId": "acme", "token": hs(&claims("alice", "acme", 3))})).await;
    let alice_pid = answer["pid"].as_str().unwrap().to_owned();
    server.sessions_become(1, "alice's second transport is gone").await;
    let mallory = hs(&claims("mallory", "acme", 600));
    let (_, answer) =
        connect(addr, json!({"tenantId": "acme", "token": mallory, "pid": alice_pid, "offset": "1"})).await;
    assert_ne!(answer["pid"], json!(alice_pid));

    let metrics = raw::request(addr, "GET", "/metrics", &[], b"").await;
    assert!(metrics.text().lines().any(|l| l == "eventfeed_token_expiries_total 1"), "{}", metrics.text());
    assert!(server.server.stop().await);
}

#[tokio::test]
async fn refresh_token_moves_the_expiry_applies_the_role_and_never_changes_the_identity() {
    let dir = Dir::new("jwt-refresh");
    let tokens =
        dir.write("tokens.json", r#"{"tokens":[{"token":"svc","user":"svc","tenants":["acme"],"role":"admin"}]}"#);
    let server = FeedServer::start(jwt::app(Some(tokens), &jwt::secret_config())).await;
    let addr = server.addr();
    let (mut client, _) = connect(addr, json!({"tenantId": "acme", "token": hs(&claims("alice", "acme", 2))})).await;

    let refresh = |token: String| json!({"token": token});
    // Malformed, unverifiable, another user, another tenant: refused, the socket stays.
    assert_eq!(client.call(1, "refresh_token", json!("x")).await["error"]["code"], "bad_request");
    assert_eq!(client.call(2, "refresh_token", json!({"token": 5})).await["error"]["code"], "bad_request");
    assert_eq!(client.call(3, "refresh_token", refresh("a.b.c".into())).await["error"]["code"], "unauthorized");
    let expired = hs(&with(claims("alice", "acme", 600), json!({"exp": unix() - 10})));
    assert_eq!(client.call(4, "refresh_token", refresh(expired)).await["error"]["code"], "unauthorized");
    let bob = hs(&claims("bob", "acme", 600));
    assert_eq!(client.call(5, "refresh_token", refresh(bob)).await["error"]["code"], "forbidden");
    let elsewhere = hs(&claims("alice", "globex", 600));
    assert_eq!(client.call(6, "refresh_token", refresh(elsewhere)).await["error"]["code"], "forbidden");

    // A good one: the new expiry, as a reader now.
    let new = with(claims("alice", "acme", 600), json!({"role": "reader"}));
    let answer = client.call(7, "refresh_token", refresh(hs(&new))).await;
    assert_eq!(answer, json!({"expiresAt": iso(new["exp"].as_i64().unwrap())}));
    let refused = client.post(8, "as a reader").await;
    assert_eq!(refused["error"]["code"], "forbidden", "the new token's role applies");
    // Without an ack: token_refreshed.
    let admin = claims("alice", "acme", 600);
    let frame = format!("42{NSP},{}", json!(["refresh_token", {"token": hs(&admin)}]));
    client.send(&frame).await;
    let (_, args) = client.take_event(|n| n == "token_refreshed").await;
    assert_eq!(args[0]["expiresAt"], iso(admin["exp"].as_i64().unwrap()));
    // Past the first token's expiry (2 s, no leeway), the socket still serves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let created = client.post(9, "still here").await;
    assert_eq!(created["event"]["author"], "alice", "{created}");
    assert!(client.pending.iter().all(|f| !f.contains("token_expired")), "{:?}", client.pending);

    // A socket of a tokens-file token has nothing to refresh.
    let mut svc = FeedClient::connect_auth(addr, json!({"tenantId": "acme", "token": "svc"})).await.unwrap();
    let answer = svc.call(1, "refresh_token", refresh(hs(&claims("svc", "acme", 600)))).await;
    assert_eq!(answer["error"]["code"], "forbidden");
    let metrics = raw::request(addr, "GET", "/metrics", &[], b"").await;
    assert!(metrics.text().lines().any(|l| l == "eventfeed_token_refreshes_total 2"), "{}", metrics.text());
    assert!(server.server.stop().await);
}

const TOKENS: &str = r#"{"tokens":[
    {"token":"tok_a","user":"svc_a","tenants":["acme","globex"],"role":"admin"},
    {"token":"tok_c","user":"svc_c","tenants":["acme"],"role":"admin"}
]}"#;

/// After the reload: `tok_a` lost `globex` and became a reader, `tok_c` is gone.
const TOKENS_AFTER: &str = r#"{"tokens":[
    {"token":"tok_a","user":"svc_a","tenants":["acme"],"role":"reader"}
]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cuts_off_revoked_credentials_only_and_a_broken_one_keeps_the_old() {
    let dir = Dir::new("jwt-reload");
    let tokens = dir.write("tokens.json", TOKENS);
    let revocations = dir.write("revocations.json", r#"{"revoked":[]}"#);
    let config = JwtConfig { revocations: Some(revocations), ..jwt::secret_config() };
    let app = jwt::app(Some(tokens), &config);
    let server = FeedServer::start(app).await;
    let addr = server.addr();
    let socket = |token: String, tenant: &str| {
        let auth = json!({"tenantId": tenant, "token": token});
        async move { FeedClient::connect_auth(addr, auth).await.unwrap() }
    };
    let mut a_acme = socket("tok_a".into(), "acme").await;
    let mut a_globex = socket("tok_a".into(), "globex").await;
    let mut c_acme = socket("tok_c".into(), "acme").await;
    let mut alice = socket(hs(&claims("alice", "acme", 600)), "acme").await;
    let mut bob = socket(hs(&claims("bob", "acme", 600)), "acme").await;
    let leaked = with(claims("carol", "acme", 600), json!({"jti": "leaked-1"}));
    let mut carol = socket(hs(&leaked), "acme").await;
    // dave leaves abnormally: his session is kept for recovery.
    let (dave, answer) = connect(addr, json!({"tenantId": "acme", "token": hs(&claims("dave", "acme", 600))})).await;
    let dave_pid = answer["pid"].as_str().unwrap().to_owned();
    drop(dave);
    server.sessions_become(6, "dave's transport is gone").await;

    // Revoke: globex from tok_a (and lower it to reader), tok_c, every token of
    // alice and dave issued until now, carol's leaked token by its jti.
    dir.write("tokens.json", TOKENS_AFTER);
    let before = jwt::iso_after(1);
    dir.write(
        "revocations.json",
        &json!({"revoked": [
            {"sub": "alice", "issuedBefore": jwt::iso_after(3600)},
            {"sub": "dave", "tenant": "acme", "issuedBefore": before},
            {"jti": "leaked-1"}
        ]})
        .to_string(),
    );
    let reload = server.app.reload().await;
    assert!(reload.failed.is_empty(), "{reload:?}");

    for (who, client) in
        [("tok_a in globex", &mut a_globex), ("tok_c", &mut c_acme), ("alice", &mut alice), ("carol's jti", &mut carol)]
    {
        let frames = client.until_closed_or_disconnected().await;
        assert_eq!(
            errors(&frames).first().map(|e| e["code"].clone()),
            Some(json!("unauthorized")),
            "{who}: {frames:?}"
        );
        assert!(disconnected(&frames), "{who}: a namespace DISCONNECT: {frames:?}");
    }
    // Untouched: tok_a in acme (now a reader), bob.
    let writer = hs(&claims("bob", "acme", 600));
    post(addr, "acme", &writer, "after the reload").await;
    assert_eq!(a_acme.events(1).await[0]["message"], "after the reload");
    assert_eq!(bob.events(1).await[0]["message"], "after the reload");
    assert_eq!(a_acme.post(1, "as a reader now").await["error"]["code"], "forbidden", "the lowered role applies");
    assert!(bob.post(1, "bob writes").await["event"].is_object());
    // Revoked credentials cannot come back; a fresh token of a revoked user can,
    // but not into the kept session.
    let refused =
        FeedClient::connect_auth(addr, json!({"tenantId": "acme", "token": hs(&claims("alice", "acme", 600))})).await;
    assert_eq!(refused.err().unwrap()["data"]["code"], "revoked");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = hs(&claims("dave", "acme", 600));
    let (_, answer) = connect(addr, json!({"tenantId": "acme", "token": fresh, "pid": dave_pid, "offset": "0"})).await;
    assert_ne!(answer["pid"], json!(dave_pid), "the kept session was dropped: {answer}");

    // A broken tokens file: the reload fails, the old tokens stay.
    dir.write("tokens.json", r#"{"tokens":[{"token":"hush-hush","user":"x","tenants":["acme"],"role":"owner"}]}"#);
    let reload = server.app.reload().await;
    assert_eq!(reload.failed.len(), 1, "{reload:?}");
    assert!(!reload.failed[0].contains("hush-hush"), "never a token: {reload:?}");
    let res =
        raw::request(addr, "GET", "/api/events", &[("X-TENANT-ID", "acme"), ("X-User-Token", "tok_a")], b"").await;
    assert_eq!(res.status, 200, "the previous tokens are in force");
    assert_eq!(a_acme.post(2, "still a reader").await["error"]["code"], "forbidden");
    let metrics = raw::request(addr, "GET", "/metrics", &[], b"").await;
    let text = metrics.text();
    assert!(text.lines().any(|l| l == r#"eventfeed_config_reloads_total{outcome="ok"} 1"#), "{text}");
    assert!(text.lines().any(|l| l == r#"eventfeed_config_reloads_total{outcome="failed"} 1"#), "{text}");
    assert!(server.server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_out_of_the_jwks_url_ends_its_sockets_which_come_back_and_recover() {
    let idp = JwksServer::start(jwks(&["rsa-1", "ec-1"])).await;
    let config = JwtConfig { jwks: Some(JwksSource::Url(idp.url())), leeway: Duration::ZERO, ..JwtConfig::default() };
    let app = jwt::app(None, &config);
    app.start().await;
    let server = FeedServer::start(app).await;
    let addr = server.addr();
    let (mut old, answer) =
        connect(addr, json!({"tenantId": "acme", "token": signed("rsa-1", &claims("alice", "acme", 600))})).await;
    let (sid, pid) = (answer["sid"].clone(), answer["pid"].as_str().unwrap().to_owned());
    let mut kept = FeedClient::connect_auth(
        addr,
        json!({"tenantId": "acme", "token": signed("ec-1", &claims("bob", "acme", 600))}),
    )
    .await
    .unwrap();
    let writer = signed("ec-1", &claims("writer", "acme", 600));
    post(addr, "acme", &writer, "one").await;
    let (_, args) = old.take_event(|n| n == "event_created").await;
    let offset = args[1].as_str().unwrap().to_owned();

    // The provider rotates rsa-1 out; the server sees it at its next fetch.
    idp.set(jwks(&["rsa-2", "ec-1"]));
    assert!(server.app.reload().await.failed.is_empty());
    let frames = old.until_closed().await;
    assert_eq!(errors(&frames).first().map(|e| e["code"].clone()), Some(json!("token_revoked")), "{frames:?}");
    assert!(!disconnected(&frames), "like an expiry: a transport close");
    post(addr, "acme", &writer, "two").await;
    assert_eq!(kept.events(2).await.len(), 2, "a socket whose key stays is untouched");
    // A token of the old key no longer verifies; one of the new key recovers.
    let stale = signed("rsa-1", &claims("alice", "acme", 600));
    assert!(FeedClient::connect_auth(addr, json!({"tenantId": "acme", "token": stale})).await.is_err());
    let fresh = signed("rsa-2", &claims("alice", "acme", 600));
    let (mut back, answer) =
        connect(addr, json!({"tenantId": "acme", "token": fresh, "pid": pid, "offset": offset})).await;
    assert_eq!(answer["sid"], sid, "recovered");
    assert_eq!(back.events(1).await[0]["message"], "two");
    assert!(server.server.stop().await);
}
