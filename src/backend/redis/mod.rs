//! Several instances as one, through Redis (`NB_BACKEND_REDIS_URL`): the
//! feed's shared store behind its store seam ([`RedisStore`]), and the
//! `@socket.io/redis-adapter` broadcast and request/response channels behind
//! the Socket.IO layer's adapter seam ([`RedisAdapter`]).
//!
//! - The **event store** lives in Redis ([`store`]): per tenant a list of the
//!   last `buffer_size` events' JSON (`{prefix}:{<tenant>}:log`), the `seq`
//!   counter (`…:seq`) and an id → `seq` index (`…:ids`, kept a hash table
//!   by one long marker field, so an id is added and dropped in O(1)). One Lua script
//!   allocates the `seq`, appends, trims (in batches; reads skip what lies
//!   before the newest `buffer_size`), updates the index *and publishes*
//!   the event, atomically — so every instance sees a tenant's events on the
//!   subscription in `seq` order. Reads (REST, `replay`) are scripts too, so
//!   they are consistent on any instance and survive restarts of every one.
//! - A stored event is published in the adapter's wire format (`[uid,
//!   packet, opts]` to `socket.io#<nsp>#tenant:<id>#`), so Node socket.io
//!   servers with `@socket.io/redis-adapter` deliver it to their clients too.
//! - Each instance keeps a **copy** of the logs of the tenants it serves (the
//!   in-memory [`EventBus`]), fed from the subscription in `seq` order by one
//!   task ([`sync`]): a socket's snapshot, recovery and live events come from
//!   that copy under the tenant's lock, as in memory, so nothing is lost or
//!   doubled between them. A hole in the `seq`s (a lost subscription, a
//!   restart of Redis) is filled from the store before anything after it is
//!   delivered; when it cannot be filled (evicted meanwhile), the tenant's
//!   sockets here are disconnected so they come back through recovery or a
//!   snapshot — never a silent gap.
//! - Sessions kept for connection state recovery are stored in Redis with the
//!   window as their expiry ([`sessions`]), so a client recovers on any
//!   instance, even when its own crashed.
//! - The **adapter** ([`adapter`]) publishes this instance's broadcasts and
//!   cross-instance requests (`fetchSockets`, `socketsJoin`, …) and collects
//!   their responses; the subscription hands it the broadcasts and requests of
//!   the other servers (Node ones too) for every namespace, which the
//!   Socket.IO layer carries out on the local sockets.
//! - **Redis down or slow**: every call has a deadline
//!   (`NB_BACKEND_REDIS_TIMEOUT`); writes and reads answer `unavailable`
//!   (REST 503 with `Retry-After`), `/readyz` fails, connections reconnect
//!   with backoff, and delivery resumes (missed events fetched) by itself.
//!   Nothing here ever blocks the runtime: all Redis I/O is `async`.
//!
//! Redis must keep what it acknowledged (`appendonly yes`; `appendfsync
//! always` for no loss on a Redis crash) and must not evict keys
//! (`maxmemory-policy noeviction`); Redis Cluster is not supported.

pub mod adapter;
pub mod sessions;
pub mod store;
mod sync;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventfeed_protocol::adapter as wire;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use adapter::RedisAdapter;
pub use store::RedisStore;

use crate::config::RedisConfig;
use crate::feed::recovery::Kept;
use crate::feed::{Delivery, FeedError};
use crate::metrics::RedisMetrics;
use crate::sio::Namespaces;

/// What the store, the adapter and the subscription share: the connection,
/// this instance's identity, health.
pub(crate) struct Shared {
    config: RedisConfig,
    conn: ConnectionManager,
    client: redis::Client,
    /// This instance's adapter uid: broadcasts and requests carrying it are our own.
    uid: String,
    /// The uid of this deployment's stored events ([`wire::store_uid`]).
    store_uid: String,
    /// The last command (or health ping) succeeded.
    commands_up: AtomicBool,
    /// The subscription is established.
    subscribed: AtomicBool,
    metrics: RedisMetrics,
}

fn unavailable(error: impl std::fmt::Display) -> FeedError {
    tracing::warn!(error = %error, "redis call failed");
    FeedError::Unavailable { retry_after: 1 }
}

impl Shared {
    /// Whether Redis answers and the subscription is up (`/readyz`).
    fn is_ready(&self) -> bool {
        self.commands_up.load(Ordering::Relaxed) && self.subscribed.load(Ordering::Relaxed)
    }

    /// The adapter's channels of namespace `nsp`.
    fn channels(&self, nsp: &str) -> wire::Channels {
        wire::Channels::new(&self.config.adapter_key, nsp, &self.uid)
    }

    /// Runs one Redis call under the deadline, recording whether Redis answered.
    async fn call<T>(&self, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, FeedError> {
        match tokio::time::timeout(self.config.timeout, f).await {
            Ok(Ok(v)) => {
                self.commands_up.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.metrics.redis_errors.inc();
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                    self.commands_up.store(false, Ordering::Relaxed);
                }
                Err(unavailable(e))
            }
            Err(_) => {
                self.metrics.redis_errors.inc();
                self.commands_up.store(false, Ordering::Relaxed);
                Err(unavailable("timed out"))
            }
        }
    }

