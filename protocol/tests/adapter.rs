//! Properties of the `@socket.io/redis-adapter` codec ([`eventfeed_protocol::adapter`]): broadcasts, requests and
//! responses of every kind come back from their encoding, and no input makes a decoder panic.
//!
//! # Round trips
//!
//! Arbitrary values — nested arrays and objects, strings with any characters, integers over the whole `i64` and
//! `u64` ranges, floats, booleans, nulls, binary attachments where the message allows them, room lists — are
//! encoded, decoded and compared, as in `roundtrip.rs`:
//!
//! - without floats the decoded value must be *exactly* the original, once normalized the way the protocol
//!   defines: room lists of requests and broadcasts come back deduplicated (Node makes `Set`s of them), and a
//!   `SOCKETS` answer without sockets comes back as the `REMOTE_FETCH` answer with the same bytes;
//! - with floats, numbers are compared as JavaScript numbers (an integral float is written as an integer, so it
//!   comes back as one), re-encoding the decoded value must give the same bytes, and decoding those must give the
//!   decoded value again.
//!
//! Generated object keys are never `_placeholder` (the mark of an attachment), `__proto__` (which notepack turns
//! into a prototype, not a key) or all digits (JavaScript moves integer-like keys to the front of an object): the
//! unit tests pin those rules down with Node-captured bytes. Attachment placeholders are numbered in depth-first
//! order, each attachment used once — the only form a decoder produces.
//!
//! # Never panicking
//!
//! Arbitrary bytes (and arbitrary bytes after a `{`, the JSON mark), every truncation of a valid message, and
//! valid messages (generated, or captured from Node) with bytes inserted, replaced, deleted or duplicated go
//! through [`decode_broadcast`], [`decode_request`] and [`decode_response`]. Whatever decodes must encode (or be
//! refused cleanly), and one more decode → encode round must not change the bytes any more. The fuzz target
//! `redis_adapter` runs the same checks without a case limit.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use eventfeed_protocol::adapter::{
    Broadcast, FetchedSocket, Flags, REQUEST_ID_LEN, Request, Response, Selector, decode_broadcast, decode_request,
    decode_response, encode_broadcast, encode_request, encode_response, request_id,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Characters that stress the JSON escaper and the msgpack string lengths: control characters, quotes,
/// backslashes, the JS line separators, non-BMP characters, and anything.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        2 => prop::sample::select(vec![
            '"', '\\', '/', '{', '}', '[', ']', '#', '\u{7f}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffd}',
            '\u{1f600}', 'é', '𝄞',
        ]),
        4 => prop::char::range('a', 'z'),
    ]
}

/// Up to `max` characters; now and then a long one, past the 31-byte fixstr and the 255-byte str8 limits.
fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::collection::vec(tricky_char(), 0..max).prop_map(String::from_iter),
        1 => (prop::collection::vec(tricky_char(), 0..8), 20usize..300)
            .prop_map(|(c, n)| String::from_iter(c).repeat(n)),
    ]
}

/// An object key that keeps its place and its meaning in JavaScript (see the module docs).
fn key() -> impl Strategy<Value = String> {
    tricky_string(8).prop_filter("special keys", |k| {
        k != "_placeholder" && k != "__proto__" && (k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Finite floats of every kind: normal, subnormal, zero (both signs), integral ones (written as integers), short
/// decimals, and values whose JavaScript spelling is special.
fn js_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        any::<i32>().prop_map(f64::from),
        (any::<i32>(), 1u32..6).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e as i32)),
        prop::sample::select(vec![1e20, 1e21, -1e21, 1.5e21, 1e-7, 9007199254740993.0, 18446744073709551616.0]),
    ]
}

/// An arbitrary JSON value, without placeholders; with `floats`, numbers include non-integers.
fn json_value(floats: bool) -> BoxedStrategy<Value> {
    let number: BoxedStrategy<Value> = if floats {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            js_float().prop_map(Value::from),
        ]
        .boxed()
    } else {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (0u64..300).prop_map(Value::from),
        ]
        .boxed()
    };
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        tricky_string(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            json_object(inner).prop_map(Value::Object),
        ]
    })
    .boxed()
}

fn json_object(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), values), 0..6).prop_map(|entries| entries.into_iter().collect())
}

fn placeholder(num: usize) -> Value {
    json!({"_placeholder": true, "num": num})
}

