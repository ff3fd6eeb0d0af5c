//! Responses, on the response channels: what this server answers, encoded as the adapter writes it (JSON, except
//! `BROADCAST_ACK` (9), which is msgpack), and the answers to this server's requests, decoded.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::msgpack::{
    Node, decode_json, decode_msgpack, json_bytes, json_message, req_string, room_list, take, to_json, uint_field,
    w_json, w_map_header, w_str, w_uint,
};
use super::{AdapterError, malformed, request_type};

/// One socket in a [`Response::RemoteFetch`], as Node's `RemoteSocket` expects it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedSocket {
    /// The socket id.
    pub id: String,
    /// The handshake as Node builds it: `{headers, time, address, xdomain, secure, issued, url, query, auth}`
    /// (Node removes `sessionStore`). Decoded, a missing handshake is `null`.
    pub handshake: Value,
    /// The rooms of the socket (including its own id, as in Node), as sent.
    pub rooms: Vec<String>,
    /// `socket.data` (Node's default is `{}`). Decoded, a missing `data` (`undefined` in Node) is `null`.
    pub data: Value,
}

/// A response, as published on a response channel or received there.
///
/// Node writes no `type` in the answers to `SOCKETS`, `ALL_ROOMS`, `REMOTE_FETCH` and the per-socket
/// join/leave/disconnect: a Node requester knows what it asked from the request id. [`decode_response`] tells
/// them apart by shape instead (see there).
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Answer to [`Request::Sockets`](super::Request::Sockets): `{"requestId","sockets":[id, …]}`.
    Sockets {
        /// `requestId`.
        request_id: String,
        /// The ids of the responder's sockets in the requested rooms.
        sockets: Vec<String>,
    },
    /// Answer to [`Request::AllRooms`](super::Request::AllRooms): `{"requestId","rooms":[…]}`.
    AllRooms {
        /// `requestId`.
        request_id: String,
        /// Every room of the responder (Node includes each socket's own room, its id).
        rooms: Vec<String>,
    },
    /// Answer to the per-socket [`Request::RemoteJoinSocket`](super::Request::RemoteJoinSocket),
    /// [`Request::RemoteLeaveSocket`](super::Request::RemoteLeaveSocket) and
    /// [`Request::RemoteDisconnectSocket`](super::Request::RemoteDisconnectSocket): `{"requestId"}`, sent only by
    /// the server that has the socket. The three are the same bytes.
    RemoteAck {
        /// `requestId`.
        request_id: String,
    },
    /// Answer to [`Request::RemoteFetch`](super::Request::RemoteFetch):
    /// `{"requestId","sockets":[{"id","handshake","rooms","data"}, …]}`.
    RemoteFetch {
        /// `requestId`.
        request_id: String,
        /// The responder's selected sockets.
        sockets: Vec<FetchedSocket>,
    },
    /// Acknowledgement of a [`Request::ServerSideEmit`](super::Request::ServerSideEmit) with a request id:
    /// `{"type":6,"requestId","data"}`. Published on the common response channel
    /// ([`Channels::response`](super::Channels::response)) even by a responder set to answer on the specific one.
    ServerSideEmit {
        /// `requestId`.
        request_id: String,
        /// The *first* argument the listener passed to its callback; `None` (called without one, `undefined`)
        /// leaves the key out, as `JSON.stringify` does.
        data: Option<Value>,
        /// Binary referenced by placeholders of `data`: empty in Node's answers (JSON); when not empty the answer
        /// is written in msgpack.
        attachments: Vec<Bytes>,
    },
    /// First answer to a [`Request::BroadcastWithAck`](super::Request::BroadcastWithAck):
    /// `{"type":8,"requestId","clientCount"}`.
    BroadcastClientCount {
        /// `requestId`.
        request_id: String,
        /// How many of the responder's clients the packet went to (acknowledgements to expect from it).
        client_count: u64,
    },
    /// One client acknowledgement of a [`Request::BroadcastWithAck`](super::Request::BroadcastWithAck): the
    /// **msgpack** map `{type: 9, requestId, packet}`.
    BroadcastAck {
        /// `requestId`.
        request_id: String,
        /// `packet`: the first argument of the client's ack; `None` leaves the key out (notepack skips
        /// `undefined` properties).
        arg: Option<Value>,
        /// Binary referenced by placeholders of `arg`.
        attachments: Vec<Bytes>,
    },
}

