//! The event store in Redis, behind the feed's store seam: the scripts that
//! append (allocating the `seq` and publishing the event) and read a
//! tenant's log consistently, this instance's copy of the logs of the
//! tenants it serves (kept current by [`super::sync`]), and the sessions
//! kept for recovery ([`super::sessions`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::{Script, Value as RValue};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Control, SessionOp, Shared, hex};
use crate::backend::memory::{EventBus, TenantLog};
use crate::feed::event::PreparedEvent;
use crate::feed::idempotency::{KeyLimits, Keyed};
use crate::feed::recovery::{Epoch, Kept, KeptJwt, Owner};
use crate::feed::store::{Answer, Appended, Delivery, Found, Later, Opening, Store};
use crate::feed::{FeedError, NewEvent, Page, PageRequest, StoredEvent, tenant_room};
use eventfeed_protocol::adapter as wire;

/// Allocates the next `seq`, stores the event, trims the log to capacity
/// (dropping evicted ids from the index) and publishes it — one atomic step.
///
/// The log is trimmed in batches: it may hold up to an eighth of the
/// capacity more (64 events at most) before the oldest go, all in one
/// `LPOP` and one `HDEL`, so a full buffer costs two calls every few dozen
/// events, not two per event. What lies before the newest `capacity`
/// events is no longer retained: the read script skips it (the same
/// [`READ`] answers as with an exact trim).
/// KEYS: seq, log, ids, epoch, and for a keyed write the key's value and the
/// tenant's keys in order. ARGV: capacity, id, JSON head, JSON tail, message
/// head, message tail, channel, a new epoch (the history's when this event
/// begins it, `seq` 1, and it has none; a history without one, stored
/// before epochs, gets one from the first read that ensures it), and for a
/// keyed write the message digest (hex), the window (ms), the most keys per
/// tenant, now (ms).
///
/// The index gets one more field, `INDEX_MARKER`, longer than Redis keeps
/// in a compact hash (`hash-max-listpack-value`, 64 bytes by default), so
/// that the index is a hash table: an id is added and dropped in O(1). A
/// compact hash (a listpack, up to `hash-max-listpack-entries` ids: 128 by
/// default, 512 in some distributions' builds) is searched id by id on
/// every change, two scans of the whole buffer per event (the two-instance
/// maximum-rate bench, buffers of 500: 2.46 µs per delivery with the scans,
/// 2.30 without). No id is ever that string (ids are UUIDs).
///
/// Every `redis.call` costs Redis a few µs (about 3 on the bench machine,
/// more than the command itself), so the script makes as few as it can.
///
/// A keyed write whose key is there answers `{-2, json}` (the event it made)
/// or `{-1}` (another message); else the event is stored, the key
/// remembered (`digest|json`, expiring with the window) and its place taken
/// in the tenant's keys, the oldest forgotten beyond the bound. Returns
/// `{seq, forgotten}`.
const APPEND: &str = r#"
local INDEX_MARKER = 'eventfeed: this field keeps the id index a hash table, where adding and dropping an id costs O(1), not a scan of every id kept'
local keyed = #KEYS == 6
if keyed then
  local v = redis.call('GET', KEYS[5])
  if v then
    if string.sub(v, 1, 64) ~= ARGV[9] then return {-1} end
    return {-2, string.sub(v, 66)}
  end
end
local seq = redis.call('INCR', KEYS[1])
if seq == 1 then redis.call('SET', KEYS[4], ARGV[8], 'NX') end
local s = string.format('%d', seq)
local n = redis.call('RPUSH', KEYS[2], ARGV[3] .. s .. ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], s, INDEX_MARKER, '')
local cap = tonumber(ARGV[1])
local over = n - cap
if over > math.min(64, math.ceil(cap / 8)) then
  -- In steps of at most 1000: a buffer made much smaller since the last
  -- append has many to drop, and unpack takes a few thousand at most.
  while over > 0 do
    local k = math.min(over, 1000)
    local old = redis.call('LPOP', KEYS[2], k)
    local ids = {}
    for i = 1, #old do ids[i] = string.sub(old[i], 8, 43) end
    redis.call('HDEL', KEYS[3], unpack(ids))
    over = over - k
  end
