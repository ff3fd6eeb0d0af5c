//! `fanout`: T tenants × C receiving clients; publishers post over REST, over
//! `post_event`, or both, at a fixed rate or as fast as answers allow. Every
//! client checks every delivery of its tenant (exactly once, in seq order,
//! right tenant) and measures end-to-end latency from the send time the
//! publisher wrote into the message.
//!
//! Receivers use one transport (`--transport`): the Engine.IO websocket (the
//! default, this file), Engine.IO HTTP long-polling without upgrade
//! (`polling.rs`), or eventfeed's Server-Sent Events stream `GET
//! /api/events/stream` (`sse.rs`). All three share the checks below
//! ([`Track`], [`on_event`]); publishers are the same whatever the transport.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpClient;
use crate::procfs::{cpu_secs, maybe_sample_each, total};
use crate::report::{
    Errors, SelfCpu, histogram, latency_json, latency_line, opt, per_unit_us, round2, server_cpu, server_sys,
};
use crate::target::{SourceIps, Target};
use crate::track::{Receiver, Shared, Track, on_event};
use crate::wire::{EventArgs, Incoming, bench_message, clip};
use crate::ws::{self, ClientConfig, Session};
use crate::{Common, Outcome, positive, raise_fd_limit, secs};
use crate::{polling, sse};

/// The total publish rate: events per second, or as fast as answers allow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as 201s/acks allow, at most `--window` in flight per publisher.
    Max,
    /// Events per second over all tenants.
    PerSec(f64),
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSec(r)),
            _ => Err(format!("{s:?} is neither a positive number of events per second nor 'max'")),
        }
    }
}

/// How events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Publish {
    /// `POST /api/events` on keep-alive connections.
    Rest,
    /// `post_event` with an ack, on one extra socket per tenant.
    Socket,
    /// Both, sharing each tenant's schedule.
    Mixed,
}

/// How the receivers get their events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Engine.IO websocket: one frame per event.
    Websocket,
    /// Engine.IO HTTP long-polling, never upgrading: a held GET answered with
    /// every packet queued, pongs POSTed on a second connection.
    Polling,
    /// eventfeed's `GET /api/events/stream` (Server-Sent Events, chunked);
    /// the Node baseline has none.
    Sse,
}

impl Transport {
    /// Its name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Polling => "polling",
            Transport::Sse => "sse",
        }
    }

    /// TCP connections each receiver holds.
    fn connections(self) -> u64 {
        match self {
            Transport::Websocket | Transport::Sse => 1,
            Transport::Polling => 2,
        }
    }
}

/// Options of `fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Tenants (t0 … t(T-1)).
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    /// Receiving clients per tenant.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// The receivers' transport (publishers are the same whatever it is).
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
    /// Total events per second over all tenants, or `max`.
    #[arg(long, default_value = "200")]
    pub rate: Rate,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// How events are published.
    #[arg(long, value_enum, default_value_t = Publish::Rest)]
    pub publish: Publish,
    /// Requests in flight per publisher: keep-alive connections per tenant for
    /// REST, unacknowledged `post_event`s per tenant socket.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Receivers connected per second before publishing starts.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Seconds to wait after publishing for the last deliveries.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// Pad each message to at least this many bytes.
    #[arg(long, default_value_t = 0)]
    pub message_bytes: usize,
    /// Bind clients to K source addresses 127.0.1.1 … (see `connect`).
    #[arg(long)]
    pub source_ips: Option<u32>,
    /// Publish to this server instead of `--url` (another instance of a
    /// cluster: measures cross-instance delivery). Receivers stay on `--url`.
    #[arg(long)]
    pub publish_url: Option<String>,
}

/// What the publishers share.
#[derive(Debug)]
struct PubStats {
    confirmed: Vec<AtomicU64>,
    errors: Mutex<Errors>,
    ack_latency: Mutex<Histogram<u64>>,
}

impl PubStats {
    fn error(&self, e: String) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.add(e);
        }
    }

    fn confirmed(&self, tenant: usize, since: Instant) {
        if let Some(c) = self.confirmed.get(tenant) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.ack_latency.lock() {
            h.saturating_record(us);
        }
    }
}

