//! The cluster test harness itself (tests/common/cluster.rs): a throw-away
//! Redis that keeps its data over a restart (AOF), raw RESP commands, and an
//! `eventfeed` child process that serves, is killed and restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/cluster.rs"]
mod cluster;

use cluster::{Instance, RedisServer};

#[test]
fn redis_starts_answers_and_keeps_its_data_over_a_restart() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.redis_cmd(&["PING"]), "+PONG\r\n");
    assert_eq!(redis.redis_cmd(&["SET", "harness:key", "value with spaces ✓"]), "+OK\r\n");
    assert_eq!(redis.redis_cmd(&["GET", "harness:key"]), "$21\r\nvalue with spaces ✓\r\n");
    assert_eq!(redis.redis_cmd(&["GET", "harness:missing"]), "$-1\r\n");
    assert_eq!(redis.redis_int(&["DBSIZE"]), 1);
    assert_eq!(redis.redis_cmd(&["RPUSH", "harness:list", "a", "b"]), ":2\r\n");
    assert_eq!(redis.redis_cmd(&["LRANGE", "harness:list", "0", "-1"]), "*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_eq!(redis.numsub("nobody-listens"), 0);
    assert!(redis.redis_cmd(&["NOSUCHCOMMAND"]).starts_with("-ERR"));

    // A clean stop and a restart on the same port and dir: the AOF is replayed.
    let port = redis.port();
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.redis_cmd(&["GET", "harness:key"]), "$21\r\nvalue with spaces ✓\r\n");

    // A crash (SIGKILL) loses nothing acknowledged either (appendfsync always).
    assert_eq!(redis.redis_cmd(&["SET", "harness:after", "1"]), "+OK\r\n");
    redis.kill();
    assert!(!redis.is_running());
    assert!(cluster::redis_cmd_at(port, &["PING"]).is_err(), "nothing answers while it is down");
    redis.restart();
    assert_eq!(redis.redis_int(&["DBSIZE"]), 3);
    assert_eq!(redis.redis_cmd(&["GET", "harness:after"]), "$1\r\n1\r\n");

    redis.stop();
    assert!(!redis.is_running());
    assert!(cluster::redis_cmd_at(port, &["PING"]).is_err());
    let dir = redis.dir().to_owned();
    drop(redis);
    assert!(!dir.exists(), "the data dir is removed on drop");
}

#[test]
fn two_redis_servers_are_independent() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    a.redis_cmd(&["SET", "k", "a"]);
    assert_eq!(b.redis_cmd(&["GET", "k"]), "$-1\r\n");
}

#[test]
fn an_instance_serves_is_killed_and_restarts() {
    let mut inst = Instance::start(None, &[("NB_BACKEND_EVENTS_BUFFER_SIZE", "10")]);
    assert!(inst.addr().ip().is_loopback());
    assert_ne!(inst.addr().port(), 0);
    let (status, body) = inst.get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"status":"ok"}"#);
    inst.wait_ready(std::time::Duration::from_secs(5));
    assert!(!inst.log_lines_with("eventfeed listening").is_empty(), "{}", inst.logs());

    // A write and a read with the demo tokens.
    let (status, body) = cluster::http_request(
        inst.addr(),
        "POST",
        "/api/events",
        &[("X-TENANT-ID", "company_a"), ("X-User-Token", "token_admin_a")],
        Some(r#"{"message":"from the harness"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["seq"], 1);

    inst.kill9();
    assert!(!inst.is_running());
    assert!(std::net::TcpStream::connect(inst.addr()).is_err(), "nothing listens after kill9");

    // Restarted with the same environment (in-memory mode: the event is gone).
    inst.restart();
    assert_eq!(inst.get("/healthz").0, 200);
    let (status, body) = cluster::http_request(
        inst.addr(),
        "GET",
        "/api/events",
        &[("X-TENANT-ID", "company_a"), ("X-User-Token", "token_reader_a")],
        None,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"events":[],"hasMore":false,"gap":false}"#));

    // SIGTERM: a clean drain, exit 0.
    let status = inst.terminate();
    assert!(status.success(), "{status:?}\n{}", inst.logs());
}

#[test]
fn an_instance_with_a_bad_setting_panics_with_its_output() {
    let err = std::panic::catch_unwind(|| Instance::start(None, &[("NB_BACKEND_EVENTS_BUFFER_SIZE", "0")]))
        .err()
        .expect("start-up fails");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("NB_BACKEND_EVENTS_BUFFER_SIZE"), "{msg}");
}
