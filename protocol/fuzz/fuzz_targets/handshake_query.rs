//! Request query strings (`Query::parse`) and the open packet's JSON
//! (`Handshake::parse`), on the input's UTF-8 reading (lossy if need be). A
//! parsed handshake must re-encode to JSON that parses to the same value.
#![no_main]

use eventfeed_protocol::engine::{Handshake, Query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(q) = Query::parse(&s) {
        assert!(q.sid.is_some() || q.eio.as_deref() == Some("4"));
        let _ = q.check_handshake_method(true, false);
    }
    if let Ok(h) = Handshake::parse(&s) {
        let frame = h.to_frame();
        let json = std::str::from_utf8(&frame.bytes()[1..]).ok();
        assert_eq!(json.and_then(|j| Handshake::parse(j).ok()), Some(h));
    }
});
