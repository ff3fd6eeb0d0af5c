//! The event feed: what the contract promises, on top of the store, the
//! socket layer and the HTTP server.
//!
//! - [`store`]: [`EventBus`], the sharded per-tenant ring buffers, and the
//!   [`EventDelivery`] seam to whatever delivers new events.
//! - [`event`]: the event model, message validation, JSON encoded once.
//! - [`auth`]: tokens (file or demo), constant-time checks, roles.
//! - [`error`]: [`FeedError`] and its one mapping to HTTP and socket answers.
//! - [`limits`]: write rate limits per user and per tenant.
//! - [`recovery`]: sessions kept for connection state recovery.
//! - [`rest`]: the hand-written REST dispatcher (`/api/events`, health).
//! - [`gateway`]: the Socket.IO namespace (`/events` by default).
//!
//! [`Feed`] holds the shared pieces; [`Feed::router`] wires everything into
//! a [`Router`](crate::server::Router). Tenant isolation: every read and
//! write goes through a [`Principal`] whose tenant was authorized, and
//! deliveries go to the room `tenant:{id}` only.

pub mod auth;
pub mod error;
pub mod event;
pub mod gateway;
pub mod limits;
pub mod recovery;
pub mod rest;
pub mod store;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventfeed_protocol::socket::encode_raw_event;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use auth::{Principal, Role, Tokens};
pub use error::FeedError;
pub use event::{NewEvent, StoredEvent};
pub use store::{EventBus, EventDelivery, Page};

use crate::cluster::Cluster;
use crate::config::Rate;
use crate::engine::{Engine, EngineConfig};
use crate::http::Cors;
use crate::metrics::Metrics;
use crate::server::Router;
use crate::sio::{BroadcastOp, Namespace, SioConfig, SocketIo};

/// Most events a read returns.
pub const MAX_LIMIT: usize = 1000;
/// Events a read returns when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;
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
    /// Sessions kept for recovery at most.
    pub max_kept_sessions: usize,
    /// Missed events a recovery replays at most (more: a fresh session and a
    /// snapshot); capped at half the engine's per-session queue.
    pub max_recovered_events: usize,
    /// Redis mode: the store, broadcast and kept sessions shared by several
    /// instances (`None`: everything in this process).
    pub cluster: Option<Arc<Cluster>>,
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
            cluster: None,
        }
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

const TENANT_ROOM_PREFIX: &str = "tenant:";

/// The feed's shared state.
pub struct Feed {
    /// The event store.
    pub bus: EventBus,
    /// Known tokens.
    pub tokens: Tokens,
    /// Settings.
    pub config: FeedConfig,
    /// Write rate limits.
    pub limits: limits::RateLimits,
    /// Sessions kept for connection state recovery.
    pub recovery: recovery::Recovery,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server begins to shut down (`/readyz` answers 503).
    pub shutdown: CancellationToken,
}

impl Feed {
    /// Authenticates a caller for a tenant.
    pub fn authenticate(&self, tenant: Option<&str>, token: Option<&str>) -> Result<Principal, FeedError> {
        self.tokens.authenticate(tenant, token)
    }

    /// Authenticates a caller for a tenant; also gives the token's SHA-256 digest.
    pub fn authenticate_with_digest(
        &self,
        tenant: Option<&str>,
        token: Option<&str>,
    ) -> Result<(Principal, [u8; 32]), FeedError> {
        self.tokens.authenticate_with_digest(tenant, token)
    }

    /// Creates an event: checks the role, the rate limits and the message,
    /// then stores and delivers it. A refused write creates nothing.
    ///
    /// In-memory mode this completes without waiting; in Redis mode it waits
    /// for Redis (bounded by its timeout; `unavailable` when Redis does not
    /// answer — the event may then exist or not).
    pub async fn post(&self, who: &Principal, message: &str) -> Result<Arc<StoredEvent>, FeedError> {
        who.require_writer()?;
        if let Err((scope, e)) = self.limits.check(who) {
            self.metrics.rate_limited.get_or_create(&vec![("scope", scope.as_str())]).inc();
            return Err(e);
        }
        event::validate_message(message)?;
        let new = NewEvent::new(message.to_owned(), who.user.clone());
        let event = match &self.config.cluster {
            None => self.bus.append(&who.tenant, new),
            Some(cluster) => cluster.append(&who.tenant, new).await?,
        };
        self.metrics.events_created.inc();
        Ok(event)
    }

    /// The cluster, in Redis mode.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.config.cluster.as_ref()
    }

    /// Whether the feed can take writes: not shutting down, and Redis (when
    /// configured) reachable.
    pub fn is_ready(&self) -> Result<(), &'static str> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down");
        }
        match &self.config.cluster {
            Some(c) if !c.is_ready() => Err("redis unavailable"),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication on `channel` (`rest` or `socket`).
    pub fn auth_failed(&self, channel: &'static str) {
        self.metrics.auth_failures.get_or_create(&vec![("channel", channel)]).inc();
    }

    /// Reads events: the latest `limit`, or those after `since` (from the
    /// shared store in Redis mode, so any instance answers alike).
    pub async fn read(&self, who: &Principal, since: Option<&Uuid>, limit: usize) -> Result<Page, FeedError> {
        match (&self.config.cluster, since) {
            (None, Some(id)) => Ok(self.bus.after(&who.tenant, id, limit)),
            (None, None) => Ok(self.bus.latest(&who.tenant, limit)),
            (Some(c), Some(id)) => c.after(&who.tenant, id, limit).await,
            (Some(c), None) => c.latest(&who.tenant, limit).await,
        }
    }

    /// One event of the caller's tenant.
    pub async fn get(&self, who: &Principal, id: &Uuid) -> Result<Arc<StoredEvent>, FeedError> {
        let found = match &self.config.cluster {
            None => self.bus.get(&who.tenant, id),
            Some(c) => c.get(&who.tenant, id).await?,
        };
        found.ok_or(FeedError::NotFound("no such event in this tenant's buffer"))
    }
}

