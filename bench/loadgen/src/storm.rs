//! `storm`: a reconnect storm, as after a deploy or a network blip. T tenants
//! × C websocket clients, every tenant's buffer full (S events seeded over
//! REST). Every client connects (keeping its CONNECT answer's `sid` and `pid`),
//! receives one more event (keeping its recovery offset), and then all are cut
//! at once: the TCP connection dropped (a reset by default), no close frame,
//! no DISCONNECT. While they are away M events per tenant are published. Then
//! every client reconnects, spread uniformly over `--spread` seconds:
//!
//! - `--mode recover` (default): CONNECT carries `pid` and `offset` beside the
//!   auth fields, as the official client does. A recovered session is answered
//!   with the same `sid` and receives the M missed events as `event_created`
//!   (checked: each exactly once, in order, of its tenant; anything missing
//!   after the bound is lost). A session the server does not recover gets a
//!   fresh `sid` and a `snapshot`, and is caught up when that holds the
//!   tenant's latest seq.
//! - `--mode snapshot`: CONNECT without `pid`/`offset`; caught up when the
//!   snapshot holds the tenant's latest seq.
//!
//! Measured per client: TCP connect of the reconnect → caught up (histogram);
//! the server's CPU from just before the reconnects until every client is
//! caught up, per reconnect and per recovery; its RSS; connects per second.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpClient;
use crate::procfs::maybe_sample;
use crate::report::{Errors, SelfCpu, histogram, latency_json, latency_line, opt, per_unit_us, round2, server_cpu};
use crate::target::{SourceIps, Target};
use crate::wire::{EventArgs, Incoming, SeqOnly, Wire, bench_message, clip};
use crate::ws::{self, ClientConfig, IdSession, Session, Ws};
use crate::{Common, Outcome, positive, raise_fd_limit, secs};

/// How the clients come back after the cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Connection state recovery: CONNECT with `pid` and `offset`.
    Recover,
    /// A plain CONNECT: the client catches up from the snapshot.
    Snapshot,
}

/// How the connections are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cut {
    /// A TCP reset (SO_LINGER 0, then close): no close frame, no FIN.
    Rst,
    /// A plain close (FIN): no close frame, no DISCONNECT.
    Fin,
}

impl Mode {
    /// The option's value.
    fn name(self) -> &'static str {
        match self {
            Mode::Recover => "recover",
            Mode::Snapshot => "snapshot",
        }
    }
}

impl Cut {
    /// The option's value.
    fn name(self) -> &'static str {
        match self {
            Cut::Rst => "rst",
            Cut::Fin => "fin",
        }
    }
}

/// Options of `storm`.
#[derive(Debug, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Tenants (t0 … t(T-1)).
    #[arg(long, default_value_t = 100)]
    pub tenants: usize,
    /// Websocket clients per tenant.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Events seeded per tenant before the clients connect (fills the buffer).
    #[arg(long, default_value_t = 500)]
    pub seed: u64,
    /// Events published per tenant while the clients are away.
    #[arg(long, default_value_t = 20)]
    pub missed: u64,
    /// How the clients reconnect: `recover` (pid + offset) or `snapshot` (plain CONNECT).
    #[arg(long, value_enum, default_value_t = Mode::Recover)]
    pub mode: Mode,
    /// Seconds over which the reconnects are spread uniformly (0: all at once).
    #[arg(long, default_value_t = 2.0)]
    pub spread: f64,
    /// Clients connected per second before the cut.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// How the connections are cut.
    #[arg(long, value_enum, default_value_t = Cut::Rst)]
    pub cut: Cut,
    /// Seconds between the cut and publishing the missed events (the server notices the disconnects).
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Keep-alive REST connections publishing the seed, the marker and the missed events.
    #[arg(long, default_value_t = 64)]
    pub publish_connections: usize,
    /// Pad each message to at least this many bytes (at most 2000).
    #[arg(long, default_value_t = 100)]
    pub message_bytes: usize,
    /// Bound per client, in seconds, from the start of its reconnect (TCP
    /// connect) to caught up (`--timeout` bounds the first connects and requests).
    #[arg(long, default_value_t = 30.0)]
    pub catch_up_timeout: f64,
    /// Seconds to keep listening once every client is caught up (late duplicates).
    #[arg(long, default_value_t = 0.5)]
    pub grace: f64,
    /// Bind clients to K source addresses 127.0.1.1 … (see `connect`).
    #[arg(long)]
    pub source_ips: Option<u32>,
}

