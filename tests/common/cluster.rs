//! Cluster test harness: a throw-away `redis-server` per test ([`RedisServer`])
//! and `eventfeed` binaries running as child processes ([`Instance`]), so the
//! tests can run several instances on one Redis, kill them, restart them, and
//! restart Redis itself (append-only file on, so its data survives).
//!
//! Included by the tests with `#[path = "common/cluster.rs"] mod cluster;`.
//!
//! Nothing here sleeps for a fixed time: every wait polls a condition with a
//! short interval and a bound, and panics with the diagnostics (Redis log tail,
//! the instance's last log lines) when the bound is hit.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long Redis may take to answer PING after a (re)start.
const REDIS_START: Duration = Duration::from_secs(10);
/// How long an instance may take to print "eventfeed listening".
const INSTANCE_START: Duration = Duration::from_secs(20);
/// How long a SIGTERMed process may take to exit (the contract says 10 s).
const EXIT_WAIT: Duration = Duration::from_secs(15);
/// Poll interval of every bounded wait.
const POLL: Duration = Duration::from_millis(20);
/// Instance log lines kept for diagnostics.
const LOG_LINES: usize = 200;

const REDIS_NOT_FOUND: &str = "redis-server not found: install it with `apt-get install redis-server` (Debian/Ubuntu)";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A free loopback port (bound, read, released: another process may take it
/// in between, which the callers tolerate by retrying).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A fresh, empty directory under the system temp dir.
fn fresh_dir(what: &str) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("eventfeed-{what}-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Sends SIGTERM to `pid` with the `kill` command.
fn sigterm(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Waits (bounded) for `child` to exit; SIGKILLs it and panics past the bound.
fn wait_bounded(child: &mut Child, what: &str, bound: Duration) -> ExitStatus {
    let end = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {bound:?} of SIGTERM (killed it)");
        }
        std::thread::sleep(POLL);
    }
}

// ------------------------------------------------------------------ RESP

/// Encodes one command as a RESP array of bulk strings.
pub fn resp_encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one complete RESP2/RESP3 reply and returns its raw text.
fn resp_read(r: &mut impl BufRead, out: &mut String) -> std::io::Result<()> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "redis closed the connection"));
    }
    out.push_str(&line);
    let head = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = head.split_at(1.min(head.len()));
    let n: i64 = rest.parse().unwrap_or(-1);
    match kind {
        // Bulk string / verbatim / blob error: N bytes and CRLF.
        "$" | "=" | "!" if n >= 0 => {
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        // Array / set / push: N replies; map: N pairs.
        "*" | "~" | ">" if n > 0 => {
            for _ in 0..n {
                resp_read(r, out)?;
            }
        }
        "%" if n > 0 => {
            for _ in 0..2 * n {
                resp_read(r, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Sends one command to the Redis at `port` and returns the raw reply
/// (`+OK\r\n`, `:3\r\n`, `$5\r\nhello\r\n`, `*2\r\n...`).
pub fn redis_cmd_at(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&resp_encode(args))?;
    let mut r = BufReader::new(s);
    let mut out = String::new();
    resp_read(&mut r, &mut out)?;
    Ok(out)
}

/// A connection to the Redis at `port` subscribed to `channel` that never
/// reads again: a server that counts in `PUBSUB NUMSUB` but never answers.
/// Unsubscribed when dropped (the connection closes).
pub fn silent_subscriber(port: u16, channel: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&resp_encode(&["SUBSCRIBE", channel])).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut out = String::new();
    resp_read(&mut r, &mut out).expect("the subscription is confirmed");
    s
}

// ------------------------------------------------------------ RedisServer

/// A `redis-server` child on a loopback port, with AOF (`appendfsync always`)
/// in its own temp dir. Killed, and the dir removed, on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh Redis on a free port and waits until it answers PING.
    /// Panics (one clear line) when `redis-server` is not installed.
    pub fn start() -> RedisServer {
        match Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{REDIS_NOT_FOUND}"),
            _ => {}
        }
        let dir = fresh_dir("redis");
        let mut last_err = String::new();
        // The free port can be taken between probing and binding: retry.
        for _ in 0..5 {
            let mut server = RedisServer { port: free_port(), dir: dir.clone(), child: None };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last_err = e;
                    server.dir = PathBuf::new(); // keep the dir for the next try
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("redis-server did not start: {last_err}");
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("open redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup redis.log"))
            .stderr(log)
            .spawn();
        match child {
            Ok(c) => self.child = Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{REDIS_NOT_FOUND}"),
            Err(e) => panic!("spawn redis-server: {e}"),
        }
    }

    /// Spawns and waits for `+PONG`; an early exit or the time bound is an error
    /// (the child is reaped).
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn();
        let end = Instant::now() + REDIS_START;
        loop {
            if let Ok(reply) = redis_cmd_at(self.port, &["PING"])
                && reply.starts_with("+PONG")
            {
                return Ok(());
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!("redis-server exited ({status}) on port {}:\n{}", self.port, self.log_tail()));
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Err(format!(
                    "redis-server on port {} did not answer PING within {REDIS_START:?}:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last lines of the Redis log, for diagnostics.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data dir (AOF, `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM (Redis flushes the AOF and exits) and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(child.id());
            wait_bounded(&mut child, "redis-server", EXIT_WAIT);
        }
    }

    /// SIGKILL and wait (a crash: with `appendfsync always` no acknowledged
    /// write is lost).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port and dir (stopping it first with
    /// SIGTERM if it still runs) and waits until it answers PING, that is
    /// until the AOF is loaded.
    pub fn restart(&mut self) {
        self.stop();
        // The port is ours, but a connection in TIME_WAIT or a client that
        // raced for it can make the first bind fail: a few tries.
        let mut last = String::new();
        for _ in 0..5 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }

    /// Copies the append-only files as they are now (`appendfsync always`:
    /// every acknowledged write is in them) to `name` beside them.
    pub fn copy_aof(&self, name: &str) {
        let to = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(self.dir.join("appendonlydir")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    /// Rolls Redis back to the append-only files copied as `name`: kills it,
    /// puts them in place, starts it again (it loads them).
    pub fn roll_back_to(&mut self, name: &str) {
        self.kill();
        let aof = self.dir.join("appendonlydir");
        std::fs::remove_dir_all(&aof).unwrap();
        std::fs::create_dir_all(&aof).unwrap();
        for entry in std::fs::read_dir(self.dir.join(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), aof.join(entry.file_name())).unwrap();
        }
        self.restart();
    }

    /// Sends one command and returns the raw RESP reply; panics if Redis
    /// does not answer.
    pub fn redis_cmd(&self, args: &[&str]) -> String {
        redis_cmd_at(self.port, args).unwrap_or_else(|e| panic!("redis {args:?} on port {}: {e}", self.port))
    }

    /// A command whose reply is an integer (`DBSIZE`, `PUBLISH`, ...).
    pub fn redis_int(&self, args: &[&str]) -> i64 {
        let reply = self.redis_cmd(args);
        reply
            .strip_prefix(':')
            .and_then(|r| r.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("redis {args:?}: not an integer reply: {reply:?}"))
    }

    /// `PUBSUB NUMSUB channel`: the number of subscribers of one channel.
    pub fn numsub(&self, channel: &str) -> i64 {
        let reply = self.redis_cmd(&["PUBSUB", "NUMSUB", channel]);
        // *2\r\n$N\r\nchannel\r\n:K\r\n
        reply
            .lines()
            .last()
            .and_then(|l| l.strip_prefix(':'))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("PUBSUB NUMSUB {channel}: {reply:?}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// --------------------------------------------------------------- Instance

/// An `eventfeed` binary running as a child process with a JSON log on
/// stdout, on a free loopback port. Killed on drop.
pub struct Instance {
    child: Option<Child>,
    addr: SocketAddr,
    redis_url: Option<String>,
    env: Vec<(String, String)>,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl Instance {
    /// Starts `eventfeed` with `NB_BACKEND_PORT=0`, `NB_BACKEND_LOG_FORMAT=json`,
    /// `NB_BACKEND_REDIS_URL=<redis_url>` when given, and `env` (which may
    /// override those), every other `NB_BACKEND_*` variable of this process
    /// removed. Waits (bounded) for the "eventfeed listening" log line.
    pub fn start(redis_url: Option<&str>, env: &[(&str, &str)]) -> Instance {
        let mut inst = Instance {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            redis_url: redis_url.map(str::to_owned),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            logs: Arc::new(Mutex::new(VecDeque::new())),
        };
        inst.spawn();
        inst
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_eventfeed"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("NB_BACKEND_") {
                c.env_remove(k);
            }
        }
        c.env("NB_BACKEND_PORT", "0").env("NB_BACKEND_LOG_FORMAT", "json");
        if let Some(url) = &self.redis_url {
            c.env("NB_BACKEND_REDIS_URL", url);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    fn push_log(logs: &Mutex<VecDeque<String>>, line: String) {
        let mut l = logs.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() >= LOG_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }

    fn spawn(&mut self) {
        let mut child = self.command().spawn().expect("spawn the eventfeed binary");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        // stdout: find the address, then keep draining so the child never
        // blocks on a full pipe.
        let logs = Arc::clone(&self.logs);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let listening = tx.is_some().then(|| serde_json::from_str::<serde_json::Value>(&line).ok()).flatten();
                // Logged before the address is handed over: once `start`
                // returns, the "eventfeed listening" line is in the logs.
                Self::push_log(&logs, line);
                if let Some(v) = listening
                    && v["message"] == "eventfeed listening"
                    && let Some(addr) = v["addr"].as_str()
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let logs = Arc::clone(&self.logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                Self::push_log(&logs, format!("stderr: {line}"));
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(INSTANCE_START) {
            Ok(addr) => {
                self.addr = addr.parse().unwrap_or_else(|e| panic!("eventfeed printed a bad addr {addr:?}: {e}"));
            }
            Err(e) => {
                let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                self.kill9();
                // Let the reader threads collect what is left.
                std::thread::sleep(Duration::from_millis(100));
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("no \"eventfeed listening\" line within {INSTANCE_START:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => format!("exited before listening ({status:?})"),
                };
                panic!("eventfeed did not start: {why}; its output:\n{}", self.logs());
            }
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last log lines (stdout, and stderr lines prefixed `stderr: `).
    pub fn logs(&self) -> String {
        let l = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// The parsed JSON log lines whose `message` contains `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<serde_json::Value> {
        let l = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
            .collect()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded: 15 s, then SIGKILL and panic); returns the
    /// exit status. Panics if it is not running.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("terminate: the instance is not running");
        sigterm(child.id());
        wait_bounded(&mut child, "eventfeed", EXIT_WAIT)
    }

    /// Starts it again with the same environment (SIGKILLing it first if it
    /// still runs). It gets a new port: read `addr()` / `url()` again.
    pub fn restart(&mut self) {
        self.kill9();
        Self::push_log(&self.logs, "---- restart ----".to_owned());
        self.spawn();
    }

    /// `GET path` on the instance: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_request(self.addr, "GET", path, &[], None)
    }

    /// Polls `GET /readyz` until it answers 200 (bounded).
    pub fn wait_ready(&self, bound: Duration) {
        let end = Instant::now() + bound;
        loop {
            if let Ok((200, _)) = try_http_request(self.addr, "GET", "/readyz", &[], None) {
                return;
            }
            if Instant::now() > end {
                panic!("{} not ready within {bound:?}; its output:\n{}", self.url(), self.logs());
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ------------------------------------------------------------------- HTTP

/// One HTTP/1.1 request over a fresh connection (`Connection: close`):
/// (status, body). A JSON `body` is sent with `Content-Type: application/json`.
pub fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(rest) } else { rest.to_owned() };
    Ok((status, body))
}

/// [`try_http_request`] that panics on an I/O error.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    try_http_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
