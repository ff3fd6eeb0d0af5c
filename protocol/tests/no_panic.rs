//! Every decoder in the crate returns `Ok` or `Err` on any input, and never
//! panics: arbitrary bytes, arbitrary strings, strings built from protocol
//! tokens (to get past the first checks), and valid packets with bytes
//! inserted, deleted, replaced or truncated.
//!
//! Decoders covered: [`engine::decode_text`], [`engine::decode_binary`],
//! [`Frame::decode`], [`payload::decode`], [`Handshake::parse`],
//! [`Query::parse`], [`socket::decode`], and sequences of text and binary
//! messages through one [`Decoder`].
//!
//! Whatever decodes successfully is also re-encoded, and must decode again to
//! the same thing (for Socket.IO, re-encoding a decoded packet is stable: see
//! `roundtrip.rs` for why that, and not `==` on the first decode, is the
//! right equality when floats are involved).
//!
//! The fuzz targets in `protocol/fuzz` run the same checks without a case
//! limit; any input they ever found to fail is kept below as a regression test.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use eventfeed_protocol::engine::{self, Frame, Handshake, Query, payload};
use eventfeed_protocol::socket::{self, Decoder, Packet};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The checks, one per decoder
// ---------------------------------------------------------------------------

fn check_engine_text(s: &str) {
    if let Ok(p) = engine::decode_text(s) {
        let frame = p.to_frame();
        assert!(frame.is_text());
        assert_eq!(frame.decode().unwrap(), p, "re-decoding {s:?}");
    }
}

fn check_engine_binary(b: &[u8]) {
    let p = engine::decode_binary(b);
    assert_eq!(p.to_frame().decode().unwrap(), p);
    // A text frame whose bytes are not UTF-8 is an error, not a panic.
    let _ = Frame::Text(Bytes::copy_from_slice(b)).decode();
}

fn check_payload(b: &[u8]) {
    if let Ok(packets) = payload::decode(b) {
        assert!(!packets.is_empty());
        let frames: Vec<Frame> = packets.iter().map(|p| p.to_frame()).collect();
        let body = payload::encode_all(&frames);
        // Text data may itself hold no separator (it split there), so the
        // re-encoded payload has the same packets.
        assert_eq!(payload::decode(&body).unwrap(), packets);
    }
}

fn check_handshake(s: &str) {
    if let Ok(h) = Handshake::parse(s) {
        let frame = h.to_frame();
        let text = std::str::from_utf8(frame.bytes()).unwrap();
        assert_eq!(Handshake::parse(&text[1..]).unwrap(), h);
    }
}

fn check_query(s: &str) {
    if let Ok(q) = Query::parse(s) {
        assert!(q.sid.is_some() || q.eio.as_deref() == Some("4"));
        let _ = q.check_handshake_method(true, false);
        let _ = q.check_handshake_method(false, true);
    }
}

/// A decoded Socket.IO packet re-encodes to frames that decode to a packet
/// that encodes the same again.
fn check_reencode(p: &Packet) {
    if p.kind.is_binary() {
        // Every placeholder points at an attachment that arrived.
        fn walk(v: &serde_json::Value, n: usize) {
            if let Some(i) = socket::placeholder_index(v) {
                assert!(i < n, "placeholder {i} of {n}");
            }
            match v {
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, n)),
                serde_json::Value::Object(m) => m.values().for_each(|x| walk(x, n)),
                _ => {}
            }
        }
        if let Some(data) = &p.data {
            walk(data, p.attachments.len());
        }
    }
    let enc = p.encode();
    let text = std::str::from_utf8(enc.text.bytes()).unwrap();
    let mut d = Decoder::new(enc.binary.len());
    let mut out = d.decode_text(&text[1..]).unwrap();
    for part in &enc.binary {
        assert!(out.is_none());
        out = d.decode_binary(part.bytes().clone()).unwrap();
    }
    let again = out.expect("re-encoded packet completes");
    assert_eq!(again.encode(), enc, "unstable re-encoding of {p:?}");
}

