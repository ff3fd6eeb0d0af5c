//! Codec benchmarks:
//!
//! - `event_200b`: a typical Socket.IO event, 198 bytes on the wire
//!   (`42/events,["event_created",{...}]`): encode, decode, and
//!   `encode_raw_event` (the broadcast path, from stored JSON);
//! - `binary_event_2_attachments`: encode into frames; decode the header and
//!   its two parts through a `Decoder`;
//! - `polling_10_packets`: a 10-packet long-polling payload, encoded from a
//!   queue against a 1 MB budget, and decoded.
//!
//! Run: `cargo bench -p eventfeed-protocol --bench codec`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::VecDeque;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eventfeed_protocol::engine::{Frame, payload};
use eventfeed_protocol::socket::{self, Decoder, Packet, encode_raw_event};
use serde_json::Value;
use serde_json::value::RawValue;

/// The stored JSON of a typical event, as a broadcast would carry it.
const EVENT_JSON: &str = r#"{"id":"0190f3c2-7d1e-7a44-9b2f-3c8e5d6a1b20","seq":48213,"tenant_id":"acme","message":"Deploy of api v2.14 done","timestamp":"2025-05-14T09:31:27.512Z","author":"u_8842"}"#;

/// `42/events,["event_created",{...}]` without the Engine.IO `4`.
fn event_string() -> String {
    format!(r#"2/events,["event_created",{EVENT_JSON}]"#)
}

fn event_packet() -> Packet {
    let arg: Value = serde_json::from_str(EVENT_JSON).unwrap();
    Packet::event("/events", "event_created", vec![arg], None, Vec::new())
}

fn binary_packet() -> Packet {
    let arg: Value = serde_json::from_str(EVENT_JSON).unwrap();
    Packet::event(
        "/events",
        "upload",
        vec![arg, socket::placeholder(0), socket::placeholder(1)],
        Some(7),
        vec![Bytes::from(vec![0xab; 1024]), Bytes::from(vec![0xcd; 256])],
    )
}

fn bench_event(c: &mut Criterion) {
    let packet = event_packet();
    let text = event_string();
    assert_eq!(packet.to_sio_string(), text);
    let raw: Box<RawValue> = serde_json::from_str(EVENT_JSON).unwrap();
    assert_eq!(encode_raw_event("/events", "event_created", &[&raw], None), packet.encode().text);

    let mut g = c.benchmark_group("event_200b");
    g.throughput(Throughput::Bytes(text.len() as u64 + 1));
    g.bench_function("encode", |b| b.iter(|| black_box(&packet).encode()));
    g.bench_function("encode_raw_event", |b| {
        b.iter(|| encode_raw_event("/events", "event_created", &[black_box(&*raw)], None))
    });
    g.bench_function("decode", |b| {
        let mut d = Decoder::default();
        b.iter(|| d.decode_text(black_box(&text)).unwrap().unwrap())
    });
    g.finish();
}

fn bench_binary(c: &mut Criterion) {
    let packet = binary_packet();
    let enc = packet.encode();
    let header = std::str::from_utf8(&enc.text.bytes()[1..]).unwrap().to_owned();
    let parts: Vec<Bytes> = enc.binary.iter().map(|f| f.bytes().clone()).collect();

    let mut g = c.benchmark_group("binary_event_2_attachments");
    g.bench_function("encode", |b| b.iter(|| black_box(&packet).encode()));
    g.bench_function("decode", |b| {
        let mut d = Decoder::default();
        b.iter(|| {
            assert!(d.decode_text(black_box(&header)).unwrap().is_none());
            assert!(d.decode_binary(parts[0].clone()).unwrap().is_none());
            d.decode_binary(parts[1].clone()).unwrap().unwrap()
        })
    });
    g.finish();
}

fn bench_polling(c: &mut Criterion) {
    let raw: Box<RawValue> = serde_json::from_str(EVENT_JSON).unwrap();
    let frames: VecDeque<Frame> =
        (0..10).map(|i| encode_raw_event("/events", "event_created", &[&raw], Some(i))).collect();
    let body = payload::encode_all(&frames);
    assert_eq!(payload::decode(&body).unwrap().len(), 10);

    let mut g = c.benchmark_group("polling_10_packets");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("encode", |b| {
        b.iter_batched_ref(
            || (frames.clone(), Vec::with_capacity(body.len())),
            |(queue, out)| {
                assert_eq!(payload::encode(queue, 1_000_000, out), 10);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode", |b| b.iter(|| payload::decode(black_box(&body)).unwrap()));
    g.finish();
}

criterion_group!(benches, bench_event, bench_binary, bench_polling);
criterion_main!(benches);
