//! What the load generator reads and writes on a Socket.IO websocket, with a
//! fast path for the frames that arrive by the million (`event_created`):
//! they are parsed straight into borrowed fields, with no `serde_json::Value`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

/// The fields of an event the checks need (the others are skipped).
#[derive(Debug, Deserialize)]
pub struct EventLite<'a> {
    /// Per-tenant sequence number.
    pub seq: u64,
    /// The tenant the server says the event belongs to.
    #[serde(borrow)]
    pub tenant_id: Cow<'a, str>,
    /// The message (carries the publisher's send time).
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// Only the sequence number, for snapshots.
#[derive(Debug, Deserialize)]
pub struct SeqOnly {
    /// Per-tenant sequence number.
    pub seq: u64,
}

/// An event name, borrowed from the frame when it has no escapes.
#[derive(Debug, Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

/// The arguments of an EVENT packet, by event name.
#[derive(Debug)]
pub enum EventArgs<'a> {
    /// `["event_created", event, offset?]`.
    Created(EventLite<'a>),
    /// `["snapshot", [events]]`: the largest `seq` and the count.
    Snapshot {
        /// The largest seq in the snapshot (`None` when empty).
        max_seq: Option<u64>,
        /// How many events it held.
        len: usize,
    },
    /// Any other event (`error`, `replay_result`, …).
    Other(String),
}

impl<'de: 'a, 'a> Deserialize<'de> for EventArgs<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // One visitor for both: the offset (a borrowed slice, no allocation) is dropped.
        EventArgsWithOffset::deserialize(d).map(|w| w.args)
    }
}

/// The first argument of a `post_event` acknowledgement: `{event}` or `{error}`.
#[derive(Debug, Deserialize)]
pub struct AckBody {
    /// The created event (its seq only).
    pub event: Option<SeqOnly>,
    /// The refusal.
    pub error: Option<serde_json::Value>,
}

/// A frame received on the websocket, classified.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// Engine.IO ping: answer with a pong.
    Ping,
    /// An EVENT on our namespace.
    Event(EventArgs<'a>),
    /// An ACK on our namespace: its id and body.
    Ack(u64, AckBody),
    /// CONNECT answered (our namespace).
    Connected,
    /// CONNECT_ERROR: the message.
    ConnectError(String),
    /// Engine.IO close or Socket.IO DISCONNECT: the session is over.
    Closed,
    /// Anything else (pong, noop, other namespaces, …).
    Ignored,
}

/// Builds and classifies frames for one namespace.
#[derive(Debug, Clone)]
pub struct Wire {
    /// `/events,` (or empty for the main namespace `/`).
    nsp_prefix: String,
}

impl Wire {
    /// For namespace `nsp` (e.g. `/events`).
    pub fn new(nsp: &str) -> Wire {
        let nsp_prefix = if nsp == "/" || nsp.is_empty() { String::new() } else { format!("{nsp},") };
        Wire { nsp_prefix }
    }

    /// `40/events,{"tenantId":..,"token":..}`.
    pub fn connect(&self, tenant: &str, token: &str) -> String {
        let auth = serde_json::json!({ "tenantId": tenant, "token": token });
        format!("40{}{auth}", self.nsp_prefix)
    }

    /// `42/events,<id>["post_event",{"message":..}]`.
    pub fn post_event(&self, id: u64, message: &str) -> String {
        let body = serde_json::json!({ "message": message });
        format!("42{}{id}[\"post_event\",{body}]", self.nsp_prefix)
    }

