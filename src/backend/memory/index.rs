//! A tenant log's index from event id to `seq`, in 4 bytes a slot.
//!
//! An open-addressing table (linear probing, deletion by backward shift)
//! whose slots hold only a `seq` (modulo 2³²−1, so one value is left for
//! "empty"): the id is not kept twice — the log has it — so a probe reads the
//! id of the slot's event from the log to compare. With at most half the
//! slots in use, a log of 500 events costs 1,024 slots: 8 bytes an event,
//! where a `HashMap<Uuid, u64>` costs about 50.
//!
//! A `seq` is told back from its residue because every indexed `seq` lies
//! within the log's window (`first ..= first + len`), and a window is far
//! shorter than 2³²−1. Ids are random (UUID v4, made by the servers), so
//! their bits are the hash; a client can only *look up* an id of its choice,
//! and a lookup of an absent id ends at the first empty slot.

use uuid::Uuid;

/// The modulus of a slot's `seq` residue: `u32::MAX` itself means empty.
const MODULUS: u64 = u32::MAX as u64;
const EMPTY: u32 = u32::MAX;
/// The smallest table (slots); it doubles when half full.
const MIN_SLOTS: usize = 16;

/// See the module docs.
#[derive(Debug, Default)]
pub struct IdIndex {
    slots: Vec<u32>,
    len: usize,
}

/// The index's view of its log: the id of the event with `seq` (if it is
/// still there), and the log's window to tell a `seq` from its residue.
pub trait Ids {
    /// The id of the retained event with this `seq`.
    fn id_at(&self, seq: u64) -> Option<Uuid>;
    /// The `seq` of the oldest retained event (the window's start).
    fn first(&self) -> u64;
}

