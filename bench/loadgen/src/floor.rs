//! `floor`: what one delivery costs this machine with no server at all — the
//! floor under the fan-out figures of `bench/run.sh`.
//!
//! One thread, pinned to the server's core, writes the case's websocket frame
//! to `--sockets` loopback TCP sockets in `--groups` groups (a group = one
//! tenant's clients): per event, one `write()` per socket of the event's group,
//! the groups taking turns, at `--rate` events per second. With
//! `--frames-per-write K` (the maximum-rate shape) each `write()` carries K
//! frames, so a tick is K events of one group. The readers — one thread on the
//! generator's core — sleep in `epoll_wait` between ticks and drain whatever
//! arrived. The floor is the writer thread's user + system CPU
//! (`getrusage(RUSAGE_THREAD)`) divided by the frames delivered. The writer
//! is a compiled loop (no interpreter), so its user time is the few hundred
//! instructions around each system call: what any server must spend at least.
//!
//! With `--answer-bytes N` (the long-polling shape) every frame is an HTTP
//! answer (`--frame-bytes` = head + payload of one event's poll answer) and
//! each reader answers it with the next long poll, a request of N bytes on the
//! same socket, as a polling client does; the writer reads that request
//! (one `read()` of N bytes) before it writes the socket's next answer. So a
//! delivery is one `write()` and one `read()`: the least any long-polling
//! server does per delivery (it also parses the request, looks up the session
//! and waits on readiness; this thread does none of that). One frame per write
//! only.
//!
//! `bench/floor.py`'s older fan-out figure is the kernel (system) part of the
//! same shape with one frame per write, measured from Python (whose own user
//! time it leaves out); this one adds the minimal user time and the time the
//! writer spends sleeping and waking between events, as the server does.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::resource::{UsageWho, getrusage};
use nix::unistd::Pid;
use serde_json::json;

use crate::report::round2;
use crate::{Common, Outcome, positive, raise_fd_limit, secs};

/// Options of `floor`.
#[derive(Debug, Args)]
pub struct FloorArgs {
    #[command(flatten)]
    pub common: Common,
    /// Loopback sockets written to (tenants × clients of the case).
    #[arg(long, default_value_t = 500)]
    pub sockets: usize,
    /// Groups the sockets form (tenants of the case); an event goes to one group.
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Events per second over all groups.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Frames per `write()` (rounded to a whole number, at least 1).
    #[arg(long, default_value_t = 1.0)]
    pub frames_per_write: f64,
    /// Bytes of one websocket frame (an `event_created` frame of the case), or
    /// of one poll answer (head and payload) with `--answer-bytes`.
    #[arg(long, default_value_t = 193)]
    pub frame_bytes: usize,
    /// The long-polling shape: each reader answers every frame with a request
    /// of this many bytes, which the writer reads before the socket's next
    /// frame (0: no answers, the websocket shape).
    #[arg(long, default_value_t = 0)]
    pub answer_bytes: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The writer's core (the server's).
    #[arg(long, default_value_t = 0)]
    pub writer_cpu: usize,
    /// The readers' core (the generator's).
    #[arg(long, default_value_t = 1)]
    pub reader_cpu: usize,
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("core {cpu}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning a thread to core {cpu}"))
}

/// User and system CPU of the calling thread so far, in µs.
fn thread_cpu_us() -> Result<(f64, f64)> {
    let u = getrusage(UsageWho::RUSAGE_THREAD).context("getrusage(RUSAGE_THREAD)")?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    Ok((us(u.user_time()), us(u.system_time())))
}

/// A websocket text frame of `bytes` bytes in all (header included).
fn frame(bytes: usize) -> Vec<u8> {
    let (mut f, payload) = if bytes >= 4 + 126 {
        let len = bytes - 4;
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        (vec![0x81, 0x7e, (len16 >> 8) as u8, len16 as u8], usize::from(len16))
    } else {
        let len = bytes.saturating_sub(2).min(125);
        (vec![0x81, len as u8], len)
    };
    f.resize(f.len() + payload, b'x');
    f
}

/// What the writer measured.
struct Written {
    deliveries: u64,
    writes: u64,
    /// The requests read back (the polling shape).
    reads: u64,
    user_us: f64,
    sys_us: f64,
    wall_secs: f64,
    behind: bool,
}

