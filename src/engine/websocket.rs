//! The websocket transport: direct websocket sessions, and the upgrade of a
//! polling session (`2probe` → `3probe`, a noop to the pending poll, `5`),
//! bounded by the upgrade timeout.
//!
//! One task per websocket reads and writes it, and lends its connection's
//! slot to broadcasts while it has nothing to write (a quiet session's
//! broadcast frame is written past it at once by the broadcast: `conn`). Writes coalesce: everything
//! queued since the last write goes out in vectored writes (up to 64 frames
//! each), the frames built around the queued bytes without copying them (a
//! lone small frame is copied next to its header and sent with a plain write).
//! Buffers are small (a 256-byte read chunk: idle sockets cost little; a
//! large message just takes more reads), and messages and frames are capped
//! at `maxPayload` — over it the socket is closed with code 1009.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use eventfeed_protocol::engine::session::{CloseReason, ProbeAction, Received};
use eventfeed_protocol::engine::{EngineError, Frame, Packet, Transport, decode_text};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage, Utf8Bytes};

use super::{Engine, Entry, Handler, Message, Reject, now};
use crate::http::{Body, ConnectionSlot, WrittenPast};

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How long a closing websocket may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Whether the request asks for a websocket upgrade.
pub(super) fn is_upgrade_request(req: &Request<Incoming>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

enum Target<S> {
    New(Arc<Entry<S>>),
    Upgrade(Arc<Entry<S>>),
    /// A second websocket for a session that is upgrading or on websocket
    /// already: as the reference, it is accepted and closed at once (the
    /// official test client has no error listener for an HTTP refusal).
    Refuse,
}

/// Validates a websocket request, answers 101, and spawns the websocket task.
pub(super) fn upgrade<H: Handler>(
    engine: &Arc<Engine<H>>,
    mut req: Request<Incoming>,
    sid: Option<String>,
    peer: Option<std::net::SocketAddr>,
) -> Result<Response<Body>, Reject> {
    let headers = req.headers();
    let version_ok = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY).filter(|k| !k.is_empty());
    let (true, Some(key)) = (version_ok && req.method() == http::Method::GET, key) else {
        return Err(EngineError::BadRequest.into());
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());

    let target = match sid {
        None => {
            let entry = engine.open_session(Transport::Websocket, peer)?;
            // The open packet is the first frame on the socket.
            let _ = entry.conn.send(engine.open_frame(&entry.conn, Transport::Websocket));
            Target::New(entry)
        }
        Some(sid) => {
            let entry = engine.sessions.get(&sid).filter(|e| !e.conn.is_closed()).ok_or(EngineError::UnknownSid)?;
            let began = entry.conn.lock().fsm.begin_upgrade(now());
            match began {
                Ok(()) => {
                    entry.conn.timer.notify_one();
                    Target::Upgrade(entry)
                }
                Err(_) => Target::Refuse,
            }
        }
    };

    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::default())
        .map_err(|_| EngineError::BadRequest)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    // A new session's open packet follows the 101 at once: both go out in one
    // write (not for an upgrade: its client waits for the 101 to probe).
    // (The upgraded socket keeps its place under the connection limit.)
    let hold = match &target {
        Target::New(_) => req.extensions().get::<ConnectionSlot>().cloned(),
        _ => None,
    };
    if let Some(slot) = &hold {
        slot.hold_writes();
    }
    // The connection's slot, for the broadcasts' direct writes the task
    // allows: on a single-threaded runtime only. There the broadcast's writes
    // cost what the tasks' would, minus their wake-ups; with several threads
    // the tasks write in parallel, and a broadcast writing under the room's
    // lock would make other threads wait.
    let direct = req.extensions().get::<ConnectionSlot>().filter(|_| crate::http::conn::single_threaded()).cloned();
    let engine2 = engine.clone();
    let config = WebSocketConfig::default()
        // Client messages are small (pongs, acks, a CONNECT, a post_event);
        // the buffer stays allocated for the connection's life.
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(engine.config.max_payload.saturating_mul(2).max(64 * 1024))
        .max_message_size(Some(engine.config.max_payload))
        .max_frame_size(Some(engine.config.max_payload));
    engine.tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => {
                // The 101 answer waits in the socket for the open packet.
                if let Some(slot) = hold {
                    slot.release_with_next_write();
                }
                u
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                match target {
                    Target::New(entry) => engine2.finish(&entry),
                    Target::Upgrade(entry) => entry.conn.lock().fsm.abort_upgrade(),
                    Target::Refuse => {}
                }
                return;
            }
        };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        // This task lives as long as the connection: it keeps one copy of the
        // websocket and lends it out, and the futures that only a refused or
        // upgrading socket needs are boxed, so an idle connection's task is small.
        match target {
            Target::Refuse => {
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                }))
                .await;
            }
            Target::New(entry) => {
                serve(&engine2, &entry, &mut ws, true, direct).await;
                engine2.finish(&entry);
            }
            Target::Upgrade(entry) => {
                if Box::pin(probe(&entry, &mut ws)).await {
                    engine2.handler.on_upgrade(&entry.conn, &entry.state);
                    serve(&engine2, &entry, &mut ws, false, direct).await
                }
            }
        }
    });

    Ok(response)
}

