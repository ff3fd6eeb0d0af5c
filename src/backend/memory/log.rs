//! The in-memory event log ([`EventBus`]): a lock-sharded map of per-tenant
//! ring buffers.
//!
//! Each tenant has a [`TenantLog`]: the last `capacity` events in `seq` order
//! and an index from event id to `seq`, so `sinceId` and get-by-id are O(1)
//! (the position of `seq` is `seq - first_seq`). An evicted event leaves the
//! index, so memory stays bounded by capacity × tenants. A retained event
//! costs its JSON (one allocation, shared by every reader), a 16-byte slot,
//! and 8 bytes of index ([`IdIndex`](super::index::IdIndex)).
//!
//! Locks: the shard lock (`hash(tenant) % SHARDS`) is held only to find or
//! create a tenant's log; the tenant's own lock covers appending *and*
//! delivering the event (the caller's `deliver`), so two concurrent writers
//! of one tenant are delivered in `seq` order to everyone. Delivery only
//! queues shared bytes (no I/O), and no lock here is ever held across
//! `.await` — all methods are synchronous.
//!
//! The Redis store keeps one too, as its copy of the logs of the tenants it
//! serves ([`EventBus::apply`], [`EventBus::replace`]).
//!
//! Each log has the [`Epoch`] of its history: in memory the one the bus drew
//! when the process started (every history starts anew with the process); in
//! a copy, the shared store's, set when the copy is (re)loaded.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use super::index::{IdIndex, Ids};
use crate::feed::recovery::Epoch;
use crate::feed::{NewEvent, Page, PageRequest, StoredEvent, TenantView};

const SHARDS: usize = 64;

/// One tenant's retained events.
#[derive(Debug)]
pub struct TenantLog {
    tenant: Arc<str>,
    epoch: Epoch,
    next_seq: u64,
    events: VecDeque<StoredEvent>,
    index: IdIndex,
}

/// The log's events as the index sees them.
struct Window<'a> {
    events: &'a VecDeque<StoredEvent>,
    next_seq: u64,
}

impl Ids for Window<'_> {
    fn id_at(&self, seq: u64) -> Option<Uuid> {
        let first = self.first();
        let pos = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.events.get(pos).map(StoredEvent::id)
    }

    fn first(&self) -> u64 {
        self.events.front().map_or(self.next_seq, StoredEvent::seq)
    }
}

