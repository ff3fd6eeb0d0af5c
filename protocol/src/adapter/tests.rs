//! Unit tests of the adapter codec: the message shapes, the msgpack → JSON mapping rules one by one, and
//! malformed input. The full set of Node vectors, one per message type, is `protocol/tests/vectors/` (see
//! `adapter_vectors.rs` there).
//!
//! Byte fixtures below were produced by the real Node packages with this script (run it in a directory where
//! `npm install notepack.io@3.0.1 @socket.io/redis-adapter@8.3.0 @socket.io/redis-emitter@5.1.0 socket.io@4`
//! was done, then `node gen.js`; it prints JSON with the hex of each message and its channel). Request ids are
//! random (uid2), so regenerating changes them.
//!
//! ```js
//! // Generates byte fixtures for the adapter codec's unit tests with the real notepack.io 3.0.1,
//! // @socket.io/redis-adapter 8.3.0, @socket.io/redis-emitter 5.1.0 and socket.io 4.8.
//! // npm install notepack.io@3.0.1 @socket.io/redis-adapter@8.3.0 @socket.io/redis-emitter@5.1.0 socket.io@4
//! const { EventEmitter } = require("events");
//! const notepack = require("notepack.io");
//! const { Server } = require("socket.io");
//! const { createAdapter } = require("@socket.io/redis-adapter");
//! const { Emitter } = require("@socket.io/redis-emitter");
//!
//! class MockRedis extends EventEmitter {
//!   constructor() { super(); this.published = []; }
//!   psubscribe() {} subscribe() {} punsubscribe() {} unsubscribe() {}
//!   publish(channel, msg) { this.published.push([channel, Buffer.isBuffer(msg) ? msg : Buffer.from(msg)]); }
//!   send_command(cmd, args, cb) { cb(null, ["x", 2]); } // PUBSUB NUMSUB -> 2 servers
//! }
//! const out = {};
//! const take = (client, name) => {
//!   const [channel, msg] = client.published.shift();
//!   out[name] = { channel, hex: msg.toString("hex") };
//! };
//!
//! (async () => {
//!   // --- emitter
//!   const er = new MockRedis();
//!   const emitter = new Emitter(er);
//!   emitter.of("/events").to("room1").emit("ev", "str", 42, { nested: { a: [1, 2.5, null], b: true }, u: undefined }, Buffer.from([1, 2, 3]));
//!   take(er, "emitter_room");
//!   emitter.of("/events").except(["r1", "r2"]).volatile.emit("hello", -1, [undefined, "x"]);
//!   take(er, "emitter_except");
//!   emitter.of("/events").to(["a", "b"]).compress(false).emit("multi", new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)), 1.5, -300, 2 ** 40);
//!   take(er, "emitter_multi");
//!   emitter.of("/events").in("r").socketsJoin(["x", "y"]); take(er, "emitter_join");
//!   emitter.of("/events").socketsLeave("x"); take(er, "emitter_leave");
//!   emitter.of("/events").except("r").disconnectSockets(true); take(er, "emitter_disconnect");
//!   emitter.of("/events").serverSideEmit("hi", { a: 1 }); take(er, "emitter_sse");
//!
//!   // --- adapter
//!   const pub = new MockRedis(), sub = new MockRedis();
//!   const io = new Server();
//!   io.adapter(createAdapter(pub, sub, { key: "socket.io" }));
//!   const nsp = io.of("/events");
//!   nsp.adapter.uid = "abc123";
//!   nsp.to("room1").emit("bin", Buffer.from("hi"), { x: Buffer.alloc(0), y: [Buffer.from([255])] });
//!   take(pub, "adapter_room_bin");
//!   nsp.except("a").volatile.compress(false).emit("all", { "2": "two", "b": 1, "1": "one" });
//!   take(pub, "adapter_except");
//!   nsp.timeout(1000).emit("ack-me", 7, () => {});
//!   take(pub, "adapter_broadcast_ack_req");
//!   nsp.fetchSockets().catch(() => {}); await new Promise((r) => setTimeout(r, 10));
//!   take(pub, "req_fetch");
//!   nsp.adapter.allRooms().catch(() => {}); await new Promise((r) => setTimeout(r, 10));
//!   take(pub, "req_all_rooms");
//!   nsp.in("r").socketsJoin("j"); take(pub, "req_join");
//!   nsp.except("e").socketsLeave(["l1", "l2"]); take(pub, "req_leave");
//!   nsp.disconnectSockets(false); take(pub, "req_disconnect");
//!   nsp.serverSideEmit("sse", 1, "two"); take(pub, "req_sse");
//!   nsp.serverSideEmit("sse-ack", { q: true }, () => {}); await new Promise((r) => setTimeout(r, 10));
//!   take(pub, "req_sse_ack");
//!   // requests sent by older adapter versions (still handled by 8.3.0's onrequest)
//!   out.req_sockets_legacy = { hex: Buffer.from(JSON.stringify({ uid: "old1", requestId: "rq1", type: 0, rooms: ["r1"] })).toString("hex") };
//!   out.req_join_sid_legacy = { hex: Buffer.from(JSON.stringify({ uid: "old1", requestId: "rq2", type: 2, sid: "s1", room: "newroom" })).toString("hex") };
//!
//!   // --- responses as 8.3.0 publishes them (with no local sockets)
//!   nsp.on("sse-ack", (arg, cb) => cb({ pong: arg }));
//!   const reqCh = "socket.io-request#/events#";
//!   const feed = async (obj, msgpack) => {
//!     await nsp.adapter.onrequest(reqCh, msgpack ? notepack.encode(obj) : Buffer.from(JSON.stringify(obj)));
//!     await new Promise((r) => setTimeout(r, 10));
//!   };
//!   await feed({ uid: "other", requestId: "r0", type: 0, rooms: [] }); take(pub, "resp_sockets");
//!   await feed({ uid: "other", requestId: "r1", type: 1 }); take(pub, "resp_all_rooms");
//!   await feed({ uid: "other", requestId: "r5", type: 5, opts: { rooms: [], except: [] } }); take(pub, "resp_fetch");
//!   await feed({ uid: "other", requestId: "r6", type: 6, data: ["sse-ack", 5] }); take(pub, "resp_sse");
//!   await feed({ uid: "other", requestId: "r7", type: 7, packet: { type: 2, data: ["x"], nsp: "/events" }, opts: { rooms: [], except: [], flags: { timeout: 100 } } }, true);
//!   take(pub, "resp_client_count");
//!   out.resp_broadcast_ack = { hex: notepack.encode({ type: 9, requestId: "r7", packet: ["ok", 1] }).toString("hex") };
//!   out.resp_fetch_one = { hex: Buffer.from(JSON.stringify({ requestId: "r5", sockets: [{ id: "sid1", handshake: { headers: {}, query: { EIO: "4" } }, rooms: ["sid1", "room1"], data: { user: "u" } }] })).toString("hex") };
//!
//!   // --- misc notepack
//!   out.no_nsp = { hex: notepack.encode(["uid9", { type: 2, data: ["x", 1] }, { rooms: [], except: [], flags: {} }]).toString("hex") };
//!   const nums = {};
//!   for (const n of [0, 42, 127, 128, 255, 256, 300, 65535, 65536, 70000, 2 ** 32 - 1, 2 ** 32, 2 ** 33, 2 ** 53 - 1]) nums[n] = notepack.encode(n).toString("hex");
//!   out.numbers = nums;
//!   out.floats = { half: notepack.encode(0.5).toString("hex"), nan: notepack.encode(NaN).toString("hex"), inf: notepack.encode(Infinity).toString("hex"), negzero: notepack.encode(-0).toString("hex") };
//!   try { notepack.encode(10n); out.bigint = "ok"; } catch (e) { out.bigint = String(e.message); }
//!   out.undef_top = notepack.encode(undefined).toString("hex");
//!
//!   // --- feed template
//!   const tpl = (seq, o) => notepack.encode(["eventfeed-store",
//!     { type: 2, data: ["event_created", { id: o.id, seq, tenant_id: o.tenant_id, message: o.message, timestamp: o.timestamp, author: o.author }], nsp: o.nsp },
//!     { rooms: [o.room], except: [], flags: {} }]).toString("hex");
//!   const ev = { nsp: "/events", room: "tenant:acme", id: "0b7c6d1e-8f00-4e2b-9a4c-1d2e3f405162", tenant_id: "acme", message: "héllo wörld — a message longer than thirty-one bytes ✓", timestamp: "2026-11-27T12:00:00.123Z", author: "alice" };
//!   out.template_event = ev;
//!   out.templates = {};
//!   for (const n of [0, 42, 127, 128, 300, 65535, 70000, 2 ** 32, 2 ** 33]) out.templates[n] = tpl(n, ev);
//!   console.log(JSON.stringify(out, null, 1));
//!   process.exit(0);
//! })();
//! ```

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

