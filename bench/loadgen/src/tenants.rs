//! `tenants`: a SaaS feed with thousands of tenants, each with a full buffer.
//!
//! Phase A, the few-tenants reference: `--small` tenants are seeded with
//! `--events` events each (concurrent keep-alive `POST /api/events`), then,
//! after `--warmup` unmeasured clients, `--probes` clients connect over them at
//! `--connect-rate` (each phase's clients held until its last is in), each timing
//! connect-with-snapshot (TCP connect → snapshot received) and checking the
//! snapshot (the most recent 100 events, up to the tenant's last seq).
//! Phase B, in the same server process: the remaining tenants up to
//! `--tenants` are seeded the same way; the server's RSS before and after
//! gives its memory per stored event, set beside the JSON size of an event as
//! the server returns it; then `--probes` clients connect spread over every
//! tenant, and their latency is set beside phase A's. Also: the seeding rate
//! and the server's CPU per seeded event.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpClient;
use crate::procfs::maybe_sample;
use crate::report::{Errors, SelfCpu, histogram, latency_json, latency_line, opt, per_unit_us, round2, server_cpu};
use crate::target::Target;
use crate::wire::{EventArgs, Incoming, SeqOnly, bench_message, clip};
use crate::ws::{self, ClientConfig, Ws};
use crate::{Common, Outcome, positive, raise_fd_limit, secs};

/// The servers' snapshot: the tenant's most recent events, at most this many.
pub const SNAPSHOT_EVENTS: u64 = 100;

/// Options of `tenants`.
#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Tenants in all (t0 … t(N-1)), seeded by the end of phase B.
    #[arg(long, default_value_t = 2000)]
    pub tenants: usize,
    /// Tenants of the few-tenants reference, phase A (t0 … t(small-1)).
    #[arg(long, default_value_t = 10)]
    pub small: usize,
    /// Events posted to each tenant (the servers keep 500 per tenant by default).
    #[arg(long, default_value_t = 500)]
    pub events: u64,
    /// Characters per message (at least; padded with dots).
    #[arg(long, default_value_t = 100)]
    pub message_bytes: usize,
    /// Keep-alive connections writing concurrently during a seeding, one request in flight each.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Clients connected for a snapshot in each phase (held until the phase's last one is in).
    #[arg(long, default_value_t = 1000)]
    pub probes: u64,
    /// Probe connects started per second.
    #[arg(long, default_value_t = 500.0)]
    pub connect_rate: f64,
    /// Unmeasured clients connected (and checked) before phase A's probes, so
    /// neither server is timed cold (Node's JIT, first allocations).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Seconds the server is left alone after phase B's seeding before its RSS is read.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Tenants whose most recent events are fetched to measure an event's JSON size.
    #[arg(long, default_value_t = 5)]
    pub size_samples: usize,
}

