//! Wire format of the Node packages `@socket.io/redis-adapter` v8 (checked against 8.3.0) and
//! `@socket.io/redis-emitter` v5 (checked against 5.1.0), so that eventfeed and Node Socket.IO servers sharing one
//! Redis can broadcast to each other, and ask each other things (fetch sockets, make them join rooms, ...).
//!
//! This module is pure encoding/decoding: it never talks to Redis itself, and takes whatever randomness it needs
//! ([`request_id`]) as an argument. Every message can be both decoded and encoded:
//!
//! | message | decode | encode |
//! |---|---|---|
//! | broadcast | [`decode_broadcast`] | [`encode_broadcast`], or [`event_template`] for the store's Lua script |
//! | request | [`decode_request`] | [`encode_request`] |
//! | response | [`decode_response`] | [`encode_response`] (and the `*_response` shorthands) |
//!
//! The encoders write exactly the bytes the Node adapter publishes for the same message (checked against vectors
//! captured from Node: `protocol/tests/vectors/`), and what they write decodes to the value encoded.
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
//! msgpack (only `BROADCAST`, i.e. broadcast-with-ack, is msgpack in 8.3.0; our encoders also use msgpack for a
//! `SERVER_SIDE_EMIT` request or answer that carries binary, which JSON cannot). See [`Request`] for every type and
//! which [`Response`] answers it; [`encode_request`] for the bytes of each. A requester makes its request id with
//! [`request_id`], counts the servers that will answer with `PUBSUB NUMSUB` on the request channel, and matches the
//! answers by [`Response::request_id`].
//!
//! Responses are published on the common response channel or on the requester's own one; they are JSON except
//! `BROADCAST_ACK`. Node writes no `type` in most of them (the requester knows what it asked), so
//! [`decode_response`] reads them by their keys: see there for the rule.
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
//! * map keys: strings as is; numbers, booleans and nil are stringified as JS `String(key)` does (floats with
//!   [`json::number_to_string`](crate::json::number_to_string), so `1e21` is `"1e+21"`); array/map/bin/ext keys are
//!   rejected with [`AdapterError::Malformed`]. Rooms that are numbers are stringified the same way.
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
//!
//! # Layout
//!
//! This module's own file holds the constants, the error type and the channel names; `broadcast` the broadcasts
//! and the stored feed events' template, `request` the requests, `response` the responses; `msgpack` the value
//! tree every decoder goes through (msgpack and JSON readers, the msgpack → JSON mapping, the msgpack writer).
//! All of their public items are re-exported here.

mod broadcast;
mod msgpack;
mod request;
mod response;

#[cfg(test)]
mod tests;

pub use broadcast::{
    Broadcast, EventFields, EventTemplate, Flags, StoredEventMessage, decode_broadcast, encode_broadcast,
    event_from_broadcast, event_template, msgpack_uint, store_uid, stored_event_message,
};
pub use request::{REQUEST_ID_LEN, Request, Selector, decode_request, encode_request, request_id};
pub use response::{
    FetchedSocket, Response, all_rooms_response, broadcast_ack_response, broadcast_client_count_response,
    decode_response, encode_response, fetch_response, remote_ack_response, server_side_emit_response, sockets_response,
};

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

pub(crate) fn malformed(what: impl Into<String>) -> AdapterError {
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
