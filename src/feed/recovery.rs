//! Connection state recovery's rules: what is kept of a socket that left,
//! who may take it back, and from where a recovery resumes.
//!
//! On the wire (what the official `socket.io-client` 4.6+ does): the CONNECT
//! answer carries a `pid`; every `event_created` carries an offset as its last
//! argument (opaque to the client: see [`Offset`]); on reconnect the client's
//! CONNECT payload carries `pid` and the last `offset` it saw.
//!
//! Every tenant history has an [`Epoch`], which changes whenever the history
//! starts anew (a memory-mode process start; in Redis mode a tenant whose
//! stored history is gone, or went backwards). `seq` is gapless within one
//! epoch; an offset or a kept session of another epoch never resumes. An
//! offset also names a fingerprint of its event's id, so even a history that
//! went backwards unnoticed and grew again past the offset is not resumed
//! into.
//!
//! A kept session is bound to the credentials that opened it (tenant, user and
//! the token's digest): `pid` + `offset` presented with anything else never
//! restores it. Sessions are kept only for abnormal disconnects (transport
//! close or error, ping timeout, slow consumer, shutdown), and only for the
//! recovery window; where they are kept is the store's business.

use std::fmt;

use serde_json::Value;
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub use super::epoch::Epoch;
use super::paging::TenantView;

/// The first 32 bits of an event id: what an offset says of its event.
pub fn fingerprint(id: &Uuid) -> u32 {
    let b = id.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A recovery offset: `{epoch}:{seq}:{fingerprint}` — the epoch of the
/// history, the `seq` of the last event the client saw in it, and the first
/// 8 hex digits of that event's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// The history's epoch.
    pub epoch: Epoch,
    /// The event's `seq`.
    pub seq: u64,
    /// The event's id's fingerprint.
    pub fingerprint: u32,
}

impl Offset {
    /// The offset of the event `seq` with this id, in `epoch`.
    pub fn of(epoch: Epoch, seq: u64, id: &Uuid) -> Offset {
        Offset { epoch, seq, fingerprint: fingerprint(id) }
    }

    /// Reads an offset a client sent back.
    pub fn parse(text: &str) -> Option<Offset> {
        let mut parts = text.split(':');
        let epoch = Epoch::parse(parts.next()?)?;
        let seq = parts.next()?;
        if seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seq = seq.parse().ok()?;
        let fp = parts.next()?;
        if fp.len() != 8 || parts.next().is_some() {
            return None;
        }
        let fingerprint = u32::from_str_radix(fp, 16).ok()?;
        Some(Offset { epoch, seq, fingerprint })
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{:08x}", self.epoch, self.seq, self.fingerprint)
    }
}

/// What is kept of a disconnected socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The socket id to give back.
    pub sid: String,
    /// Tenant of the credentials that opened it.
    pub tenant: String,
    /// User of those credentials.
    pub user: String,
    /// What the session is bound to: the SHA-256 of a tokens-file token,
    /// or of a JWT's user ([`crate::feed::Credential::binding`]).
    pub token_digest: [u8; 32],
    /// For a JWT socket: its token's `iat` and `jti` (a revocation may drop
    /// the session; a fresh token of the same user may take it back).
    pub jwt: Option<KeptJwt>,
    /// The rooms the socket was in.
    pub rooms: Vec<String>,
    /// The last `seq` the socket is known to have been sent in full (its
    /// snapshot or replay point); used when the client has no offset yet.
    pub base_seq: u64,
    /// The epoch of the history `base_seq` is of.
    pub epoch: Epoch,
}

/// What a kept JWT session remembers of its token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptJwt {
    /// The token's `iat`.
    pub iat: Option<i64>,
    /// The token's `jti`.
    pub jti: Option<String>,
}

/// The credentials a connecting socket presents.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The user.
    pub user: &'a str,
    /// What its credential binds a session to ([`Kept::token_digest`]).
    pub token_digest: &'a [u8; 32],
}

impl Kept {
    /// Whether `owner` opened this session (the digest compared in constant time).
    pub fn is_owned_by(&self, owner: &Owner<'_>) -> bool {
        self.tenant == owner.tenant
            && self.user == owner.user
            && bool::from(self.token_digest[..].ct_eq(&owner.token_digest[..]))
    }
}

/// Where a recovery resumes: after the client's `offset`, or after the kept
/// session's base when the client saw no event yet — in the history `log`
/// has now. `None` when that cannot be served: a malformed offset, another
/// epoch, an event the offset names that is not the one at its `seq` here,
/// events no longer retained, or more missed events than `room_for` (what a
/// socket's queue takes at once).
pub fn recovery_point(log: &impl TenantView, kept: &Kept, offset: Option<&Value>, room_for: usize) -> Option<u64> {
    let after_seq = match offset {
        None | Some(Value::Null) => (kept.epoch == log.epoch()).then_some(kept.base_seq)?,
        Some(Value::String(s)) => {
            let offset = Offset::parse(s)?;
            if offset.epoch != log.epoch() {
                return None;
            }
            // The event the client saw must be this history's event at that
            // `seq` (when it is still retained to tell).
            if let Some(id) = log.id_at(offset.seq)
                && fingerprint(&id) != offset.fingerprint
            {
                return None;
            }
            offset.seq
        }
        Some(_) => return None,
    };
    let missed = log.last_seq().checked_sub(after_seq)?;
    let served = log.after_seq(after_seq, 0).is_some();
    (served && missed <= room_for as u64).then_some(after_seq)
}