    /// Classifies a text frame. `Err` is a frame this namespace's protocol does not allow.
    pub fn classify<'a>(&self, text: &'a str) -> Result<Incoming<'a>, String> {
        let bytes = text.as_bytes();
        match bytes.first() {
            Some(b'2') => return Ok(Incoming::Ping),
            Some(b'1') => return Ok(Incoming::Closed),
            Some(b'4') => {}
            Some(_) => return Ok(Incoming::Ignored),
            None => return Err("empty frame".to_string()),
        }
        let sio = &text[1..];
        let Some(kind) = sio.as_bytes().first().copied() else {
            return Err("empty Socket.IO packet".to_string());
        };
        let Some(rest) = sio[1..].strip_prefix(self.nsp_prefix.as_str()) else {
            return Ok(Incoming::Ignored);
        };
        // The main namespace has no prefix, so a packet of another namespace
        // starts with '/': not ours.
        if self.nsp_prefix.is_empty() && rest.starts_with('/') {
            return Ok(Incoming::Ignored);
        }
        match kind {
            b'2' => {
                let json = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                serde_json::from_str(json).map(Incoming::Event).map_err(|e| format!("bad EVENT {}: {e}", clip(text)))
            }
            b'3' => {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                let id: u64 = rest[..digits].parse().map_err(|_| format!("ACK without id: {}", clip(text)))?;
                let (body,): (AckBody,) =
                    serde_json::from_str(&rest[digits..]).map_err(|e| format!("bad ACK {}: {e}", clip(text)))?;
                Ok(Incoming::Ack(id, body))
            }
            b'0' => Ok(Incoming::Connected),
            b'4' => {
                let msg = serde_json::from_str::<serde_json::Value>(rest)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                    .unwrap_or_else(|| rest.to_string());
                Ok(Incoming::ConnectError(msg))
            }
            b'1' => Ok(Incoming::Closed),
            _ => Ok(Incoming::Ignored),
        }
    }
}

/// The CONNECT answer of a namespace: `40/events,{"sid":"..","pid":".."}`
/// (`pid` only when the server does connection state recovery).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConnectAnswer {
    /// The socket id (the same as before when a session was recovered).
    pub sid: String,
    /// The private session id to present when reconnecting.
    #[serde(default)]
    pub pid: Option<String>,
}

/// The arguments of an EVENT packet as [`EventArgs`], with the last argument
/// of an `event_created` kept when it is a string: the recovery offset
/// (`["event_created", event, "OFFSET"]`).
#[derive(Debug)]
pub struct EventArgsWithOffset<'a> {
    /// The arguments.
    pub args: EventArgs<'a>,
    /// The offset (`None` without one, and for other events).
    pub offset: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for EventArgsWithOffset<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = EventArgsWithOffset<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Socket.IO event array [name, args...]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let name: Name<'de> = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let mut offset = None;
                let args = match name.0.as_ref() {
                    "event_created" => {
                        let event = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                        // The offset is the last argument: keep the last string seen.
                        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
                            offset = json_string(raw.get()).map_err(de::Error::custom)?;
                        }
                        EventArgs::Created(event)
                    }
                    "snapshot" => {
                        let events: Vec<SeqOnly> =
                            seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                        EventArgs::Snapshot { max_seq: events.iter().map(|e| e.seq).max(), len: events.len() }
                    }
                    other => EventArgs::Other(other.to_string()),
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(EventArgsWithOffset { args, offset })
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// A JSON value's text as a string when it is one (borrowed when it has no escapes).
fn json_string(raw: &str) -> Result<Option<Cow<'_, str>>, serde_json::Error> {
    if !raw.starts_with('"') {
        return Ok(None);
    }
    if raw.len() >= 2 && !raw.contains('\\') {
        return Ok(Some(Cow::Borrowed(&raw[1..raw.len() - 1])));
    }
    serde_json::from_str::<String>(raw).map(|s| Some(Cow::Owned(s)))
}

impl Wire {
    /// `40/events,{"tenantId":..,"token":..,"pid":..,"offset":..}`: a CONNECT
    /// asking to recover session `pid` after `offset` (the official client puts
    /// both beside the auth fields).
    pub fn connect_recover(&self, tenant: &str, token: &str, pid: &str, offset: &str) -> String {
        let auth = serde_json::json!({ "tenantId": tenant, "token": token, "pid": pid, "offset": offset });
        format!("40{}{auth}", self.nsp_prefix)
    }

    /// The ids of a CONNECT answer (`40/events,{"sid":..,"pid":..}`); `None`
    /// for any other frame or an answer without a `sid`.
    pub fn connect_answer(&self, text: &str) -> Option<ConnectAnswer> {
        let rest = text.strip_prefix("40")?.strip_prefix(self.nsp_prefix.as_str())?;
        if self.nsp_prefix.is_empty() && rest.starts_with('/') {
            return None;
        }
        serde_json::from_str(rest).ok()
    }

