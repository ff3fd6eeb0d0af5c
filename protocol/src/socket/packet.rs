//! Socket.IO v5 packets: the string form and its rules.
//!
//! `<type>[<attachments>-][<nsp>,][<ack id>][<JSON payload>]`, e.g.
//! `2["hello",1]`, `21/admin,13["ping"]`, `51-["bin",{"_placeholder":true,"num":0}]`.
//! Decoding follows socket.io-parser's `decodeString` and `isPayloadValid`, a
//! little stricter where the reference is loose (an ack id must fit in u64, an
//! attachment count must be digits, EVENT and ACK must carry their array).
//! Encoding writes exactly what socket.io-parser's `encodeAsString` writes, with
//! JSON as `JSON.stringify` writes it, and prefixes the Engine.IO message type,
//! so the result is a ready [`Frame`].

use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::engine::Frame;

/// The seven Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// `0`: connect to a namespace (client), or its acceptance (server).
    Connect = 0,
    /// `1`: leave a namespace.
    Disconnect = 1,
    /// `2`: an event.
    Event = 2,
    /// `3`: an acknowledgement.
    Ack = 3,
    /// `4`: a refused connect (server to client).
    ConnectError = 4,
    /// `5`: an event with binary attachments.
    BinaryEvent = 5,
    /// `6`: an acknowledgement with binary attachments.
    BinaryAck = 6,
}

impl PacketType {
    fn from_digit(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    /// Whether packets of this type carry binary attachments.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }

    /// The type that carries `attachments` of the same kind: EVENT ⇄ BINARY_EVENT,
    /// ACK ⇄ BINARY_ACK.
    pub fn with_binary(self, binary: bool) -> Self {
        match (self, binary) {
            (Self::Event | Self::BinaryEvent, true) => Self::BinaryEvent,
            (Self::Event | Self::BinaryEvent, false) => Self::Event,
            (Self::Ack | Self::BinaryAck, true) => Self::BinaryAck,
            (Self::Ack | Self::BinaryAck, false) => Self::Ack,
            (other, _) => other,
        }
    }
}

/// Event names a client may not emit (they are the reference's reserved names).
pub const RESERVED_EVENTS: [&str; 6] =
    ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];

/// A Socket.IO packet.
///
/// For binary packets, `data` keeps the `{"_placeholder":true,"num":N}` objects
/// where the binary parts go and `attachments` holds the parts in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketType,
    /// The namespace, `/` by default.
    pub nsp: String,
    /// The ack id, if the sender wants an acknowledgement (or this is one).
    pub id: Option<u64>,
    /// The JSON payload.
    pub data: Option<Value>,
    /// Binary attachments (only for binary types).
    pub attachments: Vec<Bytes>,
}

/// Why a Socket.IO packet was rejected. Every variant is a protocol violation:
/// the reference closes the connection for each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet was empty.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type.
    #[error("unknown packet type {byte:#04x}")]
    UnknownType {
        /// The offending byte.
        byte: u8,
    },
    /// The attachment count of a binary packet is malformed.
    #[error("illegal attachments")]
    IllegalAttachments,
    /// More attachments than allowed.
    #[error("too many attachments: {count} (at most {max})")]
    TooManyAttachments {
        /// The count announced.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// The ack id does not fit in a u64.
    #[error("invalid ack id")]
    InvalidAckId,
    /// The payload is not JSON.
    #[error("payload is not valid JSON")]
    InvalidJson,
    /// The payload is JSON but not what this packet type allows.
    #[error("invalid payload for {kind:?}")]
    InvalidPayload {
        /// The packet type.
        kind: PacketType,
    },
    /// A placeholder points outside the attachments, or is malformed.
    #[error("illegal attachment placeholder")]
    IllegalPlaceholder,
    /// A text packet arrived while binary parts were awaited.
    #[error("text packet while reconstructing a binary packet")]
    UnexpectedText,
    /// A binary part arrived with no binary packet waiting for it.
    #[error("binary data while not reconstructing a packet")]
    UnexpectedBinary,
}

