//! Every script in `demo/` runs against a real server, so a demo cannot rot
//! silently: `socket-demo.mjs` tours the feed served in this process (with
//! the demo tokens, and with JWTs: a token's warning, refresh, expiry and
//! recovery), `serve.mjs` serves the demo page and the official client bundle
//! and mints JWTs the server accepts. A script added to `demo/` fails
//! `every_demo_script_has_a_test` until it gets a test here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{TestServer, demo_dir, ensure_node_modules};
use eventfeed::app::App;
use eventfeed::config::JwtConfig;
use eventfeed::engine::EngineConfig;
use eventfeed::feed::{Credentials, FeedConfig, Tokens};
use eventfeed::sio::SioConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// The scripts of `demo/` this file knows how to run, each with its test.
const DEMOS: [(&str, &str); 2] = [
    ("socket-demo.mjs", "socket_demo_tours_a_live_server"),
    ("serve.mjs", "serve_demo_serves_the_page_and_the_client_bundle"),
];

/// The HS256 secret the JWT tests give the server and the demo scripts.
const SECRET: &str = "the demos' HS256 secret, 32+ bytes long";

/// How long a demo may take to finish, or to start listening (it takes about
/// a second): a guard against a demo that hangs, not a timing assertion.
const BOUND: Duration = Duration::from_secs(60);