    /// As [`Wire::classify`], also returning the recovery offset of an
    /// `event_created` (its last argument, when a string). Only EVENT frames
    /// take another path; every other frame is classified as `classify` does.
    pub fn classify_with_offset<'a>(&self, text: &'a str) -> Result<(Incoming<'a>, Option<Cow<'a, str>>), String> {
        if let Some(rest) = text.strip_prefix("42").and_then(|r| r.strip_prefix(self.nsp_prefix.as_str()))
            && !(self.nsp_prefix.is_empty() && rest.starts_with('/'))
        {
            let json = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            return serde_json::from_str::<EventArgsWithOffset<'a>>(json)
                .map(|e| (Incoming::Event(e.args), e.offset))
                .map_err(|e| format!("bad EVENT {}: {e}", clip(text)));
        }
        self.classify(text).map(|i| (i, None))
    }
}

/// The start of a frame, for error messages.
pub fn clip(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The publisher's message: `b:<tenant>:<publisher><counter>:<send nanos>`,
/// padded with `.` to at least `min_len` bytes before the time.
pub fn bench_message(tenant: &str, publisher: char, counter: u64, sent_nanos: u64, min_len: usize) -> String {
    let mut m = format!("b:{tenant}:{publisher}{counter}:");
    let time = sent_nanos.to_string();
    let total = m.len() + time.len();
    if total < min_len {
        m.extend(std::iter::repeat_n('.', min_len - total - 1));
        m.push(':');
    }
    m.push_str(&time);
    m
}

/// The tenant and send time of a bench message (`None` for other messages).
pub fn parse_bench_message(message: &str) -> Option<(&str, u64)> {
    let rest = message.strip_prefix("b:")?;
    let (tenant, _) = rest.split_once(':')?;
    let (_, nanos) = rest.rsplit_once(':')?;
    Some((tenant, nanos.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_frames() -> Result<(), String> {
        let w = Wire::new("/events");
        let ev = r#"42/events,["event_created",{"id":"x","seq":7,"tenant_id":"t1","message":"b:t1:r3:99","timestamp":"z","author":"bench"},"off-1"]"#;
        match w.classify(ev)? {
            Incoming::Event(EventArgs::Created(e)) => {
                assert_eq!((e.seq, e.tenant_id.as_ref(), e.message.as_ref()), (7, "t1", "b:t1:r3:99"));
            }
            other => return Err(format!("{other:?}")),
        }
        // Without the offset (the Node baseline), and with escapes in the message.
        let ev = r#"42/events,["event_created",{"seq":8,"tenant_id":"t1","message":"a\"b"}]"#;
        assert!(matches!(w.classify(ev)?, Incoming::Event(EventArgs::Created(e)) if e.message == "a\"b"));
        let snap = r#"42/events,["snapshot",[{"seq":3,"tenant_id":"t","message":"m"},{"seq":4}]]"#;
        assert!(matches!(w.classify(snap)?, Incoming::Event(EventArgs::Snapshot { max_seq: Some(4), len: 2 })));
        let empty = r#"42/events,["snapshot",[]]"#;
        assert!(matches!(w.classify(empty)?, Incoming::Event(EventArgs::Snapshot { max_seq: None, len: 0 })));
        let ack = r#"43/events,12[{"event":{"id":"x","seq":5,"tenant_id":"t"}}]"#;
        assert!(matches!(w.classify(ack)?, Incoming::Ack(12, AckBody { event: Some(SeqOnly { seq: 5 }), .. })));
        let nack = r#"43/events,13[{"error":{"code":"rate_limited","message":"slow down"}}]"#;
        assert!(matches!(w.classify(nack)?, Incoming::Ack(13, AckBody { event: None, error: Some(_) })));
        assert!(matches!(w.classify(r#"40/events,{"sid":"a","pid":"b"}"#)?, Incoming::Connected));
        assert!(
            matches!(w.classify(r#"44/events,{"message":"unauthorized"}"#)?, Incoming::ConnectError(m) if m == "unauthorized")
        );
        assert!(matches!(w.classify("2")?, Incoming::Ping));
        assert!(matches!(w.classify("1")?, Incoming::Closed));
        assert!(matches!(w.classify("41/events,")?, Incoming::Closed));
        assert!(matches!(w.classify(r#"42/other,["x"]"#)?, Incoming::Ignored));
        assert!(
            matches!(w.classify(r#"42/events,["error",{"code":"x"}]"#)?, Incoming::Event(EventArgs::Other(n)) if n == "error")
        );
        assert!(w.classify("42/events,[1").is_err());
        Ok(())
    }

    #[test]
    fn main_namespace() -> Result<(), String> {
        let w = Wire::new("/");
        assert_eq!(w.connect("t0", "k"), r#"40{"tenantId":"t0","token":"k"}"#);
        assert!(matches!(w.classify(r#"42["snapshot",[]]"#)?, Incoming::Event(EventArgs::Snapshot { .. })));
        assert!(matches!(w.classify(r#"42/events,["snapshot",[]]"#)?, Incoming::Ignored));
        Ok(())
    }

    #[test]
    fn builds_packets() {
        let w = Wire::new("/events");
        assert_eq!(w.connect("t3", "bench_admin"), r#"40/events,{"tenantId":"t3","token":"bench_admin"}"#);
        assert_eq!(w.post_event(4, "hi"), r#"42/events,4["post_event",{"message":"hi"}]"#);
    }

    #[test]
    fn offsets_and_connect_answers() -> Result<(), String> {
        let w = Wire::new("/events");
        let ev = r#"42/events,["event_created",{"seq":7,"tenant_id":"t1","message":"m"},"0000abcd:7:1a2b3c4d"]"#;
        match w.classify_with_offset(ev)? {
            (Incoming::Event(EventArgs::Created(e)), Some(off)) => {
                assert_eq!((e.seq, off.as_ref()), (7, "0000abcd:7:1a2b3c4d"));
                assert!(matches!(off, Cow::Borrowed(_)));
            }
            other => return Err(format!("{other:?}")),
        }
        // Without an offset, with an escaped one, and an offset that is not a string.
        let ev = r#"42/events,["event_created",{"seq":8,"tenant_id":"t1","message":"a\"b"}]"#;
        assert!(matches!(w.classify_with_offset(ev)?, (Incoming::Event(EventArgs::Created(e)), None) if e.seq == 8));
        let ev = r#"42/events,["event_created",{"seq":9,"tenant_id":"t1","message":"m"},"a\"b"]"#;
        assert!(matches!(w.classify_with_offset(ev)?, (_, Some(o)) if o == "a\"b"));
        let ev = r#"42/events,["event_created",{"seq":9,"tenant_id":"t1","message":"m"},{"x":[1]}]"#;
        assert!(matches!(w.classify_with_offset(ev)?, (Incoming::Event(EventArgs::Created(_)), None)));
        let snap = r#"42/events,["snapshot",[{"seq":3},{"seq":4}]]"#;
        assert!(matches!(
            w.classify_with_offset(snap)?,
            (Incoming::Event(EventArgs::Snapshot { max_seq: Some(4), len: 2 }), None)
        ));
        assert!(matches!(w.classify_with_offset("2")?, (Incoming::Ping, None)));
        assert!(matches!(w.classify_with_offset(r#"42/other,["x"]"#)?, (Incoming::Ignored, None)));
        assert!(w.classify_with_offset("42/events,[1").is_err());

        let a = w.connect_answer(r#"40/events,{"sid":"s1","pid":"p1"}"#);
        assert_eq!(a, Some(ConnectAnswer { sid: "s1".into(), pid: Some("p1".into()) }));
        let a = w.connect_answer(r#"40/events,{"sid":"s2"}"#);
        assert_eq!(a, Some(ConnectAnswer { sid: "s2".into(), pid: None }));
        assert_eq!(w.connect_answer(r#"40/other,{"sid":"s"}"#), None);
        assert_eq!(w.connect_answer("40/events,"), None);
        let main = Wire::new("/");
        assert_eq!(main.connect_answer(r#"40{"sid":"s"}"#).map(|a| a.sid), Some("s".to_string()));
        assert_eq!(main.connect_answer(r#"40/events,{"sid":"s"}"#), None);
        assert_eq!(
            w.connect_recover("t1", "k", "p", "o"),
            r#"40/events,{"tenantId":"t1","token":"k","pid":"p","offset":"o"}"#
        );
        Ok(())
    }

    #[test]
    fn bench_messages_round_trip() {
        let m = bench_message("t12", 's', 42, 123_456_789, 0);
        assert_eq!(m, "b:t12:s42:123456789");
        assert_eq!(parse_bench_message(&m), Some(("t12", 123_456_789)));
        let padded = bench_message("t1", 'r', 1, 5, 40);
        assert_eq!(padded.len(), 40);
        assert_eq!(parse_bench_message(&padded), Some(("t1", 5)));
        assert_eq!(parse_bench_message("hello"), None);
    }
}
