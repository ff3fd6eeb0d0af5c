//! HTTP long-polling payloads: packets joined by the record separator `0x1e`,
//! binary messages written as `b` + base64.
//!
//! [`decode`] splits a POST body into packets. [`encode`] fills a GET response
//! from a queue of [`Frame`]s against a byte budget (the session's `maxPayload`):
//! it takes packets from the front while they fit and leaves the rest queued
//! for the next poll, so a response never exceeds the budget — except that the
//! first packet is always taken, or a packet larger than the budget would block
//! the queue forever.

use std::borrow::Cow;
use std::collections::VecDeque;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::packet::{DecodeError, Frame, Packet, decode_text};

/// The packet separator in polling payloads (ASCII record separator).
pub const SEPARATOR: u8 = 0x1e;

/// Decodes a polling payload (a POST body) into its packets, in order.
///
/// The whole body must decode; one bad packet fails it (the reference server
/// closes the session on a parse error, so there is nothing to keep).
pub fn decode(body: &[u8]) -> Result<Vec<Packet<'_>>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::InvalidUtf8 { valid_up_to: e.valid_up_to() })?;
    text.split(SEPARATOR as char).map(decode_part).collect()
}

fn decode_part(part: &str) -> Result<Packet<'_>, DecodeError> {
    match part.strip_prefix('b') {
        Some(b64) => {
            BASE64.decode(b64).map(|data| Packet::Binary(Cow::Owned(data))).map_err(|_| DecodeError::InvalidBase64)
        }
        None => decode_text(part),
    }
}

/// Appends packets from the front of `queue` to `out` as one polling payload,
/// while the payload stays within `max_len` bytes; returns how many were taken.
///
/// At least one packet is taken when the queue is not empty.
pub fn encode(queue: &mut VecDeque<Frame>, max_len: usize, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let mut taken = 0;
    while let Some(frame) = queue.front() {
        let sep = usize::from(taken > 0);
        if taken > 0 && out.len() - start + sep + frame.payload_len() > max_len {
            break;
        }
        if sep == 1 {
            out.push(SEPARATOR);
        }
        write_frame(frame, out);
        queue.pop_front();
        taken += 1;
    }
    taken
}

/// Encodes all of `frames` as one payload, with no budget (for clients and tests).
pub fn encode_all<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        write_frame(frame, &mut out);
    }
    out
}

fn write_frame(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Text(b) => out.extend_from_slice(b),
        Frame::Binary(b) => {
            out.push(b'b');
            let at = out.len();
            out.resize(at + b.len().div_ceil(3) * 4, 0);
            // The slice is sized exactly for the encoding, so this cannot fail.
            let written = BASE64.encode_slice(b, &mut out[at..]).unwrap_or(0);
            out.truncate(at + written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(s: &'static str) -> Frame {
        Frame::Text(Bytes::from_static(s.as_bytes()))
    }

    // Literal examples from the Engine.IO v4 protocol document ("HTTP long-polling").
    #[test]
    fn protocol_document_payloads() {
        let payload = b"4hello\x1e2\x1e4world";
        assert_eq!(
            decode(payload).unwrap(),
            vec![Packet::Message("hello"), Packet::Ping(""), Packet::Message("world")]
        );
        assert_eq!(encode_all(&[text("4hello"), text("2"), text("4world")]), payload.to_vec());

        let payload = b"4hello\x1ebAQIDBA==";
        assert_eq!(
            decode(payload).unwrap(),
            vec![Packet::Message("hello"), Packet::Binary(Cow::Owned(vec![1, 2, 3, 4]))]
        );
        assert_eq!(encode_all(&[text("4hello"), Frame::Binary(Bytes::from_static(&[1, 2, 3, 4]))]), payload.to_vec());
    }

    #[test]
    fn single_packets_and_empty_parts() {
        assert_eq!(decode(b"6").unwrap(), vec![Packet::Noop]);
        assert_eq!(decode(b""), Err(DecodeError::Empty));
        assert_eq!(decode(b"4a\x1e"), Err(DecodeError::Empty));
        assert_eq!(decode(b"\x1e4a"), Err(DecodeError::Empty));
        assert_eq!(decode(b"4a\x1e9"), Err(DecodeError::UnknownType { byte: b'9' }));
        assert_eq!(decode(b"b!!!"), Err(DecodeError::InvalidBase64));
        assert_eq!(decode(b"4\xff"), Err(DecodeError::InvalidUtf8 { valid_up_to: 1 }));
        // An empty binary message is legal.
        assert_eq!(decode(b"b").unwrap(), vec![Packet::Binary(Cow::Owned(vec![]))]);
    }

    #[test]
    fn encode_respects_the_budget_and_keeps_the_rest_queued() {
        let mut q: VecDeque<Frame> = [text("4aaaa"), text("4bbbb"), text("4cccc")].into_iter().collect();
        let mut out = Vec::new();
        // "4aaaa" + sep + "4bbbb" = 11 bytes; the third would make 17.
        assert_eq!(encode(&mut q, 16, &mut out), 2);
        assert_eq!(out, b"4aaaa\x1e4bbbb");
        assert_eq!(q.len(), 1);
        out.clear();
        assert_eq!(encode(&mut q, 16, &mut out), 1);
        assert_eq!(out, b"4cccc");
        assert_eq!(encode(&mut q, 16, &mut out), 0);
    }

    #[test]
    fn exact_fit_is_taken() {
        let mut q: VecDeque<Frame> = [text("4aa"), text("4bb")].into_iter().collect();
        let mut out = Vec::new();
        assert_eq!(encode(&mut q, 7, &mut out), 2);
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn an_oversized_first_packet_is_sent_alone() {
        let mut q: VecDeque<Frame> = [text("4this-is-long"), text("4x")].into_iter().collect();
        let mut out = Vec::new();
        assert_eq!(encode(&mut q, 4, &mut out), 1);
        assert_eq!(out, b"4this-is-long");
    }

    #[test]
    fn binary_is_budgeted_by_its_base64_length() {
        let bin = Frame::Binary(Bytes::from_static(&[0u8; 6])); // "b" + 8 chars
        let mut q: VecDeque<Frame> = [text("4a"), bin].into_iter().collect();
        let mut out = Vec::new();
        assert_eq!(encode(&mut q, 2 + 1 + 9 - 1, &mut out), 1);
        let mut out = Vec::new();
        assert_eq!(encode(&mut q, 9, &mut out), 1);
        assert_eq!(out, b"bAAAAAAAA");
    }
}
