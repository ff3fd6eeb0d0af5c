//! The handshake: the open packet's JSON, and the query string of every
//! Engine.IO request with its typed errors.

use serde::{Deserialize, Serialize};

use super::packet::{Frame, PacketType};

/// The open packet's JSON body, in the reference server's key order:
/// `sid`, `upgrades`, `pingInterval`, `pingTimeout`, `maxPayload` and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Handshake {
    /// The session id.
    pub sid: String,
    /// Transports the client may upgrade to (`["websocket"]` from polling, `[]` otherwise).
    pub upgrades: Vec<String>,
    /// Milliseconds between server pings.
    pub ping_interval: u64,
    /// Milliseconds the server waits for a pong.
    pub ping_timeout: u64,
    /// The largest payload (bytes) the server accepts.
    pub max_payload: u64,
}

impl Handshake {
    /// Encodes the open packet `0{...}`.
    pub fn to_frame(&self) -> Frame {
        let upgrades: Vec<&str> = self.upgrades.iter().map(String::as_str).collect();
        open_frame(&self.sid, &upgrades, self.ping_interval, self.ping_timeout, self.max_payload)
    }

    /// Parses the JSON of an open packet (the part after `0`).
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// The open packet `0{...}` of a [`Handshake`] with these fields, written
/// directly (the same bytes as [`Handshake::to_frame`], without building one).
pub fn open_frame(sid: &str, upgrades: &[&str], ping_interval: u64, ping_timeout: u64, max_payload: u64) -> Frame {
    use crate::json::{decimal_len as digits, push_decimal as push_u64};
    // The exact length when nothing needs escaping, so the frame's bytes are
    // the buffer itself (no reallocation, no shared header).
    let len = br#"0{"sid":"","upgrades":[],"pingInterval":,"pingTimeout":,"maxPayload":}"#.len()
        + sid.len()
        + upgrades.iter().map(|u| u.len() + 3).sum::<usize>()
        - usize::from(!upgrades.is_empty())
        + digits(ping_interval)
        + digits(ping_timeout)
        + digits(max_payload);
    let mut out = Vec::with_capacity(len);
    out.push(PacketType::Open.digit());
    out.extend_from_slice(br#"{"sid":"#);
    // Writing JSON into a Vec cannot fail.
    let _ = crate::json::write_to(&mut out, sid);
    out.extend_from_slice(br#","upgrades":"#);
    let _ = crate::json::write_to(&mut out, upgrades);
    out.extend_from_slice(br#","pingInterval":"#);
    push_u64(&mut out, ping_interval);
    out.extend_from_slice(br#","pingTimeout":"#);
    push_u64(&mut out, ping_timeout);
    out.extend_from_slice(br#","maxPayload":"#);
    push_u64(&mut out, max_payload);
    out.push(b'}');
    Frame::Text(bytes::Bytes::from(out))
}

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

impl Transport {
    /// The name used in the `transport` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
        }
    }
}

/// An Engine.IO request error, with the reference server's code and message.
///
/// [`EngineError::status`] and [`EngineError::body`] are the single place that
/// maps them onto HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Code 0: `transport` is missing or not one we serve.
    #[error("Transport unknown")]
    UnknownTransport,
    /// Code 1: `sid` names no open session.
    #[error("Session ID unknown")]
    UnknownSid,
    /// Code 2: a handshake (no `sid`) that is not a GET.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Code 3: anything else that is malformed (transport mismatch, a websocket
    /// handshake without an upgrade, a second concurrent poll, …).
    #[error("Bad request")]
    BadRequest,
    /// Code 4: refused by policy (origin, for instance).
    #[error("Forbidden")]
    Forbidden,
    /// Code 5: `EIO` is not `4`.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
}

impl EngineError {
    /// The reference's numeric error code.
    pub fn code(self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The HTTP status the reference answers with.
    pub fn status(self) -> u16 {
        match self {
            EngineError::Forbidden => 403,
            _ => 400,
        }
    }

    /// The JSON body: `{"code":N,"message":"..."}`.
    pub fn body(self) -> String {
        format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self)
    }
}

/// The Engine.IO parameters of a request's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The requested transport.
    pub transport: Transport,
    /// The session id, for every request after the handshake.
    pub sid: Option<String>,
    /// The `EIO` parameter as given.
    pub eio: Option<String>,
}

impl Query {
    /// Parses and validates a raw query string (the part after `?`, if any),
    /// checking what the reference checks, in its order: the transport, then
    /// (for a handshake, i.e. no `sid`) the protocol version.
    ///
    /// Whether the `sid` exists, and the method rules, are the caller's to check
    /// (see [`Query::check_handshake_method`]). A parameter given twice is
    /// treated as invalid, as the reference sees an array there.
    pub fn parse(raw: &str) -> Result<Query, EngineError> {
        let mut transport: Option<Result<Transport, ()>> = None;
        let mut sid: Option<Result<String, ()>> = None;
        let mut eio: Option<Result<String, ()>> = None;
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(v);
            match k {
                "transport" => {
                    transport = Some(match (&transport, value.as_deref()) {
                        (None, Some("polling")) => Ok(Transport::Polling),
                        (None, Some("websocket")) => Ok(Transport::Websocket),
                        _ => Err(()),
                    })
                }
                "sid" => sid = Some(if sid.is_none() { value.ok_or(()) } else { Err(()) }),
                "EIO" => eio = Some(if eio.is_none() { value.ok_or(()) } else { Err(()) }),
                _ => {}
            }
        }
        let transport = match transport {
            Some(Ok(t)) => t,
            _ => return Err(EngineError::UnknownTransport),
        };
        let sid = match sid {
            None => None,
            Some(Ok(s)) if !s.is_empty() => Some(s),
            Some(Ok(_)) => None,
            Some(Err(())) => return Err(EngineError::UnknownSid),
        };
        let eio = match eio {
            None => None,
            Some(Ok(e)) => Some(e),
            Some(Err(())) => return Err(EngineError::UnsupportedProtocolVersion),
        };
        if sid.is_none() && eio.as_deref() != Some("4") {
            return Err(EngineError::UnsupportedProtocolVersion);
        }
        Ok(Query { transport, sid, eio })
    }

    /// The reference's rules for a request without `sid` (a handshake): it must
    /// be a GET, and a websocket handshake must be an upgrade request.
    pub fn check_handshake_method(&self, method_is_get: bool, is_upgrade: bool) -> Result<(), EngineError> {
        if self.sid.is_some() {
            return Ok(());
        }
        if !method_is_get {
            return Err(EngineError::BadHandshakeMethod);
        }
        if self.transport == Transport::Websocket && !is_upgrade {
            return Err(EngineError::BadRequest);
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes and `+`; `None` if an escape is malformed or the
/// result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                // Two hex digits exactly: `from_str_radix` alone would also
                // take a sign (`%+1` as byte 1).
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_is_encoded_in_reference_key_order() {
        let h = Handshake {
            sid: "lv_VI97HAXpY6yYWAAAC".into(),
            upgrades: vec!["websocket".into()],
            ping_interval: 25000,
            ping_timeout: 5000,
            max_payload: 1000000,
        };
        // Literal from the Engine.IO v4 protocol document ("Handshake").
        let want = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000,"maxPayload":1000000}"#;
        assert_eq!(h.to_frame().bytes().as_ref(), want.as_bytes());
        assert_eq!(Handshake::parse(&want[1..]).unwrap(), h);
        assert!(
            Handshake::parse(r#"{"sid":"x","upgrades":[],"pingInterval":1,"pingTimeout":1,"maxPayload":1,"extra":1}"#)
                .is_err()
        );
    }

    #[test]
    fn open_frame_matches_serde_and_is_exactly_sized() {
        for (sid, upgrades, n) in [
            ("lv_VI97HAXpY6yYWAAAC", vec!["websocket"], [25000, 5000, 1000000]),
            ("a", vec![], [0, 9, 10]),
            ("q\"uo\\te\u{1}", vec!["websocket", "x"], [u64::MAX, 1, 99]),
        ] {
            let h = Handshake {
                sid: sid.into(),
                upgrades: upgrades.iter().map(|u| u.to_string()).collect(),
                ping_interval: n[0],
                ping_timeout: n[1],
                max_payload: n[2],
            };
            let want = format!("0{}", crate::json::to_string(&h).unwrap());
            assert_eq!(open_frame(sid, &upgrades, n[0], n[1], n[2]).bytes().as_ref(), want.as_bytes());
            assert_eq!(h.to_frame().bytes().as_ref(), want.as_bytes());
        }
    }

    #[test]
    fn error_bodies_match_the_reference() {
        assert_eq!(EngineError::UnknownTransport.body(), r#"{"code":0,"message":"Transport unknown"}"#);
        assert_eq!(EngineError::UnknownSid.body(), r#"{"code":1,"message":"Session ID unknown"}"#);
        assert_eq!(EngineError::BadHandshakeMethod.body(), r#"{"code":2,"message":"Bad handshake method"}"#);
        assert_eq!(EngineError::BadRequest.body(), r#"{"code":3,"message":"Bad request"}"#);
        assert_eq!(EngineError::Forbidden.body(), r#"{"code":4,"message":"Forbidden"}"#);
        assert_eq!(
            EngineError::UnsupportedProtocolVersion.body(),
            r#"{"code":5,"message":"Unsupported protocol version"}"#
        );
        assert_eq!(EngineError::Forbidden.status(), 403);
        assert_eq!(EngineError::UnknownSid.status(), 400);
    }

    #[test]
    fn query_validation() {
        let q = Query::parse("EIO=4&transport=polling&t=N8hyd6w").unwrap();
        assert_eq!(q.transport, Transport::Polling);
        assert_eq!(q.sid, None);
        let q = Query::parse("EIO=4&transport=websocket&sid=lv_VI97HAXpY6yYWAAAC").unwrap();
        assert_eq!(q.transport, Transport::Websocket);
        assert_eq!(q.sid.as_deref(), Some("lv_VI97HAXpY6yYWAAAC"));
        // The version only matters for a handshake, as in the reference.
        assert!(Query::parse("transport=polling&sid=abc").is_ok());
        assert_eq!(Query::parse("EIO=4"), Err(EngineError::UnknownTransport));
        assert_eq!(Query::parse("EIO=4&transport=tobi"), Err(EngineError::UnknownTransport));
        assert_eq!(Query::parse("EIO=4&transport=polling&transport=polling"), Err(EngineError::UnknownTransport));
        assert_eq!(Query::parse("EIO=3&transport=polling"), Err(EngineError::UnsupportedProtocolVersion));
        assert_eq!(Query::parse("transport=polling"), Err(EngineError::UnsupportedProtocolVersion));
        assert_eq!(Query::parse("EIO=4&transport=polling&sid=a&sid=b"), Err(EngineError::UnknownSid));
        assert_eq!(Query::parse("EIO=4&transport=polling&sid=%zz"), Err(EngineError::UnknownSid));
        assert_eq!(Query::parse("EIO=4&transport=polling&sid=a%2Db").unwrap().sid.as_deref(), Some("a-b"));
        assert_eq!(Query::parse("").unwrap_err(), EngineError::UnknownTransport);
    }

    #[test]
    fn percent_escapes_are_two_hex_digits() {
        assert_eq!(percent_decode("a%2Db+c").as_deref(), Some("a-b c"));
        assert_eq!(percent_decode("%e9%9B%BB").as_deref(), Some("\u{96fb}"));
        for bad in ["%+1", "%+f", "%-1", "% 1", "%1", "%", "%g0", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
        assert_eq!(Query::parse("transport=polling&sid=%+1"), Err(EngineError::UnknownSid));
    }

    #[test]
    fn handshake_method_rules() {
        let hs = Query::parse("EIO=4&transport=polling").unwrap();
        assert_eq!(hs.check_handshake_method(false, false), Err(EngineError::BadHandshakeMethod));
        assert_eq!(hs.check_handshake_method(true, false), Ok(()));
        let ws = Query::parse("EIO=4&transport=websocket").unwrap();
        assert_eq!(ws.check_handshake_method(true, false), Err(EngineError::BadRequest));
        assert_eq!(ws.check_handshake_method(true, true), Ok(()));
        let with_sid = Query::parse("EIO=4&transport=polling&sid=x").unwrap();
        assert_eq!(with_sid.check_handshake_method(false, false), Ok(()));
    }
}