    /// Pings Redis, recording the answer (the health check behind `/readyz`).
    async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        self.call(async move { conn.ping::<String>().await }).await.is_ok()
    }

    async fn publish(&self, channel: &str, message: Vec<u8>) -> Result<(), FeedError> {
        let mut conn = self.conn.clone();
        self.call(async move { conn.publish::<_, _, ()>(channel, message).await }).await
    }
}

/// Requests to the sync task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Make sure a copy of the tenant's log is here (a socket is connecting).
    Load {
        /// The tenant.
        tenant: Arc<str>,
        /// The copy must have caught up with the store as of now (not just exist).
        fresh: bool,
        /// Answered once the copy is there (or cannot be made).
        reply: oneshot::Sender<Result<(), FeedError>>,
    },
    /// A kept session proved the tenant's history went back within `epoch`:
    /// reload the copy, with a new epoch in Redis if it is still that one.
    WentBack {
        /// The tenant.
        tenant: Arc<str>,
        /// The epoch the history went back in.
        epoch: crate::feed::recovery::Epoch,
    },
    /// The subscription of this generation stopped answering pings.
    SubscriptionLost {
        /// Which subscription.
        generation: u64,
    },
}

/// Requests to the sync task queued at most; more wait (backpressure).
pub(crate) const CONTROL_QUEUE: usize = 1024;

/// Session writes queued at most; more are dropped (and counted).
pub(crate) const SESSION_QUEUE: usize = 65_536;
/// One write.
#[derive(Debug)]
pub(crate) enum SessionOp {
    /// Keep `kept` under `pid` for the window.
    Keep { pid: String, kept: Box<Kept> },
    /// Delete the session under `pid`.
    Forget { pid: String },
    /// Renew the expiry of these sessions (their sockets are alive).
    Renew { pids: Vec<String> },
    /// Answer once everything queued before is written.
    Flush(oneshot::Sender<()>),
}

/// Lower-case hex, as kept sessions store the token digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Redis mode, before it starts: the store and the adapter to wire in, and
/// the receiving ends of their queues, which [`Redis::start`] hands to the
/// tasks that serve them.
pub struct Redis {
    shared: Arc<Shared>,
    store: RedisStore,
    adapter: RedisAdapter,
    control: mpsc::Receiver<Control>,
    session_writes: mpsc::Receiver<SessionOp>,
}

/// How often Redis is pinged for `/readyz`.
const PING_EVERY: Duration = Duration::from_secs(1);

impl Redis {
    /// Redis mode for the feed's namespace `namespace`, keeping `capacity`
    /// events per tenant and recovery sessions for `recovery_window`.
    /// Connects lazily: an unreachable Redis at start-up makes the server
    /// unready, not fail.
    pub fn new(
        config: RedisConfig,
        namespace: &str,
        capacity: usize,
        recovery_window: Duration,
        keys: crate::feed::idempotency::KeyLimits,
        metrics: RedisMetrics,
    ) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| format!("NB_BACKEND_REDIS_URL: {e}"))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| format!("NB_BACKEND_REDIS_URL: {e}"))?;
        let shared = Arc::new(Shared {
            uid: crate::engine::new_sid()[..12].to_owned(),
            store_uid: wire::store_uid(&config.prefix),
            conn,
            client,
            commands_up: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            metrics,
            config,
        });
        let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
        let (session_tx, session_writes) = mpsc::channel(SESSION_QUEUE);
        let store = RedisStore::new(shared.clone(), namespace, capacity, recovery_window, control_tx, session_tx, keys);
        let adapter = RedisAdapter::new(shared.clone());
        Ok(Redis { shared, store, adapter, control, session_writes })
    }

    /// This instance's adapter uid.
    pub fn uid(&self) -> &str {
        &self.shared.uid
    }

    /// The prefix of this deployment's keys.
    pub fn prefix(&self) -> &str {
        &self.shared.config.prefix
    }

    /// The store (a handle; clones share it).
    pub fn store(&self) -> RedisStore {
        self.store.clone()
    }

    /// The adapter (a handle; clones share it).
    pub fn adapter(&self) -> RedisAdapter {
        self.adapter.clone()
    }

    /// Starts this instance's tasks until `shutdown`: the subscription (the
    /// store's events to `delivery`, the other servers' broadcasts and
    /// requests to `namespaces`), the session writer and renewer, and the
    /// health ping.
    pub fn start(self, delivery: impl Delivery + Clone, namespaces: Arc<Namespaces>, shutdown: CancellationToken) {
        let Redis { shared, store, adapter, control, session_writes } = self;
        sync::spawn(store.clone(), adapter, delivery, namespaces, control, shutdown.clone());
        store.start_sessions(session_writes, shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PING_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let was = shared.commands_up.load(Ordering::Relaxed);
                        let up = shared.ping().await;
                        shared.metrics.redis_up.set(i64::from(up && shared.is_ready()));
                        if was != up {
                            if up { tracing::info!("redis reachable"); } else { tracing::warn!("redis unreachable"); }
                        }
                    }
                    _ = shutdown.cancelled() => break,
                }
            }
        });
    }
}
