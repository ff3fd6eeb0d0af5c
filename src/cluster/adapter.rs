//! Wire format of the Node packages `@socket.io/redis-adapter` v8 (checked against 8.3.0) and
//! `@socket.io/redis-emitter` v5 (checked against 5.1.0), so that eventfeed and Node Socket.IO servers sharing one
//! Redis can broadcast to each other.
//!
//! This module is pure encoding/decoding: it never talks to Redis itself.
//!
//! # Channels
//!
//! With `key` (default `socket.io`), namespace `nsp` and a per-server random `uid` (6 chars in Node):
//!
//! | channel | use |
//! |---|---|
//! | `<key>#<nsp>#` | broadcast to the whole namespace (or to several rooms) |
//! | `<key>#<nsp>#<room>#` | broadcast whose `opts.rooms` holds exactly one (distinct) room |
//! | `<key>#<nsp>#*` | the pattern every server `PSUBSCRIBE`s to |
//! | `<key>-request#<nsp>#` | requests (every server `SUBSCRIBE`s) |
//! | `<key>-response#<nsp>#` | responses (every server `SUBSCRIBE`s) |
//! | `<key>-response#<nsp>#<uid>#` | responses for one requester (every server subscribes to its own) |
//!
//! A receiving Node server ignores a room channel whose room it has no local socket in; the real targeting is done
//! with `opts.rooms` / `opts.except` of the message, not with the channel name.
//!
//! # Broadcasts
//!
//! A broadcast is the [notepack.io](https://github.com/darrachequesne/notepack) (MessagePack) encoding of the JS
//! array `[uid, packet, opts]`:
//!
//! * `uid`: the sender's uid (`"emitter"` for `@socket.io/redis-emitter`; [`STORE_UID`] for our stored feed events);
//! * `packet`: `{type, data, nsp}` — `type` is the Socket.IO packet type (2 = EVENT; never upgraded to 5 on the wire,
//!   the receiving server's encoder does that when `data` has binary), `data` is `[eventName, ...args]`, and `nsp`
//!   may be missing (then it is `"/"`). Binary arguments (Node `Buffer`s) are msgpack `bin` values anywhere in `data`.
//! * `opts`: `{rooms: [...], except: [...], flags: {...}}`. The adapter writes the keys in the order
//!   `rooms, except, flags`, the emitter in the order `rooms, flags, except`. `flags` holds the Socket.IO broadcast
//!   flags (`volatile`, `compress`, `local`, `timeout`, ...); only keys that were set are present.
//!
//! # Requests and responses
//!
//! Requests are published on the request channel, either as JSON (the message's first byte is `{`, 0x7b) or as
//! msgpack (only `BROADCAST`, i.e. broadcast-with-ack, is msgpack in 8.3.0). See [`Request`] for every type and
//! which response it expects, and the `*_response` functions for the exact bytes and the channel of each response.
//!
//! # msgpack → JSON mapping (what a Node server would see after `notepack.decode` and `JSON.stringify`)
//!
//! * str → string (invalid UTF-8 is replaced by U+FFFD, as `Buffer.toString` does); int → number; nil → `null`;
//!   bool → bool; array → array; map → object.
//! * float → number; NaN and ±Infinity → `null` (as `JSON.stringify`); an integral float (including `-0`) within
//!   ±2^53 becomes an integer (`1.0` → `1`), as JS prints it.
//! * uint64/int64 beyond ±2^53 keep their exact value here, whereas Node would round them to a double.
//! * bin → a Socket.IO placeholder `{"_placeholder":true,"num":i}` plus the bytes pushed on `attachments`, numbered
//!   depth-first in the order of the final JSON (what socket.io-parser's `deconstructPacket` does).
//! * map keys: strings as is; numbers, booleans and nil are stringified as JS `String(key)` does (floats other than
//!   integral ones use Rust's shortest round-trip formatting, which equals JS's for magnitudes in `[1e-6, 1e21)`);
//!   array/map/bin/ext keys are rejected with [`AdapterError::Malformed`].
//! * map key order is JS object order: keys that are canonical array indices (`"0"`, `"42"`, up to 2^32-2) first in
//!   ascending numeric order, then the other keys in msgpack order. A duplicated key keeps its first position and
//!   its last value. A `__proto__` key is dropped (assigning it in JS sets the prototype, it never becomes an own
//!   property).
//! * ext types, as notepack decodes them: fixext1 type 0 (`d4 00 xx`) is JS `undefined` (→ `null` in an array,
//!   property dropped in a map); ext type -1 is a msgpack timestamp → JS `Date` → its `toJSON()` ISO string
//!   (`"2024-01-02T03:04:05.678Z"`, or `null` if out of the JS Date range); fixext8 type 0 is notepack's legacy
//!   Date (int64 milliseconds); ext8/16/32 type 0 is notepack's legacy `ArrayBuffer` → binary attachment; any other
//!   ext is `[type, <bin>]` (a 2-element array whose second element is an attachment), as notepack returns it.
//!
//! # Robustness
//!
//! Decoders never panic: malformed input gives an [`AdapterError`]. Nesting is limited to [`MAX_DEPTH`] levels,
//! every declared length is checked against the bytes that remain before anything is allocated, so memory use is
//! linear in the size of the message.
//!
//! # Things that surprised us in the reference implementation
//!
//! * notepack never emits JS `undefined` as an ext: `undefined` is `nil` inside arrays and the property is skipped
//!   inside objects. Dates are emitted as msgpack timestamps (ext -1), `-0` as the integer 0, `BigInt` throws.
//! * notepack's integer encoding for non-negative integers is the smallest one (fixint, `cc`, `cd`, `ce`, `cf`) —
//!   byte-identical to Redis's `cmsgpack.pack` for integers up to 2^53, which is what [`EventTemplate`] relies on.
//! * The 8.3.0 adapter never *sends* `SOCKETS` (0) requests nor the per-socket (`sid`) forms of `REMOTE_JOIN`,
//!   `REMOTE_LEAVE` and `REMOTE_DISCONNECT` any more, but its `onrequest` still answers them (older servers send
//!   them). The emitter's `socketsJoin`/`socketsLeave`/`disconnectSockets` requests have **no `uid`** field.
//! * The `SERVER_SIDE_EMIT` acknowledgement is published on the common response channel even when
//!   `publishOnSpecificResponseChannel` is set, and carries only the first argument of the callback.
//! * `BROADCAST` requests and `BROADCAST_ACK` responses are msgpack; every other request and response is JSON.
//! * Each responder chooses on its own whether to answer on the common or the requester-specific response channel
//!   (its `publishOnSpecificResponseChannel` option, default false); requesters listen on both.
//! * The adapter and the emitter write the `opts` keys in different orders (see above).
//! * The packet of a `BROADCAST` (with-ack) request carries no packet `id`: each receiving server assigns its own
//!   ack id when it delivers the packet to its clients, and relays every client's ack (its first argument only) as a
//!   `BROADCAST_ACK` response.
//! * Broadcast flags: `local` broadcasts are never published by a Node server, and the channel's room suffix is only
//!   a pre-filter (Node drops a room-channel message when it has no socket in that room).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// uid our store-published feed events carry (not any instance's uid).
pub const STORE_UID: &str = "eventfeed-store";

/// uid `@socket.io/redis-emitter` puts in its broadcasts and `SERVER_SIDE_EMIT` requests.
pub const EMITTER_UID: &str = "emitter";

/// Default Redis key prefix of the adapter and the emitter.
pub const DEFAULT_KEY: &str = "socket.io";

/// Event name of the stored feed events built by [`event_template`].
pub const FEED_EVENT_NAME: &str = "event_created";

/// Maximum nesting of arrays/maps accepted by the decoders (and produced by the encoders).
pub const MAX_DEPTH: usize = 64;

/// Socket.IO EVENT packet type.
pub const PACKET_TYPE_EVENT: u64 = 2;

/// Request/response type numbers of the adapter (`RequestType` in its source).
pub mod request_type {
    /// `SOCKETS`: list the socket ids in some rooms (legacy, answered but not sent by 8.3.0).
    pub const SOCKETS: u64 = 0;
    /// `ALL_ROOMS`: list every room.
    pub const ALL_ROOMS: u64 = 1;
    /// `REMOTE_JOIN`: make sockets join rooms.
    pub const REMOTE_JOIN: u64 = 2;
    /// `REMOTE_LEAVE`: make sockets leave rooms.
    pub const REMOTE_LEAVE: u64 = 3;
    /// `REMOTE_DISCONNECT`: disconnect sockets.
    pub const REMOTE_DISCONNECT: u64 = 4;
    /// `REMOTE_FETCH`: `fetchSockets()`.
    pub const REMOTE_FETCH: u64 = 5;
    /// `SERVER_SIDE_EMIT`: `serverSideEmit()`, with or without acknowledgement.
    pub const SERVER_SIDE_EMIT: u64 = 6;
    /// `BROADCAST`: a broadcast expecting client acknowledgements.
    pub const BROADCAST: u64 = 7;
    /// `BROADCAST_CLIENT_COUNT`: response to `BROADCAST`, how many clients were reached.
    pub const BROADCAST_CLIENT_COUNT: u64 = 8;
    /// `BROADCAST_ACK`: response to `BROADCAST`, one client acknowledgement.
    pub const BROADCAST_ACK: u64 = 9;
}

/// Why an adapter message could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// The input ended in the middle of a msgpack value (or declared a length larger than what remains).
    #[error("truncated msgpack input")]
    Truncated,
    /// A byte that is not a msgpack marker (0xc1).
    #[error("invalid msgpack marker byte 0x{0:02x}")]
    InvalidMarker(u8),
    /// Bytes left after the top-level msgpack value (notepack rejects these too).
    #[error("{0} trailing bytes after the msgpack value")]
    TrailingBytes(usize),
    /// Arrays/maps nested deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A JSON request that is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Well-formed msgpack/JSON that does not have the shape the adapter expects.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A Socket.IO binary placeholder that does not refer to an attachment.
    #[error("invalid binary placeholder: {0}")]
    Placeholder(String),
}

fn malformed(what: impl Into<String>) -> AdapterError {
    AdapterError::Malformed(what.into())
}

// ---------------------------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------------------------

/// The Redis channel names of one namespace, as `RedisAdapter`'s constructor computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// `<key>#<nsp>#`, e.g. `socket.io#/events#`: broadcasts to all, and the prefix of room channels.
    pub broadcast_prefix: String,
    /// `<key>-request#<nsp>#`.
    pub request: String,
    /// `<key>-response#<nsp>#`.
    pub response: String,
    /// `<key>-response#<nsp>#<uid>#`: responses addressed to this server only.
    pub specific_response: String,
}

impl Channels {
    /// Channel names for Redis key prefix `key` (normally [`DEFAULT_KEY`]), namespace `nsp` (e.g. `/events`) and
    /// this server's `uid`.
    pub fn new(key: &str, nsp: &str, uid: &str) -> Self {
        let response = format!("{key}-response#{nsp}#");
        Channels {
            broadcast_prefix: format!("{key}#{nsp}#"),
            request: format!("{key}-request#{nsp}#"),
            specific_response: format!("{response}{uid}#"),
            response,
        }
    }

    /// The channel a broadcast to `rooms` is published on: `<prefix><room>#` when `rooms` holds exactly one distinct
    /// room (the adapter tests the size of a `Set`), `<prefix>` otherwise.
    pub fn broadcast<S: AsRef<str>>(&self, rooms: &[S]) -> String {
        match rooms.split_first() {
            Some((first, rest)) if rest.iter().all(|r| r.as_ref() == first.as_ref()) => {
                format!("{}{}#", self.broadcast_prefix, first.as_ref())
            }
            _ => self.broadcast_prefix.clone(),
        }
    }

