//! One Engine.IO session's shared state: the protocol state machine, the
//! bounded outgoing queue, and the wake-ups of whoever writes it.
//!
//! A [`Conn`] is shared (`Arc`) by the transport tasks (a pending poll, the
//! websocket task), the session's supervisor task, and the layer above, which
//! queues packets with [`Conn::send`] from any thread — a broadcast pushes the
//! same [`Frame`] into many queues. The lock is a `std::sync::Mutex` held only
//! for short, non-async sections. The websocket task is woken through a flag
//! and a waker (no lock), a pending GET through a `Notify`.
//!
//! On a single-threaded runtime, a broadcast to an idle websocket skips the
//! task: while the task has written everything queued, it lends the session
//! its connection's slot, and [`Conn::send_broadcast`] writes a small frame
//! past the task itself ([`ConnectionSlot::write_past`]), with one
//! non-blocking write under the session's lock — no wake-up, no queue, one
//! system call per delivery. Only for a session whose previous broadcast
//! frame came at least [`DIRECT_GAP`] before, on a thread whose broadcasts
//! come less often than one per millisecond on average ([`BroadcastTime`]):
//! otherwise frames queue, so that under load each task writes many frames
//! per system call. The connection's socket refuses such a write while
//! anything written through it is unwritten (a frame cut short, a pong, the
//! 101 answer held for the open packet); the rest of a write past it that
//! the kernel took in part waits in the slot, and the socket sends it before
//! its next bytes (the task is woken to flush it). A frame not written is
//! queued, and the task writes from then on, until its queue is empty again.
//!
//! The queue is bounded ([`EngineConfig::max_queue`]). A client that does not
//! read fills it, and then the session is closed (`forced close`, counted in
//! [`EngineMetrics::slow_consumer_closes`]): a slow client never slows the others
//! and never loses packets silently — it reconnects and catches up.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use eventfeed_protocol::engine::session::{CloseReason, Session, Timeout};
use eventfeed_protocol::engine::{Frame, Transport, payload};
use eventfeed_protocol::socket::Encoded;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::EngineConfig;
use crate::http::{ConnectionSlot, WrittenPast};
use crate::metrics::EngineMetrics;

/// Why a packet could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// The queue was full: the session has been closed as a slow consumer.
    #[error("outgoing queue full; session closed")]
    QueueFull,
}

pub(crate) struct Inner {
    pub(crate) fsm: Session,
    pub(crate) outbox: VecDeque<Frame>,
    /// A pending GET must be answered with a noop (the upgrade probe arrived).
    pub(crate) release_poll: bool,
    /// The client closed a polling session with no GET pending: the next GET
    /// (racing the close on another connection) still gets its noop.
    pub(crate) farewell_noop: bool,
    /// The websocket connection's slot, while its task lends it to
    /// broadcasts for direct writes (see [`Conn::send_broadcast`]): only
    /// while nothing of the task's own is queued or unwritten.
    pub(crate) direct: Option<ConnectionSlot>,
    /// When the last broadcast frame came (see [`DIRECT_GAP`]).
    last_broadcast: Option<Instant>,
}

/// A broadcast frame is written straight to an idle websocket only when the
/// session's previous one came at least this long before. A session
/// receiving frames faster goes through its task, whose writes take all
/// that queued meanwhile at once: under load, many frames per system call
/// rather than one each.
pub(crate) const DIRECT_GAP: std::time::Duration = std::time::Duration::from_millis(2);

/// A thread whose broadcasts began less than this apart on average (a
/// moving average over the last few dozen) is busy: its broadcasts queue
/// every frame, so that each session's task writes all of a turn's frames
/// at once. (A session's first frame of a turn written at once and the rest
/// by its task would be two system calls where one does.)
const BUSY_INTERVAL_US: u32 = 1_000;

/// Intervals between broadcasts count for this much at most in the
/// average: after a pause, the next broadcast is not busy, whatever came
/// before.
const MAX_INTERVAL_US: u32 = 100_000;

/// When a broadcast began, and whether its thread is busy (see
/// [`Conn::send_broadcast`]).
#[derive(Debug, Clone, Copy)]
pub struct BroadcastTime {
    at: Instant,
    busy: bool,
}

