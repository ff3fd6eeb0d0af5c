//! New events to the subscribers of their tenant on this server: the
//! `event_created` packet is encoded once from the stored JSON and the same
//! bytes are queued to every socket in the room `tenant:{id}` of the feed's
//! namespace; the Server-Sent Events record is encoded once too and queued to
//! every stream of the tenant ([`Streams`]). On one core, a quiet websocket
//! or an idle stream gets it written at once instead, with one non-blocking
//! write (`engine::conn`, [`StreamQueue`]). (Other servers of a cluster
//! deliver to their own subscribers from the shared store: nothing here
//! crosses instances.)

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use eventfeed_protocol::engine::session::CloseReason;
use eventfeed_protocol::socket::{Encoded, encode_raw_event};
use serde_json::value::RawValue;

use super::recovery::{Epoch, Offset};
use super::store::Delivery;
use super::{StoredEvent, tenant_room};
use crate::engine::BroadcastTime;
use crate::http::body::Source;
use crate::http::{ConnectionSlot, WrittenPast};
use crate::metrics::Metrics;
use crate::sio::{BroadcastOp, Namespace, NamespaceHandler, Socket};

/// The feed's [`Delivery`]: events to the tenant's room of its namespace
/// (served by `H`, the feed's gateway) and to the tenant's streams.
pub struct SocketDelivery<H: NamespaceHandler> {
    namespace: OnceLock<Arc<Namespace<H>>>,
    metrics: Arc<Metrics>,
    /// Append the offset argument (connection state recovery is on).
    with_offsets: bool,
    /// The open Server-Sent Events streams, by tenant.
    streams: Streams,
}

impl<H: NamespaceHandler> SocketDelivery<H> {
    pub(super) fn new(metrics: Arc<Metrics>, with_offsets: bool) -> Self {
        SocketDelivery { namespace: OnceLock::new(), metrics, with_offsets, streams: Streams::default() }
    }

    /// Points delivery at the namespace (once, at start).
    pub fn attach(&self, namespace: Arc<Namespace<H>>) {
        let _ = self.namespace.set(namespace);
    }

    /// The open streams.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// The tenant's subscribers here: its sockets and its streams.
    pub fn subscribers(&self, tenant: &str) -> usize {
        let sockets = self.namespace.get().map_or(0, |nsp| nsp.room_size(&tenant_room(tenant)));
        sockets + self.streams.count(tenant)
    }
}

impl<H: NamespaceHandler> Delivery for SocketDelivery<H> {
    fn deliver(&self, event: &StoredEvent, epoch: Epoch) {
        let Some(nsp) = self.namespace.get() else { return };
        let frame = event_frame(nsp.name(), event, self.with_offsets.then_some(epoch));
        let packet = Encoded { text: frame, binary: Vec::new() };
        let room = tenant_room(&event.tenant_id());
        let time = BroadcastTime::now();
        let stats = nsp.broadcast_at(&BroadcastOp { rooms: &[&room], ..BroadcastOp::default() }, &packet, time);
        self.metrics.deliveries.inc_by(stats.delivered as u64);
        self.metrics.delivery_failures.inc_by(stats.failed as u64);
        let (streamed, written) = self.streams.deliver(event, time);
        if streamed > 0 {
            self.metrics.stream_deliveries.inc_by(streamed as u64);
            self.metrics.stream_records_written_direct.inc_by(written as u64);
        }
    }

    fn reset(&self, tenant: &str) {
        self.streams.end_tenant(tenant);
        let Some(nsp) = self.namespace.get() else { return };
        let room = tenant_room(tenant);
        for socket in nsp.sockets_in(&BroadcastOp { rooms: &[&room], ..BroadcastOp::default() }) {
            socket.conn().close(CloseReason::ForcedClose);
        }
    }
}

/// One event as a Server-Sent Events record: `id`, `event`, the JSON on one
/// `data` line, a blank line.
pub fn sse_record(event: &StoredEvent) -> Bytes {
    let mut out = Vec::with_capacity(event.json().get().len() + SSE_OVERHEAD);
    push_sse_record(&mut out, event);
    Bytes::from(out)
}

