//! The Engine.IO v4 and Socket.IO v5 protocols, pure: no sockets, no async
//! runtime, no clock. Time is passed in as [`std::time::Instant`] arguments, so
//! every protocol rule is a plain unit test (the `quinn-proto` approach).
//!
//! # Layout
//!
//! - [`engine::packet`]: Engine.IO packets; [`engine::Frame`], one packet
//!   encoded once for either transport and shared by reference count.
//! - [`engine::payload`]: long-polling payloads (`0x1e`-joined, `b`+base64
//!   binary); encoding against a byte budget.
//! - [`engine::handshake`]: the open packet JSON, query validation, and the
//!   reference's error codes with their one mapping to HTTP.
//! - [`engine::session`]: one session's rules — heartbeat deadlines, upgrade
//!   states, long-polling overlap — as a state machine driven by `now`.
//! - [`socket::packet`]: Socket.IO packets, their payload rules, byte-exact
//!   encoding, and raw-JSON event encoding for broadcasts.
//! - [`socket::decoder`]: the per-session decoder that reassembles binary
//!   packets from a header and exactly N parts, checking every placeholder.
//! - [`socket::session`]: namespaces per connection, the connect deadline,
//!   and outstanding acknowledgements with timeouts.
//! - [`json`]: JSON written exactly as `JSON.stringify` writes it.
//! - [`date`]: calendar dates as JavaScript's `Date` writes them.
//! - [`adapter`]: the wire format of `@socket.io/redis-adapter` and
//!   `@socket.io/redis-emitter` (broadcasts, requests and responses between
//!   servers sharing a Redis; a notepack.io-compatible MessagePack subset).
//!
//! Every decoder returns an error for malformed input and never panics.

pub mod adapter;
pub mod date;
pub mod engine;
pub mod json;
pub mod socket;
