//! Round-trip properties of every codec in the crate: what we encode, our own
//! decoders give back.
//!
//! - Engine.IO: every packet type as a text or binary [`Frame`], and polling
//!   payloads, both unbudgeted ([`payload::encode_all`]) and against a byte
//!   budget ([`payload::encode`]).
//! - Socket.IO: every packet type, with an arbitrary namespace and ack id and a
//!   payload valid for its type, including binary packets whose placeholders
//!   point at their attachments, encoded into frames and fed back through a
//!   [`Decoder`] (text frame, then each binary part).
//!
//! # Which equality
//!
//! Packets without floating-point numbers must come back *exactly* equal
//! (`PartialEq` on [`Packet`], i.e. on `serde_json::Value`).
//!
//! Floats cannot: the encoder writes numbers as `JSON.stringify` does, so an
//! integral float is written without a fraction (`5.0` → `5`, `-0.0` → `0`) and
//! decodes as a JSON *integer*, a different `serde_json::Number`. For JavaScript
//! there is only one number type, so that is the intended behaviour. Packets
//! with floats are therefore checked three ways:
//!
//! 1. the decoded packet equals the original under [`js_eq`]: structurally equal,
//!    with numbers compared as JavaScript compares them (integers exactly, any
//!    pair involving a float as `f64` values, so `5.0 == 5` and `-0.0 == 0`);
//! 2. re-encoding the decoded packet gives byte-identical frames (encoding is
//!    canonical: one wire form per JavaScript value);
//! 3. decoding that again gives exactly the decoded packet (a decode → encode →
//!    decode cycle is the identity, with plain `==`).

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::Bytes;
use eventfeed_protocol::engine::{self, Frame, Packet as EnginePacket, payload};
use eventfeed_protocol::socket::{self, Decoder, Packet, PacketType, RESERVED_EVENTS};
use proptest::prelude::*;
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Characters that stress the JSON string escaper and the wire framing:
/// control characters (incl. the polling separator `0x1e`), quotes,
/// backslashes, the JSON/JS line separators, non-BMP characters, and anything.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        2 => prop::sample::select(vec![
            '"', '\\', '/', ',', '[', ']', '{', '}', '-', '0', '9', '\u{7f}', '\u{2028}',
            '\u{2029}', '\u{feff}', '\u{fffd}', '\u{1f600}', 'é', '𝄞',
        ]),
        4 => prop::char::range('a', 'z'),
    ]
}

fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..max).prop_map(String::from_iter)
}

/// Finite floats of every kind: normal, subnormal, zero (both signs), plus
/// "nice" ones — integral values (which print as integers) and short decimals.
fn js_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        any::<i32>().prop_map(f64::from),
        (any::<i32>(), 1u32..6).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e as i32)),
        prop::sample::select(vec![1e20, 1e21, -1e21, 1.5e21, 1e-6, 1e-7, 9007199254740993.0]),
    ]
}

/// An arbitrary JSON value; with `floats`, numbers include non-integers.
///
/// Object keys never are `_placeholder`, so a generated value is never taken
/// for an attachment placeholder.
fn json_value(floats: bool) -> BoxedStrategy<Value> {
    let number: BoxedStrategy<Value> = if floats {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            js_float().prop_map(Value::from),
        ]
        .boxed()
    } else {
        prop_oneof![any::<i64>().prop_map(Value::from), any::<u64>().prop_map(Value::from),].boxed()
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
    prop::collection::vec((tricky_string(8), values), 0..6)
        .prop_map(|entries| entries.into_iter().filter(|(k, _)| k != "_placeholder").collect())
}

/// A namespace: `/` or `/` + anything without a comma (the comma ends it on the wire).
fn nsp() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), tricky_string(10).prop_map(|s| format!("/{}", s.replace(',', ""))),]
}

fn event_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => tricky_string(12),
        1 => Just("event_created".to_owned()),
    ]
    .prop_filter("reserved event names are rejected", |n| !RESERVED_EVENTS.contains(&n.as_str()))
}

