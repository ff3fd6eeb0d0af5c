//! The Socket.IO decoder: string packets, and binary packets reassembled from
//! their header and exactly N binary parts.
//!
//! One [`Decoder`] per Engine.IO session, fed every message in arrival order.
//! A binary packet's header announces N attachments (capped by
//! `max_attachments`); the next N Engine.IO binary messages are its parts. Any
//! text packet before the parts are complete, a binary message with no header
//! waiting, or a placeholder that points outside the parts is a protocol error.

use bytes::Bytes;

use super::packet::{DecodeError, Header, Packet, decode_str};

/// The default cap on attachments per packet.
pub const DEFAULT_MAX_ATTACHMENTS: usize = 10;

/// Decodes a session's incoming Socket.IO packets.
#[derive(Debug)]
pub struct Decoder {
    max_attachments: usize,
    pending: Option<Header>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ATTACHMENTS)
    }
}

impl Decoder {
    /// A decoder that accepts at most `max_attachments` binary parts per packet.
    pub fn new(max_attachments: usize) -> Self {
        Decoder { max_attachments, pending: None }
    }

    /// Feeds an Engine.IO text message. Returns the packet when it is complete,
    /// `None` when it is a binary packet's header waiting for its parts.
    pub fn decode_text(&mut self, s: &str) -> Result<Option<Packet>, DecodeError> {
        if self.pending.is_some() {
            self.pending = None;
            return Err(DecodeError::UnexpectedText);
        }
        let header = decode_str(s, self.max_attachments)?;
        if header.expected_attachments == 0 {
            return Ok(Some(header.packet));
        }
        self.pending = Some(header);
        Ok(None)
    }

    /// Feeds an Engine.IO binary message: the next part of the pending packet.
    /// Returns the packet once its last part arrived.
    pub fn decode_binary(&mut self, data: Bytes) -> Result<Option<Packet>, DecodeError> {
        let Some(header) = self.pending.as_mut() else {
            return Err(DecodeError::UnexpectedBinary);
        };
        header.packet.attachments.push(data);
        if header.packet.attachments.len() < header.expected_attachments {
            return Ok(None);
        }
        Ok(self.pending.take().map(|h| h.packet))
    }

    /// Whether a binary packet is waiting for parts.
    pub fn is_reconstructing(&self) -> bool {
        self.pending.is_some()
    }
}

/// Decodes a complete, attachment-free packet string (a convenience for tests
/// and clients that never see binary).
pub fn decode(s: &str) -> Result<Packet, DecodeError> {
    let mut d = Decoder::default();
    d.decode_text(s)?.ok_or(DecodeError::IllegalAttachments)
}
