//! The `eventfeed` binary: `--help`, configuration errors, a malformed tokens
//! file, and a real start with the demo tokens followed by a SIGTERM drain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eventfeed"));
    // A clean environment for the variables we read.
    for (k, _) in std::env::vars() {
        if k.starts_with("NB_BACKEND_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for (name, default) in [
        ("NB_BACKEND_HOST", "127.0.0.1"),
        ("NB_BACKEND_PORT", "3000"),
        ("NB_BACKEND_SIO_NAMESPACE", "/events"),
        ("NB_BACKEND_EVENTS_BUFFER_SIZE", "500"),
        ("NB_BACKEND_SIO_PING_INTERVAL", "25000"),
        ("NB_BACKEND_SIO_PING_TIMEOUT", "20000"),
        ("NB_BACKEND_MAX_PAYLOAD", "1000000"),
        ("NB_BACKEND_TOKENS_FILE", "(none)"),
        ("NB_BACKEND_RATE_LIMIT", "100/s"),
        ("NB_BACKEND_TENANT_RATE_LIMIT", "1000/s"),
        ("NB_BACKEND_ALLOWED_ORIGINS", "(none)"),
        ("NB_BACKEND_MAX_BODY", "65536"),
        ("NB_BACKEND_RECOVERY_WINDOW", "120000"),
        ("NB_BACKEND_LOG", "info"),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(line.contains(default), "{line}");
    }
}

#[test]
fn a_bad_value_stops_start_up_naming_the_variable_and_range() {
    let out = bin().env("NB_BACKEND_EVENTS_BUFFER_SIZE", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("NB_BACKEND_EVENTS_BUFFER_SIZE") && err.contains("from 1 to 1000000"), "{err}");
}

#[test]
fn a_malformed_tokens_file_names_the_entry() {
    let dir = std::env::temp_dir().join(format!("eventfeed-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.json");
    std::fs::write(&path, r#"{"tokens":[{"token":"t","user":"ok","tenants":["a"],"role":"admin"},{"token":"u","user":"bob","tenants":["a"],"role":"owner"}]}"#).unwrap();
    let out = bin().env("NB_BACKEND_TOKENS_FILE", &path).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("entry 1") && err.contains("bob") && err.contains("role"), "{err}");
}

#[test]
fn starts_with_demo_tokens_warns_and_exits_zero_on_sigterm() {
    serve_one_request_and_drain(bin(), None);
}

/// On one core the binary runs tokio's single-threaded scheduler: the same
/// start, request and SIGTERM drain, with the process pinned to core 0
/// (`taskset`, from util-linux).
#[test]
fn on_one_core_runs_the_single_threaded_scheduler() {
    let mut c = Command::new("taskset");
    c.args(["-c", "0", env!("CARGO_BIN_EXE_eventfeed")]);
    for (k, _) in std::env::vars() {
        if k.starts_with("NB_BACKEND_") {
            c.env_remove(k);
        }
    }
    serve_one_request_and_drain(c, Some("current_thread"));
}

/// Starts `cmd` on port 0 with the demo tokens, checks the demo-token warning
/// (and the runtime's scheduler when given), makes one REST call, sends
/// SIGTERM and expects exit status 0.
fn serve_one_request_and_drain(mut cmd: Command, scheduler: Option<&str>) {
    let mut child = cmd
        .env("NB_BACKEND_PORT", "0")
        .env("NB_BACKEND_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut warned = false;
    let mut started = None;
    let addr = loop {
        let line = lines.next().expect("the server printed its address").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "runtime started" {
            started = v["scheduler"].as_str().map(str::to_owned);
        }
        if v["message"].as_str().is_some_and(|m| m.contains("DEMO tokens")) {
            warned = true;
            assert_eq!(v["level"], "WARN");
        }
        if v["message"] == "eventfeed listening" {
            break v["addr"].as_str().unwrap().to_owned();
        }
    };
    assert!(warned, "a loud warning about the demo tokens");
    assert!(started.is_some(), "the runtime's start is logged");
    if let Some(expected) = scheduler {
        assert_eq!(started.as_deref(), Some(expected));
    }
    // One REST call with a demo token.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nX-TENANT-ID: company_a\r\nX-User-Token: token_reader_a\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with(r#"{"events":[],"hasMore":false,"gap":false}"#), "{resp}");
    // SIGTERM: drain and exit 0.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert!(code.success(), "exit status {code:?}");
}