/// Runs `tenants`.
pub async fn run(args: &TenantsArgs, started: Instant) -> Result<Outcome> {
    let c = &args.common;
    if args.tenants == 0 || args.small == 0 || args.small >= args.tenants {
        bail!("--small must be positive and below --tenants (phase B seeds the tenants from --small on)");
    }
    if args.events == 0 || args.connections == 0 || args.probes == 0 || !positive(args.connect_rate) {
        bail!("--events, --connections, --probes and --connect-rate must be positive");
    }
    if !(positive(args.settle) || args.settle == 0.0) {
        bail!("--settle must not be negative");
    }
    let fd_limit = raise_fd_limit(args.probes + args.connections as u64 + 64)?;
    let target = Arc::new(Target::resolve(&c.url).await?);
    let cfg = Arc::new(c.client_config(&target));
    let tenants: Vec<Arc<str>> = (0..args.tenants).map(|i| Arc::from(c.tenant(i))).collect();
    println!(
        "tenants: {} → {} tenants × {} events of {} characters at {}, {} writers; {} probes per phase at {}/s \
         (open-file limit {fd_limit})",
        args.small,
        args.tenants,
        args.events,
        args.message_bytes,
        target.addr,
        args.connections,
        args.probes,
        args.connect_rate
    );
    // Fail fast on a server that is not there or refuses the token.
    {
        let mut probe = HttpClient::new(Arc::clone(&target), None, c.timeout());
        let r = probe.request("GET", "/api/events?limit=1", &read_headers(c, &tenants[0]), b"").await?;
        if r.status != 200 {
            bail!("GET /api/events answered {} {}", r.status, clip(&String::from_utf8_lossy(r.body)));
        }
    }
    // The last seq each tenant's 201 answers showed: what its snapshot must reach.
    let last_seq: Arc<Vec<AtomicU64>> = Arc::new((0..args.tenants).map(|_| AtomicU64::new(0)).collect());
    let start = maybe_sample(&c.server_pid);

    // Phase A: the few-tenants reference.
    println!("phase A: seeding {} tenants", args.small);
    let plan_a = SeedPlan { first: 0, count: args.small, events: args.events };
    let seed_a = seed(args, &target, &tenants, &last_seq, plan_a, started).await;
    seed_a.print("phase A");
    let expected: Vec<u64> = last_seq.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let warmup = if args.warmup > 0 {
        let w = probe_phase(args, &cfg, &tenants[..args.small], &expected[..args.small], args.warmup).await;
        w.print("warm-up");
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some(w)
    } else {
        None
    };
    let probes_a = probe_phase(args, &cfg, &tenants[..args.small], &expected[..args.small], args.probes).await;
    probes_a.print("phase A");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase B: every tenant with a full buffer.
    println!("phase B: seeding tenants {} … {}", tenants[args.small], tenants[args.tenants - 1]);
    let before_b = maybe_sample(&c.server_pid);
    let plan_b = SeedPlan { first: args.small, count: args.tenants - args.small, events: args.events };
    let seed_b = seed(args, &target, &tenants, &last_seq, plan_b, started).await;
    seed_b.print("phase B");
    if args.settle > 0.0 {
        tokio::time::sleep(secs(args.settle)).await;
    }
    let after_b = maybe_sample(&c.server_pid);
    let expected: Vec<u64> = last_seq.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let sizes = event_sizes(args, &target, &tenants, &expected).await;
    let probes_b = probe_phase(args, &cfg, &tenants, &expected, args.probes).await;
    probes_b.print("phase B");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = maybe_sample(&c.server_pid);

    // Figures.
    let rss_before = before_b.map(|s| s.rss_kib);
    let rss_after = after_b.map(|s| s.rss_kib);
    let rss_per_event = match (rss_before, rss_after) {
        (Some(b), Some(a)) if seed_b.created > 0 => {
            Some(round2((a as f64 - b as f64) * 1024.0 / seed_b.created as f64))
        }
        _ => None,
    };
    let event_json_bytes = sizes.mean().map(round2);
    let memory_ratio = match (rss_per_event, event_json_bytes) {
        (Some(m), Some(j)) if j > 0.0 => Some(round2(m / j)),
        _ => None,
    };
    let p99_ratio = ratio(&probes_b.hist, &probes_a.hist, 0.99);
    let p50_ratio = ratio(&probes_b.hist, &probes_a.hist, 0.50);
    // A server that held events before this run: its tenants' seqs run past
    // --events and the memory figure counts buffers that were already full.
    let preexisting = expected.iter().any(|&s| s > args.events);
    println!(
        "  event JSON {} bytes (as the server returns it, {} events sampled){}",
        opt(event_json_bytes, ""),
        sizes.count,
        if sizes.errors.total > 0 { format!(", {} check failures", sizes.errors.total) } else { String::new() }
    );
    sizes.errors.print("event size checks");
    println!(
        "  server rss {} → {} KiB over phase B's {} events: {} bytes per event, {} × the event's JSON; rss at the end {} KiB",
        rss_before.map_or("n/a".into(), |v| v.to_string()),
        rss_after.map_or("n/a".into(), |v| v.to_string()),
        seed_b.created,
        opt(rss_per_event, ""),
        opt(memory_ratio, ""),
        end.map_or("n/a".into(), |s| s.rss_kib.to_string()),
    );
    println!(
        "  connect with snapshot, {} tenants vs {}: p50 × {}, p99 × {}",
        args.tenants,
        args.small,
        opt(p50_ratio, ""),
        opt(p99_ratio, "")
    );
    if preexisting {
        println!("  note: the server held events of these tenants before this run (seqs past --events)");
    }
    let write_errors = seed_a.errors.total + seed_b.errors.total;
    let ok = write_errors == 0
        && warmup.as_ref().is_none_or(ProbePhase::clean)
        && probes_a.clean()
        && probes_b.clean()
        && sizes.errors.total == 0;
    let json = json!({
        "mode": "tenants",
        "ok": ok,
        "tenants": args.tenants,
        "small_tenants": args.small,
        "events_per_tenant": args.events,
        "message_bytes": args.message_bytes,
        "connections": args.connections,
        "probes": args.probes,
        "connect_rate": args.connect_rate,
        "fd_limit": fd_limit,
        "events_seeded": seed_a.created + seed_b.created,
        "write_errors": write_errors,
        "preexisting_events": preexisting,
        "seed_a": seed_a.json(),
        "seed_b": seed_b.json(),
        "seed_events_per_sec": seed_b.rate(),
        "server_cpu_us_per_seeded_event": seed_b.cpu_per_event(),
        "server_rss_kib_start": start.map(|s| s.rss_kib),
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "server_rss_kib_end": end.map(|s| s.rss_kib),
        "settle_secs": args.settle,
        "rss_bytes_per_event": rss_per_event,
        "event_json_bytes": event_json_bytes,
        "event_json_samples": sizes.count,
        "memory_per_event_ratio": memory_ratio,
        "warmup": warmup.as_ref().map(ProbePhase::json),
        "connect_a": probes_a.json(),
        "connect_b": probes_b.json(),
        "connect_p50_ratio": p50_ratio,
        "connect_p99_ratio": p99_ratio,
        "check_errors": sizes.errors.json(),
    });
    Ok(Outcome { json, ok })
}

