//! The `@socket.io/redis-adapter` codec: the input as a message received on a
//! broadcast channel (`decode_broadcast`), on the request channel
//! (`decode_request`) and on a response channel (`decode_response`).
//!
//! Whatever decodes must encode again or be refused with an error (a
//! placeholder-shaped object without its attachment, nesting at the limit);
//! what is encoded must decode; and one more decode → encode round must not
//! change the bytes (the first may: rooms given as numbers become strings,
//! a `__proto__` key read from JSON is dropped by the msgpack reader).
#![no_main]

use eventfeed_protocol::adapter::{
    decode_broadcast, decode_request, decode_response, encode_broadcast, encode_request, encode_response,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = decode_broadcast(data)
        && let Ok(e1) = encode_broadcast(&b)
    {
        let d2 = decode_broadcast(&e1).expect("an encoded broadcast decodes");
        let e2 = encode_broadcast(&d2).expect("a decoded broadcast re-encodes");
        let d3 = decode_broadcast(&e2).expect("an encoded broadcast decodes");
        assert_eq!(encode_broadcast(&d3).ok(), Some(e2));
    }
    if let Ok((uid, r)) = decode_request(data)
        && let Ok(e1) = encode_request(uid.as_deref(), &r)
    {
        let (uid, r) = decode_request(&e1).expect("an encoded request decodes");
        let e2 = encode_request(uid.as_deref(), &r).expect("a decoded request re-encodes");
        let (uid, r) = decode_request(&e2).expect("an encoded request decodes");
        assert_eq!(encode_request(uid.as_deref(), &r).ok(), Some(e2));
    }
    if let Ok(r) = decode_response(data)
        && let Ok(e1) = encode_response(&r)
    {
        let d2 = decode_response(&e1).expect("an encoded response decodes");
        let e2 = encode_response(&d2).expect("a decoded response re-encodes");
        let d3 = decode_response(&e2).expect("an encoded response decodes");
        assert_eq!(encode_response(&d3).ok(), Some(e2));
    }
});
