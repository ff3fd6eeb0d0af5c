//! Requests (on the request channel): JSON, except `BROADCAST` (7), which is msgpack.

use bytes::Bytes;
use serde_json::Value;

use super::broadcast::{Broadcast, broadcast_from_nodes};
use super::msgpack::{
    Node, decode_json, decode_msgpack, opt_string, req_string, room_string, string_list, take, to_json, truthy,
};
use super::{AdapterError, malformed, request_type};

/// Which sockets a request targets (`request.opts`): those in any of `rooms` (all when empty) and in none of
/// `except`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `opts.rooms`.
    pub rooms: Vec<String>,
    /// `opts.except`.
    pub except: Vec<String>,
}

/// A request received on the request channel.
///
/// Node ignores its own requests: `SOCKETS`, `ALL_ROOMS` and `REMOTE_FETCH` whose request id it issued,
/// `SERVER_SIDE_EMIT` carrying its own uid, `BROADCAST` whose request id it issued. Do the same.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `SOCKETS` (0), legacy: answer with [`sockets_response`](super::sockets_response).
    Sockets {
        /// `requestId`.
        request_id: String,
        /// The rooms to list the sockets of (all sockets when empty).
        rooms: Vec<String>,
    },
    /// `ALL_ROOMS` (1): answer with [`all_rooms_response`](super::all_rooms_response).
    AllRooms {
        /// `requestId`.
        request_id: String,
    },
    /// `REMOTE_JOIN` (2) with `opts` (`socketsJoin`): make the selected sockets join `rooms`. No response.
    RemoteJoin {
        /// Which sockets.
        selector: Selector,
        /// The rooms to join.
        rooms: Vec<String>,
    },
    /// `REMOTE_JOIN` (2) for one socket (legacy form): if `sid` is a local socket, make it join `room` and answer
    /// with [`remote_ack_response`](super::remote_ack_response); otherwise do nothing.
    RemoteJoinSocket {
        /// `requestId`.
        request_id: String,
        /// The socket id.
        sid: String,
        /// The room to join.
        room: String,
    },
    /// `REMOTE_LEAVE` (3) with `opts` (`socketsLeave`): make the selected sockets leave `rooms`. No response.
    RemoteLeave {
        /// Which sockets.
        selector: Selector,
        /// The rooms to leave.
        rooms: Vec<String>,
    },
    /// `REMOTE_LEAVE` (3) for one socket (legacy form): like [`Request::RemoteJoinSocket`].
    RemoteLeaveSocket {
        /// `requestId`.
        request_id: String,
        /// The socket id.
        sid: String,
        /// The room to leave.
        room: String,
    },
    /// `REMOTE_DISCONNECT` (4) with `opts` (`disconnectSockets`): disconnect the selected sockets. No response.
    RemoteDisconnect {
        /// Which sockets.
        selector: Selector,
        /// Whether to close the underlying connection too.
        close: bool,
    },
    /// `REMOTE_DISCONNECT` (4) for one socket (legacy form): if `sid` is local, disconnect it and answer with
    /// [`remote_ack_response`](super::remote_ack_response).
    RemoteDisconnectSocket {
        /// `requestId`.
        request_id: String,
        /// The socket id.
        sid: String,
        /// Whether to close the underlying connection too.
        close: bool,
    },
    /// `REMOTE_FETCH` (5): answer with [`fetch_response`](super::fetch_response).
    RemoteFetch {
        /// `requestId`.
        request_id: String,
        /// Which sockets.
        selector: Selector,
    },
    /// `SERVER_SIDE_EMIT` (6): `data` is `[eventName, ...args]` for the server-side listeners. With a `request_id`,
    /// answer (once) with [`server_side_emit_response`](super::server_side_emit_response).
    ServerSideEmit {
        /// `requestId`, present iff an acknowledgement is expected.
        request_id: Option<String>,
        /// `[eventName, ...args]` (binary of a msgpack request replaced by placeholders).
        data: Value,
        /// Binary referenced by placeholders of `data` (always empty for JSON requests).
        attachments: Vec<Bytes>,
    },
    /// `BROADCAST` (7, msgpack): a broadcast expecting acknowledgements. Deliver it with a packet id, answer with
    /// [`broadcast_client_count_response`](super::broadcast_client_count_response) (number of local clients reached), then with one
    /// [`broadcast_ack_response`](super::broadcast_ack_response) per client acknowledgement.
    BroadcastWithAck {
        /// `requestId`.
        request_id: String,
        /// The broadcast (`uid` is the request's uid, `flags.timeout` is set by Socket.IO).
        broadcast: Broadcast,
    },
    /// Any other type number (Node ignores them).
    Other(u64),
}