impl BroadcastTime {
    /// A broadcast beginning now on this thread, busy or not by the pace of
    /// the thread's broadcasts so far.
    pub fn now() -> Self {
        thread_local! {
            /// This thread's last broadcast, and the moving average of the
            /// intervals between its broadcasts (µs).
            static PACE: std::cell::Cell<(Option<Instant>, u32)> =
                const { std::cell::Cell::new((None, MAX_INTERVAL_US)) };
        }
        let at = Instant::now();
        let average = PACE.with(|pace| {
            let (last, average) = pace.get();
            let average = Self::pace(last, average, at);
            pace.set((Some(at), average));
            average
        });
        BroadcastTime { at, busy: average < BUSY_INTERVAL_US }
    }

    /// The moving average of the intervals between broadcasts (µs) once one
    /// more began at `at`, after one at `last`: about the last 16 count.
    fn pace(last: Option<Instant>, average: u32, at: Instant) -> u32 {
        let interval = last.map_or(MAX_INTERVAL_US, |last| {
            u32::try_from(at.saturating_duration_since(last).as_micros()).unwrap_or(u32::MAX).min(MAX_INTERVAL_US)
        });
        average - average / 16 + interval / 16
    }

    /// A broadcast at `at` on a thread that is not busy (for callers that
    /// keep their own time).
    pub fn at(at: Instant) -> Self {
        BroadcastTime { at, busy: false }
    }

    /// Whether the thread is busy with broadcasts: everything queues.
    pub fn busy(&self) -> bool {
        self.busy
    }
}

/// A live Engine.IO session, as seen by the layers above.
pub struct Conn {
    sid: Arc<str>,
    peer: Option<SocketAddr>,
    inner: Mutex<Inner>,
    /// Wakes a pending GET (the writer of a polling session).
    pub(crate) wake: Notify,
    /// Wakes the websocket task. It waits on no `Notify`: a flag and a waker
    /// take no lock, on the path every delivery takes.
    pub(crate) writer: AtomicWaker,
    /// Set when the websocket task has something to do: packets queued, the
    /// session closed, a ping due.
    pub(crate) writer_pending: AtomicBool,
    /// Set by [`Conn::reschedule`] for the websocket task.
    pub(crate) timer_moved: AtomicBool,
    /// Wakes the supervisor when a deadline moved earlier.
    pub(crate) timer: Notify,
    /// Wakes polls waiting for an upgrade under way to finish (or fail).
    pub(crate) upgrade_settled: Notify,
    /// Set once the session is closed (read without taking the lock).
    closed: AtomicBool,
    /// Wakes whoever waits in [`Conn::closed`].
    closed_notify: Notify,
    config: Arc<EngineConfig>,
    metrics: Arc<EngineMetrics>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("sid", &self.sid).finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(
        sid: Arc<str>,
        peer: Option<SocketAddr>,
        transport: Transport,
        now: Instant,
        config: Arc<EngineConfig>,
        metrics: Arc<EngineMetrics>,
    ) -> Self {
        Conn {
            sid,
            peer,
            inner: Mutex::new(Inner {
                fsm: Session::new(config.session, transport, now),
                outbox: VecDeque::new(),
                release_poll: false,
                farewell_noop: false,
                direct: None,
                last_broadcast: None,
            }),
            wake: Notify::new(),
            writer: AtomicWaker::new(),
            writer_pending: AtomicBool::new(false),
            timer_moved: AtomicBool::new(false),
            timer: Notify::new(),
            upgrade_settled: Notify::new(),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            config,
            metrics,
        }
    }

    /// The session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The client's address (of the request that opened the session).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Locks the session state. A poisoned lock only means another thread
    /// panicked mid-update of plain data; the state is still usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport packets currently go out on.
    pub fn transport(&self) -> Transport {
        if self.lock().fsm.writes_via_polling() { Transport::Polling } else { Transport::Websocket }
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves when the session closes.
    pub async fn closed(&self) {
        let notified = self.closed_notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a close in between still wakes it.
        notified.as_mut().enable();
        if !self.is_closed() {
            notified.await;
        }
    }

    /// Why the session closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().fsm.close_reason()
    }

