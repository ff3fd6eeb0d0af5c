//! Long-polling payloads (POST bodies): a decoded payload must re-encode to
//! one that decodes to the same packets.
#![no_main]

use eventfeed_protocol::engine::{Frame, payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packets) = payload::decode(data) {
        assert!(!packets.is_empty());
        let frames: Vec<Frame> = packets.iter().map(|p| p.to_frame()).collect();
        let body = payload::encode_all(&frames);
        assert_eq!(payload::decode(&body).ok(), Some(packets));
    }
});
