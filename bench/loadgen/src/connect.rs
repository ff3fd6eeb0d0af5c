//! `connect`: N idle clients opened at a bounded rate and held. Connect latency
//! (TCP connect → snapshot received), server CPU per connect, server RSS per
//! connection, and how many are still connected after the hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::procfs::maybe_sample;
use crate::report::{Errors, SelfCpu, histogram, latency_json, latency_line, opt, per_unit_us, round2, server_cpu};
use crate::target::{SourceIps, Target};
use crate::ws::{self, ClientConfig};
use crate::{Common, Outcome, positive, raise_fd_limit, secs};

/// Options of `connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients to open.
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    /// Connects started per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds to hold the clients once every connect has finished.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Bind clients to K source addresses 127.0.1.1 … (each has its own ephemeral
    /// port range); 0 = the kernel's choice. Default: one per 20,000 clients above 20,000.
    #[arg(long)]
    pub source_ips: Option<u32>,
    /// Tenants the clients are spread over (round robin).
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
}

type ConnectResult = Result<u64, String>;

/// Runs `connect`.
pub async fn run(args: &ConnectArgs, _started: Instant) -> Result<Outcome> {
    let c = &args.common;
    if args.clients == 0 || args.tenants == 0 || !positive(args.rate) || !(positive(args.hold) || args.hold == 0.0) {
        bail!("--clients, --tenants and --rate must be positive, --hold not negative");
    }
    let fd_limit = raise_fd_limit(args.clients + 64)?;
    let target = Arc::new(Target::resolve(&c.url).await?);
    let sources = SourceIps::choose(args.source_ips, args.clients, &target)?;
    let cfg = Arc::new(c.client_config(&target));
    let tenants: Vec<Arc<str>> = (0..args.tenants).map(|i| Arc::from(c.tenant(i))).collect();
    println!(
        "connect: {} clients to {} at {}/s over {} tenants, {}, hold {} s (open-file limit {fd_limit})",
        args.clients,
        target.addr,
        args.rate,
        args.tenants,
        sources.describe(),
        args.hold
    );

    let before = maybe_sample(&c.server_pid);
    let self_cpu = SelfCpu::start();
    let alive = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ConnectResult>();
    let mut tally = Tally { hist: histogram(), errors: Errors::default(), finished: 0 };

    let t0 = Instant::now();
    let interval = secs(1.0 / args.rate);
    let mut last_report = t0;
    for i in 0..args.clients {
        let due = t0 + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        while let Ok(r) = out_rx.try_recv() {
            tally.record(r);
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            println!("  … {i} started, {} connected, {} failed", alive.load(Ordering::Relaxed), tally.errors.total);
        }
        let tenant = Arc::clone(&tenants[(i % args.tenants as u64) as usize]);
        tokio::spawn(client(
            Arc::clone(&cfg),
            tenant,
            sources.for_client(i),
            out_tx.clone(),
            Arc::clone(&alive),
            Arc::clone(&dropped),
            stop_rx.clone(),
        ));
    }
    drop(out_tx);
    let deadline = tokio::time::Instant::now() + c.timeout() + Duration::from_secs(5);
    while tally.finished < args.clients {
        match tokio::time::timeout_at(deadline, out_rx.recv()).await {
            Ok(Some(r)) => tally.record(r),
            Ok(None) | Err(_) => break,
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let after_connect = maybe_sample(&c.server_pid);
    let (gen_cpu, gen_busy) = self_cpu.finish(c.threads);
    let connected = alive.load(Ordering::Relaxed);
    let Tally { hist, errors, finished } = tally;
    let unfinished = args.clients - finished;
    println!(
        "  connected {connected} of {} in {connect_secs:.2} s ({:.0}/s), {} failed{}",
        args.clients,
        connected as f64 / connect_secs.max(1e-9),
        errors.total,
        if unfinished > 0 { format!(", {unfinished} never finished") } else { String::new() }
    );
    println!("  connect latency: {}", latency_line(&hist));
    errors.print("connect failures");

    if args.hold > 0.0 {
        tokio::time::sleep(secs(args.hold)).await;
    }
    let held = alive.load(Ordering::Relaxed);
    let after = maybe_sample(&c.server_pid);
    let _ = stop_tx.send(true);

    let cpu = server_cpu(before, after_connect);
    // What the held, idle connections cost: heartbeats, and any timer a
    // connection holds (a JWT socket's expiry).
    let hold_cpu = server_cpu(after_connect, after);
    let rss_before = before.map(|s| s.rss_kib);
    let rss_after = after.map(|s| s.rss_kib);
    let rss_per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if held > 0 => Some(round2((a as f64 - b as f64) / held as f64)),
        _ => None,
    };
    println!(
        "  held {held} after {} s ({} dropped during the hold); server cpu during the hold {}",
        args.hold,
        dropped.load(Ordering::Relaxed),
        opt(hold_cpu, " s")
    );
    println!(
        "  server cpu during connects {} ({} per connect), rss {} → {} KiB ({} per connection)",
        opt(cpu, " s"),
        opt(per_unit_us(cpu, connected), " µs"),
        rss_before.map_or("n/a".into(), |v| v.to_string()),
        rss_after.map_or("n/a".into(), |v| v.to_string()),
        opt(rss_per_conn, " KiB"),
    );
    let ok = held == args.clients && errors.total == 0;
    let json = json!({
        "mode": "connect",
        "ok": ok,
        "clients": args.clients,
        "rate": args.rate,
        "hold_secs": args.hold,
        "tenants": args.tenants,
        "source_ips": sources.count(),
        "fd_limit": fd_limit,
        "connected": connected,
        "held": held,
        "failures": errors.total + unfinished,
        "dropped": dropped.load(Ordering::Relaxed),
        "connect_secs": round2(connect_secs),
        "connects_per_sec": round2(connected as f64 / connect_secs.max(1e-9)),
        "connect_latency_us": latency_json(&hist),
        "server_cpu_secs": cpu,
        "server_cpu_us_per_connect": per_unit_us(cpu, connected),
        "server_cpu_secs_during_hold": hold_cpu,
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after_connect": after_connect.map(|s| s.rss_kib),
        "server_rss_kib_after": rss_after,
        "rss_per_connection_kib": rss_per_conn,
        "loadgen_cpu_secs": gen_cpu,
        "loadgen_busy": gen_busy,
        "errors": errors.json(),
    });
    Ok(Outcome { json, ok })
}

struct Tally {
    hist: hdrhistogram::Histogram<u64>,
    errors: Errors,
    finished: u64,
}

impl Tally {
    fn record(&mut self, r: ConnectResult) {
        self.finished += 1;
        match r {
            Ok(us) => self.hist.saturating_record(us.max(1)),
            Err(e) => self.errors.add(e),
        }
    }
}

/// One idle client: open, report, then answer pings until told to stop.
async fn client(
    cfg: Arc<ClientConfig>,
    tenant: Arc<str>,
    source: Option<std::net::IpAddr>,
    out: mpsc::UnboundedSender<ConnectResult>,
    alive: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let mut session = match ws::open(&cfg, &tenant, source).await {
        Ok(s) => s,
        Err(e) => {
            let _ = out.send(Err(format!("{e:#}")));
            return;
        }
    };
    alive.fetch_add(1, Ordering::Relaxed);
    let _ = out.send(Ok(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)));
    drop(out);
    let lost = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break false,
            msg = session.ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if t.starts_with('2') {
                        if ws::pong(&mut session.ws).await.is_err() {
                            break true;
                        }
                    } else if t.starts_with('1') || t.starts_with("41") {
                        break true;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break true,
                Some(Ok(_)) => {}
            },
        }
    };
    if lost {
        alive.fetch_sub(1, Ordering::Relaxed);
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}