/// Runs `floor`.
pub async fn run(args: &FloorArgs, _started: Instant) -> Result<Outcome> {
    if args.sockets == 0 || args.groups == 0 || args.groups > args.sockets || !positive(args.rate) {
        bail!("--sockets and --rate must be positive, --groups from 1 to --sockets");
    }
    if !positive(args.seconds) || !positive(args.frames_per_write) || args.frame_bytes < 2 {
        bail!("--seconds and --frames-per-write must be positive, --frame-bytes at least 2");
    }
    if args.answer_bytes > 0 && args.frames_per_write.round() > 1.0 {
        bail!("--answer-bytes (the polling shape) takes one frame per write");
    }
    raise_fd_limit(2 * args.sockets as u64 + 64)?;
    let k = args.frames_per_write.round().max(1.0) as usize;
    println!(
        "floor: {} sockets in {} groups, {} events/s, {k} frame(s) of {} bytes per write{}, {} s; \
         writer on core {}, readers on core {}",
        args.sockets,
        args.groups,
        args.rate,
        args.frame_bytes,
        match args.answer_bytes {
            0 => String::new(),
            n => format!(", each answered by a {n}-byte request read before the next"),
        },
        args.seconds,
        args.writer_cpu,
        args.reader_cpu
    );
    let sockets = args.sockets;
    let shape = Shape {
        sockets,
        groups: args.groups,
        rate: args.rate,
        k,
        bytes: args.frame_bytes,
        answer: args.answer_bytes,
        seconds: args.seconds,
    };
    let (writer_cpu, reader_cpu) = (args.writer_cpu, args.reader_cpu);
    // Plain threads, not the runtime: the writer must be one thread alone on its core.
    let done = tokio::task::spawn_blocking(move || measure(&shape, writer_cpu, reader_cpu))
        .await
        .map_err(|e| anyhow!("the floor thread failed: {e}"))??;
    let cpu_us = done.user_us + done.sys_us;
    let per = |x: f64| round2(x / done.deliveries.max(1) as f64 * 1000.0) / 1000.0;
    println!(
        "  {} deliveries in {} writes ({} reads) over {:.2} s; writer thread CPU {:.3} µs per delivery \
         (user {:.3}, system {:.3}: the kernel splits by tick samples, rough in short runs){}",
        done.deliveries,
        done.writes,
        done.reads,
        done.wall_secs,
        cpu_us / done.deliveries.max(1) as f64,
        done.user_us / done.deliveries.max(1) as f64,
        done.sys_us / done.deliveries.max(1) as f64,
        if done.behind { "; the writer could not keep the rate (busy all along)" } else { "" }
    );
    let json = json!({
        "mode": "floor",
        "ok": done.deliveries > 0,
        "sockets": sockets,
        "groups": args.groups,
        "rate": args.rate,
        "frames_per_write": k,
        "frame_bytes": args.frame_bytes,
        "answer_bytes": args.answer_bytes,
        "deliveries": done.deliveries,
        "writes": done.writes,
        "reads": done.reads,
        "wall_secs": round2(done.wall_secs),
        "deliveries_per_sec": round2(done.deliveries as f64 / done.wall_secs.max(1e-9)),
        "writer_cpu_us_per_delivery": per(cpu_us),
        "writer_user_us_per_delivery": per(done.user_us),
        "writer_sys_us_per_delivery": per(done.sys_us),
        "writer_busy": round2(cpu_us / 1e6 / done.wall_secs.max(1e-9)),
        "behind": done.behind,
    });
    Ok(Outcome { json, ok: done.deliveries > 0 })
}

/// What the writer writes, to how many sockets, how fast.
#[derive(Clone, Copy)]
struct Shape {
    sockets: usize,
    groups: usize,
    rate: f64,
    /// Frames per write.
    k: usize,
    /// Bytes of one frame.
    bytes: usize,
    /// Bytes of the request answering each frame (0: none).
    answer: usize,
    seconds: f64,
}

