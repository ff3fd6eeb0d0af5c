//! HTTP long-polling: a GET is held until packets are queued (a ping comes
//! at least every `pingInterval`), a POST delivers a payload and answers `ok`.
//!
//! One GET and one POST at a time per session: an overlapping request gets
//! 400 and closes the session, as in the reference. A POST body over
//! `maxPayload` gets 413 and closes the session.

use bytes::Bytes;
use eventfeed_protocol::engine::payload;
use std::time::Duration;

use eventfeed_protocol::engine::session::{CloseReason, PollKind, Received, TransportState};
use eventfeed_protocol::engine::{EngineError, Frame};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{Conn, Engine, Entry, Handler, Message, Reject, now};
use crate::http::{self as h, Body};

/// Ends the poll in the state machine however the request ends (answered,
/// or dropped because the client went away mid-poll).
struct PollGuard<'a> {
    conn: &'a Conn,
    kind: PollKind,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.conn.lock().fsm.end_poll(self.kind);
    }
}

fn start<'a>(conn: &'a Conn, kind: PollKind) -> Result<PollGuard<'a>, Reject> {
    let mut inner = conn.lock();
    if inner.fsm.is_closed() {
        // Closed, and about to leave the session table.
        return Err(EngineError::UnknownSid.into());
    }
    match inner.fsm.start_poll(kind) {
        Ok(()) => Ok(PollGuard { conn, kind }),
        Err(_) => {
            if inner.fsm.is_closed() {
                // An overlap closes the session (and a closed one is gone).
                conn.close_locked(inner, CloseReason::TransportError);
            }
            Err(EngineError::BadRequest.into())
        }
    }
}

/// Closes the session when a pending GET is dropped unanswered: hyper drops
/// the request when the client goes away mid-poll, and the reference closes
/// the session then ("poll connection closed prematurely").
struct AbandonGuard<'a> {
    conn: &'a Conn,
    answered: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.conn.close(CloseReason::TransportError);
        }
    }
}

/// A GET: answer with queued packets, waiting for some if there are none.
pub(super) async fn get<H: Handler>(engine: &Engine<H>, entry: &Entry<H::State>) -> Result<Response<Body>, Reject> {
    let conn = &entry.conn;
    wait_for_racing_upgrade(conn).await;
    if std::mem::take(&mut conn.lock().farewell_noop) {
        return Ok(h::text_plain(StatusCode::OK, Frame::NOOP.bytes().clone()));
    }
    let _guard = start(conn, PollKind::Get)?;
    let mut abandon = AbandonGuard { conn, answered: false };
    let res = loop {
        let notified = conn.wake.notified();
        {
            let mut inner = conn.lock();
            if let Some(body) = Conn::take_payload(&mut inner, engine.config.max_payload) {
                inner.release_poll = false;
                break h::text_plain(StatusCode::OK, body);
            }
            if let Some(reason) = inner.fsm.close_reason() {
                // As the reference: the client's own close packet ends the
                // pending poll with a noop; any other close with a close packet.
                let frame = if reason == CloseReason::TransportClose { Frame::NOOP } else { Frame::CLOSE };
                break h::text_plain(StatusCode::OK, frame.bytes().clone());
            }
            if inner.release_poll || !inner.fsm.writes_via_polling() {
                // An upgrade is under way (or done): release the poll with a noop,
                // and pass on the wake-up in case it was meant for the websocket.
                inner.release_poll = false;
                drop(inner);
                conn.wake.notify_one();
                break h::text_plain(StatusCode::OK, Frame::NOOP.bytes().clone());
            }
        }
        notified.await;
    };
    abandon.answered = true;
    Ok(res)
}

/// How long a GET that arrives after `3probe` waits for the upgrade to finish.
const UPGRADE_RACE: Duration = Duration::from_millis(100);

/// A GET that arrives while a websocket is upgrading the session may be
/// racing the client's `2probe`/`5` on that websocket. Wait briefly (at most
/// 100 ms, once per upgrade in practice) for the upgrade to settle, so that a
/// finished upgrade refuses the poll (400) instead of answering it with a noop.
async fn wait_for_racing_upgrade(conn: &Conn) {
    let deadline = tokio::time::Instant::now() + UPGRADE_RACE;
    loop {
        let settled = conn.upgrade_settled.notified();
        let upgrading = matches!(conn.lock().fsm.transport(), TransportState::Upgrading { .. });
        if !upgrading || tokio::time::timeout_at(deadline, settled).await.is_err() {
            return;
        }
    }
}

/// A POST (`declared`: its `Content-Length`): decode the payload and hand
/// its packets over, in order.
pub(super) async fn post<H: Handler>(
    engine: &Engine<H>,
    entry: &Entry<H::State>,
    declared: Option<u64>,
    incoming: Incoming,
) -> Result<Response<Body>, Reject> {
    let conn = &entry.conn;
    let guard = start(conn, PollKind::Post)?;
    let max = engine.config.max_payload;
    let declared_too_big = declared.is_some_and(|n| n > max as u64);
    let body = if declared_too_big {
        None
    } else {
        // `Limited` stops reading once `max` is passed; a read error (client
        // gone mid-body) also lands here.
        let read = tokio::time::timeout(engine.config.body_timeout, Limited::new(incoming, max).collect());
        let Ok(read) = read.await else {
            // Bound hit: the body did not arrive in time (a slow-body attack or
            // a stalled client). Refuse and close the session.
            drop(guard);
            conn.close(CloseReason::TransportError);
            return Err(EngineError::BadRequest.into());
        };
        match read {
            Ok(b) => Some(b.to_bytes()),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_none() {
                    drop(guard);
                    conn.close(CloseReason::TransportError);
                    return Err(EngineError::BadRequest.into());
                }
                None
            }
        }
    };
    let Some(body) = body else {
        // Bound hit: answer 413 and close the session.
        drop(guard);
        conn.close(CloseReason::TransportError);
        return Err(Reject::PayloadTooLarge);
    };
    deliver(engine, entry, &body);
    drop(guard);
    Ok(h::ok_html())
}

fn deliver<H: Handler>(engine: &Engine<H>, entry: &Entry<H::State>, body: &Bytes) {
    let conn = &entry.conn;
    let packets = match payload::decode(body) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(sid = %conn.sid(), error = %e, "invalid polling payload");
            conn.close(CloseReason::ParseError);
            return;
        }
    };
    let now = now();
    for packet in &packets {
        let received = conn.lock().fsm.on_packet(now, packet);
        match received {
            Received::Message(text) => engine.dispatch(entry, Message::Text(text)),
            Received::Binary(data) => engine.dispatch(entry, Message::Binary(&Bytes::copy_from_slice(data))),
            Received::Nothing => {}
            Received::Close(reason) => {
                {
                    let mut inner = conn.lock();
                    // The client's GET may be racing this POST on another
                    // connection: let it have its noop (see `get`).
                    inner.farewell_noop = reason == CloseReason::TransportClose && !inner.fsm.has_pending_get();
                }
                conn.close(reason);
                return;
            }
        }
        if conn.is_closed() {
            return;
        }
    }
}
