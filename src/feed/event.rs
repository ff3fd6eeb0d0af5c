//! The event: its data model, message validation, and its JSON, encoded once
//! when it is stored so reads and broadcasts never serialize it again.

use std::sync::Arc;
use std::time::SystemTime;

use eventfeed_protocol::date::civil_from_days;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::error::FeedError;

/// The longest message, in Unicode scalar values.
pub const MAX_MESSAGE_CHARS: usize = 2048;

/// What a writer supplies; the store adds id, seq, tenant and timestamp.
#[derive(Debug, Clone)]
pub struct NewEvent {
    message: String,
    author: String,
    timestamp: SystemTime,
}

impl NewEvent {
    /// A new event by `author` (the message must already be validated).
    pub fn new(message: String, author: String) -> Self {
        NewEvent { message, author, timestamp: SystemTime::now() }
    }
}

/// A stored event: its JSON, encoded once, in one shared allocation —
/// cloning it counts a reference, and a log of a million events holds a
/// million JSON strings and little else (a slot of 16 bytes each).
///
/// The JSON always starts `{"id":"<36-char id>","seq":<digits>,"tenant_id":"`
/// (the server writes it so, and an event read from a shared store is
/// checked for it), so the id, the `seq` and the tenant are read from it,
/// not kept twice.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    json: Arc<RawValue>,
}

/// `{"id":"`: the id starts here.
const ID_AT: usize = 7;
/// `","seq":`: the `seq` digits start here.
const SEQ_AT: usize = ID_AT + 36 + 8;
const TENANT_KEY: &str = ",\"tenant_id\":\"";

#[derive(Serialize)]
struct Wire<'a> {
    id: &'a Uuid,
    seq: u64,
    tenant_id: &'a str,
    message: &'a str,
    timestamp: &'a str,
    author: &'a str,
}

impl StoredEvent {
    pub(crate) fn new(new: NewEvent, seq: u64, tenant: Arc<str>) -> Self {
        let id = new_event_id();
        let timestamp = rfc3339_millis(new.timestamp);
        let wire = Wire {
            id: &id,
            seq,
            tenant_id: &tenant,
            message: &new.message,
            timestamp: &timestamp,
            author: &new.author,
        };
        // Serializing strings and integers cannot fail; what serde_json wrote
        // is JSON, so it is not parsed again.
        let json = serde_json::value::to_raw_value(&wire).unwrap_or_else(|_| RawValue::NULL.to_owned());
        StoredEvent { json: Arc::from(json) }
    }

    /// UUID v4, made by the server.
    pub fn id(&self) -> Uuid {
        Self::id_in(self.json.get()).unwrap_or_default()
    }

    /// Per-tenant sequence number: 1, 2, 3, … with no holes.
    pub fn seq(&self) -> u64 {
        Self::seq_in(self.json.get()).unwrap_or_default()
    }

