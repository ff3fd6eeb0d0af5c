//! The cluster adapter over Redis, in the wire format of
//! `@socket.io/redis-adapter` 8: this instance's broadcasts and requests are
//! published on the namespace's channels, and the responses the other
//! servers publish are collected here until every server answered or the
//! request timed out; the other servers' broadcasts and requests, which the
//! subscription task receives, are carried out by the Socket.IO layer
//! ([`crate::sio::adapter::answer`], [`crate::sio::adapter::deliver`]).
//!
//! How many servers must answer is the number of subscribers of the
//! namespace's request channel (`PUBSUB NUMSUB`, as Node counts them), this
//! one excluded. At most [`MAX_PENDING`] requests wait for answers at once;
//! each waits at most [`REQUEST_TIMEOUT`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::Shared;
use crate::sio::adapter::{self as sio_adapter, Adapter, AdapterError};
use crate::sio::{BroadcastOp, Namespaces};
use eventfeed_protocol::adapter::{
    self as wire, Broadcast, FetchedSocket, Flags, PACKET_TYPE_EVENT, Request, Response, Selector,
};

/// Requests waiting for answers at most; more are refused at once.
pub const MAX_PENDING: usize = 256;
/// How long a request waits for every server's answer (Node's `requestsTimeout` default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A request of this instance waiting for the other servers' answers.
struct Pending {
    /// Answers still expected.
    expected: usize,
    answers: Vec<Response>,
    done: Option<oneshot::Sender<Vec<Response>>>,
}

/// The cluster adapter over Redis (a handle: clones share it).
#[derive(Clone)]
pub struct RedisAdapter(Arc<Inner>);

struct Inner {
    shared: Arc<Shared>,
    pending: Mutex<HashMap<String, Pending, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapter").field("uid", &self.0.shared.uid).finish_non_exhaustive()
    }
}

/// A selector of the Socket.IO layer as the wire's: a socket excepted by id
/// is excepted through its own room, as Node's sockets are in theirs.
fn selector(op: &BroadcastOp<'_>) -> Selector {
    let mut except: Vec<String> = op.except_rooms.iter().map(|r| (*r).to_owned()).collect();
    except.extend(op.except_socket.map(str::to_owned));
    Selector { rooms: op.rooms.iter().map(|r| (*r).to_owned()).collect(), except }
}

impl RedisAdapter {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        RedisAdapter(Arc::new(Inner { shared, pending: Mutex::default() }))
    }

    /// Another server's request on namespace `nsp`: carried out here, and
    /// answered on the common response channel when it expects an answer.
    pub(super) fn on_request(&self, nsp: &str, payload: &[u8], namespaces: &Namespaces) {
        let (uid, request) = match wire::decode_request(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a malformed adapter request");
                return;
            }
        };
        if uid.as_deref() == Some(self.0.shared.uid.as_str()) {
            return;
        }
        let Some(response) = sio_adapter::answer(namespaces, nsp, request) else { return };
        self.0.shared.metrics.requests_answered.inc();
        let shared = self.0.shared.clone();
        let channel = shared.channels(nsp).response;
        let body = match wire::encode_response(&response) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an answer to another server");
                return;
            }
        };
        tokio::spawn(async move {
            let _ = shared.publish(&channel, body).await;
        });
    }

    /// A response to one of this instance's requests (others are ignored).
    pub(super) fn on_response(&self, payload: &[u8]) {
        let Ok(response) = wire::decode_response(payload) else { return };
        let mut pending = self.0.pending();
        let Some(p) = pending.get_mut(response.request_id()) else { return };
        let id = response.request_id().to_owned();
        p.answers.push(response);
        p.expected = p.expected.saturating_sub(1);
        if p.expected == 0
            && let Some(mut p) = pending.remove(&id)
            && let Some(done) = p.done.take()
        {
            let _ = done.send(p.answers);
        }
    }

    /// Another server's broadcast, to the local sockets it selects.
    pub(super) fn on_broadcast(&self, broadcast: &Broadcast, namespaces: &Namespaces) {
        let metrics = &self.0.shared.metrics;
        if let Some(stats) = sio_adapter::deliver(namespaces, broadcast) {
            metrics.remote_broadcasts.inc();
            metrics.deliveries.inc_by(stats.delivered as u64);
            metrics.delivery_failures.inc_by(stats.failed as u64);
        }
    }
}

impl Inner {
    fn pending(&self) -> MutexGuard<'_, HashMap<String, Pending, foldhash::fast::RandomState>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `request` on `nsp`'s request channel, expecting no answer.
    fn tell(self: &Arc<Self>, nsp: &str, request: &Request) {
        match wire::encode_request(Some(&self.shared.uid), request) {
            Ok(body) => self.publish_later(self.shared.channels(nsp).request, body),
            Err(e) => tracing::warn!(error = %e, "cannot encode a request to the other servers"),
        }
    }

