//! Shared helpers of the integration tests: start a server on 127.0.0.1:0,
//! and run the official Node clients (installing them with `npm ci` on first use).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

use eventfeed::server::{self, Router, ServerConfig};
use tokio_util::sync::CancellationToken;

/// A server running in this process; shut down on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: Option<tokio::task::JoinHandle<bool>>,
}

impl TestServer {
    /// Serves `router` on a free loopback port.
    pub async fn start(router: Router) -> Self {
        Self::start_with(router, ServerConfig::default()).await
    }

    /// Serves `router` with `config` on a free loopback port.
    pub async fn start_with(router: Router, config: ServerConfig) -> Self {
        Self::start_until(router, config, CancellationToken::new()).await
    }

    /// Serves `router` with `config` on a free loopback port until `shutdown`
    /// (an app's own token: what it serves ends with the server, as in the binary).
    pub async fn start_until(router: Router, config: ServerConfig, shutdown: CancellationToken) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(server::serve(listener, router, config, shutdown.clone()));
        TestServer { addr, shutdown, handle: Some(handle) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts down and returns whether the drain finished in time.
    pub async fn stop(mut self) -> bool {
        self.shutdown.cancel();
        self.handle.take().unwrap().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The folder with the Node test scripts and their package.json.
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("node")
}

/// The demo folder (`demo/`): the demo scripts and their package.json.
pub fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo")
}

/// The folders whose Node packages this test binary has checked already.
static NPM: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs the pinned Node packages of `dir` (`npm ci`) unless every
/// dependency of its package.json is there already (an install made before a
/// dependency was added counts as missing).
pub fn ensure_node_modules(dir: &Path) {
    // Held through the install: two tests of one binary never run `npm ci`
    // in the same folder at once.
    let mut done = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|d| d == dir) {
        return;
    }
    let manifest_path = dir.join("package.json");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path).unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", manifest_path.display()));
    let missing = !dir.join("node_modules").join(".package-lock.json").exists()
        || manifest["dependencies"].as_object().is_some_and(|deps| {
            deps.keys().any(|name| !dir.join("node_modules").join(name).join("package.json").exists())
        });
    if missing {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .status()
            .expect("npm is needed for the Node tests (Node.js 20 with npm)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    done.push(dir.to_path_buf());
}

/// Runs `node <script> <args>` from tests/node and returns its output.
pub async fn node(script: &str, args: &[&str]) -> Output {
    node_with_env(script, args, &[]).await
}

/// Asserts that a node run succeeded, printing its output either way.
pub fn assert_node_ok(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "node run failed:\n{stdout}\n{stderr}");
}

/// Runs `node <script> <args>` from tests/node with extra environment
/// variables and returns its output.
pub async fn node_with_env(script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    ensure_node_modules(&node_dir());
    tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(node_dir())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node is needed for the Node tests")
}
