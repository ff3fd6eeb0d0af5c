//! Requests, on the request channel: what another server asks of every server, decoded, and what this server asks,
//! encoded as the adapter writes it (JSON, except `BROADCAST` (7), which is msgpack).

use bytes::Bytes;
use serde_json::{Map, Value};

use super::broadcast::{Broadcast, broadcast_from_nodes, w_opts, w_packet};
use super::msgpack::{
    Node, decode_json, decode_msgpack, json_message, opt_string, req_string, room_string, string_list, take, to_json,
    truthy, uint_field, w_json, w_map_header, w_str, w_uint,
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

/// A request, as received on the request channel or to publish there.
///
/// Node ignores its own requests: `SOCKETS`, `ALL_ROOMS` and `REMOTE_FETCH` whose request id it issued,
/// `SERVER_SIDE_EMIT` carrying its own uid, `BROADCAST` whose request id it issued. Do the same.
///
/// Each variant says which [`Response`](super::Response) answers it. A requester learns how many answers to wait
/// for from `PUBSUB NUMSUB <request channel>` (every server subscribes to it), as Node does.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `SOCKETS` (0), legacy: answered with [`Response::Sockets`](super::Response::Sockets).
    Sockets {
        /// `requestId`.
        request_id: String,
        /// The rooms to list the sockets of (all sockets when empty).
        rooms: Vec<String>,
    },
    /// `ALL_ROOMS` (1): answered with [`Response::AllRooms`](super::Response::AllRooms).
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
    /// with [`Response::RemoteAck`](super::Response::RemoteAck); otherwise do nothing.
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
    /// [`Response::RemoteAck`](super::Response::RemoteAck).
    RemoteDisconnectSocket {
        /// `requestId`.
        request_id: String,
        /// The socket id.
        sid: String,
        /// Whether to close the underlying connection too.
        close: bool,
    },
    /// `REMOTE_FETCH` (5): answered with [`Response::RemoteFetch`](super::Response::RemoteFetch).
    RemoteFetch {
        /// `requestId`.
        request_id: String,
        /// Which sockets.
        selector: Selector,
    },
    /// `SERVER_SIDE_EMIT` (6): `data` is `[eventName, ...args]` for the server-side listeners. With a `request_id`,
    /// answered (once per server) with [`Response::ServerSideEmit`](super::Response::ServerSideEmit).
    ServerSideEmit {
        /// `requestId`, present iff an acknowledgement is expected.
        request_id: Option<String>,
        /// `[eventName, ...args]` (binary of a msgpack request replaced by placeholders).
        data: Value,
        /// Binary referenced by placeholders of `data` (always empty for JSON requests).
        attachments: Vec<Bytes>,
    },
    /// `BROADCAST` (7, msgpack): a broadcast expecting acknowledgements. Deliver it with a packet id, answer with
    /// [`Response::BroadcastClientCount`](super::Response::BroadcastClientCount) (number of local clients
    /// reached), then with one [`Response::BroadcastAck`](super::Response::BroadcastAck) per client
    /// acknowledgement.
    BroadcastWithAck {
        /// `requestId`.
        request_id: String,
        /// The broadcast. Decoded, its `uid` is the request's uid (`""` without one); encoding writes the `uid`
        /// given to [`encode_request`] instead. `flags.timeout` is set by Socket.IO.
        broadcast: Broadcast,
    },
    /// Any other type number (Node ignores them).
    Other(u64),
}

