//! Idempotent writes: a publisher that retries a write whose answer it never
//! saw sends the same `Idempotency-Key` (REST) or `idempotencyKey`
//! (`post_event`), and gets the event the first attempt created instead of
//! a second one.
//!
//! A key is remembered per tenant and user, only for a write that succeeded,
//! together with the event itself (the buffer may have evicted it since) and
//! the digest of its message, for the window, at most so many keys per
//! tenant (the oldest are forgotten first). Where keys are remembered is the
//! store's business: in this process, or in Redis — where the key check, the
//! `seq` allocation and the append are one atomic script, so a retry on
//! another instance gets the original too.
//!
//! The same key with another message is `idempotency_key_reused` (422); the
//! same key while the first request is still being carried out on this
//! instance is `conflict` (409, retry in a second). A refused or failed write
//! remembers nothing: its retry is a fresh attempt.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::FeedError;

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// How long a key is remembered, by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// Keys remembered per tenant at most, by default.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// A well-formed idempotency key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks a key a client sent.
    pub fn parse(key: &str) -> Result<IdempotencyKey, FeedError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FeedError::bad_request(
                "an idempotency key is 1 to 255 visible ASCII characters (no spaces or control characters)",
            ));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A keyed write as the store sees it: who wrote, with which key, what.
#[derive(Debug, Clone, Copy)]
pub struct Keyed<'a> {
    /// The user (keys are per tenant and user).
    pub user: &'a str,
    /// The key.
    pub key: &'a IdempotencyKey,
    /// SHA-256 of the message: the same key with another message is refused.
    pub message: [u8; 32],
}

impl Keyed<'_> {
    /// What the key is remembered under in its tenant: SHA-256 of the user
    /// and the key (fixed size, whatever their length).
    pub fn slot(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.user.as_bytes());
        h.update([0]);
        h.update(self.key.0.as_bytes());
        h.finalize().into()
    }
}

/// SHA-256 of a message.
pub fn message_digest(message: &str) -> [u8; 32] {
    Sha256::digest(message.as_bytes()).into()
}

/// How keys are remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// How long.
    pub window: Duration,
    /// How many per tenant at most.
    pub max_keys: usize,
}

impl Default for KeyLimits {
    fn default() -> Self {
        KeyLimits { window: DEFAULT_WINDOW, max_keys: DEFAULT_MAX_KEYS }
    }
}

/// The slots (tenant, slot of user and key) of the keyed writes in progress.
type Slots = Arc<Mutex<HashSet<(Arc<str>, [u8; 32]), foldhash::fast::RandomState>>>;

/// The keyed writes being carried out on this instance, so a duplicate that
/// arrives meanwhile is told to come back (`conflict`) rather than racing.
#[derive(Debug, Default)]
pub struct InFlight {
    slots: Slots,
}

/// A keyed write in progress; its slot is free again when this is dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    slots: Slots,
    slot: (Arc<str>, [u8; 32]),
}

impl InFlight {
    /// Marks `slot` of `tenant` in progress, or says it already is.
    pub fn begin(&self, tenant: &str, slot: [u8; 32]) -> Result<InFlightGuard, FeedError> {
        let slot = (Arc::<str>::from(tenant), slot);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if !slots.insert(slot.clone()) {
            return Err(FeedError::Conflict { retry_after: 1 });
        }
        Ok(InFlightGuard { slots: self.slots.clone(), slot })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255_bytes() {
        for good in ["a", "order-42", "7d3c1c3e-2b0e-4b8f-9a51-6f1f1c2d9e10", &"k".repeat(255), "!~{}"] {
            assert_eq!(IdempotencyKey::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", " ", "a b", "tab\there", "é", &"k".repeat(256), "line\n"] {
            assert_eq!(IdempotencyKey::parse(bad).unwrap_err().code(), "bad_request", "{bad:?}");
        }
    }

    #[test]
    fn slots_are_per_user_and_key() {
        let (k1, k2) = (IdempotencyKey::parse("k1").unwrap(), IdempotencyKey::parse("k2").unwrap());
        let slot = |user, key| Keyed { user, key, message: [0; 32] }.slot();
        assert_eq!(slot("alice", &k1), slot("alice", &k1));
        assert_ne!(slot("alice", &k1), slot("bob", &k1));
        assert_ne!(slot("alice", &k1), slot("alice", &k2));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        let (c, bc) = (IdempotencyKey::parse("c").unwrap(), IdempotencyKey::parse("bc").unwrap());
        assert_ne!(slot("ab", &c), slot("a", &bc));
    }

    #[test]
    fn a_slot_in_flight_is_a_conflict_until_done() {
        let inflight = InFlight::default();
        let first = inflight.begin("t", [1; 32]).unwrap();
        assert_eq!(inflight.begin("t", [1; 32]).unwrap_err().code(), "conflict");
        assert!(inflight.begin("u", [1; 32]).is_ok(), "another tenant");
        drop(first);
        assert!(inflight.begin("t", [1; 32]).is_ok());
    }
}
