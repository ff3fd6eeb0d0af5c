//! Every script in `demo/` runs against a real server, so a demo cannot rot
//! silently: `socket-demo.mjs` tours the feed served in this process (with
//! the demo tokens, and with JWTs: a token's warning, refresh, expiry and
//! recovery), `serve.mjs` serves the demo page and the official client
//! bundle. A script added to `demo/` fails `every_demo_script_has_a_test`
//! until it gets a test here.

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
    ensure_node_modules(&demo_dir());
    let mut child = Command::new("node")
        .arg("serve.mjs")
        .env("PORT", "0")
        .current_dir(demo_dir())
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
    let port: u16 = line
        .strip_prefix("demo page on http://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("serve.mjs announces its address: {line:?}"));
    assert_ne!(port, 0, "serve.mjs prints the port it was given, not the one it listens on");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

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

    stop(&mut child).await;
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
