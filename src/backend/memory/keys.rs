//! Idempotency keys remembered in this process: per tenant, by the slot of
//! (user, key), each with its message's digest and the event it made, for
//! the window, at most `max_keys` per tenant (the oldest is forgotten first).
//! See [`crate::feed::idempotency`] for the rules.
//!
//! Memory per key: about 150 bytes (the slot twice, the digest, the time,
//! the map's share) while its event is still in the tenant's buffer, which
//! holds it anyway; once the buffer evicted the event, the key keeps it alive
//! too (its message and about 200 bytes more).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::feed::idempotency::{KeyLimits, Keyed};
use crate::feed::{FeedError, StoredEvent};

const SHARDS: usize = 16;

struct Entry {
    message: [u8; 32],
    event: StoredEvent,
    at: Instant,
}

#[derive(Default)]
struct TenantKeys {
    by_slot: HashMap<[u8; 32], Entry, foldhash::fast::RandomState>,
    /// Slots in the order they were remembered (with when, to tell a stale
    /// item from a slot remembered again later).
    order: VecDeque<(Instant, [u8; 32])>,
}

/// The remembered keys of every tenant, sharded by tenant.
pub struct RememberedKeys {
    limits: KeyLimits,
    shards: Vec<Mutex<HashMap<Arc<str>, TenantKeys, foldhash::fast::RandomState>>>,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for RememberedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RememberedKeys").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// One tenant's keys, locked: look up, then remember, in one step.
pub struct Locked<'a> {
    guard: MutexGuard<'a, HashMap<Arc<str>, TenantKeys, foldhash::fast::RandomState>>,
    tenant: &'a str,
    limits: KeyLimits,
}

impl RememberedKeys {
    /// Keys remembered within `limits`.
    pub fn new(limits: KeyLimits) -> Self {
        RememberedKeys {
            limits,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Locks `tenant`'s keys.
    pub fn lock<'a>(&'a self, tenant: &'a str) -> Locked<'a> {
        let shard = &self.shards[(self.hasher.hash_one(tenant) as usize) % SHARDS];
        Locked { guard: shard.lock().unwrap_or_else(|e| e.into_inner()), tenant, limits: self.limits }
    }

    /// Forgets what is past its window, in every tenant; how many.
    pub fn sweep(&self) -> u64 {
        let now = Instant::now();
        let mut forgotten = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for keys in shard.values_mut() {
                forgotten += keys.expire(now, self.limits);
            }
            shard.retain(|_, keys| !keys.by_slot.is_empty());
        }
        forgotten
    }

    /// How many keys `tenant` has remembered.
    pub fn len(&self, tenant: &str) -> usize {
        self.lock(tenant).guard.get(tenant).map_or(0, |k| k.by_slot.len())
    }
}

impl Locked<'_> {
    /// The event `keyed` made, if its key is remembered (and not past its
    /// window); another message with the key is refused.
    pub fn lookup(&self, keyed: &Keyed<'_>) -> Result<Option<StoredEvent>, FeedError> {
        let Some(keys) = self.guard.get(self.tenant) else { return Ok(None) };
        let Some(entry) = keys.by_slot.get(&keyed.slot()) else { return Ok(None) };
        if entry.at + self.limits.window <= Instant::now() {
            return Ok(None);
        }
        if !bool::from(entry.message.ct_eq(&keyed.message)) {
            return Err(FeedError::IdempotencyKeyReused);
        }
        Ok(Some(entry.event.clone()))
    }

