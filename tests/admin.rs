//! The Socket.IO Admin UI's namespace (`/admin`, `NB_BACKEND_ADMIN_UI=on`)
//! driven by `tests/node/admin.mjs` with the official client, as the Admin
//! UI drives it, against the eventfeed binary: a wrong password refused with
//! the UI's own message; a login's session, `config`, `all_sockets` and
//! `server_stats`; a feed socket seen connecting (its tenant and user, its
//! rooms, its upgrade, never its token nor its `sid`) and leaving; read-only
//! ignoring raw commands; read-write carrying out `join`, `emit` and
//! `_disconnect` (the client comes back and recovers) but never on a tenant's
//! room, the feed's own events or `/admin`; logins bounded per peer; in Redis
//! mode a UI connected to one instance sees and acts on every instance.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[tokio::test]
async fn the_admin_namespace_speaks_the_admin_ui_protocol() {
    let out = common::node("admin.mjs", &["--bin", env!("CARGO_BIN_EXE_eventfeed")]).await;
    common::assert_node_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("7 passed, 0 failed"));
}
