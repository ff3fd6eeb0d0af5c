//! Redis mode failover with the official client (tests/node/failover.mjs):
//! Redis and two `eventfeed` instances A and B; the Node script drives the
//! clients (through a TCP proxy of its own, so their built-in reconnection is
//! what takes them to the other instance) and asks this side, over its
//! stdout/stdin, to SIGKILL, SIGTERM or restart an instance at the moment it
//! chooses.
//!
//! - `failover_by_cursor` (recovery off): 24 clients on A (websocket-only and
//!   default transports; `auth` a function sending `sinceId` of the last event
//!   seen), a publisher on B; A SIGKILLed midway and restarted; every client sees every
//!   acknowledged event exactly once, in `seq` order, and nothing of the other
//!   tenant; the restarted A serves the same history.
//! - `recovery_across_instances`: A stopped with SIGTERM; the clients' own
//!   reconnection lands on B with `recovered === true`, the same id and exactly
//!   the missed events; a pid with another tenant's or user's token does not
//!   recover, and the owner still does afterwards.
//! - `restart_of_every_instance`: both instances restarted; `auth.sinceId` of
//!   an old event, `GET /api/events/{id}` and a session kept at SIGTERM all
//!   still work on either instance, and `seq` goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "common/cluster.rs"]
mod cluster;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cluster::{Instance, RedisServer};
use serde_json::json;

/// Bound of one scenario (the Node script's own checks are bounded too).
const SCENARIO_BOUND: Duration = Duration::from_secs(90);

/// Kills the Node child if the test panics.
struct NodeChild(Child);

impl Drop for NodeChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two instances the script may act on.
struct Pair {
    a: Instance,
    b: Instance,
    a_up: bool,
    b_up: bool,
}

impl Pair {
    fn start(redis: &RedisServer) -> Pair {
        Pair::start_with(redis, "60000")
    }

    /// Two instances with this recovery window (ms; "0": off).
    fn start_with(redis: &RedisServer, recovery_window: &str) -> Pair {
        let env = [("NB_BACKEND_RECOVERY_WINDOW", recovery_window)];
        let a = Instance::start(Some(&redis.url()), &env);
        let b = Instance::start(Some(&redis.url()), &env);
        a.wait_ready(Duration::from_secs(10));
        b.wait_ready(Duration::from_secs(10));
        Pair { a, b, a_up: true, b_up: true }
    }

    fn urls(&self) -> serde_json::Value {
        json!({
            "A": if self.a_up { Some(self.a.url()) } else { None },
            "B": if self.b_up { Some(self.b.url()) } else { None },
            "pids": {"A": self.a.pid(), "B": self.b.pid()},
        })
    }

    /// Executes `verb` on `which` and returns the JSON answer for the script.
    fn act(&mut self, redis: &RedisServer, verb: &str, which: &str) -> serde_json::Value {
        if verb == "sessions" {
            // The kept sessions in Redis: `eventfeed:session:<pid>`, with their TTL.
            let reply = redis.redis_cmd(&["KEYS", "eventfeed:session:*"]);
            let mut kept = serde_json::Map::new();
            for key in reply.lines().filter(|l| l.starts_with("eventfeed:session:")) {
                let pid = key.trim_start_matches("eventfeed:session:");
                kept.insert(pid.to_owned(), json!(redis.redis_int(&["PTTL", key])));
            }
            let mut answer = self.urls();
            answer["ok"] = json!(true);
            answer["sessions"] = serde_json::Value::Object(kept);
            return answer;
        }
        let (inst, up) = match which {
            "A" => (&mut self.a, &mut self.a_up),
            "B" => (&mut self.b, &mut self.b_up),
            _ => return json!({"ok": false, "error": format!("no instance {which:?}")}),
        };
        let mut code = None;
        match verb {
            "kill9" => {
                inst.kill9();
                *up = false;
            }
            "terminate" => {
                code = inst.terminate().code();
                *up = false;
            }
            "restart" => {
                inst.restart();
                inst.wait_ready(Duration::from_secs(10));
                *up = true;
            }
            _ => return json!({"ok": false, "error": format!("unknown verb {verb:?}")}),
        }
        eprintln!("[rust] {verb} {which}: done (exit code {code:?})");
        let mut answer = self.urls();
        answer["ok"] = json!(true);
        answer["code"] = json!(code);
        answer
    }

    fn dump_logs(&self, redis: &RedisServer) {
        eprintln!("---- instance A ({}) ----\n{}", self.a.url(), self.a.logs());
        eprintln!("---- instance B ({}) ----\n{}", self.b.url(), self.b.logs());
        eprintln!("---- redis ----\n{}", redis.log_tail());
    }
}