fn read_headers(c: &Common, tenant: &str) -> String {
    format!("X-TENANT-ID: {tenant}\r\nX-User-Token: {}\r\n", c.token)
}

fn write_headers(c: &Common, tenant: &str) -> String {
    format!("X-TENANT-ID: {tenant}\r\nX-User-Token: {}\r\nContent-Type: application/json\r\n", c.token)
}

/// `b`'s quantile over `a`'s, when both have samples.
fn ratio(b: &Histogram<u64>, a: &Histogram<u64>, q: f64) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a = a.value_at_quantile(q).max(1) as f64;
    Some(round2(b.value_at_quantile(q) as f64 / a))
}

/// The events of one seeding: `count` tenants from `first`, `events` each,
/// interleaved (job `j` is tenant `first + j % count`'s `j / count + 1`-th event),
/// so every tenant fills at the same pace, as on a feed with many active tenants.
#[derive(Debug, Clone, Copy)]
struct SeedPlan {
    first: usize,
    count: usize,
    events: u64,
}

impl SeedPlan {
    fn total(&self) -> u64 {
        self.count as u64 * self.events
    }

    /// Job `j`'s tenant index and its 1-based number within the tenant.
    fn job(&self, j: u64) -> (usize, u64) {
        let count = self.count.max(1) as u64;
        (self.first + usize::try_from(j % count).unwrap_or(0), j / count + 1)
    }
}

/// What a seeding did.
#[derive(Debug)]
struct Seeded {
    /// Events answered 201.
    created: u64,
    secs: f64,
    errors: Errors,
    post: Histogram<u64>,
    cpu: Option<f64>,
    loadgen_cpu: Option<f64>,
    loadgen_busy: Option<f64>,
}

impl Seeded {
    fn rate(&self) -> f64 {
        round2(self.created as f64 / self.secs.max(1e-9))
    }

    fn cpu_per_event(&self) -> Option<f64> {
        per_unit_us(self.cpu, self.created)
    }

