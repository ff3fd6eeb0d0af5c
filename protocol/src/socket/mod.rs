//! Socket.IO v5: packets, the binary-attachment decoder, and session rules
//! (namespaces, connect deadline, acks).

pub mod decoder;
pub mod packet;
pub mod session;

pub use decoder::{DEFAULT_MAX_ATTACHMENTS, Decoder, decode};
pub use packet::{
    DecodeError, Encoded, Packet, PacketType, RESERVED_EVENTS, encode_connect_ok, encode_raw_ack, encode_raw_event,
    placeholder, placeholder_index,
};

#[cfg(test)]
mod tests;