/// The bytes of a record besides its JSON (`id: `, the id, the `event` line,
/// `data: `, the blank line).
pub(super) const SSE_OVERHEAD: usize = 80;

/// Appends `event`'s record (as [`sse_record`]) to `out`.
pub(super) fn push_sse_record(out: &mut Vec<u8>, event: &StoredEvent) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(event.id().hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).as_bytes());
    out.extend_from_slice(b"\nevent: event_created\ndata: ");
    out.extend_from_slice(event.json().get().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A stream's live events: records queued by the delivery (under the
/// tenant's lock, so in `seq` order), taken by the stream's response body
/// itself (a [`Source`]: hyper's connection task writes them, no other task
/// is woken per record). The stream's task only hears when the stream must
/// end.
///
/// On a single-threaded runtime, a record for a stream whose body is idle
/// (hyper polled it, found nothing, and wrote everything it had) is written
/// straight to the connection, framed as hyper frames a chunk, with one
/// non-blocking write ([`ConnectionSlot::write_past`]) — unless the thread
/// is busy with broadcasts ([`BroadcastTime`]): then records queue, and
/// hyper writes all that piled up as one chunk.
#[derive(Debug)]
pub struct StreamQueue {
    inner: Mutex<QueueInner>,
    /// Wakes the stream's task: the stream must end.
    pub notify: Notify,
    /// Wakes the stream's body: records queued, or the stream must end.
    body: AtomicWaker,
    /// Records queued at most; one more ends the stream (a slow consumer).
    max: usize,
    /// The stream's connection, for records written past hyper.
    connection: Option<ConnectionSlot>,
}

#[derive(Debug, Default)]
struct QueueInner {
    records: VecDeque<Bytes>,
    end: Option<StreamEnd>,
    /// The body is live and hyper found nothing to write at its last poll.
    idle: bool,
}

/// The largest record written past hyper (its chunk is built in a buffer
/// of the thread's); larger ones queue.
const PAST_MAX: usize = 4096;

thread_local! {
    /// Where a chunk written past hyper is framed.
    static CHUNK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `record` past hyper as one chunk of a chunked body (its size in
/// hex, CRLF, the record, CRLF: as hyper frames it).
fn write_chunk_past(connection: &ConnectionSlot, record: &[u8]) -> WrittenPast {
    if record.is_empty() || record.len() > PAST_MAX {
        return WrittenPast::Not;
    }
    CHUNK.with_borrow_mut(|chunk| {
        use std::io::Write as _;
        chunk.clear();
        let _ = write!(chunk, "{:X}\r\n", record.len());
        chunk.extend_from_slice(record);
        chunk.extend_from_slice(b"\r\n");
        connection.write_past(chunk)
    })
}

/// Why a stream must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Its client fell behind by more than the queue bound.
    SlowConsumer,
    /// The tenant's history here was replaced: the client resumes by id.
    Reset,
}

impl StreamQueue {
    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `record`, or writes it past hyper (see [`StreamQueue`]);
    /// whether it was written.
    fn push(&self, record: &Bytes, time: BroadcastTime) -> bool {
        let mut inner = self.lock();
        if inner.end.is_some() {
            return false;
        }
        if inner.idle
            && inner.records.is_empty()
            && !time.busy()
            && let Some(connection) = &self.connection
        {
            match write_chunk_past(connection, record) {
                WrittenPast::Whole => return true,
                // The socket sends the rest at hyper's next flush: wake it.
                WrittenPast::Part => {
                    drop(inner);
                    self.body.wake();
                    return true;
                }
                WrittenPast::Not => {}
            }
        }
        if inner.records.len() >= self.max {
            // Bound hit: the client reads slower than the tenant writes. The
            // stream ends (its task drops the connection); its client
            // resumes with Last-Event-ID.
            inner.records = VecDeque::new();
            inner.end = Some(StreamEnd::SlowConsumer);
            drop(inner);
            self.notify.notify_one();
        } else {
            inner.records.push_back(record.clone());
            drop(inner);
        }
        self.body.wake();
        false
    }

    fn end(&self, why: StreamEnd) {
        self.lock().end.get_or_insert(why);
        self.notify.notify_one();
        self.body.wake();
    }

    /// Why the stream must end, if it must.
    pub fn ended(&self) -> Option<StreamEnd> {
        self.lock().end
    }
}

impl Source for StreamQueue {
    /// Everything queued as one chunk: a lone record (the usual case) is the
    /// shared record itself, encoded once for every stream of the tenant. A
    /// stream that must end gives nothing more; its task ends it.
    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Bytes> {
        self.body.register(cx.waker());
        let mut inner = self.lock();
        if inner.end.is_some() {
            inner.idle = false;
            return Poll::Pending;
        }
        // Nothing queued: hyper writes what it has and waits; records may
        // be written past it until it polls again.
        inner.idle = inner.records.is_empty();
        match inner.records.len() {
            0 => Poll::Pending,
            1 => inner.records.pop_front().map_or(Poll::Pending, Poll::Ready),
            _ => Poll::Ready(chunk(inner.records.drain(..))),
        }
    }
}

/// Records as one chunk. A lone record (the usual case of a live stream) is
/// the shared record itself, encoded once for every stream of the tenant: no
/// copy, no allocation.
fn chunk(mut records: impl ExactSizeIterator<Item = Bytes>) -> Bytes {
    if records.len() == 1 {
        return records.next().unwrap_or_default();
    }
    let mut out = Vec::with_capacity(records.len() * 256);
    for r in records {
        out.extend_from_slice(&r);
    }
    Bytes::from(out)
}

const STREAM_SHARDS: usize = 16;

type StreamShard = HashMap<Arc<str>, Vec<Arc<StreamQueue>>, foldhash::fast::RandomState>;

/// The open Server-Sent Events streams of this server, by tenant (a
/// handle: clones share them).
#[derive(Debug, Clone, Default)]
pub struct Streams(Arc<Registry>);

#[derive(Debug)]
struct Registry {
    shards: Vec<Mutex<StreamShard>>,
    hasher: foldhash::fast::RandomState,
    /// Streams open in all: delivery skips the lookup when there are none.
    open: AtomicUsize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..STREAM_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            open: AtomicUsize::new(0),
        }
    }
}