impl Response {
    /// The id of the request this answers.
    pub fn request_id(&self) -> &str {
        match self {
            Response::Sockets { request_id, .. }
            | Response::AllRooms { request_id, .. }
            | Response::RemoteAck { request_id }
            | Response::RemoteFetch { request_id, .. }
            | Response::ServerSideEmit { request_id, .. }
            | Response::BroadcastClientCount { request_id, .. }
            | Response::BroadcastAck { request_id, .. } => request_id,
        }
    }
}

/// Encodes `response` as the adapter 8.3.0 publishes it, byte for byte (see each [`Response`] variant), numbers
/// as `JSON.stringify` writes them.
///
/// Channel: the common response channel ([`Channels::response`](super::Channels::response)) or, as Node does with
/// `publishOnSpecificResponseChannel`, [`Channels::response_to`](super::Channels::response_to)`(requester uid)`;
/// the requester listens on both. [`Response::ServerSideEmit`] always goes to the common one.
///
/// [`decode_response`] gives `response` back, but for a [`Response::Sockets`] without sockets: its bytes are those
/// of a [`Response::RemoteFetch`] without sockets, which is what they decode to.
///
/// Errors: a placeholder without its attachment, nesting deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
pub fn encode_response(response: &Response) -> Result<Vec<u8>, AdapterError> {
    match response {
        Response::Sockets { request_id, sockets } => json_message(sockets_map(request_id, sockets)),
        Response::AllRooms { request_id, rooms } => json_message(all_rooms_map(request_id, rooms)),
        Response::RemoteAck { request_id } => json_message(remote_ack_map(request_id)),
        Response::RemoteFetch { request_id, sockets } => json_message(fetch_map(request_id, sockets)),
        Response::ServerSideEmit { request_id, data, attachments } if !attachments.is_empty() => {
            msgpack_response(request_type::SERVER_SIDE_EMIT, request_id, "data", data.as_ref(), attachments)
        }
        Response::ServerSideEmit { request_id, data, .. } => {
            json_message(server_side_emit_map(request_id, data.as_ref()))
        }
        Response::BroadcastClientCount { request_id, client_count } => {
            json_message(client_count_map(request_id, *client_count))
        }
        Response::BroadcastAck { request_id, arg, attachments } => {
            msgpack_response(request_type::BROADCAST_ACK, request_id, "packet", arg.as_ref(), attachments)
        }
    }
}

