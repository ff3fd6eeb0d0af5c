//! `eventfeed-loadgen`: a load generator for the event feed server (and any
//! server of the same contract, such as the Node socket.io baseline). It speaks
//! the Engine.IO v4 websocket transport and Socket.IO v5 directly, one small
//! task per client, so one core holds many thousands of clients.
//!
//! Subcommands: `fanout` (delivery throughput, end-to-end latency and
//! correctness, over websocket, long-polling or SSE receivers), `connect`
//! (idle connections: connect latency, server memory per connection), `rest`
//! (keep-alive HTTP load), `storm` (everyone reconnects at once), `tenants`
//! (many tenants with full buffers) and `floor` (the machine's own cost of a
//! delivery, no server). See the README.

mod connect;
mod fanout;
mod floor;
mod http;
mod polling;
mod procfs;
mod report;
mod rest;
mod sse;
mod storm;
mod target;
mod tenants;
mod track;
mod wire;
mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::target::Target;
use crate::wire::Wire;
use crate::ws::ClientConfig;

/// Load generator for the eventfeed server (Engine.IO v4 / Socket.IO v5 over websocket, and REST).
#[derive(Debug, Parser)]
#[command(name = "eventfeed-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// T tenants × C clients (websocket, long-polling or SSE); publishers post for a while; measures
    /// deliveries/s, end-to-end latency, and checks every delivery.
    Fanout(fanout::FanoutArgs),
    /// N idle websocket clients opened at a bounded rate and held: connect
    /// latency, server memory per connection.
    Connect(connect::ConnectArgs),
    /// Keep-alive HTTP load: each connection loops POST /api/events then GET /api/events?limit=L.
    Rest(rest::RestArgs),
    /// A reconnect storm: every client cut at once, all reconnecting (with
    /// connection state recovery, or for a snapshot) over a short spread.
    Storm(storm::StormArgs),
    /// Many tenants with full buffers: server memory per stored event, and
    /// connect-with-snapshot latency beside a server holding few tenants.
    Tenants(tenants::TenantsArgs),
    /// The machine's floor, no server: one pinned thread writes frames to
    /// loopback sockets whose readers sleep in epoll_wait; CPU per delivery.
    Floor(floor::FloorArgs),
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// The server's process id, to read its CPU time and RSS from /proc; a
    /// comma-separated list (a cluster: instances and Redis) sums them all.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Also print one JSON object with every figure as the last line.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 2 when a correctness check fails (lost, duplicate,
    /// out-of-order or cross-tenant deliveries; failed connects; errors).
    #[arg(long)]
    pub strict: bool,
    /// The Socket.IO namespace.
    #[arg(long, default_value = "/events")]
    pub namespace: String,
    /// The token every client and request uses (admin for every tenant).
    #[arg(long, default_value = "bench_admin")]
    pub token: String,
    /// Tenant names are this prefix followed by 0, 1, 2, …
    #[arg(long, default_value = "t")]
    pub tenant_prefix: String,
    /// Worker threads of the generator's runtime (pin the process to as many cores).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Bound on every connect, request and wait for an answer, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Websocket read buffer per client, in bytes (tungstenite allocates it eagerly).
    #[arg(long, default_value_t = 4096)]
    pub ws_read_buffer: usize,
}

impl Common {
    /// The per-operation timeout.
    pub fn timeout(&self) -> Duration {
        secs(self.timeout).max(Duration::from_millis(100))
    }

    /// The name of tenant `i`.
    pub fn tenant(&self, i: usize) -> String {
        format!("{}{i}", self.tenant_prefix)
    }

    /// The websocket client config for this run.
    pub fn client_config(&self, target: &Arc<Target>) -> ClientConfig {
        ClientConfig {
            target: Arc::clone(target),
            wire: Wire::new(&self.namespace),
            token: self.token.clone(),
            timeout: self.timeout(),
            ws_config: ClientConfig::ws_config(self.ws_read_buffer),
        }
    }
}

/// A finished run: its JSON and whether every check passed.
pub struct Outcome {
    /// Every figure.
    pub json: Value,
    /// No lost/duplicate/out-of-order/cross-tenant delivery, no failure.
    pub ok: bool,
}

fn main() {
    let cli = Cli::parse();
    let (name, common) = match &cli.command {
        Command::Fanout(a) => ("fanout", &a.common),
        Command::Connect(a) => ("connect", &a.common),
        Command::Rest(a) => ("rest", &a.common),
        Command::Storm(a) => ("storm", &a.common),
        Command::Tenants(a) => ("tenants", &a.common),
        Command::Floor(a) => ("floor", &a.common),
    };
    let threads = common.threads.max(1);
    // One thread: everything (clients, publishers, the driver) on the current
    // thread, no work-stealing; more: a multi-threaded runtime.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    };
    let result = match runtime {
        Ok(rt) => rt.block_on(run(&cli.command)),
        Err(e) => Err(anyhow::Error::from(e).context("starting the async runtime")),
    };
    match result {
        Ok(outcome) => {
            if common.json {
                println!("{}", outcome.json);
            }
            if common.strict && !outcome.ok {
                eprintln!("{name}: a correctness check failed (see above)");
                std::process::exit(2);
            }
        }
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            if common.json {
                println!("{}", json!({ "mode": name, "ok": false, "error": format!("{e:#}") }));
            }
            std::process::exit(1);
        }
    }
}

async fn run(command: &Command) -> Result<Outcome> {
    let started = Instant::now();
    match command {
        Command::Fanout(a) => fanout::run(a, started).await,
        Command::Connect(a) => connect::run(a, started).await,
        Command::Rest(a) => rest::run(a, started).await,
        Command::Storm(a) => storm::run(a, started).await,
        Command::Tenants(a) => tenants::run(a, started).await,
        Command::Floor(a) => floor::run(a, started).await,
    }
}

/// Seconds as a duration: NaN and negatives are zero, and at most a year
/// (so no conversion can panic).
pub fn secs(x: f64) -> Duration {
    if x.is_finite() && x > 0.0 { Duration::from_secs_f64(x.min(365.0 * 86_400.0)) } else { Duration::ZERO }
}

/// A finite number above zero (NaN is not).
pub fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Raises RLIMIT_NOFILE so `needed` sockets fit: the soft limit to the hard
/// one and, when the hard one is too low, the hard one too (root may, up to the
/// kernel's `fs.nr_open`). Returns the soft limit in force; warns when it is too low.
pub fn raise_fd_limit(needed: u64) -> Result<u64> {
    use rlimit::Resource;
    let wanted = needed + 256;
    let (_, hard) = Resource::NOFILE.get().context("reading RLIMIT_NOFILE")?;
    if hard < wanted {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(hard);
        let new_hard = wanted.min(nr_open).max(hard);
        // Fails without CAP_SYS_RESOURCE: then the hard limit stays.
        let _ = Resource::NOFILE.set(new_hard, new_hard);
    }
    let (soft, hard) = Resource::NOFILE.get().context("reading RLIMIT_NOFILE")?;
    if soft < hard {
        Resource::NOFILE.set(hard, hard).context("raising the soft RLIMIT_NOFILE to the hard limit")?;
    }
    let (soft, hard) = Resource::NOFILE.get().context("reading RLIMIT_NOFILE")?;
    if soft < wanted {
        eprintln!(
            "warning: the open-file limit is {soft} (hard {hard}), below the {wanted} this run needs; \
             raise it (ulimit -n, or run as root) or expect 'Too many open files'"
        );
    }
    Ok(soft)
}
