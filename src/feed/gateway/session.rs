//! What the gateway keeps on each socket: who it is (fixed for its life),
//! its current credential and role (a refresh or a reload changes them),
//! how it started, and — for a JWT — when its credential warns and expires.
//!
//! Expiry costs no task and no scan: the deadlines are the socket's entries
//! in its Engine.IO session's timer ([`crate::sio::NamespaceHandler::poll_timeout`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use uuid::Uuid;

use crate::feed::auth::{Credential, JwtGrant, Principal, Role};
use crate::feed::recovery::{Epoch, Kept, KeptJwt};
use crate::feed::tenant_room;
use crate::sio::Event;

/// How the socket starts, decided when its CONNECT was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Start {
    /// A snapshot of the latest events.
    Snapshot,
    /// Everything after this event id, as `replay_result`.
    Resume(Uuid),
    /// Connection state recovery: every event after this `seq`.
    Recover { after_seq: u64 },
}

/// A socket's requests, carried out one after another: one client's events
/// get `seq`s in the order it sent them, and a client cannot have more than
/// [`super::MAX_QUEUED_REQUESTS`] waiting.
#[derive(Default)]
pub(super) struct Requests {
    pub(super) queue: VecDeque<Event>,
    /// A task is carrying them out.
    pub(super) running: bool,
}

/// When a JWT socket's credential warns and expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expiry {
    /// The token's `exp` (Unix seconds), as `token_expiring` tells it.
    pub(super) exp: i64,
    /// When `token_expiring` is sent; `None` once it was.
    pub(super) warn_at: Option<Instant>,
    /// When the socket's session is closed (`exp` plus the leeway).
    pub(super) ends_at: Instant,
}

impl Expiry {
    /// The deadlines of `grant`'s credential: the warning at
    /// `exp − min(60 s, half its lifetime)` (lifetime from `iat`, or from
    /// its verification), the end at `exp + leeway`; measured from `now`.
    pub(super) fn of(grant: &JwtGrant, leeway: Duration, now: Instant) -> Expiry {
        let now_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let from_now = |unix: f64| Duration::from_secs_f64((unix - now_unix).max(0.0));
        let lifetime = (grant.exp - grant.iat.unwrap_or(grant.verified_at)).max(0) as f64;
        let warn_before = (lifetime / 2.0).min(60.0);
        Expiry {
            exp: grant.exp,
            warn_at: Some(now + from_now(grant.exp as f64 - warn_before)),
            ends_at: now + from_now(grant.exp as f64) + leeway,
        }
    }

    /// The next deadline.
    pub(super) fn next(&self) -> Instant {
        self.warn_at.map_or(self.ends_at, |w| w.min(self.ends_at))
    }
}

/// What the gateway keeps on each socket.
pub struct Session {
    /// Who the socket is, for its whole life (its role at connect).
    pub(super) principal: Principal,
    /// Its role now ([`Role`] as `u8`): a refresh or a reload may lower it.
    role: AtomicU8,
    /// The credential it holds now (a refresh replaces a JWT).
    credential: Mutex<Credential>,
    /// What its recovery is bound to (the token, or the JWT's user).
    pub(super) binding: [u8; 32],
    /// A JWT's deadlines.
    expiry: Mutex<Option<Expiry>>,
    /// How the socket starts, decided when its CONNECT was accepted.
    pub(super) start: Start,
    /// The last `seq` the socket was sent in full at connect (snapshot,
    /// replay or recovery point), for a later recovery without an offset.
    pub(super) base_seq: AtomicU64,
    /// The epoch of the history `base_seq` is of (set at connect).
    pub(super) base_epoch: OnceLock<Epoch>,
    /// Requests waiting behind one the store answers later.
    requests: Mutex<Requests>,
}

/// What a socket keeps of its JWT: everything but the list of tenants (its
/// tenant is fixed and was checked; a refresh is checked against the new
/// token's list). A token may name many tenants; sockets are many.
fn kept_grant(grant: JwtGrant) -> JwtGrant {
    JwtGrant { tenants: Vec::new(), ..grant }
}

