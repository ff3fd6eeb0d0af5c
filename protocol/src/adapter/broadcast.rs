//! Broadcasts (`[uid, packet, opts]` in msgpack on the broadcast channels), and the template of the stored feed
//! events the store's Lua script publishes as broadcasts.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::msgpack::{
    Node, decode_msgpack, string_list, take, to_json, truthy, uint_field, w_array_header, w_bool, w_json, w_map_header,
    w_str, w_uint,
};
use super::{AdapterError, FEED_EVENT_NAME, PACKET_TYPE_EVENT, STORE_UID, malformed};

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

/// A broadcast: from another server (or the emitter), decoded, or to publish.
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

/// `opts.flags`: JS truthiness for the booleans, a non-negative number for `timeout`; anything else ignored.
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

/// A broadcast from the decoded `packet` and `opts` (of a broadcast message, or of a `BROADCAST` request).
pub(super) fn broadcast_from_nodes(uid: String, packet: Node, opts: Node) -> Result<Broadcast, AdapterError> {
    let Node::Map(mut p) = packet else {
        return Err(malformed("packet is not an object"));
    };
    let packet_type = uint_field(take(&mut p, "type"), "packet type")?;
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

/// Encodes a broadcast exactly as `RedisAdapter.broadcast` does: `[uid, {type, data, nsp}, {rooms, except,
/// flags}]`, the placeholders of `data` turned back into msgpack bin (from `attachments`). `flags` keys are written
/// in the order `volatile, compress, local, timeout`, and only when set. Publish it on
/// [`Channels::broadcast`](super::Channels::broadcast)`(rooms)`.
///
/// [`decode_broadcast`] gives `b` back when `b` is in the form the decoder produces: placeholders numbered in
/// depth-first order, each attachment referenced once, no room listed twice.
///
/// Fails on `data` that is not an array, on a placeholder whose `num` is not an index of `attachments`, or on
/// nesting deeper than [`MAX_DEPTH`](super::MAX_DEPTH) (counted from the top of the message, as the decoder does).
pub fn encode_broadcast(b: &Broadcast) -> Result<Vec<u8>, AdapterError> {
    let mut out = Vec::with_capacity(64);
    w_array_header(&mut out, 3);
    w_str(&mut out, &b.uid);
    w_packet(&mut out, b, 1)?;
    w_opts(&mut out, &b.rooms, &b.except, &b.flags);
    Ok(out)
}

/// The packet `{type, data, nsp}` of `b`, a map at nesting `depth` of its message.
pub(super) fn w_packet(out: &mut Vec<u8>, b: &Broadcast, depth: usize) -> Result<(), AdapterError> {
    if !b.data.is_array() {
        return Err(malformed("packet data is not an array"));
    }
    w_map_header(out, 3);
    w_str(out, "type");
    w_uint(out, b.packet_type);
    w_str(out, "data");
    w_json(out, &b.data, &b.attachments, depth + 1)?;
    w_str(out, "nsp");
    w_str(out, &b.nsp);
    Ok(())
}

/// The broadcast options `{rooms, except, flags}`, in the adapter's key order.
pub(super) fn w_opts<R: AsRef<str>, E: AsRef<str>>(out: &mut Vec<u8>, rooms: &[R], except: &[E], flags: &Flags) {
    w_map_header(out, 3);
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

// ---------------------------------------------------------------------------------------------------------------
// Stored feed events
// ---------------------------------------------------------------------------------------------------------------

/// The msgpack bytes of `[uid, {type: 2, data: ["event_created", event], nsp}, {rooms: [room], except: [],
/// flags: {}}]` split around the value of the event's `seq` field: `head` ends right after the msgpack key `"seq"`;
/// the Lua script publishes `head .. cmsgpack.pack(seq) .. tail` on [`Channels::broadcast`](super::Channels::broadcast)`(&[room])`.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    w_opts(&mut tail, &[room], &[] as &[&str], &Flags::default());
    EventTemplate { head, tail }
}

/// A stored feed event read straight from its broadcast message, borrowed: what [`event_template`] writes, with
/// the `seq` the script spliced in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEventMessage<'a> {
    /// The publisher's uid (a store's: [`store_uid`]).
    pub uid: &'a str,
    /// The packet's namespace.
    pub nsp: &'a str,
    /// The one room it goes to.
    pub room: &'a str,
    /// The event's `seq`.
    pub seq: u64,
    /// The event's fields, as strings.
    pub fields: EventFields<'a>,
}