/// The upgrade handshake on the new websocket. Returns true once `5`
/// arrived, false when the upgrade failed (the session stays on polling).
async fn probe<S>(entry: &Entry<S>, ws: &mut Ws) -> bool {
    let conn = &entry.conn;
    let deadline = tokio::time::Instant::now() + conn.config().session.upgrade_timeout;
    let outcome = loop {
        let msg = tokio::select! {
            msg = ws.next() => msg,
            _ = tokio::time::sleep_until(deadline) => break ProbeAction::Abort,
            _ = conn.closed() => break ProbeAction::Abort,
        };
        let action = match msg {
            Some(Ok(WsMessage::Text(text))) => match decode_text(text.as_str()) {
                Ok(packet) => conn.lock().fsm.on_probe_packet(&packet),
                Err(_) => ProbeAction::Abort,
            },
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            _ => ProbeAction::Abort,
        };
        match action {
            ProbeAction::AnswerProbe => {
                if ws.send(ws_text(&Frame::PONG_PROBE)).await.is_err() {
                    break ProbeAction::Abort;
                }
                // Release a pending poll so the client can pause polling.
                conn.lock().release_poll = true;
                conn.wake.notify_one();
            }
            done => break done,
        }
    };
    match outcome {
        ProbeAction::Upgraded => {
            // Release any poll still pending; the websocket writes from now on.
            conn.wake.notify_one();
            conn.upgrade_settled.notify_waiters();
            true
        }
        _ => {
            conn.lock().fsm.abort_upgrade();
            conn.upgrade_settled.notify_waiters();
            let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(None)).await;
            false
        }
    }
}

/// What the websocket task woke up for.
enum Wakeup {
    /// A message (or the end of the stream, or a read error).
    Read(Option<Result<WsMessage, tungstenite::Error>>),
    /// Packets were queued, the session closed, or timers ran.
    Other,
}

/// The waker the websocket's reads and the heartbeat timer are polled with:
/// it records that the socket or the timer has something for the task before
/// waking it, so the task tries a read and looks at the timer only then, not
/// on every wake-up for queued packets.
struct Signal {
    conn: Arc<super::Conn>,
    ready: AtomicBool,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        self.conn.writer.wake();
    }
}

