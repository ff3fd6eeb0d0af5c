//! The demo web page in a real browser: Debian's Chromium, headless, driven
//! by `tests/node/browser.mjs` (playwright-core over the DevTools protocol,
//! no browser download) against the eventfeed binary and `demo/serve.mjs`.
//!
//! Cases: the page connects on polling and upgrades to websocket with its
//! snapshot; two tenants in isolated browser contexts (posts from A's form and
//! over REST reach every A page, never B's); replay from a chosen event shows
//! exactly the later ones; a connection cut by a TCP proxy while events are
//! posted comes back recovered with every event once, in order; a page from
//! an origin that is not allowed is refused and shows the error (the 403 is
//! read from the server's audit line and the DevTools network log).
//!
//! The official Socket.IO Admin UI (its static build from the npm package,
//! unmodified, `tests/node/admin-ui.mjs`): logged in, it shows the server,
//! its namespaces and sockets (with their tenant and user); read-only it
//! offers no action; read-write, disconnecting a socket from the UI
//! disconnects that client; a wrong password is refused.
//!
//! Each case saves a screenshot under the test's temporary folder (printed).
//! Without Chromium the test fails with a one-line hint (`./test.sh` installs
//! it); it is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[tokio::test]
async fn the_web_console_works_in_a_real_browser() {
    common::ensure_node_modules(&common::demo_dir());
    let shots = std::env::temp_dir().join(format!("eventfeed-browser-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    let out =
        common::node("browser.mjs", &["--bin", env!("CARGO_BIN_EXE_eventfeed"), "--shots", shots.to_str().unwrap()])
            .await;
    println!("screenshots: {}", shots.display());
    common::assert_node_ok(&out);
    // Every case left its screenshot.
    for name in ["1-connected", "2-tenant-a", "2-tenant-b", "3-replay", "4-recovered", "5-refused-origin"] {
        let png = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    }
}

#[tokio::test]
async fn the_official_admin_ui_works_unmodified() {
    let shots = std::env::temp_dir().join(format!("eventfeed-admin-ui-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    let out =
        common::node("admin-ui.mjs", &["--bin", env!("CARGO_BIN_EXE_eventfeed"), "--shots", shots.to_str().unwrap()])
            .await;
    println!("screenshots: {}", shots.display());
    common::assert_node_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 passed, 0 failed"));
    for name in ["admin-dashboard", "admin-sockets", "admin-socket", "admin-readonly", "admin-refused"] {
        let png = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    }
}
