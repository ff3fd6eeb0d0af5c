//! Prometheus metrics (`prometheus-client`), served at `GET /metrics` in the
//! text exposition format.
//!
//! Every exported series is defined here, with its name and help: the
//! server-wide ones on [`Metrics`], and the groups the layers below keep a
//! handle on ([`EngineMetrics`], [`SioMetrics`], [`RedisMetrics`]). Counters
//! are cheap shared atomics, incremented where things happen. The gauges that
//! describe current state (connections by transport, sockets per namespace)
//! are read from the engine and namespaces when scraped.
//! Label values come from small fixed sets — never from tenant ids or users,
//! which would make the series count unbounded.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set: `[(name, value)]`.
pub type Labels = Vec<(&'static str, &'static str)>;

/// Route labels whose request histograms exist from the start.
const KNOWN_ROUTES: [&str; 7] = ["engine.io", "api_events", "api_event", "api_stream", "ops", "other", "app"];

/// Why an authentication failed, as the `reason` label says it.
pub const AUTH_FAILURE_REASONS: [&str; 5] = ["missing", "invalid", "wrong_tenant", "expired", "revoked"];

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

fn latency_histogram() -> Histogram {
    // 100 µs … ~30 s: REST calls sit at the low end, held polls near pingInterval.
    Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0])
}

/// The Engine.IO runtime's counters.
#[derive(Debug, Clone, Default)]
pub struct EngineMetrics {
    /// Sessions opened.
    pub sessions_opened: Counter,
    /// Sessions closed.
    pub sessions_closed: Counter,
    /// Sessions closed because their outgoing queue overflowed.
    pub slow_consumer_closes: Counter,
    /// Frames queued to sessions (or written at once: below).
    pub frames_queued: Counter,
    /// Broadcast frames written straight to an idle websocket, without its
    /// task (`engine::conn`'s direct writes).
    pub frames_written_direct: Counter,
    /// Handshakes refused because the session limit was reached.
    pub session_limit_rejections: Counter,
}

/// The Socket.IO layer's counters of its bounds.
#[derive(Debug, Clone, Default)]
pub struct SioMetrics {
    /// CONNECTs refused because the session had `max_namespaces` already.
    pub namespace_limit_rejections: Counter,
    /// Server emits with ack refused because `max_pending_acks` were pending.
    pub ack_limit_rejections: Counter,
}