impl StoredEventMessage<'_> {
    /// The event's JSON as the general path writes it (`serde_json::to_string` of [`event_from_broadcast`]'s
    /// object): `{"id":…,"seq":…,"tenant_id":…,"message":…,"timestamp":…,"author":…}`, strings escaped by serde_json.
    pub fn json(&self) -> String {
        use std::io::Write as _;
        let EventFields { id, tenant_id, message, timestamp, author } = self.fields;
        let mut out =
            Vec::with_capacity(96 + id.len() + tenant_id.len() + message.len() + timestamp.len() + author.len());
        let field = |out: &mut Vec<u8>, key: &[u8], value: &str| {
            out.extend_from_slice(key);
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
        };
        field(&mut out, b"{\"id\":", id);
        // Writing into a Vec cannot fail.
        let _ = write!(out, ",\"seq\":{}", self.seq);
        field(&mut out, b",\"tenant_id\":", tenant_id);
        field(&mut out, b",\"message\":", message);
        field(&mut out, b",\"timestamp\":", timestamp);
        field(&mut out, b",\"author\":", author);
        out.push(b'}');
        // Only UTF-8 went in: the strings are `&str`, the rest ASCII.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Reads a stored feed event straight from a broadcast `msg` when it has exactly the layout [`event_template`]
/// writes (keys in that order, valid UTF-8, no trailing bytes), without decoding it into a tree. Anything else —
/// another server's broadcast, or a stored event in another layout — is `None`: [`decode_broadcast`] it.
pub fn stored_event_message(msg: &[u8]) -> Option<StoredEventMessage<'_>> {
    let mut r = Slice(msg);
    r.tag(&[0x93])?;
    let uid = r.str()?;
    r.tag(&[0x83])?;
    r.key("type")?;
    (r.uint()? == PACKET_TYPE_EVENT).then_some(())?;
    r.key("data")?;
    r.tag(&[0x92])?;
    r.key(FEED_EVENT_NAME)?;
    r.tag(&[0x86])?;
    let id = r.str_field("id")?;
    r.key("seq")?;
    let seq = r.uint()?;
    let tenant_id = r.str_field("tenant_id")?;
    let message = r.str_field("message")?;
    let timestamp = r.str_field("timestamp")?;
    let author = r.str_field("author")?;
    let nsp = r.str_field("nsp")?;
    r.tag(&[0x83])?;
    r.key("rooms")?;
    r.tag(&[0x91])?;
    let room = r.str()?;
    r.key("except")?;
    r.tag(&[0x90])?;
    r.key("flags")?;
    r.tag(&[0x80])?;
    r.0.is_empty().then_some(())?;
    Some(StoredEventMessage { uid, nsp, room, seq, fields: EventFields { id, tenant_id, message, timestamp, author } })
}

/// The unread rest of a message, for [`stored_event_message`].
struct Slice<'a>(&'a [u8]);

impl<'a> Slice<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn tag(&mut self, tag: &[u8]) -> Option<()> {
        (self.take(tag.len())? == tag).then_some(())
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = match *self.take(1)?.first()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        std::str::from_utf8(self.take(usize::try_from(len).ok()?)?).ok()
    }

    fn key(&mut self, key: &str) -> Option<()> {
        (self.str()? == key).then_some(())
    }

    /// The string value of the map entry `key`.
    fn str_field(&mut self, key: &str) -> Option<&'a str> {
        self.key(key)?;
        self.str()
    }

    fn uint(&mut self) -> Option<u64> {
        match *self.take(1)?.first()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }
}

/// The smallest msgpack encoding of a non-negative integer: positive fixint (< 128), then `cc` (uint8), `cd`
/// (uint16), `ce` (uint32), `cf` (uint64). notepack.io (for JS numbers up to 2^53) and Redis's `cmsgpack.pack` (for
/// integral Lua numbers) produce exactly these bytes.
pub fn msgpack_uint(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    w_uint(&mut out, n);
    out
}
