//! Engine.IO v4 packets: decoding what a peer sent, and [`Frame`], the encoded
//! wire form of one packet that both transports share.
//!
//! On a websocket every packet is one frame: text packets are `<type digit><data>`
//! and a binary message is the raw bytes. Long-polling carries the same text forms
//! joined into a payload (see [`super::payload`]), with binary messages as `b` +
//! base64. So a packet is encoded once into a [`Frame`] and either transport can
//! write it.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// The seven Engine.IO packet types, with their wire digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// `0`: the handshake, server to client.
    Open = 0,
    /// `1`: the transport is to be closed.
    Close = 1,
    /// `2`: a heartbeat ping (or `2probe` during an upgrade).
    Ping = 2,
    /// `3`: the answer to a ping (or `3probe`).
    Pong = 3,
    /// `4`: an application message.
    Message = 4,
    /// `5`: completes the upgrade to websocket.
    Upgrade = 5,
    /// `6`: does nothing; used to release a pending poll during an upgrade.
    Noop = 6,
}

impl PacketType {
    /// The packet type for a wire digit, if it is one.
    pub fn from_digit(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }

    /// The wire digit of this packet type.
    pub fn digit(self) -> u8 {
        b'0' + self as u8
    }
}

/// A decoded Engine.IO packet, borrowing from the input where it can.
///
/// Like the reference parser, any packet type may carry trailing data; it is kept
/// for `Ping`/`Pong` (where `probe` matters) and the handshake, and ignored for
/// the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// The handshake JSON (only a client receives this).
    Open(&'a str),
    /// Close the session.
    Close,
    /// A ping with its data (`""` or `"probe"`).
    Ping(&'a str),
    /// A pong with its data (`""` or `"probe"`).
    Pong(&'a str),
    /// A text message.
    Message(&'a str),
    /// A binary message.
    Binary(Cow<'a, [u8]>),
    /// Upgrade to the new transport.
    Upgrade,
    /// No operation.
    Noop,
}

impl Packet<'_> {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Open(_) => PacketType::Open,
            Packet::Close => PacketType::Close,
            Packet::Ping(_) => PacketType::Ping,
            Packet::Pong(_) => PacketType::Pong,
            Packet::Message(_) | Packet::Binary(_) => PacketType::Message,
            Packet::Upgrade => PacketType::Upgrade,
            Packet::Noop => PacketType::Noop,
        }
    }

    /// Encodes the packet into its wire [`Frame`].
    pub fn to_frame(&self) -> Frame {
        match self {
            Packet::Binary(data) => Frame::Binary(Bytes::copy_from_slice(data)),
            Packet::Open(data) | Packet::Ping(data) | Packet::Pong(data) | Packet::Message(data) => {
                Frame::text_packet(self.packet_type(), data)
            }
            Packet::Close | Packet::Upgrade | Packet::Noop => Frame::text_packet(self.packet_type(), ""),
        }
    }
}

/// Why a text packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet was empty.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type digit.
    #[error("unknown packet type {byte:#04x}")]
    UnknownType {
        /// The offending first byte.
        byte: u8,
    },
    /// A polling payload was not UTF-8.
    #[error("payload is not valid UTF-8 (at byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A `b`-prefixed polling packet was not valid base64.
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
}

