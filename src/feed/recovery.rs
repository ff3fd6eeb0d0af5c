//! Connection state recovery: the sessions kept after an abnormal disconnect,
//! so a client that comes back within the window gets its socket id, its rooms
//! and every event it missed — or, when that is impossible, a fresh session
//! and a snapshot, never a silent hole.
//!
//! On the wire (what the official `socket.io-client` 4.6+ does): the CONNECT
//! answer carries a `pid`; every `event_created` carries an offset as its last
//! argument (here: the event's `seq`, as a string); on reconnect the client's
//! CONNECT payload carries `pid` and the last `offset` it saw.
//!
//! A kept session is bound to the credentials that opened it (tenant, user and
//! the token's digest): `pid` + `offset` presented with anything else never
//! restores it. Sessions are kept only for abnormal disconnects (transport
//! close or error, ping timeout, slow consumer, shutdown), at most `max` of
//! them (the oldest is dropped first), and each only until its window ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// What is kept of a disconnected socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The socket id to give back.
    pub sid: String,
    /// Tenant of the credentials that opened it.
    pub tenant: String,
    /// User of those credentials.
    pub user: String,
    /// SHA-256 of the token used.
    pub token_digest: [u8; 32],
    /// The rooms the socket was in.
    pub rooms: Vec<String>,
    /// The last `seq` the socket is known to have been sent in full (its
    /// snapshot or replay point); used when the client has no offset yet.
    pub base_seq: u64,
}

struct Entry {
    kept: Kept,
    expires: Instant,
}

/// The kept sessions, by `pid`.
pub struct Recovery {
    window: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_pid: HashMap<String, Entry, foldhash::fast::RandomState>,
    order: VecDeque<(Instant, String)>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery").field("window", &self.window).field("max", &self.max).finish_non_exhaustive()
    }
}

impl Recovery {
    /// Keeps sessions for `window` (zero: recovery off), at most `max` at once.
    pub fn new(window: Duration, max: usize) -> Self {
        Recovery { window, max, inner: Mutex::new(Inner::default()) }
    }

    /// Whether recovery is on.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero() && self.max > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a disconnected socket's session under `pid` until the window ends.
    pub fn keep(&self, pid: String, kept: Kept) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        inner.expire(now);
        while inner.by_pid.len() >= self.max {
            // Bound hit: drop the oldest kept session to make room.
            let Some((_, oldest)) = inner.order.pop_front() else { break };
            inner.by_pid.remove(&oldest);
        }
        let expires = now + self.window;
        inner.order.push_back((expires, pid.clone()));
        inner.by_pid.insert(pid, Entry { kept, expires });
    }

    /// Takes the session kept under `pid` if it is still in its window and
    /// belongs to these credentials. A session presented with other
    /// credentials is left alone (its owner may still come back).
    pub fn take(&self, pid: &str, tenant: &str, user: &str, token_digest: &[u8; 32]) -> Option<Kept> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.expire(now);
        let entry = inner.by_pid.get(pid)?;
        let k = &entry.kept;
        let owner = k.tenant == tenant
            && k.user == user
            && bool::from(subtle::ConstantTimeEq::ct_eq(&k.token_digest[..], &token_digest[..]));
        if !owner || entry.expires <= now {
            return None;
        }
        inner.by_pid.remove(pid).map(|e| e.kept)
    }

    /// Drops sessions whose window ended.
    pub fn sweep(&self) {
        self.lock().expire(Instant::now());
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.lock().by_pid.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((expires, pid)) = self.order.pop_front() {
                // The pid may have been taken (and even kept again with a later
                // expiry); only remove the entry this queue item is about.
                if self.by_pid.get(&pid).is_some_and(|e| e.expires == expires) {
                    self.by_pid.remove(&pid);
                }
            }
        }
        // `order` may hold items for pids taken or re-kept; bound it too.
        if self.order.len() > 2 * self.by_pid.len() + 1024 {
            let live = &self.by_pid;
            self.order.retain(|(e, pid)| live.get(pid).is_some_and(|x| x.expires == *e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(sid: &str) -> Kept {
        Kept {
            sid: sid.into(),
            tenant: "t".into(),
            user: "u".into(),
            token_digest: [7; 32],
            rooms: vec!["tenant:t".into()],
            base_seq: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn kept_sessions_are_taken_once_by_their_owner_within_the_window() {
        let r = Recovery::new(Duration::from_secs(10), 100);
        r.keep("p1".into(), kept("s1"));
        assert_eq!(r.take("p1", "other", "u", &[7; 32]), None, "another tenant");
        assert_eq!(r.take("p1", "t", "x", &[7; 32]), None, "another user");
        assert_eq!(r.take("p1", "t", "u", &[8; 32]), None, "another token");
        assert_eq!(r.take("p1", "t", "u", &[7; 32]), Some(kept("s1")), "still there for its owner");
        assert_eq!(r.take("p1", "t", "u", &[7; 32]), None, "taken once");
        assert_eq!(r.take("nope", "t", "u", &[7; 32]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_with_the_window() {
        let r = Recovery::new(Duration::from_secs(10), 100);
        r.keep("p1".into(), kept("s1"));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        r.keep("p2".into(), kept("s2"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(r.take("p1", "t", "u", &[7; 32]), None, "window ended");
        assert_eq!(r.len(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        r.sweep();
        assert!(r.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_sessions_the_oldest_goes_first() {
        let r = Recovery::new(Duration::from_secs(10), 3);
        for i in 0..5 {
            r.keep(format!("p{i}"), kept(&format!("s{i}")));
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.take("p0", "t", "u", &[7; 32]), None);
        assert_eq!(r.take("p1", "t", "u", &[7; 32]), None);
        assert!(r.take("p4", "t", "u", &[7; 32]).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_window_is_off() {
        let r = Recovery::new(Duration::ZERO, 100);
        assert!(!r.enabled());
        r.keep("p".into(), kept("s"));
        assert!(r.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn re_keeping_a_pid_many_times_stays_bounded() {
        let r = Recovery::new(Duration::from_secs(10), 100);
        for _ in 0..10_000 {
            r.keep("p".into(), kept("s"));
            assert!(r.take("p", "t", "u", &[7; 32]).is_some());
        }
        assert!(r.lock().order.len() <= 1024 + 1);
    }
}
