//! The event feed: what the contract promises, on top of a store (the
//! [`store`] seam), the socket layer and the HTTP server.
//!
//! - [`event`]: the event model, message validation, JSON encoded once.
//! - [`paging`]: the paging rules (`sinceId`, `limit`) of REST and sockets.
//! - [`store`]: the store seam — what the feed needs from an event store.
//! - [`auth`]: who may connect — the tokens file, JWTs (secret or JWKS),
//!   revocations — and what a reload changes for live connections.
//! - [`error`]: [`FeedError`] and its one mapping to HTTP and socket answers.
//! - [`limits`]: write rate limits per user and per tenant.
//! - [`idempotency`]: idempotency keys of writes (the store remembers them).
//! - [`recovery`]: connection state recovery's rules.
//! - [`delivery`]: new events to the tenant's room, encoded once.
//! - [`rest`]: the hand-written REST dispatcher: its route table, and the
//!   OpenAPI document of those routes (`/api/events`, health, `/api/openapi.json`).
//! - [`stream`]: `GET /api/events/stream`, Server-Sent Events.
//! - [`gateway`]: the Socket.IO namespace (`/events` by default).
//!
//! [`Feed`] holds the shared pieces over a store `S`. Tenant isolation: every
//! read and write goes through a [`Principal`] whose tenant was authorized,
//! and deliveries go to the room `tenant:{id}` only.

pub mod auth;
pub mod delivery;
pub mod epoch;
pub mod error;
pub mod event;
pub mod gateway;
pub mod idempotency;
pub mod limits;
pub mod paging;
pub mod recovery;
pub mod rest;
pub mod store;
pub mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use auth::{AuthFailure, Authenticated, Credential, Credentials, Principal, Role, Tokens};
pub use delivery::SocketDelivery;
pub use error::FeedError;
pub use event::{NewEvent, StoredEvent};
pub use gateway::Gateway;
pub use idempotency::IdempotencyKey;
pub use paging::{DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest, TenantView};
pub use store::{Answer, Appended, Delivery, Later, Store};

use crate::config::Rate;
use crate::http::Cors;
use crate::metrics::Metrics;
use idempotency::Keyed;

/// Events in the `snapshot` sent on connect.
pub const SNAPSHOT_LIMIT: usize = 100;

/// The feed's settings.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Events kept per tenant.
    pub buffer_size: usize,
    /// The Socket.IO namespace.
    pub namespace: String,
    /// Largest REST body.
    pub max_body: usize,
    /// Allowed browser origins.
    pub cors: Cors,
    /// Writes per user (`None`: off).
    pub rate_limit: Option<Rate>,
    /// Writes per tenant (`None`: off).
    pub tenant_rate_limit: Option<Rate>,
    /// Sockets one tenant may have connected at once.
    pub max_tenant_connections: usize,
    /// Time a REST body may take to arrive.
    pub body_timeout: Duration,
    /// Connection state recovery window (zero: off).
    pub recovery_window: Duration,
    /// Sessions kept for recovery at most (in memory).
    pub max_kept_sessions: usize,
    /// Missed events a recovery replays at most (more: a fresh session and a
    /// snapshot); capped at half the engine's per-session queue.
    pub max_recovered_events: usize,
    /// Live events a stream may fall behind by (the engine's per-session
    /// queue bound); one more ends it as a slow consumer.
    pub stream_queue: usize,
    /// How often an idle stream gets a keep-alive comment.
    pub stream_keep_alive: Duration,
    /// How long and how many idempotency keys are remembered.
    pub idempotency: idempotency::KeyLimits,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            buffer_size: 500,
            namespace: "/events".into(),
            max_body: 65536,
            cors: Cors::default(),
            rate_limit: None,
            tenant_rate_limit: None,
            max_tenant_connections: 10_000,
            body_timeout: Duration::from_secs(10),
            recovery_window: Duration::ZERO,
            max_kept_sessions: 100_000,
            max_recovered_events: 512,
            stream_queue: 1024,
            stream_keep_alive: Duration::from_secs(15),
            idempotency: idempotency::KeyLimits::default(),
        }
    }
}