fn role_bits(role: Role) -> u8 {
    match role {
        Role::Admin => 1,
        Role::Reader => 0,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    pub(super) fn new(principal: Principal, credential: Credential, start: Start, leeway: Duration) -> Session {
        let credential = match credential {
            Credential::Jwt(grant) => Credential::Jwt(Box::new(kept_grant(*grant))),
            token => token,
        };
        let expiry = credential.jwt().map(|grant| Expiry::of(grant, leeway, crate::engine::now()));
        Session {
            role: AtomicU8::new(role_bits(principal.role)),
            binding: credential.binding(),
            principal,
            credential: Mutex::new(credential),
            expiry: Mutex::new(expiry),
            start,
            base_seq: AtomicU64::new(0),
            base_epoch: OnceLock::new(),
            requests: Mutex::new(Requests::default()),
        }
    }

    /// Who the socket is, with its role now.
    pub fn principal(&self) -> Principal {
        Principal { role: self.role(), ..self.principal.clone() }
    }

    /// Its role now.
    pub fn role(&self) -> Role {
        if self.role.load(Ordering::Acquire) == 1 { Role::Admin } else { Role::Reader }
    }

    pub(super) fn set_role(&self, role: Role) {
        self.role.store(role_bits(role), Ordering::Release);
    }

    /// The credential it holds now.
    pub fn credential(&self) -> Credential {
        lock(&self.credential).clone()
    }

    /// Replaces a JWT socket's credential with a refreshed one: its role and
    /// deadlines follow the new token.
    pub(super) fn refresh(&self, grant: JwtGrant, leeway: Duration) -> Expiry {
        let expiry = Expiry::of(&grant, leeway, crate::engine::now());
        self.set_role(grant.role);
        *lock(&self.credential) = Credential::Jwt(Box::new(kept_grant(grant)));
        *lock(&self.expiry) = Some(expiry);
        expiry
    }

    /// The next deadline of a JWT socket.
    pub(super) fn deadline(&self) -> Option<Instant> {
        lock(&self.expiry).as_ref().map(Expiry::next)
    }

    /// What is due at `now`: whether to warn (with the `exp` to tell), and
    /// whether the credential expired. Each is given once: a warning clears
    /// itself, an end clears the deadlines.
    pub(super) fn due(&self, now: Instant) -> (Option<i64>, bool) {
        let mut expiry = lock(&self.expiry);
        let Some(e) = expiry.as_mut() else { return (None, false) };
        let warn = match e.warn_at {
            Some(at) if at <= now => {
                e.warn_at = None;
                Some(e.exp)
            }
            _ => None,
        };
        let ended = e.ends_at <= now;
        if ended {
            *expiry = None;
        }
        (warn, ended)
    }

    pub(super) fn requests(&self) -> MutexGuard<'_, Requests> {
        lock(&self.requests)
    }

    /// What is kept of the socket `sid` for its recovery.
    pub(super) fn kept(&self, sid: &str) -> Kept {
        let who = &self.principal;
        let jwt = self.credential().jwt().map(|g| KeptJwt { iat: g.iat, jti: g.jti.clone() });
        Kept {
            sid: sid.to_owned(),
            tenant: who.tenant.clone(),
            user: who.user.clone(),
            token_digest: self.binding,
            rooms: vec![tenant_room(&who.tenant)],
            base_seq: self.base_seq.load(Ordering::Relaxed),
            // Not connected yet: an epoch no history has.
            epoch: self.base_epoch.get().copied().unwrap_or_else(Epoch::random),
            jwt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::auth::KeyRef;

    fn grant(iat: Option<i64>, exp: i64) -> JwtGrant {
        JwtGrant {
            sub: "u".into(),
            tenants: vec!["t".into()],
            role: Role::Admin,
            exp,
            iat,
            jti: None,
            key: KeyRef::Secret,
            verified_at: iat.unwrap_or(exp - 100),
        }
    }

    fn unix() -> i64 {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn a_long_token_warns_a_minute_before_and_a_short_one_halfway() {
        let now = Instant::now();
        let t = unix();
        let long = Expiry::of(&grant(Some(t), t + 3600), Duration::from_secs(30), now);
        let warn = long.warn_at.unwrap() - now;
        assert!(warn > Duration::from_secs(3530) && warn <= Duration::from_secs(3541), "{warn:?}");
        let end = long.ends_at - now;
        assert!(end > Duration::from_secs(3620) && end <= Duration::from_secs(3631), "exp + leeway: {end:?}");
        let short = Expiry::of(&grant(Some(t), t + 20), Duration::ZERO, now);
        let warn = short.warn_at.unwrap() - now;
        assert!(warn > Duration::from_secs(8) && warn <= Duration::from_secs(11), "halfway: {warn:?}");
        let past = Expiry::of(&grant(Some(t - 100), t - 10), Duration::ZERO, now);
        assert_eq!((past.warn_at, past.ends_at), (Some(now), now), "already due: at once");
        assert_eq!(long.next(), long.warn_at.unwrap());
    }

    #[test]
    fn a_warning_is_given_once_then_the_end() {
        let t = unix();
        let principal = Principal { user: "u".into(), tenant: "t".into(), role: Role::Admin };
        let credential = Credential::Jwt(Box::new(grant(Some(t - 100), t - 1)));
        let session = Session::new(principal, credential, Start::Snapshot, Duration::ZERO);
        let now = Instant::now() + Duration::from_millis(10);
        assert_eq!(session.due(now), (Some(t - 1), true));
        assert_eq!(session.due(now), (None, false), "warned and ended once");
        assert_eq!(session.deadline(), None);
        let refreshed = session.refresh(grant(Some(t), t + 600), Duration::ZERO);
        assert!(refreshed.warn_at.is_some(), "a refresh arms the warning again");
        assert_eq!(session.due(now), (None, false));
        assert_eq!(session.role(), Role::Admin);
    }
}
