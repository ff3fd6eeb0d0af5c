//! `GET /api/events/stream`: a tenant's events as Server-Sent Events, for
//! curl (`curl -N`), scripts and services.
//!
//! Each event is one record — `id: <event id>`, `event: event_created`,
//! `data: <the event's JSON>`, a blank line — and the stream starts with
//! `retry: 2000`. Where it starts: after the event named by `Last-Event-ID`
//! (which wins) or `?sinceId=`, with every retained later event first and
//! then the live ones; when that id is not retained, first an `event: gap`
//! record and then from the oldest retained event. Without either, the latest
//! `?snapshot=N` events (0..=1000, default 0), then live.
//!
//! The stream joins its tenant at one consistent point (under the tenant's
//! lock, as a socket does for its snapshot): the backlog is everything up to
//! that point, read from the store a page at a time as the client drains it
//! (never the whole backlog in memory); the live events are everything after
//! it, queued by the delivery. So nothing falls between them and nothing
//! comes twice. A backlog event evicted before it was read is a `gap` record.
//!
//! Bounds: a stream whose client falls behind the live events by more than
//! the per-session queue bound (`NB_BACKEND_MAX_QUEUE`) is ended and counted
//! as a slow consumer (it resumes with `Last-Event-ID`); a stream counts
//! toward the tenant's connection limit (429 `too_many_connections` beyond
//! it) and, as an HTTP connection, toward the server's. A `: keep-alive`
//! comment every 15 s keeps proxies from closing an idle stream. Shutdown
//! ends every stream cleanly.
//!
//! Credentials: a stream opened with a JWT ends at its `exp` (plus the
//! leeway) with an `event: error` record `{"code":"token_expired"}`; after a
//! reload, a stream whose credentials are no longer accepted ends with
//! `{"code":"unauthorized"}`, one whose JWT's key left the JWKS with
//! `{"code":"token_revoked"}`. The client reconnects with a fresh token and
//! `Last-Event-ID`, and misses nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::auth::{Authenticated, Check, Credential, jwt::unix_now};
use super::delivery::{SSE_OVERHEAD, StreamEnd, StreamGuard, push_sse_record};
use super::error::FeedError;
use super::paging::{MAX_LIMIT, TenantView, parse_since};
use super::store::{Opening, Store};
use super::{Feed, Principal};
use crate::http::{Body, BodySender, Peer, body};

/// Backlog events read from the store at once.
pub const PAGE: usize = 100;
/// Chunks the stream's task sends (the start, backlog pages, keep-alives)
/// waiting for the client at most; the task waits beyond.
const CHUNKS: usize = 8;
/// What a client waits before reconnecting, told at the start (ms).
const RETRY: &[u8] = b"retry: 2000\n\n";
const GAP: &[u8] = b"event: gap\ndata: {\"gap\":true}\n\n";
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// How long the last record of a stream whose credentials ended may wait
/// for the client; then the stream ends without it.
const LAST_RECORD_WAIT: Duration = Duration::from_secs(1);

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// After this event.
    After(uuid::Uuid),
    /// The latest `n` events.
    Latest(usize),
}

/// Reads where the stream starts from `Last-Event-ID` (wins), `?sinceId=`
/// or `?snapshot=`. Every one given is checked, the losing ones too: a
/// malformed parameter is a 400 whichever would have been used.
fn start_of(headers: &HeaderMap, query: &str) -> Result<Start, FeedError> {
    let mut start = Start::Latest(0);
    let mut since = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sinceId" if !v.is_empty() => since = Some(parse_since(v)?),
            "snapshot" => {
                let n = v.parse::<usize>().ok().filter(|n| *n <= MAX_LIMIT).ok_or_else(|| {
                    FeedError::bad_request(format!("snapshot must be an integer from 0 to {MAX_LIMIT}"))
                })?;
                start = Start::Latest(n);
            }
            _ => {}
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        let last = last.to_str().map_err(|_| FeedError::bad_request("Last-Event-ID must be an event id (UUID)"))?;
        if !last.trim().is_empty() {
            return Ok(Start::After(parse_since(last.trim())?));
        }
    }
    Ok(since.map_or(start, Start::After))
}

