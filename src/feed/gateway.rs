//! The feed's Socket.IO namespace.
//!
//! CONNECT carries `auth: {tenantId, token}`; a refusal is CONNECT_ERROR with
//! message `unauthorized`. On connect the socket joins `tenant:{id}` and gets
//! a `snapshot` — both under the tenant's store lock, so no event falls
//! between the snapshot and the first `event_created`, and none comes twice.
//!
//! Client events: `replay {sinceId?, limit?}` and `post_event {message}`,
//! answered through the ack when there is one, else with `replay_result` /
//! the `error` event. Malformed arguments get `bad_request`; the socket stays.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::FeedError;
use super::event::{array_json, page_json};
use super::{DEFAULT_LIMIT, Feed, MAX_LIMIT, Principal, SNAPSHOT_LIMIT, tenant_room};
use crate::sio::{ConnectRejection, DisconnectReason, Event, NamespaceHandler, Socket};
use eventfeed_protocol::engine::session::CloseReason;

/// The namespace handler of the feed.
pub struct Gateway {
    feed: Arc<Feed>,
}

impl Gateway {
    /// A handler serving `feed`.
    pub fn new(feed: Arc<Feed>) -> Self {
        Gateway { feed }
    }
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Reads `{sinceId?, limit?}` as REST reads its query.
fn replay_args(args: &[Value]) -> Result<(Option<Uuid>, usize), FeedError> {
    let obj = match args.first() {
        None | Some(Value::Null) => return Ok((None, DEFAULT_LIMIT)),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(FeedError::bad_request("replay expects an object {sinceId?, limit?}")),
    };
    let since = match obj.get("sinceId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(Uuid::parse_str(s).map_err(|_| FeedError::bad_request("sinceId must be an event id (UUID)"))?)
        }
        Some(_) => return Err(FeedError::bad_request("sinceId must be a string")),
    };
    let limit = match obj.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
            _ => return Err(FeedError::bad_request("limit must be an integer from 1 to 1000")),
        },
    };
    Ok((since, limit))
}

fn post_args(args: &[Value]) -> Result<&str, FeedError> {
    match args.first() {
        Some(Value::Object(o)) => match o.get("message") {
            Some(Value::String(m)) => Ok(m),
            Some(_) => Err(FeedError::bad_request("message must be a string")),
            None => Err(FeedError::bad_request("message is required")),
        },
        _ => Err(FeedError::bad_request("post_event expects an object {message}")),
    }
}

/// Answers through the ack if there is one, else emits `event` (or `error`
/// for failures) to the socket.
fn answer(socket: &Arc<Socket>, event: Event, result: Result<Box<RawValue>, FeedError>, no_ack_event: Option<&str>) {
    match (event.ack, result) {
        (Some(ack), Ok(body)) => {
            let _ = ack.send_raw(&[&body]);
        }
        (Some(ack), Err(e)) => {
            let _ = ack.send(vec![json!({"error": e.to_value()})], vec![]);
        }
        (None, Ok(body)) => {
            if let Some(name) = no_ack_event {
                emit_raw(socket, name, &body);
            }
        }
        (None, Err(e)) => {
            let _ = socket.emit("error", vec![e.to_value()], vec![]);
        }
    }
}

fn emit_raw(socket: &Socket, name: &str, body: &RawValue) {
    let frame = eventfeed_protocol::socket::encode_raw_event(socket.namespace().name(), name, &[body], None);
    let _ = socket.conn().send(frame);
}