impl FeedConfig {
    /// Whether connection state recovery is on.
    pub fn recovery(&self) -> bool {
        !self.recovery_window.is_zero()
    }
}

/// The room of a tenant.
pub fn tenant_room(tenant: &str) -> String {
    // Concatenated, not `format!`ted: this runs several times per connect.
    let mut room = String::with_capacity(TENANT_ROOM_PREFIX.len() + tenant.len());
    room.push_str(TENANT_ROOM_PREFIX);
    room.push_str(tenant);
    room
}

/// The prefix of every tenant's room: only the feed puts sockets in them.
pub const TENANT_ROOM_PREFIX: &str = "tenant:";

/// A store's later answer to a write, counted; `guard` (a key in flight)
/// is released once it came.
async fn counted_later<S: Store>(
    feed: Arc<Feed<S>>,
    answer: impl Later<Appended>,
    guard: Option<idempotency::InFlightGuard>,
) -> Result<Appended, FeedError> {
    let result = answer.await;
    drop(guard);
    feed.counted(result)
}

/// The feed's shared state over the store `S`.
pub struct Feed<S: Store> {
    /// The event store.
    pub store: S,
    /// Who may connect: the tokens file, JWT keys and rules, revocations.
    pub credentials: Arc<Credentials>,
    /// Settings.
    pub config: FeedConfig,
    /// Write rate limits.
    pub limits: limits::RateLimits,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server begins to shut down (`/readyz` answers 503).
    pub shutdown: CancellationToken,
    /// Where new events go (the namespace is attached once it exists).
    delivery: Arc<SocketDelivery<Gateway<S>>>,
    /// Keyed writes being carried out here.
    inflight: idempotency::InFlight,
}