fn is_placeholder(v: &Value) -> bool {
    v.get("_placeholder") == Some(&Value::Bool(true))
}

/// Numbers the placeholders of `v` 0, 1, … in depth-first order, as the decoders do.
fn renumber(v: &mut Value, next: &mut usize) {
    if is_placeholder(v) {
        *v = placeholder(*next);
        *next += 1;
        return;
    }
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| renumber(i, next)),
        Value::Object(m) => m.values_mut().for_each(|i| renumber(i, next)),
        _ => {}
    }
}

fn attachments() -> impl Strategy<Value = Vec<Bytes>> {
    prop::collection::vec(
        prop_oneof![
            9 => prop::collection::vec(any::<u8>(), 0..40),
            1 => prop::collection::vec(any::<u8>(), 250..300),
        ]
        .prop_map(Bytes::from),
        0..4,
    )
}

/// `count` values with one placeholder per attachment among them, each at a random spot: a value of its own,
/// inside an array, or as an object field; numbered in depth-first order.
fn values_with_placeholders(floats: bool, count: usize, placeholders: usize) -> impl Strategy<Value = Vec<Value>> {
    (
        prop::collection::vec(json_value(floats), count),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3), placeholders),
    )
        .prop_map(|(mut values, spots)| {
            for (at, wrap) in spots {
                let ph = placeholder(0);
                let v = match wrap {
                    0 => ph,
                    1 => Value::Array(vec![Value::Null, ph]),
                    _ => json!({"file": ph}),
                };
                let at = at.index(values.len() + 1);
                values.insert(at, v);
            }
            let mut next = 0;
            values.iter_mut().for_each(|v| renumber(v, &mut next));
            values
        })
}

/// `[eventName, ...args]` with a placeholder for each of `attachments`.
fn event_data(floats: bool, attachments: usize) -> impl Strategy<Value = Value> {
    (tricky_string(12), (0usize..4).prop_flat_map(move |n| values_with_placeholders(floats, n, attachments))).prop_map(
        |(name, args)| {
            let mut all = vec![Value::String(name)];
            all.extend(args);
            Value::Array(all)
        },
    )
}

/// One value holding a placeholder for each of `attachments`.
fn value_with_attachments(floats: bool, attachments: usize) -> impl Strategy<Value = Value> {
    values_with_placeholders(floats, 1, attachments).prop_map(|values| match <[Value; 1]>::try_from(values) {
        Ok([only]) => only,
        Err(values) => Value::Array(values),
    })
}

/// A room list, repeats possible.
fn rooms() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop_oneof![3 => tricky_string(10), 1 => Just("room".to_owned())], 0..5)
}

fn flags() -> impl Strategy<Value = Flags> {
    (any::<bool>(), prop::option::of(any::<bool>()), any::<bool>(), prop::option::of(any::<u64>()))
        .prop_map(|(volatile, compress, local, timeout)| Flags { volatile, compress, local, timeout })
}

fn packet_type() -> impl Strategy<Value = u64> {
    prop_oneof![4 => Just(2u64), 1 => 0u64..10, 1 => any::<u64>()]
}

fn broadcast(floats: bool) -> impl Strategy<Value = Broadcast> {
    (tricky_string(10), packet_type(), tricky_string(10), attachments(), rooms(), rooms(), flags()).prop_flat_map(
        move |(uid, packet_type, nsp, attachments, rooms, except, flags)| {
            event_data(floats, attachments.len()).prop_map(move |data| Broadcast {
                uid: uid.clone(),
                packet_type,
                nsp: format!("/{nsp}"),
                data,
                attachments: attachments.clone(),
                rooms: rooms.clone(),
                except: except.clone(),
                flags: flags.clone(),
            })
        },
    )
}

fn selector() -> impl Strategy<Value = Selector> {
    (rooms(), rooms()).prop_map(|(rooms, except)| Selector { rooms, except })
}

/// A request id: Node's are 6 characters, anything goes on the wire.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::array::uniform6(any::<u8>()).prop_map(|b| request_id(&b)),
        1 => tricky_string(10),
    ]
}