/// The header of a decoded string packet; binary packets still need their parts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub packet: Packet,
    pub expected_attachments: usize,
}

/// Decodes the string form of a packet (without the Engine.IO `4` prefix).
pub(crate) fn decode_str(s: &str, max_attachments: usize) -> Result<Header, DecodeError> {
    let b = s.as_bytes();
    let first = *b.first().ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType { byte: first })?;
    let mut i = 1;

    let mut expected_attachments = 0usize;
    if kind.is_binary() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || b.get(i) != Some(&b'-') {
            return Err(DecodeError::IllegalAttachments);
        }
        let count: u64 = s[start..i].parse().map_err(|_| DecodeError::IllegalAttachments)?;
        if count > max_attachments as u64 {
            return Err(DecodeError::TooManyAttachments { count, max: max_attachments });
        }
        expected_attachments = count as usize;
        i += 1;
    }

    let nsp = if b.get(i) == Some(&b'/') {
        let start = i;
        while i < b.len() && b[i] != b',' {
            i += 1;
        }
        let nsp = s[start..i].to_owned();
        if i < b.len() {
            i += 1; // the comma
        }
        nsp
    } else {
        "/".to_owned()
    };

    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let id = if i > start { Some(s[start..i].parse::<u64>().map_err(|_| DecodeError::InvalidAckId)?) } else { None };

    let rest = &s[i..];
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str::<Value>(rest).map_err(|_| DecodeError::InvalidJson)?)
    };
    if !payload_is_valid(kind, data.as_ref()) {
        return Err(DecodeError::InvalidPayload { kind });
    }
    if kind.is_binary()
        && let Some(data) = &data
    {
        check_placeholders(data, expected_attachments, 0)?;
    }
    Ok(Header { packet: Packet { kind, nsp, id, data, attachments: Vec::new() }, expected_attachments })
}

fn payload_is_valid(kind: PacketType, data: Option<&Value>) -> bool {
    match kind {
        PacketType::Connect => matches!(data, None | Some(Value::Object(_))),
        PacketType::Disconnect => data.is_none(),
        PacketType::ConnectError => matches!(data, Some(Value::String(_) | Value::Object(_))),
        PacketType::Event | PacketType::BinaryEvent => match data {
            Some(Value::Array(args)) => {
                matches!(args.first(), Some(Value::String(name)) if !RESERVED_EVENTS.contains(&name.as_str()))
            }
            _ => false,
        },
        PacketType::Ack | PacketType::BinaryAck => matches!(data, Some(Value::Array(_))),
    }
}

/// Placeholders may nest at most this deep (serde_json already stops at 128).
const MAX_DEPTH: usize = 128;

/// Checks that every `{"_placeholder":true,...}` has an integer `num` below `count`.
fn check_placeholders(v: &Value, count: usize, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::IllegalPlaceholder);
    }
    match v {
        Value::Array(items) => items.iter().try_for_each(|x| check_placeholders(x, count, depth + 1)),
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                return match map.get("num").and_then(Value::as_u64) {
                    Some(n) if n < count as u64 => Ok(()),
                    _ => Err(DecodeError::IllegalPlaceholder),
                };
            }
            map.values().try_for_each(|x| check_placeholders(x, count, depth + 1))
        }
        _ => Ok(()),
    }
}

/// The placeholder that stands for attachment `num`: `{"_placeholder":true,"num":N}`.
pub fn placeholder(num: usize) -> Value {
    let mut map = serde_json::Map::with_capacity(2);
    map.insert("_placeholder".to_owned(), Value::Bool(true));
    map.insert("num".to_owned(), Value::from(num));
    Value::Object(map)
}

/// If `v` is a placeholder, the attachment index it stands for.
pub fn placeholder_index(v: &Value) -> Option<usize> {
    let map = v.as_object()?;
    if map.get("_placeholder") != Some(&Value::Bool(true)) {
        return None;
    }
    map.get("num")?.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// A packet encoded for the wire: the text frame (Engine.IO message, `4` +
/// Socket.IO string) and one binary frame per attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The text frame.
    pub text: Frame,
    /// The attachments, in order.
    pub binary: Vec<Frame>,
}