impl Registry {
    fn shard(&self, tenant: &str) -> MutexGuard<'_, StreamShard> {
        let i = (self.hasher.hash_one(tenant) as usize) % STREAM_SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream's place in [`Streams`]; it leaves when this is dropped.
#[derive(Debug)]
pub struct StreamGuard {
    registry: Arc<Registry>,
    tenant: Arc<str>,
    /// The stream's queue.
    pub queue: Arc<StreamQueue>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut shard = self.registry.shard(&self.tenant);
        if let Some(list) = shard.get_mut(&self.tenant) {
            list.retain(|q| !Arc::ptr_eq(q, &self.queue));
            if list.is_empty() {
                shard.remove(&self.tenant);
            }
        }
        self.registry.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Streams {
    fn shard(&self, tenant: &str) -> MutexGuard<'_, StreamShard> {
        self.0.shard(tenant)
    }

    /// Streams open in all.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Relaxed)
    }

    /// The tenant's open streams.
    pub fn count(&self, tenant: &str) -> usize {
        if self.open() == 0 {
            return 0;
        }
        self.shard(tenant).get(tenant).map_or(0, Vec::len)
    }

    /// Opens a stream of `tenant` whose queue holds `max` records at most.
    /// Call it under the tenant's lock (where nothing is delivered), so the
    /// stream gets every event after that point and none before.
    /// `connection`: the stream's, for records written past hyper (used on
    /// a single-threaded runtime only, as websockets' direct writes).
    pub fn join(&self, tenant: &str, max: usize, connection: Option<ConnectionSlot>) -> StreamGuard {
        let queue = Arc::new(StreamQueue {
            inner: Mutex::default(),
            notify: Notify::new(),
            body: AtomicWaker::new(),
            max: max.max(1),
            connection: connection.filter(|_| crate::http::conn::single_threaded()),
        });
        let tenant: Arc<str> = tenant.into();
        self.shard(&tenant).entry(tenant.clone()).or_default().push(queue.clone());
        self.0.open.fetch_add(1, Ordering::Relaxed);
        StreamGuard { registry: self.0.clone(), tenant, queue }
    }