impl<S: Store> Feed<S> {
    /// The feed over `store`, with these credentials and settings.
    pub fn new(store: S, credentials: Arc<Credentials>, config: FeedConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Feed {
            store,
            credentials,
            limits: limits::RateLimits::new(config.rate_limit, config.tenant_rate_limit),
            delivery: Arc::new(SocketDelivery::new(metrics.clone(), config.recovery())),
            config,
            metrics,
            shutdown: CancellationToken::new(),
            inflight: idempotency::InFlight::default(),
        })
    }

    /// Where the store's events go (a shared store delivers what it receives here).
    pub fn delivery(&self) -> &Arc<SocketDelivery<Gateway<S>>> {
        &self.delivery
    }

    /// Authenticates a caller for a tenant: at once, or after a bounded
    /// JWKS refetch (an unknown `kid`).
    pub fn authenticate(
        &self,
        tenant: Option<&str>,
        token: Option<&str>,
    ) -> Answer<
        Result<Authenticated, AuthFailure>,
        impl Future<Output = Result<Authenticated, AuthFailure>> + Send + use<S>,
    > {
        self.credentials.authenticate(tenant, token)
    }

    /// Creates an event: checks the role, the message and the rate limits,
    /// then stores and delivers it. A refused write creates nothing. When the
    /// store answers later (Redis), its deadline bounds the wait; a write
    /// answered `unavailable` may exist or not — unless it had a `key`:
    ///
    /// With an idempotency `key` the write happens once. A key remembered for
    /// this tenant and user answers the event it made (`replayed`; not
    /// counted against the rate limits, nothing delivered again); another
    /// message with it is `idempotency_key_reused`; the same key while its
    /// first write is still being carried out here is `conflict`.
    pub fn post(
        self: &Arc<Self>,
        who: &Principal,
        message: &str,
        key: Option<IdempotencyKey>,
    ) -> Answer<Result<Appended, FeedError>, impl Later<Appended> + use<S>> {
        use futures_util::future::Either;
        if let Err(e) = who.require_writer().and_then(|()| event::validate_message(message)) {
            return Answer::Now(Err(e));
        }
        let Some(key) = key else {
            if let Err(e) = self.rate_limit(who) {
                return Answer::Now(Err(e));
            }
            let new = NewEvent::new(message.to_owned(), who.user.clone());
            let feed = self.clone();
            return match self.store.append(&who.tenant, new, None, &self.delivery) {
                Answer::Now(r) => Answer::Now(self.counted(r)),
                Answer::Later(f) => Answer::Later(Either::Left(counted_later(feed, f, None))),
            };
        };
        let keyed = Keyed { user: &who.user, key: &key, message: idempotency::message_digest(message) };
        let guard = match self.inflight.begin(&who.tenant, keyed.slot()) {
            Ok(guard) => guard,
            Err(e) => return Answer::Now(Err(e)),
        };
        match self.store.remembered(&who.tenant, keyed) {
            Answer::Now(Err(e)) => Answer::Now(Err(e)),
            Answer::Now(Ok(Some(event))) => {
                Answer::Now(self.counted(Ok(Appended { event, replayed: true, forgotten: 0 })))
            }
            Answer::Now(Ok(None)) => {
                if let Err(e) = self.rate_limit(who) {
                    return Answer::Now(Err(e));
                }
                let new = NewEvent::new(message.to_owned(), who.user.clone());
                match self.store.append(&who.tenant, new, Some(keyed), &self.delivery) {
                    Answer::Now(r) => Answer::Now(self.counted(r)),
                    // The key stays in flight here until the store answered.
                    Answer::Later(f) => Answer::Later(Either::Left(counted_later(self.clone(), f, Some(guard)))),
                }
            }
            Answer::Later(found) => {
                let (feed, who, message) = (self.clone(), who.clone(), message.to_owned());
                Answer::Later(Either::Right(async move {
                    let _guard = guard;
                    if let Some(event) = found.await? {
                        return feed.counted(Ok(Appended { event, replayed: true, forgotten: 0 }));
                    }
                    feed.rate_limit(&who)?;
                    let keyed = Keyed { user: &who.user, key: &key, message: idempotency::message_digest(&message) };
                    let new = NewEvent::new(message.clone(), who.user.clone());
                    let appended = feed.store.append(&who.tenant, new, Some(keyed), &feed.delivery).await;
                    feed.counted(appended)
                }))
            }
        }
    }

    /// Checks the write rate limits of `who` (counting a refusal).
    fn rate_limit(&self, who: &Principal) -> Result<(), FeedError> {
        self.limits.check(who).map_err(|(scope, e)| {
            self.metrics.rate_limited.get_or_create(&vec![("scope", scope.as_str())]).inc();
            e
        })
    }

    /// Counts what a write made.
    fn counted(&self, result: Result<Appended, FeedError>) -> Result<Appended, FeedError> {
        if let Ok(appended) = &result {
            if appended.replayed {
                self.metrics.idempotent_replays.inc();
            } else {
                self.metrics.events_created.inc();
            }
            if appended.forgotten > 0 {
                self.metrics.idempotency_evictions.inc_by(appended.forgotten);
            }
        }
        result
    }

    /// Whether the feed can take writes: not shutting down, and the store ready.
    pub fn is_ready(&self) -> Result<(), &'static str> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down");
        }
        self.store.readiness()
    }

    /// Counts a failed authentication on `channel` (`rest`, `socket` or `stream`).
    pub fn auth_failed(&self, channel: &'static str, failure: AuthFailure) {
        self.metrics.auth_failures.get_or_create(&vec![("channel", channel), ("reason", failure.reason())]).inc();
    }

    /// A page of the caller's tenant's events.
    pub fn read(
        &self,
        who: &Principal,
        request: PageRequest,
    ) -> Answer<Result<Page, FeedError>, impl Later<Page> + use<S>> {
        self.store.read(&who.tenant, request)
    }

    /// One event of the caller's tenant.
    pub fn get(
        &self,
        who: &Principal,
        id: &Uuid,
    ) -> Answer<Result<StoredEvent, FeedError>, impl Later<StoredEvent> + use<S>> {
        self.store
            .get(&who.tenant, id)
            .map(|found| found?.ok_or(FeedError::NotFound("no such event in this tenant's buffer")))
    }
}