    fn publish_later(self: &Arc<Self>, channel: String, body: Vec<u8>) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _ = shared.publish(&channel, body).await;
        });
    }

    /// How many servers subscribe to `nsp`'s request channel (this one included).
    async fn server_count(&self, nsp: &str) -> Result<usize, AdapterError> {
        let channel = self.shared.channels(nsp).request;
        let mut conn = self.shared.conn.clone();
        let mut numsub = redis::cmd("PUBSUB");
        numsub.arg("NUMSUB").arg(&channel);
        let (_, count): (String, usize) =
            self.shared.call(numsub.query_async(&mut conn)).await.map_err(|_| AdapterError::Unavailable)?;
        Ok(count)
    }

    /// Publishes `request` on `nsp`'s request channel and waits for the
    /// answer of every other server.
    async fn ask(
        self: &Arc<Self>,
        nsp: &str,
        timeout: Duration,
        request: impl FnOnce(String) -> Request,
    ) -> Result<Vec<Response>, AdapterError> {
        let expected = self.server_count(nsp).await?.saturating_sub(1);
        if expected == 0 {
            return Ok(Vec::new());
        }
        let request_id = wire::request_id(&rand::random::<[u8; wire::REQUEST_ID_LEN]>());
        let (done, answered) = oneshot::channel();
        {
            let mut pending = self.pending();
            if pending.len() >= MAX_PENDING {
                // Bound hit: refuse this request rather than queue more.
                return Err(AdapterError::TooManyRequests);
            }
            pending.insert(request_id.clone(), Pending { expected, answers: Vec::new(), done: Some(done) });
        }
        let published = match wire::encode_request(Some(&self.shared.uid), &request(request_id.clone())) {
            Ok(body) => self
                .shared
                .publish(&self.shared.channels(nsp).request, body)
                .await
                .map_err(|_| AdapterError::Unavailable),
            Err(e) => Err(AdapterError::Encoding(e.to_string())),
        };
        let outcome = match published {
            Ok(()) => match tokio::time::timeout(timeout, answered).await {
                Ok(Ok(answers)) => Ok(answers),
                _ => Err(AdapterError::Timeout(timeout)),
            },
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            self.pending().remove(&request_id);
        }
        outcome
    }
}

impl Adapter for RedisAdapter {
    fn broadcast(&self, nsp: &str, op: &BroadcastOp<'_>, data: &Value, attachments: &[Bytes]) {
        let Selector { rooms, except } = selector(op);
        let channel = self.0.shared.channels(nsp).broadcast(&rooms);
        let broadcast = Broadcast {
            uid: self.0.shared.uid.clone(),
            packet_type: PACKET_TYPE_EVENT,
            nsp: nsp.to_owned(),
            data: data.clone(),
            attachments: attachments.to_vec(),
            rooms,
            except,
            flags: Flags::default(),
        };
        match wire::encode_broadcast(&broadcast) {
            Ok(body) => self.0.publish_later(channel, body),
            Err(e) => tracing::warn!(error = %e, "cannot encode a broadcast for the other servers"),
        }
    }

    fn fetch_sockets(
        &self,
        nsp: &str,
        op: &BroadcastOp<'_>,
    ) -> impl Future<Output = Result<Vec<FetchedSocket>, AdapterError>> + Send + 'static + use<> {
        let (inner, nsp, selector) = (self.0.clone(), nsp.to_owned(), selector(op));
        async move {
            let answers =
                inner.ask(&nsp, REQUEST_TIMEOUT, |request_id| Request::RemoteFetch { request_id, selector }).await?;
            Ok(answers
                .into_iter()
                .flat_map(|a| match a {
                    Response::RemoteFetch { sockets, .. } => sockets,
                    _ => Vec::new(),
                })
                .collect())
        }
    }

    fn all_rooms(&self, nsp: &str) -> impl Future<Output = Result<Vec<String>, AdapterError>> + Send + 'static + use<> {
        let (inner, nsp) = (self.0.clone(), nsp.to_owned());
        async move {
            let answers = inner.ask(&nsp, REQUEST_TIMEOUT, |request_id| Request::AllRooms { request_id }).await?;
            Ok(answers
                .into_iter()
                .flat_map(|a| match a {
                    Response::AllRooms { rooms, .. } => rooms,
                    _ => Vec::new(),
                })
                .collect())
        }
    }

    fn sockets_join(&self, nsp: &str, op: &BroadcastOp<'_>, rooms: &[&str]) {
        let request =
            Request::RemoteJoin { selector: selector(op), rooms: rooms.iter().map(|r| (*r).to_owned()).collect() };
        self.0.tell(nsp, &request);
    }

    fn sockets_leave(&self, nsp: &str, op: &BroadcastOp<'_>, rooms: &[&str]) {
        let request =
            Request::RemoteLeave { selector: selector(op), rooms: rooms.iter().map(|r| (*r).to_owned()).collect() };
        self.0.tell(nsp, &request);
    }

    fn disconnect_sockets(&self, nsp: &str, op: &BroadcastOp<'_>, close: bool) {
        let request = Request::RemoteDisconnect { selector: selector(op), close };
        self.0.tell(nsp, &request);
    }

    fn server_side_emit(
        &self,
        nsp: &str,
        data: &Value,
        ack: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Value>, AdapterError>> + Send + 'static + use<> {
        let (inner, nsp, data) = (self.0.clone(), nsp.to_owned(), data.clone());
        async move {
            if ack.is_none() {
                let request = Request::ServerSideEmit { request_id: None, data, attachments: Vec::new() };
                let body = wire::encode_request(Some(&inner.shared.uid), &request)
                    .map_err(|e| AdapterError::Encoding(e.to_string()))?;
                let channel = inner.shared.channels(&nsp).request;
                inner.shared.publish(&channel, body).await.map_err(|_| AdapterError::Unavailable)?;
                return Ok(Vec::new());
            }
            let timeout = ack.unwrap_or(REQUEST_TIMEOUT);
            let answers = inner
                .ask(&nsp, timeout, |request_id| Request::ServerSideEmit {
                    request_id: Some(request_id),
                    data,
                    attachments: Vec::new(),
                })
                .await?;
            Ok(answers
                .into_iter()
                .filter_map(|a| match a {
                    Response::ServerSideEmit { data, .. } => Some(data.unwrap_or(Value::Null)),
                    _ => None,
                })
                .collect())
        }
    }

    fn server_count(&self, nsp: &str) -> impl Future<Output = Result<usize, AdapterError>> + Send + 'static + use<> {
        let (inner, nsp) = (self.0.clone(), nsp.to_owned());
        async move { inner.server_count(&nsp).await }
    }
}