/// Decodes a message received on a response channel: JSON when its first byte is `{` (0x7b), msgpack otherwise
/// (as the adapter's `onresponse`).
///
/// Node's answers to `SOCKETS`, `ALL_ROOMS`, `REMOTE_FETCH` and the per-socket requests carry no `type`, so the
/// message is read by its keys, in this order:
///
/// 1. `requestId` must be a string.
/// 2. A `type` key: 6 is [`Response::ServerSideEmit`], 8 [`Response::BroadcastClientCount`] (`clientCount` a
///    non-negative integer), 9 [`Response::BroadcastAck`]; any other value is an error.
/// 3. A `sockets` key (an array): [`Response::Sockets`] when it holds strings only and at least one,
///    [`Response::RemoteFetch`] when it holds objects only (each with a string `id`) **or nothing**. An empty list
///    answers either request; as only `REMOTE_FETCH` is still sent by the 8.3.0 adapter, that is the reading
///    chosen. A requester of `SOCKETS` takes an empty `RemoteFetch` as "no sockets".
/// 4. A `rooms` key (an array of strings or numbers): [`Response::AllRooms`].
/// 5. Otherwise: [`Response::RemoteAck`].
///
/// Other keys are ignored. Binary (msgpack bin) is accepted where it can be returned — `data` of
/// `ServerSideEmit`, `packet` of `BroadcastAck`, as attachments — and an error anywhere else.
pub fn decode_response(msg: &[u8]) -> Result<Response, AdapterError> {
    let root = if msg.first() == Some(&b'{') { decode_json(msg)? } else { decode_msgpack(msg)? };
    let Node::Map(mut m) = root else {
        return Err(malformed("response is not an object"));
    };
    let request_id = req_string(take(&mut m, "requestId"), "requestId")?;
    if let Some(ty) = take(&mut m, "type") {
        let mut attachments = Vec::new();
        return match uint_field(Some(ty), "response type")? {
            request_type::SERVER_SIDE_EMIT => {
                let data = take(&mut m, "data").map(|d| to_json(d, &mut attachments));
                Ok(Response::ServerSideEmit { request_id, data, attachments })
            }
            request_type::BROADCAST_CLIENT_COUNT => {
                let client_count = uint_field(take(&mut m, "clientCount"), "clientCount")?;
                Ok(Response::BroadcastClientCount { request_id, client_count })
            }
            request_type::BROADCAST_ACK => {
                let arg = take(&mut m, "packet").map(|p| to_json(p, &mut attachments));
                Ok(Response::BroadcastAck { request_id, arg, attachments })
            }
            other => Err(malformed(format!("no response has type {other}"))),
        };
    }
    if let Some(sockets) = take(&mut m, "sockets") {
        let Node::Arr(items) = sockets else {
            return Err(malformed("sockets is not an array"));
        };
        if !items.is_empty() && items.iter().all(|i| matches!(i, Node::Str(_))) {
            let sockets = items.into_iter().filter_map(|i| if let Node::Str(s) = i { Some(s) } else { None });
            return Ok(Response::Sockets { request_id, sockets: sockets.collect() });
        }
        let sockets = items.into_iter().map(fetched_socket).collect::<Result<_, _>>()?;
        return Ok(Response::RemoteFetch { request_id, sockets });
    }
    if let Some(rooms) = take(&mut m, "rooms") {
        return Ok(Response::AllRooms { request_id, rooms: room_list(Some(rooms), "rooms")? });
    }
    Ok(Response::RemoteAck { request_id })
}

fn fetched_socket(n: Node) -> Result<FetchedSocket, AdapterError> {
    let Node::Map(mut m) = n else {
        return Err(malformed("a fetched socket is neither an id nor an object"));
    };
    let id = req_string(take(&mut m, "id"), "fetched socket id")?;
    let mut attachments = Vec::new();
    let handshake = take(&mut m, "handshake").map_or(Value::Null, |h| to_json(h, &mut attachments));
    let rooms = room_list(take(&mut m, "rooms"), "fetched socket rooms")?;
    let data = take(&mut m, "data").map_or(Value::Null, |d| to_json(d, &mut attachments));
    if !attachments.is_empty() {
        return Err(malformed("binary in a fetched socket"));
    }
    Ok(FetchedSocket { id, handshake, rooms, data })
}

// The message maps, keys in Node's order; shared by `encode_response` (which checks their nesting) and the
// `*_response` shorthands below.

fn sockets_map(request_id: &str, socket_ids: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("requestId".into(), request_id.into());
    m.insert("sockets".into(), socket_ids.into());
    m
}

fn all_rooms_map(request_id: &str, rooms: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("requestId".into(), request_id.into());
    m.insert("rooms".into(), rooms.into());
    m
}

fn remote_ack_map(request_id: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("requestId".into(), request_id.into());
    m
}

fn fetch_map(request_id: &str, sockets: &[FetchedSocket]) -> Map<String, Value> {
    let sockets = sockets.iter().map(|s| {
        let mut o = Map::new();
        o.insert("id".into(), s.id.as_str().into());
        o.insert("handshake".into(), s.handshake.clone());
        o.insert("rooms".into(), s.rooms.as_slice().into());
        o.insert("data".into(), s.data.clone());
        Value::Object(o)
    });
    let mut m = Map::new();
    m.insert("requestId".into(), request_id.into());
    m.insert("sockets".into(), Value::Array(sockets.collect()));
    m
}