fn attachments() -> impl Strategy<Value = Vec<Bytes>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from), 0..5)
}

/// Arguments with a placeholder for each attachment, each at a random position:
/// a top-level argument, inside an array, or as an object field.
fn args_with_placeholders(floats: bool, count: usize) -> impl Strategy<Value = Vec<Value>> {
    (
        prop::collection::vec(json_value(floats), 0..4),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3), count),
    )
        .prop_map(|(mut args, spots)| {
            for (num, (at, wrap)) in spots.into_iter().enumerate() {
                let ph = socket::placeholder(num);
                let v = match wrap {
                    0 => ph,
                    1 => Value::Array(vec![Value::Null, ph]),
                    _ => {
                        let mut m = Map::new();
                        m.insert("file".to_owned(), ph);
                        Value::Object(m)
                    }
                };
                let at = at.index(args.len() + 1);
                args.insert(at, v);
            }
            args
        })
}

/// A valid Socket.IO packet of any type.
fn sio_packet(floats: bool) -> impl Strategy<Value = Packet> {
    let kind = prop::sample::select(vec![
        PacketType::Connect,
        PacketType::Disconnect,
        PacketType::Event,
        PacketType::Ack,
        PacketType::ConnectError,
        PacketType::BinaryEvent,
        PacketType::BinaryAck,
    ]);
    (kind, nsp(), prop::option::of(any::<u64>()), attachments()).prop_flat_map(move |(kind, nsp, id, atts)| {
        let data: BoxedStrategy<Option<Value>> = match kind {
            PacketType::Connect => prop::option::of(json_object(json_value(floats)).prop_map(Value::Object)).boxed(),
            PacketType::Disconnect => Just(None).boxed(),
            PacketType::ConnectError => prop_oneof![
                tricky_string(16).prop_map(Value::String),
                json_object(json_value(floats)).prop_map(Value::Object),
            ]
            .prop_map(Some)
            .boxed(),
            PacketType::Event | PacketType::BinaryEvent => {
                let n = if kind.is_binary() { atts.len() } else { 0 };
                (event_name(), args_with_placeholders(floats, n))
                    .prop_map(|(name, args)| {
                        let mut all = vec![Value::String(name)];
                        all.extend(args);
                        Some(Value::Array(all))
                    })
                    .boxed()
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let n = if kind.is_binary() { atts.len() } else { 0 };
                args_with_placeholders(floats, n).prop_map(|args| Some(Value::Array(args))).boxed()
            }
        };
        let attachments = if kind.is_binary() { atts } else { Vec::new() };
        data.prop_map(move |data| Packet { kind, nsp: nsp.clone(), id, data, attachments: attachments.clone() })
    })
}

/// Text for an Engine.IO packet's data. Polling joins packets with `0x1e`
/// and does not escape it (neither does the reference), so payload tests use
/// `polling_safe` text without it.
fn eio_text(polling_safe: bool) -> impl Strategy<Value = String> {
    tricky_string(40).prop_map(move |s| if polling_safe { s.replace('\u{1e}', "") } else { s })
}

/// An owned Engine.IO packet of any type (`Binary` is a websocket binary
/// frame / a `b`-prefixed polling packet).
#[derive(Debug, Clone)]
enum Eio {
    Open(String),
    Close,
    Ping(String),
    Pong(String),
    Message(String),
    Binary(Vec<u8>),
    Upgrade,
    Noop,
}

impl Eio {
    fn packet(&self) -> EnginePacket<'_> {
        match self {
            Eio::Open(s) => EnginePacket::Open(s),
            Eio::Close => EnginePacket::Close,
            Eio::Ping(s) => EnginePacket::Ping(s),
            Eio::Pong(s) => EnginePacket::Pong(s),
            Eio::Message(s) => EnginePacket::Message(s),
            Eio::Binary(b) => EnginePacket::Binary(Cow::Borrowed(b)),
            Eio::Upgrade => EnginePacket::Upgrade,
            Eio::Noop => EnginePacket::Noop,
        }
    }
}

