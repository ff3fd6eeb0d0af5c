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
        let count = 1 + rest.len();
        let mut inner = self.lock();
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