/// Reads and writes the websocket of an active session until it closes.
///
/// `timers`: the session has no supervisor (it began on websocket), so this
/// task also runs its heartbeat and application deadlines.
///
/// `direct`: the websocket connection's slot, lent to broadcasts for direct
/// writes ([`super::Conn::send_broadcast`]) whenever the task has written
/// everything queued. (Whatever else is unwritten in the socket — the 101
/// answer held for the first write, a pong tungstenite wrote in part — the
/// socket itself refuses writes past it for.)
async fn serve<H: Handler>(
    engine: &Engine<H>,
    entry: &Entry<H::State>,
    ws: &mut Ws,
    timers: bool,
    direct: Option<ConnectionSlot>,
) {
    let conn = &entry.conn;
    let mut close_code = CloseCode::Normal;
    let mut peer_closed = false;
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    // Nothing is known about the socket or the timers yet: the first pass
    // reads and runs them — the timers first, so the timer is first polled
    // at the session's next deadline, not at zero (a timer due before the
    // runtime's next wake-up makes the runtime wake its I/O driver, an
    // eventfd write, and poll again a tick later: a wake-up per connect for
    // nothing).
    if timers {
        conn.timer_moved.store(true, Ordering::Release);
    }
    let signal = Arc::new(Signal { conn: conn.clone(), ready: AtomicBool::new(true) });
    let waker = Waker::from(signal.clone());
    let run = || engine.run_timers(entry);
    let mut timers = Timers {
        run: timers.then_some(&run as &(dyn Fn() -> Option<tokio::time::Instant> + Sync)),
        sleep,
        signal: &signal,
        waker: &waker,
    };
    loop {
        // Write everything queued, with one flush (which also sends the
        // rest of a direct write the kernel took in part).
        let rest = direct.as_ref().is_some_and(ConnectionSlot::has_rest);
        let Some(written) = write_queued(conn, ws, &mut timers, rest).await else {
            conn.close(CloseReason::TransportError);
            break;
        };
        if (written > 0 || rest)
            && let Some(slot) = &direct
        {
            lend(conn, slot);
        }
        // Frames piled up while the last ones were written (more than a
        // CONNECT answer and its snapshot): the server is busy, and waiting a
        // turn before the next write makes it larger.
        let busy = written > 2;
        if conn.is_closed() {
            break;
        }
        // Every source is looked at on every pass (none can starve another);
        // each is a flag, set before the task is woken. The socket is read,
        // and the timer polled, only when their waker fired since.
        let wakeup = std::future::poll_fn(|cx| {
            conn.writer.register(cx.waker());
            let mut woke = conn.writer_pending.swap(false, Ordering::AcqRel);
            if timers.run.is_some() && conn.timer_moved.swap(false, Ordering::AcqRel) {
                // A deadline moved earlier: look again.
                if let Some(next) = engine.run_timers(entry) {
                    timers.reset(next);
                }
                woke = true;
            }
            if signal.ready.swap(false, Ordering::AcqRel) {
                woke |= timers.poll_tick().is_ready();
                let mut read_cx = Context::from_waker(&waker);
                if let Poll::Ready(msg) = ws.poll_next_unpin(&mut read_cx) {
                    // More may be buffered already: read again next time.
                    signal.ready.store(true, Ordering::Release);
                    return Poll::Ready(Wakeup::Read(msg));
                }
            }
            if woke { Poll::Ready(Wakeup::Other) } else { Poll::Pending }
        })
        .await;
        let Wakeup::Read(msg) = wakeup else {
            if busy {
                // Let the tasks already runnable (publishers, the I/O
                // driver's wake-ups) queue more first: under load, fewer and
                // larger writes for the same frames. (At a low rate a frame
                // goes out at once.)
                tokio::task::yield_now().await;
            }
            continue;
        };
        match msg {
            Some(Ok(WsMessage::Text(text))) => {
                let packet = match decode_text(text.as_str()) {
                    Ok(packet) => packet,
                    Err(e) => {
                        tracing::debug!(sid = %conn.sid(), error = %e, "invalid websocket packet");
                        conn.close(CloseReason::ParseError);
                        continue;
                    }
                };
                match on_packet(conn, &packet) {
                    Received::Message(text) => engine.dispatch(entry, Message::Text(text)),
                    Received::Binary(_) | Received::Nothing => {}
                    Received::Close(reason) => conn.close(reason),
                }
            }
            Some(Ok(WsMessage::Binary(data))) => {
                let packet = Packet::Binary(std::borrow::Cow::Borrowed(&data));
                if let Received::Close(reason) = on_packet(conn, &packet) {
                    conn.close(reason);
                } else {
                    engine.dispatch(entry, Message::Binary(&data));
                }
            }
            // Tungstenite answers a ping itself.
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
            Some(Ok(WsMessage::Close(_))) | None => {
                // Nothing may follow the close frame tungstenite answers with
                // (RFC 6455 §5.5.1): what is still queued is dropped.
                conn.close(CloseReason::TransportClose);
                peer_closed = true;
                break;
            }
            Some(Err(e)) => {
                close_code = match &e {
                    // Bound hit: a message or frame over maxPayload.
                    tungstenite::Error::Capacity(_) => CloseCode::Size,
                    // RFC 6455 §7.4.1: a frame the protocol forbids (reserved
                    // bits or opcode, unmasked, bad fragmentation or close
                    // payload) fails the connection with 1002, and a text
                    // message that is not UTF-8 with 1007.
                    tungstenite::Error::Protocol(_) => CloseCode::Protocol,
                    tungstenite::Error::Utf8(_) => CloseCode::Invalid,
                    _ => close_code,
                };
                tracing::debug!(sid = %conn.sid(), error = %e, "websocket read error");
                conn.close(CloseReason::TransportError);
            }
        }
    }
    // Nothing is written past the task from now on.
    conn.lock().direct = None;
    drop(direct);
    // Deliver what is left (a close packet, say), then a close frame. Boxed:
    // only a closing session pays for this future's space.
    let closing = Box::pin(tokio::time::timeout(CLOSE_GRACE, async {
        if !peer_closed {
            write_queued(conn, ws, &mut Timers { run: None, ..timers }, false).await;
        }
        let frame = CloseFrame { code: close_code, reason: Utf8Bytes::from_static("") };
        let _ = ws.close(Some(frame)).await;
        // After the client's close frame `close` sends nothing (the state is
        // "closed by peer"); the reply tungstenite queued goes out on a flush
        // (RFC 6455 §5.5.1: a close frame is answered with a close frame).
        let _ = ws.flush().await;
    }));
    let _ = closing.await;
}

