//! Literal packets from the Socket.IO v5 protocol document ("Packet encoding"
//! and "Sample session"), decoded and encoded exactly, plus the reference
//! parser's rejections.

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::engine::Frame;

fn bin(b: &'static [u8]) -> Bytes {
    Bytes::from_static(b)
}

/// Decodes `header` + `parts` with a fresh decoder and checks that encoding the
/// packet gives back exactly the same frames (with the Engine.IO `4` prefix).
fn roundtrip(header: &str, parts: &[&'static [u8]]) -> Packet {
    let mut d = Decoder::default();
    let mut out = d.decode_text(header).unwrap();
    for (i, p) in parts.iter().enumerate() {
        assert!(out.is_none(), "packet complete before part {i}");
        out = d.decode_binary(bin(p)).unwrap();
    }
    let packet = out.expect("packet incomplete");
    let enc = packet.encode();
    assert_eq!(enc.text, Frame::Text(Bytes::from(format!("4{header}"))), "re-encoding {header}");
    assert_eq!(enc.binary, parts.iter().map(|p| Frame::Binary(bin(p))).collect::<Vec<_>>());
    assert_eq!(packet.to_sio_string(), header);
    packet
}

#[test]
fn connection_to_a_namespace() {
    let p = roundtrip("0", &[]);
    assert_eq!((p.kind, p.nsp.as_str(), p.data), (PacketType::Connect, "/", None));
    let p = roundtrip(r#"0{"sid":"wZX3oN0bSVIhsaknAAAI"}"#, &[]);
    assert_eq!(p.data, Some(json!({"sid": "wZX3oN0bSVIhsaknAAAI"})));
    let p = roundtrip("0/admin,", &[]);
    assert_eq!((p.kind, p.nsp.as_str()), (PacketType::Connect, "/admin"));
    let p = roundtrip(r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#, &[]);
    assert_eq!(p.nsp, "/admin");
    let p = roundtrip(r#"4{"message":"Not authorized"}"#, &[]);
    assert_eq!(p.kind, PacketType::ConnectError);
    assert_eq!(p, Packet::connect_error("/", "Not authorized", None));
    assert_eq!(
        Packet::connect("/", Some(json!({"sid": "wZX3oN0bSVIhsaknAAAI"}))).encode().text.bytes().as_ref(),
        br#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#
    );
}

#[test]
fn sending_and_receiving_data() {
    let p = roundtrip(r#"2["foo"]"#, &[]);
    assert_eq!((p.kind, p.event_name(), p.args()), (PacketType::Event, Some("foo"), &[][..]));
    let p = roundtrip(r#"2/admin,["bar"]"#, &[]);
    assert_eq!((p.nsp.as_str(), p.event_name()), ("/admin", Some("bar")));
    let p = roundtrip(r#"51-["baz",{"_placeholder":true,"num":0}]"#, &[&[1, 2, 3, 4]]);
    assert_eq!(p.kind, PacketType::BinaryEvent);
    assert_eq!(p.attachments, vec![bin(&[1, 2, 3, 4])]);
    assert_eq!(placeholder_index(&p.args()[0]), Some(0));
    let p = roundtrip(
        r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        &[&[1, 2], &[3, 4]],
    );
    assert_eq!(p.nsp, "/admin");
    assert_eq!(p.attachments.len(), 2);
    // Built from the API, the same bytes.
    let built =
        Packet::event("/admin", "baz", vec![placeholder(0), placeholder(1)], None, vec![bin(&[1, 2]), bin(&[3, 4])]);
    assert_eq!(built, p);
    assert_eq!(Packet::event("/", "foo", vec![], None, vec![]).encode().text.bytes().as_ref(), br#"42["foo"]"#);
}

#[test]
fn acknowledgement() {
    let p = roundtrip(r#"212["foo"]"#, &[]);
    assert_eq!(p.id, Some(12));
    let p = roundtrip("312[]", &[]);
    assert_eq!((p.kind, p.id, p.args()), (PacketType::Ack, Some(12), &[][..]));
    roundtrip(r#"2/admin,13["foo"]"#, &[]);
    let p = roundtrip(r#"3/admin,13["bar"]"#, &[]);
    assert_eq!(p, Packet::ack("/admin", 13, vec![json!("bar")], vec![]));
    let p = roundtrip(r#"51-14["foo",{"_placeholder":true,"num":0}]"#, &[&[1, 2, 3, 4]]);
    assert_eq!(p.id, Some(14));
    roundtrip(r#"314["bar"]"#, &[]);
    roundtrip(r#"215["foo"]"#, &[]);
    let p = roundtrip(r#"61-15["bar",{"_placeholder":true,"num":0}]"#, &[&[1, 2, 3, 4]]);
    assert_eq!(p.kind, PacketType::BinaryAck);
    assert_eq!(p, Packet::ack("/", 15, vec![json!("bar"), placeholder(0)], vec![bin(&[1, 2, 3, 4])]));
}

#[test]
fn disconnection_from_a_namespace() {
    assert_eq!(roundtrip("1", &[]), Packet::disconnect("/"));
    assert_eq!(roundtrip("1/admin,", &[]), Packet::disconnect("/admin"));
}

#[test]
fn sample_session_packets() {
    // Engine.IO messages of the "Sample session": the Socket.IO part after "4".
    assert_eq!(roundtrip(r#"2["hey","Jude"]"#, &[]).args(), &[json!("Jude")][..]);
    assert_eq!(roundtrip("0", &[]).kind, PacketType::Connect);
}

#[test]
fn raw_event_encoding_matches_the_value_encoder() {
    let arg = serde_json::value::RawValue::from_string(r#"{"id":"x","seq":1}"#.to_owned()).unwrap();
    let raw = encode_raw_event("/events", "event_created", &[&arg], None);
    let val = Packet::event("/events", "event_created", vec![json!({"id": "x", "seq": 1})], None, vec![]).encode();
    assert_eq!(raw, val.text);
    assert_eq!(raw.bytes().as_ref(), br#"42/events,["event_created",{"id":"x","seq":1}]"#);
    assert_eq!(encode_raw_event("/", "a", &[], Some(7)).bytes().as_ref(), br#"427["a"]"#);
    let ack = encode_raw_ack("/events", 3, &[&arg]);
    assert_eq!(ack, Packet::ack("/events", 3, vec![json!({"id": "x", "seq": 1})], vec![]).encode().text);
    assert_eq!(encode_raw_ack("/", 0, &[]).bytes().as_ref(), b"430[]");
}

#[test]
fn payload_rules_of_the_reference_parser() {
    let err = |s: &str| decode(s).unwrap_err();
    // CONNECT: an object or nothing.
    assert!(decode(r#"0{"token":"123"}"#).is_ok());
    assert_eq!(err("0[]"), DecodeError::InvalidPayload { kind: PacketType::Connect });
    assert_eq!(err(r#"0"x""#), DecodeError::InvalidPayload { kind: PacketType::Connect });
    // DISCONNECT: nothing.
    assert_eq!(err("1{}"), DecodeError::InvalidPayload { kind: PacketType::Disconnect });
    // EVENT: a non-empty array starting with a non-reserved string.
    for bad in ["2", "2[]", "2{}", r#"2"x""#, "2[1]", "2[null]", r#"2[["a"]]"#] {
        assert_eq!(err(bad), DecodeError::InvalidPayload { kind: PacketType::Event }, "{bad}");
    }
    for reserved in RESERVED_EVENTS {
        assert_eq!(err(&format!(r#"2["{reserved}"]"#)), DecodeError::InvalidPayload { kind: PacketType::Event });
    }
    // ACK: an array.
    assert_eq!(err("3"), DecodeError::InvalidPayload { kind: PacketType::Ack });
    assert_eq!(err("3{}"), DecodeError::InvalidPayload { kind: PacketType::Ack });
    assert!(decode("3[]").is_ok());
    // CONNECT_ERROR: a string or an object.
    assert!(decode(r#"4"nope""#).is_ok());
    assert_eq!(err("4[]"), DecodeError::InvalidPayload { kind: PacketType::ConnectError });
    // Types, JSON, ids, attachment counts.
    assert_eq!(err(""), DecodeError::Empty);
    assert_eq!(err("7"), DecodeError::UnknownType { byte: b'7' });
    assert_eq!(err("a"), DecodeError::UnknownType { byte: b'a' });
    assert_eq!(err("2[\"a\""), DecodeError::InvalidJson);
    assert_eq!(err(r#"2["a"]x"#), DecodeError::InvalidJson);
    assert_eq!(err(r#"299999999999999999999["a"]"#), DecodeError::InvalidAckId);
    assert_eq!(decode(r#"218446744073709551615["a"]"#).unwrap().id, Some(u64::MAX));
    assert_eq!(err(r#"5["a"]"#), DecodeError::IllegalAttachments);
    assert_eq!(err(r#"5-["a"]"#), DecodeError::IllegalAttachments);
    assert_eq!(err(r#"5x-["a"]"#), DecodeError::IllegalAttachments);
    assert_eq!(err("51"), DecodeError::IllegalAttachments);
    // A namespace without comma runs to the end.
    assert_eq!(decode("0/admin").unwrap().nsp, "/admin");
    // Deep nesting is an error, not a stack overflow.
    let deep = format!(r#"2["a",{}{}]"#, "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(err(&deep), DecodeError::InvalidJson);
}

#[test]
fn binary_reassembly_rules() {
    let mut d = Decoder::new(2);
    // Too many attachments announced.
    assert_eq!(
        d.decode_text(r#"53-["a",{"_placeholder":true,"num":0}]"#),
        Err(DecodeError::TooManyAttachments { count: 3, max: 2 })
    );
    assert_eq!(
        d.decode_text(r#"518446744073709551616-["a"]"#),
        Err(DecodeError::IllegalAttachments),
        "a count beyond u64 is malformed"
    );
    // Forged placeholder indexes.
    for forged in [
        r#"51-["a",{"_placeholder":true,"num":1}]"#,
        r#"51-["a",{"_placeholder":true,"num":-1}]"#,
        r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
        r#"51-["a",{"_placeholder":true,"num":0.5}]"#,
        r#"51-["a",{"_placeholder":true}]"#,
        r#"51-["a",{"x":[{"_placeholder":true,"num":7}]}]"#,
    ] {
        assert_eq!(d.decode_text(forged), Err(DecodeError::IllegalPlaceholder), "{forged}");
        assert!(!d.is_reconstructing());
    }
    // `_placeholder` other than `true` is plain data, as in the reference.
    assert!(d.decode_text(r#"51-["a",{"_placeholder":1,"num":9}]"#).unwrap().is_none());
    assert!(d.decode_binary(bin(b"x")).unwrap().is_some());
    // Text while parts are awaited; binary with nothing awaited.
    assert!(d.decode_text(r#"52-["a",{"_placeholder":true,"num":1}]"#).unwrap().is_none());
    assert!(d.decode_binary(bin(b"x")).unwrap().is_none());
    assert_eq!(d.decode_text(r#"2["a"]"#), Err(DecodeError::UnexpectedText));
    assert!(!d.is_reconstructing());
    assert_eq!(d.decode_binary(bin(b"x")), Err(DecodeError::UnexpectedBinary));
    // A binary ACK is reassembled too.
    assert!(d.decode_text(r#"61-/admin,4[{"_placeholder":true,"num":0}]"#).unwrap().is_none());
    let p = d.decode_binary(bin(&[9])).unwrap().unwrap();
    assert_eq!((p.kind, p.id, p.nsp.as_str()), (PacketType::BinaryAck, Some(4), "/admin"));
    // Zero attachments completes at once.
    assert_eq!(d.decode_text(r#"50-["a"]"#).unwrap().unwrap().kind, PacketType::BinaryEvent);
}

#[test]
fn encode_binary_with_placeholders_in_nested_args() {
    let p = Packet::event(
        "/",
        "upload",
        vec![json!({"name": "f", "parts": [placeholder(0), placeholder(1)]})],
        Some(1),
        vec![bin(b"ab"), bin(b"cd")],
    );
    let enc = p.encode();
    assert_eq!(
        enc.text.bytes().as_ref(),
        br#"452-1["upload",{"name":"f","parts":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}]"#
    );
    assert_eq!(enc.binary.len(), 2);
}
