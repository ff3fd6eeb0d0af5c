//! The store seam: what the feed needs from an event store, whichever one
//! the wiring chose (in memory, or shared through Redis).
//!
//! A [`Store`] appends events (allocating each tenant's gapless `seq`, and
//! remembering a write's idempotency key with its event, atomically),
//! reads pages, gets one event by id, opens a tenant for a connecting socket
//! and gives its log at one consistent point ([`Store::with_tenant`]: the
//! socket joins its room and gets its first events there, with nothing
//! delivered in between), keeps and takes sessions for connection state
//! recovery, and says whether it can take writes.
//!
//! What a store makes reaches the feed through its [`Delivery`], called in
//! `seq` order per tenant under the tenant's lock.
//!
//! Operations that may wait (for Redis) answer with [`Answer`]: `Now` when
//! the result is already there (always, in memory), `Later` with a future
//! otherwise, so a caller that can answer at once never spawns or boxes
//! anything. The feed is generic over its store: every call is dispatched
//! statically.

use std::future::{Future, IntoFuture, Ready};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use uuid::Uuid;

use super::error::FeedError;
use super::event::{NewEvent, StoredEvent};
use super::idempotency::Keyed;
use super::paging::{Page, PageRequest, TenantView};
use super::recovery::{Epoch, Kept, Owner};

/// A result that is there now, or later.
#[derive(Debug)]
pub enum Answer<T, F> {
    /// The result.
    Now(T),
    /// The result, once this future resolves.
    Later(F),
}

impl<T> Answer<T, Ready<T>> {
    /// A result that is there now (fixes the type of the unused `Later`).
    pub fn now(value: T) -> Self {
        Answer::Now(value)
    }
}

impl<T, F: Future<Output = T>> Answer<T, F> {
    /// The result passed through `g`, now or later.
    pub fn map<U, G: FnOnce(T) -> U>(self, g: G) -> Answer<U, futures_util::future::Map<F, G>> {
        match self {
            Answer::Now(value) => Answer::Now(g(value)),
            Answer::Later(future) => Answer::Later(futures_util::FutureExt::map(future, g)),
        }
    }
}

impl<T, F: Future<Output = T>> IntoFuture for Answer<T, F> {
    type Output = T;
    type IntoFuture = Either<Ready<T>, F>;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Answer::Now(value) => Either::Left(std::future::ready(value)),
            Answer::Later(future) => Either::Right(future),
        }
    }
}

/// What a lookup by id finds.
pub type Found = Option<StoredEvent>;

/// What a write made.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The event.
    pub event: StoredEvent,
    /// It was made earlier, by a write with the same idempotency key:
    /// nothing was stored or delivered now.
    pub replayed: bool,
    /// Idempotency keys of the tenant forgotten to make room (or past their
    /// window) while remembering this one.
    pub forgotten: u64,
}

impl Appended {
    /// A new event.
    pub fn new(event: StoredEvent) -> Self {
        Appended { event, replayed: false, forgotten: 0 }
    }
}

/// A store operation's future: owned, sendable, bounded in time by the store.
pub trait Later<T>: Future<Output = Result<T, FeedError>> + Send + 'static {}

impl<T, F: Future<Output = Result<T, FeedError>> + Send + 'static> Later<T> for F {}

/// Where a store's events go: the feed's sockets.
pub trait Delivery: Send + Sync + 'static {
    /// Delivers a new event of the history `epoch` to every subscriber of
    /// its tenant. Called in `seq` order per tenant, under the tenant's
    /// lock: it must not block.
    fn deliver(&self, event: &StoredEvent, epoch: Epoch);

    /// The tenant's history here was replaced (a shared store lost or rolled
    /// back what this copy had): its subscribers must start over.
    fn reset(&self, tenant: &str);
}

impl<D: Delivery> Delivery for Arc<D> {
    fn deliver(&self, event: &StoredEvent, epoch: Epoch) {
        (**self).deliver(event, epoch)
    }

    fn reset(&self, tenant: &str) {
        (**self).reset(tenant)
    }
}