/// One tenant's publishing schedule, shared by its publishers.
#[derive(Debug)]
struct Schedule {
    start: Instant,
    end: Instant,
    period: Option<Duration>,
    next: AtomicU64,
}

impl Schedule {
    /// One schedule per tenant, each publishing every `period` (or as fast
    /// as answers allow). At a fixed rate the tenants take turns: tenant t
    /// starts t/T of a period late, so the server sees one event every
    /// 1/rate seconds, not all T tenants' events at the same instant.
    fn per_tenant(tenants: usize, start: Instant, end: Instant, period: Option<Duration>) -> Vec<Arc<Schedule>> {
        (0..tenants)
            .map(|t| {
                let offset = period.map_or(Duration::ZERO, |p| p.mul_f64(t as f64 / tenants as f64));
                Arc::new(Schedule { start: start + offset, end, period, next: AtomicU64::new(0) })
            })
            .collect()
    }

    /// The next message number and when to send it; `None` once the window is over.
    fn take(&self) -> Option<(u64, Instant)> {
        match self.period {
            Some(p) => {
                let k = self.next.fetch_add(1, Ordering::Relaxed);
                let due = self.start + p.mul_f64(k as f64);
                (due < self.end).then_some((k, due))
            }
            None => {
                let now = Instant::now();
                (now < self.end).then(|| (self.next.fetch_add(1, Ordering::Relaxed), now))
            }
        }
    }
}

