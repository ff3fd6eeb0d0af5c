//! The value tree every decoder goes through — what `notepack.decode` or `JSON.parse` would give a Node server —
//! its msgpack and JSON readers, its mapping to JSON (binary as Socket.IO placeholders), and the two writers: msgpack
//! (notepack.io's choices of encodings) and JSON (`JSON.stringify`), both held to the readers' nesting limit.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{AdapterError, MAX_DEPTH, malformed};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
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
pub(super) fn take(m: &mut Vec<(String, Node)>, key: &str) -> Option<Node> {
    let i = m.iter().position(|(k, _)| k == key)?;
    match m.remove(i).1 {
        Node::Undefined => None,
        v => Some(v),
    }
}

/// JS truthiness.
pub(super) fn truthy(n: &Node) -> bool {
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

pub(super) fn req_string(n: Option<Node>, what: &str) -> Result<String, AdapterError> {
    match n {
        Some(Node::Str(s)) => Ok(s),
        _ => Err(malformed(format!("{what} is missing or not a string"))),
    }
}

pub(super) fn opt_string(n: Option<Node>, what: &str) -> Result<Option<String>, AdapterError> {
    match n {
        None => Ok(None),
        Some(Node::Str(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("{what} is not a string"))),
    }
}

/// A room name: a string, or a number stringified as JS does (Node rooms may be numbers).
pub(super) fn room_string(n: Option<Node>, what: &str) -> Result<String, AdapterError> {
    match n {
        Some(Node::Str(s)) => Ok(s),
        Some(Node::Int(i)) => Ok(i.to_string()),
        Some(Node::UInt(u)) => Ok(u.to_string()),
        Some(Node::Float(f)) => Ok(crate::json::number_to_string(f)),
        _ => Err(malformed(format!("{what} is missing or not a string"))),
    }
}

/// A list of rooms as sent: absent/null → empty; otherwise an array of strings (or numbers), duplicates kept.
pub(super) fn room_list(n: Option<Node>, what: &str) -> Result<Vec<String>, AdapterError> {
    match n {
        None | Some(Node::Null) => Ok(Vec::new()),
        Some(Node::Arr(items)) => items.into_iter().map(|item| room_string(Some(item), what)).collect(),
        Some(_) => Err(malformed(format!("{what} is not an array"))),
    }
}

/// A list of rooms as the receiver uses it: [`room_list`] deduplicated like a JS `Set` (first occurrence kept).
pub(super) fn string_list(n: Option<Node>, what: &str) -> Result<Vec<String>, AdapterError> {
    let items = room_list(n, what)?;
    let mut seen = HashSet::with_capacity(items.len());
    Ok(items.into_iter().filter(|s| seen.insert(s.clone())).collect())
}

/// A non-negative integer field (a message's or a packet's `type`, a count).
pub(super) fn uint_field(n: Option<Node>, what: &str) -> Result<u64, AdapterError> {
    match n {
        Some(Node::Int(t)) if t >= 0 => Ok(t.unsigned_abs()),
        Some(Node::UInt(t)) => Ok(t),
        _ => Err(malformed(format!("{what} is missing or not a non-negative integer"))),
    }
}

/// Node tree → JSON as `JSON.stringify(deconstructPacket(...))` would produce it.
pub(super) fn to_json(n: Node, attachments: &mut Vec<Bytes>) -> Value {
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
pub(super) fn js_number_json(f: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_992.0;
    if !f.is_finite() {
        Value::Null
    } else if f.trunc() == f && f.abs() <= SAFE {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// `date.toJSON()`: the ISO string of a JS time value, or null when it is not a valid Date.
pub(super) fn js_date_json(ms: f64) -> Value {
    crate::date::iso_string(ms).map_or(Value::Null, Value::String)
}

/// Canonical array index (`"0"`, `"17"`, ≤ 2^32 − 2): JS enumerates these keys first, ascending.
pub(super) fn array_index(key: &str) -> Option<u32> {
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
pub(super) fn js_order(mut entries: Vec<(String, Node)>) -> Vec<(String, Node)> {
    if entries.iter().any(|(k, _)| array_index(k).is_some()) {
        // Stable: non-index keys keep their relative order.
        entries.sort_by_key(|(k, _)| array_index(k).map_or((1, 0), |i| (0, i)));
    }
    entries
}

/// Builds a JS object from (key, value) pairs: later duplicates overwrite the value in place, `__proto__` is
/// dropped when `drop_proto` (msgpack: it is a prototype assignment), then JS ordering applies.
pub(super) fn js_object(
    pairs: impl Iterator<Item = (String, Node)>,
    capacity: usize,
    drop_proto: bool,
) -> Vec<(String, Node)> {
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

pub(super) fn decode_msgpack(msg: &[u8]) -> Result<Node, AdapterError> {
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
pub(super) fn js_key(key: Node) -> Result<String, AdapterError> {
    match key {
        Node::Str(s) => Ok(s),
        Node::Int(i) => Ok(i.to_string()),
        Node::UInt(u) => Ok(u.to_string()),
        Node::Float(f) => Ok(crate::json::number_to_string(f)),
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

pub(super) fn decode_json(msg: &[u8]) -> Result<Node, AdapterError> {
    // `JSON.parse(msg.toString())`: invalid UTF-8 becomes U+FFFD first. serde_json limits nesting to 128.
    let text = String::from_utf8_lossy(msg);
    let v: Value = serde_json::from_str(&text).map_err(|e| AdapterError::Json(e.to_string()))?;
    from_json(v, 0)
}

pub(super) fn from_json(v: Value, depth: usize) -> Result<Node, AdapterError> {
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

pub(super) fn w_uint(out: &mut Vec<u8>, n: u64) {
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

pub(super) fn w_int(out: &mut Vec<u8>, n: i64) {
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
pub(super) fn w_f64(out: &mut Vec<u8>, f: f64) {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.is_finite() && f.trunc() == f && f.abs() < LIMIT {
        w_int(out, f as i64);
    } else {
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    }
}

pub(super) fn w_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

pub(super) fn w_len(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, m8: Option<u8>, m16: u8, m32: u8) {
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

pub(super) fn w_str(out: &mut Vec<u8>, s: &str) {
    w_len(out, s.len(), Some((0xa0, 32)), Some(0xd9), 0xda, 0xdb);
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn w_bin(out: &mut Vec<u8>, b: &[u8]) {
    w_len(out, b.len(), None, Some(0xc4), 0xc5, 0xc6);
    out.extend_from_slice(b);
}

pub(super) fn w_array_header(out: &mut Vec<u8>, len: usize) {
    w_len(out, len, Some((0x90, 16)), None, 0xdc, 0xdd);
}

pub(super) fn w_map_header(out: &mut Vec<u8>, len: usize) {
    w_len(out, len, Some((0x80, 16)), None, 0xde, 0xdf);
}

/// JSON → msgpack, Socket.IO placeholders replaced by the attachment they refer to (as `reconstructPacket`).
pub(super) fn w_json(out: &mut Vec<u8>, v: &Value, attachments: &[Bytes], depth: usize) -> Result<(), AdapterError> {
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

// ---------------------------------------------------------------------------------------------------------------
// JSON writer (JSON.stringify of a message)
// ---------------------------------------------------------------------------------------------------------------

/// Refuses arrays and objects nested deeper than [`MAX_DEPTH`], `v` being at nesting `depth` of its message: the
/// decoders' rule, so that whatever is encoded decodes.
pub(super) fn check_depth(v: &Value, depth: usize) -> Result<(), AdapterError> {
    match v {
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(AdapterError::TooDeep);
            }
            items.iter().try_for_each(|i| check_depth(i, depth + 1))
        }
        Value::Object(m) => {
            if depth >= MAX_DEPTH {
                return Err(AdapterError::TooDeep);
            }
            m.values().try_for_each(|v| check_depth(v, depth + 1))
        }
        _ => Ok(()),
    }
}

/// `JSON.stringify(message)` for a message object whose keys were inserted in the order Node writes them, after
/// [`check_depth`].
pub(super) fn json_message(message: Map<String, Value>) -> Result<Vec<u8>, AdapterError> {
    let message = Value::Object(message);
    check_depth(&message, 0)?;
    Ok(json_bytes(&message))
}

/// `JSON.stringify(v)`, numbers as JavaScript writes them ([`crate::json`]); no nesting check.
pub(super) fn json_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Serializing a `Value` cannot fail: its keys are strings and its numbers finite.
    let _ = crate::json::write_to(&mut out, v);
    out
}
