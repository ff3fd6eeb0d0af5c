//! The event feed: what the contract promises, on top of the store, the
//! socket layer and the HTTP server.
//!
//! - [`store`]: [`EventBus`], the sharded per-tenant ring buffers, and the
//!   [`EventDelivery`] seam to whatever delivers new events.
//! - [`event`]: the event model, message validation, JSON encoded once.
//! - [`auth`]: tokens (file or demo), constant-time checks, roles.
//! - [`error`]: [`FeedError`] and its one mapping to HTTP and socket answers.
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
pub mod rest;
pub mod store;

use std::sync::{Arc, OnceLock};

use eventfeed_protocol::socket::encode_raw_event;
use uuid::Uuid;

pub use auth::{Principal, Role, Tokens};
pub use error::FeedError;
pub use event::{NewEvent, StoredEvent};
pub use store::{EventBus, EventDelivery, Page};

use crate::engine::{Engine, EngineConfig};
use crate::http::Cors;
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
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig { buffer_size: 500, namespace: "/events".into(), max_body: 65536, cors: Cors::default() }
    }
}

/// The room of a tenant.
pub fn tenant_room(tenant: &str) -> String {
    format!("tenant:{tenant}")
}

/// The feed's shared state.
pub struct Feed {
    /// The event store.
    pub bus: EventBus,
    /// Known tokens.
    pub tokens: Tokens,
    /// Settings.
    pub config: FeedConfig,
}

impl Feed {
    /// Authenticates a caller for a tenant.
    pub fn authenticate(&self, tenant: Option<&str>, token: Option<&str>) -> Result<Principal, FeedError> {
        self.tokens.authenticate(tenant, token)
    }

    /// Creates an event: checks the role and the message, stores, delivers.
    pub fn post(&self, who: &Principal, message: &str) -> Result<Arc<StoredEvent>, FeedError> {
        who.require_writer()?;
        event::validate_message(message)?;
        Ok(self.bus.append(&who.tenant, NewEvent::new(message.to_owned(), who.user.clone())))
    }

    /// Reads events: the latest `limit`, or those after `since`.
    pub fn read(&self, who: &Principal, since: Option<&Uuid>, limit: usize) -> Page {
        match since {
            Some(id) => self.bus.after(&who.tenant, id, limit),
            None => self.bus.latest(&who.tenant, limit),
        }
    }

    /// One event of the caller's tenant.
    pub fn get(&self, who: &Principal, id: &Uuid) -> Result<Arc<StoredEvent>, FeedError> {
        self.bus.get(&who.tenant, id).ok_or(FeedError::NotFound("no such event in this tenant's buffer"))
    }
}

/// Delivers new events to the tenant's room of the feed's namespace: the
/// `event_created` packet is encoded once from the stored JSON and the same
/// bytes are queued to every socket in the room.
#[derive(Default)]
pub struct SocketDelivery {
    namespace: OnceLock<Arc<Namespace>>,
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
        let frame = encode_raw_event(nsp.name(), "event_created", &[event.json()], None);
        let packet = eventfeed_protocol::socket::Encoded { text: frame, binary: Vec::new() };
        let room = tenant_room(event.tenant_id());
        nsp.broadcast(&BroadcastOp { rooms: &[&room], ..BroadcastOp::default() }, &packet);
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
}

impl App {
    /// Builds the feed with `tokens`, serving Socket.IO with `engine_config`.
    pub fn new(config: FeedConfig, tokens: Tokens, engine_config: EngineConfig, sio_config: SioConfig) -> Self {
        let delivery = Arc::new(SocketDelivery::default());
        let feed =
            Arc::new(Feed { bus: EventBus::new(config.buffer_size, delivery.clone()), tokens, config: config.clone() });
        let namespace = Namespace::new(config.namespace.clone(), gateway::Gateway::new(feed.clone()));
        delivery.attach(namespace.clone());
        let engine = Engine::new(engine_config, SocketIo::new(sio_config, [namespace.clone()]));
        App { feed, engine, namespace }
    }

    /// The router: `/socket.io/` for Socket.IO, the REST API for the rest.
    pub fn router(&self) -> Router {
        Router::new().engine("/socket.io/", self.engine.clone()).fallback(Arc::new(rest::Rest::new(self.feed.clone())))
    }
}
