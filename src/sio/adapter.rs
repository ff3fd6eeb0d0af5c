//! The cluster-adapter seam, as Node's socket.io has its `Adapter`: what a
//! server asks of the other servers of a cluster, and how it answers theirs.
//!
//! Sending: [`SocketIo`](super::SocketIo)'s cluster-wide operations
//! (broadcast, `fetchSockets`, `socketsJoin`/`socketsLeave`,
//! `disconnectSockets`, `serverSideEmit`, the server count, every room) act
//! on this server's sockets themselves and hand the rest to the [`Adapter`].
//! [`LocalAdapter`] is the adapter of a server alone: nothing to send, one
//! server. A backend that shares a bus (Redis) implements [`Adapter`] with
//! the wire format of `@socket.io/redis-adapter`.
//!
//! Answering: a backend that receives another server's request or broadcast
//! for a namespace hands it to [`answer`] or [`deliver`], which carry it out
//! on this server's sockets of that namespace, for any namespace.
//!
//! The adapter is a type parameter of the server: every call is dispatched
//! statically. The feed's own events never pass through it — they reach the
//! other servers through the shared store, and each server delivers them to
//! its sockets itself.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::Namespaces;
use super::namespace::{AnyNamespace, BroadcastOp, BroadcastStats};
use eventfeed_protocol::adapter::{Broadcast, FetchedSocket, Request, Response, Selector};
use eventfeed_protocol::socket::Packet;

/// Why a cluster-wide operation did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// Not every other server answered in time; the answers that came are lost.
    #[error("the other servers did not all answer within {0:?}")]
    Timeout(Duration),
    /// Too many requests to other servers are waiting for answers.
    #[error("too many requests to other servers are pending")]
    TooManyRequests,
    /// The bus between the servers is unreachable.
    #[error("the other servers cannot be reached")]
    Unavailable,
    /// This server has no such namespace.
    #[error("no such namespace")]
    UnknownNamespace,
    /// The message cannot be put on the wire (a placeholder without its
    /// attachment, nesting too deep).
    #[error("cannot encode the message: {0}")]
    Encoding(String),
}