end
redis.call('PUBLISH', ARGV[7], ARGV[5] .. cmsgpack.pack(seq) .. ARGV[6])
local forgotten = 0
if keyed then
  local window = tonumber(ARGV[10])
  local now = tonumber(ARGV[12])
  redis.call('SET', KEYS[5], ARGV[9] .. '|' .. ARGV[3] .. s .. ARGV[4], 'PX', window)
  forgotten = redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - window)
  redis.call('ZADD', KEYS[6], now, KEYS[5])
  local over = redis.call('ZCARD', KEYS[6]) - tonumber(ARGV[11])
  if over > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[6], over)
    for i = 1, #oldest, 2 do redis.call('DEL', oldest[i]) end
    forgotten = forgotten + over
  end
  redis.call('PEXPIRE', KEYS[6], window)
end
return {seq, forgotten}
"#;

/// Reads a tenant's log consistently. KEYS: seq, log, ids, epoch. ARGV: mode
/// (`latest`, `after_id`, `after_seq`, `get`), its argument, limit, a new
/// epoch, what to do with it: `ensure` (the history's when it has none),
/// `bump:<epoch>` (the history's when its epoch is still that one: it went
/// back), or nothing; and the capacity: only the newest `capacity` events of
/// the log are retained (the append script trims in batches, see
/// [`APPEND`]).
/// Returns `{last_seq, first_seq, status, has_more, anchor, epoch, events…}`
/// (`epoch` empty when the history has none);
/// status 0 is fine, 1 means the id or `seq` asked for is no longer retained
/// (gap), 2 means the `seq` asked for is newer than the newest (the history
/// was lost). `anchor` is, for `after_seq`, the id of the event at that `seq`
/// when it is retained (so the caller can tell it is the same history), else
/// empty. An index entry that does not match the log is treated as absent.
const READ: &str = r#"
local epoch = redis.call('GET', KEYS[4])
if (ARGV[5] == 'ensure' and not epoch) or (epoch and ARGV[5] == 'bump:' .. epoch) then
  epoch = ARGV[4]
  redis.call('SET', KEYS[4], epoch)
end
epoch = epoch or ''
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local len = redis.call('LLEN', KEYS[2])
local n = math.min(len, tonumber(ARGV[6]))
-- The retained events are the log's last n; `off` is the first one's index.
local off = len - n
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
  if s > last then return {last, first, 2, 0, '', epoch} end
  if s + 1 < first then return {last, first, 1, 0, '', epoch} end
  if s >= first then anchor = id_of(redis.call('LINDEX', KEYS[2], off + s - first)) end
  start = s - first + 1
elseif mode == 'get' then
  local s = redis.call('HGET', KEYS[3], ARGV[2])
  if not s then return {last, first, 1, 0, '', epoch} end
  local i = tonumber(s) - first
  if i < 0 or i >= n then return {last, first, 1, 0, '', epoch} end
  local e = redis.call('LINDEX', KEYS[2], off + i)
  if not e or id_of(e) ~= ARGV[2] then return {last, first, 1, 0, '', epoch} end
  return {last, first, 0, 0, '', epoch, e}
end
local out = {last, first, status, 0, anchor, epoch}
if start < n and limit > 0 then
  local events = redis.call('LRANGE', KEYS[2], off + start, off + start + limit - 1)
  for i = 1, #events do out[#out + 1] = events[i] end
  if start + limit < n then out[4] = 1 end
end
return out
"#;

/// Takes a kept session if the credentials match (else leaves it for its
/// owner). KEYS: the session. ARGV: tenant, user, token digest (hex).
/// Returns `{sid, base_seq, jwt, iat, jti, epoch}` (the last four "" when
/// absent) or nil.
const TAKE_SESSION: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'tenant', 'user', 'digest', 'sid', 'base_seq', 'jwt', 'iat', 'jti', 'epoch')
if v[1] == ARGV[1] and v[2] == ARGV[2] and v[3] == ARGV[3] then
  redis.call('DEL', KEYS[1])
  return {v[4], v[5], v[6] or '', v[7] or '', v[8] or '', v[9] or ''}
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
    /// The history's epoch (`None`: it has none yet).
    pub epoch: Option<Epoch>,
    pub events: Vec<StoredEvent>,
}

/// What a read does with the history's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochIs {
    /// Nothing.
    AsItIs,
    /// Gives the history one if it has none.
    Ensured,
    /// Starts a new one if it is still this one (the history went back).
    NotStill(Epoch),
}