    /// The pattern to `PSUBSCRIBE` to for broadcasts: `<prefix>*`.
    pub fn pattern(&self) -> String {
        format!("{}*", self.broadcast_prefix)
    }

    /// The requester-specific response channel of another server: `<key>-response#<nsp>#<requester_uid>#`.
    ///
    /// A responder may answer on this channel or on [`Channels::response`]; Node does the former only with
    /// `publishOnSpecificResponseChannel: true`.
    pub fn response_to(&self, requester_uid: &str) -> String {
        format!("{}{}#", self.response, requester_uid)
    }

    /// The room a broadcast channel is about: `Some("")` for the namespace-wide channel, `Some(room)` for a room
    /// channel, `None` if `channel` is not one of this namespace's broadcast channels. (Node slices the channel
    /// between the prefix and its last character.)
    pub fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.broadcast_prefix.as_str())?;
        if rest.is_empty() { Some("") } else { rest.strip_suffix('#') }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Broadcasts
// ---------------------------------------------------------------------------------------------------------------

/// The broadcast flags we care about. Unknown keys of `opts.flags` are ignored; values are read with JS truthiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `volatile`: the packet may be dropped for clients that are not ready.
    pub volatile: bool,
    /// `compress`: `None` when absent (Socket.IO then compresses), otherwise the explicit value.
    pub compress: Option<bool>,
    /// `local`: only for the sending server. A Node sender never publishes such broadcasts; a receiver that gets
    /// one anyway delivers it to its local sockets like any other.
    pub local: bool,
    /// `timeout` in milliseconds (set on broadcasts with acknowledgement).
    pub timeout: Option<u64>,
}

/// A broadcast from another server (or the emitter), decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The sender's uid (`"emitter"` for the emitter, [`STORE_UID`] for stored feed events). Node ignores messages
    /// carrying its own uid; so should we.
    pub uid: String,
    /// Socket.IO packet type (normally [`PACKET_TYPE_EVENT`]; sent as 2 even when `data` holds binary).
    pub packet_type: u64,
    /// Namespace of the packet (`"/"` when missing). Node ignores broadcasts for another namespace.
    pub nsp: String,
    /// `[eventName, ...args]` as JSON, every msgpack bin replaced by a Socket.IO placeholder
    /// `{"_placeholder":true,"num":i}` in order of appearance (depth-first, as socket.io-parser's
    /// `deconstructPacket` does). Send it as BINARY_EVENT (5) with `attachments` when those are not empty.
    pub data: Value,
    /// The binary attachments referenced by the placeholders of `data`.
    pub attachments: Vec<Bytes>,
    /// `opts.rooms` (deduplicated, order kept); empty = every socket of the namespace.
    pub rooms: Vec<String>,
    /// `opts.except` (deduplicated, order kept): sockets in any of these rooms are skipped.
    pub except: Vec<String>,
    /// `opts.flags`.
    pub flags: Flags,
}

/// Decodes a message received on a broadcast channel (`[uid, packet, opts]` in msgpack).
///
/// Errors on anything Node would choke on or silently drop: malformed msgpack, trailing bytes, a top level that is
/// not an array of at least 3 elements, a non-string uid or nsp, a packet without a `type` or without a `data` array,
/// `opts` that is not a map, rooms that are neither strings nor numbers.
pub fn decode_broadcast(msg: &[u8]) -> Result<Broadcast, AdapterError> {
    let Node::Arr(items) = decode_msgpack(msg)? else {
        return Err(malformed("broadcast is not an array"));
    };
    let mut items = items.into_iter();
    let (Some(uid), Some(packet), Some(opts)) = (items.next(), items.next(), items.next()) else {
        return Err(malformed("broadcast array has fewer than 3 elements"));
    };
    let Node::Str(uid) = uid else {
        return Err(malformed("broadcast uid is not a string"));
    };
    broadcast_from_nodes(uid, packet, opts)
}

/// The uid of the stored events of the deployment whose keys start with `prefix`: `eventfeed-store:<prefix>`.
/// Pub/sub channels are global to a Redis server (not per database, not per key prefix), so the uid tells the
/// deployments sharing one apart.
pub fn store_uid(prefix: &str) -> String {
    format!("{STORE_UID}:{prefix}")
}

/// Recognises a stored feed event published by a store ([`event_template`]): a uid [`STORE_UID`] or
/// [`store_uid`]`(…)` and `data == ["event_created", {…, "seq": <u64>, …}]`. Returns its `seq` and the event
/// object. Which deployment's store it comes from is the caller's check.
pub fn event_from_broadcast(b: &Broadcast) -> Option<(u64, &Map<String, Value>)> {
    let ours = b.uid.strip_prefix(STORE_UID).is_some_and(|rest| rest.is_empty() || rest.starts_with(':'));
    if !ours {
        return None;
    }
    match b.data.as_array()?.as_slice() {
        [Value::String(name), Value::Object(event)] if name == FEED_EVENT_NAME => {
            Some((event.get("seq")?.as_u64()?, event))
        }
        _ => None,
    }
}

/// Encodes a broadcast exactly as `RedisAdapter.broadcast` does: `[uid, {type: 2, data, nsp}, {rooms, except,
/// flags}]`, the placeholders of `data` turned back into msgpack bin (from `attachments`). `flags` keys are written
/// in the order `volatile, compress, local, timeout`, and only when set. Publish it on
/// [`Channels::broadcast`]`(rooms)`.
///
/// Fails on a placeholder whose `num` is not an index of `attachments`, or on nesting deeper than [`MAX_DEPTH`].
pub fn encode_broadcast<R: AsRef<str>, E: AsRef<str>>(
    uid: &str,
    nsp: &str,
    data: &Value,
    attachments: &[Bytes],
    rooms: &[R],
    except: &[E],
    flags: &Flags,
) -> Result<Vec<u8>, AdapterError> {
    let mut out = Vec::with_capacity(64);
    w_array_header(&mut out, 3);
    w_str(&mut out, uid);
    w_map_header(&mut out, 3);
    w_str(&mut out, "type");
    w_uint(&mut out, PACKET_TYPE_EVENT);
    w_str(&mut out, "data");
    w_json(&mut out, data, attachments, 0)?;
    w_str(&mut out, "nsp");
    w_str(&mut out, nsp);
    w_opts(&mut out, rooms, except, Some(flags));
    Ok(out)
}

fn w_opts<R: AsRef<str>, E: AsRef<str>>(out: &mut Vec<u8>, rooms: &[R], except: &[E], flags: Option<&Flags>) {
    w_map_header(out, if flags.is_some() { 3 } else { 2 });
    w_str(out, "rooms");
    w_array_header(out, rooms.len());
    for r in rooms {
        w_str(out, r.as_ref());
    }
    w_str(out, "except");
    w_array_header(out, except.len());
    for e in except {
        w_str(out, e.as_ref());
    }
    if let Some(flags) = flags {
        w_str(out, "flags");
        let n = usize::from(flags.volatile)
            + usize::from(flags.compress.is_some())
            + usize::from(flags.local)
            + usize::from(flags.timeout.is_some());
        w_map_header(out, n);
        if flags.volatile {
            w_str(out, "volatile");
            w_bool(out, true);
        }
        if let Some(c) = flags.compress {
            w_str(out, "compress");
            w_bool(out, c);
        }
        if flags.local {
            w_str(out, "local");
            w_bool(out, true);
        }
        if let Some(t) = flags.timeout {
            w_str(out, "timeout");
            w_uint(out, t);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Stored feed events
// ---------------------------------------------------------------------------------------------------------------

/// The msgpack bytes of `[uid, {type: 2, data: ["event_created", event], nsp}, {rooms: [room], except: [],
/// flags: {}}]` split around the value of the event's `seq` field: `head` ends right after the msgpack key `"seq"`;
/// the Lua script publishes `head .. cmsgpack.pack(seq) .. tail` on [`Channels::broadcast`]`(&[room])`.
///
/// The result is byte-identical to notepack.io's encoding of the same JS value (checked by the tests), because
/// Redis's `cmsgpack.pack` encodes an integral Lua number `n >= 0` with the smallest encoding — positive fixint
/// below 128, then `cc`, `cd`, `ce`, `cf` — exactly as notepack does (see [`msgpack_uint`]); this holds for every
/// seq up to 2^53 (Lua 5.1 numbers are doubles, and so are JS numbers). The script must pack a Lua *number*
/// (e.g. the result of `INCR`, or `tonumber(...)` of a string read with `HGET`): `cmsgpack.pack` of a Lua string
/// would produce a msgpack str, which [`event_from_broadcast`] does not accept as a seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTemplate {
    /// Bytes up to and including the msgpack string `"seq"`.
    pub head: Vec<u8>,
    /// Bytes after the seq value.
    pub tail: Vec<u8>,
}

impl EventTemplate {
    /// `head ++ msgpack_uint(seq) ++ tail`: what the Lua script publishes for `seq`.
    pub fn render(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + 9 + self.tail.len());
        out.extend_from_slice(&self.head);
        w_uint(&mut out, seq);
        out.extend_from_slice(&self.tail);
        out
    }
}

/// The fields of a stored feed event but its `seq` (the store assigns it).
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    /// The event id.
    pub id: &'a str,
    /// The tenant.
    pub tenant_id: &'a str,
    /// The message.
    pub message: &'a str,
    /// The timestamp, as in the event's JSON.
    pub timestamp: &'a str,
    /// The author.
    pub author: &'a str,
}

/// Builds the [`EventTemplate`] of a stored feed event published by `uid` for namespace `nsp` and `room`. The event
/// object's fields are in this exact order: `id`, `seq` (spliced in by the script), `tenant_id`, `message`,
/// `timestamp`, `author` (all strings but `seq`). The packet and opts keys are in the order the adapter produces
/// (`type, data, nsp` and `rooms, except, flags`).
pub fn event_template(uid: &str, nsp: &str, room: &str, event: &EventFields<'_>) -> EventTemplate {
    let EventFields { id, tenant_id, message, timestamp, author } = *event;
    let mut head = Vec::with_capacity(128 + message.len());
    w_array_header(&mut head, 3);
    w_str(&mut head, uid);
    w_map_header(&mut head, 3);
    w_str(&mut head, "type");
    w_uint(&mut head, PACKET_TYPE_EVENT);
    w_str(&mut head, "data");
    w_array_header(&mut head, 2);
    w_str(&mut head, FEED_EVENT_NAME);
    w_map_header(&mut head, 6);
    w_str(&mut head, "id");
    w_str(&mut head, id);
    w_str(&mut head, "seq");

    let mut tail = Vec::with_capacity(96 + message.len());
    for (k, v) in [("tenant_id", tenant_id), ("message", message), ("timestamp", timestamp), ("author", author)] {
        w_str(&mut tail, k);
        w_str(&mut tail, v);
    }
    w_str(&mut tail, "nsp");
    w_str(&mut tail, nsp);
    w_opts(&mut tail, &[room], &[] as &[&str], Some(&Flags::default()));
    EventTemplate { head, tail }
}

