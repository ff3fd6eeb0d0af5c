//! Socket.IO packets through one session's `Decoder`.
//!
//! The input is a sequence of messages separated by `0xff` (a byte no UTF-8
//! text holds). A message starting with `b` is a binary part (the rest of its
//! bytes); any other is a text packet (the rest, read as UTF-8, lossy if need
//! be): `t51-["baz",{"_placeholder":true,"num":0}]` 0xff `b` 0x01 0x02.
//!
//! Each text message also goes through `socket::decode` alone. Every packet
//! that decodes must re-encode into frames that decode to a packet encoding
//! to the same frames.
#![no_main]

use bytes::Bytes;
use eventfeed_protocol::socket::{self, Decoder, Packet};
use libfuzzer_sys::fuzz_target;

fn check_reencode(p: &Packet) {
    let enc = p.encode();
    let text = std::str::from_utf8(enc.text.bytes()).expect("encoded text is UTF-8");
    let mut d = Decoder::new(enc.binary.len());
    let mut out = d.decode_text(&text[1..]).expect("re-encoded header decodes");
    for part in &enc.binary {
        assert!(out.is_none());
        out = d.decode_binary(part.bytes().clone()).expect("re-encoded part decodes");
    }
    let again = out.expect("re-encoded packet completes");
    assert_eq!(again.encode(), enc);
}

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::default();
    for msg in data.split(|&b| b == 0xff) {
        let r = match msg.split_first() {
            Some((b'b', rest)) => d.decode_binary(Bytes::copy_from_slice(rest)),
            Some((_, rest)) => {
                let s = String::from_utf8_lossy(rest);
                if let Ok(p) = socket::decode(&s) {
                    check_reencode(&p);
                }
                let r = d.decode_text(&s);
                if r.is_err() {
                    assert!(!d.is_reconstructing());
                }
                r
            }
            None => continue,
        };
        if let Ok(Some(p)) = r {
            assert!(!d.is_reconstructing());
            check_reencode(&p);
        }
    }
});