impl TenantLog {
    fn new(tenant: Arc<str>, capacity: usize, epoch: Epoch) -> Self {
        TenantLog {
            tenant,
            epoch,
            next_seq: 1,
            events: VecDeque::with_capacity(capacity.min(64)),
            index: IdIndex::new(),
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The event with this id, if retained.
    pub fn get(&self, id: &Uuid) -> Option<StoredEvent> {
        let pos = self.position(self.index.get(id, &self.window())?)?;
        self.events.get(pos).cloned()
    }

    fn window(&self) -> Window<'_> {
        Window { events: &self.events, next_seq: self.next_seq }
    }

    /// How many events are retained.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is retained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

impl TenantView for TenantLog {
    /// The most recent `limit` events, oldest first (`has_more` is false: they
    /// end at the newest).
    fn latest(&self, limit: usize) -> Page {
        let start = self.events.len().saturating_sub(limit);
        Page { events: self.events.range(start..).cloned().collect(), has_more: false, gap: false }
    }

    /// Up to `limit` events strictly after `since`, oldest first.
    ///
    /// An id that is not retained (evicted, or never in this tenant) gives the
    /// oldest retained events with `gap: true`.
    fn after(&self, since: &Uuid, limit: usize) -> Page {
        let (start, gap) = match self.index.get(since, &self.window()).and_then(|seq| self.position(seq)) {
            Some(pos) => (pos + 1, false),
            None => (0, true),
        };
        let end = start.saturating_add(limit).min(self.events.len());
        let events = self.events.range(start.min(end)..end).cloned().collect();
        Page { events, has_more: end < self.events.len(), gap }
    }

    /// Up to `limit` events with `seq` greater than `seq`, oldest first;
    /// `None` if some of them were evicted already (the caller missed events).
    fn after_seq(&self, seq: u64, limit: usize) -> Option<Page> {
        let first = self.first_seq();
        if seq.saturating_add(1) < first {
            return None;
        }
        let start = (seq + 1 - first) as usize;
        let end = start.saturating_add(limit).min(self.events.len());
        Some(Page {
            events: self.events.range(start.min(end)..end).cloned().collect(),
            has_more: end < self.events.len(),
            gap: false,
        })
    }

    /// The `seq` of the newest event (0 when none was ever written).
    fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    fn first_seq(&self) -> u64 {
        self.window().first()
    }

    fn seq_of(&self, id: &Uuid) -> Option<u64> {
        let seq = self.index.get(id, &self.window())?;
        self.position(seq).map(|_| seq)
    }

    fn id_at(&self, seq: u64) -> Option<Uuid> {
        self.events.get(self.position(seq)?).map(StoredEvent::id)
    }

    fn epoch(&self) -> Epoch {
        self.epoch
    }
}

impl TenantLog {
    fn position(&self, seq: u64) -> Option<usize> {
        let first = self.events.front()?.seq();
        let pos = usize::try_from(seq.checked_sub(first)?).ok()?;
        (pos < self.events.len()).then_some(pos)
    }

    fn append(&mut self, new: NewEvent, capacity: usize) -> StoredEvent {
        let event = StoredEvent::new(new, self.next_seq, self.tenant.clone());
        self.push(event.clone(), capacity);
        event
    }

    /// Adds the event with the next `seq`, evicting the oldest beyond `capacity`.
    fn push(&mut self, event: StoredEvent, capacity: usize) {
        let (id, seq) = (event.id(), event.seq());
        self.next_seq = seq + 1;
        if self.events.len() >= capacity
            && let Some(evicted) = self.events.pop_front()
        {
            self.index.remove(&evicted.id(), evicted.seq(), &Window { events: &self.events, next_seq: self.next_seq });
        }
        self.events.push_back(event);
        self.index.insert(&id, seq, &Window { events: &self.events, next_seq: self.next_seq });
    }

    /// Places an event made elsewhere (a shared store) into this copy of the
    /// log: appended only when it is the next `seq`.
    fn apply(&mut self, event: &StoredEvent, capacity: usize) -> Applied {
        let seq = event.seq();
        if seq < self.next_seq {
            Applied::Duplicate
        } else if seq > self.next_seq {
            Applied::Gap { last_seq: self.last_seq() }
        } else {
            self.push(event.clone(), capacity);
            Applied::Appended
        }
    }

    /// Replaces the whole log with `events` (consecutive `seq`s, oldest
    /// first) ending at `last_seq`, of the history `epoch`.
    fn replace(&mut self, events: Vec<StoredEvent>, last_seq: u64, epoch: Epoch, capacity: usize) {
        self.epoch = epoch;
        self.events.clear();
        self.index.clear();
        let skip = events.len().saturating_sub(capacity);
        for event in events.into_iter().skip(skip) {
            let (id, seq) = (event.id(), event.seq());
            self.events.push_back(event);
            self.index.insert(&id, seq, &Window { events: &self.events, next_seq: self.next_seq });
        }
        self.next_seq = last_seq + 1;
    }
}

/// What [`EventBus::apply`] did with an event made elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It was the next one: stored and delivered.
    Appended,
    /// It was already there (its `seq` is not newer): ignored.
    Duplicate,
    /// Events between `last_seq` and it are missing: nothing was done; the
    /// caller fetches the missing ones first.
    Gap {
        /// The newest `seq` this copy has.
        last_seq: u64,
    },
}

/// One shard: tenant → that tenant's log (with its own lock).
type Shard = HashMap<Arc<str>, Arc<Mutex<TenantLog>>, foldhash::fast::RandomState>;

/// The lock-sharded logs of every tenant.
pub struct EventBus {
    shards: Vec<Mutex<Shard>>,
    /// Randomly seeded (tenant ids come from clients), cheaper than SipHash.
    hasher: foldhash::fast::RandomState,
    capacity: usize,
    /// The epoch of the logs this bus creates.
    epoch: Epoch,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere mid-update leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventBus {
    /// Logs keeping `capacity` events per tenant, of a new epoch.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            capacity: capacity.max(1),
            epoch: Epoch::random(),
        }
    }

