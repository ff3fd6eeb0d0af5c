//! Sessions kept for connection state recovery in this process: by `pid`,
//! each until its window ends, at most `max` at once (the oldest is dropped
//! first). See [`crate::feed::recovery`] for the rules.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::feed::recovery::{Kept, Owner};

struct Entry {
    kept: Kept,
    expires: Instant,
}

/// The kept sessions, by `pid`.
pub struct Sessions {
    window: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_pid: HashMap<String, Entry, foldhash::fast::RandomState>,
    order: VecDeque<(Instant, String)>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("window", &self.window).field("max", &self.max).finish_non_exhaustive()
    }
}

impl Sessions {
    /// Keeps sessions for `window` (zero: recovery off), at most `max` at once.
    pub fn new(window: Duration, max: usize) -> Self {
        Sessions { window, max, inner: Mutex::new(Inner::default()) }
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
    /// belongs to `owner`. A session presented with other credentials is left
    /// alone (its owner may still come back).
    pub fn take(&self, pid: &str, owner: &Owner<'_>) -> Option<Kept> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.expire(now);
        let entry = inner.by_pid.get(pid)?;
        if !entry.kept.is_owned_by(owner) || entry.expires <= now {
            return None;
        }
        inner.by_pid.remove(pid).map(|e| e.kept)
    }

    /// Drops sessions whose window ended.
    pub fn sweep(&self) {
        self.lock().expire(Instant::now());
    }

    /// Drops the sessions `still_held` says no; returns how many.
    pub fn retain(&self, still_held: impl Fn(&Kept) -> bool) -> usize {
        let mut inner = self.lock();
        let before = inner.by_pid.len();
        inner.by_pid.retain(|_, e| still_held(&e.kept));
        before - inner.by_pid.len()
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

    fn owner<'a>(tenant: &'a str, user: &'a str, token_digest: &'a [u8; 32]) -> Owner<'a> {
        Owner { tenant, user, token_digest }
    }

    fn kept(sid: &str) -> Kept {
        Kept {
            sid: sid.into(),
            tenant: "t".into(),
            user: "u".into(),
            token_digest: [7; 32],
            jwt: None,
            rooms: vec!["tenant:t".into()],
            base_seq: 3,
            epoch: crate::feed::recovery::Epoch::parse("0000abcd").unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn kept_sessions_are_taken_once_by_their_owner_within_the_window() {
        let r = Sessions::new(Duration::from_secs(10), 100);
        r.keep("p1".into(), kept("s1"));
        assert_eq!(r.take("p1", &owner("other", "u", &[7; 32])), None, "another tenant");
        assert_eq!(r.take("p1", &owner("t", "x", &[7; 32])), None, "another user");
        assert_eq!(r.take("p1", &owner("t", "u", &[8; 32])), None, "another token");
        assert_eq!(r.take("p1", &owner("t", "u", &[7; 32])), Some(kept("s1")), "still there for its owner");
        assert_eq!(r.take("p1", &owner("t", "u", &[7; 32])), None, "taken once");
        assert_eq!(r.take("nope", &owner("t", "u", &[7; 32])), None);
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_with_the_window() {
        let r = Sessions::new(Duration::from_secs(10), 100);
        r.keep("p1".into(), kept("s1"));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        r.keep("p2".into(), kept("s2"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(r.take("p1", &owner("t", "u", &[7; 32])), None, "window ended");
        assert_eq!(r.len(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        r.sweep();
        assert!(r.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_sessions_the_oldest_goes_first() {
        let r = Sessions::new(Duration::from_secs(10), 3);
        for i in 0..5 {
            r.keep(format!("p{i}"), kept(&format!("s{i}")));
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.take("p0", &owner("t", "u", &[7; 32])), None);
        assert_eq!(r.take("p1", &owner("t", "u", &[7; 32])), None);
        assert!(r.take("p4", &owner("t", "u", &[7; 32])).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_whose_credentials_went_are_dropped() {
        let r = Sessions::new(Duration::from_secs(10), 100);
        r.keep("p1".into(), kept("s1"));
        r.keep("p2".into(), Kept { user: "v".into(), ..kept("s2") });
        assert_eq!(r.retain(|k| k.user != "v"), 1);
        assert_eq!(r.take("p2", &Owner { tenant: "t", user: "v", token_digest: &[7; 32] }), None);
        assert!(r.take("p1", &owner("t", "u", &[7; 32])).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_window_is_off() {
        let r = Sessions::new(Duration::ZERO, 100);
        assert!(!r.enabled());
        r.keep("p".into(), kept("s"));
        assert!(r.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn re_keeping_a_pid_many_times_stays_bounded() {
        let r = Sessions::new(Duration::from_secs(10), 100);
        for _ in 0..10_000 {
            r.keep("p".into(), kept("s"));
            assert!(r.take("p", &owner("t", "u", &[7; 32])).is_some());
        }
        assert!(r.lock().order.len() <= 1024 + 1);
    }
}
