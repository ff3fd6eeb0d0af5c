//! Engine.IO packets: the input as a websocket binary frame, and as a text
//! frame (its UTF-8 reading, lossy if need be). A decoded text packet must
//! re-encode to a frame that decodes to the same packet.
#![no_main]

use std::borrow::Cow;

use eventfeed_protocol::engine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = engine::decode_binary(data);
    assert_eq!(p.to_frame().decode().ok(), Some(p));

    let text = match std::str::from_utf8(data) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(data),
    };
    if let Ok(p) = engine::decode_text(&text) {
        let frame = p.to_frame();
        assert!(frame.is_text());
        assert_eq!(frame.decode().ok(), Some(p));
    }
});