fn eio_packet(polling_safe: bool) -> impl Strategy<Value = Eio> {
    prop_oneof![
        1 => eio_text(polling_safe).prop_map(Eio::Open),
        1 => Just(Eio::Close),
        1 => eio_text(polling_safe).prop_map(Eio::Ping),
        1 => eio_text(polling_safe).prop_map(Eio::Pong),
        3 => eio_text(polling_safe).prop_map(Eio::Message),
        3 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Eio::Binary),
        1 => Just(Eio::Upgrade),
        1 => Just(Eio::Noop),
    ]
}

// ---------------------------------------------------------------------------
// Equality helpers
// ---------------------------------------------------------------------------

/// Structural equality with numbers compared as JavaScript numbers: two
/// integers exactly, otherwise by `f64` value (`5.0 == 5`, `-0.0 == 0`).
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

fn packet_js_eq(a: &Packet, b: &Packet) -> bool {
    a.kind == b.kind
        && a.nsp == b.nsp
        && a.id == b.id
        && a.attachments == b.attachments
        && match (&a.data, &b.data) {
            (Some(x), Some(y)) => js_eq(x, y),
            (None, None) => true,
            _ => false,
        }
}

/// Feeds an encoded packet through a fresh [`Decoder`]: the text frame (minus
/// its Engine.IO `4`), then each binary frame. The packet must complete
/// exactly on the last frame.
fn decode_frames(enc: &socket::Encoded) -> Packet {
    let Frame::Text(text) = &enc.text else {
        panic!("the first frame of a Socket.IO packet is text");
    };
    let text = std::str::from_utf8(text).unwrap();
    let sio = text.strip_prefix('4').expect("an Engine.IO message");
    let mut d = Decoder::new(enc.binary.len().max(1));
    let mut out = d.decode_text(sio).unwrap();
    for (i, part) in enc.binary.iter().enumerate() {
        assert!(out.is_none(), "packet completed before part {i}");
        assert!(d.is_reconstructing());
        let Frame::Binary(b) = part else {
            panic!("attachments are binary frames");
        };
        out = d.decode_binary(b.clone()).unwrap();
    }
    assert!(!d.is_reconstructing());
    out.expect("packet complete after its last part")
}