fn home(id: &Uuid, mask: usize) -> usize {
    let (hi, lo) = id.as_u64_pair();
    // A v4 id's bits are random but for its version and variant nibbles:
    // mixed, then the top bits taken.
    let h = (hi ^ lo.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as usize & mask
}

fn residue(seq: u64) -> u32 {
    (seq % MODULUS) as u32
}

impl IdIndex {
    /// An empty index (no allocation until the first insert).
    pub fn new() -> Self {
        IdIndex::default()
    }

    /// Ids indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The `seq` a residue stands for, in the window starting at `first`.
    fn seq_of(slot: u32, first: u64) -> u64 {
        let offset = (u64::from(slot) + MODULUS - first % MODULUS) % MODULUS;
        first + offset
    }

    /// The `seq` of `id`, when indexed.
    pub fn get(&self, id: &Uuid, log: &impl Ids) -> Option<u64> {
        self.find(id, log).map(|(_, seq)| seq)
    }

    fn find(&self, id: &Uuid, log: &impl Ids) -> Option<(usize, u64)> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let first = log.first();
        let mut i = home(id, mask);
        // At most half the slots are in use: an empty one always ends the walk.
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            let seq = Self::seq_of(slot, first);
            if log.id_at(seq).as_ref() == Some(id) {
                return Some((i, seq));
            }
            i = (i + 1) & mask;
        }
    }

    /// Indexes `id` at `seq` (the event must already be in the log, so that
    /// a growth can rehash it with the others).
    pub fn insert(&mut self, id: &Uuid, seq: u64, log: &impl Ids) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow(log);
        }
        let mask = self.slots.len() - 1;
        let mut i = home(id, mask);
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = residue(seq);
        self.len += 1;
    }

    /// Forgets `id` (whose event may already have left the log: the slot is
    /// found by its `seq`). Later slots of its run shift back, so no walk
    /// ever stops short of them.
    pub fn remove(&mut self, id: &Uuid, seq: u64, log: &impl Ids) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let target = residue(seq);
        let mut i = home(id, mask);
        loop {
            match self.slots[i] {
                EMPTY => return,
                slot if slot == target => break,
                _ => i = (i + 1) & mask,
            }
        }
        self.slots[i] = EMPTY;
        self.len -= 1;
        // Backward shift: a later slot whose home is not within (i, j] moves
        // into the hole.
        let first = log.first();
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.slots[j] != EMPTY {
            let seq = Self::seq_of(self.slots[j], first);
            let Some(other) = log.id_at(seq) else {
                // Not in the log (cannot happen: every indexed event is);
                // dropped rather than left unreachable.
                self.slots[j] = EMPTY;
                self.len -= 1;
                j = (j + 1) & mask;
                continue;
            };
            let h = home(&other, mask);
            // Whether h lies cyclically within (hole, j]: then it stays.
            let stays = if hole <= j { hole < h && h <= j } else { hole < h || h <= j };
            if !stays {
                self.slots[hole] = self.slots[j];
                self.slots[j] = EMPTY;
                hole = j;
            }
            j = (j + 1) & mask;
        }
    }

    /// Drops every entry (keeps the table).
    pub fn clear(&mut self) {
        self.slots.fill(EMPTY);
        self.len = 0;
    }

    /// Doubles the table and places every entry again.
    fn grow(&mut self, log: &impl Ids) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; size]);
        let first = log.first();
        let mask = size - 1;
        self.len = 0;
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            let seq = Self::seq_of(slot, first);
            let Some(id) = log.id_at(seq) else { continue };
            let mut i = home(&id, mask);
            while self.slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
            self.len += 1;
        }
    }

    /// Bytes the table holds.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.slots.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};

    use super::*;

    /// A log of ids in `seq` order starting at `first`.
    struct Log {
        first: u64,
        ids: VecDeque<Uuid>,
    }

    impl Ids for Log {
        fn id_at(&self, seq: u64) -> Option<Uuid> {
            let pos = usize::try_from(seq.checked_sub(self.first)?).ok()?;
            self.ids.get(pos).copied()
        }
        fn first(&self) -> u64 {
            self.first
        }
    }

    fn random_id(state: &mut u64) -> Uuid {
        let mut next = || {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state
        };
        uuid::Builder::from_random_bytes(((u128::from(next()) << 64) | u128::from(next())).to_le_bytes()).into_uuid()
    }

    /// A ring of `capacity` over many evictions, checked against a HashMap
    /// at every step, from a `seq` near the residue's wrap.
    fn ring(capacity: usize, start: u64, total: u64) {
        let mut rng = 0x2545_F491_4F6C_DD1D_u64 ^ start;
        let mut log = Log { first: start, ids: VecDeque::new() };
        let mut index = IdIndex::new();
        let mut truth: HashMap<Uuid, u64> = HashMap::new();
        let mut evicted = Vec::new();
        for seq in start..start + total {
            if log.ids.len() == capacity {
                let old = log.ids.pop_front().unwrap_or_default();
                log.first += 1;
                index.remove(&old, seq - capacity as u64, &log);
                truth.remove(&old);
                evicted.push(old);
            }
            let id = random_id(&mut rng);
            log.ids.push_back(id);
            index.insert(&id, seq, &log);
            truth.insert(id, seq);
            assert_eq!(index.len(), truth.len());
            if seq % 7 == 0 {
                for (id, seq) in &truth {
                    assert_eq!(index.get(id, &log), Some(*seq), "{id} at {seq}");
                }
                for id in evicted.iter().rev().take(20) {
                    assert_eq!(index.get(id, &log), None, "evicted {id}");
                }
                assert_eq!(index.get(&random_id(&mut rng), &log), None);
            }
        }
        assert!(index.slots.len() <= (capacity * 4).max(MIN_SLOTS), "the table stays within twice what it holds");
    }

    #[test]
    fn agrees_with_a_hash_map_through_evictions() {
        ring(1, 1, 50);
        ring(5, 1, 500);
        ring(100, 1, 3_000);
        ring(500, 10_000, 5_000);
    }

    #[test]
    fn seqs_across_the_residue_wrap() {
        // The window crosses a multiple of 2^32 - 1: residues wrap to 0.
        ring(64, MODULUS - 40, 200);
        ring(64, 3 * MODULUS - 10, 200);
    }

    #[test]
    fn small_per_event() {
        let mut rng = 7_u64;
        let mut log = Log { first: 1, ids: VecDeque::new() };
        let mut index = IdIndex::new();
        for seq in 1..=500 {
            let id = random_id(&mut rng);
            log.ids.push_back(id);
            index.insert(&id, seq, &log);
        }
        assert_eq!(index.bytes(), 1024 * 4, "8 bytes an event");
        index.clear();
        assert_eq!(index.len(), 0);
        assert_eq!(index.get(&log.ids[3], &log), None);
    }
}