    /// Remembers that `keyed` made `event`; how many keys were forgotten to
    /// stay within the limits.
    pub fn remember(&mut self, keyed: &Keyed<'_>, event: StoredEvent) -> u64 {
        let now = Instant::now();
        let limits = self.limits;
        let keys = match self.guard.get_mut(self.tenant) {
            Some(keys) => keys,
            None => self.guard.entry(Arc::from(self.tenant)).or_default(),
        };
        let mut forgotten = keys.expire(now, limits);
        let slot = keyed.slot();
        while keys.by_slot.len() >= limits.max_keys && !keys.by_slot.contains_key(&slot) {
            // Bound hit: the tenant has as many keys as allowed; forget the oldest.
            let Some((at, oldest)) = keys.order.pop_front() else { break };
            if keys.by_slot.get(&oldest).is_some_and(|e| e.at == at) {
                keys.by_slot.remove(&oldest);
                forgotten += 1;
            }
        }
        keys.order.push_back((now, slot));
        keys.by_slot.insert(slot, Entry { message: keyed.message, event, at: now });
        forgotten
    }
}

impl TenantKeys {
    /// Forgets the keys past the window; how many.
    fn expire(&mut self, now: Instant, limits: KeyLimits) -> u64 {
        let mut forgotten = 0;
        while let Some(&(at, slot)) = self.order.front() {
            if at + limits.window > now {
                break;
            }
            self.order.pop_front();
            if self.by_slot.get(&slot).is_some_and(|e| e.at == at) {
                self.by_slot.remove(&slot);
                forgotten += 1;
            }
        }
        // `order` may hold items of slots remembered again later; bound it too.
        if self.order.len() > 2 * self.by_slot.len() + 1024 {
            let live = &self.by_slot;
            self.order.retain(|(at, slot)| live.get(slot).is_some_and(|e| e.at == *at));
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::NewEvent;
    use crate::feed::idempotency::{IdempotencyKey, message_digest};
    use std::time::Duration;

    fn event(message: &str) -> StoredEvent {
        StoredEvent::new(NewEvent::new(message.into(), "u".into()), 1, "t".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_answers_its_event_for_its_message_only_within_the_window() {
        let keys = RememberedKeys::new(KeyLimits { window: Duration::from_secs(10), max_keys: 100 });
        let key = IdempotencyKey::parse("k").unwrap();
        let keyed = Keyed { user: "u", key: &key, message: message_digest("hello") };
        assert!(keys.lock("t").lookup(&keyed).unwrap().is_none());
        let made = event("hello");
        assert_eq!(keys.lock("t").remember(&keyed, made.clone()), 0);
        assert_eq!(keys.lock("t").lookup(&keyed).unwrap().unwrap().id(), made.id());
        let other = Keyed { message: message_digest("other"), ..keyed };
        assert_eq!(keys.lock("t").lookup(&other).unwrap_err().code(), "idempotency_key_reused");
        assert!(keys.lock("t2").lookup(&keyed).unwrap().is_none(), "per tenant");
        assert!(keys.lock("t").lookup(&Keyed { user: "v", ..keyed }).unwrap().is_none(), "per user");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(keys.lock("t").lookup(&keyed).unwrap().is_none(), "window over");
        assert_eq!(keys.sweep(), 1);
        assert_eq!(keys.len("t"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_keys_per_tenant_the_oldest_forgotten_first() {
        let keys = RememberedKeys::new(KeyLimits { window: Duration::from_secs(60), max_keys: 3 });
        let names: Vec<IdempotencyKey> = (0..5).map(|i| IdempotencyKey::parse(&format!("k{i}")).unwrap()).collect();
        let keyed = |i: usize| Keyed { user: "u", key: &names[i], message: message_digest("m") };
        let mut forgotten = 0;
        for i in 0..5 {
            forgotten += keys.lock("t").remember(&keyed(i), event("m"));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(forgotten, 2);
        assert_eq!(keys.len("t"), 3);
        assert!(keys.lock("t").lookup(&keyed(0)).unwrap().is_none());
        assert!(keys.lock("t").lookup(&keyed(1)).unwrap().is_none());
        assert!(keys.lock("t").lookup(&keyed(4)).unwrap().is_some());
        assert_eq!(keys.lock("other").remember(&keyed(0), event("m")), 0, "each tenant its own bound");
    }
}