#[test]
fn every_demo_script_has_a_test() {
    let mut scripts: Vec<String> = std::fs::read_dir(demo_dir())
        .expect("demo/ is readable")
        .map(|entry| entry.expect("a demo/ entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".mjs"))
        .collect();
    scripts.sort();
    for script in &scripts {
        assert!(
            DEMOS.iter().any(|(known, _)| known == script),
            "demo/{script} has no test: add one to tests/demos.rs and list it in DEMOS"
        );
    }
    for (known, test) in DEMOS {
        assert!(scripts.iter().any(|s| s == known), "demo/{known} is gone: remove {test} and its DEMOS entry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_demo_tours_a_live_server() {
    ensure_node_modules(&demo_dir());
    // The server `cargo run` starts, in this process: memory store, demo tokens.
    let app = App::new(FeedConfig::default(), Tokens::demo(), EngineConfig::default(), SioConfig::default());
    let server = TestServer::start(app.router()).await;

    let mut node = Command::new("node");
    node.arg("socket-demo.mjs").arg(server.url()).env_remove("NB_BACKEND_JWT_SECRET").current_dir(demo_dir());
    let stdout = run_socket_demo(node).await;
    assert!(!stdout.contains("A JWT's life"), "no JWT part without a secret:\n{stdout}");

    assert!(server.stop().await, "server drained in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_demo_tours_a_jwt_server_through_a_tokens_expiry() {
    ensure_node_modules(&demo_dir());
    // A server that accepts only JWTs signed with SECRET (no demo tokens),
    // exp to the second, sessions kept 30 s for recovery.
    let jwt = JwtConfig { secret: Some(SECRET.into()), leeway: Duration::ZERO, ..JwtConfig::default() };
    let credentials = Credentials::load(None, &jwt).expect("JWT credentials");
    let config = FeedConfig { recovery_window: Duration::from_secs(30), ..FeedConfig::default() };
    let app = App::new(config, credentials, EngineConfig::default(), SioConfig::default());
    let server = TestServer::start(app.router()).await;

    let mut node = Command::new("node");
    node.arg("socket-demo.mjs").arg(server.url()).env("NB_BACKEND_JWT_SECRET", SECRET).current_dir(demo_dir());
    let stdout = run_socket_demo(node).await;
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let line = |prefix: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("the demo prints a line starting with {prefix:?}:\n{stdout}"))
    };
    // Warned, refreshed, warned again, expired.
    assert!(line("token_expiring: expires at ").ends_with("refreshing it (refresh_token)"));
    line("refreshed: now expires at ");
    assert!(line("token_expiring again ").ends_with("not refreshing this time"));
    assert!(line("error ").starts_with("error token_expired: "), "the expiry's error:\n{stdout}");
    assert_eq!(line("disconnected ("), "disconnected (transport close); the client will reconnect by itself: true");
    // Back with a fresh token, recovered: every event once, in order.
    assert_eq!(line("reconnected "), "reconnected with a fresh token: recovered: true, same socket id: true");
    assert_eq!(
        line("alice received "),
        "alice received 6 events: 2 before the expiry, 3 missed while away (delivered by the recovery), 1 after"
    );
    assert_eq!(line("lost: "), "lost: 0, twice: 0, in order: true");
    // What a refused CONNECT tells.
    assert_eq!(line("an expired token: "), "an expired token: unauthorized (token_expired)");
    assert_eq!(
        line("company_b's token presented to company_a: "),
        "company_b's token presented to company_a: unauthorized (wrong_tenant)"
    );
    assert_eq!(line("not a JWT: "), "not a JWT: unauthorized (invalid_token)");

    assert!(server.stop().await, "server drained in time");
}

/// Runs `socket-demo.mjs` (bounded), checks what every run of it shows —
/// success, the tour's delivery and isolation lines, "demo finished" last —
/// and returns its output.
async fn run_socket_demo(node: Command) -> String {
    let out = run_bounded(node, "node socket-demo.mjs").await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "socket-demo.mjs failed ({}):\n{stdout}\n{stderr}", out.status);
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(lines.last(), Some(&"demo finished"), "the demo's last line");
    assert!(lines.contains(&"A saw its REST event live: true"), "A got its own event live:\n{stdout}");
    // The script posts as B too, so B's count is never 0: what matters is
    // that none of them is A's.
    let isolation = lines
        .iter()
        .find(|l| l.starts_with("B received "))
        .unwrap_or_else(|| panic!("the demo reports what B received:\n{stdout}"));
    assert!(isolation.ends_with(", 0 of them from another tenant"), "tenant B saw another tenant's event: {isolation}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_serves_the_page_and_the_client_bundle() {
    let (mut child, addr) = start_serve(None).await;

    let page = raw::request(addr, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200, "GET /: {page:?}");
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")), "GET /: {page:?}");
    assert!(page.text().contains(r#"<script src="/socket.io.min.js"></script>"#), "the page loads the client bundle");

    let bundle = raw::request(addr, "GET", "/socket.io.min.js", &[], b"").await;
    assert_eq!(bundle.status, 200, "GET /socket.io.min.js: {:?}", bundle.headers);
    assert_eq!(bundle.header("content-type"), Some("text/javascript"));
    let installed = std::fs::read(demo_dir().join("node_modules/socket.io-client/dist/socket.io.min.js"))
        .expect("the installed client bundle");
    assert!(bundle.body == installed, "GET /socket.io.min.js is the installed bundle");

    let unknown = raw::request(addr, "GET", "/nope", &[], b"").await;
    assert_eq!(unknown.status, 404);

    // Without a secret the page uses the demo tokens, and /token says how to
    // give serve.mjs and the server the same secret.
    let config = raw::request(addr, "GET", "/config.json", &[], b"").await;
    assert_eq!((config.status, config.json()), (200, json!({"jwt": false})));
    let body = json!({"user": "alice", "tenant": "company_a"}).to_string();
    let token = raw::request(addr, "POST", "/token", &[("Content-Type", "application/json")], body.as_bytes()).await;
    assert_eq!(token.status, 503, "POST /token without a secret: {token:?}");
    assert_eq!(token.json()["error"]["code"], "no_secret");
    let message = token.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("NB_BACKEND_JWT_SECRET") && message.contains("serve.mjs"), "{message}");

    stop(&mut child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_mints_jwts_the_server_accepts() {
    let (mut child, addr) = start_serve(Some(SECRET)).await;
    let jwt = JwtConfig { secret: Some(SECRET.into()), leeway: Duration::ZERO, ..JwtConfig::default() };
    let app = App::new(
        FeedConfig::default(),
        Credentials::load(None, &jwt).expect("JWT credentials"),
        EngineConfig::default(),
        SioConfig::default(),
    );
    let server = TestServer::start(app.router()).await;

    let config = raw::request(addr, "GET", "/config.json", &[], b"").await;
    assert_eq!((config.status, config.json()), (200, json!({"jwt": true})));
    let mint = move |body: Value| async move {
        let body = body.to_string();
        raw::request(addr, "POST", "/token", &[("Content-Type", "application/json")], body.as_bytes()).await
    };

    let minted = mint(json!({"user": "alice", "tenant": "company_a", "ttl": 60})).await;
    assert_eq!(minted.status, 200, "POST /token: {minted:?}");
    assert_eq!(minted.header("cache-control"), Some("no-store"));
    let token = minted.json()["token"].as_str().expect("a token").to_owned();
    // What it holds: the asked user, tenant and lifetime, admin by default.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key");
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("an HS256 JWT of the secret").claims;
    assert_eq!(
        (&claims["sub"], &claims["tenant"], &claims["role"]),
        (&json!("alice"), &json!("company_a"), &json!("admin"))
    );
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60, "{claims}");
    let expires_at = eventfeed_protocol::date::iso_string(claims["exp"].as_f64().unwrap() * 1000.0).unwrap();
    assert_eq!(minted.json()["expiresAt"], json!(expires_at));

    // The server takes it as a Bearer token; a reader's may read, not write.
    let bearer = format!("Bearer {token}");
    let read = [("X-TENANT-ID", "company_a"), ("Authorization", bearer.as_str())];
    let events = raw::request(server.addr, "GET", "/api/events", &read, b"").await;
    assert_eq!(events.status, 200, "GET /api/events with the minted token: {events:?}");
    let other = raw::request(server.addr, "GET", "/api/events", &[("X-TENANT-ID", "company_b"), read[1]], b"").await;
    assert_eq!(other.status, 401, "another tenant (REST says no more than that): {other:?}");
    let reader = mint(json!({"user": "rita", "tenant": "company_a", "role": "reader"})).await;
    let bearer = format!("Bearer {}", reader.json()["token"].as_str().expect("a reader's token"));
    let write =
        [("X-TENANT-ID", "company_a"), ("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    let post = raw::request(server.addr, "POST", "/api/events", &write, br#"{"message":"hi"}"#).await;
    assert_eq!(post.status, 403, "a reader's token cannot write: {post:?}");
    assert_eq!(raw::request(server.addr, "GET", "/api/events", &write[..2], b"").await.status, 200);

    // A request it should not sign is a 4xx naming what is wrong.
    for (body, why) in [
        (json!({"tenant": "company_a"}), "user"),
        (json!({"user": "alice", "tenant": "*"}), "tenant"),
        (json!({"user": "alice", "tenant": "company_a", "role": "owner"}), "role"),
        (json!({"user": "alice", "tenant": "company_a", "ttl": 1}), "ttl"),
        (json!({"user": "alice", "tenant": "company_a", "ttl": 86400}), "ttl"),
        (json!({"user": "alice", "tenant": "company_a", "sub": "root"}), "sub"),
    ] {
        let refused = mint(body.clone()).await;
        assert_eq!(refused.status, 400, "{body}: {refused:?}");
        assert_eq!(refused.json()["error"]["code"], "validation_failed", "{body}");
        assert!(refused.json()["error"]["message"].as_str().unwrap_or_default().contains(why), "{body}: {refused:?}");
    }
    let garbage = raw::request(addr, "POST", "/token", &[], b"{not json").await;
    assert_eq!((garbage.status, garbage.json()["error"]["code"].clone()), (400, json!("bad_request")));
    let get = raw::request(addr, "GET", "/token", &[], b"").await;
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));

    stop(&mut child).await;
    assert!(server.stop().await, "server drained in time");

    // A secret the server would refuse (under 32 bytes) stops serve.mjs too.
    let mut short = Command::new("node");
    short.arg("serve.mjs").env("PORT", "0").env("NB_BACKEND_JWT_SECRET", "too short").current_dir(demo_dir());
    let out = run_bounded(short, "node serve.mjs with a short secret").await;
    assert!(!out.status.success(), "serve.mjs refuses a short secret");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 32 bytes") && !stderr.contains("too short"), "{stderr}");
}

/// Starts `serve.mjs` on a free port, with `secret` as its
/// NB_BACKEND_JWT_SECRET (none: unset, whatever this process has), and
/// returns it with the address it announced.
async fn start_serve(secret: Option<&str>) -> (Child, SocketAddr) {
    ensure_node_modules(&demo_dir());
    let mut cmd = Command::new("node");
    cmd.arg("serve.mjs").env("PORT", "0").current_dir(demo_dir());
    match secret {
        Some(secret) => cmd.env("NB_BACKEND_JWT_SECRET", secret),
        None => cmd.env_remove("NB_BACKEND_JWT_SECRET"),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the demo tests (Node.js 20)");
    let stderr = read_all(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = match tokio::time::timeout(BOUND, stdout.next_line()).await {
        Ok(Ok(Some(line))) => line,
        outcome => {
            let status = stop(&mut child).await;
            let stderr = String::from_utf8_lossy(&stderr.await.unwrap()).into_owned();
            panic!("serve.mjs printed no address ({outcome:?}, {status}):\n{stderr}");
        }
    };
    // The rest of what it prints is read (and dropped): a full pipe would block it.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    let port: u16 = line
        .strip_prefix("demo page on http://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("serve.mjs announces its address: {line:?}"));
    assert_ne!(port, 0, "serve.mjs prints the port it was given, not the one it listens on");
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Runs `cmd` within [`BOUND`] and returns its output; past the bound the
/// child is killed and the test fails with what it printed so far.
async fn run_bounded(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the demo tests (Node.js 20)");
    // Read while it runs: a full pipe would block the child, and the output
    // so far is the diagnosis of a hang.
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let status = match tokio::time::timeout(BOUND, child.wait()).await {
        Ok(status) => status.expect("wait for the child"),
        Err(_) => {
            stop(&mut child).await;
            let stdout = String::from_utf8_lossy(&stdout.await.unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&stderr.await.unwrap()).into_owned();
            panic!("{what} did not finish within {BOUND:?} (killed it):\n{stdout}\n{stderr}");
        }
    };
    Output { status, stdout: stdout.await.unwrap(), stderr: stderr.await.unwrap() }
}

/// Reads `pipe` to its end in a task.
fn read_all(mut pipe: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf).await;
        buf
    })
}

/// Kills `child` and reaps it; returns how it ended, for diagnostics.
async fn stop(child: &mut Child) -> String {
    let _ = child.kill().await;
    match child.wait().await {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait: {e}"),
    }
}
