//! Answers to the requests of `@socket.io/redis-adapter` servers on the
//! request channel, from this instance's sockets.
//!
//! This instance subscribes to the request channel, so Node's
//! `serverCount()` counts it and its `fetchSockets()` / `allRooms()` wait for
//! its answer. What is answered, and how:
//!
//! | request | here |
//! | --- | --- |
//! | `SOCKETS` (0), `ALL_ROOMS` (1), `REMOTE_FETCH` (5) | answered with the local sockets / rooms; a fetched socket's `handshake` has the peer address and time but never the `auth` (it holds a token), `data` is `{}` |
//! | `REMOTE_JOIN` (2), `REMOTE_LEAVE` (3) | applied, **except for the `tenant:…` rooms**: a tenant's room is joined and left only by this server (tenant isolation); the per-socket forms are acknowledged either way |
//! | `REMOTE_DISCONNECT` (4) | applied (`close: true` also closes the connection) |
//! | `SERVER_SIDE_EMIT` (6) | this server has no server-side listeners; one with an ack is answered with no data, so the sender does not time out |
//! | `BROADCAST` (7, with acks) | delivered to the selected local sockets *without* asking them for an ack, answered with a client count of 0 |
//!
//! Every answer goes to the common response channel, which the requester
//! always listens on.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::sio::{Namespace, Socket};
use eventfeed_protocol::adapter::{self, Channels, FetchedSocket, Request, Selector};
use eventfeed_protocol::engine::session::CloseReason;
use eventfeed_protocol::socket::Packet;

/// The room prefix remote requests may not join or leave.
const PROTECTED_ROOM_PREFIX: &str = "tenant:";

fn selected(namespace: &Namespace, selector: &Selector) -> Vec<Arc<Socket>> {
    let rooms: Vec<&str> = selector.rooms.iter().map(String::as_str).collect();
    let except: Vec<&str> = selector.except.iter().map(String::as_str).collect();
    namespace.sockets_in(&rooms, &except)
}

fn may_change(room: &str) -> bool {
    if room.starts_with(PROTECTED_ROOM_PREFIX) {
        tracing::warn!(room, "refused a remote join/leave of a tenant room");
        return false;
    }
    true
}

fn disconnect(socket: &Arc<Socket>, close: bool) {
    socket.disconnect();
    if close {
        socket.conn().close(CloseReason::ForcedClose);
    }
}

fn fetched(socket: &Socket) -> FetchedSocket {
    let mut rooms = vec![socket.id().to_owned()];
    rooms.extend(socket.rooms().iter().map(|r| r.to_string()));
    let address = socket.conn().peer().map(|p| p.ip().to_string()).unwrap_or_default();
    FetchedSocket {
        id: socket.id().to_owned(),
        handshake: json!({
            "headers": {},
            "time": "",
            "address": address,
            "xdomain": false,
            "secure": false,
            "issued": 0,
            "url": "/socket.io/",
            "query": {},
            "auth": {},
        }),
        rooms,
        data: json!({}),
    }
}

/// Carries out `request` on this instance's sockets; returns what to publish
/// (channel, message), if anything.
pub(crate) fn answer(namespace: &Namespace, channels: &Channels, request: Request) -> Option<(String, Vec<u8>)> {
    let reply = |body: Vec<u8>| Some((channels.response.clone(), body));
    match request {
        Request::Sockets { request_id, rooms } => {
            let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
            let ids: Vec<String> = namespace.sockets_in(&rooms, &[]).iter().map(|s| s.id().to_owned()).collect();
            reply(adapter::sockets_response(&request_id, &ids))
        }
        Request::AllRooms { request_id } => {
            let mut rooms = namespace.room_names();
            rooms.extend(namespace.sockets_in(&[], &[]).iter().map(|s| s.id().to_owned()));
            reply(adapter::all_rooms_response(&request_id, &rooms))
        }
        Request::RemoteFetch { request_id, selector } => {
            let sockets: Vec<FetchedSocket> = selected(namespace, &selector).iter().map(|s| fetched(s)).collect();
            reply(adapter::fetch_response(&request_id, &sockets))
        }
        Request::RemoteJoin { selector, rooms } => {
            let rooms: Vec<&String> = rooms.iter().filter(|r| may_change(r)).collect();
            for socket in selected(namespace, &selector) {
                rooms.iter().for_each(|r| socket.join(r));
            }
            None
        }
        Request::RemoteLeave { selector, rooms } => {
            let rooms: Vec<&String> = rooms.iter().filter(|r| may_change(r)).collect();
            for socket in selected(namespace, &selector) {
                rooms.iter().for_each(|r| socket.leave(r));
            }
            None
        }
        Request::RemoteJoinSocket { request_id, sid, room } => {
            let socket = namespace.socket(&sid)?;
            if may_change(&room) {
                socket.join(&room);
            }
            reply(adapter::remote_ack_response(&request_id))
        }
        Request::RemoteLeaveSocket { request_id, sid, room } => {
            let socket = namespace.socket(&sid)?;
            if may_change(&room) {
                socket.leave(&room);
            }
            reply(adapter::remote_ack_response(&request_id))
        }
        Request::RemoteDisconnect { selector, close } => {
            for socket in selected(namespace, &selector) {
                disconnect(&socket, close);
            }
            None
        }
        Request::RemoteDisconnectSocket { request_id, sid, close } => {
            let socket = namespace.socket(&sid)?;
            disconnect(&socket, close);
            reply(adapter::remote_ack_response(&request_id))
        }
        Request::ServerSideEmit { request_id, .. } => {
            request_id.map(|id| (channels.response.clone(), adapter::server_side_emit_response(&id, None)))
        }
        Request::BroadcastWithAck { request_id, broadcast } => {
            if broadcast.nsp == namespace.name()
                && let Value::Array(data) = &broadcast.data
                && let Some(name) = data.first().and_then(Value::as_str)
            {
                let packet =
                    Packet::event(&broadcast.nsp, name, data[1..].to_vec(), None, broadcast.attachments.clone());
                let rooms: Vec<&str> = broadcast.rooms.iter().map(String::as_str).collect();
                let except: Vec<&str> = broadcast.except.iter().map(String::as_str).collect();
                let op = crate::sio::BroadcastOp { rooms: &rooms, except_rooms: &except, except_socket: None };
                namespace.broadcast(&op, &packet.encode());
            }
            reply(adapter::broadcast_client_count_response(&request_id, 0))
        }
        Request::Other(_) => None,
    }
}