    /// The epoch of the logs this bus creates (a copy's is the store's).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Events kept per tenant.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn log(&self, tenant: &str) -> Option<Arc<Mutex<TenantLog>>> {
        let shard = lock(&self.shards[self.shard_of(tenant)]);
        shard.get(tenant).cloned()
    }

    fn log_or_create(&self, tenant: &str) -> Arc<Mutex<TenantLog>> {
        let mut shard = lock(&self.shards[self.shard_of(tenant)]);
        if let Some(log) = shard.get(tenant) {
            return log.clone();
        }
        let tenant: Arc<str> = tenant.into();
        let log = Arc::new(Mutex::new(TenantLog::new(tenant.clone(), self.capacity, self.epoch)));
        shard.insert(tenant, log.clone());
        log
    }

    fn shard_of(&self, tenant: &str) -> usize {
        (self.hasher.hash_one(tenant) as usize) % SHARDS
    }

    /// Stores a new event for `tenant` and delivers it with `deliver` (with
    /// its history's epoch), under the tenant's lock: in `seq` order.
    pub fn append(&self, tenant: &str, new: NewEvent, deliver: impl FnOnce(&StoredEvent, Epoch)) -> StoredEvent {
        let log = self.log_or_create(tenant);
        let mut log = lock(&log);
        let event = log.append(new, self.capacity);
        deliver(&event, log.epoch);
        event
    }

    /// Applies an event made by a shared store (another instance, say) to
    /// this copy of the tenant's log, delivering it with `deliver` when it is
    /// the next one — under the tenant's lock, like [`append`](Self::append).
    pub fn apply(&self, event: &StoredEvent, deliver: impl FnOnce(&StoredEvent, Epoch)) -> Applied {
        let log = self.log_or_create(&event.tenant_id());
        let mut log = lock(&log);
        let applied = log.apply(event, self.capacity);
        if applied == Applied::Appended {
            deliver(event, log.epoch);
        }
        applied
    }

    /// Replaces this copy of the tenant's log with `events` ending at
    /// `last_seq`, of the history `epoch`, delivering nothing (a copy loaded
    /// from a shared store).
    pub fn replace(&self, tenant: &str, events: Vec<StoredEvent>, last_seq: u64, epoch: Epoch) {
        let log = self.log_or_create(tenant);
        lock(&log).replace(events, last_seq, epoch, self.capacity);
    }

    /// The epoch of this copy of the tenant's history, if it exists here.
    pub fn epoch_of(&self, tenant: &str) -> Option<Epoch> {
        self.log(tenant).map(|l| lock(&l).epoch)
    }

    /// The id of the tenant's event `seq`, if this log still has it.
    pub fn id_at(&self, tenant: &str, seq: u64) -> Option<Uuid> {
        let log = self.log(tenant)?;
        let log = lock(&log);
        let pos = log.position(seq)?;
        log.events.get(pos).map(|e| e.id())
    }

    /// The `seq` of the tenant's newest event, if its log exists here.
    pub fn last_seq(&self, tenant: &str) -> Option<u64> {
        self.log(tenant).map(|l| lock(&l).last_seq())
    }

    /// Runs `f` on the tenant's log under its lock, so nothing is appended
    /// (or delivered) meanwhile — e.g. to join a room and send a snapshot with
    /// no event lost or duplicated in between.
    pub fn with_log<R>(&self, tenant: &str, f: impl FnOnce(&TenantLog) -> R) -> R {
        let log = self.log_or_create(tenant);
        let log = lock(&log);
        f(&log)
    }

    /// The most recent `limit` events of `tenant`, oldest first.
    pub fn latest(&self, tenant: &str, limit: usize) -> Page {
        self.log(tenant).map(|l| lock(&l).latest(limit)).unwrap_or_default()
    }

    /// Up to `limit` events of `tenant` after `since` (see [`TenantLog::after`]).
    pub fn after(&self, tenant: &str, since: &Uuid, limit: usize) -> Page {
        match self.log(tenant) {
            Some(l) => lock(&l).after(since, limit),
            None => Page { events: Vec::new(), has_more: false, gap: true },
        }
    }

    /// A page of `tenant`'s events (the paging rules of [`crate::feed::paging`]).
    pub fn read(&self, tenant: &str, request: PageRequest) -> Page {
        match request.since {
            Some(since) => self.after(tenant, &since, request.limit),
            None => self.latest(tenant, request.limit),
        }
    }

    /// The event `id` of `tenant`, if retained.
    pub fn get(&self, tenant: &str, id: &Uuid) -> Option<StoredEvent> {
        let log = self.log(tenant)?;
        lock(&log).get(id)
    }

    /// How many tenants have a log.
    pub fn tenant_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Events retained across all tenants.
    pub fn retained(&self) -> usize {
        let logs: Vec<_> = self.shards.iter().flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>()).collect();
        logs.iter().map(|l| lock(l).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn bus(capacity: usize) -> EventBus {
        EventBus::new(capacity)
    }

    fn post(bus: &EventBus, tenant: &str, msg: &str) -> StoredEvent {
        bus.append(tenant, NewEvent::new(msg.to_owned(), "u".to_owned()), |_, _| {})
    }

    fn seqs(p: &Page) -> Vec<u64> {
        p.events.iter().map(|e| e.seq()).collect()
    }

    #[test]
    fn seq_counts_from_one_per_tenant() {
        let b = bus(10);
        assert_eq!(post(&b, "a", "1").seq(), 1);
        assert_eq!(post(&b, "a", "2").seq(), 2);
        assert_eq!(post(&b, "b", "1").seq(), 1);
        assert_eq!(seqs(&b.latest("a", 100)), vec![1, 2]);
        assert_eq!(b.latest("a", 100).events[0].tenant_id(), "a");
    }

    #[test]
    fn eviction_keeps_the_newest_and_drops_the_index() {
        let b = bus(3);
        let first = post(&b, "a", "1");
        for i in 2..=5 {
            post(&b, "a", &i.to_string());
        }
        assert_eq!(seqs(&b.latest("a", 100)), vec![3, 4, 5]);
        assert!(b.get("a", &first.id()).is_none());
        b.with_log("a", |log| {
            assert_eq!(log.index.len(), 3, "evicted ids leave the index");
            assert_eq!(log.len(), 3);
            assert_eq!(log.last_seq(), 5);
        });
    }

    #[test]
    fn since_id_before_at_and_after_eviction() {
        let b = bus(3);
        let e: Vec<_> = (1..=5).map(|i| post(&b, "a", &i.to_string())).collect();
        // Retained: 3, 4, 5.
        let p = b.after("a", &e[2].id(), 100);
        assert_eq!((seqs(&p), p.has_more, p.gap), (vec![4, 5], false, false));
        let p = b.after("a", &e[4].id(), 100);
        assert_eq!((seqs(&p), p.has_more, p.gap), (vec![], false, false), "at the newest: nothing, no gap");
        let p = b.after("a", &e[0].id(), 100);
        assert_eq!((seqs(&p), p.gap), (vec![3, 4, 5], true), "evicted id: from the oldest, with gap");
        let p = b.after("a", &Uuid::new_v4(), 100);
        assert_eq!((seqs(&p), p.gap), (vec![3, 4, 5], true), "unknown id: gap");
        let p = b.after("zzz", &Uuid::new_v4(), 100);
        assert_eq!((seqs(&p), p.gap), (vec![], true), "unknown tenant: gap, nothing");
    }

    #[test]
    fn limits_and_has_more() {
        let b = bus(100);
        let e: Vec<_> = (1..=10).map(|i| post(&b, "a", &i.to_string())).collect();
        let p = b.after("a", &e[0].id(), 3);
        assert_eq!((seqs(&p), p.has_more), (vec![2, 3, 4], true));
        let p = b.after("a", &e[6].id(), 3);
        assert_eq!((seqs(&p), p.has_more), (vec![8, 9, 10], false));
        assert_eq!(seqs(&b.latest("a", 3)), vec![8, 9, 10]);
        // Paging with the last id walks everything once.
        let mut cursor = e[0].id();
        let mut all = vec![1];
        loop {
            let p = b.after("a", &cursor, 4);
            all.extend(seqs(&p));
            let Some(last) = p.events.last() else { break };
            cursor = last.id();
            if !p.has_more {
                break;
            }
        }
        assert_eq!(all, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn tenants_do_not_see_each_other() {
        let b = bus(10);
        let a = post(&b, "a", "secret");
        assert!(b.get("b", &a.id()).is_none());
        let p = b.after("b", &a.id(), 10);
        assert!(p.events.is_empty() && p.gap);
        post(&b, "b", "x");
        assert!(b.after("b", &a.id(), 10).events.iter().all(|e| e.tenant_id() == "b"));
    }

    #[test]
    fn after_seq_reports_evicted_ranges() {
        let b = bus(3);
        for i in 1..=5 {
            post(&b, "a", &i.to_string());
        }
        b.with_log("a", |log| {
            assert!(log.after_seq(1, 10).is_none(), "seq 2 was evicted");
            assert_eq!(seqs(&log.after_seq(2, 10).unwrap()), vec![3, 4, 5]);
            assert_eq!(seqs(&log.after_seq(4, 10).unwrap()), vec![5]);
            assert_eq!(seqs(&log.after_seq(5, 10).unwrap()), Vec::<u64>::new());
        });
        b.with_log("empty", |log| assert_eq!(seqs(&log.after_seq(0, 10).unwrap()), Vec::<u64>::new()));
        b.with_log("empty", |log| assert_eq!((log.first_seq(), log.last_seq()), (1, 0)));
    }

    #[test]
    fn first_seq_and_seq_of_follow_eviction() {
        let b = bus(3);
        let e: Vec<_> = (1..=5).map(|i| post(&b, "a", &i.to_string())).collect();
        b.with_log("a", |log| {
            assert_eq!((log.first_seq(), log.last_seq()), (3, 5));
            assert_eq!(log.seq_of(&e[4].id()), Some(5));
            assert_eq!(log.seq_of(&e[2].id()), Some(3));
            assert_eq!(log.seq_of(&e[1].id()), None, "evicted");
            assert_eq!(log.seq_of(&Uuid::new_v4()), None);
        });
    }

    #[test]
    fn a_copy_applies_in_order_and_reports_gaps_and_duplicates() {
        let origin = bus(3);
        let made: Vec<_> = (1..=5).map(|i| post(&origin, "a", &i.to_string())).collect();
        let rec = Recorder::default();
        let copy = EventBus::new(3);
        let epoch = crate::feed::recovery::Epoch::random();
        copy.replace("a", made[..2].to_vec(), 2, epoch);
        assert_eq!(copy.epoch_of("a"), Some(epoch), "a copy has the store's epoch");
        assert_eq!(copy.apply(&made[1], |e, _| rec.deliver(e)), Applied::Duplicate);
        assert_eq!(copy.apply(&made[3], |e, _| rec.deliver(e)), Applied::Gap { last_seq: 2 });
        assert_eq!(copy.apply(&made[2], |e, _| rec.deliver(e)), Applied::Appended);
        assert_eq!(copy.apply(&made[3], |e, _| rec.deliver(e)), Applied::Appended);
        assert_eq!(copy.apply(&made[4], |e, _| rec.deliver(e)), Applied::Appended);
        assert_eq!(seqs(&copy.latest("a", 10)), vec![3, 4, 5], "capacity holds");
        assert!(copy.get("a", &made[0].id()).is_none(), "evicted ids leave the index");
        assert_eq!(copy.after("a", &made[2].id(), 10).events.len(), 2);
        let delivered: Vec<u64> = rec.0.lock().unwrap().iter().map(|(_, s)| *s).collect();
        assert_eq!(delivered, vec![3, 4, 5], "only appended events are delivered");
        // A longer history than the capacity keeps the newest.
        copy.replace("b", made.clone(), 5, epoch);
        assert_eq!(seqs(&copy.latest("b", 10)), vec![3, 4, 5]);
        assert_eq!(copy.last_seq("b"), Some(5));
        assert_eq!(copy.last_seq("nobody"), None);
        assert_eq!(copy.id_at("b", 4), Some(made[3].id()));
        assert_eq!(copy.id_at("b", 2), None, "evicted");
        assert_eq!(copy.id_at("b", 6), None, "not yet");
    }

    #[test]
    fn memory_is_bounded_after_eviction() {
        let b = bus(50);
        for t in 0..20 {
            for i in 0..500 {
                post(&b, &format!("t{t}"), &i.to_string());
            }
        }
        assert_eq!(b.tenant_count(), 20);
        assert_eq!(b.retained(), 20 * 50);
    }

    /// Records what is delivered, to check order and completeness.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Arc<str>, u64)>>);

    impl Recorder {
        fn deliver(&self, event: &StoredEvent) {
            self.0.lock().unwrap().push((Arc::from(event.tenant_id()), event.seq()));
        }
    }

    #[test]
    fn concurrent_writers_on_many_tenants_lose_and_duplicate_nothing() {
        let rec = Arc::new(Recorder::default());
        let b = Arc::new(EventBus::new(10_000));
        let threads: Vec<_> = (0..8)
            .map(|w| {
                let (b, rec) = (b.clone(), rec.clone());
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let new = NewEvent::new("m".to_owned(), "u".to_owned());
                        b.append(&format!("t{}", (w + i) % 5), new, |e, _| rec.deliver(e));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let delivered = rec.0.lock().unwrap();
        assert_eq!(delivered.len(), 8000);
        let mut per_tenant: HashMap<&str, Vec<u64>> = HashMap::new();
        for (t, s) in delivered.iter() {
            per_tenant.entry(t).or_default().push(*s);
        }
        let mut total = 0;
        for (t, s) in per_tenant {
            // Delivered in seq order, 1..=n, no holes, no duplicates.
            assert_eq!(s, (1..=s.len() as u64).collect::<Vec<_>>(), "tenant {t}");
            assert_eq!(s.iter().collect::<HashSet<_>>().len(), s.len());
            assert_eq!(b.latest(t, 10_000).events.len(), s.len());
            total += s.len();
        }
        assert_eq!(total, 8000);
    }
}