/// What a stream sends before its live events: the backlog `(cursor, end]`
/// by `seq`, after a `gap` record when `gap`.
struct Backlog {
    cursor: u64,
    end: u64,
    gap: bool,
}

/// Where the backlog begins and ends, read at the consistent point.
fn backlog(log: &impl TenantView, start: Start) -> Backlog {
    let end = log.last_seq();
    let oldest = log.first_seq().saturating_sub(1);
    match start {
        Start::After(id) => match log.seq_of(&id) {
            Some(seq) => Backlog { cursor: seq, end, gap: false },
            None => Backlog { cursor: oldest, end, gap: true },
        },
        Start::Latest(n) => Backlog { cursor: end.saturating_sub(n as u64).max(oldest), end, gap: false },
    }
}

/// Answers `GET /api/events/stream` for `who`: the response headers now,
/// the start, the backlog, keep-alives and the end from a task of the
/// stream's own; the live records are taken from the stream's queue by the
/// response body itself (no task between the delivery and the socket).
pub(super) async fn open<S: Store>(
    feed: &Arc<Feed<S>>,
    authenticated: Authenticated,
    headers: &HeaderMap,
    query: &str,
    peer: std::net::SocketAddr,
    connection: Option<crate::http::ConnectionSlot>,
) -> Result<Response<Body>, FeedError> {
    let start = start_of(headers, query)?;
    let Authenticated { principal: who, credential } = authenticated;
    let tenant = who.tenant.clone();
    let opening = Opening { tenant: &tenant, fresh: matches!(start, Start::After(_)), recover: None };
    feed.store.open(opening).await?;
    let max = feed.config.max_tenant_connections;
    let joined = feed.store.with_tenant(&tenant, |log| {
        // Under the tenant's lock: the stream gets every event after this
        // point from its queue, and the backlog up to it from the store.
        if feed.delivery().subscribers(&tenant) >= max {
            return None;
        }
        Some((backlog(log, start), feed.delivery().streams().join(&tenant, feed.config.stream_queue, connection)))
    });
    let Some((backlog, guard)) = joined else {
        // Bound hit: this tenant has as many subscribers as allowed here.
        feed.metrics.reject("tenant_connections");
        tracing::warn!(target: "audit", action = "stream", outcome = "tenant_connection_limit", tenant = %who.tenant, user = %who.user, peer = %peer, max, "stream refused");
        return Err(FeedError::TooManyConnections { retry_after: 1 });
    };
    tracing::info!(target: "audit", action = "stream", outcome = "opened", tenant = %who.tenant, user = %who.user, peer = %peer, "stream opened");
    let (tx, body) = body::channel(CHUNKS, Some(guard.queue.clone()));
    tokio::spawn(Stream { feed: feed.clone(), tenant, guard, tx, peer, who, credential }.run(backlog));
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses (nginx) pass this one through as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    *res.status_mut() = StatusCode::OK;
    Ok(res)
}

/// One open stream, run by its own task.
struct Stream<S: Store> {
    feed: Arc<Feed<S>>,
    tenant: String,
    guard: StreamGuard,
    tx: BodySender,
    peer: std::net::SocketAddr,
    who: Principal,
    credential: Credential,
}

/// Why a stream's task stops.
enum Stop {
    /// The client left, or the server shuts down.
    Quietly,
    /// The stream must end.
    End(StreamEnd),
    /// Its credentials ended: the last record says which way.
    Credentials(CredentialsEnd),
}

/// How a stream's credentials ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialsEnd {
    /// Its JWT expired.
    Expired,
    /// They are no longer accepted.
    Revoked,
    /// Its JWT's key left the JWKS.
    KeyGone,
}