/// The smallest msgpack encoding of a non-negative integer: positive fixint (< 128), then `cc` (uint8), `cd`
/// (uint16), `ce` (uint32), `cf` (uint64). notepack.io (for JS numbers up to 2^53) and Redis's `cmsgpack.pack` (for
/// integral Lua numbers) produce exactly these bytes.
pub fn msgpack_uint(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    w_uint(&mut out, n);
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------------------------

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
    /// `SOCKETS` (0), legacy: answer with [`sockets_response`].
    Sockets {
        /// `requestId`.
        request_id: String,
        /// The rooms to list the sockets of (all sockets when empty).
        rooms: Vec<String>,
    },
    /// `ALL_ROOMS` (1): answer with [`all_rooms_response`].
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
    /// with [`remote_ack_response`]; otherwise do nothing.
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
    /// [`remote_ack_response`].
    RemoteDisconnectSocket {
        /// `requestId`.
        request_id: String,
        /// The socket id.
        sid: String,
        /// Whether to close the underlying connection too.
        close: bool,
    },
    /// `REMOTE_FETCH` (5): answer with [`fetch_response`].
    RemoteFetch {
        /// `requestId`.
        request_id: String,
        /// Which sockets.
        selector: Selector,
    },
    /// `SERVER_SIDE_EMIT` (6): `data` is `[eventName, ...args]` for the server-side listeners. With a `request_id`,
    /// answer (once) with [`server_side_emit_response`].
    ServerSideEmit {
        /// `requestId`, present iff an acknowledgement is expected.
        request_id: Option<String>,
        /// `[eventName, ...args]` (binary of a msgpack request replaced by placeholders).
        data: Value,
        /// Binary referenced by placeholders of `data` (always empty for JSON requests).
        attachments: Vec<Bytes>,
    },
    /// `BROADCAST` (7, msgpack): a broadcast expecting acknowledgements. Deliver it with a packet id, answer with
    /// [`broadcast_client_count_response`] (number of local clients reached), then with one
    /// [`broadcast_ack_response`] per client acknowledgement.
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

// ---------------------------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------------------------

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

/// Response to [`Request::Sockets`]: `{"requestId":…,"sockets":[…]}` (JSON).
///
/// Channel: the common response channel ([`Channels::response`]) or, to mimic `publishOnSpecificResponseChannel`,
/// [`Channels::response_to`]`(requester uid)`; the requester listens on both.
pub fn sockets_response(request_id: &str, socket_ids: &[String]) -> Vec<u8> {
    json_bytes(&json!({"requestId": request_id, "sockets": socket_ids}))
}

/// Response to [`Request::AllRooms`]: `{"requestId":…,"rooms":[…]}` (JSON).
///
/// Channel: as [`sockets_response`].
pub fn all_rooms_response(request_id: &str, rooms: &[String]) -> Vec<u8> {
    json_bytes(&json!({"requestId": request_id, "rooms": rooms}))
}

/// Response to [`Request::RemoteFetch`]: `{"requestId":…,"sockets":[{"id","handshake","rooms","data"}…]}` (JSON).
///
/// Channel: as [`sockets_response`].
pub fn fetch_response(request_id: &str, sockets: &[FetchedSocket]) -> Vec<u8> {
    let sockets: Vec<Value> = sockets
        .iter()
        .map(|s| json!({"id": s.id, "handshake": s.handshake, "rooms": s.rooms, "data": s.data}))
        .collect();
    json_bytes(&json!({"requestId": request_id, "sockets": sockets}))
}

/// Response to the legacy per-socket [`Request::RemoteJoinSocket`], [`Request::RemoteLeaveSocket`] and
/// [`Request::RemoteDisconnectSocket`]: `{"requestId":…}` (JSON). Only sent when the socket is local.
///
/// Channel: as [`sockets_response`].
pub fn remote_ack_response(request_id: &str) -> Vec<u8> {
    json_bytes(&json!({ "requestId": request_id }))
}

/// Acknowledgement of a [`Request::ServerSideEmit`] with a request id: `{"type":6,"requestId":…,"data":…}` (JSON).
/// `data` is the *first* argument the listener passed to its callback; `None` (callback called without argument)
/// omits the key, as `JSON.stringify` drops `undefined`. Send at most one per request.
///
/// Channel: **always the common response channel** ([`Channels::response`]), never the requester-specific one.
pub fn server_side_emit_response(request_id: &str, data: Option<&Value>) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("type".into(), request_type::SERVER_SIDE_EMIT.into());
    m.insert("requestId".into(), request_id.into());
    if let Some(d) = data {
        m.insert("data".into(), d.clone());
    }
    json_bytes(&Value::Object(m))
}

/// First response to a [`Request::BroadcastWithAck`]: `{"type":8,"requestId":…,"clientCount":n}` (JSON), the number
/// of local clients the packet was sent to (acknowledgements expected from).
///
/// Channel: as [`sockets_response`].
pub fn broadcast_client_count_response(request_id: &str, count: usize) -> Vec<u8> {
    json_bytes(&json!({"type": request_type::BROADCAST_CLIENT_COUNT, "requestId": request_id, "clientCount": count}))
}

/// One client acknowledgement of a [`Request::BroadcastWithAck`]: the **msgpack** map
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

// ---------------------------------------------------------------------------------------------------------------
// Internal value tree (what notepack.decode / JSON.parse would give a Node server)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// JS `undefined` (notepack's legacy fixext1 type 0).
    Undefined,
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bin(Bytes),
    /// A JS Date, as a time value in milliseconds (not yet clipped).
    Date(f64),
    Arr(Vec<Node>),
    /// Own properties in JS enumeration order, keys unique, no `__proto__`.
    Map(Vec<(String, Node)>),
}

/// Removes and returns property `key`, treating `undefined` as absent.
fn take(m: &mut Vec<(String, Node)>, key: &str) -> Option<Node> {
    let i = m.iter().position(|(k, _)| k == key)?;
    match m.remove(i).1 {
        Node::Undefined => None,
        v => Some(v),
    }
}

/// JS truthiness.
fn truthy(n: &Node) -> bool {
    match n {
        Node::Undefined | Node::Null => false,
        Node::Bool(b) => *b,
        Node::Int(i) => *i != 0,
        Node::UInt(u) => *u != 0,
        Node::Float(f) => *f != 0.0 && !f.is_nan(),
        Node::Str(s) => !s.is_empty(),
        Node::Bin(_) | Node::Date(_) | Node::Arr(_) | Node::Map(_) => true,
    }
}

fn req_string(n: Option<Node>, what: &str) -> Result<String, AdapterError> {
    match n {
        Some(Node::Str(s)) => Ok(s),
        _ => Err(malformed(format!("{what} is missing or not a string"))),
    }
}

fn opt_string(n: Option<Node>, what: &str) -> Result<Option<String>, AdapterError> {
    match n {
        None => Ok(None),
        Some(Node::Str(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("{what} is not a string"))),
    }
}

/// A room name: a string, or a number stringified as JS does (Node rooms may be numbers).
fn room_string(n: Option<Node>, what: &str) -> Result<String, AdapterError> {
    match n {
        Some(Node::Str(s)) => Ok(s),
        Some(Node::Int(i)) => Ok(i.to_string()),
        Some(Node::UInt(u)) => Ok(u.to_string()),
        Some(Node::Float(f)) => Ok(js_number_string(f)),
        _ => Err(malformed(format!("{what} is missing or not a string"))),
    }
}

/// A list of rooms: absent/null → empty; otherwise an array of strings (or numbers), deduplicated like a JS `Set`.
fn string_list(n: Option<Node>, what: &str) -> Result<Vec<String>, AdapterError> {
    let items = match n {
        None | Some(Node::Null) => return Ok(Vec::new()),
        Some(Node::Arr(items)) => items,
        Some(_) => return Err(malformed(format!("{what} is not an array"))),
    };
    let mut seen = HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let s = room_string(Some(item), what)?;
        if seen.insert(s.clone()) {
            out.push(s);
        }
    }
    Ok(out)
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

fn flags(n: Option<Node>) -> Flags {
    let mut flags = Flags::default();
    let Some(Node::Map(m)) = n else {
        return flags;
    };
    for (k, v) in m {
        match (k.as_str(), &v) {
            (_, Node::Undefined) => {}
            ("volatile", v) => flags.volatile = truthy(v),
            ("compress", v) => flags.compress = Some(truthy(v)),
            ("local", v) => flags.local = truthy(v),
            ("timeout", Node::Int(t)) if *t >= 0 => flags.timeout = Some(t.unsigned_abs()),
            ("timeout", Node::UInt(t)) => flags.timeout = Some(*t),
            ("timeout", Node::Float(t)) if t.is_finite() && *t >= 0.0 => {
                // Saturating float-to-int conversion, fractional milliseconds dropped.
                flags.timeout = Some(*t as u64)
            }
            _ => {}
        }
    }
    flags
}

fn broadcast_from_nodes(uid: String, packet: Node, opts: Node) -> Result<Broadcast, AdapterError> {
    let Node::Map(mut p) = packet else {
        return Err(malformed("packet is not an object"));
    };
    let packet_type = match take(&mut p, "type") {
        Some(Node::Int(t)) if t >= 0 => t.unsigned_abs(),
        Some(Node::UInt(t)) => t,
        _ => return Err(malformed("packet type is missing or not a non-negative integer")),
    };
    let nsp = match take(&mut p, "nsp") {
        None => "/".to_owned(),
        Some(Node::Str(s)) => s,
        Some(_) => return Err(malformed("packet nsp is not a string")),
    };
    let data @ Node::Arr(_) = take(&mut p, "data").unwrap_or(Node::Undefined) else {
        return Err(malformed("packet data is missing or not an array"));
    };
    let Node::Map(mut o) = opts else {
        return Err(malformed("broadcast opts is not an object"));
    };
    let rooms = string_list(take(&mut o, "rooms"), "opts.rooms")?;
    let except = string_list(take(&mut o, "except"), "opts.except")?;
    let flags = flags(take(&mut o, "flags"));
    let mut attachments = Vec::new();
    let data = to_json(data, &mut attachments);
    Ok(Broadcast { uid, packet_type, nsp, data, attachments, rooms, except, flags })
}

/// Node tree → JSON as `JSON.stringify(deconstructPacket(...))` would produce it.
fn to_json(n: Node, attachments: &mut Vec<Bytes>) -> Value {
    match n {
        Node::Undefined | Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::from(i),
        Node::UInt(u) => Value::from(u),
        Node::Float(f) => js_number_json(f),
        Node::Str(s) => Value::String(s),
        Node::Bin(b) => {
            let num = attachments.len();
            attachments.push(b);
            json!({"_placeholder": true, "num": num})
        }
        Node::Date(ms) => js_date_json(ms),
        Node::Arr(items) => Value::Array(items.into_iter().map(|i| to_json(i, attachments)).collect()),
        Node::Map(entries) => {
            let mut m = Map::with_capacity(entries.len());
            for (k, v) in entries {
                if v != Node::Undefined {
                    m.insert(k, to_json(v, attachments));
                }
            }
            Value::Object(m)
        }
    }
}

/// A JS number as `JSON.stringify` writes it: non-finite → null, integral values within ±2^53 as integers.
fn js_number_json(f: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_992.0;
    if !f.is_finite() {
        Value::Null
    } else if f.trunc() == f && f.abs() <= SAFE {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// `String(number)` (exact for integers and magnitudes in `[1e-6, 1e21)`).
fn js_number_string(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".to_owned() } else { "-Infinity".to_owned() }
    } else if f.trunc() == f && f.abs() <= 9_007_199_254_740_992.0 {
        (f as i64).to_string()
    } else {
        format!("{f}")
    }
}

/// `date.toJSON()`: the ISO string of a JS time value, or null when it is not a valid Date.
fn js_date_json(ms: f64) -> Value {
    eventfeed_protocol::date::iso_string(ms).map_or(Value::Null, Value::String)
}

/// Canonical array index (`"0"`, `"17"`, ≤ 2^32 − 2): JS enumerates these keys first, ascending.
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty()
        || key.len() > 10
        || !key.bytes().all(|b| b.is_ascii_digit())
        || (key.len() > 1 && key.starts_with('0'))
    {
        return None;
    }
    key.parse::<u64>().ok().filter(|&n| n <= 4_294_967_294).and_then(|n| u32::try_from(n).ok())
}

/// Reorders entries as JS enumerates own properties: array indices ascending first, then insertion order.
fn js_order(mut entries: Vec<(String, Node)>) -> Vec<(String, Node)> {
    if entries.iter().any(|(k, _)| array_index(k).is_some()) {
        // Stable: non-index keys keep their relative order.
        entries.sort_by_key(|(k, _)| array_index(k).map_or((1, 0), |i| (0, i)));
    }
    entries
}

