//! The cluster adapter, sending side: one instance asks the others —
//! `serverCount`, `fetchSockets`, `socketsJoin`/`socketsLeave`, a broadcast
//! to a room, `serverSideEmit` with acknowledgements, every room,
//! `disconnectSockets` — through Redis, in `@socket.io/redis-adapter`'s wire
//! format; and a tenant's room is never joined or left from another server.
//! Two instances run in this process on one throw-away Redis; a websocket
//! client of `/events` is connected to the second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use cluster::RedisServer;
use common::TestServer;
use eventfeed::app::App;
use eventfeed::backend::redis::{RedisAdapter, RedisStore};
use eventfeed::config::RedisConfig;
use eventfeed::feed::{FeedConfig, Tokens};
use eventfeed::sio::{BroadcastOp, SioConfig};
use feed::{A, FeedClient, NSP, parse_frame, quiet_engine};
use raw::eventually;
use serde_json::{Value, json};

type RedisApp = App<RedisStore, RedisAdapter>;

/// An instance in Redis mode on `url`, served on a free port, once its
/// subscription is up.
async fn instance(url: &str) -> (RedisApp, TestServer) {
    let redis = RedisConfig { url: url.to_owned(), timeout: Duration::from_secs(3), ..RedisConfig::default() };
    let config = FeedConfig { recovery_window: Duration::from_secs(60), ..FeedConfig::default() };
    let app = App::redis(redis, config, Tokens::demo(), quiet_engine(1_000_000), SioConfig::default()).unwrap();
    let server = TestServer::start(app.router()).await;
    eventually("the instance is ready (its subscription is up)", || app.feed.is_ready().is_ok()).await;
    (app, server)
}

