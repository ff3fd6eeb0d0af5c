//! The in-memory store: one process holds every tenant's events and the
//! sessions kept for recovery. Every operation completes at once
//! ([`Answer::Now`]); a new event is delivered under its tenant's lock by the
//! append itself.
//!
//! - [`log`]: the lock-sharded per-tenant ring buffers ([`EventBus`]).
//! - [`sessions`]: the sessions kept for connection state recovery.

pub mod log;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

pub use log::{Applied, EventBus, TenantLog};
pub use sessions::Sessions;

use crate::feed::recovery::Kept;
use crate::feed::store::{Answer, Delivery, Found, Later, Opening, Store};
use crate::feed::{FeedError, NewEvent, Page, PageRequest, StoredEvent};

/// Sessions kept for recovery at most, by default.
pub const MAX_KEPT_SESSIONS: usize = 100_000;

/// Every tenant's events and the kept sessions, in this process.
#[derive(Debug)]
pub struct MemoryStore {
    bus: EventBus,
    sessions: Sessions,
}

impl MemoryStore {
    /// A store keeping `capacity` events per tenant, and sessions for
    /// `recovery_window` (zero: recovery off), at most `max_sessions` at once.
    pub fn new(capacity: usize, recovery_window: Duration, max_sessions: usize) -> Self {
        MemoryStore { bus: EventBus::new(capacity), sessions: Sessions::new(recovery_window, max_sessions) }
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
        delivery: &D,
    ) -> Answer<Result<Arc<StoredEvent>, FeedError>, impl Later<Arc<StoredEvent>> + use<D>> {
        Answer::now(Ok(self.bus.append(tenant, event, |e| delivery.deliver(e))))
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

    fn readiness(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn sweep(&self) {
        self.sessions.sweep();
    }

    fn finish(&self, _within: Duration) -> impl std::future::Future<Output = bool> + Send {
        std::future::ready(true)
    }
}