    /// Queues one packet.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_all(&frame, &[])
    }

    /// Queues an encoded Socket.IO packet: its text frame and binary parts.
    pub fn send_packet(&self, packet: &Encoded) -> Result<(), SendError> {
        self.send_all(&packet.text, &packet.binary)
    }

    /// Queues `first` and `rest` atomically (a binary packet's header and
    /// parts): all of them or none.
    pub fn send_all(&self, first: &Frame, rest: &[Frame]) -> Result<(), SendError> {
        self.queue(self.lock(), first, rest)
    }

    /// Sends one packet of a broadcast that began at `time`.
    ///
    /// A websocket session whose queue is empty, whose task lends out its
    /// stream, and whose previous broadcast frame came at least
    /// [`DIRECT_GAP`] before, on a thread that is not busy with broadcasts
    /// ([`BroadcastTime`]), gets a small text frame written at once, by
    /// this thread, with one non-blocking write: no task is woken and
    /// nothing is queued. When the kernel takes only part of it, the socket
    /// keeps the rest to send before its next bytes and the task is woken
    /// to flush it; the slot is lent again once it did. Otherwise (the
    /// socket has something unwritten, or its buffer is full) the packet is
    /// queued as by [`Conn::send_packet`], and the slot is lent again once
    /// the task wrote everything queued.
    pub fn send_broadcast(&self, packet: &Encoded, time: BroadcastTime) -> Result<(), SendError> {
        let mut inner = self.lock();
        let quiet =
            !time.busy && inner.last_broadcast.is_none_or(|last| time.at.saturating_duration_since(last) >= DIRECT_GAP);
        inner.last_broadcast = Some(time.at);
        if quiet
            && packet.binary.is_empty()
            && inner.outbox.is_empty()
            && !inner.fsm.is_closed()
            && let Some(slot) = &inner.direct
        {
            let written = super::websocket::write_past(slot, &packet.text);
            if written != WrittenPast::Not {
                if written == WrittenPast::Part {
                    // The socket sends the rest before anything else; the
                    // task flushes it, then lends the slot again.
                    inner.direct = None;
                }
                drop(inner);
                self.metrics.frames_queued.inc();
                self.metrics.frames_written_direct.inc();
                if written == WrittenPast::Part {
                    self.wake_writer();
                }
                return Ok(());
            }
            // Not written (too large to copy, something unwritten in the
            // socket, its buffer full, or an error the task will meet):
            // queued, and the task writes from now on, until its queue is
            // empty again.
            inner.direct = None;
        }
        self.queue(inner, &packet.text, &packet.binary)
    }

    /// Whether broadcasts may write past the websocket's task now: it lent
    /// them its connection's slot (diagnostics, tests).
    pub fn lends_for_direct_writes(&self) -> bool {
        self.lock().direct.is_some()
    }

    /// Queues `first` and `rest` under the lock held in `inner`.
    fn queue(&self, mut inner: MutexGuard<'_, Inner>, first: &Frame, rest: &[Frame]) -> Result<(), SendError> {
        let count = 1 + rest.len();
        if inner.fsm.is_closed() {
            return Err(SendError::Closed);
        }
        if inner.outbox.len() + count > self.config.max_queue {
            // Bound hit: the client is not reading. Close it rather than drop
            // packets or grow without limit; it will reconnect and catch up.
            drop(inner);
            self.metrics.slow_consumer_closes.inc();
            tracing::warn!(sid = %self.sid, queue = self.config.max_queue, "slow consumer: outgoing queue full, closing session");
            self.close(CloseReason::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        let was_empty = inner.outbox.is_empty();
        inner.outbox.push_back(first.clone());
        if !rest.is_empty() {
            inner.outbox.extend(rest.iter().cloned());
        }
        drop(inner);
        self.metrics.frames_queued.inc_by(count as u64);
        if was_empty {
            self.wake_writer();
        }
        Ok(())
    }

    /// Closes the session. The first reason sticks; later calls do nothing.
    ///
    /// For a deliberate server close (shutdown, forced close) a close packet is
    /// queued first, so the client learns the session is over.
    pub fn close(&self, reason: CloseReason) {
        let mut inner = self.lock();
        if !inner.fsm.is_closed() {
            inner.fsm.close(reason);
            if matches!(
                reason,
                CloseReason::ServerShutdown
                    | CloseReason::ForcedClose
                    | CloseReason::SlowConsumer
                    | CloseReason::CredentialsExpired
                    | CloseReason::ServerClose
            ) {
                inner.outbox.push_back(Frame::CLOSE);
            }
        }
        drop(inner);
        self.mark_closed();
    }

    /// Wakes everyone waiting on the session once its state machine is closed.
    fn mark_closed(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.closed_notify.notify_waiters();
            self.wake_writer();
        }
    }

    /// Asks the session's supervisor to look at its deadlines again (one of
    /// them moved earlier).
    pub fn reschedule(&self) {
        self.timer_moved.store(true, Ordering::Release);
        self.timer.notify_one();
        self.wake_writer();
    }

    /// Wakes whoever writes the session: a pending GET, or the websocket task.
    fn wake_writer(&self) {
        self.writer_pending.store(true, Ordering::Release);
        self.writer.wake();
        self.wake.notify_one();
    }

    /// Runs due timers at `now`; returns the next deadline.
    pub(crate) fn on_timer(&self, now: Instant) -> Option<Instant> {
        let mut inner = self.lock();
        let mut close = None;
        while let Some(t) = inner.fsm.handle_timeout(now) {
            match t {
                Timeout::SendPing => {
                    let was_empty = inner.outbox.is_empty();
                    inner.outbox.push_back(Frame::PING);
                    if was_empty {
                        self.wake_writer();
                    }
                }
                // The upgrading websocket task watches the same deadline and
                // closes itself; the state machine is back on polling already.
                Timeout::UpgradeExpired => {}
                Timeout::Close(reason) => close = Some(reason),
            }
        }
        let next = inner.fsm.poll_timeout();
        drop(inner);
        if close.is_some() {
            self.mark_closed();
        }
        next
    }

    /// Takes queued packets for one polling response, within `maxPayload`.
    pub(crate) fn take_payload(inner: &mut Inner, max_payload: usize) -> Option<Bytes> {
        if inner.outbox.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(256);
        payload::encode(&mut inner.outbox, max_payload, &mut out);
        Some(Bytes::from(out))
    }

    /// Marks the session closed (by a transport) and wakes everyone.
    pub(crate) fn close_locked(&self, mut inner: MutexGuard<'_, Inner>, reason: CloseReason) {
        inner.fsm.close(reason);
        drop(inner);
        self.mark_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn broadcasts_in_quick_succession_make_a_thread_busy_and_a_pause_ends_it() {
        let t0 = Instant::now();
        let (mut last, mut average) = (None, MAX_INTERVAL_US);
        let mut busy_after = None;
        // 10,000 broadcasts a second.
        for i in 0..200u32 {
            let at = t0 + Duration::from_micros(100) * i;
            average = BroadcastTime::pace(last, average, at);
            last = Some(at);
            if average < BUSY_INTERVAL_US && busy_after.is_none() {
                busy_after = Some(i);
            }
        }
        // From idle, a few dozen go by first (each session's first frames of
        // a burst may be written at once); then every one queues.
        let busy_after = busy_after.expect("busy at 10,000 a second");
        assert!((40..120).contains(&busy_after), "busy after {busy_after}");
        // 200 a second (every 5 ms) is never busy.
        let (mut last, mut average) = (None, MAX_INTERVAL_US);
        for i in 0..1000u32 {
            let at = t0 + Duration::from_millis(5) * i;
            average = BroadcastTime::pace(last, average, at);
            last = Some(at);
            assert!(average >= BUSY_INTERVAL_US, "not busy at 200 a second ({average} µs)");
        }
        // A busy thread is not busy after a pause of 20 ms.
        let (mut last, mut average) = (t0, MAX_INTERVAL_US);
        for i in 0..200u32 {
            let at = t0 + Duration::from_micros(10) * i;
            average = BroadcastTime::pace(Some(last), average, at);
            last = at;
        }
        assert!(average < BUSY_INTERVAL_US);
        let after_pause = BroadcastTime::pace(Some(last), average, last + Duration::from_millis(20));
        assert!(after_pause >= BUSY_INTERVAL_US, "{after_pause} µs");
    }
}