fn on_packet<'p>(conn: &super::Conn, packet: &'p Packet<'_>) -> Received<'p> {
    conn.lock().fsm.on_packet(now(), packet)
}

/// Writes every queued frame, in as few writes as the socket takes, and
/// flushes (with `flush`, also when none is queued). Returns how many there
/// were, or `None` on a write error.
///
/// The queue is taken whole (its buffer with it), so nothing is copied; a
/// busy session gets the emptied buffer back ([`KEEP_QUEUE_AFTER`]), an
/// idle session keeps none. Frames go straight to the socket
/// ([`poll_write_frames`]), not through tungstenite.
async fn write_queued(conn: &super::Conn, ws: &mut Ws, timers: &mut Timers<'_>, flush: bool) -> Option<usize> {
    let mut batch = {
        let mut inner = conn.lock();
        let batch = std::mem::take(&mut inner.outbox);
        if !batch.is_empty() {
            // The task writes: no broadcast writes past it meanwhile.
            inner.direct = None;
        }
        batch
    };
    let count = batch.len();
    if count == 0 && !flush {
        return Some(0);
    }
    // Bytes of the first frame written (a write may stop mid-frame).
    let mut sent = 0;
    // A session already closed still gets its last frames out (bounded by
    // the caller); otherwise its closing ends the write.
    let closed_before = conn.is_closed();
    std::future::poll_fn(|cx| {
        // The write usually completes at once.
        if let Poll::Ready(r) = poll_write_frames(ws, &mut batch, &mut sent, cx) {
            if r.is_ok() && count >= KEEP_QUEUE_AFTER && batch.capacity() <= KEEP_QUEUE_MAX {
                reuse_queue(conn, &mut batch);
            }
            return Poll::Ready(r.ok().map(|()| count));
        }
        // A peer that stops reading blocks the write; the session closing
        // (slow-consumer policy, ping timeout, shutdown) must still end it,
        // so the timers keep running meanwhile. A close wakes `writer`.
        conn.writer.register(cx.waker());
        if !closed_before && conn.is_closed() {
            return Poll::Ready(None);
        }
        while timers.poll_tick().is_ready() {}
        if !closed_before && conn.is_closed() { Poll::Ready(None) } else { Poll::Pending }
    })
    .await
}

/// Lends `slot` to the session's broadcasts for direct writes, once the task
/// wrote everything queued (frames queued meanwhile are its to write first).
fn lend(conn: &super::Conn, slot: &ConnectionSlot) {
    let mut inner = conn.lock();
    if inner.direct.is_none() && inner.outbox.is_empty() && !inner.fsm.is_closed() {
        inner.direct = Some(slot.clone());
    }
}