// published on socket.io#/events#room1#
const EMITTER_ROOM: &str = concat!(
    "93a7656d697474657283a47479706502a46461746195a26576a37374722a81a66e657374656482a1619301cb400400000000",
    "0000c0a162c3c403010203a36e7370a72f6576656e747383a5726f6f6d7391a5726f6f6d31a5666c61677380a66578636570",
    "7490",
);
// published on socket.io#/events#
const EMITTER_EXCEPT: &str = concat!(
    "93a7656d697474657283a47479706502a46461746193a568656c6c6fff92c0a178a36e7370a72f6576656e747383a5726f6f",
    "6d7390a5666c61677381a8766f6c6174696c65c3a665786365707492a27231a27232",
);
// published on socket.io#/events#
const EMITTER_MULTI: &str = concat!(
    "93a7656d697474657283a47479706502a46461746195a56d756c7469d7ffa1a5d60065937d25cb3ff8000000000000d1fed4",
    "cf0000010000000000a36e7370a72f6576656e747383a5726f6f6d7392a161a162a5666c61677381a8636f6d7072657373c2",
    "a665786365707490",
);
// published on socket.io-request#/events#
const EMITTER_JOIN: &str = r#"{"type":2,"opts":{"rooms":["r"],"except":[]},"rooms":["x","y"]}"#;
// published on socket.io-request#/events#
const EMITTER_LEAVE: &str = r#"{"type":3,"opts":{"rooms":[],"except":[]},"rooms":["x"]}"#;
// published on socket.io-request#/events#
const EMITTER_DISCONNECT: &str = r#"{"type":4,"opts":{"rooms":[],"except":["r"]},"close":true}"#;
// published on socket.io-request#/events#
const EMITTER_SSE: &str = r#"{"uid":"emitter","type":6,"data":["hi",{"a":1}]}"#;
// published on socket.io#/events#room1#
const ADAPTER_ROOM_BIN: &str = concat!(
    "93a661626331323383a47479706502a46461746193a362696ec402686982a178c400a17991c401ffa36e7370a72f6576656e",
    "747383a5726f6f6d7391a5726f6f6d31a665786365707490a5666c61677380",
);
// published on socket.io#/events#
const ADAPTER_EXCEPT: &str = concat!(
    "93a661626331323383a47479706502a46461746192a3616c6c83a131a36f6e65a132a374776fa16201a36e7370a72f657665",
    "6e747383a5726f6f6d7390a665786365707491a161a5666c61677382a8766f6c6174696c65c3a8636f6d7072657373c2",
);
// published on socket.io-request#/events#
const ADAPTER_BROADCAST_ACK_REQ: &str = concat!(
    "85a3756964a6616263313233a9726571756573744964a6536f495a5972a47479706507a67061636b657483a47479706502a4",
    "6461746192a661636b2d6d6507a36e7370a72f6576656e7473a46f70747383a5726f6f6d7390a665786365707490a5666c61",
    "677381a774696d656f7574cd03e8",
);
// published on socket.io-request#/events#
const REQ_FETCH: &str = r#"{"uid":"abc123","requestId":"qYACuk","type":5,"opts":{"rooms":[],"except":[]}}"#;
// published on socket.io-request#/events#
const REQ_ALL_ROOMS: &str = r#"{"uid":"abc123","requestId":"smuiDg","type":1}"#;
// published on socket.io-request#/events#
const REQ_JOIN: &str = r#"{"uid":"abc123","type":2,"opts":{"rooms":["r"],"except":[]},"rooms":["j"]}"#;
// published on socket.io-request#/events#
const REQ_LEAVE: &str = r#"{"uid":"abc123","type":3,"opts":{"rooms":[],"except":["e"]},"rooms":["l1","l2"]}"#;
// published on socket.io-request#/events#
const REQ_DISCONNECT: &str = r#"{"uid":"abc123","type":4,"opts":{"rooms":[],"except":[]},"close":false}"#;
// published on socket.io-request#/events#
const REQ_SSE: &str = r#"{"uid":"abc123","type":6,"data":["sse",1,"two"]}"#;
// published on socket.io-request#/events#
const REQ_SSE_ACK: &str = r#"{"uid":"abc123","requestId":"rqXOJr","type":6,"data":["sse-ack",{"q":true}]}"#;
const REQ_SOCKETS_LEGACY: &str = r#"{"uid":"old1","requestId":"rq1","type":0,"rooms":["r1"]}"#;
const REQ_JOIN_SID_LEGACY: &str = r#"{"uid":"old1","requestId":"rq2","type":2,"sid":"s1","room":"newroom"}"#;
// published on socket.io-response#/events#
const RESP_SOCKETS: &str = r#"{"requestId":"r0","sockets":[]}"#;
// published on socket.io-response#/events#
const RESP_ALL_ROOMS: &str = r#"{"requestId":"r1","rooms":[]}"#;
// published on socket.io-response#/events#
const RESP_FETCH: &str = r#"{"requestId":"r5","sockets":[]}"#;
// published on socket.io-response#/events#
const RESP_SSE: &str = r#"{"type":6,"requestId":"r6","data":{"pong":5}}"#;
// published on socket.io-response#/events#
const RESP_CLIENT_COUNT: &str = r#"{"type":8,"requestId":"r7","clientCount":0}"#;
const RESP_BROADCAST_ACK: &str = "83a47479706509a9726571756573744964a27237a67061636b657492a26f6b01";
const RESP_FETCH_ONE: &str = r#"{"requestId":"r5","sockets":[{"id":"sid1","handshake":{"headers":{},"query":{"EIO":"4"}},"rooms":["sid1","room1"],"data":{"user":"u"}}]}"#;
const NO_NSP: &str = "93a47569643982a47479706502a46461746192a1780183a5726f6f6d7390a665786365707490a5666c61677380";
/// notepack.encode of the feed event (see `template_event` in the generator) for several seqs.
const TEMPLATES: &[(u64, &str)] = &[
    (
        0,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a373657100a974656e616e745f69",
            "64a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e676572",
            "207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d3237543132",
            "3a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e616e",
            "743a61636d65a665786365707490a5666c61677380",
        ),
    ),
    (
        42,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a37365712aa974656e616e745f69",
            "64a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e676572",
            "207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d3237543132",
            "3a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e616e",
            "743a61636d65a665786365707490a5666c61677380",
        ),
    ),
    (
        127,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a37365717fa974656e616e745f69",
            "64a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e676572",
            "207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d3237543132",
            "3a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e616e",
            "743a61636d65a665786365707490a5666c61677380",
        ),
    ),
    (
        128,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cc80a974656e616e745f",
            "6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e6765",
            "72207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d32375431",
            "323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e61",
            "6e743a61636d65a665786365707490a5666c61677380",
        ),
    ),
    (
        300,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cd012ca974656e616e74",
            "5f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e67",
            "6572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d323754",
            "31323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e",
            "616e743a61636d65a665786365707490a5666c61677380",
        ),
    ),
    (
        65535,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cdffffa974656e616e74",
            "5f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f6e67",
            "6572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d323754",
            "31323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74656e",
            "616e743a61636d65a665786365707490a5666c61677380",
        ),
    ),
    (
        70000,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571ce00011170a974656e61",
            "6e745f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d657373616765206c6f",
            "6e676572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d31312d32",
            "375431323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d7391ab74",
            "656e616e743a61636d65a665786365707490a5666c61677380",
        ),
    ),
    (
        4294967296,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cf0000000100000000a9",
            "74656e616e745f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d6573736167",
            "65206c6f6e676572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d",
            "31312d32375431323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d",
            "7391ab74656e616e743a61636d65a665786365707490a5666c61677380",
        ),
    ),
    (
        8589934592,
        concat!(
            "93af6576656e74666565642d73746f726583a47479706502a46461746192ad6576656e745f6372656174656486a26964d924",
            "30623763366431652d386630302d346532622d396134632d316432653366343035313632a3736571cf0000000200000000a9",
            "74656e616e745f6964a461636d65a76d657373616765d93c68c3a96c6c6f2077c3b6726c6420e280942061206d6573736167",
            "65206c6f6e676572207468616e207468697274792d6f6e6520627974657320e29c93a974696d657374616d70b8323032362d",
            "31312d32375431323a30303a30302e3132335aa6617574686f72a5616c696365a36e7370a72f6576656e747383a5726f6f6d",
            "7391ab74656e616e743a61636d65a665786365707490a5666c61677380",
        ),
    ),
];
const NUMBERS: &[(u64, &str)] = &[
    (0, "00"),
    (42, "2a"),
    (127, "7f"),
    (128, "cc80"),
    (255, "ccff"),
    (256, "cd0100"),
    (300, "cd012c"),
    (65535, "cdffff"),
    (65536, "ce00010000"),
    (70000, "ce00011170"),
    (4294967295, "ceffffffff"),
    (4294967296, "cf0000000100000000"),
    (8589934592, "cf0000000200000000"),
    (9007199254740991, "cf001fffffffffffff"),
];

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn ph(num: usize) -> Value {
    json!({"_placeholder": true, "num": num})
}

