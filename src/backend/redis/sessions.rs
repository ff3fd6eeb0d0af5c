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

use super::store::{Inner, RedisStore};
use super::{SessionOp, hex};

/// Writes sent in one pipeline at most.
const BATCH: usize = 512;

impl RedisStore {
    /// Starts the session writer and, while `shutdown` is not cancelled, the
    /// renewal of the live sockets' sessions (recovery on only).
    pub(super) fn start_sessions(&self, ops: mpsc::Receiver<SessionOp>, shutdown: CancellationToken) {
        let inner = self.inner().clone();
        if inner.window.is_zero() {
            return;
        }
        tokio::spawn(inner.clone().write_sessions(ops));
        tokio::spawn(inner.renew_sessions(shutdown));
    }
}

impl Inner {
    pub(super) fn queue_session(&self, op: SessionOp) {
        if self.sessions.try_send(op).is_err() {
            // Bound hit (or shut down): this write is dropped; a client that
            // needed it gets a fresh session and a snapshot.
            self.shared.metrics.redis_errors.inc();
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

    /// Writes queued sessions in order until every sender is gone.
    async fn write_sessions(self: Arc<Self>, mut ops: mpsc::Receiver<SessionOp>) {
        let ttl = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX).max(1);
        let mut batch = Vec::with_capacity(BATCH);
        while ops.recv_many(&mut batch, BATCH).await > 0 {
            let mut pipe = redis::pipe();
            let mut flushed = Vec::new();
            for op in batch.drain(..) {
                match op {
                    SessionOp::Keep { pid, kept } => {
                        let key = self.session_key(&pid);
                        let digest = hex(&kept.token_digest);
                        // A JWT session keeps its token's `iat` and `jti` (for
                        // revocations); "" where there is none.
                        let (jwt, iat, jti) = match &kept.jwt {
                            Some(j) => {
                                ("1", j.iat.map(|i| i.to_string()).unwrap_or_default(), j.jti.as_deref().unwrap_or(""))
                            }
                            None => ("", String::new(), ""),
                        };
                        pipe.hset_multiple(
                            &key,
                            &[
                                ("sid", kept.sid.as_str()),
                                ("tenant", &kept.tenant),
                                ("user", &kept.user),
                                ("digest", &digest),
                                ("base_seq", &kept.base_seq.to_string()),
                                ("jwt", jwt),
                                ("iat", &iat),
                                ("jti", jti),
                                ("epoch", &kept.epoch.to_string()),
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
            // A batch of flushes alone writes nothing: an empty pipeline is
            // not sent (Redis would refuse it, and its error would read as a
            // lost write).
            if pipe.cmd_iter().next().is_some() {
                let mut conn = self.shared.conn.clone();
                if self.shared.call(pipe.query_async::<()>(&mut conn)).await.is_err() {
                    tracing::warn!("session writes for recovery were lost (redis unavailable)");
                }
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    /// Renews the expiry of the live sockets' sessions every quarter window.
    async fn renew_sessions(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval((self.window / 4).max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let pids: Vec<String> = self.live().iter().cloned().collect();
            for chunk in pids.chunks(BATCH) {
                self.queue_session(SessionOp::Renew { pids: chunk.to_vec() });
            }
        }
    }
}
