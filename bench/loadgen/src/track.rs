//! What every receiver checks, whatever its transport (websocket,
//! long-polling, SSE): each delivery exactly once, in `seq` order, of the
//! right tenant, and its end-to-end latency from the send time the
//! publisher wrote into the message.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};

use crate::report::histogram;
use crate::wire::{EventLite, parse_bench_message};
use crate::ws::ClientConfig;

/// What a receiving client is given, whatever its transport.
pub(crate) struct Receiver {
    /// The server and the client settings.
    pub cfg: Arc<ClientConfig>,
    /// What every receiver adds to.
    pub shared: Arc<Shared>,
    /// Its tenant's number.
    pub tenant_index: usize,
    /// Its tenant's name.
    pub tenant: Arc<str>,
    /// The source address to bind, if any.
    pub source: Option<IpAddr>,
    /// Told once: ready (snapshot or stream head received), or why not.
    pub ready: mpsc::UnboundedSender<Result<(), String>>,
    /// Set when the run is over.
    pub stop: watch::Receiver<bool>,
}

/// What every receiver shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) started: Instant,
    pub(crate) latency: Mutex<Histogram<u64>>,
    pub(crate) deliveries: AtomicU64,
    pub(crate) last_delivery_nanos: AtomicU64,
}

impl Shared {
    /// Nothing delivered yet; latencies count from `started`'s clock.
    pub(crate) fn new(started: Instant) -> Shared {
        Shared {
            started,
            latency: Mutex::new(histogram()),
            deliveries: AtomicU64::new(0),
            last_delivery_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn nanos(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Holes remembered per client (a gap larger than this is counted, not tracked).
const MAX_HOLES: u64 = 100_000;

/// One receiver's checks.
#[derive(Debug, Default)]
pub(crate) struct Track {
    pub(crate) tenant: usize,
    pub(crate) connected: bool,
    /// Whether `last` holds a seq (from the snapshot or the first event).
    pub(crate) based: bool,
    pub(crate) last: u64,
    pub(crate) received: u64,
    pub(crate) unique: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    pub(crate) cross_tenant: u64,
    pub(crate) holes: HashSet<u64>,
    pub(crate) disconnected: bool,
    pub(crate) protocol_errors: u64,
    pub(crate) problem: Option<String>,
}

impl Track {
    /// A receiver of tenant `tenant` (its index), not connected yet.
    pub(crate) fn new(tenant: usize) -> Track {
        Track { tenant, ..Track::default() }
    }

    /// The receiver is connected and ready; `base` is the largest seq it
    /// already has (its snapshot's), `None` to base on the first event.
    pub(crate) fn ready(&mut self, base: Option<u64>) {
        self.connected = true;
        if let Some(seq) = base {
            self.based = true;
            self.last = seq;
        }
    }

    /// The session ended before it was stopped.
    pub(crate) fn disconnect(&mut self, why: String) {
        self.disconnected = true;
        self.note(why);
    }

    /// Something the protocol does not allow arrived; the session goes on.
    pub(crate) fn protocol_error(&mut self, what: String) {
        self.protocol_errors += 1;
        self.note(what);
    }

    pub(crate) fn on_seq(&mut self, seq: u64) {
        if !self.based {
            self.based = true;
            self.last = seq;
            self.unique += 1;
        } else if seq == self.last + 1 {
            self.last = seq;
            self.unique += 1;
        } else if seq > self.last {
            self.out_of_order += 1;
            self.unique += 1;
            let gap = seq - self.last - 1;
            if gap <= MAX_HOLES && (self.holes.len() as u64) < MAX_HOLES {
                self.holes.extend(self.last + 1..seq);
            }
            self.last = seq;
        } else if self.holes.remove(&seq) {
            self.out_of_order += 1;
            self.unique += 1;
        } else {
            self.duplicates += 1;
        }
    }

    pub(crate) fn note(&mut self, problem: String) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }
}

/// Checks one delivered event (any transport): tenant, latency, seq.
pub(crate) fn on_event(track: &mut Track, shared: &Shared, tenant: &str, ev: &EventLite<'_>) {
    let now = shared.nanos();
    shared.deliveries.fetch_add(1, Ordering::Relaxed);
    shared.last_delivery_nanos.fetch_max(now, Ordering::Relaxed);
    track.received += 1;
    if ev.tenant_id != tenant {
        track.cross_tenant += 1;
        track.note(format!("event of tenant {:?} delivered to {tenant:?}", ev.tenant_id));
        return;
    }
    if let Some((msg_tenant, sent)) = parse_bench_message(&ev.message) {
        if msg_tenant != tenant {
            track.cross_tenant += 1;
            track.note(format!("message of tenant {msg_tenant:?} delivered to {tenant:?}"));
            return;
        }
        let us = now.saturating_sub(sent) / 1000;
        if let Ok(mut h) = shared.latency.lock() {
            h.saturating_record(us.max(1));
        }
    }
    track.on_seq(ev.seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_from_the_snapshot() {
        let mut t = Track { based: true, last: 10, ..Track::default() };
        for s in 11..=20 {
            t.on_seq(s);
        }
        assert_eq!((t.unique, t.duplicates, t.out_of_order), (10, 0, 0));
        t.on_seq(20);
        t.on_seq(5);
        assert_eq!((t.unique, t.duplicates, t.out_of_order), (10, 2, 0));
    }

    #[test]
    fn gaps_late_arrivals_and_duplicates() {
        let mut t = Track::default();
        t.on_seq(1);
        t.on_seq(2);
        t.on_seq(5); // gap: 3 and 4 missing
        assert_eq!((t.unique, t.out_of_order), (3, 1));
        t.on_seq(3); // late
        assert_eq!((t.unique, t.out_of_order, t.duplicates), (4, 2, 0));
        t.on_seq(3); // now a duplicate
        assert_eq!((t.unique, t.duplicates), (4, 1));
        t.on_seq(6);
        assert_eq!((t.unique, t.out_of_order), (5, 2));
        // 4 never came: one lost out of 6 expected.
        assert_eq!(6u64.saturating_sub(t.unique), 1);
    }
}
