//! The `@socket.io/redis-adapter` codec against vectors captured from the Node packages themselves:
//! `tests/vectors/redis_adapter.json`, written by `tests/vectors/capture.mjs` (see its header for how to
//! re-capture) with `@socket.io/redis-adapter` 8.3.0, `@socket.io/redis-emitter` 5.1.0 and their notepack.io.
//!
//! One vector per message type: broadcasts from the adapter and from the emitter (binary, flags, rooms, except),
//! every request type 0–7 (the emitter's forms and the legacy per-socket ones included) and every response type.
//! For each, the decoders must give what the capture script computed a Node server sees, the channel must be the
//! one our [`Channels`] names, and — for every message type we encode — the encoders must write Node's exact bytes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use eventfeed_protocol::adapter::{
    Broadcast, Channels, DEFAULT_KEY, Request, Response, decode_broadcast, decode_request, decode_response,
    encode_broadcast, encode_request, encode_response, request_id,
};
use serde_json::{Value, json};

const VECTORS: &str = include_str!("vectors/redis_adapter.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn hexes(attachments: &[Bytes]) -> Value {
    attachments.iter().map(|a| Value::String(hex(a))).collect()
}

/// The message bytes of a vector: its JSON text, or its hex.
fn bytes(v: &Value) -> Vec<u8> {
    match v["format"].as_str().unwrap() {
        "json" => v["json"].as_str().unwrap().as_bytes().to_vec(),
        "msgpack" => unhex(v["hex"].as_str().unwrap()),
        other => panic!("unknown format {other}"),
    }
}

fn name(v: &Value) -> &str {
    v["name"].as_str().unwrap()
}

// The capture script's description of a decoded message, built from ours. Compared as text, so that key order
// counts too.

fn broadcast_json(b: &Broadcast) -> Value {
    json!({
        "uid": b.uid,
        "packet_type": b.packet_type,
        "nsp": b.nsp,
        "data": b.data,
        "attachments": hexes(&b.attachments),
        "rooms": b.rooms,
        "except": b.except,
        "flags": {
            "volatile": b.flags.volatile,
            "compress": b.flags.compress,
            "local": b.flags.local,
            "timeout": b.flags.timeout,
        },
    })
}

fn request_json(uid: Option<&str>, r: &Request) -> Value {
    let selector = |s: &eventfeed_protocol::adapter::Selector| json!({"rooms": s.rooms, "except": s.except});
    let request = match r {
        Request::Sockets { request_id, rooms } => json!({"kind": "Sockets", "request_id": request_id, "rooms": rooms}),
        Request::AllRooms { request_id } => json!({"kind": "AllRooms", "request_id": request_id}),
        Request::RemoteJoin { selector: s, rooms } => {
            json!({"kind": "RemoteJoin", "selector": selector(s), "rooms": rooms})
        }
        Request::RemoteLeave { selector: s, rooms } => {
            json!({"kind": "RemoteLeave", "selector": selector(s), "rooms": rooms})
        }
        Request::RemoteJoinSocket { request_id, sid, room } => {
            json!({"kind": "RemoteJoinSocket", "request_id": request_id, "sid": sid, "room": room})
        }
        Request::RemoteLeaveSocket { request_id, sid, room } => {
            json!({"kind": "RemoteLeaveSocket", "request_id": request_id, "sid": sid, "room": room})
        }
        Request::RemoteDisconnect { selector: s, close } => {
            json!({"kind": "RemoteDisconnect", "selector": selector(s), "close": close})
        }
        Request::RemoteDisconnectSocket { request_id, sid, close } => {
            json!({"kind": "RemoteDisconnectSocket", "request_id": request_id, "sid": sid, "close": close})
        }
        Request::RemoteFetch { request_id, selector: s } => {
            json!({"kind": "RemoteFetch", "request_id": request_id, "selector": selector(s)})
        }
        Request::ServerSideEmit { request_id, data, attachments } => json!({
            "kind": "ServerSideEmit", "request_id": request_id, "data": data, "attachments": hexes(attachments),
        }),
        Request::BroadcastWithAck { request_id, broadcast } => {
            json!({"kind": "BroadcastWithAck", "request_id": request_id, "broadcast": broadcast_json(broadcast)})
        }
        Request::Other(ty) => json!({"kind": "Other", "type": ty}),
    };
    json!({"uid": uid, "request": request})
}