/// A write of at least this many frames hands its emptied queue buffer back
/// to the session: a busy session's queue then grows once, not on every
/// write. (A session that wrote fewer keeps none: an idle one frees its
/// buffer at its next write, a ping at the latest.)
const KEEP_QUEUE_AFTER: usize = 4;

/// The largest queue buffer (in frames) handed back: a burst's larger one is
/// freed at once.
const KEEP_QUEUE_MAX: usize = 256;

/// Gives the session `batch`'s (empty) buffer as its queue when that one is
/// smaller, moving the frames queued meanwhile into it.
fn reuse_queue(conn: &super::Conn, batch: &mut VecDeque<Frame>) {
    let mut inner = conn.lock();
    if inner.outbox.capacity() < batch.capacity() {
        batch.append(&mut inner.outbox);
        std::mem::swap(&mut inner.outbox, batch);
    }
}

/// The largest frame payload sent by copying it next to its header.
const SMALL_FRAME: usize = 502;

/// Frames written with one `writev` at most.
const FRAMES_PER_WRITE: usize = 64;

/// Writes `batch` to the websocket's socket as final, unmasked websocket
/// frames (text or binary), a header and the shared payload bytes each, with
/// vectored writes: no per-recipient framing copy, one system call for up to
/// [`FRAMES_PER_WRITE`] frames (a lone frame of at most [`SMALL_FRAME`]
/// bytes is copied next to its header and sent with a plain write). `sent`
/// counts the bytes of the first frame already written (a write may stop
/// mid-frame); written frames leave `batch`.
///
/// Anything tungstenite itself buffered (a pong, a close reply) is flushed
/// first, so frames never interleave on the wire. Tungstenite writes again
/// only once this returned ready (it runs between the task's writes).
fn poll_write_frames(
    ws: &mut Ws,
    batch: &mut VecDeque<Frame>,
    sent: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    if *sent == 0 {
        std::task::ready!(ws.poll_flush_unpin(cx)).map_err(std::io::Error::other)?;
    }
    // One slice to walk (usually contiguous already: a move at most), and
    // the frames written whole leave the queue together at the end.
    let frames = batch.make_contiguous();
    let mut done = 0;
    let result = loop {
        let rest = &frames[done..];
        if rest.is_empty() {
            break Poll::Ready(Ok(()));
        }
        let poll = match rest {
            // A lone small frame (the usual case at a low rate) is copied and
            // sent with a plain write, cheaper in the kernel than `writev`.
            [frame] if frame.bytes().len() <= SMALL_FRAME => write_small(ws, frame, *sent, cx),
            [_] | [_, _] => write_chunk::<2, 4>(ws, rest, *sent, cx),
            _ => write_chunk::<FRAMES_PER_WRITE, { 2 * FRAMES_PER_WRITE }>(ws, rest, *sent, cx),
        };
        let written = match poll {
            Poll::Ready(Ok(0)) => break Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
            Poll::Pending => break Poll::Pending,
        };
        // Count the frames written whole; remember how far into the next one.
        let mut progress = *sent + written;
        for frame in rest {
            let len = wire_len(frame);
            if progress < len {
                break;
            }
            progress -= len;
            done += 1;
        }
        *sent = progress;
    };
    batch.drain(..done);
    result
}

/// One plain write of a lone frame of at most [`SMALL_FRAME`] bytes, copied
/// next to its header, skipping the `sent` bytes already written.
fn write_small(ws: &mut Ws, frame: &Frame, sent: usize, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    use tokio::io::AsyncWrite;

    let mut buf = [0u8; SMALL_FRAME + 10];
    let len = copy_small(&mut buf, frame);
    std::pin::Pin::new(ws.get_mut()).poll_write(cx, &buf[sent.min(len)..len])
}

/// Copies `frame` (at most [`SMALL_FRAME`] bytes) next to its header into
/// `buf`; returns the length on the wire.
fn copy_small(buf: &mut [u8; SMALL_FRAME + 10], frame: &Frame) -> usize {
    let mut header = [0u8; 10];
    let payload = frame.bytes();
    let header_len = frame_header(&mut header, frame.is_text(), payload.len());
    buf[..header_len].copy_from_slice(&header[..header_len]);
    let len = header_len + payload.len();
    buf[header_len..len].copy_from_slice(payload);
    len
}