/// Delivers new events to the tenant's room of the feed's namespace: the
/// `event_created` packet is encoded once from the stored JSON and the same
/// bytes are queued to every socket in the room.
pub struct SocketDelivery {
    namespace: OnceLock<Arc<Namespace>>,
    metrics: Arc<Metrics>,
    /// Append the offset argument (connection state recovery is on).
    with_offsets: bool,
}

impl SocketDelivery {
    /// Points delivery at the namespace (once, at start).
    pub fn attach(&self, namespace: Arc<Namespace>) {
        let _ = self.namespace.set(namespace);
    }
}

impl EventDelivery for SocketDelivery {
    fn deliver(&self, event: &Arc<StoredEvent>) {
        let Some(nsp) = self.namespace.get() else { return };
        let offset = self.with_offsets.then(|| gateway::offset_json(event.seq));
        let args: &[&serde_json::value::RawValue] = match &offset {
            Some(offset) => &[event.json(), offset],
            None => &[event.json()],
        };
        let frame = encode_raw_event(nsp.name(), "event_created", args, None);
        let packet = eventfeed_protocol::socket::Encoded { text: frame, binary: Vec::new() };
        let room = tenant_room(event.tenant_id());
        let stats = nsp.broadcast(&BroadcastOp { rooms: &[&room], ..BroadcastOp::default() }, &packet);
        self.metrics.deliveries.inc_by(stats.delivered as u64);
        self.metrics.delivery_failures.inc_by(stats.failed as u64);
    }
}

/// Everything the server runs: the feed, its Socket.IO engine, the router.
pub struct App {
    /// The feed.
    pub feed: Arc<Feed>,
    /// The Socket.IO engine.
    pub engine: Arc<Engine<SocketIo>>,
    /// The feed's namespace.
    pub namespace: Arc<Namespace>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    nsp_label: &'static str,
}

impl App {
    /// Builds the feed with `tokens`, serving Socket.IO with `engine_config`.
    pub fn new(mut config: FeedConfig, tokens: Tokens, engine_config: EngineConfig, sio_config: SioConfig) -> Self {
        // A recovery queues every missed event at once: keep that well inside a
        // socket's outgoing queue, or the recovering client would be dropped
        // as a slow consumer during its own recovery.
        config.max_recovered_events = config.max_recovered_events.min(engine_config.max_queue / 2);
        let mut metrics = Metrics::new();
        if let Some(cluster) = &config.cluster {
            metrics.register_redis(&cluster.metrics);
        }
        let engine_metrics = metrics.engine.clone();
        let sio_config = SioConfig { metrics: metrics.sio.clone(), ..sio_config };
        let metrics = Arc::new(metrics);
        let recovery = recovery::Recovery::new(config.recovery_window, config.max_kept_sessions);
        let delivery = Arc::new(SocketDelivery {
            namespace: OnceLock::new(),
            metrics: metrics.clone(),
            with_offsets: recovery.enabled(),
        });
        let feed = Arc::new(Feed {
            bus: EventBus::new(config.buffer_size, delivery.clone()),
            tokens,
            limits: limits::RateLimits::new(config.rate_limit, config.tenant_rate_limit),
            recovery,
            config: config.clone(),
            metrics: metrics.clone(),
            shutdown: CancellationToken::new(),
        });
        let namespace = Namespace::new(config.namespace.clone(), gateway::Gateway::new(feed.clone()));
        delivery.attach(namespace.clone());
        if let Some(cluster) = &config.cluster {
            cluster.start(feed.clone(), namespace.clone(), feed.shutdown.clone());
        }
        let engine =
            Engine::with_metrics(engine_config, SocketIo::new(sio_config, [namespace.clone()]), engine_metrics);
        // Metric labels are static; the namespace name is set once per process.
        let nsp_label: &'static str = Box::leak(config.namespace.clone().into_boxed_str());
        App { feed, engine, namespace, metrics, nsp_label }
    }

    /// The token that shuts the server down; `/readyz` fails once it is cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.feed.shutdown.clone()
    }

    /// The router: `/socket.io/` for Socket.IO, the REST API for the rest.
    pub fn router(&self) -> Router {
        let engine = self.engine.clone();
        let namespace = self.namespace.clone();
        let nsp_label = self.nsp_label;
        let refresh = move |m: &Metrics| {
            let (polling, websocket) = engine.sessions_by_transport();
            m.connections.get_or_create(&vec![("transport", "polling")]).set(polling as i64);
            m.connections.get_or_create(&vec![("transport", "websocket")]).set(websocket as i64);
            m.sockets.get_or_create(&vec![("namespace", nsp_label)]).set(namespace.socket_count() as i64);
        };
        let rest = rest::Rest::new(self.feed.clone(), Box::new(refresh));
        Router::new().engine("/socket.io/", self.engine.clone()).fallback(Arc::new(rest))
    }

    /// Drops idle rate-limit buckets and expired recovery sessions every
    /// `every` until shutdown.
    pub fn spawn_housekeeping(&self, every: Duration) {
        let feed = self.feed.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        feed.limits.sweep();
                        feed.recovery.sweep();
                    }
                    _ = feed.shutdown.cancelled() => break,
                }
            }
        });
    }
}