/// Builds a JS object from (key, value) pairs: later duplicates overwrite the value in place, `__proto__` is
/// dropped when `drop_proto` (msgpack: it is a prototype assignment), then JS ordering applies.
fn js_object(pairs: impl Iterator<Item = (String, Node)>, capacity: usize, drop_proto: bool) -> Vec<(String, Node)> {
    let mut entries: Vec<(String, Node)> = Vec::with_capacity(capacity);
    let mut index: HashMap<String, usize> = HashMap::with_capacity(capacity);
    for (k, v) in pairs {
        if drop_proto && k == "__proto__" {
            continue;
        }
        match index.get(&k) {
            Some(&i) => {
                if let Some(e) = entries.get_mut(i) {
                    e.1 = v;
                }
            }
            None => {
                index.insert(k.clone(), entries.len());
                entries.push((k, v));
            }
        }
    }
    js_order(entries)
}

// ---------------------------------------------------------------------------------------------------------------
// msgpack reader (notepack.io semantics, bounded)
// ---------------------------------------------------------------------------------------------------------------

fn decode_msgpack(msg: &[u8]) -> Result<Node, AdapterError> {
    let mut r = Reader { buf: msg, pos: 0 };
    let v = r.value(0)?;
    match r.remaining() {
        0 => Ok(v),
        n => Err(AdapterError::TrailingBytes(n)),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], AdapterError> {
        let end = self.pos.checked_add(n).ok_or(AdapterError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(AdapterError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AdapterError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, AdapterError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<usize, AdapterError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn u32(&mut self) -> Result<usize, AdapterError> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| AdapterError::Truncated)
    }

    fn i8(&mut self) -> Result<i8, AdapterError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    fn value(&mut self, depth: usize) -> Result<Node, AdapterError> {
        let m = self.u8()?;
        Ok(match m {
            0x00..=0x7f => Node::Int(i64::from(m)),
            0x80..=0x8f => self.map(usize::from(m & 0x0f), depth)?,
            0x90..=0x9f => self.seq(usize::from(m & 0x0f), depth)?,
            0xa0..=0xbf => self.str(usize::from(m & 0x1f))?,
            0xc0 => Node::Null,
            0xc1 => return Err(AdapterError::InvalidMarker(m)),
            0xc2 => Node::Bool(false),
            0xc3 => Node::Bool(true),
            0xc4 => {
                let n = usize::from(self.u8()?);
                self.bin(n)?
            }
            0xc5 => {
                let n = self.u16()?;
                self.bin(n)?
            }
            0xc6 => {
                let n = self.u32()?;
                self.bin(n)?
            }
            0xc7 => {
                let n = usize::from(self.u8()?);
                self.ext(n, m)?
            }
            0xc8 => {
                let n = self.u16()?;
                self.ext(n, m)?
            }
            0xc9 => {
                let n = self.u32()?;
                self.ext(n, m)?
            }
            0xca => Node::Float(f64::from(f32::from_be_bytes(self.array()?))),
            0xcb => Node::Float(f64::from_be_bytes(self.array()?)),
            0xcc => Node::Int(i64::from(self.u8()?)),
            0xcd => Node::Int(i64::from(u16::from_be_bytes(self.array()?))),
            0xce => Node::Int(i64::from(u32::from_be_bytes(self.array()?))),
            0xcf => Node::UInt(u64::from_be_bytes(self.array()?)),
            0xd0 => Node::Int(i64::from(self.i8()?)),
            0xd1 => Node::Int(i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Node::Int(i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Node::Int(i64::from_be_bytes(self.array()?)),
            0xd4 => self.ext(1, m)?,
            0xd5 => self.ext(2, m)?,
            0xd6 => self.ext(4, m)?,
            0xd7 => self.ext(8, m)?,
            0xd8 => self.ext(16, m)?,
            0xd9 => {
                let n = usize::from(self.u8()?);
                self.str(n)?
            }
            0xda => {
                let n = self.u16()?;
                self.str(n)?
            }
            0xdb => {
                let n = self.u32()?;
                self.str(n)?
            }
            0xdc => {
                let n = self.u16()?;
                self.seq(n, depth)?
            }
            0xdd => {
                let n = self.u32()?;
                self.seq(n, depth)?
            }
            0xde => {
                let n = self.u16()?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.u32()?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Node::Int(i64::from(i8::from_be_bytes([m]))),
        })
    }

    fn str(&mut self, n: usize) -> Result<Node, AdapterError> {
        Ok(Node::Str(String::from_utf8_lossy(self.bytes(n)?).into_owned()))
    }

    fn bin(&mut self, n: usize) -> Result<Node, AdapterError> {
        Ok(Node::Bin(Bytes::copy_from_slice(self.bytes(n)?)))
    }

    fn seq(&mut self, n: usize, depth: usize) -> Result<Node, AdapterError> {
        if depth >= MAX_DEPTH {
            return Err(AdapterError::TooDeep);
        }
        // Every element takes at least one byte: never allocate more than the input could hold.
        if n > self.remaining() {
            return Err(AdapterError::Truncated);
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Node::Arr(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Node, AdapterError> {
        if depth >= MAX_DEPTH {
            return Err(AdapterError::TooDeep);
        }
        if n > self.remaining() / 2 {
            return Err(AdapterError::Truncated);
        }
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let key = js_key(self.value(depth + 1)?)?;
            pairs.push((key, self.value(depth + 1)?));
        }
        Ok(Node::Map(js_object(pairs.into_iter(), n, true)))
    }

    /// ext (`marker` c7/c8/c9) or fixext (d4..d8) of `n` data bytes; the type byte is read here.
    fn ext(&mut self, n: usize, marker: u8) -> Result<Node, AdapterError> {
        let ty = self.i8()?;
        let variable = matches!(marker, 0xc7..=0xc9);
        match (ty, n, variable) {
            // Legacy notepack `undefined`.
            (0, 1, false) => {
                self.bytes(1)?;
                Ok(Node::Undefined)
            }
            // Legacy notepack Date: int64 milliseconds.
            (0, 8, false) => {
                let hi = i32::from_be_bytes(self.array()?);
                let lo = u32::from_be_bytes(self.array()?);
                Ok(Node::Date(f64::from(hi) * 4_294_967_296.0 + f64::from(lo)))
            }
            // Legacy notepack ArrayBuffer.
            (0, _, true) => self.bin(n),
            // Timestamp 32.
            (-1, 4, false) => Ok(Node::Date(f64::from(u32::from_be_bytes(self.array()?)) * 1e3)),
            // Timestamp 64: 30-bit nanoseconds, 34-bit seconds.
            (-1, 8, false) => {
                let hi = u32::from_be_bytes(self.array()?);
                let lo = u32::from_be_bytes(self.array()?);
                let s = f64::from(hi & 0x3) * 4_294_967_296.0 + f64::from(lo);
                Ok(Node::Date(s * 1e3 + f64::from(hi >> 2) / 1e6))
            }
            // Timestamp 96 (notepack only recognises it as ext8).
            (-1, _, true) if marker == 0xc7 => {
                if n != 12 {
                    return Err(malformed("timestamp 96 with a length other than 12"));
                }
                let ns = u32::from_be_bytes(self.array()?);
                let hi = i32::from_be_bytes(self.array()?);
                let lo = u32::from_be_bytes(self.array()?);
                let s = f64::from(hi) * 4_294_967_296.0 + f64::from(lo);
                Ok(Node::Date(s * 1e3 + f64::from(ns) / 1e6))
            }
            // Anything else: notepack returns `[type, Buffer]`.
            _ => {
                let data = self.bin(n)?;
                Ok(Node::Arr(vec![Node::Int(i64::from(ty)), data]))
            }
        }
    }
}

/// `String(key)` for a decoded map key.
fn js_key(key: Node) -> Result<String, AdapterError> {
    match key {
        Node::Str(s) => Ok(s),
        Node::Int(i) => Ok(i.to_string()),
        Node::UInt(u) => Ok(u.to_string()),
        Node::Float(f) => Ok(js_number_string(f)),
        Node::Bool(b) => Ok(b.to_string()),
        Node::Null => Ok("null".to_owned()),
        Node::Undefined => Ok("undefined".to_owned()),
        Node::Bin(_) | Node::Date(_) | Node::Arr(_) | Node::Map(_) => {
            Err(malformed("map key is not a string, number, boolean or nil"))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// JSON reader (JSON.parse semantics for requests)
// ---------------------------------------------------------------------------------------------------------------

fn decode_json(msg: &[u8]) -> Result<Node, AdapterError> {
    // `JSON.parse(msg.toString())`: invalid UTF-8 becomes U+FFFD first. serde_json limits nesting to 128.
    let text = String::from_utf8_lossy(msg);
    let v: Value = serde_json::from_str(&text).map_err(|e| AdapterError::Json(e.to_string()))?;
    from_json(v, 0)
}

fn from_json(v: Value, depth: usize) -> Result<Node, AdapterError> {
    Ok(match v {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Node::Int(i),
            (None, Some(u)) => Node::UInt(u),
            _ => Node::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Node::Str(s),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(AdapterError::TooDeep);
            }
            Node::Arr(items.into_iter().map(|i| from_json(i, depth + 1)).collect::<Result<_, _>>()?)
        }
        Value::Object(m) => {
            if depth >= MAX_DEPTH {
                return Err(AdapterError::TooDeep);
            }
            let n = m.len();
            let pairs = m.into_iter().map(|(k, v)| Ok((k, from_json(v, depth + 1)?))).collect::<Result<Vec<_>, _>>()?;
            // JSON.parse creates an own `__proto__` property, so it is kept here.
            Node::Map(js_object(pairs.into_iter(), n, false))
        }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// msgpack writer (notepack.io's choices of encodings)
// ---------------------------------------------------------------------------------------------------------------

fn w_uint(out: &mut Vec<u8>, n: u64) {
    if n < 0x80 {
        out.push(n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[0xcc, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xcd);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(0xce);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn w_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        w_uint(out, n.unsigned_abs());
    } else if n >= -32 {
        out.extend_from_slice(&(n as i8).to_be_bytes());
    } else if let Ok(n) = i8::try_from(n) {
        out.push(0xd0);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i16::try_from(n) {
        out.push(0xd1);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i32::try_from(n) {
        out.push(0xd2);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A JS number as notepack writes it: integral finite values below 2^63 as integers, anything else as float64.
fn w_f64(out: &mut Vec<u8>, f: f64) {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.is_finite() && f.trunc() == f && f.abs() < LIMIT {
        w_int(out, f as i64);
    } else {
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    }
}

fn w_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

fn w_len(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, m8: Option<u8>, m16: u8, m32: u8) {
    match fix {
        Some((base, limit)) if len < limit => out.push(base | len as u8),
        _ => match (m8, u8::try_from(len), u16::try_from(len)) {
            (Some(m8), Ok(n), _) => out.extend_from_slice(&[m8, n]),
            (_, _, Ok(n)) => {
                out.push(m16);
                out.extend_from_slice(&n.to_be_bytes());
            }
            _ => {
                out.push(m32);
                // Lengths beyond u32 cannot be encoded; saturate (notepack throws). Not reachable in practice.
                out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            }
        },
    }
}

fn w_str(out: &mut Vec<u8>, s: &str) {
    w_len(out, s.len(), Some((0xa0, 32)), Some(0xd9), 0xda, 0xdb);
    out.extend_from_slice(s.as_bytes());
}

fn w_bin(out: &mut Vec<u8>, b: &[u8]) {
    w_len(out, b.len(), None, Some(0xc4), 0xc5, 0xc6);
    out.extend_from_slice(b);
}

fn w_array_header(out: &mut Vec<u8>, len: usize) {
    w_len(out, len, Some((0x90, 16)), None, 0xdc, 0xdd);
}

fn w_map_header(out: &mut Vec<u8>, len: usize) {
    w_len(out, len, Some((0x80, 16)), None, 0xde, 0xdf);
}

/// JSON → msgpack, Socket.IO placeholders replaced by the attachment they refer to (as `reconstructPacket`).
fn w_json(out: &mut Vec<u8>, v: &Value, attachments: &[Bytes], depth: usize) -> Result<(), AdapterError> {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => w_bool(out, *b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => w_uint(out, u),
            (None, Some(i), _) => w_int(out, i),
            (None, None, Some(f)) => w_f64(out, f),
            (None, None, None) => out.push(0xc0),
        },
        Value::String(s) => w_str(out, s),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(AdapterError::TooDeep);
            }
            w_array_header(out, items.len());
            for i in items {
                w_json(out, i, attachments, depth + 1)?;
            }
        }
        Value::Object(m) => {
            if m.get("_placeholder") == Some(&Value::Bool(true)) {
                let bin = m
                    .get("num")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .and_then(|n| attachments.get(n))
                    .ok_or_else(|| AdapterError::Placeholder(format!("{v} with {} attachments", attachments.len())))?;
                w_bin(out, bin);
                return Ok(());
            }
            if depth >= MAX_DEPTH {
                return Err(AdapterError::TooDeep);
            }
            w_map_header(out, m.len());
            for (k, v) in m {
                w_str(out, k);
                w_json(out, v, attachments, depth + 1)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Byte fixtures below were produced by the real Node packages with this script (run it in a directory where
    //! `npm install notepack.io@3.0.1 @socket.io/redis-adapter@8.3.0 @socket.io/redis-emitter@5.1.0 socket.io@4`
    //! was done, then `node gen.js`; it prints JSON with the hex of each message and its channel). Request ids are
    //! random (uid2), so regenerating changes them.
    //!
    //! ```js
    //! // Generates byte fixtures for src/cluster/adapter.rs with the real notepack.io 3.0.1,
    //! // @socket.io/redis-adapter 8.3.0, @socket.io/redis-emitter 5.1.0 and socket.io 4.8.
    //! // npm install notepack.io@3.0.1 @socket.io/redis-adapter@8.3.0 @socket.io/redis-emitter@5.1.0 socket.io@4
    //! const { EventEmitter } = require("events");
    //! const notepack = require("notepack.io");
    //! const { Server } = require("socket.io");
    //! const { createAdapter } = require("@socket.io/redis-adapter");
    //! const { Emitter } = require("@socket.io/redis-emitter");
    //!
    //! class MockRedis extends EventEmitter {
    //!   constructor() { super(); this.published = []; }
    //!   psubscribe() {} subscribe() {} punsubscribe() {} unsubscribe() {}
    //!   publish(channel, msg) { this.published.push([channel, Buffer.isBuffer(msg) ? msg : Buffer.from(msg)]); }
    //!   send_command(cmd, args, cb) { cb(null, ["x", 2]); } // PUBSUB NUMSUB -> 2 servers
    //! }
    //! const out = {};
    //! const take = (client, name) => {
    //!   const [channel, msg] = client.published.shift();
    //!   out[name] = { channel, hex: msg.toString("hex") };
    //! };
    //!
    //! (async () => {
    //!   // --- emitter
    //!   const er = new MockRedis();
    //!   const emitter = new Emitter(er);
    //!   emitter.of("/events").to("room1").emit("ev", "str", 42, { nested: { a: [1, 2.5, null], b: true }, u: undefined }, Buffer.from([1, 2, 3]));
    //!   take(er, "emitter_room");
    //!   emitter.of("/events").except(["r1", "r2"]).volatile.emit("hello", -1, [undefined, "x"]);
    //!   take(er, "emitter_except");
    //!   emitter.of("/events").to(["a", "b"]).compress(false).emit("multi", new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)), 1.5, -300, 2 ** 40);
    //!   take(er, "emitter_multi");
    //!   emitter.of("/events").in("r").socketsJoin(["x", "y"]); take(er, "emitter_join");
    //!   emitter.of("/events").socketsLeave("x"); take(er, "emitter_leave");
    //!   emitter.of("/events").except("r").disconnectSockets(true); take(er, "emitter_disconnect");
    //!   emitter.of("/events").serverSideEmit("hi", { a: 1 }); take(er, "emitter_sse");
    //!
    //!   // --- adapter
    //!   const pub = new MockRedis(), sub = new MockRedis();
    //!   const io = new Server();
    //!   io.adapter(createAdapter(pub, sub, { key: "socket.io" }));
    //!   const nsp = io.of("/events");
    //!   nsp.adapter.uid = "abc123";
    //!   nsp.to("room1").emit("bin", Buffer.from("hi"), { x: Buffer.alloc(0), y: [Buffer.from([255])] });
    //!   take(pub, "adapter_room_bin");
    //!   nsp.except("a").volatile.compress(false).emit("all", { "2": "two", "b": 1, "1": "one" });
    //!   take(pub, "adapter_except");
    //!   nsp.timeout(1000).emit("ack-me", 7, () => {});
    //!   take(pub, "adapter_broadcast_ack_req");
    //!   nsp.fetchSockets().catch(() => {}); await new Promise((r) => setTimeout(r, 10));
    //!   take(pub, "req_fetch");
    //!   nsp.adapter.allRooms().catch(() => {}); await new Promise((r) => setTimeout(r, 10));
    //!   take(pub, "req_all_rooms");
    //!   nsp.in("r").socketsJoin("j"); take(pub, "req_join");
    //!   nsp.except("e").socketsLeave(["l1", "l2"]); take(pub, "req_leave");
    //!   nsp.disconnectSockets(false); take(pub, "req_disconnect");
    //!   nsp.serverSideEmit("sse", 1, "two"); take(pub, "req_sse");
    //!   nsp.serverSideEmit("sse-ack", { q: true }, () => {}); await new Promise((r) => setTimeout(r, 10));
    //!   take(pub, "req_sse_ack");
    //!   // requests sent by older adapter versions (still handled by 8.3.0's onrequest)
    //!   out.req_sockets_legacy = { hex: Buffer.from(JSON.stringify({ uid: "old1", requestId: "rq1", type: 0, rooms: ["r1"] })).toString("hex") };
    //!   out.req_join_sid_legacy = { hex: Buffer.from(JSON.stringify({ uid: "old1", requestId: "rq2", type: 2, sid: "s1", room: "newroom" })).toString("hex") };
    //!
    //!   // --- responses as 8.3.0 publishes them (with no local sockets)
    //!   nsp.on("sse-ack", (arg, cb) => cb({ pong: arg }));
    //!   const reqCh = "socket.io-request#/events#";
    //!   const feed = async (obj, msgpack) => {
    //!     await nsp.adapter.onrequest(reqCh, msgpack ? notepack.encode(obj) : Buffer.from(JSON.stringify(obj)));
    //!     await new Promise((r) => setTimeout(r, 10));
    //!   };
    //!   await feed({ uid: "other", requestId: "r0", type: 0, rooms: [] }); take(pub, "resp_sockets");
    //!   await feed({ uid: "other", requestId: "r1", type: 1 }); take(pub, "resp_all_rooms");
    //!   await feed({ uid: "other", requestId: "r5", type: 5, opts: { rooms: [], except: [] } }); take(pub, "resp_fetch");
    //!   await feed({ uid: "other", requestId: "r6", type: 6, data: ["sse-ack", 5] }); take(pub, "resp_sse");
    //!   await feed({ uid: "other", requestId: "r7", type: 7, packet: { type: 2, data: ["x"], nsp: "/events" }, opts: { rooms: [], except: [], flags: { timeout: 100 } } }, true);
    //!   take(pub, "resp_client_count");
    //!   out.resp_broadcast_ack = { hex: notepack.encode({ type: 9, requestId: "r7", packet: ["ok", 1] }).toString("hex") };
    //!   out.resp_fetch_one = { hex: Buffer.from(JSON.stringify({ requestId: "r5", sockets: [{ id: "sid1", handshake: { headers: {}, query: { EIO: "4" } }, rooms: ["sid1", "room1"], data: { user: "u" } }] })).toString("hex") };
    //!
    //!   // --- misc notepack
    //!   out.no_nsp = { hex: notepack.encode(["uid9", { type: 2, data: ["x", 1] }, { rooms: [], except: [], flags: {} }]).toString("hex") };
    //!   const nums = {};
    //!   for (const n of [0, 42, 127, 128, 255, 256, 300, 65535, 65536, 70000, 2 ** 32 - 1, 2 ** 32, 2 ** 33, 2 ** 53 - 1]) nums[n] = notepack.encode(n).toString("hex");
    //!   out.numbers = nums;
    //!   out.floats = { half: notepack.encode(0.5).toString("hex"), nan: notepack.encode(NaN).toString("hex"), inf: notepack.encode(Infinity).toString("hex"), negzero: notepack.encode(-0).toString("hex") };
    //!   try { notepack.encode(10n); out.bigint = "ok"; } catch (e) { out.bigint = String(e.message); }
    //!   out.undef_top = notepack.encode(undefined).toString("hex");
    //!
    //!   // --- feed template
    //!   const tpl = (seq, o) => notepack.encode(["eventfeed-store",
    //!     { type: 2, data: ["event_created", { id: o.id, seq, tenant_id: o.tenant_id, message: o.message, timestamp: o.timestamp, author: o.author }], nsp: o.nsp },
    //!     { rooms: [o.room], except: [], flags: {} }]).toString("hex");
    //!   const ev = { nsp: "/events", room: "tenant:acme", id: "0b7c6d1e-8f00-4e2b-9a4c-1d2e3f405162", tenant_id: "acme", message: "héllo wörld — a message longer than thirty-one bytes ✓", timestamp: "2026-11-27T12:00:00.123Z", author: "alice" };
    //!   out.template_event = ev;
    //!   out.templates = {};
    //!   for (const n of [0, 42, 127, 128, 300, 65535, 70000, 2 ** 32, 2 ** 33]) out.templates[n] = tpl(n, ev);
    //!   console.log(JSON.stringify(out, null, 1));
    //!   process.exit(0);
    //! })();
    //! ```

    use super::*;

    // published on socket.io#/events#room1#
    const EMITTER_ROOM: &str = concat!(
        "93a7656d697474657283a47479706502a46461746195a26576a37374722a81a66e657374656482a1619301cb400400000000",
        "0000c0a162c3c403010203a36e7370a72f6576656e747383a5726f6f6d7391a5726f6f6d31a5666c61677380a66578636570",
        "7490",
    );
    // published on socket.io#/events#
    const EMITTER_EXCEPT: &str = concat!(
        "93a7656d697474657283a47479706502a46461746193a568656c6c6fff92c0a178a36e7370a72f6576656e747383a5726f6f",
        "6d7390a5666c61677381a8766f6c6174696c65c3a665786365707492a27231a27232",
    );
    // published on socket.io#/events#
    const EMITTER_MULTI: &str = concat!(
        "93a7656d697474657283a47479706502a46461746195a56d756c7469d7ffa1a5d60065937d25cb3ff8000000000000d1fed4",
        "cf0000010000000000a36e7370a72f6576656e747383a5726f6f6d7392a161a162a5666c61677381a8636f6d7072657373c2",
        "a665786365707490",
    );
    // published on socket.io-request#/events#
    const EMITTER_JOIN: &str = r#"{"type":2,"opts":{"rooms":["r"],"except":[]},"rooms":["x","y"]}"#;
    // published on socket.io-request#/events#
    const EMITTER_LEAVE: &str = r#"{"type":3,"opts":{"rooms":[],"except":[]},"rooms":["x"]}"#;
    // published on socket.io-request#/events#
    const EMITTER_DISCONNECT: &str = r#"{"type":4,"opts":{"rooms":[],"except":["r"]},"close":true}"#;
    // published on socket.io-request#/events#
    const EMITTER_SSE: &str = r#"{"uid":"emitter","type":6,"data":["hi",{"a":1}]}"#;
    // published on socket.io#/events#room1#
    const ADAPTER_ROOM_BIN: &str = concat!(
        "93a661626331323383a47479706502a46461746193a362696ec402686982a178c400a17991c401ffa36e7370a72f6576656e",
        "747383a5726f6f6d7391a5726f6f6d31a665786365707490a5666c61677380",
    );
    // published on socket.io#/events#
    const ADAPTER_EXCEPT: &str = concat!(
        "93a661626331323383a47479706502a46461746192a3616c6c83a131a36f6e65a132a374776fa16201a36e7370a72f657665",
        "6e747383a5726f6f6d7390a665786365707491a161a5666c61677382a8766f6c6174696c65c3a8636f6d7072657373c2",
    );
    // published on socket.io-request#/events#
    const ADAPTER_BROADCAST_ACK_REQ: &str = concat!(
        "85a3756964a6616263313233a9726571756573744964a6536f495a5972a47479706507a67061636b657483a47479706502a4",
        "6461746192a661636b2d6d6507a36e7370a72f6576656e7473a46f70747383a5726f6f6d7390a665786365707490a5666c61",
        "677381a774696d656f7574cd03e8",
    );
    // published on socket.io-request#/events#
    const REQ_FETCH: &str = r#"{"uid":"abc123","requestId":"qYACuk","type":5,"opts":{"rooms":[],"except":[]}}"#;
    // published on socket.io-request#/events#
    const REQ_ALL_ROOMS: &str = r#"{"uid":"abc123","requestId":"smuiDg","type":1}"#;
    // published on socket.io-request#/events#
    const REQ_JOIN: &str = r#"{"uid":"abc123","type":2,"opts":{"rooms":["r"],"except":[]},"rooms":["j"]}"#;
    // published on socket.io-request#/events#
    const REQ_LEAVE: &str = r#"{"uid":"abc123","type":3,"opts":{"rooms":[],"except":["e"]},"rooms":["l1","l2"]}"#;
    // published on socket.io-request#/events#
    const REQ_DISCONNECT: &str = r#"{"uid":"abc123","type":4,"opts":{"rooms":[],"except":[]},"close":false}"#;
    // published on socket.io-request#/events#
    const REQ_SSE: &str = r#"{"uid":"abc123","type":6,"data":["sse",1,"two"]}"#;
    // published on socket.io-request#/events#
    const REQ_SSE_ACK: &str = r#"{"uid":"abc123","requestId":"rqXOJr","type":6,"data":["sse-ack",{"q":true}]}"#;
    const REQ_SOCKETS_LEGACY: &str = r#"{"uid":"old1","requestId":"rq1","type":0,"rooms":["r1"]}"#;
    const REQ_JOIN_SID_LEGACY: &str = r#"{"uid":"old1","requestId":"rq2","type":2,"sid":"s1","room":"newroom"}"#;
    // published on socket.io-response#/events#
    const RESP_SOCKETS: &str = r#"{"requestId":"r0","sockets":[]}"#;
    // published on socket.io-response#/events#
    const RESP_ALL_ROOMS: &str = r#"{"requestId":"r1","rooms":[]}"#;
    // published on socket.io-response#/events#
    const RESP_FETCH: &str = r#"{"requestId":"r5","sockets":[]}"#;
    // published on socket.io-response#/events#
    const RESP_SSE: &str = r#"{"type":6,"requestId":"r6","data":{"pong":5}}"#;
    // published on socket.io-response#/events#
    const RESP_CLIENT_COUNT: &str = r#"{"type":8,"requestId":"r7","clientCount":0}"#;
    const RESP_BROADCAST_ACK: &str = "83a47479706509a9726571756573744964a27237a67061636b657492a26f6b01";
    const RESP_FETCH_ONE: &str = r#"{"requestId":"r5","sockets":[{"id":"sid1","handshake":{"headers":{},"query":{"EIO":"4"}},"rooms":["sid1","room1"],"data":{"user":"u"}}]}"#;
    const NO_NSP: &str = "93a47569643982a47479706502a46461746192a1780183a5726f6f6d7390a665786365707490a5666c61677380";
    /// notepack.encode of the feed event (see `template_event` in the generator) for several seqs.
    const TEMPLATES: &[(u64, &str)] = &[
        (
            0,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a373657100a974656e616e745f69",
                "64a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e676572",
                "207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d3237543132",
                "3a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e616e",
                "743a61636d65a665786365707490a5666c61677380",
            ),
        ),
        (
            42,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a37365712aa974656e616e745f69",
                "64a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e676572",
                "207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d3237543132",
                "3a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e616e",
                "743a61636d65a665786365707490a5666c61677380",
            ),
        ),
        (
            127,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a37365717fa974656e616e745f69",
                "64a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e676572",
                "207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d3237543132",
                "3a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e616e",
                "743a61636d65a665786365707490a5666c61677380",
            ),
        ),
        (
            128,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cc80a974656e616e745f",
                "6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e6765",
                "72207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d32375431",
                "323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e61",
                "6e743a61636d65a665786365707490a5666c61677380",
            ),
        ),
        (
            300,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cd012ca974656e616e74",
                "5f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e67",
                "6572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d323754",
                "31323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e",
                "616e743a61636d65a665786365707490a5666c61677380",
            ),
        ),
        (
            65535,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cdffffa974656e616e74",
                "5f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e67",
                "6572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d323754",
                "31323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e",
                "616e743a61636d65a665786365707490a5666c61677380",
            ),
        ),
        (
            70000,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571ce00011170a974656e61",
                "6e745f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f",
                "6e676572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d32",
                "375431323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74",
                "656e616e743a61636d65a665786365707490a5666c61677380",
            ),
        ),
        (
            4294967296,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cf0000000100000000a9",
                "74656e616e745f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d6573736167",
                "65206c6f6e676572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d",
                "31312d32375431323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d",
                "7391ab74656e616e743a61636d65a665786365707490a5666c61677380",
            ),
        ),
        (
            8589934592,
            concat!(
                "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
                "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cf0000000200000000a9",
                "74656e616e745f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d6573736167",
                "65206c6f6e676572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d",
                "31312d32375431323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d",
                "7391ab74656e616e743a61636d65a665786365707490a5666c61677380",
            ),
        ),
    ];
    const NUMBERS: &[(u64, &str)] = &[
        (0, "00"),
        (42, "2a"),
        (127, "7f"),
        (128, "cc80"),
        (255, "ccff"),
        (256, "cd0100"),
        (300, "cd012c"),
        (65535, "cdffff"),
        (65536, "ce00010000"),
        (70000, "ce00011170"),
        (4294967295, "ceffffffff"),
        (4294967296, "cf0000000100000000"),
        (8589934592, "cf0000000200000000"),
        (9007199254740991, "cf001fffffffffffff"),
    ];

    fn unhex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    fn ph(num: usize) -> Value {
        json!({"_placeholder": true, "num": num})
    }

    fn ev(data: &[u8]) -> Broadcast {
        decode_broadcast(data).expect("decodes")
    }

    /// Every fixture that must decode (as a broadcast or as a request).
    const BROADCASTS: &[&str] =
        &[EMITTER_ROOM, EMITTER_EXCEPT, EMITTER_MULTI, ADAPTER_ROOM_BIN, ADAPTER_EXCEPT, NO_NSP];

    #[test]
    fn channels_match_the_adapter() {
        let c = Channels::new(DEFAULT_KEY, "/events", "abc123");
        assert_eq!(c.broadcast_prefix, "socket.io#/events#");
        assert_eq!(c.request, "socket.io-request#/events#");
        assert_eq!(c.response, "socket.io-response#/events#");
        assert_eq!(c.specific_response, "socket.io-response#/events#abc123#");
        assert_eq!(c.response_to("old1"), "socket.io-response#/events#old1#");
        assert_eq!(c.pattern(), "socket.io#/events#*");
        assert_eq!(c.broadcast(&["room1"]), "socket.io#/events#room1#");
        assert_eq!(c.broadcast(&["room1", "room1"]), "socket.io#/events#room1#");
        assert_eq!(c.broadcast(&["a", "b"]), "socket.io#/events#");
        assert_eq!(c.broadcast::<&str>(&[]), "socket.io#/events#");
        assert_eq!(c.room_of("socket.io#/events#"), Some(""));
        assert_eq!(c.room_of("socket.io#/events#room1#"), Some("room1"));
        assert_eq!(c.room_of("socket.io#/other#"), None);
    }

    #[test]
    fn emitter_broadcast_to_one_room_with_binary() {
        let b = ev(&unhex(EMITTER_ROOM));
        assert_eq!(b.uid, EMITTER_UID);
        assert_eq!(b.packet_type, 2);
        assert_eq!(b.nsp, "/events");
        // `u: undefined` was skipped by notepack.
        assert_eq!(b.data, json!(["ev", "str", 42, {"nested": {"a": [1, 2.5, null], "b": true}}, ph(0)]));
        assert_eq!(b.attachments, vec![Bytes::from_static(&[1, 2, 3])]);
        assert_eq!(b.rooms, vec!["room1"]);
        assert!(b.except.is_empty());
        assert_eq!(b.flags, Flags::default());
        assert!(event_from_broadcast(&b).is_none());
    }

    #[test]
    fn emitter_broadcast_to_all_with_except_and_volatile() {
        let b = ev(&unhex(EMITTER_EXCEPT));
        assert_eq!(b.data, json!(["hello", -1, [null, "x"]]));
        assert!(b.rooms.is_empty());
        assert_eq!(b.except, vec!["r1", "r2"]);
        assert_eq!(b.flags, Flags { volatile: true, ..Flags::default() });
    }

    #[test]
    fn emitter_broadcast_with_date_float_negative_and_big_int() {
        let b = ev(&unhex(EMITTER_MULTI));
        assert_eq!(b.data, json!(["multi", "2024-01-02T03:04:05.678Z", 1.5, -300, 1_099_511_627_776_u64]));
        assert_eq!(b.rooms, vec!["a", "b"]);
        assert_eq!(b.flags.compress, Some(false));
        assert!(b.attachments.is_empty());
    }

    #[test]
    fn adapter_broadcast_with_binary_roundtrips_byte_exact() {
        let bytes = unhex(ADAPTER_ROOM_BIN);
        let b = ev(&bytes);
        assert_eq!(b.uid, "abc123");
        assert_eq!(b.data, json!(["bin", ph(0), {"x": ph(1), "y": [ph(2)]}]));
        assert_eq!(b.attachments, vec![Bytes::from_static(b"hi"), Bytes::new(), Bytes::from_static(&[255])]);
        let again = encode_broadcast(&b.uid, &b.nsp, &b.data, &b.attachments, &b.rooms, &b.except, &b.flags);
        assert_eq!(again.expect("encodes"), bytes);
    }

    #[test]
    fn adapter_broadcast_with_flags_and_integer_keys_roundtrips_byte_exact() {
        let bytes = unhex(ADAPTER_EXCEPT);
        let b = ev(&bytes);
        // JS enumerates integer-like keys first: `{ "2": "two", "b": 1, "1": "one" }` was sent as 1, 2, b.
        assert_eq!(serde_json::to_string(&b.data).expect("json"), r#"["all",{"1":"one","2":"two","b":1}]"#);
        assert_eq!(b.except, vec!["a"]);
        assert_eq!(b.flags, Flags { volatile: true, compress: Some(false), ..Flags::default() });
        let again = encode_broadcast(&b.uid, &b.nsp, &b.data, &b.attachments, &b.rooms, &b.except, &b.flags);
        assert_eq!(again.expect("encodes"), bytes);
    }

    #[test]
    fn packet_without_nsp_is_root_namespace() {
        let b = ev(&unhex(NO_NSP));
        assert_eq!(b.nsp, "/");
        assert_eq!(b.data, json!(["x", 1]));
    }

    #[test]
    fn msgpack_uint_matches_notepack_and_cmsgpack() {
        for &(n, hex) in NUMBERS {
            assert_eq!(msgpack_uint(n), unhex(hex), "{n}");
        }
        assert_eq!(msgpack_uint(u64::MAX), unhex("cfffffffffffffffff"));
    }

    fn template() -> EventTemplate {
        event_template(
            STORE_UID,
            "/events",
            "tenant:acme",
            &EventFields {
                id: "0b7c6d1e-8f00-4e2b-9a4c-1d2e3f405162",
                tenant_id: "acme",
                message: "héllo wörld — a message longer than thirty-one bytes ✓",
                timestamp: "2026-11-27T12:00:00.123Z",
                author: "alice",
            },
        )
    }

    #[test]
    fn feed_event_template_equals_notepack_for_every_seq_size() {
        let t = template();
        assert!(t.head.ends_with(b"\xa3seq"));
        for &(seq, hex) in TEMPLATES {
            let expected = unhex(hex);
            let mut spliced = t.head.clone();
            spliced.extend_from_slice(&msgpack_uint(seq));
            spliced.extend_from_slice(&t.tail);
            assert_eq!(spliced, expected, "seq {seq}");
            assert_eq!(t.render(seq), expected, "seq {seq}");

            let b = ev(&expected);
            assert_eq!(b.nsp, "/events");
            assert_eq!(b.rooms, vec!["tenant:acme"]);
            let (got_seq, event) = event_from_broadcast(&b).expect("feed event");
            assert_eq!(got_seq, seq);
            let keys: Vec<&str> = event.keys().map(String::as_str).collect();
            assert_eq!(keys, ["id", "seq", "tenant_id", "message", "timestamp", "author"]);
            assert_eq!(event["message"], "héllo wörld — a message longer than thirty-one bytes ✓");
        }
        // Seqs of every encoding size decode back.
        for seq in [0, 1, 127, 128, 255, 256, 65_535, 65_536, u64::from(u32::MAX), 1 << 40, u64::MAX] {
            assert_eq!(event_from_broadcast(&ev(&t.render(seq))).map(|(s, _)| s), Some(seq));
        }
    }

    #[test]
    fn feed_event_needs_store_uid_and_shape() {
        let mut b = ev(&template().render(7));
        assert!(event_from_broadcast(&b).is_some());
        b.uid = "abc123".into();
        assert!(event_from_broadcast(&b).is_none());
        b.uid = "eventfeed-storex".into();
        assert!(event_from_broadcast(&b).is_none());
        b.uid = store_uid("staging");
        assert!(event_from_broadcast(&b).is_some(), "a prefixed store uid");
        b.uid = STORE_UID.into();
        b.data = json!(["event_created", {"seq": "7"}]);
        assert!(event_from_broadcast(&b).is_none());
        b.data = json!(["other", {"seq": 7}]);
        assert!(event_from_broadcast(&b).is_none());
    }

    #[test]
    fn encode_broadcast_rejects_bad_placeholders() {
        let none: &[&str] = &[];
        for data in [
            json!(["x", ph(1)]),
            json!(["x", {"_placeholder": true, "num": "0"}]),
            json!(["x", {"_placeholder": true}]),
        ] {
            let r = encode_broadcast("u", "/", &data, &[Bytes::from_static(b"a")], none, none, &Flags::default());
            assert!(matches!(r, Err(AdapterError::Placeholder(_))), "{data}");
        }
        // `_placeholder` not `true`: an ordinary object.
        let data = json!(["x", {"_placeholder": 1, "num": 0}]);
        let bytes = encode_broadcast("u", "/", &data, &[], none, none, &Flags::default()).expect("encodes");
        assert_eq!(ev(&bytes).data, data);
        // Deep JSON is refused instead of overflowing the stack.
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let r = encode_broadcast("u", "/", &deep, &[], none, none, &Flags::default());
        assert_eq!(r, Err(AdapterError::TooDeep));
    }

    #[test]
    fn encode_broadcast_numbers_like_notepack() {
        let none: &[&str] = &[];
        let data = json!(["n", 0.5, 2.0, -0.0, -33, -200, -40_000, -3_000_000_000_i64]);
        let bytes = encode_broadcast("u", "/", &data, &[], none, none, &Flags::default()).expect("encodes");
        // notepack: 0.5 -> cb, 2.0 -> 02, -0 -> 00, -33 -> d0 df, -200 -> d1 ff38, -40000 -> d2, -3e9 -> d3.
        let expected = "cb3fe000000000000002".to_owned() + "00d0dfd1ff38d2ffff63c0d3ffffffff4d2fa200";
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(hex.contains(&expected), "{hex}");
        assert_eq!(ev(&bytes).data, json!(["n", 0.5, 2, 0, -33, -200, -40_000, -3_000_000_000_i64]));
    }

    // --- requests -----------------------------------------------------------------------------------------------

    fn req(msg: &[u8]) -> (Option<String>, Request) {
        decode_request(msg).expect("request decodes")
    }

    fn sel(rooms: &[&str], except: &[&str]) -> Selector {
        Selector {
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            except: except.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn adapter_requests() {
        let abc = Some("abc123".to_owned());
        assert_eq!(
            req(REQ_FETCH.as_bytes()),
            (abc.clone(), Request::RemoteFetch { request_id: "qYACuk".into(), selector: sel(&[], &[]) })
        );
        assert_eq!(req(REQ_ALL_ROOMS.as_bytes()), (abc.clone(), Request::AllRooms { request_id: "smuiDg".into() }));
        assert_eq!(
            req(REQ_JOIN.as_bytes()),
            (abc.clone(), Request::RemoteJoin { selector: sel(&["r"], &[]), rooms: vec!["j".into()] })
        );
        assert_eq!(
            req(REQ_LEAVE.as_bytes()),
            (abc.clone(), Request::RemoteLeave { selector: sel(&[], &["e"]), rooms: vec!["l1".into(), "l2".into()] })
        );
        assert_eq!(
            req(REQ_DISCONNECT.as_bytes()),
            (abc.clone(), Request::RemoteDisconnect { selector: sel(&[], &[]), close: false })
        );
        assert_eq!(
            req(REQ_SSE.as_bytes()),
            (
                abc.clone(),
                Request::ServerSideEmit { request_id: None, data: json!(["sse", 1, "two"]), attachments: vec![] }
            )
        );
        assert_eq!(
            req(REQ_SSE_ACK.as_bytes()),
            (
                abc.clone(),
                Request::ServerSideEmit {
                    request_id: Some("rqXOJr".into()),
                    data: json!(["sse-ack", {"q": true}]),
                    attachments: vec![]
                }
            )
        );
    }

    #[test]
    fn legacy_requests() {
        let old = Some("old1".to_owned());
        assert_eq!(
            req(REQ_SOCKETS_LEGACY.as_bytes()),
            (old.clone(), Request::Sockets { request_id: "rq1".into(), rooms: vec!["r1".into()] })
        );
        assert_eq!(
            req(REQ_JOIN_SID_LEGACY.as_bytes()),
            (
                old.clone(),
                Request::RemoteJoinSocket { request_id: "rq2".into(), sid: "s1".into(), room: "newroom".into() }
            )
        );
        let leave = br#"{"uid":"old1","requestId":"rq3","type":3,"sid":"s1","room":"r"}"#;
        assert_eq!(
            req(leave).1,
            Request::RemoteLeaveSocket { request_id: "rq3".into(), sid: "s1".into(), room: "r".into() }
        );
        let disc = br#"{"uid":"old1","requestId":"rq4","type":4,"sid":"s1","close":true}"#;
        assert_eq!(
            req(disc).1,
            Request::RemoteDisconnectSocket { request_id: "rq4".into(), sid: "s1".into(), close: true }
        );
        assert_eq!(req(br#"{"uid":"x","type":42}"#).1, Request::Other(42));
    }

    #[test]
    fn emitter_requests_have_no_uid() {
        assert_eq!(
            req(EMITTER_JOIN.as_bytes()),
            (None, Request::RemoteJoin { selector: sel(&["r"], &[]), rooms: vec!["x".into(), "y".into()] })
        );
        assert_eq!(
            req(EMITTER_LEAVE.as_bytes()),
            (None, Request::RemoteLeave { selector: sel(&[], &[]), rooms: vec!["x".into()] })
        );
        assert_eq!(
            req(EMITTER_DISCONNECT.as_bytes()),
            (None, Request::RemoteDisconnect { selector: sel(&[], &["r"]), close: true })
        );
        assert_eq!(
            req(EMITTER_SSE.as_bytes()),
            (
                Some(EMITTER_UID.to_owned()),
                Request::ServerSideEmit { request_id: None, data: json!(["hi", {"a": 1}]), attachments: vec![] }
            )
        );
    }

    #[test]
    fn msgpack_broadcast_with_ack_request() {
        let (uid, r) = req(&unhex(ADAPTER_BROADCAST_ACK_REQ));
        assert_eq!(uid.as_deref(), Some("abc123"));
        let Request::BroadcastWithAck { request_id, broadcast } = r else { panic!("not a broadcast: {r:?}") };
        assert_eq!(request_id, "SoIZYr");
        assert_eq!(broadcast.uid, "abc123");
        assert_eq!(broadcast.nsp, "/events");
        assert_eq!(broadcast.data, json!(["ack-me", 7]));
        assert_eq!(broadcast.flags, Flags { timeout: Some(1000), ..Flags::default() });
    }

    // --- responses ----------------------------------------------------------------------------------------------

    #[test]
    fn responses_are_byte_exact() {
        assert_eq!(sockets_response("r0", &[]), RESP_SOCKETS.as_bytes());
        assert_eq!(all_rooms_response("r1", &[]), RESP_ALL_ROOMS.as_bytes());
        assert_eq!(fetch_response("r5", &[]), RESP_FETCH.as_bytes());
        let one = FetchedSocket {
            id: "sid1".into(),
            handshake: json!({"headers": {}, "query": {"EIO": "4"}}),
            rooms: vec!["sid1".into(), "room1".into()],
            data: json!({"user": "u"}),
        };
        assert_eq!(fetch_response("r5", &[one]), RESP_FETCH_ONE.as_bytes());
        assert_eq!(server_side_emit_response("r6", Some(&json!({"pong": 5}))), RESP_SSE.as_bytes());
        assert_eq!(server_side_emit_response("r6", None), br#"{"type":6,"requestId":"r6"}"#);
        assert_eq!(broadcast_client_count_response("r7", 0), RESP_CLIENT_COUNT.as_bytes());
        assert_eq!(broadcast_ack_response("r7", Some(&json!(["ok", 1])), &[]), Ok(unhex(RESP_BROADCAST_ACK)));
        assert_eq!(remote_ack_response("rq2"), br#"{"requestId":"rq2"}"#);
        assert_eq!(
            sockets_response("x", &["a\"b".into(), "é\n".into()]),
            "{\"requestId\":\"x\",\"sockets\":[\"a\\\"b\",\"é\\n\"]}".as_bytes()
        );
    }

    // --- msgpack → JSON details ---------------------------------------------------------------------------------

    /// Wraps the msgpack value `arg_hex` as the only argument of an event from uid "u".
    fn with_arg(arg_hex: &str) -> Result<Broadcast, AdapterError> {
        let mut msg = unhex("93a17582a474797065 02 a464617461 92a178".replace(' ', "").as_str());
        msg.extend(unhex(arg_hex));
        msg.extend(unhex("83a5726f6f6d7390a665786365707490a5666c61677380"));
        decode_broadcast(&msg)
    }

    fn arg(arg_hex: &str) -> (Value, Vec<Bytes>) {
        let b = with_arg(arg_hex).expect("decodes");
        (b.data[1].clone(), b.attachments)
    }

    #[test]
    fn scalars() {
        assert_eq!(arg("cb7ff8000000000000").0, Value::Null); // NaN
        assert_eq!(arg("cb7ff0000000000000").0, Value::Null); // Infinity
        assert_eq!(arg("cb8000000000000000").0, json!(0)); // -0
        assert_eq!(arg("cb3ff0000000000000").0, json!(1)); // 1.0 prints as 1
        assert_eq!(arg("ca3f000000").0, json!(0.5)); // float32
        assert_eq!(arg("cfffffffffffffffff").0, json!(u64::MAX)); // exact, Node would round
        assert_eq!(arg("d38000000000000000").0, json!(i64::MIN));
        assert_eq!(arg("e0").0, json!(-32));
        assert_eq!(arg("c0").0, Value::Null);
        assert_eq!(arg("a3ff6869").0, json!("\u{fffd}hi")); // invalid UTF-8 replaced
    }

    #[test]
    fn dates_and_exts() {
        assert_eq!(arg("d6ff00000000").0, json!("1970-01-01T00:00:00.000Z")); // timestamp 32
        assert_eq!(arg("c70cff000000000000000000000000").0, json!("1970-01-01T00:00:00.000Z")); // timestamp 96
        assert_eq!(arg("c70cff3b8b87c0ffffffffffffffff").0, json!("1969-12-31T23:59:59.999Z")); // -1 s + 999 ms
        assert_eq!(arg("c70cff000000007fffffffffffffff").0, Value::Null); // outside the Date range
        assert_eq!(arg("d700000000e8d4a51000").0, json!("2001-09-09T01:46:40.000Z")); // legacy Date, 1e12 ms
        assert_eq!(arg("c70cff00000000fffffff184aa5080").0, json!("-000001-01-01T00:00:00.000Z"));
        // Legacy ArrayBuffer (ext type 0) is binary.
        assert_eq!(arg("c70200abcd"), (ph(0), vec![Bytes::from_static(&[0xab, 0xcd])]));
        // Other exts are [type, <bin>].
        assert_eq!(arg("d50701ff"), (json!([7, ph(0)]), vec![Bytes::from_static(&[1, 255])]));
        // notepack's legacy `undefined`: null in arrays, dropped in maps.
        assert_eq!(arg("92d40000a178").0, json!([null, "x"]));
        assert_eq!(arg("82a161d40000a16201").0, json!({"b": 1}));
        // Timestamp 96 with the wrong length is refused.
        assert!(with_arg("c70bff0000000000000000000000").is_err());
    }

    #[test]
    fn map_keys_follow_js_object_semantics() {
        // {"b": 1, "10": 2, "2": 3, "02": 4, "b": 5, "__proto__": {}, 7: 6, true: 7, nil: 8}
        let (v, _) = arg(concat!(
            "89",
            "a16201",
            "a2313002",
            "a13203",
            "a2303204",
            "a16205",
            "a95f5f70726f746f5f5f80",
            "0706",
            "c307",
            "c008"
        ));
        assert_eq!(serde_json::to_string(&v).expect("json"), r#"{"2":3,"7":6,"10":2,"b":5,"02":4,"true":7,"null":8}"#);
        // Non-scalar keys are refused.
        assert!(with_arg("819000").is_err());
        assert!(with_arg("81c40000").is_err());
        // Placeholders follow the final (JS) key order.
        let (v, atts) = arg("82a162c40162a131c40131");
        assert_eq!(v, json!({"1": ph(0), "b": ph(1)}));
        assert_eq!(atts, vec![Bytes::from_static(b"1"), Bytes::from_static(b"b")]);
    }

    #[test]
    fn json_request_keys_and_depth() {
        // JSON.parse keeps `__proto__` as an own property; integer keys still come first.
        let (_, r) = req(br#"{"type":6,"data":["e",{"z":1,"5":2,"__proto__":3}]}"#);
        let Request::ServerSideEmit { data, .. } = r else { panic!("{r:?}") };
        assert_eq!(serde_json::to_string(&data).expect("json"), r#"["e",{"5":2,"z":1,"__proto__":3}]"#);
        // A msgpack SERVER_SIDE_EMIT with binary keeps it as attachments.
        let msg = unhex("83a3756964a175a474797065 06 a464617461 92a165c40101".replace(' ', "").as_str());
        let (_, r) = req(&msg);
        assert_eq!(
            r,
            Request::ServerSideEmit {
                request_id: None,
                data: json!(["e", ph(0)]),
                attachments: vec![Bytes::from_static(&[1])]
            }
        );
    }

    // --- malformed input ----------------------------------------------------------------------------------------

    #[test]
    fn every_truncation_is_an_error() {
        for hex in BROADCASTS.iter().chain([ADAPTER_BROADCAST_ACK_REQ].iter()).chain(TEMPLATES.iter().map(|t| &t.1)) {
            let bytes = unhex(hex);
            for len in 0..bytes.len() {
                assert!(decode_broadcast(&bytes[..len]).is_err(), "{hex} truncated at {len}");
                assert!(decode_request(&bytes[..len]).is_err(), "{hex} truncated at {len}");
            }
        }
        for json in [REQ_FETCH, REQ_JOIN, REQ_SSE_ACK, EMITTER_DISCONNECT] {
            for len in 0..json.len() {
                assert!(decode_request(&json.as_bytes()[..len]).is_err(), "{json} truncated at {len}");
            }
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let bad = |hex: &str| decode_broadcast(&unhex(&hex.replace(' ', "")));
        // Top level not an array / too short.
        assert!(matches!(bad("80"), Err(AdapterError::Malformed(_))));
        assert!(matches!(bad("92a17580"), Err(AdapterError::Malformed(_))));
        // uid not a string.
        assert!(matches!(bad("93 01 82a474797065 02 a464617461 91a178 80"), Err(AdapterError::Malformed(_))));
        // packet missing data / data not an array / missing type / packet not a map / nsp not a string.
        assert!(matches!(bad("93 a175 81a474797065 02 80"), Err(AdapterError::Malformed(_))));
        assert!(matches!(bad("93 a175 82a474797065 02 a464617461 a178 80"), Err(AdapterError::Malformed(_))));
        assert!(matches!(bad("93 a175 81a464617461 91a178 80"), Err(AdapterError::Malformed(_))));
        assert!(matches!(bad("93 a175 c0 80"), Err(AdapterError::Malformed(_))));
        assert!(bad("93 a175 83a474797065 02 a464617461 91a178 a36e7370 01 80").is_err());
        // opts not a map, rooms not an array, a room that is a map.
        assert!(matches!(bad("93 a175 82a474797065 02 a464617461 91a178 c0"), Err(AdapterError::Malformed(_))));
        assert!(bad("93 a175 82a474797065 02 a464617461 91a178 81a5726f6f6d73 a178").is_err());
        assert!(bad("93 a175 82a474797065 02 a464617461 91a178 81a5726f6f6d73 9180").is_err());
        // Numeric rooms are stringified, unknown flags ignored, null rooms = none.
        let ok = bad("93 a175 82a474797065 02 a464617461 91a178 82a5726f6f6d73 922a2a a5666c616773 81a178c3");
        assert_eq!(ok.expect("decodes").rooms, vec!["42"]);
        // Reserved marker and trailing bytes.
        assert_eq!(bad("c1"), Err(AdapterError::InvalidMarker(0xc1)));
        let mut trailing = unhex(NO_NSP);
        trailing.push(0);
        assert_eq!(decode_broadcast(&trailing), Err(AdapterError::TrailingBytes(1)));
        assert_eq!(decode_broadcast(&[]), Err(AdapterError::Truncated));
    }

    #[test]
    fn huge_declared_lengths_are_errors_without_allocating() {
        for hex in [
            "ddffffffff",
            "dfffffffff",
            "dbffffffff61",
            "c6ffffffff00",
            "c9ffffffff0500",
            "dcffff",
            "deffff",
            "93a175dbffffffff",
            "93a17581a464617461ddffffffff",
        ] {
            assert_eq!(decode_broadcast(&unhex(hex)), Err(AdapterError::Truncated), "{hex}");
            assert!(decode_request(&unhex(hex)).is_err(), "{hex}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error() {
        // 10,000 nested arrays inside the data of an otherwise valid broadcast.
        let mut msg = unhex("93a17582a474797065 02 a464617461 92a178".replace(' ', "").as_str());
        msg.extend(std::iter::repeat_n(0x91, 10_000));
        msg.push(0xc0);
        msg.extend(unhex("80"));
        assert_eq!(decode_broadcast(&msg), Err(AdapterError::TooDeep));
        assert_eq!(decode_request(&msg), Err(AdapterError::TooDeep));
        // Same with maps.
        let mut msg = vec![0x91];
        for _ in 0..10_000 {
            msg.extend([0x81, 0xa1, b'k']);
        }
        msg.push(0xc0);
        assert_eq!(decode_broadcast(&msg), Err(AdapterError::TooDeep));
        // Deep JSON requests.
        let deep = format!(r#"{{"type":6,"data":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(decode_request(deep.as_bytes()).is_err());
        let deep = format!(r#"{{"type":6,"data":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert_eq!(decode_request(deep.as_bytes()), Err(AdapterError::TooDeep));
        // At the limit it is fine: MAX_DEPTH levels including the top-level array.
        let mut ok = unhex("93a17582a474797065 02 a464617461".replace(' ', "").as_str());
        ok.extend(std::iter::repeat_n(0x91, MAX_DEPTH - 2));
        ok.extend(unhex("c080"));
        assert!(decode_broadcast(&ok).is_ok());
    }

    #[test]
    fn malformed_requests_are_errors() {
        for msg in [
            &b"{"[..],
            b"{\"type\":\"1\",\"requestId\":\"x\"}",
            b"{\"uid\":\"u\"}",
            b"{\"type\":1}",
            b"{\"type\":-1,\"requestId\":\"x\"}",
            b"{\"type\":0,\"requestId\":5}",
            b"{\"type\":1,\"uid\":5,\"requestId\":\"x\"}",
            b"{\"type\":5,\"requestId\":\"x\"}",
            b"{\"type\":5,\"requestId\":\"x\",\"opts\":[]}",
            b"{\"type\":2,\"requestId\":\"x\"}",
            b"{\"type\":2,\"opts\":1,\"rooms\":[\"a\"]}",
            b"{\"type\":6,\"data\":\"x\"}",
            b"{\"type\":6}",
            b"{\"type\":7,\"requestId\":\"x\",\"opts\":{}}",
            b"{\"type\":1,\"requestId\":\"x\"} x",
            b"[1]",
            b"\x91\x01",
            b"",
        ] {
            assert!(decode_request(msg).is_err(), "{}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn mutated_fixtures_never_panic() {
        // A tiny deterministic fuzzer: flip/replace bytes of every fixture and decode.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let fixtures: Vec<Vec<u8>> = BROADCASTS
            .iter()
            .chain([ADAPTER_BROADCAST_ACK_REQ, RESP_BROADCAST_ACK].iter())
            .map(|h| unhex(h))
            .chain([REQ_FETCH, REQ_SSE_ACK, REQ_JOIN_SID_LEGACY].iter().map(|s| s.as_bytes().to_vec()))
            .collect();
        for _ in 0..20_000 {
            let mut msg = fixtures[(next() % fixtures.len() as u64) as usize].clone();
            for _ in 0..=(next() % 4) {
                let i = (next() % msg.len() as u64) as usize;
                msg[i] = match next() % 3 {
                    0 => msg[i] ^ (1 << (next() % 8)),
                    1 => [0xc1, 0xdb, 0xdd, 0xdf, 0xc7, 0xd7, 0xff, 0x00][(next() % 8) as usize],
                    _ => next() as u8,
                };
            }
            let _ = decode_broadcast(&msg);
            let _ = decode_request(&msg);
        }
    }
}