/// A subscriber (a socket, a stream) opening a tenant here.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The subscriber resumes after an event it may have seen on another
    /// instance a moment ago: the tenant's log here must have caught up with
    /// the store as of now.
    pub fresh: bool,
    /// The session it asks to recover (a socket's `pid`) and who asks.
    pub recover: Option<(&'a str, Owner<'a>)>,
}

/// An event store, as the feed uses it.
pub trait Store: Send + Sync + 'static {
    /// A tenant's log at one consistent point.
    type View: TenantView;

    /// Stores a new event of `tenant` with the next `seq`. Events delivered
    /// at once go to `delivery`, under the tenant's lock; a shared store
    /// delivers them from its subscription instead (to its own `Delivery`).
    ///
    /// With `keyed`, one step: when the key is remembered the event it made
    /// is answered (`replayed`, nothing stored or delivered; another message
    /// is [`FeedError::IdempotencyKeyReused`]), else the new event is stored
    /// and the key remembered with it.
    fn append<D: Delivery>(
        &self,
        tenant: &str,
        event: NewEvent,
        keyed: Option<Keyed<'_>>,
        delivery: &D,
    ) -> Answer<Result<Appended, FeedError>, impl Later<Appended> + use<Self, D>>;

    /// The event a write with this idempotency key made, if the key is
    /// remembered ([`FeedError::IdempotencyKeyReused`] for another message).
    fn remembered(
        &self,
        tenant: &str,
        keyed: Keyed<'_>,
    ) -> Answer<Result<Found, FeedError>, impl Later<Found> + use<Self>>;

    /// A page of `tenant`'s events.
    fn read(&self, tenant: &str, request: PageRequest)
    -> Answer<Result<Page, FeedError>, impl Later<Page> + use<Self>>;

    /// One event of `tenant`, if retained.
    fn get(&self, tenant: &str, id: &Uuid) -> Answer<Result<Found, FeedError>, impl Later<Found> + use<Self>>;

    /// Makes the tenant ready for a subscriber connecting here, and takes the
    /// session it asks to recover, if it was kept for these credentials.
    fn open(
        &self,
        opening: Opening<'_>,
    ) -> Answer<Result<Option<Kept>, FeedError>, impl Later<Option<Kept>> + use<Self>>;

    /// Runs `f` on the tenant's log under its lock: nothing is appended or
    /// delivered meanwhile.
    fn with_tenant<R>(&self, tenant: &str, f: impl FnOnce(&Self::View) -> R) -> R;

    /// A socket that can be recovered started (a shared store keeps its
    /// session, made by `kept`, from now on, so it can recover elsewhere even
    /// if this instance dies).
    fn session_opened(&self, pid: &str, kept: impl FnOnce() -> Kept);

    /// A socket that could be recovered left: its session (made by `kept`) is
    /// kept for the recovery window when `recoverable` (it left without
    /// meaning to), and forgotten otherwise.
    fn session_closed(&self, pid: &str, recoverable: bool, kept: impl FnOnce() -> Kept);

    /// Drops the kept sessions `still_held` says no (their credentials were
    /// revoked); returns how many. A store that cannot look at them all
    /// cheaply (Redis) drops none here: the feed checks a session again
    /// when it is taken back.
    fn forget_sessions(&self, still_held: impl Fn(&Kept) -> bool) -> usize;

    /// A kept session proved that the tenant's history went backwards
    /// within its epoch ([`super::recovery::went_back`]): a shared store
    /// starts a new epoch (its subscribers start over). The memory store's
    /// history cannot go back.
    fn history_went_back(&self, tenant: &str, epoch: Epoch);

    /// Whether the store can take writes (`Err` says why not).
    fn readiness(&self) -> Result<(), &'static str>;

    /// Drops what expired (kept sessions and idempotency keys past their
    /// window); how many idempotency keys were forgotten.
    fn sweep(&self) -> u64;

    /// Waits, at most `within`, for the writes this store still has queued
    /// (at shutdown); whether they all went through.
    fn finish(&self, within: Duration) -> impl Future<Output = bool> + Send;
}