/// 1000 cases per property (`PROPTEST_CASES` overrides it); no failure
/// persistence (it needs a `lib.rs` next to the test file to place its files).
fn config() -> ProptestConfig {
    ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------
// Engine.IO
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Every packet type survives its websocket frame: text frames through
    /// `decode_text`, binary frames through `decode_binary`.
    #[test]
    fn engine_packet_frames_roundtrip(p in eio_packet(false)) {
        let packet = p.packet();
        let frame = packet.to_frame();
        prop_assert_eq!(frame.decode().unwrap(), packet.clone());
        match &frame {
            Frame::Text(b) => {
                prop_assert!(!matches!(p, Eio::Binary(_)));
                let s = std::str::from_utf8(b).unwrap();
                prop_assert_eq!(s.as_bytes()[0], packet.packet_type().digit());
                prop_assert_eq!(engine::decode_text(s).unwrap(), packet.clone());
                prop_assert_eq!(Frame::from_text_bytes(b.clone()), Some(frame.clone()));
            }
            Frame::Binary(b) => {
                prop_assert!(matches!(p, Eio::Binary(_)));
                prop_assert_eq!(engine::decode_binary(b), packet.clone());
            }
        }
        // The budget arithmetic matches what a payload actually holds.
        prop_assert_eq!(payload::encode_all([&frame]).len(), frame.payload_len());
    }

    /// A polling payload of any packets decodes to those packets, in order.
    #[test]
    fn polling_payload_roundtrip(ps in prop::collection::vec(eio_packet(true), 1..12)) {
        let frames: Vec<Frame> = ps.iter().map(|p| p.packet().to_frame()).collect();
        let body = payload::encode_all(&frames);
        let want: Vec<EnginePacket<'_>> = ps.iter().map(Eio::packet).collect();
        prop_assert_eq!(payload::decode(&body).unwrap(), want);
        let sizes: usize = frames.iter().map(Frame::payload_len).sum();
        prop_assert_eq!(body.len(), sizes + frames.len() - 1);
    }

    /// Encoding against a budget drains the queue: each response takes at
    /// least one packet, stays within the budget unless it holds a single
    /// packet, takes as many packets as fit (greedy), and decodes to exactly
    /// the frames it took, in order.
    #[test]
    fn budgeted_polling_drains_the_queue(
        ps in prop::collection::vec(eio_packet(true), 0..16),
        budget in prop_oneof![0usize..8, 0usize..300, Just(1_000_000usize)],
    ) {
        let frames: Vec<Frame> = ps.iter().map(|p| p.packet().to_frame()).collect();
        let mut queue: VecDeque<Frame> = frames.iter().cloned().collect();
        let mut done = 0;
        let mut responses = 0;
        while !queue.is_empty() {
            let mut out = b"kept".to_vec(); // `encode` appends; the prefix stays.
            let taken = payload::encode(&mut queue, budget, &mut out);
            prop_assert_eq!(&out[..4], b"kept");
            let body = &out[4..];
            prop_assert!(taken >= 1);
            prop_assert_eq!(queue.len(), frames.len() - done - taken);
            prop_assert!(body.len() <= budget || taken == 1,
                "{} bytes for {} packets over a budget of {}", body.len(), taken, budget);
            if let Some(next) = queue.front() {
                prop_assert!(body.len() + 1 + next.payload_len() > budget,
                    "the next packet would have fitted");
            }
            let want: Vec<EnginePacket<'_>> =
                ps[done..done + taken].iter().map(Eio::packet).collect();
            prop_assert_eq!(payload::decode(body).unwrap(), want);
            done += taken;
            responses += 1;
        }
        prop_assert_eq!(done, frames.len());
        prop_assert!(responses <= frames.len());
        // An empty queue gives an empty response.
        let mut out = Vec::new();
        prop_assert_eq!(payload::encode(&mut queue, budget, &mut out), 0);
        prop_assert!(out.is_empty());
    }
}

// ---------------------------------------------------------------------------
// Socket.IO
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Without floats, every packet comes back exactly, and so does its string
    /// form through `socket::decode` when it has no attachments.
    #[test]
    fn socket_packet_roundtrip_exact(p in sio_packet(false)) {
        let enc = p.encode();
        prop_assert_eq!(enc.binary.len(), p.attachments.len());
        let text = format!("4{}", p.to_sio_string());
        prop_assert_eq!(enc.text.bytes().as_ref(), text.as_bytes());
        let back = decode_frames(&enc);
        prop_assert_eq!(&back, &p);
        if p.attachments.is_empty() {
            prop_assert_eq!(socket::decode(&p.to_sio_string()).unwrap(), p.clone());
        }
        prop_assert_eq!(back.encode(), enc);
    }

    /// With floats: equal as JavaScript values; re-encoding is byte-identical;
    /// a second decode is exactly the first (see the module docs).
    #[test]
    fn socket_packet_roundtrip_with_floats(p in sio_packet(true)) {
        let enc = p.encode();
        let back = decode_frames(&enc);
        prop_assert!(packet_js_eq(&back, &p), "{:?}\n  decoded as\n{:?}", p, back);
        let enc2 = back.encode();
        prop_assert_eq!(&enc2, &enc);
        prop_assert_eq!(decode_frames(&enc2), back);
    }

    /// A float alone: printed as JavaScript prints it, it parses back to the
    /// same `f64` (so no precision is lost on the wire).
    #[test]
    fn floats_survive_the_wire(x in js_float()) {
        let p = Packet::ack("/", 1, vec![Value::from(x)], Vec::new());
        let back = socket::decode(&p.to_sio_string()).unwrap();
        let got = back.args()[0].as_f64().unwrap();
        prop_assert!(got == x, "{:e} came back as {:e} via {}", x, got, p.to_sio_string());
    }
}