    fn print(&self, phase: &str) {
        println!(
            "  {phase} seeding: {} events in {:.2} s ({:.0}/s), {} errors; server cpu {} ({} per event)",
            self.created,
            self.secs,
            self.rate(),
            self.errors.total,
            opt(self.cpu, " s"),
            opt(self.cpu_per_event(), " µs")
        );
        println!("    POST latency: {}", latency_line(&self.post));
        self.errors.print("write errors");
    }

    fn json(&self) -> Value {
        json!({
            "events": self.created,
            "secs": round2(self.secs),
            "events_per_sec": self.rate(),
            "errors": self.errors.total,
            "error_kinds": self.errors.json(),
            "post_latency_us": latency_json(&self.post),
            "server_cpu_secs": self.cpu,
            "server_cpu_us_per_event": self.cpu_per_event(),
            "loadgen_cpu_secs": self.loadgen_cpu,
            "loadgen_busy": self.loadgen_busy,
        })
    }
}

/// Posts every event of `plan` on `--connections` keep-alive connections.
async fn seed(
    args: &TenantsArgs,
    target: &Arc<Target>,
    tenants: &[Arc<str>],
    last_seq: &Arc<Vec<AtomicU64>>,
    plan: SeedPlan,
    started: Instant,
) -> Seeded {
    let c = &args.common;
    let total = plan.total();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let headers: Arc<Vec<String>> = Arc::new(tenants.iter().map(|t| write_headers(c, t)).collect());
    let names: Arc<Vec<Arc<str>>> = Arc::new(tenants.to_vec());
    let before = maybe_sample(&c.server_pid);
    let self_cpu = SelfCpu::start();
    let t0 = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = tokio::spawn(progress(Arc::clone(&done), total, stop_rx));
    let mut writers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        writers.push(tokio::spawn(writer(Writer {
            client: HttpClient::new(Arc::clone(target), None, c.timeout()),
            plan,
            next: Arc::clone(&next),
            done: Arc::clone(&done),
            headers: Arc::clone(&headers),
            names: Arc::clone(&names),
            last_seq: Arc::clone(last_seq),
            pad: args.message_bytes,
            started,
        })));
    }
    let mut errors = Errors::default();
    let mut post = histogram();
    let mut created = 0u64;
    for w in writers {
        match w.await {
            Ok(lane) => {
                created += lane.created;
                post.add(&lane.post).ok();
                errors.merge(lane.errors);
            }
            Err(e) => errors.add(format!("a writer task failed: {e}")),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = maybe_sample(&c.server_pid);
    let (loadgen_cpu, loadgen_busy) = self_cpu.finish(c.threads);
    let _ = stop_tx.send(true);
    let _ = progress.await;
    Seeded { created, secs, errors, post, cpu: server_cpu(before, after), loadgen_cpu, loadgen_busy }
}

/// Prints how far a seeding got every 5 s.
async fn progress(done: Arc<AtomicU64>, total: u64, mut stop: watch::Receiver<bool>) {
    let t0 = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                let n = done.load(Ordering::Relaxed);
                println!("  … {n} of {total} posted ({:.0}/s)", n as f64 / t0.elapsed().as_secs_f64().max(1e-9));
            }
        }
    }
}

struct Writer {
    client: HttpClient,
    plan: SeedPlan,
    next: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    headers: Arc<Vec<String>>,
    names: Arc<Vec<Arc<str>>>,
    last_seq: Arc<Vec<AtomicU64>>,
    pad: usize,
    started: Instant,
}

struct Lane {
    created: u64,
    post: Histogram<u64>,
    errors: Errors,
}

