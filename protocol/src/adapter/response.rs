//! Responses (on the response channels): JSON, except `BROADCAST_ACK` (9), which is msgpack.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::msgpack::{w_json, w_map_header, w_str, w_uint};
use super::{AdapterError, request_type};

/// One socket in a [`fetch_response`], as Node's `RemoteSocket` expects it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedSocket {
    /// The socket id.
    pub id: String,
    /// The handshake as Node builds it: `{headers, time, address, xdomain, secure, issued, url, query, auth}`
    /// (Node removes `sessionStore`).
    pub handshake: Value,
    /// The rooms of the socket (including its own id, as in Node).
    pub rooms: Vec<String>,
    /// `socket.data` (Node's default is `{}`).
    pub data: Value,
}

fn json_bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Response to [`Request::Sockets`](super::Request::Sockets): `{"requestId":…,"sockets":[…]}` (JSON).
///
/// Channel: the common response channel ([`Channels::response`](super::Channels::response)) or, to mimic `publishOnSpecificResponseChannel`,
/// [`Channels::response_to`](super::Channels::response_to)`(requester uid)`; the requester listens on both.
pub fn sockets_response(request_id: &str, socket_ids: &[String]) -> Vec<u8> {
    json_bytes(&json!({"requestId": request_id, "sockets": socket_ids}))
}

/// Response to [`Request::AllRooms`](super::Request::AllRooms): `{"requestId":…,"rooms":[…]}` (JSON).
///
/// Channel: as [`sockets_response`].
pub fn all_rooms_response(request_id: &str, rooms: &[String]) -> Vec<u8> {
    json_bytes(&json!({"requestId": request_id, "rooms": rooms}))
}

/// Response to [`Request::RemoteFetch`](super::Request::RemoteFetch): `{"requestId":…,"sockets":[{"id","handshake","rooms","data"}…]}` (JSON).
///
/// Channel: as [`sockets_response`].
pub fn fetch_response(request_id: &str, sockets: &[FetchedSocket]) -> Vec<u8> {
    let sockets: Vec<Value> = sockets
        .iter()
        .map(|s| json!({"id": s.id, "handshake": s.handshake, "rooms": s.rooms, "data": s.data}))
        .collect();
    json_bytes(&json!({"requestId": request_id, "sockets": sockets}))
}

/// Response to the legacy per-socket [`Request::RemoteJoinSocket`](super::Request::RemoteJoinSocket), [`Request::RemoteLeaveSocket`](super::Request::RemoteLeaveSocket) and
/// [`Request::RemoteDisconnectSocket`](super::Request::RemoteDisconnectSocket): `{"requestId":…}` (JSON). Only sent when the socket is local.
///
/// Channel: as [`sockets_response`].
pub fn remote_ack_response(request_id: &str) -> Vec<u8> {
    json_bytes(&json!({ "requestId": request_id }))
}

/// Acknowledgement of a [`Request::ServerSideEmit`](super::Request::ServerSideEmit) with a request id: `{"type":6,"requestId":…,"data":…}` (JSON).
/// `data` is the *first* argument the listener passed to its callback; `None` (callback called without argument)
/// omits the key, as `JSON.stringify` drops `undefined`. Send at most one per request.
///
/// Channel: **always the common response channel** ([`Channels::response`](super::Channels::response)), never the requester-specific one.
pub fn server_side_emit_response(request_id: &str, data: Option<&Value>) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("type".into(), request_type::SERVER_SIDE_EMIT.into());
    m.insert("requestId".into(), request_id.into());
    if let Some(d) = data {
        m.insert("data".into(), d.clone());
    }
    json_bytes(&Value::Object(m))
}

/// First response to a [`Request::BroadcastWithAck`](super::Request::BroadcastWithAck): `{"type":8,"requestId":…,"clientCount":n}` (JSON), the number
/// of local clients the packet was sent to (acknowledgements expected from).
///
/// Channel: as [`sockets_response`].
pub fn broadcast_client_count_response(request_id: &str, count: usize) -> Vec<u8> {
    json_bytes(&json!({"type": request_type::BROADCAST_CLIENT_COUNT, "requestId": request_id, "clientCount": count}))
}

/// One client acknowledgement of a [`Request::BroadcastWithAck`](super::Request::BroadcastWithAck): the **msgpack** map
/// `{type: 9, requestId, packet: arg}`, where `arg` is the first argument of the client's ack (`None` omits the
/// `packet` key, as notepack skips `undefined` properties); placeholders of `arg` become msgpack bin from
/// `attachments`.
///
/// Channel: as [`sockets_response`].
pub fn broadcast_ack_response(
    request_id: &str,
    arg: Option<&Value>,
    attachments: &[Bytes],
) -> Result<Vec<u8>, AdapterError> {
    let mut out = Vec::with_capacity(32);
    w_map_header(&mut out, if arg.is_some() { 3 } else { 2 });
    w_str(&mut out, "type");
    w_uint(&mut out, request_type::BROADCAST_ACK);
    w_str(&mut out, "requestId");
    w_str(&mut out, request_id);
    if let Some(arg) = arg {
        w_str(&mut out, "packet");
        w_json(&mut out, arg, attachments, 0)?;
    }
    Ok(out)
}
