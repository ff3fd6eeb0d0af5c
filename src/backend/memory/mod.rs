//! The in-memory store: one process holds every tenant's events and the
//! sessions kept for recovery. Every operation completes at once
//! ([`Answer::Now`]); a new event is delivered under its tenant's lock by the
//! append itself.
//!
//! - [`log`]: the lock-sharded per-tenant ring buffers ([`EventBus`]).
//! - [`sessions`]: the sessions kept for connection state recovery.
//! - [`keys`]: the idempotency keys of successful writes.

mod index;
pub mod keys;
pub mod log;
pub mod sessions;

use std::time::Duration;

use uuid::Uuid;

pub use keys::RememberedKeys;
pub use log::{Applied, EventBus, TenantLog};
pub use sessions::Sessions;

use crate::feed::idempotency::{KeyLimits, Keyed};
use crate::feed::recovery::{Epoch, Kept};
use crate::feed::store::{Answer, Appended, Delivery, Found, Later, Opening, Store};
use crate::feed::{FeedError, NewEvent, Page, PageRequest};

/// Sessions kept for recovery at most, by default.
pub const MAX_KEPT_SESSIONS: usize = 100_000;

/// Every tenant's events and the kept sessions, in this process.
#[derive(Debug)]
pub struct MemoryStore {
    bus: EventBus,
    sessions: Sessions,
    keys: RememberedKeys,
}

impl MemoryStore {
    /// A store keeping `capacity` events per tenant, and sessions for
    /// `recovery_window` (zero: recovery off), at most `max_sessions` at once.
    pub fn new(capacity: usize, recovery_window: Duration, max_sessions: usize) -> Self {
        MemoryStore::with_keys(capacity, recovery_window, max_sessions, KeyLimits::default())
    }

    /// The same, remembering idempotency keys within `keys`.
    pub fn with_keys(capacity: usize, recovery_window: Duration, max_sessions: usize, keys: KeyLimits) -> Self {
        MemoryStore {
            bus: EventBus::new(capacity),
            sessions: Sessions::new(recovery_window, max_sessions),
            keys: RememberedKeys::new(keys),
        }
    }

    /// The event logs.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// The kept sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

impl Store for MemoryStore {
    type View = TenantLog;

    fn append<D: Delivery>(
        &self,
        tenant: &str,
        event: NewEvent,
        keyed: Option<Keyed<'_>>,
        delivery: &D,
    ) -> Answer<Result<Appended, FeedError>, impl Later<Appended> + use<D>> {
        let Some(keyed) = keyed else {
            return Answer::now(Ok(Appended::new(
                self.bus.append(tenant, event, |e, epoch| delivery.deliver(e, epoch)),
            )));
        };
        // The tenant's keys stay locked from the lookup to the remembering:
        // two writes with one key never both append.
        let mut keys = self.keys.lock(tenant);
        Answer::now(match keys.lookup(&keyed) {
            Err(e) => Err(e),
            Ok(Some(event)) => Ok(Appended { event, replayed: true, forgotten: 0 }),
            Ok(None) => {
                let event = self.bus.append(tenant, event, |e, epoch| delivery.deliver(e, epoch));
                let forgotten = keys.remember(&keyed, event.clone());
                Ok(Appended { event, replayed: false, forgotten })
            }
        })
    }

    fn remembered(
        &self,
        tenant: &str,
        keyed: Keyed<'_>,
    ) -> Answer<Result<Found, FeedError>, impl Later<Found> + use<>> {
        Answer::now(self.keys.lock(tenant).lookup(&keyed))
    }

    fn read(&self, tenant: &str, request: PageRequest) -> Answer<Result<Page, FeedError>, impl Later<Page> + use<>> {
        Answer::now(Ok(self.bus.read(tenant, request)))
    }

    fn get(&self, tenant: &str, id: &Uuid) -> Answer<Result<Found, FeedError>, impl Later<Found> + use<>> {
        Answer::now(Ok(self.bus.get(tenant, id)))
    }

    fn open(&self, opening: Opening<'_>) -> Answer<Result<Option<Kept>, FeedError>, impl Later<Option<Kept>> + use<>> {
        Answer::now(Ok(opening.recover.and_then(|(pid, owner)| self.sessions.take(pid, &owner))))
    }

    fn with_tenant<R>(&self, tenant: &str, f: impl FnOnce(&TenantLog) -> R) -> R {
        self.bus.with_log(tenant, f)
    }

    fn session_opened(&self, _pid: &str, _kept: impl FnOnce() -> Kept) {}

    fn session_closed(&self, pid: &str, recoverable: bool, kept: impl FnOnce() -> Kept) {
        if recoverable {
            self.sessions.keep(pid.to_owned(), kept());
        }
    }

    fn forget_sessions(&self, still_held: impl Fn(&Kept) -> bool) -> usize {
        self.sessions.retain(still_held)
    }

    fn history_went_back(&self, _tenant: &str, _epoch: Epoch) {
        // One process holds the history from its start: it cannot go back.
    }

    fn readiness(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn sweep(&self) -> u64 {
        self.sessions.sweep();
        self.keys.sweep()
    }

    fn finish(&self, _within: Duration) -> impl std::future::Future<Output = bool> + Send {
        std::future::ready(true)
    }
}