/// One keep-alive connection taking the plan's next job until none is left.
async fn writer(mut w: Writer) -> Lane {
    let mut lane = Lane { created: 0, post: histogram(), errors: Errors::default() };
    let total = w.plan.total();
    loop {
        let j = w.next.fetch_add(1, Ordering::Relaxed);
        if j >= total {
            break;
        }
        let (t, k) = w.plan.job(j);
        let nanos = u64::try_from(w.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let body = json!({ "message": bench_message(&w.names[t], 's', k, nanos, w.pad) }).to_string();
        let sent = Instant::now();
        let result = w.client.request("POST", "/api/events", &w.headers[t], body.as_bytes()).await;
        w.done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(r) if r.status == 201 => {
                lane.post.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
                match serde_json::from_slice::<SeqOnly>(r.body) {
                    Ok(e) => {
                        lane.created += 1;
                        w.last_seq[t].fetch_max(e.seq, Ordering::Relaxed);
                    }
                    Err(e) => lane.errors.add(format!("POST /api/events 201 without a seq: {e}")),
                }
            }
            Ok(r) => {
                let e = format!("POST /api/events {}: {}", r.status, clip(&String::from_utf8_lossy(r.body)));
                lane.errors.add(e);
            }
            Err(e) => {
                lane.errors.add(format!("POST /api/events: {e:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    lane
}

/// The probes of one phase.
#[derive(Debug)]
struct ProbePhase {
    tenants: usize,
    hist: Histogram<u64>,
    /// Connects that failed (no snapshot).
    failures: Errors,
    /// Snapshots of the wrong size or not reaching the tenant's last seq.
    wrong: Errors,
    secs: f64,
}

impl ProbePhase {
    /// No failed connect and no wrong snapshot.
    fn clean(&self) -> bool {
        self.failures.total == 0 && self.wrong.total == 0
    }

    fn print(&self, phase: &str) {
        println!(
            "  {phase} connect with snapshot over {} tenants: {} in {:.2} s, {} failed, {} wrong snapshots",
            self.tenants,
            self.hist.len(),
            self.secs,
            self.failures.total,
            self.wrong.total
        );
        println!("    latency: {}", latency_line(&self.hist));
        self.failures.print("connect failures");
        self.wrong.print("wrong snapshots");
    }

    fn json(&self) -> Value {
        json!({
            "tenants": self.tenants,
            "connected": self.hist.len(),
            "failures": self.failures.total,
            "failure_kinds": self.failures.json(),
            "wrong_snapshots": self.wrong.total,
            "wrong_snapshot_kinds": self.wrong.json(),
            "secs": round2(self.secs),
            "latency_us": latency_json(&self.hist),
        })
    }
}

/// Which of `tenants` probe `i` of `probes` goes to: round robin when there
/// are at least as many probes as tenants, else evenly spread over all of them.
fn probe_tenant(i: u64, probes: u64, tenants: usize) -> usize {
    let n = tenants.max(1) as u64;
    let t = if probes >= n { i % n } else { (u128::from(i) * u128::from(n) / u128::from(probes.max(1))) as u64 };
    usize::try_from(t % n).unwrap_or(0)
}

/// How many events a snapshot of a tenant whose last seq is `last_seq` holds
/// (seqs are gapless and the buffer keeps at least the snapshot's worth).
fn expected_snapshot_len(last_seq: u64) -> usize {
    usize::try_from(last_seq.min(SNAPSHOT_EVENTS)).unwrap_or(0)
}

/// Why a snapshot is wrong, or `None` when it is right.
fn snapshot_problem(tenant: &str, len: usize, max_seq: Option<u64>, last_seq: u64) -> Option<String> {
    let want_len = expected_snapshot_len(last_seq);
    let want_max = (last_seq > 0).then_some(last_seq);
    (len != want_len || max_seq != want_max).then(|| {
        format!(
            "{tenant}: snapshot of {len} events up to seq {}, expected {want_len} up to {last_seq}",
            max_seq.map_or("none".to_string(), |s| s.to_string())
        )
    })
}

/// A probe's answer: latency in µs, the snapshot's length and largest seq, and
/// the websocket (held until the phase ends).
type ProbeResult = Result<(u64, usize, Option<u64>, Ws), String>;

/// Connects `count` clients over `tenants` at `--connect-rate`; each
/// snapshot is checked against `last_seq` (indexed like `tenants`).
async fn probe_phase(
    args: &TenantsArgs,
    cfg: &Arc<ClientConfig>,
    tenants: &[Arc<str>],
    last_seq: &[u64],
    count: u64,
) -> ProbePhase {
    let interval = secs(1.0 / args.connect_rate);
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..count {
        let due = t0 + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let t = probe_tenant(i, count, tenants.len());
        let cfg = Arc::clone(cfg);
        let tenant = Arc::clone(&tenants[t]);
        handles.push((t, tokio::spawn(async move { probe(&cfg, &tenant).await })));
    }
    let mut phase = ProbePhase {
        tenants: tenants.len(),
        hist: histogram(),
        failures: Errors::default(),
        wrong: Errors::default(),
        secs: 0.0,
    };
    let mut held = Vec::with_capacity(handles.len());
    // Every probe is bounded by the timeout; this bounds the whole wait too.
    let deadline = tokio::time::Instant::now() + args.common.timeout() + Duration::from_secs(5);
    for (t, h) in handles {
        match tokio::time::timeout_at(deadline, h).await {
            Ok(Ok(Ok((us, len, max_seq, ws)))) => {
                phase.hist.saturating_record(us.max(1));
                if let Some(p) = snapshot_problem(&tenants[t], len, max_seq, last_seq[t]) {
                    phase.wrong.add(p);
                }
                held.push(ws);
            }
            Ok(Ok(Err(e))) => phase.failures.add(e),
            Ok(Err(e)) => phase.failures.add(format!("a probe task failed: {e}")),
            Err(_) => phase.failures.add("a probe never finished".to_string()),
        }
    }
    phase.secs = t0.elapsed().as_secs_f64();
    drop(held);
    phase
}

/// One probe: open a session for `tenant`, timing TCP connect → snapshot.
async fn probe(cfg: &ClientConfig, tenant: &str) -> ProbeResult {
    let start = Instant::now();
    match tokio::time::timeout(cfg.timeout, open_counted(cfg, tenant, None)).await {
        Ok(Ok((ws, len, max_seq))) => {
            Ok((u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX), len, max_seq, ws))
        }
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no snapshot within {:?} (TCP connect, handshake, CONNECT)", cfg.timeout)),
    }
}

/// `ws::open`, also returning the snapshot's length (which `ws::Session` does not keep).
async fn open_counted(cfg: &ClientConfig, tenant: &str, source: Option<IpAddr>) -> Result<(Ws, usize, Option<u64>)> {
    let mut ws = ws::engine_open_inner(cfg, source).await?;
    ws.send(Message::text(cfg.wire.connect(tenant, &cfg.token))).await.context("sending CONNECT")?;
    let mut connected = false;
    loop {
        let text = ws::next_text(&mut ws).await?.ok_or_else(|| anyhow!("closed before the snapshot"))?;
        match cfg.wire.classify(text.as_str()).map_err(|e| anyhow!(e))? {
            Incoming::Ping => ws::pong(&mut ws).await?,
            Incoming::Connected => connected = true,
            Incoming::ConnectError(m) => bail!("CONNECT refused: {m}"),
            Incoming::Closed => bail!("the server closed the session before the snapshot"),
            Incoming::Event(EventArgs::Snapshot { max_seq, len }) => {
                if !connected {
                    bail!("snapshot before the CONNECT answer");
                }
                return Ok((ws, len, max_seq));
            }
            Incoming::Event(_) | Incoming::Ack(..) | Incoming::Ignored => {}
        }
    }
}

/// The JSON sizes of stored events, as the server returns them.
#[derive(Debug, Default)]
struct Sizes {
    count: u64,
    bytes: u64,
    errors: Errors,
}

impl Sizes {
    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.bytes as f64 / self.count as f64)
    }

    /// Adds the events of one `GET /api/events` answer; checks how many it held.
    fn add_page(&mut self, tenant: &str, body: &[u8], want: usize) {
        #[derive(Deserialize)]
        struct Page {
            events: Vec<Value>,
        }
        match serde_json::from_slice::<Page>(body) {
            Ok(page) => {
                if page.events.len() != want {
                    self.errors
                        .add(format!("{tenant}: GET /api/events held {} events, expected {want}", page.events.len()));
                }
                for e in &page.events {
                    self.count += 1;
                    self.bytes += serde_json::to_string(e).map_or(0, |s| s.len() as u64);
                }
            }
            Err(e) => self.errors.add(format!("{tenant}: GET /api/events: not {{\"events\": [...]}}: {e}")),
        }
    }
}

/// `GET /api/events?limit=100` for `--size-samples` tenants spread over all of them.
async fn event_sizes(args: &TenantsArgs, target: &Arc<Target>, tenants: &[Arc<str>], last_seq: &[u64]) -> Sizes {
    let c = &args.common;
    let mut sizes = Sizes::default();
    let mut client = HttpClient::new(Arc::clone(target), None, c.timeout());
    let samples = args.size_samples.min(tenants.len());
    for i in 0..samples {
        let t = probe_tenant(i as u64, samples as u64, tenants.len());
        let path = format!("/api/events?limit={SNAPSHOT_EVENTS}");
        match client.request("GET", &path, &read_headers(c, &tenants[t]), b"").await {
            Ok(r) if r.status == 200 => sizes.add_page(&tenants[t], r.body, expected_snapshot_len(last_seq[t])),
            Ok(r) => sizes.errors.add(format!(
                "{}: GET /api/events {}: {}",
                tenants[t],
                r.status,
                clip(&String::from_utf8_lossy(r.body))
            )),
            Err(e) => sizes.errors.add(format!("{}: GET /api/events: {e:#}", tenants[t])),
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_plan_interleaves_tenants() {
        let plan = SeedPlan { first: 10, count: 3, events: 2 };
        assert_eq!(plan.total(), 6);
        let jobs: Vec<_> = (0..plan.total()).map(|j| plan.job(j)).collect();
        assert_eq!(jobs, vec![(10, 1), (11, 1), (12, 1), (10, 2), (11, 2), (12, 2)]);
    }

    #[test]
    fn probes_spread_over_every_tenant() {
        // Fewer probes than tenants: evenly spread, first to last half.
        let picks: Vec<_> = (0..4).map(|i| probe_tenant(i, 4, 10)).collect();
        assert_eq!(picks, vec![0, 2, 5, 7]);
        let picks: Vec<_> = (0..1000).map(|i| probe_tenant(i, 1000, 2000)).collect();
        assert_eq!((picks[0], picks[999]), (0, 1998));
        // More: round robin.
        let picks: Vec<_> = (0..7).map(|i| probe_tenant(i, 7, 3)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn snapshot_checks() {
        assert_eq!(snapshot_problem("t1", 100, Some(500), 500), None);
        assert_eq!(snapshot_problem("t1", 40, Some(40), 40), None);
        assert_eq!(snapshot_problem("t1", 0, None, 0), None);
        assert!(snapshot_problem("t1", 99, Some(500), 500).is_some());
        assert!(snapshot_problem("t1", 100, Some(499), 500).is_some());
        assert!(snapshot_problem("t1", 0, None, 3).is_some());
    }

    #[test]
    fn event_sizes_average_and_count() {
        let mut s = Sizes::default();
        s.add_page("t0", br#"{"events":[{"seq":1},{"seq":22}],"hasMore":false,"gap":false}"#, 2);
        assert_eq!((s.count, s.bytes, s.errors.total), (2, 9 + 10, 0));
        assert_eq!(s.mean(), Some(9.5));
        s.add_page("t0", br#"{"events":[]}"#, 1);
        s.add_page("t0", b"not json", 1);
        assert_eq!(s.errors.total, 2);
    }

    #[test]
    fn ratios() {
        let mut a = histogram();
        let mut b = histogram();
        assert_eq!(ratio(&b, &a, 0.99), None);
        a.saturating_record(1000);
        b.saturating_record(1500);
        assert_eq!(ratio(&b, &a, 0.99), Some(1.5));
    }
}