impl NamespaceHandler for Gateway {
    fn authorize(&self, socket: &Arc<Socket>, auth: Option<&Value>) -> Result<(), ConnectRejection> {
        let empty = Map::new();
        let auth = auth.and_then(Value::as_object).unwrap_or(&empty);
        let tenant = auth.get("tenantId").and_then(Value::as_str);
        let token = auth.get("token").and_then(Value::as_str);
        let peer = socket.conn().peer().map(|p| p.to_string()).unwrap_or_default();
        let principal = match self.feed.authenticate(tenant, token) {
            Ok(p) => p,
            Err(e) => {
                self.feed.auth_failed("socket");
                tracing::info!(target: "audit", action = "connect", outcome = "unauthorized", tenant = tenant.unwrap_or(""), peer, "socket auth failed");
                return Err(ConnectRejection { message: "unauthorized".into(), data: Some(e.to_value()) });
            }
        };
        let max = self.feed.config.max_tenant_connections;
        if socket.namespace().room_size(&tenant_room(&principal.tenant)) >= max {
            // Bound hit: this tenant has as many sockets as allowed; refuse this one.
            self.feed.metrics.reject("tenant_connections");
            tracing::warn!(target: "audit", action = "connect", outcome = "tenant_connection_limit", tenant = %principal.tenant, user = %principal.user, peer, max, "socket refused");
            return Err(ConnectRejection {
                message: "too many connections".into(),
                data: Some(
                    json!({"code": "too_many_connections", "message": "this tenant has too many open connections"}),
                ),
            });
        }
        let _ = socket.set_data(principal);
        Ok(())
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        let Some(who) = socket.data::<Principal>() else { return };
        let room = tenant_room(&who.tenant);
        self.feed.bus.with_log(&who.tenant, |log| {
            socket.join(&room);
            let snapshot = raw(array_json(&log.latest(SNAPSHOT_LIMIT).events));
            emit_raw(socket, "snapshot", &snapshot);
        });
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        let Some(who) = socket.data::<Principal>() else { return };
        match event.name.as_str() {
            "replay" => {
                let result = replay_args(&event.args).map(|(since, limit)| {
                    let page = self.feed.read(who, since.as_ref(), limit);
                    raw(page_json(&page.events, page.has_more, page.gap))
                });
                answer(socket, event, result, Some("replay_result"));
            }
            "post_event" => {
                let result = post_args(&event.args).and_then(|m| self.feed.post(who, m)).map(|e| {
                    let peer = socket.conn().peer().map(|p| p.to_string()).unwrap_or_default();
                    tracing::info!(target: "audit", action = "post_event", outcome = "created", tenant = %who.tenant, user = %who.user, event_id = %e.id, peer, "event created");
                    raw(format!(r#"{{"event":{}}}"#, e.json().get()))
                });
                if let Err(e) = &result {
                    let peer = socket.conn().peer().map(|p| p.to_string()).unwrap_or_default();
                    tracing::info!(target: "audit", action = "post_event", outcome = e.code(), tenant = %who.tenant, user = %who.user, peer, "event refused");
                }
                answer(socket, event, result, None);
            }
            _ => {}
        }
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        if reason == DisconnectReason::Transport(CloseReason::SlowConsumer)
            && let Some(who) = socket.data::<Principal>()
        {
            let peer = socket.conn().peer().map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(target: "audit", action = "disconnect", outcome = "slow_consumer", tenant = %who.tenant, user = %who.user, peer, "socket dropped: its queue overflowed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_arguments() {
        assert_eq!(replay_args(&[]).unwrap(), (None, 100));
        assert_eq!(replay_args(&[json!({})]).unwrap(), (None, 100));
        assert_eq!(replay_args(&[json!({"limit": 5})]).unwrap(), (None, 5));
        let id = Uuid::new_v4();
        assert_eq!(replay_args(&[json!({"sinceId": id.to_string()})]).unwrap(), (Some(id), 100));
        for bad in [
            json!("x"),
            json!({"limit": 0}),
            json!({"limit": 1001}),
            json!({"limit": "5"}),
            json!({"limit": 1.5}),
            json!({"sinceId": "nope"}),
            json!({"sinceId": 5}),
        ] {
            assert_eq!(replay_args(std::slice::from_ref(&bad)).unwrap_err().code(), "bad_request", "{bad}");
        }
    }

    #[test]
    fn post_arguments() {
        assert_eq!(post_args(&[json!({"message": "hi"})]).unwrap(), "hi");
        for bad in [json!({}), json!({"message": 5}), json!("hi"), json!(null)] {
            assert_eq!(post_args(std::slice::from_ref(&bad)).unwrap_err().code(), "bad_request", "{bad}");
        }
        assert_eq!(post_args(&[]).unwrap_err().code(), "bad_request");
    }
}
