//! `rest`: N keep-alive HTTP/1.1 connections, each looping `POST /api/events`
//! then `GET /api/events?limit=L` as fast as the answers come.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::http::HttpClient;
use crate::procfs::maybe_sample;
use crate::report::{Errors, SelfCpu, histogram, latency_json, latency_line, opt, per_unit_us, round2, server_cpu};
use crate::target::Target;
use crate::wire::clip;
use crate::{Common, Outcome, positive, raise_fd_limit, secs};

/// Options of `rest`.
#[derive(Debug, Args)]
pub struct RestArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The `limit` of each GET.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Tenants the connections are spread over (round robin).
    #[arg(long, default_value_t = 4)]
    pub tenants: usize,
}

#[derive(Debug)]
struct Lane {
    post: Histogram<u64>,
    get: Histogram<u64>,
    posts: u64,
    gets: u64,
    errors: Errors,
    connects: u64,
}

/// Runs `rest`.
pub async fn run(args: &RestArgs, started: Instant) -> Result<Outcome> {
    let c = &args.common;
    if args.connections == 0 || args.tenants == 0 || !positive(args.duration) {
        bail!("--connections, --tenants and --duration must be positive");
    }
    raise_fd_limit(args.connections as u64 + 64)?;
    let target = Arc::new(Target::resolve(&c.url).await?);
    println!(
        "rest: {} keep-alive connections to {} over {} tenants, POST then GET ?limit={} for {} s",
        args.connections, target.addr, args.tenants, args.limit, args.duration
    );
    // Fail fast on a server that is not there or refuses the token.
    {
        let mut probe = HttpClient::new(Arc::clone(&target), None, c.timeout());
        let r = probe.request("GET", "/api/events?limit=1", &headers(c, &c.tenant(0)), b"").await?;
        if r.status != 200 {
            bail!("GET /api/events answered {} {}", r.status, clip(&String::from_utf8_lossy(r.body)));
        }
    }

    let before = maybe_sample(&c.server_pid);
    let self_cpu = SelfCpu::start();
    let t0 = Instant::now();
    let end = t0 + secs(args.duration);
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let tenant = c.tenant(i % args.tenants);
        let client = HttpClient::new(Arc::clone(&target), None, c.timeout());
        tasks.push(tokio::spawn(lane(client, headers(c, &tenant), tenant, i, args.limit, end, started)));
    }
    let mut post = histogram();
    let mut get = histogram();
    let (mut posts, mut gets, mut connects) = (0u64, 0u64, 0u64);
    let mut errors = Errors::default();
    for t in tasks {
        match t.await {
            Ok(l) => {
                post.add(&l.post).ok();
                get.add(&l.get).ok();
                posts += l.posts;
                gets += l.gets;
                connects += l.connects;
                errors.merge(l.errors);
            }
            Err(e) => errors.add(format!("a connection task failed: {e}")),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let after = maybe_sample(&c.server_pid);
    let (gen_cpu, gen_busy) = self_cpu.finish(c.threads);
    let requests = posts + gets;
    let cpu = server_cpu(before, after);
    let rps = requests as f64 / elapsed.max(1e-9);
    println!(
        "  {requests} requests in {elapsed:.2} s: {rps:.0} req/s ({posts} POST, {gets} GET), {connects} TCP connects"
    );
    println!("  POST latency: {}", latency_line(&post));
    println!("  GET  latency: {}", latency_line(&get));
    errors.print("errors");
    println!(
        "  server cpu {} ({} per request), rss {} KiB",
        opt(cpu, " s"),
        opt(per_unit_us(cpu, requests), " µs"),
        after.map_or("n/a".into(), |s| s.rss_kib.to_string())
    );
    let ok = errors.total == 0;
    let json = json!({
        "mode": "rest",
        "ok": ok,
        "connections": args.connections,
        "duration_secs": round2(elapsed),
        "limit": args.limit,
        "tenants": args.tenants,
        "requests": requests,
        "requests_per_sec": round2(rps),
        "post": { "count": posts, "latency_us": latency_json(&post) },
        "get": { "count": gets, "latency_us": latency_json(&get) },
        "tcp_connects": connects,
        "errors": errors.total,
        "error_kinds": errors.json(),
        "server_cpu_secs": cpu,
        "server_cpu_us_per_request": per_unit_us(cpu, requests),
        "server_rss_kib": after.map(|s| s.rss_kib),
        "loadgen_cpu_secs": gen_cpu,
        "loadgen_busy": gen_busy,
    });
    Ok(Outcome { json, ok })
}

fn headers(c: &Common, tenant: &str) -> String {
    format!("X-TENANT-ID: {tenant}\r\nX-User-Token: {}\r\nContent-Type: application/json\r\n", c.token)
}

async fn lane(
    mut client: HttpClient,
    headers: String,
    tenant: String,
    index: usize,
    limit: u32,
    end: Instant,
    started: Instant,
) -> Lane {
    let mut lane =
        Lane { post: histogram(), get: histogram(), posts: 0, gets: 0, errors: Errors::default(), connects: 0 };
    let get_path = format!("/api/events?limit={limit}");
    let get_headers: String =
        headers.lines().filter(|l| !l.starts_with("Content-Type")).map(|l| format!("{l}\r\n")).collect();
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let body = json!({ "message": format!("rest:{tenant}:{index}:{n}:{}", started.elapsed().as_nanos()) });
        let body = body.to_string();
        let t = Instant::now();
        let ok = match client.request("POST", "/api/events", &headers, body.as_bytes()).await {
            Ok(r) => {
                lane.posts += 1;
                lane.post.saturating_record(micros(t));
                if r.status != 201 {
                    lane.errors.add(format!("POST {}: {}", r.status, clip(&String::from_utf8_lossy(r.body))));
                }
                true
            }
            Err(e) => {
                lane.errors.add(format!("POST: {e:#}"));
                false
            }
        };
        if !ok {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        if Instant::now() >= end {
            break;
        }
        let t = Instant::now();
        match client.request("GET", &get_path, &get_headers, b"").await {
            Ok(r) => {
                lane.gets += 1;
                lane.get.saturating_record(micros(t));
                if r.status != 200 {
                    lane.errors.add(format!("GET {}: {}", r.status, clip(&String::from_utf8_lossy(r.body))));
                }
            }
            Err(e) => {
                lane.errors.add(format!("GET: {e:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    lane.connects = client.connects;
    lane
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
}