/// What reaches the other servers of a cluster. Every method is about the
/// *other* servers: the caller has already acted on this server's sockets.
pub trait Adapter: Send + Sync + 'static {
    /// Publishes an event (`data` is `[name, ...args]`, binary parts in
    /// `attachments`) for the sockets `op` selects in namespace `nsp`.
    fn broadcast(&self, nsp: &str, op: &BroadcastOp<'_>, data: &Value, attachments: &[Bytes]);

    /// The sockets `op` selects in `nsp` on the other servers.
    fn fetch_sockets(
        &self,
        nsp: &str,
        op: &BroadcastOp<'_>,
    ) -> impl Future<Output = Result<Vec<FetchedSocket>, AdapterError>> + Send + 'static + use<Self>;

    /// The rooms with members in `nsp` on the other servers (socket ids included, as Node lists them).
    fn all_rooms(
        &self,
        nsp: &str,
    ) -> impl Future<Output = Result<Vec<String>, AdapterError>> + Send + 'static + use<Self>;

    /// Makes the sockets `op` selects in `nsp` on the other servers join `rooms`.
    fn sockets_join(&self, nsp: &str, op: &BroadcastOp<'_>, rooms: &[&str]);

    /// Makes the sockets `op` selects in `nsp` on the other servers leave `rooms`.
    fn sockets_leave(&self, nsp: &str, op: &BroadcastOp<'_>, rooms: &[&str]);

    /// Disconnects the sockets `op` selects in `nsp` on the other servers
    /// (`close`: their Engine.IO sessions too).
    fn disconnect_sockets(&self, nsp: &str, op: &BroadcastOp<'_>, close: bool);

    /// Emits `data` (`[name, ...args]`) to the server-side listeners of `nsp`
    /// on the other servers; with `ack`, waits that long for each one's
    /// answer and gives them.
    fn server_side_emit(
        &self,
        nsp: &str,
        data: &Value,
        ack: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Value>, AdapterError>> + Send + 'static + use<Self>;

    /// How many servers serve namespace `nsp`, this one included.
    fn server_count(&self, nsp: &str)
    -> impl Future<Output = Result<usize, AdapterError>> + Send + 'static + use<Self>;
}

/// The adapter of a server alone: there is nobody else to reach.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalAdapter;

impl Adapter for LocalAdapter {
    fn broadcast(&self, _nsp: &str, _op: &BroadcastOp<'_>, _data: &Value, _attachments: &[Bytes]) {}

    fn fetch_sockets(
        &self,
        _nsp: &str,
        _op: &BroadcastOp<'_>,
    ) -> impl Future<Output = Result<Vec<FetchedSocket>, AdapterError>> + Send + 'static + use<> {
        std::future::ready(Ok(Vec::new()))
    }

    fn all_rooms(
        &self,
        _nsp: &str,
    ) -> impl Future<Output = Result<Vec<String>, AdapterError>> + Send + 'static + use<> {
        std::future::ready(Ok(Vec::new()))
    }

    fn sockets_join(&self, _nsp: &str, _op: &BroadcastOp<'_>, _rooms: &[&str]) {}

    fn sockets_leave(&self, _nsp: &str, _op: &BroadcastOp<'_>, _rooms: &[&str]) {}

    fn disconnect_sockets(&self, _nsp: &str, _op: &BroadcastOp<'_>, _close: bool) {}

    fn server_side_emit(
        &self,
        _nsp: &str,
        _data: &Value,
        _ack: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Value>, AdapterError>> + Send + 'static + use<> {
        std::future::ready(Ok(Vec::new()))
    }

    fn server_count(&self, _nsp: &str) -> impl Future<Output = Result<usize, AdapterError>> + Send + 'static + use<> {
        std::future::ready(Ok(1))
    }
}

/// A selector of the wire as an operation on this server's sockets.
fn with_op<R>(selector: &Selector, f: impl FnOnce(&BroadcastOp<'_>) -> R) -> R {
    let rooms: Vec<&str> = selector.rooms.iter().map(String::as_str).collect();
    let except: Vec<&str> = selector.except.iter().map(String::as_str).collect();
    f(&BroadcastOp { rooms: &rooms, except_rooms: &except, except_socket: None })
}

/// The rooms a remote request may make sockets of `namespace` join or leave.
fn permitted<'a>(namespace: &dyn AnyNamespace, rooms: &'a [String]) -> Vec<&'a str> {
    rooms
        .iter()
        .map(String::as_str)
        .filter(|room| {
            let ok = namespace.allows_remote_room_change(room);
            if !ok {
                tracing::warn!(room, nsp = namespace.name(), "refused a remote join/leave of a protected room");
            }
            ok
        })
        .collect()
}

/// Carries out another server's `request` on this server's sockets of
/// namespace `nsp`; gives the response to publish, if the request expects one
/// from this server. Requests for a namespace this server does not have are
/// answered as by a server with no socket there.
pub fn answer(namespaces: &Namespaces, nsp: &str, request: Request) -> Option<Response> {
    let Some(namespace) = namespaces.get(nsp) else {
        return answer_empty(request);
    };
    match request {
        Request::Sockets { request_id, rooms } => {
            let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
            let ids = namespace.socket_ids(&BroadcastOp { rooms: &rooms, ..BroadcastOp::default() });
            Some(Response::Sockets { request_id, sockets: ids })
        }
        Request::AllRooms { request_id } => {
            let mut rooms = namespace.room_names();
            rooms.extend(namespace.socket_ids(&BroadcastOp::default()));
            Some(Response::AllRooms { request_id, rooms })
        }
        Request::RemoteFetch { request_id, selector } => {
            let sockets = with_op(&selector, |op| namespace.fetch(op));
            Some(Response::RemoteFetch { request_id, sockets })
        }
        Request::RemoteJoin { selector, rooms } => {
            let rooms = permitted(namespace, &rooms);
            with_op(&selector, |op| namespace.join(op, &rooms));
            None
        }
        Request::RemoteLeave { selector, rooms } => {
            let rooms = permitted(namespace, &rooms);
            with_op(&selector, |op| namespace.leave(op, &rooms));
            None
        }
        Request::RemoteJoinSocket { request_id, sid, room } => {
            namespace.join_one(&sid, &permitted(namespace, &[room])).then_some(Response::RemoteAck { request_id })
        }
        Request::RemoteLeaveSocket { request_id, sid, room } => {
            namespace.leave_one(&sid, &permitted(namespace, &[room])).then_some(Response::RemoteAck { request_id })
        }
        Request::RemoteDisconnect { selector, close } => {
            with_op(&selector, |op| namespace.disconnect(op, close));
            None
        }
        Request::RemoteDisconnectSocket { request_id, sid, close } => {
            namespace.disconnect_one(&sid, close).then_some(Response::RemoteAck { request_id })
        }
        // Answered (when asked) even without a listener, so the sender does
        // not wait for its timeout.
        Request::ServerSideEmit { request_id, data, .. } => {
            let reply = namespace.server_event(&data);
            request_id.map(|request_id| Response::ServerSideEmit { request_id, data: reply, attachments: Vec::new() })
        }
        // Delivered without asking the clients for an ack (this server does
        // not relay client acks), answered with a client count of 0.
        Request::BroadcastWithAck { request_id, broadcast } => {
            deliver_to(namespace, &broadcast);
            Some(Response::BroadcastClientCount { request_id, client_count: 0 })
        }
        Request::Other(_) => None,
    }
}

/// The answer of a server with no socket in the namespace.
fn answer_empty(request: Request) -> Option<Response> {
    match request {
        Request::Sockets { request_id, .. } => Some(Response::Sockets { request_id, sockets: Vec::new() }),
        Request::AllRooms { request_id } => Some(Response::AllRooms { request_id, rooms: Vec::new() }),
        Request::RemoteFetch { request_id, .. } => Some(Response::RemoteFetch { request_id, sockets: Vec::new() }),
        Request::ServerSideEmit { request_id, .. } => {
            request_id.map(|request_id| Response::ServerSideEmit { request_id, data: None, attachments: Vec::new() })
        }
        Request::BroadcastWithAck { request_id, .. } => {
            Some(Response::BroadcastClientCount { request_id, client_count: 0 })
        }
        _ => None,
    }
}

/// Delivers another server's broadcast to the sockets it selects here.
pub fn deliver(namespaces: &Namespaces, broadcast: &Broadcast) -> Option<BroadcastStats> {
    deliver_to(namespaces.get(&broadcast.nsp)?, broadcast)
}

fn deliver_to(namespace: &dyn AnyNamespace, broadcast: &Broadcast) -> Option<BroadcastStats> {
    let Value::Array(data) = &broadcast.data else { return None };
    let name = data.first().and_then(Value::as_str)?;
    let packet = Packet::event(&broadcast.nsp, name, data[1..].to_vec(), None, broadcast.attachments.clone()).encode();
    let rooms: Vec<&str> = broadcast.rooms.iter().map(String::as_str).collect();
    let except: Vec<&str> = broadcast.except.iter().map(String::as_str).collect();
    Some(namespace.broadcast(&BroadcastOp { rooms: &rooms, except_rooms: &except, except_socket: None }, &packet))
}