fn ev(data: &[u8]) -> Broadcast {
    decode_broadcast(data).expect("decodes")
}

/// Every fixture that must decode (as a broadcast or as a request).
const BROADCASTS: &[&str] = &[EMITTER_ROOM, EMITTER_EXCEPT, EMITTER_MULTI, ADAPTER_ROOM_BIN, ADAPTER_EXCEPT, NO_NSP];

#[test]
fn channels_match_the_adapter() {
    let c = Channels::new(DEFAULT_KEY, "/events", "abc123");
    assert_eq!(c.broadcast_prefix, "socket.io#/events#");
    assert_eq!(c.request, "socket.io-request#/events#");
    assert_eq!(c.response, "socket.io-response#/events#");
    assert_eq!(c.specific_response, "socket.io-response#/events#abc123#");
    assert_eq!(c.response_to("old1"), "socket.io-response#/events#old1#");
    assert_eq!(c.pattern(), "socket.io#/events#*");
    assert_eq!(c.broadcast(&["room1"]), "socket.io#/events#room1#");
    assert_eq!(c.broadcast(&["room1", "room1"]), "socket.io#/events#room1#");
    assert_eq!(c.broadcast(&["a", "b"]), "socket.io#/events#");
    assert_eq!(c.broadcast::<&str>(&[]), "socket.io#/events#");
    assert_eq!(c.room_of("socket.io#/events#"), Some(""));
    assert_eq!(c.room_of("socket.io#/events#room1#"), Some("room1"));
    assert_eq!(c.room_of("socket.io#/other#"), None);
}

#[test]
fn emitter_broadcast_to_one_room_with_binary() {
    let b = ev(&unhex(EMITTER_ROOM));
    assert_eq!(b.uid, EMITTER_UID);
    assert_eq!(b.packet_type, 2);
    assert_eq!(b.nsp, "/events");
    // `u: undefined` was skipped by notepack.
    assert_eq!(b.data, json!(["ev", "str", 42, {"nested": {"a": [1, 2.5, null], "b": true}}, ph(0)]));
    assert_eq!(b.attachments, vec![Bytes::from_static(&[1, 2, 3])]);
    assert_eq!(b.rooms, vec!["room1"]);
    assert!(b.except.is_empty());
    assert_eq!(b.flags, Flags::default());
    assert!(event_from_broadcast(&b).is_none());
}

#[test]
fn emitter_broadcast_to_all_with_except_and_volatile() {
    let b = ev(&unhex(EMITTER_EXCEPT));
    assert_eq!(b.data, json!(["hello", -1, [null, "x"]]));
    assert!(b.rooms.is_empty());
    assert_eq!(b.except, vec!["r1", "r2"]);
    assert_eq!(b.flags, Flags { volatile: true, ..Flags::default() });
}

#[test]
fn emitter_broadcast_with_date_float_negative_and_big_int() {
    let b = ev(&unhex(EMITTER_MULTI));
    assert_eq!(b.data, json!(["multi", "2024-01-02T03:04:05.678Z", 1.5, -300, 1_099_511_627_776_u64]));
    assert_eq!(b.rooms, vec!["a", "b"]);
    assert_eq!(b.flags.compress, Some(false));
    assert!(b.attachments.is_empty());
}

#[test]
fn adapter_broadcast_with_binary_roundtrips_byte_exact() {
    let bytes = unhex(ADAPTER_ROOM_BIN);
    let b = ev(&bytes);
    assert_eq!(b.uid, "abc123");
    assert_eq!(b.data, json!(["bin", ph(0), {"x": ph(1), "y": [ph(2)]}]));
    assert_eq!(b.attachments, vec![Bytes::from_static(b"hi"), Bytes::new(), Bytes::from_static(&[255])]);
    let again = encode_broadcast(&b);
    assert_eq!(again.expect("encodes"), bytes);
}