/// How a tenant's log is read ([`READ`]'s modes).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReadMode<'a> {
    /// The most recent events.
    Latest,
    /// The events after this id (`gap` when it is not retained).
    AfterId(&'a Uuid),
    /// The events after this `seq` (status 1 when some are not retained).
    AfterSeq(u64),
    /// The event with this id.
    Get(&'a Uuid),
}

/// The feed's store in Redis (a handle: clones share it).
#[derive(Clone)]
pub struct RedisStore(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    /// The feed's namespace, where stored events are published.
    namespace: String,
    pub(crate) capacity: usize,
    /// This instance's copy of the logs of the tenants it serves.
    pub(crate) bus: EventBus,
    append: Script,
    read: Script,
    take_session: Script,
    /// Requests to the subscription task.
    pub(crate) control: mpsc::Sender<Control>,
    /// Session writes for recovery, in order.
    pub(crate) sessions: mpsc::Sender<SessionOp>,
    /// The recovery window (zero: recovery off).
    pub(crate) window: Duration,
    /// The `pid`s of this instance's live sockets, whose sessions it renews.
    pub(crate) live: Mutex<HashSet<String, foldhash::fast::RandomState>>,
    /// How long and how many idempotency keys are remembered.
    keys: KeyLimits,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.0.shared.config.prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    pub(super) fn new(
        shared: Arc<Shared>,
        namespace: &str,
        capacity: usize,
        window: Duration,
        control: mpsc::Sender<Control>,
        sessions: mpsc::Sender<SessionOp>,
        keys: KeyLimits,
    ) -> Self {
        let capacity = capacity.max(1);
        RedisStore(Arc::new(Inner {
            shared,
            namespace: namespace.to_owned(),
            capacity,
            bus: EventBus::new(capacity),
            append: Script::new(APPEND),
            read: Script::new(READ),
            take_session: Script::new(TAKE_SESSION),
            control,
            sessions,
            window,
            live: Mutex::default(),
            keys,
        }))
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.0
    }
}

impl Inner {
    fn key(&self, tenant: &str, what: &str) -> String {
        // The tenant in braces: one hash slot per tenant.
        format!("{}:{{{tenant}}}:{what}", self.shared.config.prefix)
    }

    /// The KEYS of the append and read scripts: the tenant's seq, log, ids
    /// and epoch.
    fn tenant_keys<'a, 'b>(
        &self,
        invocation: &'b mut redis::ScriptInvocation<'a>,
        tenant: &str,
    ) -> &'b mut redis::ScriptInvocation<'a> {
        invocation
            .key(self.key(tenant, "seq"))
            .key(self.key(tenant, "log"))
            .key(self.key(tenant, "ids"))
            .key(self.key(tenant, "epoch"))
    }

    /// Where a keyed write's key is remembered, and the tenant's keys in order.
    fn key_keys(&self, tenant: &str, keyed: &Keyed<'_>) -> (String, String) {
        (self.key(tenant, &format!("idem:{}", hex(&keyed.slot()))), self.key(tenant, "idem"))
    }

    pub(crate) fn session_key(&self, pid: &str) -> String {
        format!("{}:session:{pid}", self.shared.config.prefix)
    }

    /// The feed's namespace, where stored events are published.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn live(&self) -> MutexGuard<'_, HashSet<String, foldhash::fast::RandomState>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a new event of `tenant` and publishes it; every instance
    /// (this one too) delivers it from the subscription. With `keyed`, the
    /// key is checked and remembered in the same step.
    async fn append(&self, tenant: &str, new: NewEvent, keyed: Option<OwnedKeyed>) -> Result<Appended, FeedError> {
        let prepared = PreparedEvent::new(new, tenant.into());
        let room = tenant_room(tenant);
        let id = prepared.id.to_string();
        let fields = wire::EventFields {
            id: &id,
            tenant_id: tenant,
            message: &prepared.message,
            timestamp: &prepared.timestamp,
            author: &prepared.author,
        };
        let template = wire::event_template(&self.shared.store_uid, &self.namespace, &room, &fields);
        let channel = self.shared.channels(&self.namespace).broadcast(&[room.as_str()]);
        let mut conn = self.shared.conn.clone();
        let mut invocation = self.append.prepare_invoke();
        self.tenant_keys(&mut invocation, tenant)
            .arg(self.capacity)
            .arg(&id)
            .arg(&prepared.json_head)
            .arg(&prepared.json_tail)
            .arg(&template.head)
            .arg(&template.tail)
            .arg(&channel)
            .arg(Epoch::random().to_string());
        if let Some(keyed) = &keyed {
            let (value, order) = keyed.keys.clone();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            invocation
                .key(value)
                .key(order)
                .arg(hex(&keyed.message))
                .arg(u64::try_from(self.keys.window.as_millis()).unwrap_or(u64::MAX).max(1))
                .arg(self.keys.max_keys)
                .arg(u64::try_from(now).unwrap_or(0));
        }
        let reply: Vec<RValue> = self.shared.call(invocation.invoke_async(&mut conn)).await?;
        let int = |v: Option<&RValue>| match v {
            Some(RValue::Int(i)) => Some(*i),
            _ => None,
        };
        let unexpected = || {
            tracing::error!(tenant, "unexpected answer from the append script");
            FeedError::Internal
        };
        match int(reply.first()) {
            Some(-1) => Err(FeedError::IdempotencyKeyReused),
            Some(-2) => {
                let event = match reply.get(1) {
                    Some(RValue::BulkString(json)) => String::from_utf8(json.clone()).ok(),
                    _ => None,
                }
                .and_then(|json| StoredEvent::from_json(&Arc::from(tenant), json))
                .ok_or_else(unexpected)?;
                Ok(Appended { event, replayed: true, forgotten: 0 })
            }
            Some(seq) if seq > 0 => {
                let event = prepared.with_seq(seq as u64);
                let forgotten = int(reply.get(1)).and_then(|f| u64::try_from(f).ok()).unwrap_or(0);
                Ok(Appended { event, replayed: false, forgotten })
            }
            _ => Err(unexpected()),
        }
    }

    /// The event a keyed write made, if its key is remembered.
    async fn remembered(&self, tenant: &str, keyed: OwnedKeyed) -> Result<Found, FeedError> {
        let mut conn = self.shared.conn.clone();
        let value: Option<Vec<u8>> =
            self.shared.call(redis::cmd("GET").arg(&keyed.keys.0).query_async(&mut conn)).await?;
        let Some(value) = value else { return Ok(None) };
        let remembered = std::str::from_utf8(&value).ok().and_then(|v| v.split_once('|'));
        let Some((digest, json)) = remembered else {
            tracing::error!(tenant, "a remembered idempotency key that cannot be read");
            return Err(FeedError::Internal);
        };
        if digest != hex(&keyed.message) {
            return Err(FeedError::IdempotencyKeyReused);
        }
        let event = StoredEvent::from_json(&Arc::from(tenant), json.to_owned()).ok_or(FeedError::Internal)?;
        Ok(Some(event))
    }

    /// Reads the tenant's log as `mode` says, at most `limit` events.
    pub(crate) async fn read_log(&self, tenant: &str, mode: ReadMode<'_>, limit: usize) -> Result<LogRead, FeedError> {
        self.read_log_epoch(tenant, mode, limit, EpochIs::AsItIs).await
    }

    /// [`read_log`](Self::read_log), making sure the history has an epoch
    /// (a copy is being loaded), or starting a new one if it is still
    /// `went_back` (it went back within that epoch).
    pub(crate) async fn read_log_epoch(
        &self,
        tenant: &str,
        mode: ReadMode<'_>,
        limit: usize,
        epoch: EpochIs,
    ) -> Result<LogRead, FeedError> {
        let (name, arg) = match mode {
            ReadMode::Latest => ("latest", String::new()),
            ReadMode::AfterId(id) => ("after_id", id.to_string()),
            ReadMode::AfterSeq(seq) => ("after_seq", seq.to_string()),
            ReadMode::Get(id) => ("get", id.to_string()),
        };
        let mut conn = self.shared.conn.clone();
        let mut invocation = self.read.prepare_invoke();
        let epoch = match epoch {
            EpochIs::AsItIs => String::new(),
            EpochIs::Ensured => "ensure".to_owned(),
            EpochIs::NotStill(went_back) => format!("bump:{went_back}"),
        };
        self.tenant_keys(&mut invocation, tenant)
            .arg(name)
            .arg(arg)
            .arg(limit.min(self.capacity))
            .arg(Epoch::random().to_string())
            .arg(epoch)
            .arg(self.capacity);
        let reply: Vec<RValue> = self.shared.call(invocation.invoke_async(&mut conn)).await?;
        parse_read(tenant, reply).ok_or_else(|| {
            tracing::error!(tenant, "unexpected answer from the read script");
            FeedError::Internal
        })
    }

    /// A page of `tenant`'s events, from the store (so any instance answers alike).
    async fn read(&self, tenant: &str, request: PageRequest) -> Result<Page, FeedError> {
        match request.since {
            Some(since) => {
                let read = self.read_log(tenant, ReadMode::AfterId(&since), request.limit).await?;
                Ok(Page { events: read.events, has_more: read.has_more, gap: read.status != 0 })
            }
            None => {
                let read = self.read_log(tenant, ReadMode::Latest, request.limit).await?;
                Ok(Page { events: read.events, has_more: false, gap: false })
            }
        }
    }

    /// The event `id` of `tenant`, if retained.
    async fn get(&self, tenant: &str, id: &Uuid) -> Result<Option<StoredEvent>, FeedError> {
        let read = self.read_log(tenant, ReadMode::Get(id), 1).await?;
        Ok(read.events.into_iter().next())
    }

    /// Makes sure this instance has a copy of the tenant's log (a socket of
    /// it is connecting); with `fresh`, one that has caught up with the store
    /// as of now (the socket resumes from an event id it may have seen on
    /// another instance a moment ago). Fails when Redis cannot be reached and
    /// there is no copy yet. Bounded in time.
    async fn ensure_tenant(&self, tenant: &str, fresh: bool) -> Result<(), FeedError> {
        let ask = async {
            let (reply, answer) = oneshot::channel();
            self.control.send(Control::Load { tenant: tenant.into(), fresh, reply }).await.ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(self.shared.config.timeout * 2, ask).await {
            Ok(Some(result)) => result,
            _ => Err(FeedError::Unavailable { retry_after: 1 }),
        }
    }

    /// Takes the session kept under `pid` if these credentials opened it.
    async fn take_session(&self, pid: &str, owner: &OwnedOwner) -> Result<Option<Kept>, FeedError> {
        let digest = hex(&owner.token_digest);
        let mut conn = self.shared.conn.clone();
        let mut invocation = self.take_session.prepare_invoke();
        invocation.key(self.session_key(pid)).arg(&owner.tenant).arg(&owner.user).arg(&digest);
        type Taken = (String, u64, String, String, String, String);
        let found: Option<Taken> = self.shared.call(invocation.invoke_async(&mut conn)).await?;
        Ok(found.map(|(sid, base_seq, jwt, iat, jti, epoch)| Kept {
            // A session of a history without an epoch: one no history has.
            epoch: Epoch::parse(&epoch).unwrap_or_else(Epoch::random),
            sid,
            tenant: owner.tenant.clone(),
            user: owner.user.clone(),
            token_digest: owner.token_digest,
            jwt: (jwt == "1").then(|| KeptJwt { iat: iat.parse().ok(), jti: (!jti.is_empty()).then_some(jti) }),
            rooms: vec![tenant_room(&owner.tenant)],
            base_seq,
        }))
    }
}

/// A keyed write, owned by the future that carries it out: the Redis keys
/// of its key and the message's digest.
struct OwnedKeyed {
    keys: (String, String),
    message: [u8; 32],
}

/// The credentials of a connecting socket, owned by the future that opens
/// its tenant.
struct OwnedOwner {
    tenant: String,
    user: String,
    token_digest: [u8; 32],
}

impl Store for RedisStore {
    type View = TenantLog;

    fn append<D: Delivery>(
        &self,
        tenant: &str,
        event: NewEvent,
        keyed: Option<Keyed<'_>>,
        _delivery: &D,
    ) -> Answer<Result<Appended, FeedError>, impl Later<Appended> + use<D>> {
        let keyed = keyed.map(|k| OwnedKeyed { keys: self.0.key_keys(tenant, &k), message: k.message });
        let (inner, tenant) = (self.0.clone(), tenant.to_owned());
        Answer::Later(async move { inner.append(&tenant, event, keyed).await })
    }

    fn remembered(
        &self,
        tenant: &str,
        keyed: Keyed<'_>,
    ) -> Answer<Result<Found, FeedError>, impl Later<Found> + use<>> {
        let keyed = OwnedKeyed { keys: self.0.key_keys(tenant, &keyed), message: keyed.message };
        let (inner, tenant) = (self.0.clone(), tenant.to_owned());
        Answer::Later(async move { inner.remembered(&tenant, keyed).await })
    }

    fn read(&self, tenant: &str, request: PageRequest) -> Answer<Result<Page, FeedError>, impl Later<Page> + use<>> {
        let (inner, tenant) = (self.0.clone(), tenant.to_owned());
        Answer::Later(async move { inner.read(&tenant, request).await })
    }

    fn get(&self, tenant: &str, id: &Uuid) -> Answer<Result<Found, FeedError>, impl Later<Found> + use<>> {
        let (inner, tenant, id) = (self.0.clone(), tenant.to_owned(), *id);
        Answer::Later(async move { inner.get(&tenant, &id).await })
    }

    fn open(&self, opening: Opening<'_>) -> Answer<Result<Option<Kept>, FeedError>, impl Later<Option<Kept>> + use<>> {
        let inner = self.0.clone();
        let (tenant, fresh) = (opening.tenant.to_owned(), opening.fresh);
        let recover = opening.recover.map(|(pid, Owner { tenant, user, token_digest })| {
            let owner = OwnedOwner { tenant: tenant.to_owned(), user: user.to_owned(), token_digest: *token_digest };
            (pid.to_owned(), owner)
        });
        Answer::Later(async move {
            // The snapshot, recovery and replay on connect come from this
            // instance's copy of the tenant's log: make sure it is there.
            inner.ensure_tenant(&tenant, fresh).await?;
            let Some((pid, owner)) = recover else { return Ok(None) };
            // Redis failing here only costs the recovery: a fresh session.
            Ok(inner.take_session(&pid, &owner).await.unwrap_or(None))
        })
    }

    fn with_tenant<R>(&self, tenant: &str, f: impl FnOnce(&TenantLog) -> R) -> R {
        self.0.bus.with_log(tenant, f)
    }

    fn session_opened(&self, pid: &str, kept: impl FnOnce() -> Kept) {
        if self.0.window.is_zero() {
            return;
        }
        self.0.live().insert(pid.to_owned());
        self.0.queue_session(SessionOp::Keep { pid: pid.to_owned(), kept: Box::new(kept()) });
    }

    fn session_closed(&self, pid: &str, recoverable: bool, kept: impl FnOnce() -> Kept) {
        if self.0.window.is_zero() {
            return;
        }
        self.0.live().remove(pid);
        // Kept in Redis, so the client can come back on any instance.
        let op = match recoverable {
            true => SessionOp::Keep { pid: pid.to_owned(), kept: Box::new(kept()) },
            false => SessionOp::Forget { pid: pid.to_owned() },
        };
        self.0.queue_session(op);
    }

    fn readiness(&self) -> Result<(), &'static str> {
        if self.0.shared.is_ready() { Ok(()) } else { Err("redis unavailable") }
    }

    fn history_went_back(&self, tenant: &str, epoch: Epoch) {
        // The subscription task reloads the copy, starting a new epoch in
        // Redis if the history is still of this one, and closes the
        // tenant's sockets here (they start over).
        let control = Control::WentBack { tenant: tenant.into(), epoch };
        if self.0.control.try_send(control).is_err() {
            tracing::warn!(tenant, "could not ask for a new epoch (the sync task is busy); the next fetch will see it");
        }
    }

    fn forget_sessions(&self, _still_held: impl Fn(&Kept) -> bool) -> usize {
        // Kept sessions live in Redis under their pids, shared by the fleet:
        // each is checked against the credentials when it is taken back.
        0
    }

    fn sweep(&self) -> u64 {
        // Keys expire in Redis by themselves; the bound is kept by the append.
        0
    }

    fn finish(&self, within: Duration) -> impl std::future::Future<Output = bool> + Send {
        let inner = self.0.clone();
        async move {
            let ok = inner.finish_writes(within).await;
            if !ok {
                tracing::warn!("some sessions kept for recovery were not written to redis before exit");
            }
            ok
        }
    }
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
    let epoch = match it.next()? {
        RValue::BulkString(b) => std::str::from_utf8(&b).ok().and_then(Epoch::parse),
        _ => None,
    };
    let tenant: Arc<str> = tenant.into();
    let mut events = Vec::with_capacity(it.len());
    for v in it {
        let RValue::BulkString(bytes) = v else { return None };
        let json = String::from_utf8(bytes).ok()?;
        events.push(StoredEvent::from_json(&tenant, json)?);
    }
    Some(LogRead { last_seq: u64::try_from(last).ok()?, status, has_more, anchor, epoch, events })
}