/// The series of Redis mode (exported only when Redis is configured).
#[derive(Debug, Clone, Default)]
pub struct RedisMetrics {
    /// 1 while Redis answers and the subscription is up.
    pub redis_up: Gauge,
    /// Redis calls that failed or timed out.
    pub redis_errors: Counter,
    /// Events fetched from the store to fill holes.
    pub missed_events_fetched: Counter,
    /// Tenant copies reloaded (their sockets closed) because a hole could not be filled.
    pub resets: Counter,
    /// Broadcasts of other servers received.
    pub remote_broadcasts: Counter,
    /// Requests of other servers answered.
    pub requests_answered: Counter,
    /// Where deliveries of other servers' broadcasts are counted (the
    /// server's `deliveries` series, shared).
    pub deliveries: Counter,
    /// Where their refused deliveries are counted (the server's
    /// `delivery_failures` series, shared).
    pub delivery_failures: Counter,
}

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    /// Open Engine.IO sessions by transport (set when scraped).
    pub connections: Family<Labels, Gauge>,
    /// Connected sockets by namespace (set when scraped).
    pub sockets: Family<Labels, Gauge>,
    /// Events created.
    pub events_created: Counter,
    /// Event packets queued to sockets.
    pub deliveries: Counter,
    /// Deliveries refused by a closed or overflowing socket queue.
    pub delivery_failures: Counter,
    /// Open Server-Sent Events streams (set when scraped).
    pub streams: Gauge,
    /// Tasks alive in the runtime (set when scraped): flat under a steady
    /// load, so a leak of per-connection tasks shows.
    pub tasks: Gauge,
    /// Event records queued to streams.
    pub stream_deliveries: Counter,
    /// Of those, records written straight to an idle stream's connection.
    pub stream_records_written_direct: Counter,
    /// Writes refused by a rate limit, by scope (`user`, `tenant`).
    pub rate_limited: Family<Labels, Counter>,
    /// Failed authentications, by channel (`rest`, `socket`, `stream`) and reason.
    pub auth_failures: Family<Labels, Counter>,
    /// Requests or connections refused by a limit, by limit.
    pub limit_rejections: Family<Labels, Counter>,
    /// Writes answered with the event an earlier write with the same
    /// idempotency key made.
    pub idempotent_replays: Counter,
    /// Idempotency keys forgotten before their window ended (the per-tenant
    /// bound) or as it ended.
    pub idempotency_evictions: Counter,
    /// Socket tokens refreshed (`refresh_token`).
    pub token_refreshes: Counter,
    /// Sockets and streams ended because their token expired.
    pub token_expiries: Counter,
    /// Credential reloads (`SIGHUP`), by outcome (`ok`, `failed`).
    pub config_reloads: Family<Labels, Counter>,
    /// HTTP request durations, by route.
    pub http_requests: Family<Labels, Histogram, fn() -> Histogram>,
    /// The Engine.IO runtime's counters.
    pub engine: EngineMetrics,
    /// The Socket.IO layer's counters.
    pub sio: SioMetrics,
    /// The histograms of the usual routes, looked up without a lock or an
    /// allocation per request.
    known_routes: Vec<(&'static str, Histogram)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `eventfeed` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("eventfeed");
        let m = Metrics {
            connections: Family::default(),
            sockets: Family::default(),
            events_created: Counter::default(),
            deliveries: Counter::default(),
            delivery_failures: Counter::default(),
            streams: Gauge::default(),
            tasks: Gauge::default(),
            stream_deliveries: Counter::default(),
            stream_records_written_direct: Counter::default(),
            rate_limited: Family::default(),
            auth_failures: Family::default(),
            limit_rejections: Family::default(),
            idempotent_replays: Counter::default(),
            idempotency_evictions: Counter::default(),
            token_refreshes: Counter::default(),
            token_expiries: Counter::default(),
            config_reloads: Family::default(),
            http_requests: Family::new_with_constructor(latency_histogram),
            engine: EngineMetrics::default(),
            sio: SioMetrics::default(),
            registry: Registry::default(),
            known_routes: Vec::new(),
        };
        registry.register("connections", "Open Engine.IO sessions by transport", m.connections.clone());
        registry.register("sockets", "Connected Socket.IO sockets by namespace", m.sockets.clone());
        registry.register("events_created", "Events created", m.events_created.clone());
        registry.register("deliveries", "Event packets queued to sockets", m.deliveries.clone());
        registry.register(
            "delivery_failures",
            "Deliveries refused by a closed or overflowing socket queue",
            m.delivery_failures.clone(),
        );
        registry.register("streams", "Open Server-Sent Events streams", m.streams.clone());
        registry.register("tasks", "Tasks alive in the server's runtime", m.tasks.clone());
        registry.register(
            "stream_deliveries",
            "Event records queued to Server-Sent Events streams",
            m.stream_deliveries.clone(),
        );
        registry.register(
            "stream_records_written_direct",
            "Event records written straight to an idle stream's connection (of stream_deliveries)",
            m.stream_records_written_direct.clone(),
        );
        registry.register("rate_limited", "Writes refused by a rate limit", m.rate_limited.clone());
        registry.register("auth_failures", "Failed authentications", m.auth_failures.clone());
        registry.register("limit_rejections", "Requests or connections refused by a limit", m.limit_rejections.clone());
        registry.register(
            "idempotent_replays",
            "Writes answered with the event of an earlier write with the same idempotency key",
            m.idempotent_replays.clone(),
        );
        registry.register(
            "idempotency_evictions",
            "Idempotency keys forgotten (the per-tenant bound, or the window)",
            m.idempotency_evictions.clone(),
        );
        registry.register("token_refreshes", "Socket tokens refreshed", m.token_refreshes.clone());
        registry.register(
            "token_expiries",
            "Sockets and streams ended by their token's expiry",
            m.token_expiries.clone(),
        );
        registry.register("config_reloads", "Credential reloads by outcome", m.config_reloads.clone());
        registry.register("http_request_duration_seconds", "HTTP request durations", m.http_requests.clone());
        // Every known series starts at 0, so it is exported before its first
        // hit and `rate()` or `increase()` over it is 0, not "no data".
        for scope in ["user", "tenant"] {
            m.rate_limited.get_or_create(&vec![("scope", scope)]).inc_by(0);
        }
        for channel in ["rest", "socket", "stream"] {
            for reason in AUTH_FAILURE_REASONS {
                m.auth_failures.get_or_create(&vec![("channel", channel), ("reason", reason)]).inc_by(0);
            }
        }
        for outcome in ["ok", "failed"] {
            m.config_reloads.get_or_create(&vec![("outcome", outcome)]).inc_by(0);
        }
        for limit in ["connections", "tenant_connections", "body_size", "body_timeout"] {
            m.limit_rejections.get_or_create(&vec![("limit", limit)]).inc_by(0);
        }
        let known_routes = KNOWN_ROUTES
            .iter()
            .map(|&route| (route, m.http_requests.get_or_create(&vec![("route", route)]).clone()))
            .collect();
        let (engine, sio) = (&m.engine, &m.sio);
        let counters = [
            ("sessions_opened", "Engine.IO sessions opened", &engine.sessions_opened),
            ("sessions_closed", "Engine.IO sessions closed", &engine.sessions_closed),
            (
                "slow_consumer_disconnects",
                "Sessions and streams closed because their outgoing queue filled",
                &engine.slow_consumer_closes,
            ),
            ("frames_queued", "Engine.IO packets sent to sessions (queued, or written at once)", &engine.frames_queued),
            (
                "frames_written_direct",
                "Broadcast packets written straight to an idle websocket (of frames_queued)",
                &engine.frames_written_direct,
            ),
            ("session_limit_rejections", "Handshakes refused at the session limit", &engine.session_limit_rejections),
            (
                "namespace_limit_rejections",
                "CONNECTs refused at the namespaces-per-session limit",
                &sio.namespace_limit_rejections,
            ),
            (
                "ack_limit_rejections",
                "Server emits with ack refused at the pending-acks limit",
                &sio.ack_limit_rejections,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        Metrics { registry, known_routes, ..m }
    }

    /// Registers the series of Redis mode.
    pub fn register_redis(&mut self, cluster: &RedisMetrics) {
        self.registry.register(
            "redis_up",
            "1 while Redis answers and the subscription is up",
            cluster.redis_up.clone(),
        );
        let counters = [
            ("redis_errors", "Redis calls that failed or timed out", &cluster.redis_errors),
            (
                "cluster_missed_events_fetched",
                "Events fetched from the store to fill a hole in a tenant's copy",
                &cluster.missed_events_fetched,
            ),
            (
                "cluster_resets",
                "Tenant copies reloaded because their hole could not be filled (sockets closed)",
                &cluster.resets,
            ),
            (
                "adapter_broadcasts_received",
                "Broadcasts received from other socket.io servers",
                &cluster.remote_broadcasts,
            ),
            ("adapter_requests_answered", "Requests of other socket.io servers answered", &cluster.requests_answered),
        ];
        for (name, help, counter) in counters {
            self.registry.register(name, help, counter.clone());
        }
    }

    /// Counts one refusal by `limit`.
    pub fn reject(&self, limit: &'static str) {
        self.limit_rejections.get_or_create(&vec![("limit", limit)]).inc();
    }

    /// Records one HTTP request.
    pub fn observe_request(&self, route: &'static str, took: Duration) {
        match self.known_routes.iter().find(|(r, _)| *r == route) {
            Some((_, histogram)) => histogram.observe(took.as_secs_f64()),
            None => self.http_requests.get_or_create(&vec![("route", route)]).observe(took.as_secs_f64()),
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_names_types_and_labels() {
        let m = Metrics::new();
        m.events_created.inc_by(3);
        m.reject("connections");
        m.rate_limited.get_or_create(&vec![("scope", "user")]).inc();
        m.connections.get_or_create(&vec![("transport", "websocket")]).set(2);
        m.observe_request("api_events", Duration::from_micros(300));
        let text = m.encode();
        assert!(text.contains("# TYPE eventfeed_events_created_total counter"), "{text}");
        assert!(text.contains("eventfeed_events_created_total 3"), "{text}");
        assert!(text.contains(r#"eventfeed_limit_rejections_total{limit="connections"} 1"#), "{text}");
        assert!(text.contains(r#"eventfeed_rate_limited_total{scope="user"} 1"#), "{text}");
        assert!(text.contains(r#"eventfeed_connections{transport="websocket"} 2"#), "{text}");
        assert!(
            text.contains(r#"eventfeed_http_request_duration_seconds_bucket{route="api_events",le="0.0005"} 1"#),
            "{text}"
        );
        // Series not hit yet are there, at 0.
        assert!(text.contains(r#"eventfeed_rate_limited_total{scope="tenant"} 0"#), "{text}");
        assert!(text.contains(r#"eventfeed_auth_failures_total{channel="socket",reason="expired"} 0"#), "{text}");
        assert!(text.contains(r#"eventfeed_limit_rejections_total{limit="tenant_connections"} 0"#), "{text}");
    }
}