fn response_json(r: &Response) -> Value {
    let mut out = serde_json::Map::new();
    let kind = match r {
        Response::Sockets { .. } => "Sockets",
        Response::AllRooms { .. } => "AllRooms",
        Response::RemoteAck { .. } => "RemoteAck",
        Response::RemoteFetch { .. } => "RemoteFetch",
        Response::ServerSideEmit { .. } => "ServerSideEmit",
        Response::BroadcastClientCount { .. } => "BroadcastClientCount",
        Response::BroadcastAck { .. } => "BroadcastAck",
    };
    out.insert("kind".into(), kind.into());
    out.insert("request_id".into(), r.request_id().into());
    match r {
        Response::Sockets { sockets, .. } => {
            out.insert("sockets".into(), json!(sockets));
        }
        Response::AllRooms { rooms, .. } => {
            out.insert("rooms".into(), json!(rooms));
        }
        Response::RemoteAck { .. } => {}
        Response::RemoteFetch { sockets, .. } => {
            let sockets: Vec<Value> = sockets
                .iter()
                .map(|s| json!({"id": s.id, "handshake": s.handshake, "rooms": s.rooms, "data": s.data}))
                .collect();
            out.insert("sockets".into(), sockets.into());
        }
        Response::ServerSideEmit { data: value, attachments, .. }
        | Response::BroadcastAck { arg: value, attachments, .. } => {
            if let Some(value) = value {
                let key = if matches!(r, Response::BroadcastAck { .. }) { "arg" } else { "data" };
                out.insert(key.into(), value.clone());
            }
            out.insert("attachments".into(), hexes(attachments));
        }
        Response::BroadcastClientCount { client_count, .. } => {
            out.insert("client_count".into(), (*client_count).into());
        }
    }
    Value::Object(out)
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn captured_from_the_pinned_packages() {
    let all = vectors();
    assert_eq!(all["packages"]["@socket.io/redis-adapter"], "8.3.0");
    assert_eq!(all["packages"]["@socket.io/redis-emitter"], "5.1.0");
    assert_eq!(all["key"], DEFAULT_KEY);
}

#[test]
fn every_vector_decodes_to_what_node_sees() {
    let all = vectors();
    let nsp = all["nsp"].as_str().unwrap();
    let channels = Channels::new(DEFAULT_KEY, nsp, all["adapter_uid"].as_str().unwrap());
    for v in all["vectors"].as_array().unwrap() {
        let msg = bytes(v);
        let channel = v["channel"].as_str().unwrap();
        let got = match v["kind"].as_str().unwrap() {
            "broadcast" => {
                let b = decode_broadcast(&msg).unwrap_or_else(|e| panic!("{}: {e}", name(v)));
                assert_eq!(Channels::new(DEFAULT_KEY, &b.nsp, "").broadcast(&b.rooms), channel, "{}", name(v));
                broadcast_json(&b)
            }
            "request" => {
                let (uid, r) = decode_request(&msg).unwrap_or_else(|e| panic!("{}: {e}", name(v)));
                assert_eq!(channels.request, channel, "{}", name(v));
                request_json(uid.as_deref(), &r)
            }
            "response" => {
                let r = decode_response(&msg).unwrap_or_else(|e| panic!("{}: {e}", name(v)));
                let want_channel = match v["requester"].as_str() {
                    Some(requester) => channels.response_to(requester),
                    None => channels.response.clone(),
                };
                assert_eq!(want_channel, channel, "{}", name(v));
                response_json(&r)
            }
            other => panic!("unknown kind {other}"),
        };
        assert_eq!(text(&got), text(&v["decoded"]), "{}", name(v));
    }
}

#[test]
fn every_message_type_we_encode_gets_nodes_exact_bytes() {
    let all = vectors();
    let mut encoded = 0;
    for v in all["vectors"].as_array().unwrap() {
        if v["encodable"] == false {
            continue;
        }
        let msg = bytes(v);
        let again = match v["kind"].as_str().unwrap() {
            "broadcast" => encode_broadcast(&decode_broadcast(&msg).unwrap()),
            "request" => {
                let (uid, r) = decode_request(&msg).unwrap();
                encode_request(uid.as_deref(), &r)
            }
            "response" => encode_response(&decode_response(&msg).unwrap()),
            other => panic!("unknown kind {other}"),
        }
        .unwrap_or_else(|e| panic!("{}: {e}", name(v)));
        assert_eq!(hex(&again), hex(&msg), "{}: {}", name(v), String::from_utf8_lossy(&msg));
        encoded += 1;
    }
    assert!(encoded >= 30, "only {encoded} vectors checked");
}

/// The emitter writes broadcast options as `{rooms, flags, except}`; we only ever write the adapter's order.
#[test]
fn only_the_emitters_broadcasts_are_not_ours_to_encode() {
    let all = vectors();
    for v in all["vectors"].as_array().unwrap() {
        let ours = v["encodable"] != false;
        assert_eq!(ours, !(v["kind"] == "broadcast" && name(v).starts_with("emitter_")), "{}", name(v));
    }
}

#[test]
fn every_message_type_has_a_vector() {
    let all = vectors();
    let mut requests = BTreeSet::new();
    let mut responses = BTreeSet::new();
    let mut broadcasts = BTreeSet::new();
    for v in all["vectors"].as_array().unwrap() {
        let d = &v["decoded"];
        match v["kind"].as_str().unwrap() {
            "request" => {
                requests.insert(d["request"]["kind"].as_str().unwrap().to_owned());
            }
            "response" => {
                responses.insert(d["kind"].as_str().unwrap().to_owned());
            }
            _ => {
                let from = if d["uid"] == "emitter" { "emitter" } else { "adapter" };
                let binary = !d["attachments"].as_array().unwrap().is_empty();
                broadcasts.insert((from, binary));
            }
        }
    }
    let want: BTreeSet<String> = [
        "Sockets",
        "AllRooms",
        "RemoteJoin",
        "RemoteJoinSocket",
        "RemoteLeave",
        "RemoteLeaveSocket",
        "RemoteDisconnect",
        "RemoteDisconnectSocket",
        "RemoteFetch",
        "ServerSideEmit",
        "BroadcastWithAck",
    ]
    .map(String::from)
    .into();
    assert_eq!(requests, want);
    let want: BTreeSet<String> =
        ["Sockets", "AllRooms", "RemoteAck", "RemoteFetch", "ServerSideEmit", "BroadcastClientCount", "BroadcastAck"]
            .map(String::from)
            .into();
    assert_eq!(responses, want);
    assert_eq!(broadcasts, [("adapter", false), ("adapter", true), ("emitter", false), ("emitter", true)].into());
}

#[test]
fn request_ids_as_uid2_makes_them() {
    let all = vectors();
    for v in all["request_ids"].as_array().unwrap() {
        assert_eq!(request_id(&unhex(v["random"].as_str().unwrap())), v["id"].as_str().unwrap());
    }
}