    /// Queues `event`'s record (encoded once) to every stream of its tenant
    /// (or writes it at once: [`StreamQueue`]); to how many, and how many of
    /// them were written at once.
    fn deliver(&self, event: &StoredEvent, time: BroadcastTime) -> (usize, usize) {
        if self.open() == 0 {
            return (0, 0);
        }
        let tenant = event.tenant_id();
        let shard = self.shard(&tenant);
        let Some(queues) = shard.get(tenant.as_ref()) else { return (0, 0) };
        let record = sse_record(event);
        let written = queues.iter().filter(|queue| queue.push(&record, time)).count();
        (queues.len(), written)
    }

    /// Ends every stream of `tenant` (its history here was replaced).
    fn end_tenant(&self, tenant: &str) {
        if self.open() == 0 {
            return;
        }
        if let Some(queues) = self.shard(tenant).get(tenant) {
            queues.iter().for_each(|q| q.end(StreamEnd::Reset));
        }
    }
}

/// The offset argument of an `event_created`: [`Offset`] (epoch, `seq`, the
/// id's fingerprint) as a JSON string, written without the formatting
/// machinery into a buffer of the exact length.
pub fn offset_json(epoch: Epoch, event: &StoredEvent) -> Box<RawValue> {
    use eventfeed_protocol::json::{decimal_len, push_decimal};
    let offset = Offset::of(epoch, event.seq(), &event.id());
    let mut json = Vec::with_capacity(2 + 8 + 1 + decimal_len(event.seq()) + 1 + 8);
    json.push(b'"');
    push_hex8(&mut json, offset.epoch.bits());
    json.push(b':');
    push_decimal(&mut json, event.seq());
    json.push(b':');
    push_hex8(&mut json, offset.fingerprint);
    json.push(b'"');
    RawValue::from_string(String::from_utf8(json).unwrap_or_default()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn push_hex8(out: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        out.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

/// The `event_created` frame of `event` in namespace `nsp`, with its offset
/// in `epoch` as last argument when recovery is on.
fn event_frame(nsp: &str, event: &StoredEvent, offset_in: Option<Epoch>) -> eventfeed_protocol::engine::Frame {
    let offset = offset_in.map(|epoch| offset_json(epoch, event));
    let args: &[&RawValue] = match &offset {
        Some(offset) => &[event.json(), offset],
        None => &[event.json()],
    };
    encode_raw_event(nsp, "event_created", args, None)
}

/// Queues one `event_created` of the history `epoch` to one socket (a
/// recovery's missed events).
pub(super) fn send_event<H: NamespaceHandler>(socket: &Socket<H>, event: &StoredEvent, offset_in: Option<Epoch>) {
    let _ = socket.conn().send(event_frame(socket.namespace().name(), event, offset_in));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::NewEvent;

    #[test]
    fn offsets_are_json_strings_of_the_epoch_seq_and_fingerprint() {
        let epoch = Epoch::random();
        for seq in [1, 7, 10, 42, 1234, u64::MAX] {
            let event = StoredEvent::new(NewEvent::new("m".into(), "u".into()), seq, "t".into());
            let json = offset_json(epoch, &event);
            let text: String = serde_json::from_str(json.get()).unwrap();
            assert_eq!(text, Offset::of(epoch, seq, &event.id()).to_string());
            assert_eq!(Offset::parse(&text), Some(Offset::of(epoch, seq, &event.id())));
        }
    }

    #[test]
    fn a_record_is_id_event_data_and_a_blank_line_and_records_concatenate() {
        let a = StoredEvent::new(NewEvent::new("a \"quoted\"\nline".into(), "u".into()), 1, "t".into());
        let b = StoredEvent::new(NewEvent::new("b".into(), "u".into()), 2, "t".into());
        let record = sse_record(&a);
        let expected = format!("id: {}\nevent: event_created\ndata: {}\n\n", a.id(), a.json().get());
        assert_eq!(record, expected.as_bytes());
        let mut page = Vec::new();
        push_sse_record(&mut page, &a);
        push_sse_record(&mut page, &b);
        assert_eq!(page, [record, sse_record(&b)].concat());
        assert_eq!(
            chunk([sse_record(&a), sse_record(&b)].into_iter()),
            page,
            "a chunk of several is their concatenation"
        );
    }
}
