//! The paging rules, in one place for REST (`?sinceId=&limit=`), the
//! socket's `replay {sinceId?, limit?}` and `auth.sinceId`.
//!
//! Without `sinceId`: the most recent `limit` events. With it: the events
//! strictly after it. Always oldest first. `limit` is 1..=[`MAX_LIMIT`],
//! [`DEFAULT_LIMIT`] when absent. A `sinceId` that is not retained (evicted,
//! or never in this tenant) gives the oldest retained events with `gap`.
//! A store applies them to a tenant's log through [`TenantView`].

use serde_json::Value;
use uuid::Uuid;

use super::error::FeedError;
use super::event::StoredEvent;

/// Most events a read returns.
pub const MAX_LIMIT: usize = 1000;
/// Events a read returns when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;

/// What a read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Events strictly after this one; `None`: the most recent.
    pub since: Option<Uuid>,
    /// How many at most.
    pub limit: usize,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest { since: None, limit: DEFAULT_LIMIT }
    }
}

/// An answer to a read: events oldest first, with the paging flags.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The events, oldest first.
    pub events: Vec<StoredEvent>,
    /// More events exist after the last one returned.
    pub has_more: bool,
    /// The `sinceId` given is not (or no longer) retained: the answer starts
    /// at the oldest retained event, and something may have been missed.
    pub gap: bool,
}

/// One tenant's retained events, read at one consistent point.
pub trait TenantView {
    /// The most recent `limit` events, oldest first.
    fn latest(&self, limit: usize) -> Page;
    /// Up to `limit` events strictly after `since` (see [`Page::gap`]).
    fn after(&self, since: &Uuid, limit: usize) -> Page;
    /// Up to `limit` events with a `seq` greater than `seq`; `None` when some
    /// of them are no longer retained.
    fn after_seq(&self, seq: u64, limit: usize) -> Option<Page>;
    /// The `seq` of the newest event (0 when none was ever written).
    fn last_seq(&self) -> u64;
    /// The `seq` of the oldest retained event (`last_seq() + 1` when none is).
    fn first_seq(&self) -> u64;
    /// The `seq` of the event `id`, if it is retained.
    fn seq_of(&self, id: &Uuid) -> Option<u64>;
    /// The id of the event `seq`, if it is retained.
    fn id_at(&self, seq: u64) -> Option<Uuid>;
    /// The epoch of this history.
    fn epoch(&self) -> super::epoch::Epoch;
}

fn bad_limit() -> FeedError {
    FeedError::bad_request(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
}

fn bad_since() -> FeedError {
    FeedError::bad_request("sinceId must be an event id (UUID)")
}

/// Parses an event id given as `sinceId`.
pub fn parse_since(text: &str) -> Result<Uuid, FeedError> {
    Uuid::try_parse(text).map_err(|_| bad_since())
}

fn check_limit(n: u64) -> Result<usize, FeedError> {
    usize::try_from(n).ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(bad_limit)
}

impl PageRequest {
    /// From a REST query string: `sinceId` (empty means absent) and `limit`;
    /// other parameters are ignored.
    pub fn from_query(query: &str) -> Result<Self, FeedError> {
        let mut request = PageRequest::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sinceId" if !v.is_empty() => request.since = Some(parse_since(v)?),
                "limit" => request.limit = check_limit(v.parse::<u64>().map_err(|_| bad_limit())?)?,
                _ => {}
            }
        }
        Ok(request)
    }

    /// From a socket event's argument: absent or `null`, or an object
    /// `{sinceId?, limit?}` (`null` members mean absent).
    pub fn from_value(arg: Option<&Value>) -> Result<Self, FeedError> {
        let obj = match arg {
            None | Some(Value::Null) => return Ok(PageRequest::default()),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(FeedError::bad_request("replay expects an object {sinceId?, limit?}")),
        };
        Ok(PageRequest { since: since_member(obj.get("sinceId"))?, limit: limit_member(obj.get("limit"))? })
    }
}

/// A `sinceId` member of a JSON object: absent, `null`, or an event id.
pub fn since_member(value: Option<&Value>) -> Result<Option<Uuid>, FeedError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_since(s).map(Some),
        Some(_) => Err(bad_since()),
    }
}

fn limit_member(value: Option<&Value>) -> Result<usize, FeedError> {
    match value {
        None | Some(Value::Null) => Ok(DEFAULT_LIMIT),
        Some(v) => check_limit(v.as_u64().ok_or_else(bad_limit)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(since: Option<Uuid>, limit: usize) -> PageRequest {
        PageRequest { since, limit }
    }

    #[test]
    fn query_strings() {
        assert_eq!(PageRequest::from_query("").unwrap(), req(None, 100));
        assert_eq!(PageRequest::from_query("limit=5").unwrap(), req(None, 5));
        assert_eq!(PageRequest::from_query("sinceId=").unwrap(), req(None, 100));
        let id = Uuid::new_v4();
        assert_eq!(PageRequest::from_query(&format!("sinceId={id}&limit=1000")).unwrap(), req(Some(id), 1000));
        for bad in ["limit=0", "limit=1001", "limit=abc", "limit=1.5", "limit=", "limit=-1", "sinceId=123"] {
            assert_eq!(PageRequest::from_query(bad).unwrap_err().code(), "bad_request", "{bad}");
        }
    }

    #[test]
    fn socket_arguments() {
        assert_eq!(PageRequest::from_value(None).unwrap(), req(None, 100));
        assert_eq!(PageRequest::from_value(Some(&json!({}))).unwrap(), req(None, 100));
        assert_eq!(PageRequest::from_value(Some(&json!({"limit": 5}))).unwrap(), req(None, 5));
        let id = Uuid::new_v4();
        assert_eq!(PageRequest::from_value(Some(&json!({"sinceId": id.to_string()}))).unwrap(), req(Some(id), 100));
        for bad in [
            json!("x"),
            json!({"limit": 0}),
            json!({"limit": 1001}),
            json!({"limit": "5"}),
            json!({"limit": 1.5}),
            json!({"sinceId": "nope"}),
            json!({"sinceId": 5}),
        ] {
            assert_eq!(PageRequest::from_value(Some(&bad)).unwrap_err().code(), "bad_request", "{bad}");
        }
    }

    #[test]
    fn both_forms_state_the_same_bounds() {
        let rest = PageRequest::from_query("limit=0").unwrap_err().to_string();
        let socket = PageRequest::from_value(Some(&json!({"limit": 0}))).unwrap_err().to_string();
        assert_eq!(rest, socket);
        assert!(rest.contains(&MAX_LIMIT.to_string()), "{rest}");
    }
}