impl Packet {
    /// A CONNECT packet (client side: `auth` payload; server side: `{"sid":…}`).
    pub fn connect(nsp: &str, data: Option<Value>) -> Self {
        Self::new(PacketType::Connect, nsp, None, data)
    }

    /// A DISCONNECT packet.
    pub fn disconnect(nsp: &str) -> Self {
        Self::new(PacketType::Disconnect, nsp, None, None)
    }

    /// A CONNECT_ERROR packet with `{"message": ..}` and optional `data`.
    pub fn connect_error(nsp: &str, message: &str, data: Option<Value>) -> Self {
        let mut map = serde_json::Map::new();
        map.insert("message".to_owned(), Value::String(message.to_owned()));
        if let Some(data) = data {
            map.insert("data".to_owned(), data);
        }
        Self::new(PacketType::ConnectError, nsp, None, Some(Value::Object(map)))
    }

    /// An EVENT packet `[name, ...args]`; binary if `attachments` is not empty.
    pub fn event(nsp: &str, name: &str, args: Vec<Value>, id: Option<u64>, attachments: Vec<Bytes>) -> Self {
        let mut data = Vec::with_capacity(args.len() + 1);
        data.push(Value::String(name.to_owned()));
        data.extend(args);
        let kind = PacketType::Event.with_binary(!attachments.is_empty());
        Packet { kind, nsp: nsp.to_owned(), id, data: Some(Value::Array(data)), attachments }
    }

    /// An ACK packet for `id` with `args`; binary if `attachments` is not empty.
    pub fn ack(nsp: &str, id: u64, args: Vec<Value>, attachments: Vec<Bytes>) -> Self {
        let kind = PacketType::Ack.with_binary(!attachments.is_empty());
        Packet { kind, nsp: nsp.to_owned(), id: Some(id), data: Some(Value::Array(args)), attachments }
    }

    fn new(kind: PacketType, nsp: &str, id: Option<u64>, data: Option<Value>) -> Self {
        Packet { kind, nsp: nsp.to_owned(), id, data, attachments: Vec::new() }
    }

    /// For EVENT packets: the event name.
    pub fn event_name(&self) -> Option<&str> {
        match (&self.kind, &self.data) {
            (PacketType::Event | PacketType::BinaryEvent, Some(Value::Array(a))) => a.first()?.as_str(),
            _ => None,
        }
    }

    /// For EVENT packets the arguments after the name; for ACK packets all of them.
    pub fn args(&self) -> &[Value] {
        match (&self.kind, &self.data) {
            (PacketType::Event | PacketType::BinaryEvent, Some(Value::Array(a))) => a.get(1..).unwrap_or(&[]),
            (PacketType::Ack | PacketType::BinaryAck, Some(Value::Array(a))) => a,
            _ => &[],
        }
    }

