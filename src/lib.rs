//! eventfeed: a real-time, multi-tenant event feed server speaking Engine.IO v4
//! and Socket.IO v5 on raw hyper and tokio-tungstenite.
//!
//! # Layout
//!
//! The house reads in one direction: each layer uses only those below it.
//!
//! ```text
//!  main.rs, app        configuration, wiring (the backend is chosen once), shutdown
//!     │
//!  backend/            memory: ring buffers + kept sessions    redis: shared store + redis-adapter
//!     │                  (behind feed's store seam)              (behind both seams)
//!  feed/               the domain: events, auth, limits, paging and recovery rules,
//!     │                REST routes, the /events gateway, the store seam
//!  sio/    server      Socket.IO: namespaces typed by their handler, rooms, acks,
//!     │       │        broadcast, the cluster-adapter seam  │  listener, routing, shutdown
//!  engine/ ───┘        Engine.IO: handshake, polling, websocket, upgrade, heartbeat
//!     │
//!  http/, config, metrics      HTTP plumbing and CORS, settings, every exported series
//!     │
//!  eventfeed-protocol  pure codecs and session rules: Engine.IO, Socket.IO, redis-adapter
//! ```
//!
//! - [`app`]: the wiring — a [`feed::Feed`] over a store, its namespace in a
//!   [`sio::SocketIo`] over a cluster adapter, the engine, the router.
//! - [`backend`]: what sits behind the two seams: [`backend::memory`] (one
//!   process) and [`backend::redis`] (several instances as one).
//! - [`feed`]: the event feed of the contract — events, auth, rate limits,
//!   paging and recovery rules, the REST API, the `/events` namespace, and
//!   the store seam ([`feed::store`]).
//! - [`sio`]: the Socket.IO layer — namespaces, sockets with typed data, acks
//!   both ways, rooms, broadcast of packets encoded once, and the cluster
//!   adapter seam ([`sio::adapter`]).
//! - [`server`]: the listener — accept loop, HTTP/1.1 per connection (header
//!   timeout, size limits, connection limit), routing, graceful shutdown.
//! - [`engine`]: the Engine.IO runtime — handshake, long-polling, websocket,
//!   upgrade, heartbeat, the session table, bounded per-session queues.
//!   Protocol rules come from the `eventfeed-protocol` crate; this does the I/O.
//! - [`http`]: response builders, body-size helpers, the origin policy
//!   (CORS), and the accepted connection with its slot.
//! - [`config`]: configuration from the environment, with `--help`.
//! - [`metrics`]: every Prometheus series, exported at `/metrics`.
//!
//! # The path of one event
//!
//! `POST /api/events` → [`feed::rest`] authenticates the caller
//! ([`feed::auth`]), checks the rate limits ([`feed::limits`]) and the message
//! → [`feed::Feed::post`] → the store appends it with the tenant's next `seq`
//! ([`feed::store::Store::append`]; in Redis, a script that also publishes it,
//! and each instance's subscription applies it to its copy) → under the
//! tenant's lock, [`feed::delivery`] encodes `event_created` once and the
//! namespace queues the same bytes to every socket in the room
//! `tenant:{id}` ([`sio::Namespace::broadcast`]) → each session's task writes
//! what is queued, many frames per system call ([`engine`]).

pub mod app;
pub mod backend;
pub mod config;
pub mod engine;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod server;
pub mod sio;
