//! The short form of the delivery fault harness (`bench/faults/`): official
//! `socket.io-client` subscribers and REST publishers with `Idempotency-Key`,
//! through a fault-injecting TCP proxy, against the eventfeed binary.
//!
//! - jitter: 50 websocket subscribers over 3 tenants, 100 events/s for 10 s,
//!   every subscriber connection cut at a random age of 2–8 s;
//! - polling: 30 long-polling subscribers on one instance, their
//!   connections cut at random (one per client every 5 s on average);
//! - deploy: 2 instances in Redis mode, each in turn stopped (SIGTERM) and
//!   started again while the load runs;
//! - publisher cuts: the publishers' own connections cut mid-request and
//!   after the server answered, so retries must not create events twice.
//!
//! Each asserts correctness from the harness's scorecard — every event
//! delivered exactly once, none lost, duplicated or reordered, no acknowledged
//! write missing from the store, no write created twice — never timing.
//! The full scenarios, beside Node socket.io, are `bench/faults.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn faults_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench").join("faults")
}

/// Runs one scenario of the harness and returns its scorecard.
fn run(scenario: &str, args: &[&str]) -> Value {
    let dir = faults_dir();
    common::ensure_node_modules(&dir);
    let json = std::env::temp_dir().join(format!("faults-{scenario}-{}.json", std::process::id()));
    let out = Command::new("node")
        .arg("harness.mjs")
        .args(["--server", "eventfeed", "--bin", env!("CARGO_BIN_EXE_eventfeed"), "--scenario", scenario])
        .args(args)
        .args(["--json", json.to_str().unwrap(), "--quiet"])
        .current_dir(&dir)
        .output()
        .expect("node is needed for the fault harness (Node.js 20)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let card = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no scorecard ({e}):\n{stdout}\n{stderr}"));
    let _ = std::fs::remove_file(&json);
    let card: Value = serde_json::from_str(&card).unwrap();
    println!("{card:#}");
    assert!(out.status.success(), "the harness says a guarantee did not hold:\n{stdout}\n{stderr}");
    card
}

/// The guarantees, one by one, so a failure names the one that broke.
fn assert_held(card: &Value) {
    let sub = &card["subscribers"];
    let publ = &card["publishers"];
    assert!(publ["acknowledged"].as_u64().unwrap() > 0, "nothing was written: {card:#}");
    assert!(sub["expected"].as_u64().unwrap() > 0, "nothing was expected: {card:#}");
    assert_eq!(sub["lost"], 0, "events lost");
    assert_eq!(sub["duplicated"], 0, "events delivered twice");
    assert_eq!(sub["reordered"], 0, "events out of order");
    assert_eq!(sub["exactlyOnce"], 1.0, "not exactly once");
    assert_eq!(publ["ackedMissingFromStore"], 0, "acknowledged writes missing from the store");
    assert_eq!(publ["duplicateWrites"], 0, "writes created twice");
    assert_eq!(publ["stored"], publ["acknowledged"], "stored ≠ acknowledged");
}

#[test]
fn jitter_every_subscriber_cut_every_few_seconds_loses_nothing() {
    let card = run("jitter", &["--clients", "50", "--duration", "10"]);
    assert_held(&card);
    let sub = &card["subscribers"];
    // The faults happened: connections were cut and clients came back.
    assert!(card["proxies"]["subscribers"]["cut"].as_u64().unwrap() >= 20, "too few cuts: {card:#}");
    assert!(sub["reconnects"].as_u64().unwrap() >= 20, "too few reconnects: {card:#}");
}

#[test]
fn long_polling_subscribers_cut_at_random_lose_nothing() {
    let card = run("polling", &["--clients", "30", "--duration", "8"]);
    assert_held(&card);
    assert!(card["subscribers"]["reconnects"].as_u64().unwrap() >= 10, "too few reconnects: {card:#}");
}

#[test]
fn a_rolling_deploy_of_two_instances_in_redis_mode_loses_nothing() {
    let card = run("deploy", &["--clients", "40", "--duration", "12", "--instances", "2"]);
    assert_held(&card);
    assert_eq!(card["faults"].as_array().unwrap().len(), 2, "both instances restarted: {card:#}");
    // Every client of a stopped instance came back on the other one.
    assert!(card["subscribers"]["reconnects"].as_u64().unwrap() >= 40, "{card:#}");
}

#[test]
fn publisher_cuts_mid_request_create_every_event_once() {
    let card = run("pubcuts", &["--clients", "20", "--duration", "8"]);
    assert_held(&card);
    let publ = &card["publishers"];
    // Answers were lost after the write was stored, and the retry with the
    // same key got the original event back.
    assert!(card["proxies"]["publishers"]["cutResponses"].as_u64().unwrap() > 0, "{card:#}");
    assert!(publ["replayedByKey"].as_u64().unwrap() > 0, "no retry was replayed: {card:#}");
}