fn check_socket_text(s: &str) {
    if let Ok(p) = socket::decode(s) {
        assert!(p.attachments.is_empty());
        check_reencode(&p);
    }
}

/// One message for a session's [`Decoder`]: text or binary.
#[derive(Debug, Clone)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
}

fn check_decoder_sequence(max_attachments: usize, msgs: &[Msg]) {
    let mut d = Decoder::new(max_attachments);
    for m in msgs {
        let r = match m {
            Msg::Text(s) => {
                let r = d.decode_text(s);
                if r.is_err() {
                    // An error never leaves a half-built packet behind.
                    assert!(!d.is_reconstructing());
                }
                r
            }
            Msg::Binary(b) => d.decode_binary(Bytes::copy_from_slice(b)),
        };
        match r {
            Ok(Some(p)) => {
                assert!(!d.is_reconstructing());
                assert!(p.attachments.len() <= max_attachments);
                check_reencode(&p);
            }
            Ok(None) => assert!(d.is_reconstructing()),
            Err(_) => {}
        }
    }
}

/// Every string decoder on `s`.
fn check_all_str(s: &str) {
    check_engine_text(s);
    check_handshake(s);
    check_query(s);
    check_socket_text(s);
    check_decoder_sequence(3, &[Msg::Text(s.to_owned())]);
}

/// Every decoder on `b`: the byte decoders directly, the string decoders on
/// its lossy UTF-8 reading.
fn check_all_bytes(b: &[u8]) {
    check_engine_binary(b);
    check_payload(b);
    check_all_str(&String::from_utf8_lossy(b));
}

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// Valid inputs of every decoder, mostly literals from the protocol documents.
const VALID: &[&str] = &[
    // Engine.IO packets and payloads.
    "0{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":5000,\"maxPayload\":1000000}",
    "{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":5000,\"maxPayload\":1000000}",
    "1",
    "2",
    "2probe",
    "3probe",
    "4hello",
    "5",
    "6",
    "4hello\u{1e}2\u{1e}4world",
    "4hello\u{1e}bAQIDBA==",
    "bAQIDBA==",
    // Query strings.
    "EIO=4&transport=polling&t=N8hyd6w",
    "EIO=4&transport=websocket&sid=lv_VI97HAXpY6yYWAAAC",
    "EIO=4&transport=polling&sid=a%2Db+c",
    // Socket.IO packets (without the Engine.IO `4`).
    "0",
    "0{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}",
    "0/admin,",
    "0/admin,{\"sid\":\"oSO0OpakMV_3jnilAAAA\"}",
    "4{\"message\":\"Not authorized\"}",
    "1/admin,",
    "2[\"foo\"]",
    "2/admin,[\"bar\"]",
    "212[\"foo\",{\"a\":[1,2.5,-3e-7,\"\\u0000\"]}]",
    "3/admin,13[\"bar\"]",
    "51-[\"baz\",{\"_placeholder\":true,\"num\":0}]",
    "52-/admin,7[\"up\",{\"_placeholder\":true,\"num\":0},[{\"_placeholder\":true,\"num\":1}]]",
    "61-/admin,13[{\"_placeholder\":true,\"num\":0}]",
    "50-[\"a\"]",
];

/// Pieces of the wire formats, to build strings that get past the first checks.
const TOKENS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "9",
    "-",
    "/",
    "/admin",
    ",",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "\"a\"",
    ":",
    "\"_placeholder\":true",
    "\"num\":",
    "{\"_placeholder\":true,\"num\":0}",
    "18446744073709551616",
    "99999999999999999999999",
    "true",
    "null",
    "1.5",
    "1e400",
    "-0",
    "\u{1e}",
    "b",
    "AQID",
    "=",
    "==",
    "%",
    "%2D",
    "%+1",
    "&",
    "EIO=4",
    "transport=",
    "polling",
    "websocket",
    "sid=",
    "\\u0000",
    "\\ud800",
    "é",
    "\u{0}",
    "\"connect\"",
];