/// A requester uid (absent in the emitter's requests) and a request of any type.
fn request(floats: bool) -> impl Strategy<Value = (Option<String>, Request)> {
    let req =
        prop_oneof![
            (id(), rooms()).prop_map(|(request_id, rooms)| Request::Sockets { request_id, rooms }),
            id().prop_map(|request_id| Request::AllRooms { request_id }),
            (selector(), rooms()).prop_map(|(selector, rooms)| Request::RemoteJoin { selector, rooms }),
            (id(), tricky_string(10), tricky_string(10))
                .prop_map(|(request_id, sid, room)| Request::RemoteJoinSocket { request_id, sid, room }),
            (selector(), rooms()).prop_map(|(selector, rooms)| Request::RemoteLeave { selector, rooms }),
            (id(), tricky_string(10), tricky_string(10))
                .prop_map(|(request_id, sid, room)| Request::RemoteLeaveSocket { request_id, sid, room }),
            (selector(), any::<bool>()).prop_map(|(selector, close)| Request::RemoteDisconnect { selector, close }),
            (id(), tricky_string(10), any::<bool>())
                .prop_map(|(request_id, sid, close)| Request::RemoteDisconnectSocket { request_id, sid, close }),
            (id(), selector()).prop_map(|(request_id, selector)| Request::RemoteFetch { request_id, selector }),
            (prop::option::of(id()), attachments()).prop_flat_map(move |(request_id, attachments)| {
                event_data(floats, attachments.len()).prop_map(move |data| Request::ServerSideEmit {
                    request_id: request_id.clone(),
                    data,
                    attachments: attachments.clone(),
                })
            }),
            (id(), broadcast(floats))
                .prop_map(|(request_id, broadcast)| Request::BroadcastWithAck { request_id, broadcast }),
            (8u64..).prop_map(Request::Other),
        ];
    (prop::option::of(tricky_string(8)), req).prop_map(|(uid, mut r)| {
        // The broadcast of a BROADCAST request carries the request's uid.
        if let Request::BroadcastWithAck { broadcast, .. } = &mut r {
            broadcast.uid = uid.clone().unwrap_or_default();
        }
        (uid, r)
    })
}

fn fetched_socket(floats: bool) -> impl Strategy<Value = FetchedSocket> {
    (tricky_string(10), json_value(floats), rooms(), json_value(floats))
        .prop_map(|(id, handshake, rooms, data)| FetchedSocket { id, handshake, rooms, data })
}

/// An optional value with its attachments (none without a value).
fn optional_value(floats: bool) -> impl Strategy<Value = (Option<Value>, Vec<Bytes>)> {
    prop_oneof![
        1 => Just((None, Vec::new())),
        4 => attachments().prop_flat_map(move |atts| {
            value_with_attachments(floats, atts.len()).prop_map(move |v| (Some(v), atts.clone()))
        }),
    ]
}

fn response(floats: bool) -> impl Strategy<Value = Response> {
    prop_oneof![
        (id(), prop::collection::vec(tricky_string(12), 0..5))
            .prop_map(|(request_id, sockets)| Response::Sockets { request_id, sockets }),
        (id(), rooms()).prop_map(|(request_id, rooms)| Response::AllRooms { request_id, rooms }),
        id().prop_map(|request_id| Response::RemoteAck { request_id }),
        (id(), prop::collection::vec(fetched_socket(floats), 0..3))
            .prop_map(|(request_id, sockets)| Response::RemoteFetch { request_id, sockets }),
        (id(), optional_value(floats)).prop_map(|(request_id, (data, attachments))| Response::ServerSideEmit {
            request_id,
            data,
            attachments
        }),
        (id(), any::<u64>())
            .prop_map(|(request_id, client_count)| Response::BroadcastClientCount { request_id, client_count }),
        (id(), optional_value(floats)).prop_map(|(request_id, (arg, attachments))| Response::BroadcastAck {
            request_id,
            arg,
            attachments
        }),
    ]
}

// ---------------------------------------------------------------------------
// What the decoders are expected to give back
// ---------------------------------------------------------------------------