#[test]
fn adapter_broadcast_with_flags_and_integer_keys_roundtrips_byte_exact() {
    let bytes = unhex(ADAPTER_EXCEPT);
    let b = ev(&bytes);
    // JS enumerates integer-like keys first: `{ "2": "two", "b": 1, "1": "one" }` was sent as 1, 2, b.
    assert_eq!(serde_json::to_string(&b.data).expect("json"), r#"["all",{"1":"one","2":"two","b":1}]"#);
    assert_eq!(b.except, vec!["a"]);
    assert_eq!(b.flags, Flags { volatile: true, compress: Some(false), ..Flags::default() });
    let again = encode_broadcast(&b);
    assert_eq!(again.expect("encodes"), bytes);
}

#[test]
fn packet_without_nsp_is_root_namespace() {
    let b = ev(&unhex(NO_NSP));
    assert_eq!(b.nsp, "/");
    assert_eq!(b.data, json!(["x", 1]));
}

#[test]
fn msgpack_uint_matches_notepack_and_cmsgpack() {
    for &(n, hex) in NUMBERS {
        assert_eq!(msgpack_uint(n), unhex(hex), "{n}");
    }
    assert_eq!(msgpack_uint(u64::MAX), unhex("cfffffffffffffffff"));
}

fn template() -> EventTemplate {
    event_template(
        STORE_UID,
        "/events",
        "tenant:acme",
        &EventFields {
            id: "0b7c6d1e-8f00-4e2b-9a4c-1d2e3f405162",
            tenant_id: "acme",
            message: "héllo wörld — a message longer than thirty-one bytes ✓",
            timestamp: "2026-11-27T12:00:00.123Z",
            author: "alice",
        },
    )
}

#[test]
fn feed_event_template_equals_notepack_for_every_seq_size() {
    let t = template();
    assert!(t.head.ends_with(b"\xa3seq"));
    for &(seq, hex) in TEMPLATES {
        let expected = unhex(hex);
        let mut spliced = t.head.clone();
        spliced.extend_from_slice(&msgpack_uint(seq));
        spliced.extend_from_slice(&t.tail);
        assert_eq!(spliced, expected, "seq {seq}");
        assert_eq!(t.render(seq), expected, "seq {seq}");

        let b = ev(&expected);
        assert_eq!(b.nsp, "/events");
        assert_eq!(b.rooms, vec!["tenant:acme"]);
        let (got_seq, event) = event_from_broadcast(&b).expect("feed event");
        assert_eq!(got_seq, seq);
        let keys: Vec<&str> = event.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "seq", "tenant_id", "message", "timestamp", "author"]);
        assert_eq!(event["message"], "héllo wörld — a message longer than thirty-one bytes ✓");
    }
    // Seqs of every encoding size decode back.
    for seq in [0, 1, 127, 128, 255, 256, 65_535, 65_536, u64::from(u32::MAX), 1 << 40, u64::MAX] {
        assert_eq!(event_from_broadcast(&ev(&t.render(seq))).map(|(s, _)| s), Some(seq));
    }
}

#[test]
fn feed_event_needs_store_uid_and_shape() {
    let mut b = ev(&template().render(7));
    assert!(event_from_broadcast(&b).is_some());
    b.uid = "abc123".into();
    assert!(event_from_broadcast(&b).is_none());
    b.uid = "eventfeed-storex".into();
    assert!(event_from_broadcast(&b).is_none());
    b.uid = store_uid("staging");
    assert!(event_from_broadcast(&b).is_some(), "a prefixed store uid");
    b.uid = STORE_UID.into();
    b.data = json!(["event_created", {"seq": "7"}]);
    assert!(event_from_broadcast(&b).is_none());
    b.data = json!(["other", {"seq": 7}]);
    assert!(event_from_broadcast(&b).is_none());
}

/// A broadcast of `data` from uid "u" to the whole root namespace.
fn bc(data: Value, attachments: Vec<Bytes>) -> Broadcast {
    Broadcast {
        uid: "u".into(),
        packet_type: PACKET_TYPE_EVENT,
        nsp: "/".into(),
        data,
        attachments,
        rooms: vec![],
        except: vec![],
        flags: Flags::default(),
    }
}

#[test]
fn encode_broadcast_rejects_bad_placeholders() {
    for data in
        [json!(["x", ph(1)]), json!(["x", {"_placeholder": true, "num": "0"}]), json!(["x", {"_placeholder": true}])]
    {
        let r = encode_broadcast(&bc(data.clone(), vec![Bytes::from_static(b"a")]));
        assert!(matches!(r, Err(AdapterError::Placeholder(_))), "{data}");
    }
    // `_placeholder` not `true`: an ordinary object.
    let data = json!(["x", {"_placeholder": 1, "num": 0}]);
    let bytes = encode_broadcast(&bc(data.clone(), vec![])).expect("encodes");
    assert_eq!(ev(&bytes).data, data);
    // Deep JSON is refused instead of overflowing the stack.
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    assert_eq!(encode_broadcast(&bc(deep, vec![])), Err(AdapterError::TooDeep));
    // Data that is not an array would not decode.
    assert!(matches!(encode_broadcast(&bc(json!({"a": 1}), vec![])), Err(AdapterError::Malformed(_))));
}

#[test]
fn encoders_nest_as_deep_as_the_decoders_accept() {
    // `data` sits at nesting 2 of a broadcast (top array, packet map): MAX_DEPTH - 2 levels of arrays fit.
    let nested = |levels: usize| (0..levels).fold(json!(null), |v, _| json!([v]));
    let bytes = encode_broadcast(&bc(nested(MAX_DEPTH - 2), vec![])).expect("at the limit");
    assert_eq!(ev(&bytes).data, nested(MAX_DEPTH - 2));
    assert_eq!(encode_broadcast(&bc(nested(MAX_DEPTH - 1), vec![])), Err(AdapterError::TooDeep));
    // A request's `data` sits at nesting 1, in JSON and in msgpack alike.
    for attachments in [vec![], vec![Bytes::from_static(b"x")]] {
        let mut data = nested(MAX_DEPTH - 1);
        if !attachments.is_empty() {
            data = json!([ph(0), data[0].clone()]);
        }
        let r = Request::ServerSideEmit { request_id: None, data, attachments };
        let bytes = encode_request(None, &r).expect("at the limit");
        assert_eq!(req(&bytes).1, r);
        let Request::ServerSideEmit { data, attachments, .. } = r else { unreachable!() };
        let deeper = Request::ServerSideEmit { request_id: None, data: json!([data]), attachments };
        assert_eq!(encode_request(None, &deeper), Err(AdapterError::TooDeep));
    }
    // A BROADCAST_ACK's `packet` sits at nesting 1.
    let bytes = broadcast_ack_response("r", Some(&nested(MAX_DEPTH - 1)), &[]).expect("at the limit");
    assert!(decode_response(&bytes).is_ok());
    assert_eq!(broadcast_ack_response("r", Some(&nested(MAX_DEPTH)), &[]), Err(AdapterError::TooDeep));
}

#[test]
fn encode_broadcast_numbers_like_notepack() {
    let data = json!(["n", 0.5, 2.0, -0.0, -33, -200, -40_000, -3_000_000_000_i64]);
    let bytes = encode_broadcast(&bc(data, vec![])).expect("encodes");
    // notepack: 0.5 -> cb, 2.0 -> 02, -0 -> 00, -33 -> d0 df, -200 -> d1 ff38, -40000 -> d2, -3e9 -> d3.
    let expected = "cb3fe000000000000002".to_owned() + "00d0dfd1ff38d2ffff63c0d3ffffffff4d2fa200";
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert!(hex.contains(&expected), "{hex}");
    assert_eq!(ev(&bytes).data, json!(["n", 0.5, 2, 0, -33, -200, -40_000, -3_000_000_000_i64]));
}

// --- requests -----------------------------------------------------------------------------------------------

fn req(msg: &[u8]) -> (Option<String>, Request) {
    decode_request(msg).expect("request decodes")
}