impl CredentialsEnd {
    /// The `event: error` record that ends the stream.
    fn record(self) -> &'static [u8] {
        match self {
            CredentialsEnd::Expired => {
                b"event: error\ndata: {\"code\":\"token_expired\",\"message\":\"the token expired; reconnect with a new token\"}\n\n"
            }
            CredentialsEnd::Revoked => {
                b"event: error\ndata: {\"code\":\"unauthorized\",\"message\":\"these credentials are no longer accepted\"}\n\n"
            }
            CredentialsEnd::KeyGone => {
                b"event: error\ndata: {\"code\":\"token_revoked\",\"message\":\"the token's signing key was withdrawn; reconnect with a new token\"}\n\n"
            }
        }
    }

    fn outcome(self) -> &'static str {
        match self {
            CredentialsEnd::Expired => "token_expired",
            CredentialsEnd::Revoked => "credentials_revoked",
            CredentialsEnd::KeyGone => "token_revoked",
        }
    }
}

impl<S: Store> Stream<S> {
    async fn run(self, backlog: Backlog) {
        let stop = tokio::select! {
            stop = self.serve(backlog) => stop,
            end = self.credentials_end() => Stop::Credentials(end),
        };
        match stop {
            Stop::End(StreamEnd::SlowConsumer) => {
                self.feed.metrics.engine.slow_consumer_closes.inc();
                tracing::warn!(target: "audit", action = "disconnect", outcome = "slow_consumer", tenant = %self.who.tenant, user = %self.who.user, peer = %Peer(Some(self.peer)), "stream dropped: its queue overflowed");
                // Dropped, not ended: the client is not reading, so an orderly
                // end could not be written either.
                self.tx.abort();
            }
            Stop::Credentials(end) => {
                if end == CredentialsEnd::Expired {
                    self.feed.metrics.token_expiries.inc();
                }
                tracing::info!(target: "audit", action = "disconnect", outcome = end.outcome(), tenant = %self.who.tenant, user = %self.who.user, peer = %Peer(Some(self.peer)), "stream ended: its credentials ended");
                // Bound hit (the client does not read): the stream ends
                // without its last record.
                let _ = tokio::time::timeout(LAST_RECORD_WAIT, self.tx.send(Bytes::from_static(end.record()))).await;
            }
            Stop::End(StreamEnd::Reset) | Stop::Quietly => {}
        }
    }

