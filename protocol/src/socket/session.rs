//! Socket.IO session rules as deterministic state machines: which namespaces a
//! connection joined and the connect deadline ([`Namespaces`]), and the
//! server's outstanding acknowledgements with their timeouts ([`Acks`]).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Why a CONNECT cannot proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    /// This connection is already connected to that namespace.
    #[error("already connected to this namespace")]
    AlreadyConnected,
    /// The connection already uses as many namespaces as allowed.
    #[error("too many namespaces on one connection (at most {max})")]
    TooManyNamespaces {
        /// The limit.
        max: usize,
    },
}

/// The namespaces one Engine.IO session is connected to.
///
/// A session must CONNECT to some namespace within the connect timeout, or it
/// is closed (the reference's `connectTimeout`). Once any namespace connected,
/// the deadline is gone for good.
#[derive(Debug, Clone)]
pub struct Namespaces {
    connect_deadline: Option<Instant>,
    connected: Vec<String>,
    max: usize,
}

impl Namespaces {
    /// A session opened at `now`, allowed at most `max` namespaces at once.
    pub fn new(now: Instant, connect_timeout: Duration, max: usize) -> Self {
        Namespaces { connect_deadline: Some(now + connect_timeout), connected: Vec::new(), max }
    }

    /// Checks a CONNECT to `nsp` before the application decides on it.
    pub fn check_connect(&self, nsp: &str) -> Result<(), ConnectRefusal> {
        if self.is_connected(nsp) {
            return Err(ConnectRefusal::AlreadyConnected);
        }
        if self.connected.len() >= self.max {
            return Err(ConnectRefusal::TooManyNamespaces { max: self.max });
        }
        Ok(())
    }

    /// The application accepted the CONNECT to `nsp`.
    pub fn connected(&mut self, nsp: &str) -> Result<(), ConnectRefusal> {
        self.check_connect(nsp)?;
        self.connected.push(nsp.to_owned());
        self.connect_deadline = None;
        Ok(())
    }

    /// `nsp` was left (by either side). Returns whether it was connected.
    pub fn disconnected(&mut self, nsp: &str) -> bool {
        let before = self.connected.len();
        self.connected.retain(|n| n != nsp);
        self.connected.len() != before
    }

    /// Whether `nsp` is connected.
    pub fn is_connected(&self, nsp: &str) -> bool {
        self.connected.iter().any(|n| n == nsp)
    }

    /// The connected namespaces, in connect order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.connected.iter().map(String::as_str)
    }

    /// When the connect deadline passes, if it is still pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.connect_deadline
    }

    /// Whether at `now` the session must be closed for never connecting.
    pub fn connect_expired(&self, now: Instant) -> bool {
        matches!(self.connect_deadline, Some(d) if now >= d)
    }
}

/// Refused: the socket already waits for as many acks as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many pending acknowledgements (at most {max})")]
pub struct TooManyAcks {
    /// The limit.
    pub max: usize,
}

/// Acknowledgements the server waits for on one socket, each with a deadline.
///
/// Ids count up from 0 as in the reference. At most `max` are pending; the
/// `T` is whatever the runtime needs to resolve one (a channel, a callback).
#[derive(Debug)]
pub struct Acks<T> {
    next_id: u64,
    max: usize,
    pending: HashMap<u64, (Instant, T)>,
    deadlines: BTreeSet<(Instant, u64)>,
}

impl<T> Acks<T> {
    /// An empty tracker allowing `max` pending acks.
    pub fn new(max: usize) -> Self {
        Acks { next_id: 0, max, pending: HashMap::new(), deadlines: BTreeSet::new() }
    }

    /// Registers an ack expected by `now + timeout`; returns its id.
    pub fn insert(&mut self, now: Instant, timeout: Duration, value: T) -> Result<u64, TooManyAcks> {
        if self.pending.len() >= self.max {
            return Err(TooManyAcks { max: self.max });
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = now + timeout;
        self.pending.insert(id, (deadline, value));
        self.deadlines.insert((deadline, id));
        Ok(id)
    }

    /// The ack `id` arrived; returns its value if it was pending (and not expired).
    pub fn resolve(&mut self, id: u64) -> Option<T> {
        let (deadline, value) = self.pending.remove(&id)?;
        self.deadlines.remove(&(deadline, id));
        Some(value)
    }

    /// The earliest deadline, if any ack is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Removes and returns every ack whose deadline passed at `now`, oldest first.
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some((_, value)) = self.pending.remove(&id) {
                out.push((id, value));
            }
        }
        out
    }

    /// Removes every pending ack (the socket is gone).
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, T)> + '_ {
        self.deadlines.clear();
        self.pending.drain().map(|(id, (_, v))| (id, v))
    }

    /// How many acks are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no ack is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_deadline_until_the_first_namespace() {
        let t0 = Instant::now();
        let mut n = Namespaces::new(t0, Duration::from_millis(1000), 2);
        assert_eq!(n.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
        assert!(!n.connect_expired(t0 + Duration::from_millis(999)));
        assert!(n.connect_expired(t0 + Duration::from_millis(1000)));
        n.connected("/").unwrap();
        assert_eq!(n.poll_timeout(), None);
        assert!(!n.connect_expired(t0 + Duration::from_secs(100)));
        assert_eq!(n.check_connect("/"), Err(ConnectRefusal::AlreadyConnected));
        n.connected("/custom").unwrap();
        assert_eq!(n.check_connect("/third"), Err(ConnectRefusal::TooManyNamespaces { max: 2 }));
        assert!(n.disconnected("/"));
        assert!(!n.disconnected("/"));
        assert_eq!(n.iter().collect::<Vec<_>>(), vec!["/custom"]);
        // Leaving every namespace does not bring the deadline back.
        assert!(n.disconnected("/custom"));
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn acks_resolve_expire_and_are_bounded() {
        let t0 = Instant::now();
        let mut a = Acks::new(3);
        let id0 = a.insert(t0, Duration::from_millis(100), "a").unwrap();
        let id1 = a.insert(t0, Duration::from_millis(50), "b").unwrap();
        let id2 = a.insert(t0, Duration::from_millis(200), "c").unwrap();
        assert_eq!((id0, id1, id2), (0, 1, 2));
        assert_eq!(a.insert(t0, Duration::from_millis(1), "d"), Err(TooManyAcks { max: 3 }));
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(a.resolve(id0), Some("a"));
        assert_eq!(a.resolve(id0), None);
        assert_eq!(a.resolve(99), None);
        assert_eq!(a.expire(t0 + Duration::from_millis(49)), vec![]);
        assert_eq!(a.expire(t0 + Duration::from_millis(200)), vec![(1, "b"), (2, "c")]);
        assert!(a.is_empty());
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.insert(t0, Duration::from_millis(1), "e"), Ok(3));
        assert_eq!(a.drain().count(), 1);
        assert_eq!(a.len(), 0);
    }
}