/// `rooms` as a JS `Set` keeps them: first occurrences, in order.
fn dedup(rooms: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(rooms.len());
    for r in rooms {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

fn normal_broadcast(b: &Broadcast) -> Broadcast {
    Broadcast { rooms: dedup(&b.rooms), except: dedup(&b.except), ..b.clone() }
}

fn normal_selector(s: &Selector) -> Selector {
    Selector { rooms: dedup(&s.rooms), except: dedup(&s.except) }
}

fn normal_request(r: &Request) -> Request {
    match r {
        Request::Sockets { request_id, rooms } => {
            Request::Sockets { request_id: request_id.clone(), rooms: dedup(rooms) }
        }
        Request::RemoteJoin { selector, rooms } => {
            Request::RemoteJoin { selector: normal_selector(selector), rooms: dedup(rooms) }
        }
        Request::RemoteLeave { selector, rooms } => {
            Request::RemoteLeave { selector: normal_selector(selector), rooms: dedup(rooms) }
        }
        Request::RemoteDisconnect { selector, close } => {
            Request::RemoteDisconnect { selector: normal_selector(selector), close: *close }
        }
        Request::RemoteFetch { request_id, selector } => {
            Request::RemoteFetch { request_id: request_id.clone(), selector: normal_selector(selector) }
        }
        Request::BroadcastWithAck { request_id, broadcast } => {
            Request::BroadcastWithAck { request_id: request_id.clone(), broadcast: normal_broadcast(broadcast) }
        }
        other => other.clone(),
    }
}

fn normal_response(r: &Response) -> Response {
    match r {
        Response::Sockets { request_id, sockets } if sockets.is_empty() => {
            Response::RemoteFetch { request_id: request_id.clone(), sockets: Vec::new() }
        }
        other => other.clone(),
    }
}

/// Structural equality with numbers compared as JavaScript numbers: two integers exactly, otherwise by `f64`
/// value (`5.0 == 5`, `-0.0 == 0`).
fn js_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| js_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((kx, vx), (ky, vy))| kx == ky && js_eq(vx, vy))
        }
        _ => a == b,
    }
}

