//! The one task that owns this instance's subscription: it keeps the copies
//! of the tenants' logs current, in `seq` order, and delivers.
//!
//! Everything that changes a copy goes through this task, one message at a
//! time, so there is no race between a live event, a load and a fetch:
//!
//! - a tenant gets a copy when a socket of it first connects here
//!   ([`Control::Load`]); live events arriving while it loads wait in a
//!   bounded `pending` map and are applied after it;
//! - a live event with the next `seq` is applied (stored and delivered under
//!   the tenant's lock); an older one is a duplicate and dropped; a newer one
//!   means a hole: it waits while the missing events are fetched from the
//!   store, then everything is applied in order;
//! - an event whose `seq` the copy has under another id, a fetch whose
//!   anchor (the id at the copy's newest `seq`) differs or whose history is
//!   behind the copy, or another epoch, means the store's history was lost
//!   or went back, and began again: the copy is reset (below). When the
//!   store's epoch did not change with it (a Redis rolled back to an older
//!   append-only file), the reload starts a new one: `seq`s are never
//!   reused within an epoch, and no offset of the old history resumes;
//! - stored events of another deployment on the same Redis (another key
//!   prefix: another store uid) are ignored;
//! - when the subscription drops, every copy is marked stale; once it is back,
//!   each copy fetches what it missed (at most 32 reads in flight). A copy that cannot be completed (the
//!   missed events were evicted, or Redis lost its history) is reloaded and
//!   the tenant's sockets here are closed, so their clients come back through
//!   recovery or a snapshot rather than with a silent gap.
//!
//! It also owns the adapter's side of the subscription, for every namespace:
//! broadcasts of other servers (Node ones, the emitter) are re-encoded once
//! and queued to the local sockets they select; their requests are carried
//! out and answered; responses to this instance's requests go to the
//! [`RedisAdapter`] that waits for them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::store::{EpochIs, Inner, LogRead, ReadMode, RedisStore};
use super::{Control, RedisAdapter, Shared};
use crate::backend::memory::Applied;
use crate::feed::recovery::Epoch;
use crate::feed::{Delivery, FeedError, StoredEvent, TENANT_ROOM_PREFIX};
use crate::sio::Namespaces;
use eventfeed_protocol::adapter as wire;