/// Runs `fanout`.
pub async fn run(args: &FanoutArgs, started: Instant) -> Result<Outcome> {
    let c = &args.common;
    if args.tenants == 0
        || args.clients == 0
        || args.window == 0
        || !positive(args.duration)
        || !positive(args.connect_rate)
    {
        bail!("--tenants, --clients, --window, --duration and --connect-rate must be positive");
    }
    let receivers = (args.tenants * args.clients) as u64;
    let publishers = args.tenants as u64 * (args.window as u64 + 1);
    let connections = receivers * args.transport.connections();
    let fd_limit = raise_fd_limit(connections + publishers + 64)?;
    let target = Arc::new(Target::resolve(&c.url).await?);
    let sources = SourceIps::choose(args.source_ips, connections, &target)?;
    let cfg = Arc::new(c.client_config(&target));
    let (pub_target, pub_cfg) = match &args.publish_url {
        Some(url) => {
            let t = Arc::new(Target::resolve(url).await?);
            let cfg = Arc::new(c.client_config(&t));
            (t, cfg)
        }
        None => (Arc::clone(&target), Arc::clone(&cfg)),
    };
    let tenants: Vec<Arc<str>> = (0..args.tenants).map(|i| Arc::from(c.tenant(i))).collect();
    let rate_text = match args.rate {
        Rate::Max => format!("max (window {})", args.window),
        Rate::PerSec(r) => format!("{r}/s"),
    };
    println!(
        "fanout: {} tenants × {} {} clients = {receivers} receivers at {}, publish {:?} at {rate_text} for {} s \
         (open-file limit {fd_limit})",
        args.tenants,
        args.clients,
        args.transport.name(),
        target.addr,
        args.publish,
        args.duration
    );
    if args.transport == Transport::Sse {
        // Fails clearly on a server without the stream (the Node baseline).
        sse::check(&cfg, &tenants[0]).await?;
    }

    // 1. Receivers, at a bounded rate; all must be ready: websocket and
    // polling ones with their snapshot, SSE ones with the stream's head.
    let shared = Arc::new(Shared::new(started));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut handles = Vec::with_capacity(receivers as usize);
    let t0 = Instant::now();
    let interval = secs(1.0 / args.connect_rate);
    let mut ready = 0u64;
    for i in 0..receivers {
        let due = t0 + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        while let Ok(r) = ready_rx.try_recv() {
            ready += 1;
            if let Err(e) = r {
                bail!("receiver {ready} of {receivers} could not connect: {e}");
            }
        }
        let tenant = (i % args.tenants as u64) as usize;
        let (cfg, shared, name, source) =
            (Arc::clone(&cfg), Arc::clone(&shared), Arc::clone(&tenants[tenant]), sources.for_client(i));
        let (ready, stop) = (ready_tx.clone(), stop_rx.clone());
        // One task per receiver, each of a concrete type: no dynamic dispatch per delivery.
        let r = Receiver { cfg, shared, tenant_index: tenant, tenant: name, source, ready, stop };
        handles.push(match args.transport {
            Transport::Websocket => tokio::spawn(receiver(r)),
            Transport::Polling => tokio::spawn(polling::receiver(r)),
            Transport::Sse => tokio::spawn(sse::receiver(r)),
        });
    }
    drop(ready_tx);
    let deadline = tokio::time::Instant::now() + c.timeout() + Duration::from_secs(2);
    while ready < receivers {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => ready += 1,
            Ok(Some(Err(e))) => bail!("a receiver could not connect: {e}"),
            Ok(None) | Err(_) => bail!("only {ready} of {receivers} receivers were ready in time"),
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let what = if args.transport == Transport::Sse { "their stream open" } else { "their snapshot" };
    println!("  {receivers} receivers connected with {what} in {connect_secs:.2} s");

    // 2. Publishers: sockets opened and HTTP connections made before the window.
    let stats = Arc::new(PubStats {
        confirmed: (0..args.tenants).map(|_| AtomicU64::new(0)).collect(),
        errors: Mutex::new(Errors::default()),
        ack_latency: Mutex::new(histogram()),
    });
    let use_rest = matches!(args.publish, Publish::Rest | Publish::Mixed);
    let use_socket = matches!(args.publish, Publish::Socket | Publish::Mixed);
    let mut pub_sockets = Vec::new();
    if use_socket {
        for tenant in &tenants {
            let s =
                ws::open(&pub_cfg, tenant, None).await.map_err(|e| anyhow!("publisher socket for {tenant}: {e:#}"))?;
            pub_sockets.push(s);
        }
    }
    let mut rest_clients = Vec::new();
    if use_rest {
        for t in 0..args.tenants {
            for _ in 0..args.window {
                let mut client = HttpClient::new(Arc::clone(&pub_target), None, c.timeout());
                client.ensure_connected().await?;
                rest_clients.push((t, client));
            }
        }
    }

    // 3. The measured window.
    let before_each = maybe_sample_each(&c.server_pid);
    let before = before_each.as_deref().map(total);
    let self_cpu = SelfCpu::start();
    let start = Instant::now();
    let end = start + secs(args.duration);
    let period = match args.rate {
        Rate::Max => None,
        Rate::PerSec(r) => Some(secs(args.tenants as f64 / r)),
    };
    let schedules = Schedule::per_tenant(args.tenants, start, end, period);
    let mut pubs = Vec::new();
    for (t, client) in rest_clients {
        let p = RestPublisher {
            client,
            headers: format!(
                "X-TENANT-ID: {}\r\nX-User-Token: {}\r\nContent-Type: application/json\r\n",
                tenants[t], c.token
            ),
            tenant_index: t,
            tenant: Arc::clone(&tenants[t]),
            schedule: Arc::clone(&schedules[t]),
            stats: Arc::clone(&stats),
            shared: Arc::clone(&shared),
            pad: args.message_bytes,
        };
        pubs.push(tokio::spawn(p.run()));
    }
    for (t, session) in pub_sockets.into_iter().enumerate() {
        pubs.push(tokio::spawn(socket_publisher(
            Arc::clone(&pub_cfg),
            session,
            t,
            Arc::clone(&tenants[t]),
            Arc::clone(&schedules[t]),
            args.window,
            Arc::clone(&stats),
            Arc::clone(&shared),
            args.message_bytes,
        )));
    }
    for p in pubs {
        if let Err(e) = p.await {
            stats.error(format!("a publisher task failed: {e}"));
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let confirmed: Vec<u64> = stats.confirmed.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let published: u64 = confirmed.iter().sum();
    let expected = published * args.clients as u64;

    // 4. Drain: wait for every expected delivery, at most --drain seconds.
    let drain_end = Instant::now() + secs(args.drain);
    while shared.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after_each = maybe_sample_each(&c.server_pid);
    let after = after_each.as_deref().map(total);
    let (gen_cpu, gen_busy) = self_cpu.finish(c.threads);
    // A short grace so late duplicates are seen too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop_tx.send(true);

    // 5. Collect every receiver's checks.
    let mut totals = Track::default();
    let (mut lost, mut unexpected, mut disconnected) = (0u64, 0u64, 0u64);
    let mut problems = Errors::default();
    let collect_deadline = tokio::time::Instant::now() + c.timeout();
    for h in handles {
        match tokio::time::timeout_at(collect_deadline, h).await {
            Ok(Ok(t)) => {
                let want = confirmed.get(t.tenant).copied().unwrap_or(0);
                lost += want.saturating_sub(t.unique);
                unexpected += t.unique.saturating_sub(want);
                totals.received += t.received;
                totals.unique += t.unique;
                totals.duplicates += t.duplicates;
                totals.out_of_order += t.out_of_order;
                totals.cross_tenant += t.cross_tenant;
                totals.protocol_errors += t.protocol_errors;
                disconnected += u64::from(t.disconnected);
                if let Some(p) = t.problem {
                    problems.add(p);
                }
            }
            Ok(Err(e)) => problems.add(format!("a receiver task failed: {e}")),
            Err(_) => problems.add("a receiver did not stop in time".to_string()),
        }
    }

    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let last = shared.last_delivery_nanos.load(Ordering::Relaxed);
    let start_nanos = u64::try_from(start.duration_since(started).as_nanos()).unwrap_or(0);
    let delivery_secs = (last.saturating_sub(start_nanos) as f64 / 1e9).max(publish_secs.min(args.duration));
    let deliveries_per_sec = deliveries as f64 / delivery_secs.max(1e-9);
    let cpu = server_cpu(before, after);
    let sys = server_sys(before, after);
    // Each process's part, when the server is several (the cluster cases:
    // instance A, redis-server, instance B), in the order of --server-pid.
    let each: Option<Vec<Option<f64>>> = match (&before_each, &after_each) {
        (Some(b), Some(a)) if a.len() > 1 => {
            Some(b.iter().zip(a).map(|(b, a)| per_unit_us(Some(cpu_secs(b, a)), deliveries)).collect())
        }
        _ => None,
    };
    let latency = shared.latency.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    let ack_latency = stats.ack_latency.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    let pub_errors = stats.errors.lock().map(|mut e| std::mem::take(&mut *e)).unwrap_or_default();

    println!(
        "  published {published} events in {publish_secs:.2} s ({:.0}/s), {} publish errors",
        published as f64 / publish_secs.max(1e-9),
        pub_errors.total
    );
    println!("  publish answer latency: {}", latency_line(&ack_latency));
    pub_errors.print("publish errors");
    println!("  deliveries {deliveries} of {expected} expected: {deliveries_per_sec:.0}/s over {delivery_secs:.2} s");
    println!("  end-to-end latency: {}", latency_line(&latency));
    println!(
        "  lost {lost}, duplicates {}, out_of_order {}, cross_tenant {}, unexpected {unexpected}, disconnected {disconnected}, protocol errors {}",
        totals.duplicates, totals.out_of_order, totals.cross_tenant, totals.protocol_errors
    );
    problems.print("receiver problems");
    println!(
        "  server cpu {} ({} per delivery, {} of it in the kernel), rss {} KiB",
        opt(cpu, " s"),
        opt(per_unit_us(cpu, deliveries), " µs"),
        opt(per_unit_us(sys, deliveries), " µs"),
        after.map_or("n/a".into(), |s| s.rss_kib.to_string())
    );

    let ok = lost == 0
        && totals.duplicates == 0
        && totals.out_of_order == 0
        && totals.cross_tenant == 0
        && disconnected == 0
        && totals.protocol_errors == 0
        && pub_errors.total == 0
        && published > 0;
    let json = json!({
        "mode": "fanout",
        "ok": ok,
        "tenants": args.tenants,
        "clients_per_tenant": args.clients,
        "receivers": receivers,
        "transport": args.transport.name(),
        "publish": format!("{:?}", args.publish).to_lowercase(),
        "rate": match args.rate { Rate::Max => json!("max"), Rate::PerSec(r) => json!(r) },
        "window": args.window,
        "connect_secs": round2(connect_secs),
        "duration_secs": round2(publish_secs),
        "events_published": published,
        "events_per_sec": round2(published as f64 / publish_secs.max(1e-9)),
        "publish_errors": pub_errors.total,
        "publish_error_kinds": pub_errors.json(),
        "publish_latency_us": latency_json(&ack_latency),
        "deliveries": deliveries,
        "expected_deliveries": expected,
        "deliveries_per_sec": round2(deliveries_per_sec),
        "latency_us": latency_json(&latency),
        "lost": lost,
        "duplicates": totals.duplicates,
        "out_of_order": totals.out_of_order,
        "cross_tenant": totals.cross_tenant,
        "unexpected": unexpected,
        "disconnected": disconnected,
        "protocol_errors": totals.protocol_errors,
        "receiver_problems": problems.json(),
        "server_cpu_secs": cpu,
        "server_cpu_us_per_delivery": per_unit_us(cpu, deliveries),
        "server_sys_cpu_us_per_delivery": per_unit_us(sys, deliveries),
        "server_cpu_us_per_delivery_each": each,
        "server_rss_kib": after.map(|s| s.rss_kib),
        "loadgen_cpu_secs": gen_cpu,
        "loadgen_busy": gen_busy,
    });
    Ok(Outcome { json, ok })
}

/// One receiving client: open, report ready, then check every delivery until stopped.
async fn receiver(r: Receiver) -> Track {
    let Receiver { cfg, shared, tenant_index, tenant, source, ready, mut stop } = r;
    let mut track = Track::new(tenant_index);
    let Session { mut ws, snapshot_max_seq, .. } = match ws::open(&cfg, &tenant, source).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return track;
        }
    };
    track.connected = true;
    if let Some(seq) = snapshot_max_seq {
        track.based = true;
        track.last = seq;
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match cfg.wire.classify(text.as_str()) {
                    Ok(Incoming::Event(EventArgs::Created(ev))) => on_event(&mut track, &shared, &tenant, &ev),
                    Ok(Incoming::Ping) => {
                        if let Err(e) = ws::pong(&mut ws).await {
                            track.disconnected = true;
                            track.note(format!("{e:#}"));
                            break;
                        }
                    }
                    Ok(Incoming::Closed) => {
                        track.disconnected = true;
                        track.note("the server closed the session".to_string());
                        break;
                    }
                    Ok(Incoming::Event(EventArgs::Other(name))) => {
                        track.protocol_errors += 1;
                        track.note(format!("unexpected event {name:?}: {}", clip(text.as_str())));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        track.protocol_errors += 1;
                        track.note(e);
                    }
                },
                Some(Ok(Message::Close(_))) | None => {
                    track.disconnected = true;
                    track.note("the websocket closed".to_string());
                    break;
                }
                Some(Err(e)) => {
                    track.disconnected = true;
                    track.note(format!("websocket read: {e}"));
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    track
}

/// One keep-alive connection posting for a tenant.
struct RestPublisher {
    client: HttpClient,
    headers: String,
    tenant_index: usize,
    tenant: Arc<str>,
    schedule: Arc<Schedule>,
    stats: Arc<PubStats>,
    shared: Arc<Shared>,
    pad: usize,
}

impl RestPublisher {
    async fn run(mut self) {
        while let Some((k, due)) = self.schedule.take() {
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let message = bench_message(&self.tenant, 'r', k, self.shared.nanos(), self.pad);
            let body = json!({ "message": message }).to_string();
            let sent = Instant::now();
            match self.client.request("POST", "/api/events", &self.headers, body.as_bytes()).await {
                Ok(r) if r.status == 201 => self.stats.confirmed(self.tenant_index, sent),
                Ok(r) => {
                    let e = format!("POST /api/events {}: {}", r.status, clip(&String::from_utf8_lossy(r.body)));
                    self.stats.error(e);
                }
                Err(e) => {
                    self.stats.error(format!("POST /api/events: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// One extra socket per tenant posting with `post_event`, up to `window` unacknowledged.
#[allow(clippy::too_many_arguments)]
async fn socket_publisher(
    cfg: Arc<ClientConfig>,
    session: Session,
    tenant_index: usize,
    tenant: Arc<str>,
    schedule: Arc<Schedule>,
    window: usize,
    stats: Arc<PubStats>,
    shared: Arc<Shared>,
    pad: usize,
) {
    let mut ws = session.ws;
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 0u64;
    let mut slot: Option<(u64, Instant)> = None;
    let mut done = false;
    let mut ack_deadline: Option<tokio::time::Instant> = None;
    loop {
        if !done && slot.is_none() && pending.len() < window {
            slot = schedule.take();
            done = slot.is_none();
        }
        if done {
            if pending.is_empty() {
                break;
            }
            ack_deadline.get_or_insert_with(|| tokio::time::Instant::now() + cfg.timeout);
        }
        let due = slot.map(|(_, d)| tokio::time::Instant::from(d));
        tokio::select! {
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                let Some((k, _)) = slot.take() else { continue };
                let message = bench_message(&tenant, 's', k, shared.nanos(), pad);
                let id = next_id;
                next_id += 1;
                if let Err(e) = ws.send(Message::text(cfg.wire.post_event(id, &message))).await {
                    stats.error(format!("post_event send on {tenant}: {e}"));
                    break;
                }
                pending.insert(id, Instant::now());
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match cfg.wire.classify(text.as_str()) {
                    Ok(Incoming::Ack(id, body)) => {
                        let Some(sent) = pending.remove(&id) else {
                            stats.error(format!("ack {id} for nothing pending"));
                            continue;
                        };
                        match (body.event, body.error) {
                            (Some(_), _) => stats.confirmed(tenant_index, sent),
                            (None, Some(e)) => stats.error(format!("post_event refused: {}", error_text(&e))),
                            (None, None) => stats.error("post_event ack without event or error".to_string()),
                        }
                    }
                    Ok(Incoming::Ping) => {
                        if let Err(e) = ws::pong(&mut ws).await {
                            stats.error(format!("publisher socket of {tenant}: {e:#}"));
                            break;
                        }
                    }
                    Ok(Incoming::Closed) => {
                        stats.error(format!("the server closed the publisher socket of {tenant}"));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => stats.error(e),
                },
                Some(Ok(Message::Close(_))) | None => {
                    stats.error(format!("the publisher socket of {tenant} closed"));
                    break;
                }
                Some(Err(e)) => {
                    stats.error(format!("publisher socket of {tenant}: {e}"));
                    break;
                }
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(ack_deadline.unwrap_or_else(tokio::time::Instant::now)), if ack_deadline.is_some() => {
                break;
            }
        }
    }
    for _ in 0..pending.len() {
        stats.error(format!("post_event on {tenant}: no ack"));
    }
}

fn error_text(e: &Value) -> String {
    let code = e.get("code").and_then(Value::as_str).unwrap_or("?");
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    format!("{code}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!("max".parse(), Ok(Rate::Max));
        assert_eq!("200".parse(), Ok(Rate::PerSec(200.0)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn tenants_take_turns_at_a_fixed_rate() {
        let start = Instant::now();
        let end = start + Duration::from_secs(1);
        // 4 tenants at 200 events/s in all: each every 20 ms, 5 ms apart.
        let schedules = Schedule::per_tenant(4, start, end, Some(Duration::from_millis(20)));
        let mut dues: Vec<Duration> =
            schedules.iter().flat_map(|s| std::iter::from_fn(|| s.take()).map(|(_, d)| d - start)).collect();
        dues.sort();
        assert_eq!(dues.len(), 200);
        for (k, due) in dues.iter().enumerate() {
            assert_eq!(*due, Duration::from_millis(5 * k as u64), "event {k}");
        }
        // As fast as answers allow: no offsets.
        for s in Schedule::per_tenant(3, start, end, None) {
            assert_eq!(s.start, start);
        }
    }

    #[test]
    fn schedule_at_a_rate_stops_at_the_end() {
        let start = Instant::now();
        let s = Schedule {
            start,
            end: start + Duration::from_millis(100),
            period: Some(Duration::from_millis(10)),
            next: AtomicU64::new(0),
        };
        let mut n = 0;
        while let Some((k, due)) = s.take() {
            assert_eq!(k, n);
            assert_eq!(due, start + Duration::from_millis(10 * k));
            n += 1;
        }
        assert_eq!(n, 10);
    }
}