fn opt_js_eq(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => js_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn broadcast_js_eq(a: &Broadcast, b: &Broadcast) -> bool {
    js_eq(&a.data, &b.data)
        && Broadcast { data: Value::Null, ..a.clone() } == Broadcast { data: Value::Null, ..b.clone() }
}

fn request_js_eq(a: &Request, b: &Request) -> bool {
    match (a, b) {
        (
            Request::ServerSideEmit { request_id: i, data: d, attachments: x },
            Request::ServerSideEmit { request_id: j, data: e, attachments: y },
        ) => i == j && x == y && js_eq(d, e),
        (
            Request::BroadcastWithAck { request_id: i, broadcast: x },
            Request::BroadcastWithAck { request_id: j, broadcast: y },
        ) => i == j && broadcast_js_eq(x, y),
        _ => a == b,
    }
}

fn response_js_eq(a: &Response, b: &Response) -> bool {
    match (a, b) {
        (Response::RemoteFetch { request_id: i, sockets: x }, Response::RemoteFetch { request_id: j, sockets: y }) => {
            i == j
                && x.len() == y.len()
                && x.iter().zip(y).all(|(s, t)| {
                    s.id == t.id && s.rooms == t.rooms && js_eq(&s.handshake, &t.handshake) && js_eq(&s.data, &t.data)
                })
        }
        (
            Response::ServerSideEmit { request_id: i, data: d, attachments: x },
            Response::ServerSideEmit { request_id: j, data: e, attachments: y },
        )
        | (
            Response::BroadcastAck { request_id: i, arg: d, attachments: x },
            Response::BroadcastAck { request_id: j, arg: e, attachments: y },
        ) => i == j && x == y && opt_js_eq(d, e),
        _ => a == b,
    }
}

/// 1000 cases per property (`PROPTEST_CASES` overrides it); no failure persistence (it needs a `lib.rs` next to
/// the test file to place its files).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn broadcast_roundtrip_exact(b in broadcast(false)) {
        let bytes = encode_broadcast(&b).unwrap();
        let back = decode_broadcast(&bytes).unwrap();
        prop_assert_eq!(&back, &normal_broadcast(&b));
        prop_assert_eq!(encode_broadcast(&back).unwrap(), encode_broadcast(&normal_broadcast(&b)).unwrap());
    }

    #[test]
    fn broadcast_roundtrip_with_floats(b in broadcast(true)) {
        let bytes = encode_broadcast(&normal_broadcast(&b)).unwrap();
        let back = decode_broadcast(&bytes).unwrap();
        prop_assert!(broadcast_js_eq(&back, &normal_broadcast(&b)), "{:?}\n  decoded as\n{:?}", b, back);
        let again = encode_broadcast(&back).unwrap();
        prop_assert_eq!(&again, &bytes);
        prop_assert_eq!(decode_broadcast(&again).unwrap(), back);
    }

    #[test]
    fn request_roundtrip_exact((uid, r) in request(false)) {
        let bytes = encode_request(uid.as_deref(), &r).unwrap();
        let (uid_back, back) = decode_request(&bytes).unwrap();
        prop_assert_eq!(&uid_back, &uid);
        prop_assert_eq!(&back, &normal_request(&r));
        // JSON for everything but BROADCAST and SERVER_SIDE_EMIT with binary.
        let msgpack = matches!(&r, Request::BroadcastWithAck { .. })
            || matches!(&r, Request::ServerSideEmit { attachments, .. } if !attachments.is_empty());
        prop_assert_eq!(bytes.first() == Some(&b'{'), !msgpack);
        prop_assert_eq!(
            encode_request(uid_back.as_deref(), &back).unwrap(),
            encode_request(uid.as_deref(), &normal_request(&r)).unwrap()
        );
    }

    #[test]
    fn request_roundtrip_with_floats((uid, r) in request(true)) {
        let bytes = encode_request(uid.as_deref(), &normal_request(&r)).unwrap();
        let (uid_back, back) = decode_request(&bytes).unwrap();
        prop_assert_eq!(&uid_back, &uid);
        prop_assert!(request_js_eq(&back, &normal_request(&r)), "{:?}\n  decoded as\n{:?}", r, back);
        let again = encode_request(uid_back.as_deref(), &back).unwrap();
        prop_assert_eq!(&again, &bytes);
        prop_assert_eq!(decode_request(&again).unwrap(), (uid_back, back));
    }

    #[test]
    fn response_roundtrip_exact(r in response(false)) {
        let bytes = encode_response(&r).unwrap();
        let back = decode_response(&bytes).unwrap();
        prop_assert_eq!(&back, &normal_response(&r));
        prop_assert_eq!(back.request_id(), r.request_id());
        prop_assert_eq!(encode_response(&back).unwrap(), bytes);
    }

    #[test]
    fn response_roundtrip_with_floats(r in response(true)) {
        let bytes = encode_response(&r).unwrap();
        let back = decode_response(&bytes).unwrap();
        prop_assert!(response_js_eq(&back, &normal_response(&r)), "{:?}\n  decoded as\n{:?}", r, back);
        let again = encode_response(&back).unwrap();
        prop_assert_eq!(&again, &bytes);
        prop_assert_eq!(decode_response(&again).unwrap(), back);
    }

    /// Node's request ids: `uid2(6)`, six characters of a 64-character URL-safe alphabet.
    #[test]
    fn request_ids_are_url_safe(random in prop::array::uniform6(any::<u8>())) {
        let id = request_id(&random);
        prop_assert_eq!(id.len(), REQUEST_ID_LEN);
        prop_assert!(id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{}", id);
        // The character depends on the byte modulo 64 only.
        let shifted: Vec<u8> = random.iter().map(|b| b.wrapping_add(64)).collect();
        prop_assert_eq!(request_id(&shifted), id);
    }
}

// ---------------------------------------------------------------------------
// Never panicking
// ---------------------------------------------------------------------------

/// Every decoder on `msg`. What decodes must encode or be refused with an error (a placeholder-shaped object
/// without its attachment, say); what encodes must decode; and one more round must not change the bytes (the
/// first round may: a decoder reads `__proto__` keys of JSON but not of msgpack, numbers as rooms become strings).
fn check_all(msg: &[u8]) {
    if let Ok(b) = decode_broadcast(msg)
        && let Ok(e1) = encode_broadcast(&b)
    {
        let e2 = encode_broadcast(&decode_broadcast(&e1).unwrap()).unwrap();
        assert_eq!(encode_broadcast(&decode_broadcast(&e2).unwrap()).unwrap(), e2);
    }
    if let Ok((uid, r)) = decode_request(msg)
        && let Ok(e1) = encode_request(uid.as_deref(), &r)
    {
        let (uid, r) = decode_request(&e1).unwrap();
        let e2 = encode_request(uid.as_deref(), &r).unwrap();
        let (uid, r) = decode_request(&e2).unwrap();
        assert_eq!(encode_request(uid.as_deref(), &r).unwrap(), e2);
    }
    if let Ok(r) = decode_response(msg)
        && let Ok(e1) = encode_response(&r)
    {
        let e2 = encode_response(&decode_response(&e1).unwrap()).unwrap();
        assert_eq!(encode_response(&decode_response(&e2).unwrap()).unwrap(), e2);
    }
}