/// Writes `frame` (a text frame of at most [`SMALL_FRAME`] bytes) past the
/// websocket's task at once ([`ConnectionSlot::write_past`]), copied next
/// to its header; a larger frame is [`WrittenPast::Not`] written (the
/// caller queues it instead, as it does whatever the socket refuses).
pub(super) fn write_past(slot: &ConnectionSlot, frame: &Frame) -> WrittenPast {
    if !frame.is_text() || frame.bytes().len() > SMALL_FRAME {
        return WrittenPast::Not;
    }
    let mut buf = [0u8; SMALL_FRAME + 10];
    let len = copy_small(&mut buf, frame);
    slot.write_past(&buf[..len])
}

/// The length of `frame` on the wire: its header and payload.
fn wire_len(frame: &Frame) -> usize {
    let len = frame.bytes().len();
    frame_header(&mut [0; 10], frame.is_text(), len) + len
}

/// One vectored write of the first `N` of `frames` at most (`S` = 2 `N`
/// slices: a header and a payload each), skipping the `sent` bytes already
/// written.
fn write_chunk<const N: usize, const S: usize>(
    ws: &mut Ws,
    frames: &[Frame],
    sent: usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    use tokio::io::AsyncWrite;

    let mut headers = [[0u8; 10]; N];
    let mut slices = [std::io::IoSlice::new(&[]); S];
    let mut used = 0;
    for (i, (header, frame)) in headers.iter_mut().zip(frames).enumerate() {
        let payload = frame.bytes();
        let header_len = frame_header(header, frame.is_text(), payload.len());
        let (mut head, mut body) = (&header[..header_len], &payload[..]);
        // Only the first frame can have been written in part.
        if i == 0 && sent > 0 {
            if sent < head.len() {
                head = &head[sent..];
            } else {
                body = body.get(sent - head.len()..).unwrap_or_default();
                head = &[];
            }
        }
        for part in [head, body] {
            if !part.is_empty()
                && let Some(slot) = slices.get_mut(used)
            {
                *slot = std::io::IoSlice::new(part);
                used += 1;
            }
        }
    }
    std::pin::Pin::new(ws.get_mut()).poll_write_vectored(cx, &slices[..used])
}

/// Writes the header of a final, unmasked (server-to-client) websocket frame
/// carrying `len` bytes of text or binary data into `out`; returns its length.
fn frame_header(out: &mut [u8; 10], text: bool, len: usize) -> usize {
    out[0] = 0x80 | if text { 0x1 } else { 0x2 };
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The heartbeat and application deadlines of a session whose websocket task
/// runs them (no supervisor); `None` when a supervisor does.
struct Timers<'a> {
    run: Option<&'a (dyn Fn() -> Option<tokio::time::Instant> + Sync)>,
    sleep: std::pin::Pin<&'a mut tokio::time::Sleep>,
    /// The timer is polled with `waker`, which sets `signal` when it fires.
    signal: &'a Signal,
    waker: &'a Waker,
}

impl Timers<'_> {
    /// Runs what is due once the deadline passed (ready then); pending until
    /// it does, and for good when there is nothing to run or the session closed.
    fn poll_tick(&mut self) -> Poll<()> {
        let Some(run) = self.run else { return Poll::Pending };
        std::task::ready!(self.sleep.as_mut().poll(&mut Context::from_waker(self.waker)));
        match run() {
            Some(next) => {
                self.reset(next);
                Poll::Ready(())
            }
            None => {
                // Closed: nothing more to wait for (the task notices the close).
                self.run = None;
                Poll::Pending
            }
        }
    }

    /// Moves the deadline; the next pass polls the timer again (registering
    /// the new deadline).
    fn reset(&mut self, deadline: tokio::time::Instant) {
        self.sleep.as_mut().reset(deadline);
        self.signal.ready.store(true, Ordering::Release);
    }
}

fn ws_text(frame: &Frame) -> WsMessage {
    // `Frame::Text` is valid UTF-8 by construction; the check is cheap.
    WsMessage::Text(Utf8Bytes::try_from(frame.bytes().clone()).unwrap_or_default())
}