/// Decodes one packet from a websocket text frame or one polling payload part.
pub fn decode_text(s: &str) -> Result<Packet<'_>, DecodeError> {
    let first = *s.as_bytes().first().ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType { byte: first })?;
    // The first byte is an ASCII digit, so index 1 is a char boundary.
    let data = &s[1..];
    Ok(match kind {
        PacketType::Open => Packet::Open(data),
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(data),
        PacketType::Pong => Packet::Pong(data),
        PacketType::Message => Packet::Message(data),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decodes a websocket binary frame: always a binary message.
pub fn decode_binary(data: &[u8]) -> Packet<'_> {
    Packet::Binary(Cow::Borrowed(data))
}

/// One encoded Engine.IO packet, ready for either transport.
///
/// `Text` holds the whole text form, type digit included (`4hello`, `2`,
/// `0{"sid":…}`), and is always valid UTF-8. `Binary` holds a binary message's
/// raw bytes. Cloning is a reference-count increment, so one encoded broadcast is
/// shared by every recipient.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Frame {
    /// A text packet (valid UTF-8, type digit first).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Frame {
    /// The ping packet `2`.
    pub const PING: Frame = Frame::Text(Bytes::from_static(b"2"));
    /// The pong packet `3`.
    pub const PONG: Frame = Frame::Text(Bytes::from_static(b"3"));
    /// The probe answer `3probe`.
    pub const PONG_PROBE: Frame = Frame::Text(Bytes::from_static(b"3probe"));
    /// The probe ping `2probe` (sent by clients).
    pub const PING_PROBE: Frame = Frame::Text(Bytes::from_static(b"2probe"));
    /// The close packet `1`.
    pub const CLOSE: Frame = Frame::Text(Bytes::from_static(b"1"));
    /// The noop packet `6`.
    pub const NOOP: Frame = Frame::Text(Bytes::from_static(b"6"));
    /// The upgrade packet `5` (sent by clients).
    pub const UPGRADE: Frame = Frame::Text(Bytes::from_static(b"5"));

    /// A text packet of `kind` with `data`.
    pub fn text_packet(kind: PacketType, data: &str) -> Frame {
        let mut buf = Vec::with_capacity(1 + data.len());
        buf.push(kind.digit());
        buf.extend_from_slice(data.as_bytes());
        Frame::Text(Bytes::from(buf))
    }

    /// A text message packet: `4` + `text`.
    pub fn message(text: &str) -> Frame {
        Frame::text_packet(PacketType::Message, text)
    }

    /// Wraps bytes that the caller has already written as a whole text packet.
    ///
    /// Returns `None` if they are not UTF-8 or do not start with a type digit.
    pub fn from_text_bytes(bytes: Bytes) -> Option<Frame> {
        std::str::from_utf8(&bytes).ok()?;
        PacketType::from_digit(*bytes.first()?)?;
        Some(Frame::Text(bytes))
    }

    /// The bytes as they go on a websocket (text or binary frame).
    pub fn bytes(&self) -> &Bytes {
        match self {
            Frame::Text(b) | Frame::Binary(b) => b,
        }
    }

    /// Whether this is a text packet.
    pub fn is_text(&self) -> bool {
        matches!(self, Frame::Text(_))
    }

    /// Decodes the frame back into a packet (mostly for clients and tests).
    pub fn decode(&self) -> Result<Packet<'_>, DecodeError> {
        match self {
            Frame::Text(b) => decode_text(
                std::str::from_utf8(b).map_err(|e| DecodeError::InvalidUtf8 { valid_up_to: e.valid_up_to() })?,
            ),
            Frame::Binary(b) => Ok(decode_binary(b)),
        }
    }

    /// Size of this packet inside a polling payload (binary is `b` + base64).
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Text(b) => b.len(),
            Frame::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Text(b) => f.debug_tuple("Text").field(&String::from_utf8_lossy(b)).finish(),
            Frame::Binary(b) => f.debug_tuple("Binary").field(&b.len()).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Literal examples from the Engine.IO v4 protocol document ("Packet encoding").
    #[test]
    fn protocol_document_text_packets() {
        assert_eq!(decode_text("4hello").unwrap(), Packet::Message("hello"));
        assert_eq!(decode_text("2").unwrap(), Packet::Ping(""));
        assert_eq!(decode_text("3").unwrap(), Packet::Pong(""));
        assert_eq!(decode_text("2probe").unwrap(), Packet::Ping("probe"));
        assert_eq!(decode_text("3probe").unwrap(), Packet::Pong("probe"));
        assert_eq!(decode_text("5").unwrap(), Packet::Upgrade);
        assert_eq!(decode_text("6").unwrap(), Packet::Noop);
        assert_eq!(decode_text("1").unwrap(), Packet::Close);
        assert_eq!(
            decode_text(r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000,"maxPayload":1000000}"#).unwrap(),
            Packet::Open(r#"{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000,"maxPayload":1000000}"#)
        );
        assert_eq!(Packet::Message("hello").to_frame(), Frame::Text(Bytes::from_static(b"4hello")));
        assert_eq!(Packet::Ping("probe").to_frame(), Frame::PING_PROBE);
        assert_eq!(Packet::Pong("probe").to_frame(), Frame::PONG_PROBE);
        assert_eq!(Packet::Upgrade.to_frame(), Frame::UPGRADE);
        assert_eq!(Packet::Noop.to_frame(), Frame::NOOP);
    }

    #[test]
    fn binary_frames_are_messages() {
        let data = [1u8, 2, 3, 4];
        assert_eq!(decode_binary(&data), Packet::Binary(Cow::Borrowed(&data[..])));
        assert_eq!(
            Packet::Binary(Cow::Borrowed(&data[..])).to_frame(),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4]))
        );
        assert_eq!(Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])).payload_len(), "bAQIDBA==".len());
    }

    #[test]
    fn bad_text_packets_are_errors() {
        assert_eq!(decode_text(""), Err(DecodeError::Empty));
        assert_eq!(decode_text("7"), Err(DecodeError::UnknownType { byte: b'7' }));
        assert_eq!(decode_text("é"), Err(DecodeError::UnknownType { byte: 0xc3 }));
        assert_eq!(decode_text("b"), Err(DecodeError::UnknownType { byte: b'b' }));
    }

    #[test]
    fn from_text_bytes_checks_form() {
        assert!(Frame::from_text_bytes(Bytes::from_static(b"4x")).is_some());
        assert!(Frame::from_text_bytes(Bytes::from_static(b"x")).is_none());
        assert!(Frame::from_text_bytes(Bytes::from_static(b"")).is_none());
        assert!(Frame::from_text_bytes(Bytes::from_static(&[b'4', 0xff])).is_none());
    }
}
