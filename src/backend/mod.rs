//! The backends behind the two seams: the feed's store seam
//! ([`crate::feed::store`]) and the Socket.IO layer's cluster-adapter seam
//! ([`crate::sio::adapter`]).
//!
//! - [`memory`]: one process alone — the lock-sharded per-tenant ring
//!   buffers and the sessions kept for recovery (the adapter is then
//!   [`crate::sio::LocalAdapter`]).
//! - [`redis`]: several instances as one — the store shared in Redis, and
//!   the `@socket.io/redis-adapter` broadcast and request/response channels.
//!
//! The wiring ([`crate::app`]) picks one, once.

pub mod memory;
pub mod redis;