fn all() -> BroadcastOp<'static> {
    BroadcastOp::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_reaches_the_sockets_of_another() {
    let redis = RedisServer::start();
    let (a, _server_a) = instance(&redis.url()).await;
    let (b, server_b) = instance(&redis.url()).await;
    let io = a.engine.handler();
    assert_eq!(io.server_count(NSP).await.unwrap(), 2);

    let mut client = FeedClient::connect(server_b.addr, A).await;
    let sid = b.namespace.sockets_in(&all()).first().expect("the client's socket on B").id().to_owned();

    // fetchSockets: A has none of its own; B's comes with its rooms (its own
    // id among them, as Node lists them) and nothing of its credentials.
    let fetched = io.fetch_sockets(NSP, &all()).await.unwrap();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0].id, sid);
    let mut rooms = fetched[0].rooms.clone();
    rooms.sort();
    let mut expected = vec![sid.clone(), "tenant:company_a".to_owned()];
    expected.sort();
    assert_eq!(rooms, expected);
    assert_eq!(fetched[0].handshake["auth"], json!({}), "the CONNECT payload holds a token: never sent");
    let only_b = io.fetch_sockets(NSP, &BroadcastOp { rooms: &["tenant:company_b"], ..all() }).await.unwrap();
    assert!(only_b.is_empty(), "selected by room: {only_b:?}");

    // socketsJoin from A puts B's socket in a room; a tenant's room is refused.
    io.sockets_join(NSP, &BroadcastOp { rooms: &["tenant:company_a"], ..all() }, &["vip", "tenant:company_b"]).unwrap();
    eventually("B's socket joined vip", || b.namespace.room_size("vip") == 1).await;
    assert_eq!(b.namespace.room_size("tenant:company_b"), 0, "a tenant's room is joined only by its own server");
    let rooms = io.all_rooms(NSP).await.unwrap();
    for room in ["vip", "tenant:company_a", sid.as_str()] {
        assert!(rooms.iter().any(|r| r == room), "{room} in {rooms:?}");
    }

    // A broadcast to that room from A reaches the client on B.
    let stats = io.broadcast(NSP, &BroadcastOp { rooms: &["vip"], ..all() }, "announce", vec![json!("hi")], vec![]);
    assert_eq!(stats.unwrap().delivered, 0, "no socket of A is in vip");
    let got = client
        .take(|f| match parse_frame(f) {
            Some(('2', None, Value::Array(args))) if args.first() == Some(&json!("announce")) => Some(args),
            _ => None,
        })
        .await;
    assert_eq!(got, vec![json!("announce"), json!("hi")]);

    // serverSideEmit with acknowledgements: every other server answers.
    let answers = io.server_side_emit(NSP, "ping", vec![json!(1)], Some(Duration::from_secs(3))).await.unwrap();
    assert_eq!(answers, vec![Value::Null], "B answered, with no listener to give data");

    // socketsLeave, then disconnectSockets from A.
    io.sockets_leave(NSP, &all(), &["vip"]).unwrap();
    eventually("B's socket left vip", || b.namespace.room_size("vip") == 0).await;
    io.disconnect_sockets(NSP, &all(), false).unwrap();
    let disconnect = format!("41{NSP},");
    client.take(|f| (f == disconnect).then_some(())).await;
    eventually("B's socket is gone", || b.namespace.socket_count() == 0).await;
    assert!(io.fetch_sockets(NSP, &all()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_bounded_in_time_and_refused_for_unknown_namespaces() {
    let redis = RedisServer::start();
    let (a, _server) = instance(&redis.url()).await;
    let io = a.engine.handler();
    // Alone: nothing to ask, nothing to wait for.
    assert_eq!(io.server_count(NSP).await.unwrap(), 1);
    assert!(io.fetch_sockets(NSP, &all()).await.unwrap().is_empty());
    assert!(io.server_side_emit(NSP, "ping", vec![], Some(Duration::from_secs(1))).await.unwrap().is_empty());
    assert!(io.fetch_sockets("/nope", &all()).await.is_err());
    // A subscriber of the request channel that never answers (a server that
    // died without unsubscribing, say): the request times out instead of
    // hanging.
    let silent = cluster::silent_subscriber(redis.port(), &format!("socket.io-request#{NSP}#"));
    assert_eq!(io.server_count(NSP).await.unwrap(), 2);
    let started = std::time::Instant::now();
    let outcome = io.fetch_sockets(NSP, &all()).await;
    assert!(matches!(outcome, Err(eventfeed::sio::AdapterError::Timeout(_))), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(silent);
}

/// A Node socket.io server with `@socket.io/redis-adapter` on the same Redis
/// (tests/node/adapter_peer.mjs), and what it printed so far.
struct NodePeer {
    child: tokio::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NodePeer {
    async fn start(redis_url: &str) -> NodePeer {
        use tokio::io::AsyncBufReadExt;
        common::ensure_node_modules();
        let mut child = tokio::process::Command::new("node")
            .arg("adapter_peer.mjs")
            .env("REDIS_URL", redis_url)
            .current_dir(common::node_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node is needed for the Node tests");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        NodePeer { child, lines }
    }

    /// The first line starting with `prefix` (waited for, bounded), without the prefix.
    async fn line(&self, prefix: &str) -> String {
        let find = || self.lines.lock().unwrap().iter().find_map(|l| l.strip_prefix(prefix).map(str::to_owned));
        eventually(&format!("the Node peer printed {prefix:?}"), || find().is_some()).await;
        find().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_redis_adapter_server_answers_this_instances_requests() {
    let redis = RedisServer::start();
    let (a, _server) = instance(&redis.url()).await;
    let io = a.engine.handler();
    let mut peer = NodePeer::start(&redis.url()).await;
    let node_sid = peer.line("ready ").await;
    eventually_async(|| async { io.server_count(NSP).await.ok() == Some(2) }).await;

    let fetched = io.fetch_sockets(NSP, &all()).await.unwrap();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0].id, node_sid);
    assert!(fetched[0].rooms.iter().any(|r| r == "node-room"), "{fetched:?}");
    let in_room = io.fetch_sockets(NSP, &BroadcastOp { rooms: &["node-room"], ..all() }).await.unwrap();
    assert_eq!(in_room.len(), 1);

    io.sockets_join(NSP, &BroadcastOp { rooms: &["node-room"], ..all() }, &["vip"]).unwrap();
    eventually_async(|| async {
        let sockets = io.fetch_sockets(NSP, &BroadcastOp { rooms: &["vip"], ..all() }).await.unwrap_or_default();
        sockets.len() == 1
    })
    .await;
    io.broadcast(NSP, &BroadcastOp { rooms: &["vip"], ..all() }, "announce", vec![json!({"n": 1})], vec![]).unwrap();
    assert_eq!(peer.line("event announce ").await, r#"[{"n":1}]"#);

    let answers = io.server_side_emit(NSP, "ping", vec![json!(7)], Some(Duration::from_secs(3))).await.unwrap();
    assert_eq!(answers, vec![json!({"pong": 7})]);

    io.disconnect_sockets(NSP, &BroadcastOp { rooms: &["vip"], ..all() }, false).unwrap();
    assert_eq!(peer.line("disconnected ").await, "io server disconnect");
    drop(peer.child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), peer.child.wait()).await;
}

/// Waits (bounded) until the async `check` holds.
async fn eventually_async<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < end, "a condition did not hold within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
