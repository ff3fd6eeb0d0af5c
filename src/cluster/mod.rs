//! Several instances as one, through Redis (`NB_BACKEND_REDIS_URL`).
//!
//! - The **event store** lives in Redis: per tenant a list of the last
//!   `buffer_size` events' JSON (`{prefix}:{<tenant>}:log`), the `seq`
//!   counter (`…:seq`) and an id → `seq` index (`…:ids`). One Lua script
//!   allocates the `seq`, appends, trims, updates the index *and publishes*
//!   the event, atomically — so every instance sees a tenant's events on the
//!   subscription in `seq` order. Reads (REST, `replay`) are scripts too, so
//!   they are consistent on any instance and survive restarts of every one.
//! - **Broadcast** uses the wire format of `@socket.io/redis-adapter` v8
//!   ([`adapter`]): a new event is published by the script as the adapter's
//!   `[uid, packet, opts]` to `socket.io#<nsp>#tenant:<id>#`, so Node
//!   socket.io servers with that adapter deliver it to their clients too, and
//!   broadcasts from them (or from `@socket.io/redis-emitter`) reach ours.
//! - Each instance keeps a **copy** of the logs of the tenants it serves (the
//!   [`EventBus`](crate::feed::EventBus) of in-memory mode), fed from the
//!   subscription in `seq` order by one task ([`sync`]): a socket's snapshot,
//!   recovery and live events come from that copy under the tenant's lock, as
//!   in-memory mode does, so nothing is lost or doubled between them. A hole
//!   in the `seq`s (a lost subscription, a restart of Redis) is filled from
//!   the store before anything after it is delivered; when it cannot be
//!   filled (evicted meanwhile), the tenant's sockets here are disconnected so
//!   they come back through recovery or a snapshot — never a silent gap.
//! - Sessions kept for connection state recovery are stored in Redis with the
//!   window as their expiry ([`sessions`]), so a client recovers on any
//!   instance, even when its own crashed.
//! - **Redis down or slow**: every call has a deadline
//!   (`NB_BACKEND_REDIS_TIMEOUT`); writes and reads answer `unavailable`
//!   (REST 503 with `Retry-After`), `/readyz` fails, connections reconnect
//!   with backoff, and delivery resumes (missed events fetched) by itself.
//!   Nothing here ever blocks the runtime: all Redis I/O is `async`.
//!
//! Redis must keep what it acknowledged (`appendonly yes`; `appendfsync
//! always` for no loss on a Redis crash) and must not evict keys
//! (`maxmemory-policy noeviction`); Redis Cluster is not supported.

mod requests;
mod sessions;
mod sync;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value as RValue};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::feed::event::PreparedEvent;
use crate::feed::recovery::Kept;
use crate::feed::{FeedError, NewEvent, Page, StoredEvent, tenant_room};
use eventfeed_protocol::adapter;

pub use sync::Control;

/// The counters of Redis mode (registered by [`Metrics::register_cluster`](crate::metrics::Metrics::register_cluster)).
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
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
}

/// Settings of Redis mode.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` (or `rediss://`, `redis+unix://`).
    pub url: String,
    /// Prefix of every key this server writes.
    pub prefix: String,
    /// The adapter's channel prefix (`key` of `@socket.io/redis-adapter`).
    pub adapter_key: String,
    /// Deadline of every Redis call.
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "eventfeed".into(),
            adapter_key: "socket.io".into(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Allocates the next `seq`, stores the event, trims the log to capacity
/// (dropping evicted ids from the index) and publishes it — one atomic step.
/// KEYS: seq, log, ids. ARGV: capacity, id, JSON head, JSON tail, message
/// head, message tail, channel. Returns the `seq`.
const APPEND: &str = r#"
local seq = redis.call('INCR', KEYS[1])
local s = string.format('%d', seq)
redis.call('RPUSH', KEYS[2], ARGV[3] .. s .. ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], s)
local cap = tonumber(ARGV[1])
local n = redis.call('LLEN', KEYS[2])
while n > cap do
  local old = redis.call('LPOP', KEYS[2])
  redis.call('HDEL', KEYS[3], string.sub(old, 8, 43))
  n = n - 1
end
redis.call('PUBLISH', ARGV[7], ARGV[5] .. cmsgpack.pack(seq) .. ARGV[6])
return seq
"#;

