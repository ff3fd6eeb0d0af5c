//! Sessions kept for connection state recovery, in Redis, so a client
//! recovers on any instance — also when its instance crashed.
//!
//! A socket's session is written when it connects (and again when it is
//! recovered), with the recovery window as its expiry; while the socket
//! lives, its instance renews the expiry every quarter window. When the
//! socket leaves:
//!
//! - abnormally (transport closed, ping timeout, slow consumer, shutdown):
//!   the session is written again with what the socket was sent, and
//!   expires a window later;
//! - normally (the client disconnected): the session is deleted — nothing is
//!   kept;
//! - with its instance (a crash): nobody renews it, so it expires between
//!   ¾ and 1 window after the crash; until then the client can recover on
//!   another instance.
//!
//! One task writes them, in the order they were asked for (a connect's write
//! never lands after the delete of its normal disconnect), batching what is
//! queued into one pipeline. Writes are best effort: when the queue is full
//! or Redis fails, the write is dropped and counted, and the client falls
//! back to a snapshot (or its `sinceId`) — never to a silent gap.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::feed::recovery::Kept;
use crate::sio::Namespace;

/// Session writes queued at most; more are dropped (and counted).
pub(crate) const QUEUE: usize = 65_536;
/// Writes sent in one pipeline at most.
const BATCH: usize = 512;

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

impl Cluster {
    /// Queues a write of the session kept under `pid`.
    pub fn keep_session_later(&self, pid: &str, kept: Kept) {
        self.queue_session(SessionOp::Keep { pid: pid.to_owned(), kept: Box::new(kept) });
    }

    /// Queues the delete of the session kept under `pid`.
    pub fn forget_session_later(&self, pid: &str) {
        self.queue_session(SessionOp::Forget { pid: pid.to_owned() });
    }

    fn queue_session(&self, op: SessionOp) {
        if self.sessions.try_send(op).is_err() {
            // Bound hit (or shut down): this write is dropped; a client that
            // needed it gets a fresh session and a snapshot.
            self.metrics.redis_errors.inc();
        }
    }

    /// Waits (at most `within`) until the session writes queued so far are
    /// done — at shutdown, so the sessions it closed can recover elsewhere.
    pub async fn finish_writes(&self, within: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.sessions.try_send(SessionOp::Flush(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, wait).await, Ok(Ok(())))
    }

    /// Writes queued sessions in order until `shutdown` (then what is queued).
    pub(crate) async fn write_sessions(self: Arc<Self>, mut ops: mpsc::Receiver<SessionOp>, window: Duration) {
        let ttl = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        let mut batch = Vec::with_capacity(BATCH);
        while ops.recv_many(&mut batch, BATCH).await > 0 {
            let mut pipe = redis::pipe();
            let mut flushed = Vec::new();
            for op in batch.drain(..) {
                match op {
                    SessionOp::Keep { pid, kept } => {
                        let key = self.session_key(&pid);
                        let digest = super::hex(&kept.token_digest);
                        pipe.hset_multiple(
                            &key,
                            &[
                                ("sid", kept.sid.as_str()),
                                ("tenant", &kept.tenant),
                                ("user", &kept.user),
                                ("digest", &digest),
                                ("base_seq", &kept.base_seq.to_string()),
                            ],
                        )
                        .ignore()
                        .pexpire(&key, ttl)
                        .ignore();
                    }
                    SessionOp::Forget { pid } => {
                        pipe.del(self.session_key(&pid)).ignore();
                    }
                    SessionOp::Renew { pids } => {
                        for pid in pids {
                            pipe.pexpire(self.session_key(&pid), ttl).ignore();
                        }
                    }
                    SessionOp::Flush(done) => flushed.push(done),
                }
            }
            let mut conn = self.conn.clone();
            if self.call(pipe.query_async::<()>(&mut conn)).await.is_err() {
                tracing::warn!("session writes for recovery were lost (redis unavailable)");
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    /// Renews the expiry of the live sockets' sessions every quarter window.
    pub(crate) async fn renew_sessions(
        self: Arc<Self>,
        namespace: Arc<Namespace>,
        window: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval((window / 4).max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let pids: Vec<String> =
                namespace.sockets_in(&[], &[]).iter().filter_map(|s| s.pid().map(str::to_owned)).collect();
            for chunk in pids.chunks(BATCH) {
                self.queue_session(SessionOp::Renew { pids: chunk.to_vec() });
            }
        }
    }
}