    fn id_in(json: &str) -> Option<Uuid> {
        json.get(..ID_AT)?.eq(r#"{"id":""#).then_some(())?;
        Uuid::try_parse(json.get(ID_AT..ID_AT + 36)?).ok()
    }

    fn seq_in(json: &str) -> Option<u64> {
        json.get(ID_AT + 36..SEQ_AT)?.eq(r#"","seq":"#).then_some(())?;
        let digits = json.get(SEQ_AT..)?;
        let end = digits.bytes().position(|b| !b.is_ascii_digit())?;
        digits[..end].parse().ok()
    }

    /// Where the tenant id's JSON string starts (after its opening quote).
    fn tenant_at(json: &str) -> Option<usize> {
        let digits = json.get(SEQ_AT..)?.bytes().take_while(u8::is_ascii_digit).count();
        let at = SEQ_AT + digits;
        json.get(at..)?.starts_with(TENANT_KEY).then_some(at + TENANT_KEY.len())
    }

    /// Whether the JSON has the layout the accessors read, with this id,
    /// `seq` and tenant.
    fn laid_out(json: &str, id: Uuid, seq: u64, tenant: &str) -> bool {
        Self::id_in(json) == Some(id)
            && Self::seq_in(json) == Some(seq)
            && Self::tenant_at(json).is_some_and(|at| Self::tenant_in(json, at).as_deref() == Some(tenant))
    }

    /// The tenant id's string at `at`: borrowed when it has no escapes.
    fn tenant_in(json: &str, at: usize) -> Option<std::borrow::Cow<'_, str>> {
        let rest = json.get(at..)?;
        let end = rest.bytes().position(|b| b == b'"' || b == b'\\')?;
        if rest.as_bytes()[end] == b'"' {
            return Some(std::borrow::Cow::Borrowed(&rest[..end]));
        }
        // Escapes (a tenant id may hold any character but controls): decoded.
        let mut de = serde_json::Deserializer::from_str(json.get(at - 1..)?);
        let s: String = serde::Deserialize::deserialize(&mut de).ok()?;
        Some(std::borrow::Cow::Owned(s))
    }

    /// An event made elsewhere (a shared store), from its JSON. `None` when
    /// the JSON is not an event, or is one of another tenant than `tenant`.
    pub fn from_json(tenant: &Arc<str>, json: String) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            id: Uuid,
            seq: u64,
            #[serde(borrow)]
            tenant_id: std::borrow::Cow<'a, str>,
        }
        let head: Head<'_> = serde_json::from_str(&json).ok()?;
        if *head.tenant_id != **tenant {
            return None;
        }
        Self::from_parts(head.id, head.seq, tenant, json)
    }

    /// An event made elsewhere whose id and `seq` are already known, with its
    /// JSON (as [`json`](Self::json) gives it); `None` if that is not JSON
    /// laid out as this server writes it, with that id, `seq` and tenant.
    pub fn from_parts(id: Uuid, seq: u64, tenant: &Arc<str>, json: String) -> Option<Self> {
        if !Self::laid_out(&json, id, seq, tenant) {
            return None;
        }
        let json = RawValue::from_string(json).ok()?;
        Some(StoredEvent { json: Arc::from(json) })
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> std::borrow::Cow<'_, str> {
        let json = self.json.get();
        Self::tenant_at(json).and_then(|at| Self::tenant_in(json, at)).unwrap_or_default()
    }

    /// The event as JSON (`{"id":…,"seq":…,"tenant_id":…,"message":…,"timestamp":…,"author":…}`).
    pub fn json(&self) -> &RawValue {
        &self.json
    }
}

/// An event ready to be stored by a shared store that assigns its `seq`:
/// its JSON is `json_head`, the `seq` digits, then `json_tail`.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    /// The new event's id.
    pub id: Uuid,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The message.
    pub message: String,
    /// The author.
    pub author: String,
    /// The timestamp, as the JSON has it.
    pub timestamp: String,
    /// The JSON up to the `seq` value.
    pub json_head: String,
    /// The JSON after the `seq` value.
    pub json_tail: String,
}

impl PreparedEvent {
    /// Gives `new` an id and a timestamp; the `seq` comes later.
    pub fn new(new: NewEvent, tenant: Arc<str>) -> Self {
        let id = new_event_id();
        let timestamp = rfc3339_millis(new.timestamp);
        let wire = Wire {
            id: &id,
            seq: 0,
            tenant_id: &tenant,
            message: &new.message,
            timestamp: &timestamp,
            author: &new.author,
        };
        let json = serde_json::to_string(&wire).unwrap_or_default();
        // `{"id":"<36 chars>","seq":0,…`: the id is a UUID, so the first
        // `"seq":0` is the field itself.
        let marker = "\"seq\":0";
        let (json_head, json_tail) = match json.find(marker) {
            Some(at) => (json[..at + marker.len() - 1].to_owned(), json[at + marker.len()..].to_owned()),
            None => (String::new(), String::new()),
        };
        PreparedEvent { id, tenant, message: new.message, author: new.author, timestamp, json_head, json_tail }
    }

    /// The stored event once the store gave it `seq`.
    pub fn with_seq(&self, seq: u64) -> StoredEvent {
        let json = format!("{}{seq}{}", self.json_head, self.json_tail);
        let json = RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned());
        StoredEvent { json: Arc::from(json) }
    }
}

/// A new event id: a UUID v4 from the thread's CSPRNG (no system call per event).
fn new_event_id() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// `2026-11-27T08:14:38.123Z`
///
/// Written digit by digit (the date from the day number, as in Howard
/// Hinnant's `civil_from_days`); a time before 1970 or after 9999 goes
/// through the `time` crate instead.
fn rfc3339_millis(t: SystemTime) -> String {
    const DAY: u64 = 86_400;
    let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else { return rfc3339_millis_slow(t) };
    let secs = since.as_secs();
    let days = secs / DAY;
    let Ok(days) = i64::try_from(days) else { return rfc3339_millis_slow(t) };
    let (year, month, day) = civil_from_days(days);
    let (Ok(year @ ..=9999), Ok(month), Ok(day)) = (u64::try_from(year), u64::try_from(month), u64::try_from(day))
    else {
        return rfc3339_millis_slow(t);
    };
    let in_day = secs % DAY;
    let fields = [
        (year / 100, b'\0'),
        (year % 100, b'-'),
        (month, b'-'),
        (day, b'T'),
        (in_day / 3600, b':'),
        (in_day / 60 % 60, b':'),
        (in_day % 60, b'.'),
    ];
    let mut out = Vec::with_capacity(24);
    for (value, sep) in fields {
        out.extend_from_slice(&[b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]);
        if sep != b'\0' {
            out.push(sep);
        }
    }
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
    // ASCII digits and separators only.
    String::from_utf8(out).unwrap_or_default()
}