/// Reads a tenant's log consistently. KEYS: seq, log, ids. ARGV: mode
/// (`latest`, `after_id`, `after_seq`, `get`), its argument, limit.
/// Returns `{last_seq, first_seq, status, has_more, anchor, events…}`;
/// status 0 is fine, 1 means the id or `seq` asked for is no longer retained
/// (gap), 2 means the `seq` asked for is newer than the newest (the history
/// was lost). `anchor` is, for `after_seq`, the id of the event at that `seq`
/// when it is retained (so the caller can tell it is the same history), else
/// empty. An index entry that does not match the log is treated as absent.
const READ: &str = r#"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = redis.call('LLEN', KEYS[2])
local first = last - n + 1
local mode = ARGV[1]
local limit = tonumber(ARGV[3])
local start = 0
local status = 0
local anchor = ''
local function id_of(e) return string.sub(e, 8, 43) end
if mode == 'latest' then
  start = n - limit
  if start < 0 then start = 0 end
elseif mode == 'after_id' then
  local s = redis.call('HGET', KEYS[3], ARGV[2])
  if s then start = tonumber(s) - first + 1 end
  if not s or start < 1 or start > n then start = 0; status = 1 end
elseif mode == 'after_seq' then
  local s = tonumber(ARGV[2])
  if s > last then return {last, first, 2, 0, ''} end
  if s + 1 < first then return {last, first, 1, 0, ''} end
  if s >= first then anchor = id_of(redis.call('LINDEX', KEYS[2], s - first)) end
  start = s - first + 1
elseif mode == 'get' then
  local s = redis.call('HGET', KEYS[3], ARGV[2])
  if not s then return {last, first, 1, 0, ''} end
  local i = tonumber(s) - first
  if i < 0 or i >= n then return {last, first, 1, 0, ''} end
  local e = redis.call('LINDEX', KEYS[2], i)
  if not e or id_of(e) ~= ARGV[2] then return {last, first, 1, 0, ''} end
  return {last, first, 0, 0, '', e}
end
local out = {last, first, status, 0, anchor}
if start < n and limit > 0 then
  local events = redis.call('LRANGE', KEYS[2], start, start + limit - 1)
  for i = 1, #events do out[#out + 1] = events[i] end
  if start + limit < n then out[4] = 1 end
end
return out
"#;

/// Takes a kept session if the credentials match (else leaves it for its
/// owner). KEYS: the session. ARGV: tenant, user, token digest (hex).
/// Returns `{sid, base_seq}` or nil.
const TAKE_SESSION: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'tenant', 'user', 'digest', 'sid', 'base_seq')
if v[1] == ARGV[1] and v[2] == ARGV[2] and v[3] == ARGV[3] then
  redis.call('DEL', KEYS[1])
  return {v[4], v[5]}
end
return false
"#;

/// What a read of a tenant's log gave.
#[derive(Debug, Default)]
pub(crate) struct LogRead {
    pub last_seq: u64,
    pub status: i64,
    pub has_more: bool,
    /// For `after_seq`: the id of the event at that `seq` in the store.
    pub anchor: Option<Uuid>,
    pub events: Vec<Arc<StoredEvent>>,
}