fn token_string() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|t| t.concat())
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(prop::sample::Index, u8),
    InsertToken(prop::sample::Index, &'static str),
    Replace(prop::sample::Index, u8),
    Delete(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
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
            Mutation::InsertToken(i, t) => {
                let at = i.index(len + 1);
                b.splice(at..at, t.bytes());
            }
            Mutation::Replace(i, x) if len > 0 => b[i.index(len)] = *x,
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

/// A valid input with a few mutations.
fn mutated_valid() -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(VALID), prop::collection::vec(mutation(), 1..5))
        .prop_map(|(v, m)| apply(v.as_bytes().to_vec(), &m))
}

/// A message for a [`Decoder`]: text that is often a (mutated) valid packet,
/// or a binary part.
fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        2 => prop::sample::select(VALID).prop_map(|s| Msg::Text(s.to_owned())),
        2 => mutated_valid().prop_map(|b| Msg::Text(String::from_utf8_lossy(&b).into_owned())),
        1 => token_string().prop_map(Msg::Text),
        3 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Msg::Binary),
    ]
}

/// `cases` per property (`PROPTEST_CASES` overrides it); no failure
/// persistence (it needs a `lib.rs` next to the test file to place its files).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
        check_all_bytes(&b);
    }

    #[test]
    fn arbitrary_strings(s in any::<String>()) {
        check_all_str(&s);
        check_payload(s.as_bytes());
    }

    #[test]
    fn token_strings(s in token_string()) {
        check_all_str(&s);
        check_payload(s.as_bytes());
    }

    #[test]
    fn mutated_valid_inputs(b in mutated_valid()) {
        check_all_bytes(&b);
    }

    #[test]
    fn decoder_sequences(
        max in prop_oneof![0usize..4, Just(10usize), Just(usize::MAX)],
        msgs in prop::collection::vec(msg(), 0..10),
    ) {
        check_decoder_sequence(max, &msgs);
    }
}

// ---------------------------------------------------------------------------
// Fixed inputs: edge cases, and regressions found by fuzzing
// ---------------------------------------------------------------------------

#[test]
fn valid_inputs_decode() {
    for v in VALID {
        check_all_bytes(v.as_bytes());
    }
    assert!(payload::decode(b"4hello\x1e2\x1e4world").is_ok());
    assert!(Query::parse("EIO=4&transport=polling&t=N8hyd6w").is_ok());
    assert!(socket::decode("2[\"foo\"]").is_ok());
}

#[test]
fn edge_cases() {
    let deep = format!("2[\"a\",{}{}]", "[".repeat(200), "]".repeat(200));
    let deep_obj = format!("2[\"a\",{}1{}]", "{\"a\":".repeat(200), "}".repeat(200));
    let cases: &[&str] = &[
        "",
        "4",
        "b",
        "b=",
        "\u{1e}",
        "\u{1e}\u{1e}",
        "%",
        "sid=%",
        "transport=%e9",
        "5",
        "5-",
        "518446744073709551616-[\"a\"]",
        "5999999999999999999999-[\"a\"]",
        "2/",
        "2/,",
        "2/admin",
        "218446744073709551616[\"a\"]",
        "2[\"a\",1e400]",
        "2[\"a\",-0.0,1.0,1e21,123456789012345678901234567890]",
        "2[\"a\",\"\\ud800\"]",
        "51-[\"a\",{\"_placeholder\":true,\"num\":-1}]",
        "51-[\"a\",{\"_placeholder\":true,\"num\":1.0}]",
        "51-[\"a\",{\"_placeholder\":true,\"num\":18446744073709551615}]",
        "null",
        "{\"sid\":1}",
        &deep,
        &deep_obj,
    ];
    for c in cases {
        check_all_bytes(c.as_bytes());
    }
    check_decoder_sequence(
        usize::MAX,
        &[
            Msg::Text("5999999999999999-[\"a\"]".into()),
            Msg::Binary(vec![1]),
            Msg::Text("2[\"a\"]".into()),
            Msg::Binary(vec![2]),
        ],
    );
}
