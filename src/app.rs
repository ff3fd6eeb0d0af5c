//! The wiring: a feed over a store, its namespace in a Socket.IO server over
//! a cluster adapter, the Engine.IO endpoint and the router — for one of the
//! two backends, chosen here once: in memory ([`App::new`]) or shared through
//! Redis ([`App::redis`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::memory::MemoryStore;
use crate::backend::redis::{Redis, RedisAdapter, RedisStore};
use crate::config::RedisConfig;
use crate::engine::{Engine, EngineConfig};
use crate::feed::auth::Reload;
use crate::feed::rest::Rest;
use crate::feed::{Credentials, Feed, FeedConfig, Gateway, Store};
use crate::metrics::{Metrics, RedisMetrics};
use crate::server::Router;
use crate::sio::admin::Admin;
use crate::sio::{Adapter, LocalAdapter, Namespace, SioConfig, SocketIo};

/// Everything the server runs: the feed, its Socket.IO engine, the router.
pub struct App<S: Store = MemoryStore, A: Adapter = LocalAdapter> {
    /// The feed.
    pub feed: Arc<Feed<S>>,
    /// The Socket.IO engine.
    pub engine: Arc<Engine<SocketIo<A>>>,
    /// The feed's namespace.
    pub namespace: Arc<Namespace<Gateway<S>>>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    nsp_label: &'static str,
}

impl App {
    /// The feed in this process alone, with these credentials (a tokens
    /// file's [`crate::feed::Tokens`] will do), serving Socket.IO with
    /// `engine_config`.
    pub fn new(
        config: FeedConfig,
        credentials: impl Into<Credentials>,
        engine_config: EngineConfig,
        sio_config: SioConfig,
    ) -> Self {
        let store = MemoryStore::with_keys(
            config.buffer_size,
            config.recovery_window,
            config.max_kept_sessions,
            config.idempotency,
        );
        App::build(store, LocalAdapter, Metrics::new(), config, credentials.into(), engine_config, sio_config)
    }
}

impl App<RedisStore, RedisAdapter> {
    /// The feed shared with other instances through Redis: the store, the
    /// sessions kept for recovery, and the broadcasts and requests of the
    /// cluster adapter. Connects lazily: an unreachable Redis makes the
    /// server unready, not fail.
    pub fn redis(
        redis: RedisConfig,
        config: FeedConfig,
        credentials: impl Into<Credentials>,
        engine_config: EngineConfig,
        sio_config: SioConfig,
    ) -> Result<Self, String> {
        let mut metrics = Metrics::new();
        let redis_metrics = RedisMetrics {
            deliveries: metrics.deliveries.clone(),
            delivery_failures: metrics.delivery_failures.clone(),
            ..RedisMetrics::default()
        };
        metrics.register_redis(&redis_metrics);
        let redis = Redis::new(
            redis,
            &config.namespace,
            config.buffer_size,
            config.recovery_window,
            config.idempotency,
            redis_metrics,
        )?;
        tracing::info!(prefix = %redis.prefix(), uid = %redis.uid(), "redis mode: store and broadcast shared through redis");
        let credentials = credentials.into();
        let mut sio_config = sio_config;
        if let Some(admin) = &mut sio_config.admin {
            // A UI connected to another instance hears of this one's sockets.
            admin.clustered = true;
        }
        let app = App::build(redis.store(), redis.adapter(), metrics, config, credentials, engine_config, sio_config);
        redis.start(app.feed.delivery().clone(), app.engine.handler().namespaces().clone(), app.feed.shutdown.clone());
        Ok(app)
    }
}