/// Decodes a message received on the request channel: JSON when its first byte is `{` (0x7b), msgpack otherwise
/// (as the adapter's `onrequest`). Returns the requester's `uid` (absent in the emitter's join/leave/disconnect
/// requests) and the request.
///
/// Room lists (`rooms`, `opts.rooms`, `opts.except`) come back deduplicated, first occurrence kept: Node makes
/// `Set`s of them.
pub fn decode_request(msg: &[u8]) -> Result<(Option<String>, Request), AdapterError> {
    let root = if msg.first() == Some(&b'{') { decode_json(msg)? } else { decode_msgpack(msg)? };
    let Node::Map(mut m) = root else {
        return Err(malformed("request is not an object"));
    };
    let ty = uint_field(take(&mut m, "type"), "request type")?;
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

/// Encodes `request` from the server `uid` as the adapter 8.3.0 publishes it on
/// [`Channels::request`](super::Channels::request), byte for byte:
///
/// | request | bytes |
/// |---|---|
/// | `Sockets` | `{"uid","requestId","type":0,"rooms"}` (adapter 7.x; 8.3.0 no longer sends it) |
/// | `AllRooms` | `{"uid","requestId","type":1}` |
/// | `RemoteJoin`, `RemoteLeave` | `{"uid","type":2 or 3,"opts":{"rooms","except"},"rooms"}` |
/// | `RemoteJoinSocket`, `RemoteLeaveSocket` | `{"uid","requestId","type":2 or 3,"sid","room"}` (adapter 7.x) |
/// | `RemoteDisconnect` | `{"uid","type":4,"opts":{"rooms","except"},"close"}` |
/// | `RemoteDisconnectSocket` | `{"uid","requestId","type":4,"sid","close"}` (adapter 7.x) |
/// | `RemoteFetch` | `{"uid","requestId","type":5,"opts":{"rooms","except"}}` |
/// | `ServerSideEmit` | `{"uid","requestId","type":6,"data"}`, `requestId` only with an acknowledgement |
/// | `BroadcastWithAck` | msgpack `{uid, requestId, type: 7, packet: {type, data, nsp}, opts: {rooms, except, flags}}` |
/// | `Other(n)` | `{"uid","type":n}` |
///
/// With `uid` `None` the `uid` key is left out, which is how the emitter writes its join/leave/disconnect requests
/// (`{"type":2,"opts":…,"rooms":…}`). JSON is written as `JSON.stringify` writes it (numbers included); objects
/// inside `data` keep their map order (a value decoded here is already in JavaScript's order).
///
/// Node could not send binary in a JSON `SERVER_SIDE_EMIT` (its `Buffer`s would turn into `{"type":"Buffer",…}`
/// objects); a `ServerSideEmit` with `attachments` is written as the same map in msgpack instead, which Node's
/// `onrequest` decodes (first byte not `{`) and hands to its listeners as `Buffer`s.
///
/// Room lists are written as given; Node's requests never repeat a room (they come from `Set`s), and
/// [`decode_request`] deduplicates them. Errors: `data` (of `ServerSideEmit` or of the broadcast) that is not an
/// array, a placeholder without its attachment, nesting deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
pub fn encode_request(uid: Option<&str>, request: &Request) -> Result<Vec<u8>, AdapterError> {
    use request_type as t;
    match request {
        Request::ServerSideEmit { request_id, data, attachments } if !attachments.is_empty() => {
            encode_msgpack_sse(uid, request_id.as_deref(), data, attachments)
        }
        Request::BroadcastWithAck { request_id, broadcast } => encode_broadcast_request(uid, request_id, broadcast),
        _ => {
            let mut m = Map::new();
            if let Some(uid) = uid {
                m.insert("uid".into(), uid.into());
            }
            match request {
                Request::Sockets { request_id, rooms } => {
                    m.insert("requestId".into(), request_id.as_str().into());
                    m.insert("type".into(), t::SOCKETS.into());
                    m.insert("rooms".into(), rooms.as_slice().into());
                }
                Request::AllRooms { request_id } => {
                    m.insert("requestId".into(), request_id.as_str().into());
                    m.insert("type".into(), t::ALL_ROOMS.into());
                }
                Request::RemoteJoin { selector, rooms } | Request::RemoteLeave { selector, rooms } => {
                    let ty =
                        if matches!(request, Request::RemoteJoin { .. }) { t::REMOTE_JOIN } else { t::REMOTE_LEAVE };
                    m.insert("type".into(), ty.into());
                    m.insert("opts".into(), opts_json(selector));
                    m.insert("rooms".into(), rooms.as_slice().into());
                }
                Request::RemoteJoinSocket { request_id, sid, room }
                | Request::RemoteLeaveSocket { request_id, sid, room } => {
                    let ty = if matches!(request, Request::RemoteJoinSocket { .. }) {
                        t::REMOTE_JOIN
                    } else {
                        t::REMOTE_LEAVE
                    };
                    m.insert("requestId".into(), request_id.as_str().into());
                    m.insert("type".into(), ty.into());
                    m.insert("sid".into(), sid.as_str().into());
                    m.insert("room".into(), room.as_str().into());
                }
                Request::RemoteDisconnect { selector, close } => {
                    m.insert("type".into(), t::REMOTE_DISCONNECT.into());
                    m.insert("opts".into(), opts_json(selector));
                    m.insert("close".into(), (*close).into());
                }
                Request::RemoteDisconnectSocket { request_id, sid, close } => {
                    m.insert("requestId".into(), request_id.as_str().into());
                    m.insert("type".into(), t::REMOTE_DISCONNECT.into());
                    m.insert("sid".into(), sid.as_str().into());
                    m.insert("close".into(), (*close).into());
                }
                Request::RemoteFetch { request_id, selector } => {
                    m.insert("requestId".into(), request_id.as_str().into());
                    m.insert("type".into(), t::REMOTE_FETCH.into());
                    m.insert("opts".into(), opts_json(selector));
                }
                Request::ServerSideEmit { request_id, data, .. } => {
                    if !data.is_array() {
                        return Err(malformed("SERVER_SIDE_EMIT data is not an array"));
                    }
                    if let Some(id) = request_id {
                        m.insert("requestId".into(), id.as_str().into());
                    }
                    m.insert("type".into(), t::SERVER_SIDE_EMIT.into());
                    m.insert("data".into(), data.clone());
                }
                Request::Other(ty) => {
                    m.insert("type".into(), (*ty).into());
                }
                // Written as msgpack above.
                Request::BroadcastWithAck { .. } => {}
            }
            json_message(m)
        }
    }
}

fn opts_json(selector: &Selector) -> Value {
    let mut opts = Map::new();
    opts.insert("rooms".into(), selector.rooms.as_slice().into());
    opts.insert("except".into(), selector.except.as_slice().into());
    Value::Object(opts)
}

/// `{uid, requestId, type: 6, data}` in msgpack (see [`encode_request`]).
fn encode_msgpack_sse(
    uid: Option<&str>,
    request_id: Option<&str>,
    data: &Value,
    attachments: &[Bytes],
) -> Result<Vec<u8>, AdapterError> {
    if !data.is_array() {
        return Err(malformed("SERVER_SIDE_EMIT data is not an array"));
    }
    let mut out = Vec::with_capacity(64);
    w_map_header(&mut out, 2 + usize::from(uid.is_some()) + usize::from(request_id.is_some()));
    if let Some(uid) = uid {
        w_str(&mut out, "uid");
        w_str(&mut out, uid);
    }
    if let Some(id) = request_id {
        w_str(&mut out, "requestId");
        w_str(&mut out, id);
    }
    w_str(&mut out, "type");
    w_uint(&mut out, request_type::SERVER_SIDE_EMIT);
    w_str(&mut out, "data");
    w_json(&mut out, data, attachments, 1)?;
    Ok(out)
}

/// `{uid, requestId, type: 7, packet, opts}` in msgpack, as `RedisAdapter.broadcastWithAck` writes it.
fn encode_broadcast_request(uid: Option<&str>, request_id: &str, b: &Broadcast) -> Result<Vec<u8>, AdapterError> {
    let mut out = Vec::with_capacity(64);
    w_map_header(&mut out, 4 + usize::from(uid.is_some()));
    if let Some(uid) = uid {
        w_str(&mut out, "uid");
        w_str(&mut out, uid);
    }
    w_str(&mut out, "requestId");
    w_str(&mut out, request_id);
    w_str(&mut out, "type");
    w_uint(&mut out, request_type::BROADCAST);
    w_str(&mut out, "packet");
    w_packet(&mut out, b, 1)?;
    w_str(&mut out, "opts");
    w_opts(&mut out, &b.rooms, &b.except, &b.flags);
    Ok(out)
}

/// How many characters the adapter's ids have: its uid and its request ids are `uid2(6)`.
pub const REQUEST_ID_LEN: usize = 6;

/// An id made the way the adapter makes its uid and request ids (`uid2`, version 1.0.0): one character of
/// `A–Z a–z 0–9 - _` per byte of `random`, chosen by `byte % 64`. Pass [`REQUEST_ID_LEN`] bytes from a CSPRNG for
/// an id like Node's; the codec takes the randomness as an argument so that it stays deterministic.
pub fn request_id(random: &[u8]) -> String {
    const CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    random.iter().map(|&b| char::from(CHARS[usize::from(b % 64)])).collect()
}
