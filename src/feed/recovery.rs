//! Connection state recovery's rules: what is kept of a socket that left,
//! who may take it back, and from where a recovery resumes.
//!
//! On the wire (what the official `socket.io-client` 4.6+ does): the CONNECT
//! answer carries a `pid`; every `event_created` carries an offset as its last
//! argument (here: the event's `seq`, as a string); on reconnect the client's
//! CONNECT payload carries `pid` and the last `offset` it saw.
//!
//! A kept session is bound to the credentials that opened it (tenant, user and
//! the token's digest): `pid` + `offset` presented with anything else never
//! restores it. Sessions are kept only for abnormal disconnects (transport
//! close or error, ping timeout, slow consumer, shutdown), and only for the
//! recovery window; where they are kept is the store's business.

use serde_json::Value;
use subtle::ConstantTimeEq;

use super::paging::TenantView;

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

/// Where a recovery resumes: after the client's `offset` (a `seq`), or after
/// the kept session's base when the client saw no event yet. `None` when that
/// cannot be served: a malformed offset, events no longer retained, or more
/// missed events than `room_for` (what a socket's queue takes at once).
pub fn recovery_point(log: &impl TenantView, kept: &Kept, offset: Option<&Value>, room_for: usize) -> Option<u64> {
    let after_seq = match offset {
        None | Some(Value::Null) => kept.base_seq,
        Some(Value::String(s)) => s.parse().ok()?,
        Some(_) => return None,
    };
    let missed = log.last_seq().checked_sub(after_seq)?;
    let served = log.after_seq(after_seq, 0).is_some();
    (served && missed <= room_for as u64).then_some(after_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::paging::Page;
    use serde_json::json;
    use uuid::Uuid;

    /// A log holding `first..=last`.
    struct Log {
        first: u64,
        last: u64,
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
        }
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
    fn recovery_resumes_after_the_offset_or_the_base() {
        let log = Log { first: 5, last: 20 };
        assert_eq!(recovery_point(&log, &kept(10), None, 100), Some(10), "no offset: the base");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("12")), 100), Some(12));
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("4")), 100), Some(4), "5 onwards retained");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("3")), 100), None, "4 evicted");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("21")), 100), None, "beyond the newest");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!(12)), 100), None, "not a string");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("x")), 100), None);
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("12")), 7), None, "8 missed, room for 7");
        assert_eq!(recovery_point(&log, &kept(10), Some(&json!("13")), 7), Some(13));
    }
}