impl<S: Store, A: Adapter> App<S, A> {
    fn build(
        store: S,
        adapter: A,
        metrics: Metrics,
        mut config: FeedConfig,
        credentials: Credentials,
        engine_config: EngineConfig,
        sio_config: SioConfig,
    ) -> Self {
        // A recovery queues every missed event at once: keep that well inside a
        // socket's outgoing queue, or the recovering client would be dropped
        // as a slow consumer during its own recovery.
        config.max_recovered_events = config.max_recovered_events.min(engine_config.max_queue / 2);
        config.stream_queue = engine_config.max_queue;
        let engine_metrics = metrics.engine.clone();
        let admin = sio_config.admin.clone().map(|c| Admin::<A>::new(c));
        let sio_config = SioConfig { metrics: metrics.sio.clone(), ..sio_config };
        let metrics = Arc::new(metrics);
        let nsp = config.namespace.clone();
        let feed = Feed::new(store, Arc::new(credentials), config, metrics.clone());
        let namespace = Namespace::new(nsp.clone(), Gateway::new(feed.clone()));
        feed.delivery().attach(namespace.clone());
        let mut io = SocketIo::with_adapter(sio_config, adapter).with(namespace.clone());
        if let Some(admin) = &admin {
            io = io.with(Namespace::new(admin.namespace().to_owned(), admin.handler()));
        }
        let engine = Engine::with_metrics(engine_config, io, engine_metrics);
        if let Some(admin) = &admin {
            admin.attach(&engine, feed.shutdown.clone());
        }
        // Metric labels are static; the namespace name is set once per process.
        let nsp_label: &'static str = Box::leak(nsp.into_boxed_str());
        let app = App { feed, engine, namespace, metrics, nsp_label };
        app.spawn_revalidation();
        app
    }

    /// Fetches what the credentials need from elsewhere (a JWKS URL: waits
    /// for it at most [`crate::feed::auth::JWKS_START_WAIT`], then goes on
    /// and retries) and keeps it fresh until shutdown.
    pub async fn start(&self) {
        self.feed.credentials.start(self.feed.shutdown.clone()).await;
    }

    /// Re-reads the credentials (`SIGHUP`): the tokens file, the
    /// revocations, the JWKS, each on its own (one that fails keeps its
    /// previous version). Counted by outcome and audited; live sockets and
    /// kept sessions are looked at again right after.
    pub async fn reload(&self) -> Reload {
        let reload = self.feed.credentials.reload().await;
        let outcome = if reload.failed.is_empty() { "ok" } else { "failed" };
        self.metrics.config_reloads.get_or_create(&vec![("outcome", outcome)]).inc();
        for failure in &reload.failed {
            tracing::error!(error = %failure, "credentials reload: this source keeps its previous version");
        }
        tracing::info!(target: "audit", action = "config_reloaded", outcome, failed = reload.failed.len(), "credentials reloaded");
        reload
    }

    /// Whenever what the credentials accept may have changed (a reload, a
    /// JWKS refresh), looks at every live socket of the feed again and drops
    /// the kept sessions whose credentials went; until shutdown.
    fn spawn_revalidation(&self) {
        let (feed, namespace) = (self.feed.clone(), self.namespace.clone());
        let mut changes = feed.credentials.changes();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = feed.shutdown.cancelled() => return,
                }
                let sockets = namespace.sockets();
                for socket in &sockets {
                    namespace.handler().revalidate(socket);
                }
                let dropped = feed.store.forget_sessions(|kept| feed.credentials.keeps(kept));
                tracing::info!(sockets = sockets.len(), dropped_sessions = dropped, "live credentials looked at again");
            }
        });
    }

    /// The token that shuts the server down; `/readyz` fails once it is cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.feed.shutdown.clone()
    }

    /// The router: `/socket.io/` for Socket.IO, the REST API for the rest.
    pub fn router(&self) -> Router {
        let engine = self.engine.clone();
        let namespace = self.namespace.clone();
        let streams = self.feed.delivery().streams().clone();
        let nsp_label = self.nsp_label;
        let refresh = move |m: &Metrics| {
            m.streams.set(streams.open() as i64);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                m.tasks.set(rt.metrics().num_alive_tasks() as i64);
            }
            let (polling, websocket) = engine.sessions_by_transport();
            m.connections.get_or_create(&vec![("transport", "polling")]).set(polling as i64);
            m.connections.get_or_create(&vec![("transport", "websocket")]).set(websocket as i64);
            m.sockets.get_or_create(&vec![("namespace", nsp_label)]).set(namespace.socket_count() as i64);
        };
        let rest = Rest::new(self.feed.clone(), Box::new(refresh));
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
                        feed.metrics.idempotency_evictions.inc_by(feed.store.sweep());
                    }
                    _ = feed.shutdown.cancelled() => break,
                }
            }
        });
    }

    /// Waits (at most `within`) for the store's queued writes, at shutdown.
    pub async fn finish(&self, within: Duration) -> bool {
        self.feed.store.finish(within).await
    }
}