/// The messages Node published, from the captured vectors (`adapter_vectors.rs`).
fn node_messages() -> Vec<Vec<u8>> {
    let all: Value = serde_json::from_str(include_str!("vectors/redis_adapter.json")).unwrap();
    all["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match v["json"].as_str() {
            Some(json) => json.as_bytes().to_vec(),
            None => {
                let hex = v["hex"].as_str().unwrap();
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
            }
        })
        .collect()
}

/// A valid message of any kind: generated, or one Node published.
fn valid_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(node_messages()),
        broadcast(true).prop_map(|b| encode_broadcast(&b).unwrap()),
        request(true).prop_map(|(uid, r)| encode_request(uid.as_deref(), &r).unwrap()),
        response(true).prop_map(|r| encode_response(&r).unwrap()),
    ]
}

/// Bytes that matter to the two formats: msgpack markers with lengths (0xdb str32, 0xdd array32, 0xdf map32, …),
/// the reserved 0xc1, ext markers, and JSON punctuation.
const INTERESTING: &[u8] = &[
    0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc4, 0xc7, 0xca, 0xcb, 0xcf, 0xd3, 0xd4, 0xd7, 0xd9,
    0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff, b'{', b'}', b'[', b']', b'"', b':', b',', b'\\',
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(prop::sample::Index, u8),
    Replace(prop::sample::Index, u8),
    Flip(prop::sample::Index, u8),
    Delete(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index, prop::sample::Index),
}

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), prop::sample::select(INTERESTING)]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        (any::<Index>(), byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (any::<Index>(), 1usize..4).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len();
        match m {
            Mutation::Insert(i, x) => b.insert(i.index(len + 1), *x),
            Mutation::Replace(i, x) if len > 0 => b[i.index(len)] = *x,
            Mutation::Flip(i, bit) if len > 0 => b[i.index(len)] ^= 1 << bit,
            Mutation::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                b.drain(at..(at + n).min(len));
            }
            Mutation::Truncate(i) => b.truncate(i.index(len + 1)),
            Mutation::Duplicate(x, y) if len > 0 => {
                let (x, y) = (x.index(len), y.index(len));
                let chunk = b[x.min(y)..=x.max(y)].to_vec();
                b.splice(x..x, chunk);
            }
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
        check_all(&b);
    }

    #[test]
    fn arbitrary_bytes_after_a_brace(b in prop::collection::vec(any::<u8>(), 0..128)) {
        let mut msg = b"{".to_vec();
        msg.extend(b);
        check_all(&msg);
    }

    #[test]
    fn interesting_bytes(b in prop::collection::vec(byte(), 0..64)) {
        check_all(&b);
    }

    #[test]
    fn mutated_valid_messages(msg in valid_message(), muts in prop::collection::vec(mutation(), 1..5)) {
        check_all(&apply(msg, &muts));
    }
}

/// Prefix lengths to try of a message of `len` bytes: all of them for a short message; for a long one the first
/// and last 200 and a spread between (each decode is linear, so all of them would be quadratic).
fn prefixes(len: usize) -> impl Iterator<Item = usize> {
    let ends = 0..len.min(200);
    let spread = (200..len.saturating_sub(200)).step_by(len / 100 + 1);
    let tail = len.saturating_sub(200).max(200)..len;
    ends.chain(spread).chain(tail)
}

proptest! {
    #![proptest_config(config(200))]

    /// A strict prefix of a message is never a message (msgpack and JSON are self-delimiting), for the decoder
    /// of its kind; and no decoder panics on one.
    #[test]
    fn every_truncation_is_an_error(b in broadcast(true), (uid, r) in request(true), resp in response(true)) {
        let b = encode_broadcast(&b).unwrap();
        let r = encode_request(uid.as_deref(), &r).unwrap();
        let resp = encode_response(&resp).unwrap();
        for len in prefixes(b.len()) {
            prop_assert!(decode_broadcast(&b[..len]).is_err());
            check_all(&b[..len]);
        }
        for len in prefixes(r.len()) {
            prop_assert!(decode_request(&r[..len]).is_err());
            check_all(&r[..len]);
        }
        for len in prefixes(resp.len()) {
            prop_assert!(decode_response(&resp[..len]).is_err());
            check_all(&resp[..len]);
        }
    }
}