    /// Resolves when the stream's credentials end: its JWT's `exp` (plus
    /// the leeway) passes, or a reload no longer accepts them. Costs one
    /// timer, and a look at each reload.
    async fn credentials_end(&self) -> CredentialsEnd {
        let credentials = &self.feed.credentials;
        let mut changes = credentials.changes();
        let expiry = async {
            match self.credential.jwt() {
                Some(grant) => {
                    let left = Duration::from_secs(u64::try_from(grant.exp - unix_now()).unwrap_or(0));
                    tokio::time::sleep(left + credentials.leeway()).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                () = &mut expiry => return CredentialsEnd::Expired,
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The credentials are gone with the server: nothing more to watch.
                        std::future::pending::<()>().await;
                    }
                    match credentials.check(&self.who.tenant, &self.credential) {
                        Check::Accepted(_) => {}
                        Check::Revoked => return CredentialsEnd::Revoked,
                        Check::KeyGone => return CredentialsEnd::KeyGone,
                    }
                }
            }
        }
    }

    async fn serve(&self, backlog: Backlog) -> Stop {
        let Backlog { mut cursor, end, gap } = backlog;
        // `end` is where the stream joined: the backlog goes up to it, the
        // live queue holds everything after it.
        let head = if gap { [RETRY, GAP].concat() } else { RETRY.to_vec() };
        if let Err(stop) = self.send(Bytes::from(head)).await {
            return stop;
        }
        while cursor < end {
            let want = usize::try_from(end - cursor).unwrap_or(PAGE).min(PAGE);
            let page = self.feed.store.with_tenant(&self.tenant, |log| match log.after_seq(cursor, want) {
                Some(page) => Ok(page.events),
                None => Err(log.first_seq().saturating_sub(1)),
            });
            let sent = match page {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    cursor = events.last().map_or(cursor, |e| e.seq());
                    // The page's records written straight into one chunk.
                    let mut out = Vec::with_capacity(events.iter().map(|e| e.json().get().len() + SSE_OVERHEAD).sum());
                    for event in &events {
                        push_sse_record(&mut out, event);
                    }
                    self.send(Bytes::from(out)).await
                }
                Err(oldest) => {
                    // Evicted before it was read: say so, and go on from
                    // the oldest event retained.
                    cursor = oldest.max(cursor);
                    self.send(Bytes::from_static(GAP)).await
                }
            };
            if let Err(stop) = sent {
                return stop;
            }
        }
        // The backlog is sent: from here on the body takes the live records
        // from the queue itself (the stream joined at the backlog's end, so
        // they are exactly the later events). This task only keeps the
        // stream alive and ends it.
        self.tx.go_live();
        let mut keep_alive = tokio::time::interval(self.feed.config.stream_keep_alive);
        keep_alive.reset();
        loop {
            if let Some(why) = self.guard.queue.ended() {
                return Stop::End(why);
            }
            tokio::select! {
                _ = self.guard.queue.notify.notified() => {}
                _ = keep_alive.tick() => {
                    if let Err(stop) = self.send(Bytes::from_static(KEEP_ALIVE)).await {
                        return stop;
                    }
                }
                _ = self.feed.shutdown.cancelled() => return Stop::Quietly,
                _ = self.tx.closed() => return Stop::Quietly,
            }
        }
    }

    /// Sends one chunk, waiting while the client drains what is queued —
    /// unless the stream must end meanwhile, or the server shuts down.
    async fn send(&self, chunk: Bytes) -> Result<(), Stop> {
        let send = self.tx.send(chunk);
        tokio::pin!(send);
        loop {
            tokio::select! {
                sent = &mut send => return sent.map_err(|_| Stop::Quietly),
                _ = self.guard.queue.notify.notified() => {
                    if let Some(why) = self.guard.queue.ended() {
                        return Err(Stop::End(why));
                    }
                }
                _ = self.feed.shutdown.cancelled() => return Err(Stop::Quietly),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_a_stream_starts() {
        let id = uuid::Uuid::new_v4();
        let mut h = HeaderMap::new();
        assert_eq!(start_of(&h, "").unwrap(), Start::Latest(0));
        assert_eq!(start_of(&h, "snapshot=5").unwrap(), Start::Latest(5));
        assert_eq!(start_of(&h, &format!("sinceId={id}&snapshot=5")).unwrap(), Start::After(id));
        for bad in ["snapshot=1001", "snapshot=-1", "snapshot=x", "sinceId=nope"] {
            assert_eq!(start_of(&h, bad).unwrap_err().code(), "bad_request", "{bad}");
        }
        let other = uuid::Uuid::new_v4();
        h.insert("last-event-id", HeaderValue::from_str(&other.to_string()).unwrap());
        assert_eq!(start_of(&h, &format!("sinceId={id}")).unwrap(), Start::After(other), "Last-Event-ID wins");
        for bad in ["sinceId=nope", "snapshot=x"] {
            assert_eq!(start_of(&h, bad).unwrap_err().code(), "bad_request", "checked though it loses: {bad}");
        }
        h.insert("last-event-id", HeaderValue::from_static("nope"));
        assert_eq!(start_of(&h, "").unwrap_err().code(), "bad_request");
        h.insert("last-event-id", HeaderValue::from_static(" "));
        assert_eq!(start_of(&h, "").unwrap(), Start::Latest(0), "an empty Last-Event-ID is none");
    }
}