    /// The string form (without the Engine.IO prefix), as socket.io-parser writes it.
    pub fn to_sio_string(&self) -> String {
        let mut out = Vec::with_capacity(64);
        self.write_sio(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Encodes the packet into its frames. The text frame is the Engine.IO
    /// message: `4` followed by the Socket.IO string.
    pub fn encode(&self) -> Encoded {
        let mut out = Vec::with_capacity(64);
        out.push(b'4');
        self.write_sio(&mut out);
        Encoded {
            text: Frame::Text(Bytes::from(out)),
            binary: self.attachments.iter().cloned().map(Frame::Binary).collect(),
        }
    }

    fn write_sio(&self, out: &mut Vec<u8>) {
        out.push(b'0' + self.kind as u8);
        if self.kind.is_binary() {
            out.extend_from_slice(itoa(self.attachments.len() as u64).as_bytes());
            out.push(b'-');
        }
        write_nsp_and_id(out, &self.nsp, self.id);
        if let Some(data) = &self.data {
            // Serializing a Value into a Vec cannot fail.
            let _ = crate::json::write_to(out, data);
        }
    }
}

fn write_nsp_and_id(out: &mut Vec<u8>, nsp: &str, id: Option<u64>) {
    if !nsp.is_empty() && nsp != "/" {
        out.extend_from_slice(nsp.as_bytes());
        out.push(b',');
    }
    if let Some(id) = id {
        out.extend_from_slice(itoa(id).as_bytes());
    }
}

fn itoa(n: u64) -> String {
    let mut s = String::with_capacity(20);
    let _ = write!(s, "{n}");
    s
}

/// Encodes an EVENT whose arguments are already JSON, without parsing them:
/// `4` `2` `[<nsp>,][<id>]["<name>",<arg>,...]`. This is how a broadcast is
/// built from stored, pre-encoded JSON: once, into one shared frame.
pub fn encode_raw_event(nsp: &str, name: &str, args: &[&RawValue], id: Option<u64>) -> Frame {
    let len = 8 + nsp.len() + name.len() + args.iter().map(|a| a.get().len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"42");
    write_nsp_and_id(&mut out, nsp, id);
    out.push(b'[');
    let _ = crate::json::write_to(&mut out, name);
    for arg in args {
        out.push(b',');
        out.extend_from_slice(arg.get().as_bytes());
    }
    out.push(b']');
    Frame::Text(Bytes::from(out))
}

/// Encodes the answer to an accepted CONNECT, `4` `0` `[<nsp>,]{"sid":..[,"pid":..]}`,
/// written directly (the same bytes as [`Packet::connect`] with that object).
pub fn encode_connect_ok(nsp: &str, sid: &str, pid: Option<&str>) -> Frame {
    let nsp_len = if nsp.is_empty() || nsp == "/" { 0 } else { nsp.len() + 1 };
    // The exact length when nothing needs escaping (the ids are URL-safe), so
    // the frame's bytes are the buffer itself.
    let len = br#"40{"sid":""}"#.len() + nsp_len + sid.len() + pid.map_or(0, |p| br#","pid":"""#.len() + p.len());
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"40");
    write_nsp_and_id(&mut out, nsp, None);
    out.extend_from_slice(br#"{"sid":"#);
    let _ = crate::json::write_to(&mut out, sid);
    if let Some(pid) = pid {
        out.extend_from_slice(br#","pid":"#);
        let _ = crate::json::write_to(&mut out, pid);
    }
    out.push(b'}');
    Frame::Text(Bytes::from(out))
}

/// Encodes an ACK whose arguments are already JSON: `4` `3` `[<nsp>,]<id>[<arg>,...]`.
pub fn encode_raw_ack(nsp: &str, id: u64, args: &[&RawValue]) -> Frame {
    let mut out = Vec::with_capacity(8 + nsp.len() + args.iter().map(|a| a.get().len() + 1).sum::<usize>());
    out.extend_from_slice(b"43");
    write_nsp_and_id(&mut out, nsp, Some(id));
    out.push(b'[');
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(arg.get().as_bytes());
    }
    out.push(b']');
    Frame::Text(Bytes::from(out))
}

#[cfg(test)]
mod connect_ok_tests {
    use super::*;

    #[test]
    fn connect_ok_matches_the_packet_encoding() {
        for (nsp, sid, pid) in [
            ("/events", "AbC-_09xyzAbC-_09xyz", Some("pid-_1234567890abcde")),
            ("/", "s", None),
            ("", "s\"\\\u{2}", Some("p\"")),
        ] {
            let mut answer = serde_json::Map::new();
            answer.insert("sid".to_owned(), Value::String(sid.to_owned()));
            if let Some(pid) = pid {
                answer.insert("pid".to_owned(), Value::String(pid.to_owned()));
            }
            let want = Packet::connect(nsp, Some(Value::Object(answer))).encode();
            assert_eq!(encode_connect_ok(nsp, sid, pid).bytes(), want.text.bytes());
        }
    }
}