/// [`rfc3339_millis`] through the `time` crate (any year it can represent).
fn rfc3339_millis_slow(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&fmt).unwrap_or_default()
}

/// Checks a message against the contract: 1..=2048 characters, not blank, no
/// control characters other than tab and newline.
pub fn validate_message(message: &str) -> Result<(), FeedError> {
    if message.trim().is_empty() {
        return Err(FeedError::Validation("message must not be empty or blank"));
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(FeedError::PayloadTooLarge("message is longer than 2048 characters"));
    }
    if message.chars().any(|c| c.is_control() && c != '\t' && c != '\n') {
        return Err(FeedError::Validation("message contains control characters (only tab and newline are allowed)"));
    }
    Ok(())
}

/// Writes `{"events":[…],"hasMore":…,"gap":…}` from stored JSON, without
/// re-serializing any event.
pub fn page_json(events: &[StoredEvent], has_more: bool, gap: bool) -> String {
    let mut out = String::with_capacity(40 + events.iter().map(|e| e.json.get().len() + 1).sum::<usize>());
    out.push_str(r#"{"events":"#);
    push_array(&mut out, events);
    out.push_str(r#","hasMore":"#);
    out.push_str(if has_more { "true" } else { "false" });
    out.push_str(r#","gap":"#);
    out.push_str(if gap { "true" } else { "false" });
    out.push('}');
    out
}

/// Writes `[event,…]` from stored JSON.
pub fn array_json(events: &[StoredEvent]) -> String {
    let mut out = String::with_capacity(2 + events.iter().map(|e| e.json.get().len() + 1).sum::<usize>());
    push_array(&mut out, events);
    out
}

fn push_array(out: &mut String, events: &[StoredEvent]) {
    out.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.json.get());
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_contract_fields_in_order() {
        let e = StoredEvent::new(NewEvent::new("User logged in".into(), "admin_a".into()), 42, "company_a".into());
        let v: serde_json::Value = serde_json::from_str(e.json().get()).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["id", "seq", "tenant_id", "message", "timestamp", "author"]);
        // The Redis store's scripts read the id at this very place (string.sub(json, 8, 43)).
        assert_eq!(&e.json().get()[..7], r#"{"id":""#);
        assert_eq!(e.json().get()[7..43], e.id().to_string());
        assert_eq!((e.seq(), e.tenant_id().as_ref()), (42, "company_a"));
        assert_eq!(v["seq"], 42);
        assert_eq!(v["tenant_id"], "company_a");
        assert_eq!(v["author"], "admin_a");
        assert_eq!(Uuid::parse_str(v["id"].as_str().unwrap()).unwrap().get_version_num(), 4);
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-27T08:14:38.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
    }

    #[test]
    fn a_prepared_event_gets_its_seq_later_with_the_same_json() {
        let p = PreparedEvent::new(NewEvent::new("hi \"there\" seq:0".into(), "u".into()), "t".into());
        let e = p.with_seq(1234);
        let v: serde_json::Value = serde_json::from_str(e.json().get()).unwrap();
        assert_eq!(v["seq"], 1234);
        assert_eq!(v["message"], "hi \"there\" seq:0");
        assert_eq!(v["id"], p.id.to_string());
        let back = StoredEvent::from_json(&"t".into(), e.json().get().to_owned()).unwrap();
        assert_eq!((back.id(), back.seq(), back.json().get()), (e.id(), 1234, e.json().get()));
        assert!(StoredEvent::from_json(&"other".into(), e.json().get().to_owned()).is_none(), "tenant checked");
        assert!(StoredEvent::from_json(&"t".into(), "{}".into()).is_none());
        // Same bytes as an event made in one go.
        let direct = StoredEvent::new(NewEvent::new("m".into(), "a".into()), 7, "t".into());
        let v: serde_json::Value = serde_json::from_str(direct.json().get()).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        let p = PreparedEvent::new(NewEvent::new("m".into(), "a".into()), "t".into()).with_seq(7);
        let w: serde_json::Value = serde_json::from_str(p.json().get()).unwrap();
        assert_eq!(w.as_object().unwrap().keys().cloned().collect::<Vec<_>>(), keys);
    }

    #[test]
    fn id_seq_and_tenant_are_read_from_the_json() {
        for tenant in ["t", "company_a", "with \"quotes\" and \\ back", "é ünïcode ✓"] {
            let e = StoredEvent::new(NewEvent::new("m".into(), "a".into()), 18_446_744_073_709_551_615, tenant.into());
            assert_eq!(e.seq(), u64::MAX);
            assert_eq!(e.tenant_id(), tenant);
            let v: serde_json::Value = serde_json::from_str(e.json().get()).unwrap();
            assert_eq!(v["id"], e.id().to_string());
            assert_eq!(v["tenant_id"], tenant);
            // The same event read back from a shared store.
            let back = StoredEvent::from_parts(e.id(), u64::MAX, &tenant.into(), e.json().get().to_owned()).unwrap();
            assert_eq!((back.id(), back.seq(), back.tenant_id()), (e.id(), u64::MAX, e.tenant_id()));
        }
        let e = StoredEvent::new(NewEvent::new("m".into(), "a".into()), 9, "t".into());
        let json = e.json().get().to_owned();
        // Not laid out as the server writes it, or not this id / seq / tenant: refused.
        assert!(StoredEvent::from_parts(e.id(), 10, &"t".into(), json.clone()).is_none());
        assert!(StoredEvent::from_parts(Uuid::nil(), 9, &"t".into(), json.clone()).is_none());
        assert!(StoredEvent::from_parts(e.id(), 9, &"u".into(), json.clone()).is_none());
        let reordered = format!(r#"{{"seq":9,"id":"{}","tenant_id":"t"}}"#, e.id());
        assert!(StoredEvent::from_parts(e.id(), 9, &"t".into(), reordered).is_none());
        assert!(StoredEvent::from_parts(e.id(), 9, &"t".into(), json).is_some());
    }

    #[test]
    fn a_clone_shares_the_json() {
        let e = StoredEvent::new(NewEvent::new("m".into(), "a".into()), 1, "t".into());
        let c = e.clone();
        assert!(std::ptr::eq(e.json(), c.json()), "one allocation, counted");
        assert_eq!(std::mem::size_of::<StoredEvent>(), 16, "a log slot is a (fat) pointer");
    }

    #[test]
    fn timestamps_are_utc_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_767_278_123);
        assert_eq!(rfc3339_millis(t), "2026-11-27T08:14:38.123Z");
        assert_eq!(rfc3339_millis(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // The digit-by-digit path agrees with the `time` crate: every day over
        // centuries (leap years, 2000 and 2100), at varying times of day.
        let mut secs = 0u64;
        while secs < 200 * 366 * 86_400 {
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + secs % 1000);
            assert_eq!(rfc3339_millis(t), rfc3339_millis_slow(t), "{secs}");
            secs += 86_400 + 3_607;
        }
        let late = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59
        assert_eq!(rfc3339_millis(late), "9999-12-31T23:59:59.000Z");
        let early = SystemTime::UNIX_EPOCH - std::time::Duration::from_millis(1);
        assert_eq!(rfc3339_millis(early), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn message_rules() {
        assert!(validate_message("hello").is_ok());
        assert!(validate_message("tab\tand\nnewline").is_ok());
        assert!(validate_message(&"é".repeat(2048)).is_ok(), "characters, not bytes");
        assert!(matches!(validate_message(&"a".repeat(2049)), Err(FeedError::PayloadTooLarge(_))));
        assert!(matches!(validate_message(""), Err(FeedError::Validation(_))));
        assert!(matches!(validate_message(" \n\t "), Err(FeedError::Validation(_))));
        assert!(matches!(validate_message("a\u{0}b"), Err(FeedError::Validation(_))));
        assert!(matches!(validate_message("a\rb"), Err(FeedError::Validation(_))));
        assert!(matches!(validate_message("a\u{85}b"), Err(FeedError::Validation(_))));
    }

    #[test]
    fn page_json_is_valid_json() {
        let e = StoredEvent::new(NewEvent::new("a \"quoted\" ✓".into(), "u".into()), 1, "t".into());
        let v: serde_json::Value = serde_json::from_str(&page_json(&[e.clone(), e], true, false)).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 2);
        assert_eq!(v["events"][0]["message"], "a \"quoted\" ✓");
        assert_eq!(v["hasMore"], true);
        assert_eq!(v["gap"], false);
        assert_eq!(array_json(&[]), "[]");
    }
}