/// The shared store and bus of Redis mode (see the module docs).
pub struct Cluster {
    config: RedisConfig,
    namespace: String,
    capacity: usize,
    conn: ConnectionManager,
    client: redis::Client,
    /// This instance's adapter uid: broadcasts carrying it are our own.
    uid: String,
    /// The uid of this deployment's stored events ([`adapter::store_uid`]).
    store_uid: String,
    channels: adapter::Channels,
    append: Script,
    read: Script,
    take_session: Script,
    /// The last command (or health ping) succeeded.
    commands_up: AtomicBool,
    /// The subscription is established.
    subscribed: AtomicBool,
    control: mpsc::Sender<Control>,
    control_rx: std::sync::Mutex<Option<mpsc::Receiver<Control>>>,
    /// Session writes for recovery, in order ([`sessions`]).
    sessions: mpsc::Sender<sessions::SessionOp>,
    sessions_rx: std::sync::Mutex<Option<mpsc::Receiver<sessions::SessionOp>>>,
    /// Counters.
    pub metrics: ClusterMetrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("uid", &self.uid).field("prefix", &self.config.prefix).finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> FeedError {
    tracing::warn!(error = %error, "redis call failed");
    FeedError::Unavailable { retry_after: 1 }
}

/// Requests to the sync task queued at most; more wait (backpressure).
const CONTROL_QUEUE: usize = 1024;

impl Cluster {
    /// A cluster member for `namespace`, keeping `capacity` events per
    /// tenant. Connects lazily: an unreachable Redis at start-up makes the
    /// server unready, not fail.
    pub fn new(config: RedisConfig, namespace: &str, capacity: usize) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| format!("NB_BACKEND_REDIS_URL: {e}"))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| format!("NB_BACKEND_REDIS_URL: {e}"))?;
        let uid = crate::engine::new_sid()[..12].to_owned();
        let channels = adapter::Channels::new(&config.adapter_key, namespace, &uid);
        let (control, rx) = mpsc::channel(CONTROL_QUEUE);
        let (session_tx, session_rx) = mpsc::channel(sessions::QUEUE);
        Ok(Arc::new(Cluster {
            namespace: namespace.to_owned(),
            capacity: capacity.max(1),
            conn,
            client,
            uid,
            store_uid: adapter::store_uid(&config.prefix),
            channels,
            append: Script::new(APPEND),
            read: Script::new(READ),
            take_session: Script::new(TAKE_SESSION),
            commands_up: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            control,
            control_rx: std::sync::Mutex::new(Some(rx)),
            sessions: session_tx,
            sessions_rx: std::sync::Mutex::new(Some(session_rx)),
            metrics: ClusterMetrics::default(),
            config,
        }))
    }

    /// This instance's adapter uid.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Whether Redis answers and the subscription is up (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.commands_up.load(Ordering::Relaxed) && self.subscribed.load(Ordering::Relaxed)
    }

    fn key(&self, tenant: &str, what: &str) -> String {
        // The tenant in braces: one hash slot per tenant.
        format!("{}:{{{tenant}}}:{what}", self.config.prefix)
    }

    /// The KEYS of the append and read scripts: the tenant's seq, log and ids.
    fn tenant_keys<'a, 'b>(
        &self,
        invocation: &'b mut redis::ScriptInvocation<'a>,
        tenant: &str,
    ) -> &'b mut redis::ScriptInvocation<'a> {
        invocation.key(self.key(tenant, "seq")).key(self.key(tenant, "log")).key(self.key(tenant, "ids"))
    }

    fn session_key(&self, pid: &str) -> String {
        format!("{}:session:{pid}", self.config.prefix)
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

    /// Stores a new event of `tenant` and publishes it; every instance
    /// (this one too) delivers it from the subscription.
    pub async fn append(&self, tenant: &str, new: NewEvent) -> Result<Arc<StoredEvent>, FeedError> {
        let prepared = PreparedEvent::new(new, tenant.into());
        let room = tenant_room(tenant);
        let id = prepared.id.to_string();
        let fields = adapter::EventFields {
            id: &id,
            tenant_id: tenant,
            message: &prepared.message,
            timestamp: &prepared.timestamp,
            author: &prepared.author,
        };
        let template = adapter::event_template(&self.store_uid, &self.namespace, &room, &fields);
        let channel = self.channels.broadcast(&[room.as_str()]);
        let mut conn = self.conn.clone();
        let mut invocation = self.append.prepare_invoke();
        self.tenant_keys(&mut invocation, tenant)
            .arg(self.capacity)
            .arg(&id)
            .arg(&prepared.json_head)
            .arg(&prepared.json_tail)
            .arg(&template.head)
            .arg(&template.tail)
            .arg(&channel);
        let seq: u64 = self.call(invocation.invoke_async(&mut conn)).await?;
        Ok(Arc::new(prepared.with_seq(seq)))
    }

    pub(crate) async fn read_log(
        &self,
        tenant: &str,
        mode: &str,
        arg: &str,
        limit: usize,
    ) -> Result<LogRead, FeedError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.read.prepare_invoke();
        self.tenant_keys(&mut invocation, tenant).arg(mode).arg(arg).arg(limit.min(self.capacity));
        let reply: Vec<RValue> = self.call(invocation.invoke_async(&mut conn)).await?;
        parse_read(tenant, reply).ok_or_else(|| {
            tracing::error!(tenant, "unexpected answer from the read script");
            FeedError::Internal
        })
    }

    /// The most recent `limit` events of `tenant`, oldest first.
    pub async fn latest(&self, tenant: &str, limit: usize) -> Result<Page, FeedError> {
        let read = self.read_log(tenant, "latest", "", limit).await?;
        Ok(Page { events: read.events, has_more: false, gap: false })
    }

    /// Up to `limit` events of `tenant` after `since` (`gap` when `since` is
    /// not retained: then from the oldest retained).
    pub async fn after(&self, tenant: &str, since: &Uuid, limit: usize) -> Result<Page, FeedError> {
        let read = self.read_log(tenant, "after_id", &since.to_string(), limit).await?;
        Ok(Page { events: read.events, has_more: read.has_more, gap: read.status != 0 })
    }

    /// The event `id` of `tenant`, if retained.
    pub async fn get(&self, tenant: &str, id: &Uuid) -> Result<Option<Arc<StoredEvent>>, FeedError> {
        let read = self.read_log(tenant, "get", &id.to_string(), 1).await?;
        Ok(read.events.into_iter().next())
    }

    /// Makes sure this instance has a copy of the tenant's log (a socket of
    /// it is connecting); with `fresh`, one that has caught up with the store
    /// as of now (the socket resumes from an event id it may have seen on
    /// another instance a moment ago). Fails when Redis cannot be reached and
    /// there is no copy yet. Bounded in time.
    pub async fn ensure_tenant(&self, tenant: &str, fresh: bool) -> Result<(), FeedError> {
        let ask = async {
            let (reply, answer) = oneshot::channel();
            self.control.send(Control::Load { tenant: tenant.into(), fresh, reply }).await.ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(self.config.timeout * 2, ask).await {
            Ok(Some(result)) => result,
            _ => Err(FeedError::Unavailable { retry_after: 1 }),
        }
    }

    /// Takes the session kept under `pid` if these credentials opened it.
    pub async fn take_session(
        &self,
        pid: &str,
        tenant: &str,
        user: &str,
        token_digest: &[u8; 32],
    ) -> Result<Option<Kept>, FeedError> {
        let digest = hex(token_digest);
        let mut conn = self.conn.clone();
        let mut invocation = self.take_session.prepare_invoke();
        invocation.key(self.session_key(pid)).arg(tenant).arg(user).arg(&digest);
        let found: Option<(String, u64)> = self.call(invocation.invoke_async(&mut conn)).await?;
        Ok(found.map(|(sid, base_seq)| Kept {
            sid,
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            token_digest: *token_digest,
            rooms: vec![tenant_room(tenant)],
            base_seq,
        }))
    }

    /// Pings Redis, recording the answer (the health check behind `/readyz`).
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        self.call(async move { conn.ping::<String>().await }).await.is_ok()
    }

    async fn publish(&self, channel: &str, message: Vec<u8>) -> Result<(), FeedError> {
        let mut conn = self.conn.clone();
        self.call(async move { conn.publish::<_, _, ()>(channel, message).await }).await
    }
}

/// Lower-case hex, as kept sessions store the token digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_read(tenant: &str, reply: Vec<RValue>) -> Option<LogRead> {
    let int = |v: &RValue| match v {
        RValue::Int(i) => Some(*i),
        _ => None,
    };
    let mut it = reply.into_iter();
    let last = int(&it.next()?)?;
    let _first = int(&it.next()?)?;
    let status = int(&it.next()?)?;
    let has_more = int(&it.next()?)? != 0;
    let anchor = match it.next()? {
        RValue::BulkString(b) => std::str::from_utf8(&b).ok().and_then(|s| Uuid::try_parse(s).ok()),
        _ => None,
    };
    let tenant: Arc<str> = tenant.into();
    let mut events = Vec::with_capacity(it.len());
    for v in it {
        let RValue::BulkString(bytes) = v else { return None };
        let json = String::from_utf8(bytes).ok()?;
        events.push(Arc::new(StoredEvent::from_json(&tenant, json)?));
    }
    Some(LogRead { last_seq: u64::try_from(last).ok()?, status, has_more, anchor, events })
}
