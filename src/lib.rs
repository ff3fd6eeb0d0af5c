//! eventfeed: a real-time, multi-tenant event feed server speaking Engine.IO v4
//! and Socket.IO v5 on raw hyper and tokio-tungstenite.
//!
//! # Layout
//!
//! - [`server`]: the listener — accept loop, HTTP/1.1 per connection (header
//!   timeout, size limits, connection limit), routing, graceful shutdown.
//! - [`http`]: response builders, body-size helpers, the origin policy (CORS).
//! - [`engine`]: the Engine.IO runtime — handshake, long-polling, websocket,
//!   upgrade, heartbeat, the session table, bounded per-session queues.
//!   Protocol rules come from the `eventfeed-protocol` crate; this does the I/O.
//! - [`sio`]: the Socket.IO layer — namespaces with connect handlers, sockets,
//!   acks both ways, rooms, broadcast of packets encoded once.
//! - [`feed`]: the event feed of the contract — the sharded per-tenant store,
//!   auth, the REST API, the `/events` namespace, and the delivery seam.
//! - [`cluster`]: Redis mode — the event store, broadcast and kept sessions
//!   shared by several instances, in the wire format of Node's
//!   `@socket.io/redis-adapter` (off unless `NB_BACKEND_REDIS_URL` is set).
//! - [`config`]: configuration from the environment, with `--help`.
//! - [`metrics`]: Prometheus metrics, exported at `/metrics`.

pub mod app;
pub mod backend;
pub mod config;
pub mod engine;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod server;
pub mod sio;
