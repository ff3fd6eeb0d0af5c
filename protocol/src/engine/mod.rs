//! Engine.IO v4: packets, polling payloads, the handshake and query rules, and
//! the session state machine.

pub mod handshake;
pub mod packet;
pub mod payload;
pub mod session;

pub use handshake::{EngineError, Handshake, Query, Transport, open_frame};
pub use packet::{DecodeError, Frame, Packet, PacketType, decode_binary, decode_text};
