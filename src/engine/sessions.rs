//! The session table: sid → session, sharded so that lookups from many
//! connections do not contend on one lock. Hashed with a randomly seeded
//! foldhash (cheaper than SipHash for these short ids).

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 16;

type Shard<T> = HashMap<Arc<str>, Arc<T>, RandomState>;

/// A sharded map from session id to `Arc<T>`.
pub struct Sessions<T> {
    shards: Vec<Mutex<Shard<T>>>,
    hasher: RandomState,
}

impl<T> Default for Sessions<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Sessions<T> {
    /// An empty table.
    pub fn new() -> Self {
        Sessions {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            hasher: RandomState::default(),
        }
    }

    fn shard(&self, sid: &str) -> MutexGuard<'_, Shard<T>> {
        let i = (self.hasher.hash_one(sid) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session.
    pub fn insert(&self, sid: Arc<str>, value: Arc<T>) {
        self.shard(&sid).insert(sid, value);
    }

    /// Looks a session up.
    pub fn get(&self, sid: &str) -> Option<Arc<T>> {
        self.shard(sid).get(sid).cloned()
    }

    /// Removes a session.
    pub fn remove(&self, sid: &str) -> Option<Arc<T>> {
        self.shard(sid).remove(sid)
    }

    /// How many sessions there are.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every session, one shard locked at a time.
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for v in shard.values() {
                f(v);
            }
        }
    }
}