fn reply(stdin: &mut ChildStdin, answer: &serde_json::Value) {
    // The script may have died meanwhile: its exit status tells.
    let _ = writeln!(stdin, "{answer}").and_then(|()| stdin.flush());
}

/// Runs `node failover.mjs <scenario>` against `pair`, answering its `@@ verb X`
/// requests, and asserts that it ends with every check passed.
fn run_scenario(scenario: &str, redis: &RedisServer, pair: &mut Pair) {
    common::ensure_node_modules(&common::node_dir());
    let child = Command::new("node")
        .arg("failover.mjs")
        .arg(scenario)
        .env("EF_A", pair.a.url())
        .env("EF_B", pair.b.url())
        .current_dir(common::node_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is needed for the Node tests (Node.js 20 with npm)");
    let mut child = NodeChild(child);
    let mut stdin = child.0.stdin.take().unwrap();
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let started = Instant::now();
    let end = started + SCENARIO_BOUND;
    let mut output = Vec::new();
    let mut timed_out = false;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("[{:>6.2}s] {line}", started.elapsed().as_secs_f64());
                if let Some(request) = line.strip_prefix("@@ ") {
                    let mut words = request.split_whitespace();
                    let (verb, which) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    let answer = pair.act(redis, verb, which);
                    reply(&mut stdin, &answer);
                }
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    drop(stdin);
    if timed_out {
        let _ = child.0.kill();
    }
    let status = child.0.wait().unwrap();
    let stderr = err_thread.join().unwrap_or_default();
    if !stderr.is_empty() {
        eprintln!("---- node stderr ----\n{stderr}");
    }
    let summary = output.iter().rev().find(|l| l.ends_with(" failed")).cloned().unwrap_or_default();
    let failed: Vec<&String> = output.iter().filter(|l| l.starts_with("not ok")).collect();
    if timed_out || !status.success() || !failed.is_empty() || !summary.ends_with(" 0 failed") {
        pair.dump_logs(redis);
        panic!(
            "failover.mjs {scenario}: {}status {status}, {summary:?}\n{}",
            if timed_out { format!("timed out after {SCENARIO_BOUND:?}, ") } else { String::new() },
            failed.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
    // The script ran every check it has (a scenario that stops early fails above).
    let passed: usize = summary.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(passed >= 3, "failover.mjs {scenario}: only {passed} checks ran");
    eprintln!("[rust] failover.mjs {scenario}: {summary} in {:.1}s", started.elapsed().as_secs_f64());
}

/// GET `path` with company_a's credentials: (status, body as JSON).
fn get_a(inst: &Instance, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = cluster::http_request(
        inst.addr(),
        "GET",
        path,
        &[("X-TENANT-ID", "company_a"), ("X-User-Token", "token_admin_a")],
        None,
    );
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body:?}")))
}

#[test]
fn failover_by_cursor() {
    let redis = RedisServer::start();
    // Recovery off: the clients come back by their cursor (`sinceId`) alone.
    // (With it on, they would recover their sessions on B instead: see
    // tests/cluster.rs, a_session_recovers_on_another_instance_after_its_own_crashed.)
    let mut pair = Pair::start_with(&redis, "0");
    let (a_before, b_before) = (pair.a.pid(), pair.b.pid());
    run_scenario("failover", &redis, &mut pair);
    // The script had A SIGKILLed and restarted: a new process; B the same.
    assert!(pair.a.is_running() && pair.b.is_running());
    assert_ne!(pair.a.pid(), a_before);
    assert_eq!(pair.b.pid(), b_before);
    // Seen from here too: A and B serve the same 156 company_a events.
    let (sa, on_a) = get_a(&pair.a, "/api/events?limit=1000");
    let (sb, on_b) = get_a(&pair.b, "/api/events?limit=1000");
    assert_eq!((sa, sb), (200, 200));
    assert_eq!(on_a, on_b);
    let seqs: Vec<u64> = on_a["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=156).collect::<Vec<u64>>());
}

#[test]
fn recovery_across_instances() {
    let redis = RedisServer::start();
    let mut pair = Pair::start(&redis);
    run_scenario("recovery", &redis, &mut pair);
    assert!(!pair.a_up, "A was stopped");
    assert!(pair.b.is_running());
}

#[test]
fn restart_of_every_instance() {
    let redis = RedisServer::start();
    let mut pair = Pair::start(&redis);
    run_scenario("restarts", &redis, &mut pair);
    let (status, page) = get_a(&pair.b, "/api/events?limit=1000");
    assert_eq!(status, 200);
    assert_eq!(page["events"].as_array().unwrap().last().unwrap()["seq"], 16);
}