fn measure(shape: &Shape, writer_cpu: usize, reader_cpu: usize) -> Result<Written> {
    let Shape { sockets, groups, rate, k, bytes, answer, seconds } = *shape;
    pin(writer_cpu)?;
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let mut readers = Vec::with_capacity(sockets);
    let mut writers = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let r = TcpStream::connect(addr).context("connecting a loopback reader")?;
        let (w, _) = listener.accept().context("accepting a loopback writer")?;
        w.set_nodelay(true)?;
        // A request that never comes (a reader gone) fails the run, not hangs it.
        w.set_read_timeout(Some(Duration::from_secs(10)))?;
        r.set_nonblocking(true)?;
        readers.push(r);
        writers.push(w);
    }
    let reader = std::thread::Builder::new()
        .name("floor-readers".into())
        .spawn(move || read_all(readers, reader_cpu, bytes, answer))
        .context("starting the reader thread")?;

    let one = frame(bytes);
    let buf: Vec<u8> = one.iter().copied().cycle().take(one.len() * k).collect();
    let per_group = sockets / groups;
    // One tick: K events of one group; ticks per second = rate / K.
    let period = secs(k as f64 / rate);
    let (u0, s0) = thread_cpu_us()?;
    let start = Instant::now();
    let end = start + secs(seconds);
    let (mut deliveries, mut writes, mut reads, mut tick, mut behind_ticks) = (0u64, 0u64, 0u64, 0u64, 0u64);
    // The polling shape: which sockets owe the writer a request (written to,
    // their answer not read yet), and where it goes.
    let mut owed = vec![false; sockets];
    let mut request = vec![0u8; answer];
    loop {
        let due = start + period.mul_f64(tick as f64);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > period {
            behind_ticks += 1;
        }
        let g = (tick % groups as u64) as usize;
        let last = if g + 1 == groups { sockets } else { (g + 1) * per_group };
        for (w, owes) in writers[g * per_group..last].iter_mut().zip(&mut owed[g * per_group..last]) {
            if *owes {
                // The socket's next long poll, sent when it read the last
                // answer: one blocking read (it has long arrived).
                w.read_exact(&mut request).context("reading a loopback request")?;
                reads += 1;
            }
            *owes = answer > 0;
            w.write_all(&buf).context("writing to a loopback socket")?;
            writes += 1;
            deliveries += k as u64;
        }
        tick += 1;
    }
    let wall_secs = start.elapsed().as_secs_f64();
    let (u1, s1) = thread_cpu_us()?;
    // End of file to every reader first, the sockets closed only once they
    // all saw it: closing a socket with a request unread in it (the polling
    // shape) would reset the connection under its reader.
    for w in &writers {
        w.shutdown(std::net::Shutdown::Write).context("shutting a loopback socket")?;
    }
    reader.join().map_err(|_| anyhow!("the reader thread panicked"))??;
    drop(writers);
    Ok(Written {
        deliveries,
        writes,
        reads,
        user_us: u1 - u0,
        sys_us: s1 - s0,
        wall_secs,
        behind: behind_ticks * 10 > tick.max(1),
    })
}

/// Drains every socket until each has reached end of file. With `answer > 0`
/// (the polling shape) each whole frame of `bytes` read is answered with one
/// request of `answer` bytes on its socket.
fn read_all(mut readers: Vec<TcpStream>, cpu: usize, bytes: usize, answer: usize) -> Result<()> {
    pin(cpu)?;
    let epoll = Epoll::new(EpollCreateFlags::empty()).context("epoll_create")?;
    for (i, r) in readers.iter().enumerate() {
        epoll.add(r.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64)).context("epoll_ctl")?;
    }
    let mut open = readers.len();
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; 64 * 1024];
    let request = vec![b'r'; answer];
    // Bytes of a frame read so far, per socket.
    let mut partial = vec![0usize; readers.len()];
    let deadline = Instant::now() + Duration::from_secs(3600);
    while open > 0 {
        if Instant::now() > deadline {
            bail!("the readers did not see every socket close");
        }
        let n = epoll.wait(&mut events, 1000u16).context("epoll_wait")?;
        for ev in &events[..n] {
            let i = ev.data() as usize;
            let Some(r) = readers.get_mut(i) else { continue };
            loop {
                match r.read(&mut buf) {
                    Ok(0) => {
                        epoll.delete(r.as_fd()).context("epoll_ctl del")?;
                        open -= 1;
                        break;
                    }
                    Ok(n) => {
                        if answer == 0 {
                            continue;
                        }
                        partial[i] += n;
                        while partial[i] >= bytes {
                            partial[i] -= bytes;
                            // A request this small always fits the socket's
                            // buffer: the writer reads one before each frame.
                            r.write_all(&request).context("writing a loopback request")?;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(anyhow!(e).context("reading a loopback socket")),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_size() {
        for bytes in [2, 10, 127, 130, 193, 1000] {
            let f = frame(bytes);
            assert_eq!(f.len(), bytes, "{bytes}");
            assert_eq!(f[0], 0x81);
        }
        let f = frame(193);
        assert_eq!((f[1], u16::from_be_bytes([f[2], f[3]])), (0x7e, 189));
        assert_eq!(frame(100)[1], 98);
    }

    #[test]
    fn the_polling_shape_reads_a_request_before_each_next_answer() -> Result<()> {
        let shape = Shape { sockets: 4, groups: 2, rate: 1000.0, k: 1, bytes: 332, answer: 137, seconds: 0.1 };
        let done = measure(&shape, 0, 0)?;
        assert!(done.writes >= 8, "every socket written more than once: {}", done.writes);
        assert_eq!(done.deliveries, done.writes);
        // Every answer but each socket's last was followed by a request, read.
        assert_eq!(done.reads, done.writes - 4);
        let plain = measure(&Shape { answer: 0, ..shape }, 0, 0)?;
        assert_eq!(plain.reads, 0);
        Ok(())
    }
}