/// Live events of one tenant kept while its copy is loading or being
/// completed; beyond this the copy is fetched again instead.
fn max_pending(capacity: usize) -> usize {
    capacity.saturating_mul(2).max(64)
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const WATCH_EVERY: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct TenantSync {
    /// The copy exists (loaded once).
    loaded: bool,
    /// A fetch (load or completion) is in flight.
    fetching: bool,
    /// Fetch again when the current one is done (or when Redis is back).
    needs_fetch: bool,
    /// Waiting in [`SyncTask::queue`] for a fetch slot.
    queued: bool,
    /// The next fetch reloads the whole copy and closes the tenant's sockets
    /// (their history could not be completed).
    reset: bool,
    /// With `reset`: the history went back within this epoch; the reload
    /// starts a new one if the store's is still it.
    bump: Option<Epoch>,
    /// Live events waiting for the copy to catch up, by `seq`.
    pending: BTreeMap<u64, StoredEvent>,
    /// Connecting sockets waiting for the next fetch to start and end.
    waiting: Vec<oneshot::Sender<Result<(), FeedError>>>,
    /// Connecting sockets waiting for the fetch in flight.
    inflight: Vec<oneshot::Sender<Result<(), FeedError>>>,
}

enum FetchKind {
    Load,
    After(u64),
}

struct Fetched {
    tenant: Arc<str>,
    kind: FetchKind,
    result: Result<LogRead, FeedError>,
}

type FetchFuture = Pin<Box<dyn Future<Output = Fetched> + Send>>;
type Connecting = Pin<Box<dyn Future<Output = redis::RedisResult<(PubSubSink, PubSubStream)>> + Send>>;

struct SyncTask<D> {
    /// The store whose copies this task keeps.
    store: Arc<Inner>,
    shared: Arc<Shared>,
    adapter: RedisAdapter,
    /// Where the copies' new events go.
    delivery: D,
    /// Every namespace of this server, for the other servers' broadcasts and requests.
    namespaces: Arc<Namespaces>,
    /// The adapter's channels of each namespace; the first is the feed's.
    channels: Vec<(String, wire::Channels)>,
    tenants: HashMap<Arc<str>, TenantSync>,
    fetches: FuturesUnordered<FetchFuture>,
    /// Tenants waiting for a fetch slot (at most [`MAX_FETCHES`] in flight).
    queue: std::collections::VecDeque<Arc<str>>,
    subscribed: bool,
}

/// Reads of the store in flight at once; more wait their turn (a
/// resubscription with many tenants does not flood Redis).
const MAX_FETCHES: usize = 32;

/// Starts the subscription task until `shutdown`.
pub(super) fn spawn<D: Delivery + Clone>(
    store: RedisStore,
    adapter: RedisAdapter,
    delivery: D,
    namespaces: Arc<Namespaces>,
    control: tokio::sync::mpsc::Receiver<Control>,
    shutdown: CancellationToken,
) {
    let store = store.inner().clone();
    let shared = store.shared.clone();
    let feed_nsp = store.namespace().to_owned();
    let mut names: Vec<String> = namespaces.iter().map(|n| n.name().to_owned()).collect();
    names.retain(|n| *n != feed_nsp);
    names.insert(0, feed_nsp);
    let channels = names.into_iter().map(|nsp| (nsp.clone(), shared.channels(&nsp))).collect();
    let task = SyncTask {
        store,
        shared,
        adapter,
        delivery,
        namespaces,
        channels,
        tenants: HashMap::new(),
        fetches: FuturesUnordered::new(),
        queue: std::collections::VecDeque::new(),
        subscribed: false,
    };
    tokio::spawn(task.run(control, shutdown));
}

/// Subscribes to the adapter's channels of every namespace.
async fn subscribe(
    shared: Arc<Shared>,
    channels: Vec<wire::Channels>,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let mut pubsub = shared.client.get_async_pubsub().await?;
    for c in &channels {
        pubsub.psubscribe(c.pattern()).await?;
        pubsub.subscribe(&[c.request.as_str(), c.response.as_str(), c.specific_response.as_str()]).await?;
    }
    Ok(pubsub.split())
}

async fn next_message(stream: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn connected(connecting: &mut Option<Connecting>) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    match connecting {
        Some(c) => c.await,
        None => std::future::pending().await,
    }
}

async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<D: Delivery> SyncTask<D> {
    fn subscribe(&self) -> Connecting {
        Box::pin(subscribe(self.shared.clone(), self.channels.iter().map(|(_, c)| c.clone()).collect()))
    }

    async fn run(mut self, mut control: tokio::sync::mpsc::Receiver<Control>, shutdown: CancellationToken) {
        let mut stream: Option<PubSubStream> = None;
        let mut connecting: Option<Connecting> = Some(self.subscribe());
        let mut retry_at: Option<Instant> = None;
        let mut backoff = MIN_BACKOFF;
        let mut generation = 0u64;
        let mut retry = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(request) = control.recv() => match request {
                    Control::Load { tenant, fresh, reply } => self.load(tenant, fresh, reply),
                    Control::WentBack { tenant, epoch } => self.went_back(&tenant, epoch),
                    Control::SubscriptionLost { generation: g } if g == generation && stream.is_some() => {
                        tracing::warn!("redis subscription stopped answering; reconnecting");
                        stream = None;
                        self.lost();
                        retry_at = Some(Instant::now() + backoff);
                    }
                    Control::SubscriptionLost { .. } => {}
                },
                Some(fetched) = self.fetches.next(), if !self.fetches.is_empty() => self.fetched(fetched),
                result = connected(&mut connecting) => {
                    connecting = None;
                    match result {
                        Ok((sink, s)) => {
                            generation += 1;
                            backoff = MIN_BACKOFF;
                            stream = Some(s);
                            self.subscribed = true;
                            self.shared.subscribed.store(true, Ordering::Relaxed);
                            tokio::spawn(watch(sink, self.shared.clone(), self.store.control.clone(), generation, shutdown.clone()));
                            tracing::info!(uid = %self.shared.uid, "redis subscription established");
                            self.catch_up();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to redis");
                            retry_at = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
                _ = wait_until(retry_at) => {
                    retry_at = None;
                    connecting = Some(self.subscribe());
                }
                message = next_message(&mut stream) => match message {
                    Some(message) => self.message(&message),
                    None => {
                        tracing::warn!("redis subscription closed; reconnecting");
                        stream = None;
                        self.lost();
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
                _ = retry.tick() => {
                    if self.subscribed {
                        self.catch_up_flagged();
                    }
                }
            }
        }
        self.shared.subscribed.store(false, Ordering::Relaxed);
    }

    fn load(&mut self, tenant: Arc<str>, fresh: bool, reply: oneshot::Sender<Result<(), FeedError>>) {
        if let Some(t) = self.tenants.get_mut(&tenant) {
            if t.loaded && (!fresh || !self.subscribed) {
                // A copy that may be catching up is still a gapless prefix:
                // a snapshot from it is followed by what it fetches.
                let _ = reply.send(Ok(()));
            } else if !t.loaded && t.fetching {
                t.inflight.push(reply);
            } else {
                t.waiting.push(reply);
                self.fetch(&tenant);
            }
            return;
        }
        if !self.subscribed {
            let _ = reply.send(Err(FeedError::Unavailable { retry_after: 1 }));
            return;
        }
        let mut t = TenantSync::default();
        t.waiting.push(reply);
        self.tenants.insert(tenant.clone(), t);
        self.fetch(&tenant);
    }

    /// Starts a fetch for the tenant (or flags one if one is in flight, Redis
    /// is away, or too many are in flight).
    fn fetch(&mut self, tenant: &Arc<str>) {
        let Some(t) = self.tenants.get_mut(tenant) else { return };
        if t.fetching || !self.subscribed {
            t.needs_fetch = true;
            return;
        }
        if self.fetches.len() >= MAX_FETCHES {
            t.needs_fetch = true;
            if !std::mem::replace(&mut t.queued, true) {
                self.queue.push_back(tenant.clone());
            }
            return;
        }
        t.fetching = true;
        t.needs_fetch = false;
        let waiting = std::mem::take(&mut t.waiting);
        t.inflight.extend(waiting);
        let kind = match self.store.bus.last_seq(tenant) {
            Some(last) if t.loaded && !t.reset => FetchKind::After(last),
            _ => FetchKind::Load,
        };
        let epoch = match t.bump.take() {
            Some(went_back) => EpochIs::NotStill(went_back),
            None => EpochIs::Ensured,
        };
        let store = self.store.clone();
        let tenant = tenant.clone();
        let capacity = store.capacity;
        self.fetches.push(Box::pin(async move {
            let result = match kind {
                FetchKind::Load => store.read_log_epoch(&tenant, ReadMode::Latest, capacity, epoch).await,
                FetchKind::After(seq) => store.read_log(&tenant, ReadMode::AfterSeq(seq), capacity).await,
            };
            Fetched { tenant, kind, result }
        }));
    }

    /// Gives queued tenants the fetch slots that are free.
    fn start_queued(&mut self) {
        while self.fetches.len() < MAX_FETCHES
            && let Some(tenant) = self.queue.pop_front()
        {
            if let Some(t) = self.tenants.get_mut(&tenant) {
                t.queued = false;
                if t.needs_fetch {
                    self.fetch(&tenant);
                }
            }
        }
    }

    fn fetched(&mut self, fetched: Fetched) {
        self.apply_fetched(fetched);
        self.start_queued();
    }

    fn apply_fetched(&mut self, fetched: Fetched) {
        let Fetched { tenant, kind, result } = fetched;
        let Some(t) = self.tenants.get_mut(&tenant) else { return };
        t.fetching = false;
        let inflight = std::mem::take(&mut t.inflight);
        let read = match result {
            Ok(read) => read,
            Err(e) => {
                if t.loaded {
                    // Try again later (the retry tick, or the next subscription);
                    // the copy there is a gapless prefix meanwhile.
                    t.needs_fetch = true;
                    inflight.into_iter().for_each(|w| drop(w.send(Ok(()))));
                } else {
                    for waiter in inflight.into_iter().chain(t.waiting.drain(..)) {
                        let _ = waiter.send(Err(e.clone()));
                    }
                    self.tenants.remove(&tenant);
                }
                return;
            }
        };
        let mut progressed = true;
        match kind {
            FetchKind::Load => {
                let reset = std::mem::take(&mut t.reset);
                // A history without an epoch (an old store; raced by a flush):
                // one no offset has, so nothing resumes into it.
                let epoch = read.epoch.unwrap_or_else(Epoch::random);
                self.store.bus.replace(&tenant, read.events, read.last_seq, epoch);
                t.loaded = true;
                inflight.into_iter().for_each(|w| drop(w.send(Ok(()))));
                if reset {
                    self.delivery.reset(&tenant);
                }
            }
            FetchKind::After(_) if t.reset => {
                // The copy is to be reloaded: what was fetched for it no longer
                // applies, and sockets connecting now wait for the reload.
                t.waiting.extend(inflight);
                self.fetch(&tenant);
                return;
            }
            FetchKind::After(seq) => {
                let mine = self.store.bus.id_at(&tenant, seq);
                let same_history = match (read.anchor, mine) {
                    (Some(theirs), Some(mine)) => theirs == mine,
                    _ => true,
                };
                let copy_epoch = self.store.bus.epoch_of(&tenant);
                let same_epoch = read.epoch.is_some() && read.epoch == copy_epoch;
                if read.status != 0 || !same_history || !same_epoch {
                    tracing::warn!(tenant = %tenant, status = read.status, same_history, same_epoch, "the store no longer has what this copy missed (evicted, or its history was lost or went back); reloading and closing this tenant's sockets so they recover or start from a snapshot");
                    // Behind the copy, or another event at the copy's newest
                    // `seq`, in the same epoch: the history went back.
                    if same_epoch && (read.status == 2 || !same_history) {
                        t.bump = copy_epoch;
                    }
                    t.reset = true;
                    t.pending.clear();
                    t.waiting.extend(inflight);
                    self.shared.metrics.resets.inc();
                    self.fetch(&tenant);
                    return;
                }
                progressed = !read.events.is_empty();
                if read.has_more {
                    t.needs_fetch = true;
                }
                for event in &read.events {
                    let applied = self.store.bus.apply(event, |e, epoch| self.delivery.deliver(e, epoch));
                    if applied == Applied::Appended {
                        self.shared.metrics.missed_events_fetched.inc();
                    }
                    if let Applied::Gap { .. } = applied {
                        // The fetch raced a trim; fetch again.
                        t.needs_fetch = true;
                        break;
                    }
                }
                inflight.into_iter().for_each(|w| drop(w.send(Ok(()))));
            }
        }
        self.drain_pending(&tenant, progressed);
    }

    /// A kept session proved the history went back within `epoch`: reload
    /// the copy (closing the tenant's sockets here), starting a new epoch
    /// in Redis if the history's is still that one.
    fn went_back(&mut self, tenant: &Arc<str>, epoch: Epoch) {
        let Some(t) = self.tenants.get_mut(tenant) else { return };
        if self.store.bus.epoch_of(tenant) != Some(epoch) {
            return;
        }
        t.reset = true;
        t.bump = Some(epoch);
        t.pending.clear();
        self.shared.metrics.resets.inc();
        self.fetch(tenant);
    }

    /// Applies the waiting live events that now follow the copy. A hole that
    /// remains is fetched at once if the last fetch made progress, else on the
    /// next retry tick (a hole the store cannot fill is not retried in a loop).
    fn drain_pending(&mut self, tenant: &Arc<str>, refetch_now: bool) {
        let Some(t) = self.tenants.get_mut(tenant) else { return };
        let mut duplicates = Vec::new();
        while let Some(entry) = t.pending.first_entry() {
            match self.store.bus.apply(entry.get(), |e, epoch| self.delivery.deliver(e, epoch)) {
                Applied::Appended => {
                    entry.remove();
                }
                Applied::Duplicate => duplicates.push(entry.remove()),
                Applied::Gap { .. } => {
                    t.needs_fetch = true;
                    break;
                }
            }
        }
        if t.needs_fetch && refetch_now {
            self.fetch(tenant);
        }
        for event in duplicates {
            self.check_duplicate(tenant, &event);
        }
    }

    fn lost(&mut self) {
        self.subscribed = false;
        self.shared.subscribed.store(false, Ordering::Relaxed);
        for t in self.tenants.values_mut() {
            t.needs_fetch = true;
        }
    }

    /// After (re)subscribing: every copy fetches what it may have missed.
    fn catch_up(&mut self) {
        let tenants: Vec<Arc<str>> = self.tenants.keys().cloned().collect();
        for tenant in tenants {
            if let Some(t) = self.tenants.get_mut(&tenant) {
                t.needs_fetch = true;
            }
            self.fetch(&tenant);
        }
    }

    fn catch_up_flagged(&mut self) {
        let flagged: Vec<Arc<str>> =
            self.tenants.iter().filter(|(_, t)| t.needs_fetch && !t.fetching).map(|(k, _)| k.clone()).collect();
        for tenant in flagged {
            self.fetch(&tenant);
        }
    }

    fn message(&mut self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        let payload = message.get_payload_bytes();
        let Some((index, (nsp, channels))) = self.channels.iter().enumerate().find(|(_, (_, c))| {
            channel == c.request
                || channel == c.response
                || channel == c.specific_response
                || channel.starts_with(c.broadcast_prefix.as_str())
        }) else {
            return;
        };
        if channel == channels.request {
            self.adapter.on_request(nsp, payload, &self.namespaces);
        } else if channel == channels.response || channel == channels.specific_response {
            self.adapter.on_response(payload);
        } else {
            // Stored events (almost every message here) are read straight
            // from the layout the store publishes, without decoding a tree.
            if index == 0
                && let Some(m) = wire::stored_event_message(payload)
                && m.uid.starts_with(wire::STORE_UID)
            {
                if m.uid == self.shared.store_uid {
                    self.stored_event(m.seq, m.fields.tenant_id, m.room, m.fields.id, || Some(m.json()));
                }
                // Else another deployment's store on the same Redis.
                return;
            }
            match wire::decode_broadcast(payload) {
                Ok(b) if b.uid == self.shared.uid => {}
                // Stored events are published on the feed's namespace (the first).
                Ok(b) if b.uid == self.shared.store_uid && index == 0 => {
                    let Some((seq, fields)) = wire::event_from_broadcast(&b) else {
                        tracing::debug!("ignoring a malformed stored event");
                        return;
                    };
                    let Some(tenant) = fields.get("tenant_id").and_then(|t| t.as_str()) else { return };
                    let id = fields.get("id").and_then(|v| v.as_str()).unwrap_or_default();
                    let [room] = b.rooms.as_slice() else { return };
                    self.stored_event(seq, tenant, room, id, || serde_json::to_string(fields).ok());
                }
                // Another deployment's store on the same Redis (channels are
                // global to the server, not per database or key prefix).
                Ok(b) if b.uid.starts_with(wire::STORE_UID) => {}
                Ok(b) => self.adapter.on_broadcast(&b, &self.namespaces),
                Err(e) => tracing::debug!(error = %e, channel, "ignoring a malformed adapter message"),
            }
        }
    }

    /// A stored event of `tenant` (its `seq`, its one room, its id and how
    /// to write its JSON) from the subscription.
    fn stored_event(&mut self, seq: u64, tenant: &str, room: &str, id: &str, json: impl FnOnce() -> Option<String>) {
        // Only a tenant's own room carries its events; and only tenants with a
        // copy here need them (nothing is decoded further for the others).
        if room.strip_prefix(TENANT_ROOM_PREFIX) != Some(tenant) {
            return;
        }
        let Some((tenant, _)) = self.tenants.get_key_value(tenant) else { return };
        let tenant = tenant.clone();
        let (Ok(id), Some(json)) = (uuid::Uuid::try_parse(id), json()) else { return };
        let Some(event) = StoredEvent::from_parts(id, seq, &tenant, json) else { return };
        let limit = max_pending(self.store.capacity);
        let Some(t) = self.tenants.get_mut(&tenant) else { return };
        let wait = |t: &mut TenantSync, event: StoredEvent| {
            if t.pending.len() >= limit {
                // Bound hit: forget the waiting events; the next fetch
                // brings them from the store.
                t.pending.clear();
                t.needs_fetch = true;
            } else {
                t.pending.insert(event.seq(), event);
            }
        };
        if !t.loaded || t.fetching {
            wait(t, event);
            return;
        }
        match self.store.bus.apply(&event, |e, epoch| self.delivery.deliver(e, epoch)) {
            Applied::Appended if t.pending.is_empty() => {}
            Applied::Appended => self.drain_pending(&tenant, false),
            Applied::Gap { .. } => {
                wait(t, event);
                self.fetch(&tenant);
            }
            Applied::Duplicate => self.check_duplicate(&tenant, &event),
        }
    }

    /// A live event whose `seq` this copy already has: a true duplicate has
    /// the same id. Another id means the store's history was lost and begun
    /// again (a Redis restarted without its data, a flush): the copy is
    /// reloaded and the tenant's sockets here closed, so their clients start
    /// over with a snapshot instead of silently missing the new events. When
    /// the copy no longer holds that `seq`, a fetch compares the histories.
    fn check_duplicate(&mut self, tenant: &Arc<str>, event: &StoredEvent) {
        match self.store.bus.id_at(tenant, event.seq()) {
            Some(known) if known == event.id() => {}
            Some(_) => {
                tracing::warn!(tenant = %tenant, seq = event.seq(), "the store's history of this tenant was lost and began again; reloading and closing this tenant's sockets");
                let copy_epoch = self.store.bus.epoch_of(tenant);
                if let Some(t) = self.tenants.get_mut(tenant) {
                    t.reset = true;
                    // If the store's epoch is still the copy's, it went back
                    // without one: the reload starts a new epoch.
                    t.bump = copy_epoch;
                    t.pending.clear();
                }
                self.shared.metrics.resets.inc();
                self.fetch(tenant);
            }
            None => self.fetch(tenant),
        }
    }
}

/// Pings through the subscription's connection; a missing answer means the
/// subscription is dead even if the socket is open.
async fn watch(
    mut sink: PubSubSink,
    shared: Arc<Shared>,
    control: tokio::sync::mpsc::Sender<Control>,
    generation: u64,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let ok = matches!(tokio::time::timeout(shared.config.timeout, sink.ping::<redis::Value>()).await, Ok(Ok(_)));
        if !ok {
            let _ = control.send(Control::SubscriptionLost { generation }).await;
            return;
        }
    }
}