/// Decodes a message received on the request channel: JSON when its first byte is `{` (0x7b), msgpack otherwise
/// (as the adapter's `onrequest`). Returns the requester's `uid` (absent in the emitter's join/leave/disconnect
/// requests) and the request.
pub fn decode_request(msg: &[u8]) -> Result<(Option<String>, Request), AdapterError> {
    let root = if msg.first() == Some(&b'{') { decode_json(msg)? } else { decode_msgpack(msg)? };
    let Node::Map(mut m) = root else {
        return Err(malformed("request is not an object"));
    };
    let ty = match take(&mut m, "type") {
        Some(Node::Int(t)) if t >= 0 => t.unsigned_abs(),
        Some(Node::UInt(t)) => t,
        _ => return Err(malformed("request type is not a non-negative integer")),
    };
    let uid = opt_string(take(&mut m, "uid"), "uid")?;
    use request_type as t;
    let request = match ty {
        t::SOCKETS => Request::Sockets {
            request_id: req_string(take(&mut m, "requestId"), "requestId")?,
            rooms: string_list(take(&mut m, "rooms"), "rooms")?,
        },
        t::ALL_ROOMS => Request::AllRooms { request_id: req_string(take(&mut m, "requestId"), "requestId")? },
        t::REMOTE_JOIN | t::REMOTE_LEAVE => match take(&mut m, "opts") {
            Some(opts) if truthy(&opts) => {
                let selector = selector(opts)?;
                let rooms = string_list(take(&mut m, "rooms"), "rooms")?;
                if ty == t::REMOTE_JOIN {
                    Request::RemoteJoin { selector, rooms }
                } else {
                    Request::RemoteLeave { selector, rooms }
                }
            }
            _ => {
                let request_id = req_string(take(&mut m, "requestId"), "requestId")?;
                let sid = req_string(take(&mut m, "sid"), "sid")?;
                let room = room_string(take(&mut m, "room"), "room")?;
                if ty == t::REMOTE_JOIN {
                    Request::RemoteJoinSocket { request_id, sid, room }
                } else {
                    Request::RemoteLeaveSocket { request_id, sid, room }
                }
            }
        },
        t::REMOTE_DISCONNECT => {
            let close = take(&mut m, "close").is_some_and(|c| truthy(&c));
            match take(&mut m, "opts") {
                Some(opts) if truthy(&opts) => Request::RemoteDisconnect { selector: selector(opts)?, close },
                _ => Request::RemoteDisconnectSocket {
                    request_id: req_string(take(&mut m, "requestId"), "requestId")?,
                    sid: req_string(take(&mut m, "sid"), "sid")?,
                    close,
                },
            }
        }
        t::REMOTE_FETCH => Request::RemoteFetch {
            request_id: req_string(take(&mut m, "requestId"), "requestId")?,
            selector: selector(take(&mut m, "opts").ok_or_else(|| malformed("REMOTE_FETCH without opts"))?)?,
        },
        t::SERVER_SIDE_EMIT => {
            let request_id = opt_string(take(&mut m, "requestId"), "requestId")?;
            let data @ Node::Arr(_) = take(&mut m, "data").unwrap_or(Node::Undefined) else {
                return Err(malformed("SERVER_SIDE_EMIT data is not an array"));
            };
            let mut attachments = Vec::new();
            let data = to_json(data, &mut attachments);
            Request::ServerSideEmit { request_id, data, attachments }
        }
        t::BROADCAST => {
            let request_id = req_string(take(&mut m, "requestId"), "requestId")?;
            let packet = take(&mut m, "packet").ok_or_else(|| malformed("BROADCAST without packet"))?;
            let opts = take(&mut m, "opts").ok_or_else(|| malformed("BROADCAST without opts"))?;
            let broadcast = broadcast_from_nodes(uid.clone().unwrap_or_default(), packet, opts)?;
            Request::BroadcastWithAck { request_id, broadcast }
        }
        other => Request::Other(other),
    };
    Ok((uid, request))
}

fn selector(opts: Node) -> Result<Selector, AdapterError> {
    let Node::Map(mut m) = opts else {
        return Err(malformed("opts is not an object"));
    };
    Ok(Selector {
        rooms: string_list(take(&mut m, "rooms"), "opts.rooms")?,
        except: string_list(take(&mut m, "except"), "opts.except")?,
    })
}