fn sel(rooms: &[&str], except: &[&str]) -> Selector {
    Selector {
        rooms: rooms.iter().map(|s| s.to_string()).collect(),
        except: except.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn adapter_requests() {
    let abc = Some("abc123".to_owned());
    assert_eq!(
        req(REQ_FETCH.as_bytes()),
        (abc.clone(), Request::RemoteFetch { request_id: "qYACuk".into(), selector: sel(&[], &[]) })
    );
    assert_eq!(req(REQ_ALL_ROOMS.as_bytes()), (abc.clone(), Request::AllRooms { request_id: "smuiDg".into() }));
    assert_eq!(
        req(REQ_JOIN.as_bytes()),
        (abc.clone(), Request::RemoteJoin { selector: sel(&["r"], &[]), rooms: vec!["j".into()] })
    );
    assert_eq!(
        req(REQ_LEAVE.as_bytes()),
        (abc.clone(), Request::RemoteLeave { selector: sel(&[], &["e"]), rooms: vec!["l1".into(), "l2".into()] })
    );
    assert_eq!(
        req(REQ_DISCONNECT.as_bytes()),
        (abc.clone(), Request::RemoteDisconnect { selector: sel(&[], &[]), close: false })
    );
    assert_eq!(
        req(REQ_SSE.as_bytes()),
        (
            abc.clone(),
            Request::ServerSideEmit { request_id: None, data: json!(["sse", 1, "two"]), attachments: vec![] }
        )
    );
    assert_eq!(
        req(REQ_SSE_ACK.as_bytes()),
        (
            abc.clone(),
            Request::ServerSideEmit {
                request_id: Some("rqXOJr".into()),
                data: json!(["sse-ack", {"q": true}]),
                attachments: vec![]
            }
        )
    );
}

#[test]
fn legacy_requests() {
    let old = Some("old1".to_owned());
    assert_eq!(
        req(REQ_SOCKETS_LEGACY.as_bytes()),
        (old.clone(), Request::Sockets { request_id: "rq1".into(), rooms: vec!["r1".into()] })
    );
    assert_eq!(
        req(REQ_JOIN_SID_LEGACY.as_bytes()),
        (old.clone(), Request::RemoteJoinSocket { request_id: "rq2".into(), sid: "s1".into(), room: "newroom".into() })
    );
    let leave = br#"{"uid":"old1","requestId":"rq3","type":3,"sid":"s1","room":"r"}"#;
    assert_eq!(
        req(leave).1,
        Request::RemoteLeaveSocket { request_id: "rq3".into(), sid: "s1".into(), room: "r".into() }
    );
    let disc = br#"{"uid":"old1","requestId":"rq4","type":4,"sid":"s1","close":true}"#;
    assert_eq!(
        req(disc).1,
        Request::RemoteDisconnectSocket { request_id: "rq4".into(), sid: "s1".into(), close: true }
    );
    assert_eq!(req(br#"{"uid":"x","type":42}"#).1, Request::Other(42));
}

#[test]
fn emitter_requests_have_no_uid() {
    assert_eq!(
        req(EMITTER_JOIN.as_bytes()),
        (None, Request::RemoteJoin { selector: sel(&["r"], &[]), rooms: vec!["x".into(), "y".into()] })
    );
    assert_eq!(
        req(EMITTER_LEAVE.as_bytes()),
        (None, Request::RemoteLeave { selector: sel(&[], &[]), rooms: vec!["x".into()] })
    );
    assert_eq!(
        req(EMITTER_DISCONNECT.as_bytes()),
        (None, Request::RemoteDisconnect { selector: sel(&[], &["r"]), close: true })
    );
    assert_eq!(
        req(EMITTER_SSE.as_bytes()),
        (
            Some(EMITTER_UID.to_owned()),
            Request::ServerSideEmit { request_id: None, data: json!(["hi", {"a": 1}]), attachments: vec![] }
        )
    );
}

#[test]
fn msgpack_broadcast_with_ack_request() {
    let (uid, r) = req(&unhex(ADAPTER_BROADCAST_ACK_REQ));
    assert_eq!(uid.as_deref(), Some("abc123"));
    let Request::BroadcastWithAck { request_id, broadcast } = r else { panic!("not a broadcast: {r:?}") };
    assert_eq!(request_id, "SoIZYr");
    assert_eq!(broadcast.uid, "abc123");
    assert_eq!(broadcast.nsp, "/events");
    assert_eq!(broadcast.data, json!(["ack-me", 7]));
    assert_eq!(broadcast.flags, Flags { timeout: Some(1000), ..Flags::default() });
}

#[test]
fn requests_encode_as_node_wrote_them() {
    let json = [
        REQ_FETCH,
        REQ_ALL_ROOMS,
        REQ_JOIN,
        REQ_LEAVE,
        REQ_DISCONNECT,
        REQ_SSE,
        REQ_SSE_ACK,
        REQ_SOCKETS_LEGACY,
        REQ_JOIN_SID_LEGACY,
        EMITTER_JOIN,
        EMITTER_LEAVE,
        EMITTER_DISCONNECT,
        EMITTER_SSE,
    ];
    let legacy = [
        r#"{"uid":"old1","requestId":"rq3","type":3,"sid":"s1","room":"r"}"#,
        r#"{"uid":"old1","requestId":"rq4","type":4,"sid":"s1","close":true}"#,
        r#"{"uid":"x","type":42}"#,
    ];
    let msgpack = [
        unhex(ADAPTER_BROADCAST_ACK_REQ),
        unhex("83a3756964a175a474797065 06 a464617461 92a165c40101".replace(' ', "").as_str()),
    ];
    for bytes in json.iter().chain(&legacy).map(|j| j.as_bytes().to_vec()).chain(msgpack) {
        let (uid, r) = req(&bytes);
        let again = encode_request(uid.as_deref(), &r).expect("encodes");
        assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn request_ids_as_uid2_makes_them() {
    assert_eq!(request_id(&[0, 25, 26, 51, 52, 61, 62, 63, 64, 255]), "AZaz09-_A_");
    assert_eq!(request_id(&[]), "");
    assert_eq!(request_id(&[7; REQUEST_ID_LEN]).len(), REQUEST_ID_LEN);
}

// --- responses ----------------------------------------------------------------------------------------------

#[test]
fn responses_are_byte_exact() {
    assert_eq!(sockets_response("r0", &[]), RESP_SOCKETS.as_bytes());
    assert_eq!(all_rooms_response("r1", &[]), RESP_ALL_ROOMS.as_bytes());
    assert_eq!(fetch_response("r5", &[]), RESP_FETCH.as_bytes());
    let one = FetchedSocket {
        id: "sid1".into(),
        handshake: json!({"headers": {}, "query": {"EIO": "4"}}),
        rooms: vec!["sid1".into(), "room1".into()],
        data: json!({"user": "u"}),
    };
    assert_eq!(fetch_response("r5", &[one]), RESP_FETCH_ONE.as_bytes());
    assert_eq!(server_side_emit_response("r6", Some(&json!({"pong": 5}))), RESP_SSE.as_bytes());
    assert_eq!(server_side_emit_response("r6", None), br#"{"type":6,"requestId":"r6"}"#);
    assert_eq!(broadcast_client_count_response("r7", 0), RESP_CLIENT_COUNT.as_bytes());
    assert_eq!(broadcast_ack_response("r7", Some(&json!(["ok", 1])), &[]), Ok(unhex(RESP_BROADCAST_ACK)));
    assert_eq!(remote_ack_response("rq2"), br#"{"requestId":"rq2"}"#);
    assert_eq!(
        sockets_response("x", &["a\"b".into(), "é\n".into()]),
        "{\"requestId\":\"x\",\"sockets\":[\"a\\\"b\",\"é\\n\"]}".as_bytes()
    );
}

#[test]
fn responses_decode_by_shape_and_encode_back() {
    let one = FetchedSocket {
        id: "sid1".into(),
        handshake: json!({"headers": {}, "query": {"EIO": "4"}}),
        rooms: vec!["sid1".into(), "room1".into()],
        data: json!({"user": "u"}),
    };
    let cases = [
        (RESP_ALL_ROOMS.as_bytes().to_vec(), Response::AllRooms { request_id: "r1".into(), rooms: vec![] }),
        (RESP_FETCH.as_bytes().to_vec(), Response::RemoteFetch { request_id: "r5".into(), sockets: vec![] }),
        (RESP_FETCH_ONE.as_bytes().to_vec(), Response::RemoteFetch { request_id: "r5".into(), sockets: vec![one] }),
        (
            RESP_SSE.as_bytes().to_vec(),
            Response::ServerSideEmit { request_id: "r6".into(), data: Some(json!({"pong": 5})), attachments: vec![] },
        ),
        (
            br#"{"type":6,"requestId":"r6"}"#.to_vec(),
            Response::ServerSideEmit { request_id: "r6".into(), data: None, attachments: vec![] },
        ),
        (
            RESP_CLIENT_COUNT.as_bytes().to_vec(),
            Response::BroadcastClientCount { request_id: "r7".into(), client_count: 0 },
        ),
        (
            unhex(RESP_BROADCAST_ACK),
            Response::BroadcastAck { request_id: "r7".into(), arg: Some(json!(["ok", 1])), attachments: vec![] },
        ),
        (br#"{"requestId":"rq2"}"#.to_vec(), Response::RemoteAck { request_id: "rq2".into() }),
        (
            br#"{"requestId":"r0","sockets":["a","b"]}"#.to_vec(),
            Response::Sockets { request_id: "r0".into(), sockets: vec!["a".into(), "b".into()] },
        ),
        // Binary in an acknowledgement: msgpack, attachments.
        (
            unhex(
                "83a474797065 09 a9726571756573744964 a27237 a67061636b6574 92a26f6b c40201ff"
                    .replace(' ', "")
                    .as_str(),
            ),
            Response::BroadcastAck {
                request_id: "r7".into(),
                arg: Some(json!(["ok", ph(0)])),
                attachments: vec![Bytes::from_static(&[1, 255])],
            },
        ),
    ];
    for (bytes, want) in cases {
        let got = decode_response(&bytes).expect("decodes");
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(got.request_id(), want.request_id());
        assert_eq!(encode_response(&got).expect("encodes"), bytes, "{want:?}");
    }
    // No socket: a SOCKETS answer and a REMOTE_FETCH answer are the same bytes; they read as the latter.
    let empty = Response::Sockets { request_id: "r0".into(), sockets: vec![] };
    assert_eq!(encode_response(&empty).expect("encodes"), RESP_SOCKETS.as_bytes());
    assert_eq!(
        decode_response(RESP_SOCKETS.as_bytes()),
        Ok(Response::RemoteFetch { request_id: "r0".into(), sockets: vec![] })
    );
    // A SERVER_SIDE_EMIT answer with binary is written in msgpack and reads back.
    let sse = Response::ServerSideEmit {
        request_id: "r6".into(),
        data: Some(json!({"file": ph(0)})),
        attachments: vec![Bytes::from_static(b"z")],
    };
    let bytes = encode_response(&sse).expect("encodes");
    assert_eq!(bytes.first(), Some(&0x83));
    assert_eq!(decode_response(&bytes), Ok(sse));
    // Numbers as rooms are stringified; a fetched socket without handshake or data has nulls.
    assert_eq!(
        decode_response(br#"{"requestId":"x","rooms":["a",7,1.5]}"#),
        Ok(Response::AllRooms { request_id: "x".into(), rooms: vec!["a".into(), "7".into(), "1.5".into()] })
    );
    assert_eq!(
        decode_response(br#"{"requestId":"x","sockets":[{"id":"s"}]}"#),
        Ok(Response::RemoteFetch {
            request_id: "x".into(),
            sockets: vec![FetchedSocket { id: "s".into(), handshake: Value::Null, rooms: vec![], data: Value::Null }]
        })
    );
}

#[test]
fn malformed_responses_are_errors() {
    for msg in [
        &b"{"[..],
        b"{}",
        b"{\"requestId\":5}",
        b"{\"requestId\":\"x\",\"type\":1}",
        b"{\"requestId\":\"x\",\"type\":\"6\"}",
        b"{\"requestId\":\"x\",\"type\":8}",
        b"{\"requestId\":\"x\",\"type\":8,\"clientCount\":-1}",
        b"{\"requestId\":\"x\",\"sockets\":{}}",
        b"{\"requestId\":\"x\",\"sockets\":[\"a\",{\"id\":\"b\"}]}",
        b"{\"requestId\":\"x\",\"sockets\":[{\"rooms\":[]}]}",
        b"{\"requestId\":\"x\",\"sockets\":[1]}",
        b"{\"requestId\":\"x\",\"rooms\":[[]]}",
        b"{\"requestId\":\"x\",\"rooms\":\"a\"}",
        b"[\"x\"]",
        b"\x92\x01\x02",
        b"",
    ] {
        assert!(decode_response(msg).is_err(), "{}", String::from_utf8_lossy(msg));
    }
    // Binary where Node's answer would be JSON.
    let bin_in_fetch =
        unhex("82a9726571756573744964a178a7736f636b65747391 82a26964a173 a464617461c40101".replace(' ', "").as_str());
    assert!(matches!(decode_response(&bin_in_fetch), Err(AdapterError::Malformed(_))));
}

// --- msgpack → JSON details ---------------------------------------------------------------------------------

/// Wraps the msgpack value `arg_hex` as the only argument of an event from uid "u".
fn with_arg(arg_hex: &str) -> Result<Broadcast, AdapterError> {
    let mut msg = unhex("93a17582a474797065 02 a464617461 92a178".replace(' ', "").as_str());
    msg.extend(unhex(arg_hex));
    msg.extend(unhex("83a5726f6f6d7390a665786365707490a5666c61677380"));
    decode_broadcast(&msg)
}

fn arg(arg_hex: &str) -> (Value, Vec<Bytes>) {
    let b = with_arg(arg_hex).expect("decodes");
    (b.data[1].clone(), b.attachments)
}

#[test]
fn scalars() {
    assert_eq!(arg("cb7ff8000000000000").0, Value::Null); // NaN
    assert_eq!(arg("cb7ff0000000000000").0, Value::Null); // Infinity
    assert_eq!(arg("cb8000000000000000").0, json!(0)); // -0
    assert_eq!(arg("cb3ff0000000000000").0, json!(1)); // 1.0 prints as 1
    assert_eq!(arg("ca3f000000").0, json!(0.5)); // float32
    assert_eq!(arg("cfffffffffffffffff").0, json!(u64::MAX)); // exact, Node would round
    assert_eq!(arg("d38000000000000000").0, json!(i64::MIN));
    assert_eq!(arg("e0").0, json!(-32));
    assert_eq!(arg("c0").0, Value::Null);
    assert_eq!(arg("a3ff6869").0, json!("\u{fffd}hi")); // invalid UTF-8 replaced
}

#[test]
fn dates_and_exts() {
    assert_eq!(arg("d6ff00000000").0, json!("1970-01-01T00:00:00.000Z")); // timestamp 32
    assert_eq!(arg("c70cff000000000000000000000000").0, json!("1970-01-01T00:00:00.000Z")); // timestamp 96
    assert_eq!(arg("c70cff3b8b87c0ffffffffffffffff").0, json!("1969-12-31T23:59:59.999Z")); // -1 s + 999 ms
    assert_eq!(arg("c70cff000000007fffffffffffffff").0, Value::Null); // outside the Date range
    assert_eq!(arg("d700000000e8d4a51000").0, json!("2001-09-09T01:46:40.000Z")); // legacy Date, 1e12 ms
    assert_eq!(arg("c70cff00000000fffffff184aa5080").0, json!("-000001-01-01T00:00:00.000Z"));
    // Legacy ArrayBuffer (ext type 0) is binary.
    assert_eq!(arg("c70200abcd"), (ph(0), vec![Bytes::from_static(&[0xab, 0xcd])]));
    // Other exts are [type, <bin>].
    assert_eq!(arg("d50701ff"), (json!([7, ph(0)]), vec![Bytes::from_static(&[1, 255])]));
    // notepack's legacy `undefined`: null in arrays, dropped in maps.
    assert_eq!(arg("92d40000a178").0, json!([null, "x"]));
    assert_eq!(arg("82a161d40000a16201").0, json!({"b": 1}));
    // Timestamp 96 with the wrong length is refused.
    assert!(with_arg("c70bff0000000000000000000000").is_err());
}

#[test]
fn map_keys_follow_js_object_semantics() {
    // {"b": 1, "10": 2, "2": 3, "02": 4, "b": 5, "__proto__": {}, 7: 6, true: 7, nil: 8}
    let (v, _) = arg(concat!(
        "89",
        "a16201",
        "a2313002",
        "a13203",
        "a2303204",
        "a16205",
        "a95f5f70726f746f5f5f80",
        "0706",
        "c307",
        "c008"
    ));
    assert_eq!(serde_json::to_string(&v).expect("json"), r#"{"2":3,"7":6,"10":2,"b":5,"02":4,"true":7,"null":8}"#);
    // Float keys are written as JS `String(number)` writes them: {1e21: 1, 1.5: 2, NaN: 3, 2**64: 4}.
    let (v, _) = arg("84cb444b1ae4d6e2ef5001cb3ff800000000000002cb7ff800000000000003cb43f000000000000004");
    assert_eq!(serde_json::to_string(&v).expect("json"), r#"{"1e+21":1,"1.5":2,"NaN":3,"18446744073709552000":4}"#);
    // Non-scalar keys are refused.
    assert!(with_arg("819000").is_err());
    assert!(with_arg("81c40000").is_err());
    // Placeholders follow the final (JS) key order.
    let (v, atts) = arg("82a162c40162a131c40131");
    assert_eq!(v, json!({"1": ph(0), "b": ph(1)}));
    assert_eq!(atts, vec![Bytes::from_static(b"1"), Bytes::from_static(b"b")]);
}

#[test]
fn json_request_keys_and_depth() {
    // JSON.parse keeps `__proto__` as an own property; integer keys still come first.
    let (_, r) = req(br#"{"type":6,"data":["e",{"z":1,"5":2,"__proto__":3}]}"#);
    let Request::ServerSideEmit { data, .. } = r else { panic!("{r:?}") };
    assert_eq!(serde_json::to_string(&data).expect("json"), r#"["e",{"5":2,"z":1,"__proto__":3}]"#);
    // A msgpack SERVER_SIDE_EMIT with binary keeps it as attachments.
    let msg = unhex("83a3756964a175a474797065 06 a464617461 92a165c40101".replace(' ', "").as_str());
    let (_, r) = req(&msg);
    assert_eq!(
        r,
        Request::ServerSideEmit {
            request_id: None,
            data: json!(["e", ph(0)]),
            attachments: vec![Bytes::from_static(&[1])]
        }
    );
}

// --- malformed input ----------------------------------------------------------------------------------------

#[test]
fn every_truncation_is_an_error() {
    for hex in BROADCASTS.iter().chain([ADAPTER_BROADCAST_ACK_REQ].iter()).chain(TEMPLATES.iter().map(|t| &t.1)) {
        let bytes = unhex(hex);
        for len in 0..bytes.len() {
            assert!(decode_broadcast(&bytes[..len]).is_err(), "{hex} truncated at {len}");
            assert!(decode_request(&bytes[..len]).is_err(), "{hex} truncated at {len}");
        }
    }
    for json in [REQ_FETCH, REQ_JOIN, REQ_SSE_ACK, EMITTER_DISCONNECT] {
        for len in 0..json.len() {
            assert!(decode_request(&json.as_bytes()[..len]).is_err(), "{json} truncated at {len}");
        }
    }
}

#[test]
fn wrong_shapes_are_errors() {
    let bad = |hex: &str| decode_broadcast(&unhex(&hex.replace(' ', "")));
    // Top level not an array / too short.
    assert!(matches!(bad("80"), Err(AdapterError::Malformed(_))));
    assert!(matches!(bad("92a17580"), Err(AdapterError::Malformed(_))));
    // uid not a string.
    assert!(matches!(bad("93 01 82a474797065 02 a464617461 91a178 80"), Err(AdapterError::Malformed(_))));
    // packet missing data / data not an array / missing type / packet not a map / nsp not a string.
    assert!(matches!(bad("93 a175 81a474797065 02 80"), Err(AdapterError::Malformed(_))));
    assert!(matches!(bad("93 a175 82a474797065 02 a464617461 a178 80"), Err(AdapterError::Malformed(_))));
    assert!(matches!(bad("93 a175 81a464617461 91a178 80"), Err(AdapterError::Malformed(_))));
    assert!(matches!(bad("93 a175 c0 80"), Err(AdapterError::Malformed(_))));
    assert!(bad("93 a175 83a474797065 02 a464617461 91a178 a36e7370 01 80").is_err());
    // opts not a map, rooms not an array, a room that is a map.
    assert!(matches!(bad("93 a175 82a474797065 02 a464617461 91a178 c0"), Err(AdapterError::Malformed(_))));
    assert!(bad("93 a175 82a474797065 02 a464617461 91a178 81a5726f6f6d73 a178").is_err());
    assert!(bad("93 a175 82a474797065 02 a464617461 91a178 81a5726f6f6d73 9180").is_err());
    // Numeric rooms are stringified, unknown flags ignored, null rooms = none.
    let ok = bad("93 a175 82a474797065 02 a464617461 91a178 82a5726f6f6d73 922a2a a5666c616773 81a178c3");
    assert_eq!(ok.expect("decodes").rooms, vec!["42"]);
    let ok = bad("93 a175 82a474797065 02 a464617461 91a178 81a5726f6f6d73 92cb444b1ae4d6e2ef50cb3ff8000000000000");
    assert_eq!(ok.expect("decodes").rooms, vec!["1e+21", "1.5"]);
    // Reserved marker and trailing bytes.
    assert_eq!(bad("c1"), Err(AdapterError::InvalidMarker(0xc1)));
    let mut trailing = unhex(NO_NSP);
    trailing.push(0);
    assert_eq!(decode_broadcast(&trailing), Err(AdapterError::TrailingBytes(1)));
    assert_eq!(decode_broadcast(&[]), Err(AdapterError::Truncated));
}

#[test]
fn huge_declared_lengths_are_errors_without_allocating() {
    for hex in [
        "ddffffffff",
        "dfffffffff",
        "dbffffffff61",
        "c6ffffffff00",
        "c9ffffffff0500",
        "dcffff",
        "deffff",
        "93a175dbffffffff",
        "93a17581a464617461ddffffffff",
    ] {
        assert_eq!(decode_broadcast(&unhex(hex)), Err(AdapterError::Truncated), "{hex}");
        assert!(decode_request(&unhex(hex)).is_err(), "{hex}");
    }
}

#[test]
fn deep_nesting_is_an_error() {
    // 10,000 nested arrays inside the data of an otherwise valid broadcast.
    let mut msg = unhex("93a17582a474797065 02 a464617461 92a178".replace(' ', "").as_str());
    msg.extend(std::iter::repeat_n(0x91, 10_000));
    msg.push(0xc0);
    msg.extend(unhex("80"));
    assert_eq!(decode_broadcast(&msg), Err(AdapterError::TooDeep));
    assert_eq!(decode_request(&msg), Err(AdapterError::TooDeep));
    // Same with maps.
    let mut msg = vec![0x91];
    for _ in 0..10_000 {
        msg.extend([0x81, 0xa1, b'k']);
    }
    msg.push(0xc0);
    assert_eq!(decode_broadcast(&msg), Err(AdapterError::TooDeep));
    // Deep JSON requests.
    let deep = format!(r#"{{"type":6,"data":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    assert!(decode_request(deep.as_bytes()).is_err());
    let deep = format!(r#"{{"type":6,"data":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
    assert_eq!(decode_request(deep.as_bytes()), Err(AdapterError::TooDeep));
    // At the limit it is fine: MAX_DEPTH levels including the top-level array.
    let mut ok = unhex("93a17582a474797065 02 a464617461".replace(' ', "").as_str());
    ok.extend(std::iter::repeat_n(0x91, MAX_DEPTH - 2));
    ok.extend(unhex("c080"));
    assert!(decode_broadcast(&ok).is_ok());
}

#[test]
fn malformed_requests_are_errors() {
    for msg in [
        &b"{"[..],
        b"{\"type\":\"1\",\"requestId\":\"x\"}",
        b"{\"uid\":\"u\"}",
        b"{\"type\":1}",
        b"{\"type\":-1,\"requestId\":\"x\"}",
        b"{\"type\":0,\"requestId\":5}",
        b"{\"type\":1,\"uid\":5,\"requestId\":\"x\"}",
        b"{\"type\":5,\"requestId\":\"x\"}",
        b"{\"type\":5,\"requestId\":\"x\",\"opts\":[]}",
        b"{\"type\":2,\"requestId\":\"x\"}",
        b"{\"type\":2,\"opts\":1,\"rooms\":[\"a\"]}",
        b"{\"type\":6,\"data\":\"x\"}",
        b"{\"type\":6}",
        b"{\"type\":7,\"requestId\":\"x\",\"opts\":{}}",
        b"{\"type\":1,\"requestId\":\"x\"} x",
        b"[1]",
        b"\x91\x01",
        b"",
    ] {
        assert!(decode_request(msg).is_err(), "{}", String::from_utf8_lossy(msg));
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    // A tiny deterministic fuzzer: flip/replace bytes of every fixture and decode.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let fixtures: Vec<Vec<u8>> = BROADCASTS
        .iter()
        .chain([ADAPTER_BROADCAST_ACK_REQ, RESP_BROADCAST_ACK].iter())
        .map(|h| unhex(h))
        .chain([REQ_FETCH, REQ_SSE_ACK, REQ_JOIN_SID_LEGACY].iter().map(|s| s.as_bytes().to_vec()))
        .collect();
    for _ in 0..20_000 {
        let mut msg = fixtures[(next() % fixtures.len() as u64) as usize].clone();
        for _ in 0..=(next() % 4) {
            let i = (next() % msg.len() as u64) as usize;
            msg[i] = match next() % 3 {
                0 => msg[i] ^ (1 << (next() % 8)),
                1 => [0xc1, 0xdb, 0xdd, 0xdf, 0xc7, 0xd7, 0xff, 0x00][(next() % 8) as usize],
                _ => next() as u8,
            };
        }
        let _ = decode_broadcast(&msg);
        let _ = decode_request(&msg);
    }
}

#[test]
fn stored_events_read_straight_from_the_template_equal_the_general_decoding() {
    let tricky = [
        "héllo wörld — a message longer than thirty-one bytes ✓",
        "quotes \" and \\ backslashes, a tab\t, a newline\n, a NUL \u{0}, and \u{1f} \u{7f} \u{2028}",
        "",
        &"x".repeat(70_000),
    ];
    for (i, message) in tricky.iter().enumerate() {
        let tenant = if i % 2 == 0 { "acme" } else { "t\"e\\n ant" };
        let room = format!("tenant:{tenant}");
        let fields = EventFields {
            id: "0b7c6d1e-8f00-4e2b-9a4c-1d2e3f405162",
            tenant_id: tenant,
            message,
            timestamp: "2026-11-27T12:00:00.123Z",
            author: "al\"ice",
        };
        let t = event_template(&store_uid("staging"), "/events", &room, &fields);
        for seq in [0, 1, 127, 128, 255, 256, 65_535, 65_536, u64::from(u32::MAX), 1 << 40, u64::MAX] {
            let msg = t.render(seq);
            let got = stored_event_message(&msg).expect("the template's layout");
            assert_eq!(
                got,
                StoredEventMessage { uid: &store_uid("staging"), nsp: "/events", room: &room, seq, fields }
            );
            let b = ev(&msg);
            let (general_seq, event) = event_from_broadcast(&b).expect("a stored event");
            assert_eq!(general_seq, seq);
            assert_eq!(got.json(), serde_json::to_string(event).unwrap(), "byte for byte, seq {seq}, message {i}");
        }
    }
}

#[test]
fn anything_but_the_template_layout_is_left_to_the_general_decoder() {
    let t = template();
    let msg = t.render(300);
    assert!(stored_event_message(&msg).is_some());
    // Every truncation, and a trailing byte.
    for n in 0..msg.len() {
        assert!(stored_event_message(&msg[..n]).is_none(), "truncated to {n}");
    }
    let mut longer = msg.clone();
    longer.push(0xc0);
    assert!(stored_event_message(&longer).is_none());
    // Every other fixture (Node's adapter, the emitter).
    for hex in BROADCASTS {
        assert!(stored_event_message(&unhex(hex)).is_none(), "{hex}");
    }
    // The same event re-encoded with a flag, or to two rooms, or with invalid UTF-8 in a field.
    let mut b = ev(&msg);
    b.flags.volatile = true;
    assert!(stored_event_message(&encode_broadcast(&b).unwrap()).is_none());
    let mut b = ev(&msg);
    b.rooms.push("tenant:other".into());
    assert!(stored_event_message(&encode_broadcast(&b).unwrap()).is_none());
    let at = msg.windows(5).position(|w| w == b"alice").unwrap();
    let mut bad = msg.clone();
    bad[at] = 0xff;
    assert!(stored_event_message(&bad).is_none());
    assert!(decode_broadcast(&bad).is_ok(), "the general decoder still takes it (lossily)");
    // A seq that is not an unsigned integer.
    let mut b = ev(&msg);
    b.data[1]["seq"] = json!(-1);
    assert!(stored_event_message(&encode_broadcast(&b).unwrap()).is_none());
    // Re-encoding the template's own decoding gives the template's bytes back (so the check above changed one thing).
    assert_eq!(encode_broadcast(&ev(&msg)).unwrap(), msg);
}