/// Whether a kept session proves that `log`'s history went backwards: it
/// was sent events of this very epoch that the history no longer reaches
/// (a store rolled back to an older state). The epoch must then change.
pub fn went_back(log: &impl TenantView, kept: &Kept) -> bool {
    kept.epoch == log.epoch() && kept.base_seq > log.last_seq()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::paging::Page;
    use serde_json::json;
    use uuid::Uuid;

    const E: Epoch = Epoch(0xe1a2b3c4);

    /// A log holding `first..=last` in epoch [`E`]; the event `seq` has the
    /// id whose first bytes are `seq`.
    struct Log {
        first: u64,
        last: u64,
    }

    fn id(seq: u64) -> Uuid {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&(seq as u32).to_be_bytes());
        Uuid::from_bytes(b)
    }

    impl TenantView for Log {
        fn latest(&self, _limit: usize) -> Page {
            Page::default()
        }
        fn after(&self, _since: &Uuid, _limit: usize) -> Page {
            Page::default()
        }
        fn after_seq(&self, seq: u64, _limit: usize) -> Option<Page> {
            (seq + 1 >= self.first).then(Page::default)
        }
        fn last_seq(&self) -> u64 {
            self.last
        }
        fn first_seq(&self) -> u64 {
            self.first
        }
        fn seq_of(&self, _id: &Uuid) -> Option<u64> {
            None
        }
        fn id_at(&self, seq: u64) -> Option<Uuid> {
            (self.first..=self.last).contains(&seq).then(|| id(seq))
        }
        fn epoch(&self) -> Epoch {
            E
        }
    }

    fn kept(base_seq: u64) -> Kept {
        Kept {
            sid: "s".into(),
            tenant: "t".into(),
            user: "u".into(),
            token_digest: [7; 32],
            jwt: None,
            rooms: vec![],
            base_seq,
            epoch: E,
        }
    }

    fn offset(seq: u64) -> Value {
        json!(Offset::of(E, seq, &id(seq)).to_string())
    }

    #[test]
    fn only_the_same_credentials_own_a_session() {
        let k = kept(0);
        let owner = |tenant, user, digest| Owner { tenant, user, token_digest: digest };
        assert!(k.is_owned_by(&owner("t", "u", &[7; 32])));
        assert!(!k.is_owned_by(&owner("x", "u", &[7; 32])));
        assert!(!k.is_owned_by(&owner("t", "x", &[7; 32])));
        assert!(!k.is_owned_by(&owner("t", "u", &[8; 32])));
    }

    #[test]
    fn offsets_read_back_what_they_write() {
        let o = Offset::of(E, 42, &id(42));
        assert_eq!(o.to_string(), "e1a2b3c4:42:0000002a");
        assert_eq!(Offset::parse(&o.to_string()), Some(o));
        for bad in
            ["42", "e1a2b3c4:42", "e1a2b3c4:42:2a", "00000000:1:00000000", "e1a2b3c4:-1:0000002a", "e1a2b3c4::0000002a"]
        {
            assert_eq!(Offset::parse(bad), None, "{bad}");
        }
        assert_eq!(Offset::parse("e1a2b3c4:42:0000002a:x"), None);
        let e = Epoch::random();
        assert_eq!(Epoch::parse(&e.to_string()), Some(e));
        assert_ne!(Epoch::new_other_than(Some(e)), e);
    }

    #[test]
    fn recovery_resumes_after_the_offset_or_the_base() {
        let log = Log { first: 5, last: 20 };
        assert_eq!(recovery_point(&log, &kept(10), None, 100), Some(10), "no offset: the base");
        assert_eq!(recovery_point(&log, &kept(10), Some(&offset(12)), 100), Some(12));
        assert_eq!(recovery_point(&log, &kept(10), Some(&offset(4)), 100), Some(4), "5 onwards retained");
        assert_eq!(recovery_point(&log, &kept(10), Some(&offset(3)), 100), None, "4 evicted");
        assert_eq!(recovery_point(&log, &kept(10), Some(&offset(21)), 100), None, "beyond the newest");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!(12)), 100), None, "not a string");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("12")), 100), None, "no epoch");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("x")), 100), None);
        assert_eq!(recovery_point(&log, &kept(10), Some(&offset(12)), 7), None, "8 missed, room for 7");
        assert_eq!(recovery_point(&log, &kept(10), Some(&offset(13)), 7), Some(13));
    }

    #[test]
    fn another_history_is_never_resumed_into() {
        let log = Log { first: 5, last: 20 };
        let other = Epoch(0x12345678);
        let from_other = json!(Offset::of(other, 12, &id(12)).to_string());
        assert_eq!(recovery_point(&log, &kept(10), Some(&from_other), 100), None, "another epoch");
        assert_eq!(
            recovery_point(&log, &Kept { epoch: other, ..kept(10) }, None, 100),
            None,
            "a base of another epoch"
        );
        // The same epoch and seq, another event: the history went back and grew again.
        let stranger = json!(Offset::of(E, 12, &id(99)).to_string());
        assert_eq!(recovery_point(&log, &kept(10), Some(&stranger), 100), None);
        assert!(went_back(&log, &kept(21)), "a session was sent seq 21 of this epoch: it went back");
        assert!(!went_back(&log, &kept(20)));
        assert!(!went_back(&log, &Kept { epoch: other, ..kept(21) }));
    }
}