/// Runs `storm`.
pub async fn run(args: &StormArgs, started: Instant) -> Result<Outcome> {
    let c = &args.common;
    if args.tenants == 0
        || args.clients == 0
        || args.missed == 0
        || args.publish_connections == 0
        || !positive(args.connect_rate)
        || !positive(args.catch_up_timeout)
    {
        bail!(
            "--tenants, --clients, --missed, --publish-connections, --connect-rate and --catch-up-timeout must be positive"
        );
    }
    if !(args.spread >= 0.0 && args.settle >= 0.0 && args.grace >= 0.0) {
        bail!("--spread, --settle and --grace must not be negative");
    }
    if args.message_bytes > 2000 {
        bail!("--message-bytes is at most 2000 (a message holds at most 2048 characters)");
    }
    let n = (args.tenants * args.clients) as u64;
    let fd_limit = raise_fd_limit(n + args.publish_connections as u64 + 64)?;
    let target = Arc::new(Target::resolve(&c.url).await?);
    let sources = SourceIps::choose(args.source_ips, n, &target)?;
    let cfg = Arc::new(c.client_config(&target));
    let catch_up = secs(args.catch_up_timeout);
    let reconnect_cfg = Arc::new(ClientConfig { timeout: catch_up, ..(*cfg).clone() });
    let tenants: Arc<[Arc<str>]> = (0..args.tenants).map(|i| Arc::from(c.tenant(i))).collect();
    println!(
        "storm: {} tenants × {} clients = {n} clients at {}, seed {} and {} missed per tenant, reconnect by {} \
         over {} s, cut by {} (open-file limit {fd_limit})",
        args.tenants,
        args.clients,
        target.addr,
        args.seed,
        args.missed,
        args.mode.name(),
        args.spread,
        args.cut.name()
    );

    // 1. Seed every tenant's buffer.
    let mut publisher = Publisher::new(args, &target, &tenants, started).await?;
    let seeded = publisher.publish(args.seed, 's').await;
    println!(
        "  seeded {} events in {:.2} s ({:.0}/s), {} errors",
        seeded.confirmed,
        seeded.secs,
        seeded.confirmed as f64 / seeded.secs.max(1e-9),
        seeded.errors.total
    );
    seeded.errors.print("seed errors");
    let seeded_latest = publisher.latest();

    // 2. Connect every client at a bounded rate, each keeping its sid and pid.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut firsts: Vec<JoinHandle<Result<(Ws, Marked), String>>> = Vec::with_capacity(n as usize);
    let mut connect_errors = Errors::default();
    let mut ready = 0u64;
    let t0 = Instant::now();
    let interval = secs(1.0 / args.connect_rate);
    for i in 0..n {
        let due = t0 + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        while let Ok(r) = ready_rx.try_recv() {
            ready += u64::from(r.is_ok());
            if let Err(e) = r {
                connect_errors.add(e);
            }
        }
        let tenant = (i % args.tenants as u64) as usize;
        firsts.push(tokio::spawn(first_session(
            Arc::clone(&cfg),
            i,
            tenant,
            Arc::clone(&tenants[tenant]),
            sources.for_client(i),
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    let deadline = tokio::time::Instant::now() + c.timeout() + Duration::from_secs(2);
    while ready + connect_errors.total < n {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => ready += 1,
            Ok(Some(Err(e))) => connect_errors.add(e),
            Ok(None) | Err(_) => break,
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connects_per_sec = ready as f64 / connect_secs.max(1e-9);
    println!(
        "  {ready} of {n} clients connected with their snapshot in {connect_secs:.2} s ({connects_per_sec:.0}/s), {} failed",
        connect_errors.total
    );
    connect_errors.print("connect failures");

    // 3. One event per tenant: every client keeps its offset.
    let marker = publisher.publish(1, 'k').await;
    marker.errors.print("marker publish errors");
    let marker_latest = publisher.latest();
    let mut marker_errors = Errors::default();
    let mut held: Vec<Ws> = Vec::with_capacity(n as usize);
    let mut marked: Vec<Marked> = Vec::with_capacity(n as usize);
    let (mut stale_snapshots, mut no_pid, mut no_offset) = (0u64, 0u64, 0u64);
    let deadline = tokio::time::Instant::now() + c.timeout();
    for mut h in firsts {
        match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(Ok(Ok((ws, m)))) => {
                if args.seed > 0 && m.snapshot_max != Some(seeded_latest[m.tenant]) {
                    stale_snapshots += 1;
                }
                if m.marker_seq != marker_latest[m.tenant] {
                    marker_errors.add(format!(
                        "first event after the snapshot had seq {} (published {})",
                        m.marker_seq, marker_latest[m.tenant]
                    ));
                    continue;
                }
                no_pid += u64::from(m.pid.is_none());
                no_offset += u64::from(m.offset.is_none());
                held.push(ws);
                marked.push(m);
            }
            // Those that failed to connect were counted already.
            Ok(Ok(Err(e))) if e.starts_with(CONNECT_FAILED) => {}
            Ok(Ok(Err(e))) => marker_errors.add(e),
            Ok(Err(e)) => marker_errors.add(format!("a client task failed: {e}")),
            Err(_) => {
                h.abort();
                marker_errors.add("no marker event in time".to_string());
            }
        }
    }
    println!(
        "  {} clients received the marker event ({} without it); {no_pid} without a pid, {no_offset} without an offset",
        marked.len(),
        marker_errors.total
    );
    marker_errors.print("marker failures");
    if stale_snapshots > 0 {
        println!("  {stale_snapshots} first snapshots did not end at the tenant's latest seq");
    }
    if args.mode == Mode::Recover && (no_pid > 0 || no_offset > 0) {
        println!("  warning: clients without a pid or an offset cannot recover (is recovery on in the server?)");
    }

    // 4. Cut every connection at once.
    if args.cut == Cut::Rst {
        for w in &held {
            // Best effort: without it the close is a FIN.
            let _ = w.get_ref().set_zero_linger();
        }
    }
    let cut_start = Instant::now();
    drop(held);
    let cut_ms = cut_start.elapsed().as_secs_f64() * 1e3;
    println!("  cut {} connections in {cut_ms:.1} ms", marked.len());

    // 5. While they are away: M events per tenant.
    tokio::time::sleep(secs(args.settle)).await;
    let missed = publisher.publish(args.missed, 'm').await;
    println!("  published {} missed events in {:.2} s, {} errors", missed.confirmed, missed.secs, missed.errors.total);
    missed.errors.print("missed-event publish errors");
    let latest = publisher.latest();

    // 6. Everyone reconnects, spread over --spread seconds.
    let before = maybe_sample(&c.server_pid);
    let self_cpu = SelfCpu::start();
    let storm = marked.len() as u64;
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<Progress>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::with_capacity(marked.len());
    let r0 = Instant::now();
    let spread = secs(args.spread);
    for (i, m) in marked.into_iter().enumerate() {
        let due = r0 + spread.mul_f64(i as f64 / storm as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let recover = match (args.mode, m.pid, m.offset) {
            (Mode::Recover, Some(pid), Some(offset)) => Some((pid, offset)),
            _ => None,
        };
        let plan = Plan {
            tenant: Arc::clone(&tenants[m.tenant]),
            source: sources.for_client(m.index),
            old_sid: m.sid,
            recover,
            base: m.marker_seq,
            latest: latest[m.tenant],
        };
        handles.push(tokio::spawn(reconnect(
            Arc::clone(&reconnect_cfg),
            plan,
            r0,
            progress_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(progress_tx);
    let mut catch_up_hist = histogram();
    let mut recovered_hist = histogram();
    let mut snapshot_hist = histogram();
    let mut reconnect_errors = Errors::default();
    let mut late = Errors::default();
    let (mut caught_up, mut reported) = (0u64, 0u64);
    let mut last_caught_up = Duration::ZERO;
    let deadline = tokio::time::Instant::now() + catch_up + Duration::from_secs(2);
    while reported < storm {
        match tokio::time::timeout_at(deadline, progress_rx.recv()).await {
            Ok(Some(p)) => {
                reported += 1;
                match p {
                    Progress::CaughtUp { us, at, recovered } => {
                        caught_up += 1;
                        last_caught_up = last_caught_up.max(at);
                        catch_up_hist.saturating_record(us.max(1));
                        if recovered {
                            recovered_hist.saturating_record(us.max(1));
                        } else {
                            snapshot_hist.saturating_record(us.max(1));
                        }
                    }
                    Progress::Failed(e) => reconnect_errors.add(e),
                    Progress::TimedOut(e) => late.add(e),
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let after = maybe_sample(&c.server_pid);
    let (gen_cpu, gen_busy) = self_cpu.finish(c.threads);
    let reconnect_secs = last_caught_up.as_secs_f64();
    tokio::time::sleep(secs(args.grace)).await;
    let _ = stop_tx.send(true);

    // 7. Every client's checks.
    let mut t = Totals::default();
    let collect_deadline = tokio::time::Instant::now() + c.timeout();
    for mut h in handles {
        match tokio::time::timeout_at(collect_deadline, &mut h).await {
            Ok(Ok(end)) => t.add(end),
            Ok(Err(e)) => t.problems.add(format!("a client task failed: {e}")),
            Err(_) => {
                h.abort();
                t.problems.add("a client did not stop in time".to_string());
            }
        }
    }
    let unreported = storm - reported;
    let failures = connect_errors.total + marker_errors.total + reconnect_errors.total + unreported;
    let publish_errors = seeded.errors.total + marker.errors.total + missed.errors.total;
    let cpu = server_cpu(before, after);
    let reconnects_per_sec = t.reconnected as f64 / t.last_answer.as_secs_f64().max(1e-9);

    println!(
        "  reconnected {} of {storm} ({reconnects_per_sec:.0}/s), recovered {}, not recovered {} ({} snapshots), \
         {} failed, caught up {caught_up} of {n} in {reconnect_secs:.2} s",
        t.reconnected,
        t.recovered,
        t.reconnected - t.recovered,
        t.snapshots,
        reconnect_errors.total + unreported
    );
    reconnect_errors.print("reconnect failures");
    late.print("not caught up in time");
    println!("  reconnect → caught up: {}", latency_line(&catch_up_hist));
    if args.mode == Mode::Recover {
        println!("    recovered: {}", latency_line(&recovered_hist));
        if !snapshot_hist.is_empty() {
            println!("    from a snapshot: {}", latency_line(&snapshot_hist));
        }
    }
    println!("  reconnect → CONNECT answer: {}", latency_line(&t.answer_hist));
    println!(
        "  lost {}, duplicates {}, out_of_order {}, cross_tenant {}, unexpected {}, disconnected {}, protocol errors {}",
        t.lost, t.duplicates, t.out_of_order, t.cross_tenant, t.unexpected, t.disconnected, t.protocol_errors
    );
    t.problems.print("client problems");
    if args.mode == Mode::Recover && t.recovered < storm {
        println!("  warning: {} of {storm} sessions were not recovered", storm - t.recovered);
    }
    let per_recovery = if args.mode == Mode::Recover { per_unit_us(cpu, t.recovered) } else { None };
    println!(
        "  server cpu {} ({} per reconnect{}), rss {} KiB",
        opt(cpu, " s"),
        opt(per_unit_us(cpu, t.reconnected), " µs"),
        if args.mode == Mode::Recover {
            format!(", {} per recovery", opt(per_recovery, " µs"))
        } else {
            String::new()
        },
        after.map_or("n/a".into(), |s| s.rss_kib.to_string())
    );

    let ok = failures == 0
        && publish_errors == 0
        && stale_snapshots == 0
        && caught_up == n
        && t.lost == 0
        && t.duplicates == 0
        && t.out_of_order == 0
        && t.cross_tenant == 0
        && t.disconnected == 0
        && t.protocol_errors == 0
        && t.recovered_with_snapshot == 0;
    let mut json = json!({
        "mode": "storm",
        "ok": ok,
        "reconnect": args.mode.name(),
        "cut": args.cut.name(),
        "tenants": args.tenants,
        "clients_per_tenant": args.clients,
        "clients": n,
        "seed": args.seed,
        "missed": args.missed,
        "spread_secs": args.spread,
        "connect_rate": args.connect_rate,
        "fd_limit": fd_limit,
        "source_ips": sources.count(),
        "seed_secs": round2(seeded.secs),
        "events_seeded": seeded.confirmed,
        "events_missed": missed.confirmed,
        "publish_errors": publish_errors,
        "connected": ready,
        "connect_secs": round2(connect_secs),
        "connects_per_sec": round2(connects_per_sec),
        "connect_failures": connect_errors.total,
        "marker_failures": marker_errors.total,
        "stale_snapshots": stale_snapshots,
        "without_pid": no_pid,
        "without_offset": no_offset,
        "cut_ms": round2(cut_ms),
    });
    let more = json!({
        "reconnecting": storm,
        "reconnected": t.reconnected,
        "reconnect_failures": reconnect_errors.total + unreported,
        "reconnects_per_sec": round2(reconnects_per_sec),
        "failures": failures,
        "recovered": t.recovered,
        "not_recovered": t.reconnected - t.recovered,
        "snapshots": t.snapshots,
        "caught_up": caught_up,
        "not_caught_up_in_time": late.total,
        "reconnect_secs": round2(reconnect_secs),
        "catch_up_us": latency_json(&catch_up_hist),
        "catch_up_recovered_us": latency_json(&recovered_hist),
        "catch_up_snapshot_us": latency_json(&snapshot_hist),
        "connect_answer_us": latency_json(&t.answer_hist),
        "lost": t.lost,
        "duplicates": t.duplicates,
        "out_of_order": t.out_of_order,
        "cross_tenant": t.cross_tenant,
        "unexpected": t.unexpected,
        "disconnected": t.disconnected,
        "protocol_errors": t.protocol_errors,
        "recovered_with_snapshot": t.recovered_with_snapshot,
        "errors": {
            "connect": connect_errors.json(),
            "marker": marker_errors.json(),
            "reconnect": reconnect_errors.json(),
            "late": late.json(),
            "clients": t.problems.json(),
        },
        "server_cpu_secs": cpu,
        "server_cpu_us_per_reconnect": per_unit_us(cpu, t.reconnected),
        "server_cpu_us_per_recovery": per_recovery,
        "server_rss_kib_before": before.map(|s| s.rss_kib),
        "server_rss_kib": after.map(|s| s.rss_kib),
        "loadgen_cpu_secs": gen_cpu,
        "loadgen_busy": gen_busy,
    });
    // Two halves: one json! of every figure is beyond the macro's recursion limit.
    if let (Some(all), serde_json::Value::Object(more)) = (json.as_object_mut(), more) {
        all.extend(more);
    }
    Ok(Outcome { json, ok })
}

/// What a client knew when it was cut.
#[derive(Debug)]
struct Marked {
    /// Its number (for its source address).
    index: u64,
    tenant: usize,
    sid: String,
    pid: Option<String>,
    /// The offset of the marker event.
    offset: Option<String>,
    snapshot_max: Option<u64>,
    /// The seq of the marker event: the last the client saw.
    marker_seq: u64,
}

/// The start of a first-phase error that was already reported as a connect failure.
const CONNECT_FAILED: &str = "connect failed: ";

/// Opens a client (keeping its ids and snapshot), reports it ready, then waits
/// for the first `event_created` (the marker) and returns the websocket.
async fn first_session(
    cfg: Arc<ClientConfig>,
    index: u64,
    tenant: usize,
    name: Arc<str>,
    source: Option<IpAddr>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
) -> Result<(Ws, Marked), String> {
    let IdSession { session: Session { mut ws, snapshot_max_seq }, answer } =
        match ws::open_with_ids(&cfg, &name, source).await {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(format!("{e:#}")));
                return Err(format!("{CONNECT_FAILED}{e:#}"));
            }
        };
    let _ = ready.send(Ok(()));
    drop(ready);
    loop {
        let text = ws::next_text(&mut ws)
            .await
            .map_err(|e| format!("{e:#}"))?
            .ok_or_else(|| "the websocket closed before the marker event".to_string())?;
        match cfg.wire.classify_with_offset(text.as_str())? {
            (Incoming::Event(EventArgs::Created(ev)), offset) => {
                if ev.tenant_id != *name {
                    return Err(format!("event of tenant {:?} delivered to {name:?}", ev.tenant_id));
                }
                let m = Marked {
                    index,
                    tenant,
                    sid: answer.sid,
                    pid: answer.pid,
                    offset: offset.map(Cow::into_owned),
                    snapshot_max: snapshot_max_seq,
                    marker_seq: ev.seq,
                };
                return Ok((ws, m));
            }
            (Incoming::Ping, _) => ws::pong(&mut ws).await.map_err(|e| format!("{e:#}"))?,
            (Incoming::Closed, _) => return Err("the server closed the session before the marker event".to_string()),
            (Incoming::Event(EventArgs::Other(name)), _) => {
                return Err(format!("unexpected event {name:?}: {}", clip(text.as_str())));
            }
            _ => {}
        }
    }
}

/// Keep-alive REST connections publishing for every tenant; remembers each
/// tenant's latest seq from the 201s.
struct Publisher {
    clients: Vec<HttpClient>,
    headers: Arc<[String]>,
    tenants: Arc<[Arc<str>]>,
    latest: Arc<[AtomicU64]>,
    pad: usize,
    started: Instant,
}

/// One publishing round.
struct Published {
    confirmed: u64,
    errors: Errors,
    secs: f64,
}

impl Publisher {
    async fn new(args: &StormArgs, target: &Arc<Target>, tenants: &Arc<[Arc<str>]>, started: Instant) -> Result<Self> {
        let c = &args.common;
        let mut clients = Vec::with_capacity(args.publish_connections);
        for _ in 0..args.publish_connections {
            let mut client = HttpClient::new(Arc::clone(target), None, c.timeout());
            client.ensure_connected().await.context("opening a publishing connection")?;
            clients.push(client);
        }
        let headers = tenants
            .iter()
            .map(|t| format!("X-TENANT-ID: {t}\r\nX-User-Token: {}\r\nContent-Type: application/json\r\n", c.token))
            .collect();
        Ok(Publisher {
            clients,
            headers,
            tenants: Arc::clone(tenants),
            latest: tenants.iter().map(|_| AtomicU64::new(0)).collect(),
            pad: args.message_bytes,
            started,
        })
    }

    /// Each tenant's largest seq confirmed so far.
    fn latest(&self) -> Vec<u64> {
        self.latest.iter().map(|l| l.load(Ordering::Relaxed)).collect()
    }

    /// Publishes `per_tenant` events to every tenant over all connections and
    /// waits for every answer (each bounded by the timeout).
    async fn publish(&mut self, per_tenant: u64, tag: char) -> Published {
        let start = Instant::now();
        let tenants = self.tenants.len() as u64;
        let total = per_tenant * tenants;
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::with_capacity(self.clients.len());
        for mut client in self.clients.drain(..) {
            let (next, headers, names, latest) =
                (Arc::clone(&next), Arc::clone(&self.headers), Arc::clone(&self.tenants), Arc::clone(&self.latest));
            let (pad, started) = (self.pad, self.started);
            tasks.push(tokio::spawn(async move {
                let mut errors = Errors::default();
                let mut confirmed = 0u64;
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= total {
                        break;
                    }
                    let t = (j % tenants) as usize;
                    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let message = bench_message(&names[t], tag, j / tenants, nanos, pad);
                    let body = json!({ "message": message }).to_string();
                    match client.request("POST", "/api/events", &headers[t], body.as_bytes()).await {
                        Ok(r) if r.status == 201 => match serde_json::from_slice::<SeqOnly>(r.body) {
                            Ok(e) => {
                                latest[t].fetch_max(e.seq, Ordering::Relaxed);
                                confirmed += 1;
                            }
                            Err(e) => errors.add(format!("POST /api/events 201 without a seq: {e}")),
                        },
                        Ok(r) => errors.add(format!(
                            "POST /api/events {}: {}",
                            r.status,
                            clip(&String::from_utf8_lossy(r.body))
                        )),
                        Err(e) => errors.add(format!("POST /api/events: {e:#}")),
                    }
                }
                (client, confirmed, errors)
            }));
        }
        let mut out = Published { confirmed: 0, errors: Errors::default(), secs: 0.0 };
        for task in tasks {
            match task.await {
                Ok((client, confirmed, errors)) => {
                    self.clients.push(client);
                    out.confirmed += confirmed;
                    out.errors.merge(errors);
                }
                Err(e) => out.errors.add(format!("a publishing task failed: {e}")),
            }
        }
        if out.confirmed < total && out.errors.total == 0 {
            out.errors.add(format!("{} of {total} events were not published", total - out.confirmed));
        }
        out.secs = start.elapsed().as_secs_f64();
        out
    }
}

/// How one client comes back.
#[derive(Debug)]
struct Plan {
    tenant: Arc<str>,
    source: Option<IpAddr>,
    /// Its sid before the cut: the same sid again means recovered.
    old_sid: String,
    /// `(pid, offset)` to present (recover mode, when the server gave both).
    recover: Option<(String, String)>,
    /// The last seq it saw before the cut.
    base: u64,
    /// The tenant's latest seq.
    latest: u64,
}

/// What a reconnecting client tells the driver, once.
#[derive(Debug)]
enum Progress {
    /// Caught up `us` after its TCP connect began, `at` after the storm began.
    CaughtUp { us: u64, at: Duration, recovered: bool },
    /// Never caught up: the connect failed or the session ended first.
    Failed(String),
    /// Not caught up within the bound: what it was still waiting for.
    TimedOut(String),
}

/// The missed events a recovered client must receive: every seq in
/// `(base, latest]`, each once, in order.
#[derive(Debug)]
struct Missed {
    base: u64,
    latest: u64,
    /// Received seqs, as bits from `base + 1`.
    seen: Vec<u64>,
    /// The seq received last (`base` at first).
    prev: u64,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Seqs after `latest` (published by someone else).
    unexpected: u64,
}

impl Missed {
    fn new(base: u64, latest: u64) -> Missed {
        let expected = latest.saturating_sub(base);
        let words = usize::try_from(expected.div_ceil(64)).unwrap_or(0);
        Missed {
            base,
            latest,
            seen: vec![0; words],
            prev: base,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
        }
    }

    fn expected(&self) -> u64 {
        self.latest.saturating_sub(self.base)
    }

    fn on_seq(&mut self, seq: u64) {
        if seq <= self.base {
            // Seen before the cut.
            self.duplicates += 1;
            return;
        }
        if seq > self.latest {
            self.unexpected += 1;
            return;
        }
        let i = seq - self.base - 1;
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        let Some(w) = self.seen.get_mut(word) else { return };
        if *w & bit != 0 {
            self.duplicates += 1;
            return;
        }
        *w |= bit;
        self.unique += 1;
        if seq != self.prev + 1 {
            self.out_of_order += 1;
        }
        self.prev = seq;
    }

    fn complete(&self) -> bool {
        self.unique == self.expected()
    }

    fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.unique)
    }
}

/// One reconnecting client's state: what it was answered and received.
#[derive(Debug)]
struct Catchup {
    tenant: Arc<str>,
    old_sid: String,
    latest: u64,
    /// The CONNECT answer came.
    connected: bool,
    /// It came with the sid of before the cut.
    recovered: bool,
    snapshots: u64,
    snapshot_max: Option<u64>,
    missed: Missed,
    cross_tenant: u64,
    protocol_errors: u64,
    caught_up: bool,
    /// The session ended after it was caught up.
    disconnected: bool,
    /// TCP connect → CONNECT answer, µs.
    answer_us: Option<u64>,
    /// Storm start → CONNECT answer.
    answered_at: Option<Duration>,
    problem: Option<String>,
}

/// What one frame asks of the client.
#[derive(Debug, Default, PartialEq)]
struct Step {
    pong: bool,
    connected: bool,
    caught_up: bool,
    /// The session is over (refused or closed).
    end: Option<String>,
}

impl Catchup {
    fn new(plan: &Plan) -> Catchup {
        Catchup {
            tenant: Arc::clone(&plan.tenant),
            old_sid: plan.old_sid.clone(),
            latest: plan.latest,
            connected: false,
            recovered: false,
            snapshots: 0,
            snapshot_max: None,
            missed: Missed::new(plan.base, plan.latest),
            cross_tenant: 0,
            protocol_errors: 0,
            caught_up: false,
            disconnected: false,
            answer_us: None,
            answered_at: None,
            problem: None,
        }
    }

    fn note(&mut self, problem: String) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }

    /// Takes one text frame. Events may come before the CONNECT answer (the
    /// Node server sends a recovered session's missed events first).
    fn on_frame(&mut self, wire: &Wire, text: &str) -> Step {
        let mut step = Step::default();
        match wire.classify_with_offset(text) {
            Ok((Incoming::Ping, _)) => step.pong = true,
            Ok((Incoming::Connected, _)) if self.connected => {
                self.protocol_errors += 1;
                self.note(format!("a second CONNECT answer: {}", clip(text)));
            }
            Ok((Incoming::Connected, _)) => {
                match wire.connect_answer(text) {
                    Some(a) => self.recovered = a.sid == self.old_sid,
                    None => {
                        self.protocol_errors += 1;
                        self.note(format!("CONNECT answer without a sid: {}", clip(text)));
                    }
                }
                self.connected = true;
                step.connected = true;
            }
            Ok((Incoming::ConnectError(m), _)) => step.end = Some(format!("CONNECT refused: {m}")),
            Ok((Incoming::Closed, _)) => step.end = Some("the server closed the session".to_string()),
            Ok((Incoming::Event(EventArgs::Created(ev)), _)) => {
                if ev.tenant_id == *self.tenant {
                    self.missed.on_seq(ev.seq);
                } else {
                    self.cross_tenant += 1;
                    let e = format!("event of tenant {:?} delivered to {:?}", ev.tenant_id, self.tenant);
                    self.note(e);
                }
            }
            Ok((Incoming::Event(EventArgs::Snapshot { max_seq, .. }), _)) => {
                self.snapshots += 1;
                self.snapshot_max = self.snapshot_max.max(max_seq);
            }
            Ok((Incoming::Event(EventArgs::Other(name)), _)) => {
                self.protocol_errors += 1;
                self.note(format!("unexpected event {name:?}: {}", clip(text)));
            }
            Ok((Incoming::Ack(..) | Incoming::Ignored, _)) => {}
            Err(e) => {
                self.protocol_errors += 1;
                self.note(e);
            }
        }
        if !self.caught_up && self.is_caught_up() {
            self.caught_up = true;
            step.caught_up = true;
        }
        step
    }

    /// Recovered: every missed event received; otherwise: a snapshot that
    /// holds the tenant's latest seq.
    fn is_caught_up(&self) -> bool {
        self.connected
            && if self.recovered { self.missed.complete() } else { self.snapshot_max.is_some_and(|m| m >= self.latest) }
    }

    /// What it is still waiting for (for the tally of late clients).
    fn waiting_for(&self) -> String {
        if !self.connected {
            "no CONNECT answer".to_string()
        } else if self.recovered {
            "recovered, but missed events still missing".to_string()
        } else if self.snapshots == 0 {
            "not recovered and no snapshot".to_string()
        } else {
            "a snapshot without the latest seq".to_string()
        }
    }
}

/// One client's reconnect: TCP connect, CONNECT (with pid and offset in
/// recover mode), then frames until caught up; it keeps listening (late
/// duplicates) until told to stop.
async fn reconnect(
    cfg: Arc<ClientConfig>,
    plan: Plan,
    storm_start: Instant,
    progress: mpsc::UnboundedSender<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Catchup {
    let start = Instant::now();
    let mut state = Catchup::new(&plan);
    let frame = match &plan.recover {
        Some((pid, offset)) => cfg.wire.connect_recover(&plan.tenant, &cfg.token, pid, offset),
        None => cfg.wire.connect(&plan.tenant, &cfg.token),
    };
    let opened = async {
        let mut ws = ws::engine_open(&cfg, plan.source).await?;
        ws.send(Message::text(frame)).await.context("sending CONNECT")?;
        anyhow::Ok(ws)
    };
    let mut ws = match opened.await {
        Ok(ws) => ws,
        Err(e) => {
            let _ = progress.send(Progress::Failed(format!("{e:#}")));
            return state;
        }
    };
    let bound = tokio::time::sleep_until((start + cfg.timeout).into());
    tokio::pin!(bound);
    let mut reported = false;
    loop {
        let end = tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let step = state.on_frame(&cfg.wire, text.as_str());
                    if step.connected {
                        state.answer_us = Some(micros(start.elapsed()));
                        state.answered_at = Some(storm_start.elapsed());
                    }
                    if step.caught_up && !reported {
                        reported = true;
                        let (us, at) = (micros(start.elapsed()), storm_start.elapsed());
                        let _ = progress.send(Progress::CaughtUp { us, at, recovered: state.recovered });
                    }
                    match step.end {
                        Some(e) => Some(e),
                        None if step.pong => ws::pong(&mut ws).await.err().map(|e| format!("{e:#}")),
                        None => None,
                    }
                }
                Some(Ok(Message::Close(_))) | None => Some("the websocket closed".to_string()),
                Some(Err(e)) => Some(format!("websocket read: {e}")),
                Some(Ok(_)) => None,
            },
            _ = &mut bound, if !reported => {
                reported = true;
                let _ = progress.send(Progress::TimedOut(state.waiting_for()));
                None
            }
        };
        if let Some(e) = end {
            if !reported {
                let _ = progress.send(Progress::Failed(e.clone()));
            } else if state.caught_up {
                state.disconnected = true;
            }
            state.note(e);
            break;
        }
    }
    state
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Every reconnecting client's checks, summed.
#[derive(Debug)]
struct Totals {
    reconnected: u64,
    recovered: u64,
    snapshots: u64,
    recovered_with_snapshot: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
    cross_tenant: u64,
    protocol_errors: u64,
    disconnected: u64,
    answer_hist: Histogram<u64>,
    /// Storm start → the last CONNECT answer.
    last_answer: Duration,
    problems: Errors,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            reconnected: 0,
            recovered: 0,
            snapshots: 0,
            recovered_with_snapshot: 0,
            lost: 0,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            cross_tenant: 0,
            protocol_errors: 0,
            disconnected: 0,
            answer_hist: histogram(),
            last_answer: Duration::ZERO,
            problems: Errors::default(),
        }
    }
}

impl Totals {
    fn add(&mut self, c: Catchup) {
        if c.connected {
            self.reconnected += 1;
        }
        if let Some(us) = c.answer_us {
            self.answer_hist.saturating_record(us.max(1));
        }
        if let Some(at) = c.answered_at {
            self.last_answer = self.last_answer.max(at);
        }
        if c.recovered {
            self.recovered += 1;
            self.lost += c.missed.lost();
            if c.snapshots > 0 {
                self.recovered_with_snapshot += 1;
                self.problems.add("a recovered session was also sent a snapshot".to_string());
            }
        }
        self.snapshots += u64::from(c.snapshots > 0);
        self.duplicates += c.missed.duplicates;
        self.out_of_order += c.missed.out_of_order;
        self.unexpected += c.missed.unexpected;
        self.cross_tenant += c.cross_tenant;
        self.protocol_errors += c.protocol_errors;
        self.disconnected += u64::from(c.disconnected);
        if let Some(p) = c.problem {
            self.problems.add(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_in_order() {
        let mut m = Missed::new(501, 521);
        assert_eq!(m.expected(), 20);
        for s in 502..=521 {
            m.on_seq(s);
        }
        assert!(m.complete());
        assert_eq!((m.unique, m.duplicates, m.out_of_order, m.lost()), (20, 0, 0, 0));
    }

    #[test]
    fn missed_gaps_duplicates_and_strays() {
        let mut m = Missed::new(10, 15);
        m.on_seq(11);
        m.on_seq(13); // 12 skipped
        m.on_seq(12); // late
        m.on_seq(12); // twice
        m.on_seq(10); // seen before the cut
        m.on_seq(16); // after the latest
        assert_eq!((m.unique, m.duplicates, m.out_of_order, m.unexpected), (3, 2, 2, 1));
        assert!(!m.complete());
        assert_eq!(m.lost(), 2);
        // Many missed: more than one word of bits.
        let mut m = Missed::new(0, 130);
        (1..=130).rev().for_each(|s| m.on_seq(s));
        assert!(m.complete());
        assert_eq!(m.out_of_order, 130);
    }

    fn plan(base: u64, latest: u64) -> Plan {
        Plan {
            tenant: Arc::from("t1"),
            source: None,
            old_sid: "old".into(),
            recover: Some(("p".into(), "o".into())),
            base,
            latest,
        }
    }

    fn event(seq: u64, tenant: &str) -> String {
        format!(r#"42/events,["event_created",{{"seq":{seq},"tenant_id":"{tenant}","message":"m"}},"off{seq}"]"#)
    }

    #[test]
    fn recovered_with_events_before_the_answer() {
        // The Node server sends a recovered session's missed events before the CONNECT answer.
        let w = Wire::new("/events");
        let mut c = Catchup::new(&plan(5, 7));
        assert_eq!(c.on_frame(&w, &event(6, "t1")), Step::default());
        assert_eq!(c.on_frame(&w, &event(7, "t1")), Step::default());
        let step = c.on_frame(&w, r#"40/events,{"sid":"old","pid":"p"}"#);
        assert!(step.connected && step.caught_up);
        assert!(c.recovered);
        // A late duplicate is counted, not caught up twice.
        assert_eq!(c.on_frame(&w, &event(7, "t1")), Step::default());
        assert_eq!(c.missed.duplicates, 1);
        assert!(c.on_frame(&w, "2").pong);
    }

    #[test]
    fn recovered_with_events_after_the_answer() {
        let w = Wire::new("/events");
        let mut c = Catchup::new(&plan(5, 7));
        let step = c.on_frame(&w, r#"40/events,{"sid":"old","pid":"p"}"#);
        assert!(step.connected && !step.caught_up);
        assert!(!c.on_frame(&w, &event(6, "t1")).caught_up);
        assert_eq!(c.on_frame(&w, &event(3, "t2")), Step::default());
        assert_eq!(c.cross_tenant, 1);
        assert!(c.on_frame(&w, &event(7, "t1")).caught_up);
        assert_eq!(c.waiting_for(), "recovered, but missed events still missing");
    }

    #[test]
    fn not_recovered_catches_up_from_the_snapshot() {
        let w = Wire::new("/events");
        let mut c = Catchup::new(&plan(5, 7));
        assert!(c.on_frame(&w, r#"40/events,{"sid":"new","pid":"q"}"#).connected);
        assert!(!c.recovered);
        assert_eq!(c.waiting_for(), "not recovered and no snapshot");
        assert!(!c.on_frame(&w, r#"42/events,["snapshot",[{"seq":5},{"seq":6}]]"#).caught_up);
        assert_eq!(c.waiting_for(), "a snapshot without the latest seq");
        assert!(c.on_frame(&w, r#"42/events,["snapshot",[{"seq":6},{"seq":7}]]"#).caught_up);
        assert_eq!(c.snapshots, 2);
        let refused = c.on_frame(&w, r#"44/events,{"message":"unauthorized"}"#);
        assert_eq!(refused.end.as_deref(), Some("CONNECT refused: unauthorized"));
        assert!(c.on_frame(&w, "41/events,").end.is_some());
        c.on_frame(&w, r#"42/events,["error",{"code":"x"}]"#);
        assert_eq!(c.protocol_errors, 1);
    }
}