fn server_side_emit_map(request_id: &str, data: Option<&Value>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), request_type::SERVER_SIDE_EMIT.into());
    m.insert("requestId".into(), request_id.into());
    if let Some(d) = data {
        m.insert("data".into(), d.clone());
    }
    m
}

fn client_count_map(request_id: &str, count: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), request_type::BROADCAST_CLIENT_COUNT.into());
    m.insert("requestId".into(), request_id.into());
    m.insert("clientCount".into(), count.into());
    m
}

/// `{type, requestId, <key>: value}` in msgpack, `<key>` left out when `value` is `None`.
fn msgpack_response(
    ty: u64,
    request_id: &str,
    key: &str,
    value: Option<&Value>,
    attachments: &[Bytes],
) -> Result<Vec<u8>, AdapterError> {
    let mut out = Vec::with_capacity(32);
    w_map_header(&mut out, if value.is_some() { 3 } else { 2 });
    w_str(&mut out, "type");
    w_uint(&mut out, ty);
    w_str(&mut out, "requestId");
    w_str(&mut out, request_id);
    if let Some(value) = value {
        w_str(&mut out, key);
        w_json(&mut out, value, attachments, 1)?;
    }
    Ok(out)
}

// Shorthands for a responder: the same bytes as `encode_response`, from borrowed parts. The JSON ones write any
// value without the nesting check (the server builds these values itself).

/// [`Response::Sockets`]: `{"requestId":…,"sockets":[…]}` (JSON).
pub fn sockets_response(request_id: &str, socket_ids: &[String]) -> Vec<u8> {
    json_bytes(&Value::Object(sockets_map(request_id, socket_ids)))
}

/// [`Response::AllRooms`]: `{"requestId":…,"rooms":[…]}` (JSON).
pub fn all_rooms_response(request_id: &str, rooms: &[String]) -> Vec<u8> {
    json_bytes(&Value::Object(all_rooms_map(request_id, rooms)))
}

/// [`Response::RemoteFetch`]: `{"requestId":…,"sockets":[{"id","handshake","rooms","data"}…]}` (JSON).
pub fn fetch_response(request_id: &str, sockets: &[FetchedSocket]) -> Vec<u8> {
    json_bytes(&Value::Object(fetch_map(request_id, sockets)))
}

/// [`Response::RemoteAck`]: `{"requestId":…}` (JSON). Only sent when the socket is local.
pub fn remote_ack_response(request_id: &str) -> Vec<u8> {
    json_bytes(&Value::Object(remote_ack_map(request_id)))
}

/// [`Response::ServerSideEmit`] without binary: `{"type":6,"requestId":…,"data":…}` (JSON), `data` left out when
/// `None`. Send at most one per request, on the common response channel.
pub fn server_side_emit_response(request_id: &str, data: Option<&Value>) -> Vec<u8> {
    json_bytes(&Value::Object(server_side_emit_map(request_id, data)))
}

/// [`Response::BroadcastClientCount`]: `{"type":8,"requestId":…,"clientCount":n}` (JSON), the number of local
/// clients the packet was sent to (acknowledgements expected from).
pub fn broadcast_client_count_response(request_id: &str, count: usize) -> Vec<u8> {
    json_bytes(&Value::Object(client_count_map(request_id, u64::try_from(count).unwrap_or(u64::MAX))))
}

/// [`Response::BroadcastAck`]: the **msgpack** map `{type: 9, requestId, packet: arg}`, `packet` left out when
/// `arg` is `None`; placeholders of `arg` become msgpack bin from `attachments`.
pub fn broadcast_ack_response(
    request_id: &str,
    arg: Option<&Value>,
    attachments: &[Bytes],
) -> Result<Vec<u8>, AdapterError> {
    msgpack_response(request_type::BROADCAST_ACK, request_id, "packet", arg, attachments)
}
