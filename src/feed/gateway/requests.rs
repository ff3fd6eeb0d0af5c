//! What a socket asks for: `replay`, `post_event` (carried out in the order
//! they came: when the store answers later, the next ones wait behind it, at
//! most [`MAX_QUEUED_REQUESTS`]) and `refresh_token` (answered at once).

use std::future::Future;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{FeedSocket, Gateway, emit_raw, iso, peer_of, raw};
use crate::feed::error::FeedError;
use crate::feed::event::page_json;
use crate::feed::idempotency::IdempotencyKey;
use crate::feed::paging::PageRequest;
use crate::feed::store::{Answer, Appended, Store};
use crate::feed::{Page, StoredEvent};
use crate::sio::Event;

/// `replay`s and `post_event`s one socket may have waiting behind one the
/// store has not answered yet; more are refused (`rate_limited`) until some
/// are done.
pub const MAX_QUEUED_REQUESTS: usize = 64;

/// Answers through the ack if there is one, else emits `event` (or `error`
/// for failures) to the socket.
fn answer<S: Store>(
    socket: &FeedSocket<S>,
    event: Event,
    result: Result<Box<RawValue>, FeedError>,
    no_ack_event: Option<&str>,
) {
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

/// The string member `name` of the one object argument `event` expects.
fn string_arg<'a>(args: &'a [Value], name: &str, event: &'static str) -> Result<&'a str, FeedError> {
    match args.first() {
        Some(Value::Object(o)) => match o.get(name) {
            Some(Value::String(m)) => Ok(m),
            Some(_) => Err(FeedError::bad_request(format!("{name} must be a string"))),
            None => Err(FeedError::bad_request(format!("{name} is required"))),
        },
        _ => Err(FeedError::bad_request(format!("{event} expects an object {{{name}}}"))),
    }
}

/// `idempotencyKey` of `post_event`'s argument, checked, if there is one.
fn idempotency_key(args: &[Value]) -> Result<Option<IdempotencyKey>, FeedError> {
    match args.first().and_then(|a| a.get("idempotencyKey")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) => IdempotencyKey::parse(key).map(Some),
        Some(_) => Err(FeedError::bad_request("idempotencyKey must be a string")),
    }
}

/// `{"event":<the event's JSON>}`, the answer to a `post_event`: the stored
/// JSON is copied in, not parsed again.
fn event_body(event: &StoredEvent) -> Box<RawValue> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        event: &'a RawValue,
    }
    serde_json::value::to_raw_value(&Body { event: event.json() }).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

impl<S: Store> Gateway<S> {
    /// Carries out a `replay` or `post_event`: answers it now when the store
    /// answers now, else gives the work that answers it later.
    fn begin(
        &self,
        socket: &Arc<FeedSocket<S>>,
        event: Event,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<S>> {
        use futures_util::future::Either;
        match event.name.as_str() {
            "replay" => self.replay(socket, event).map(Either::Left),
            "post_event" => self.post_event(socket, event).map(Either::Right),
            _ => None,
        }
    }

    fn replay(
        &self,
        socket: &Arc<FeedSocket<S>>,
        event: Event,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<S>> {
        let page = match PageRequest::from_value(event.args.first()) {
            Ok(request) => self.feed.read(&socket.data().principal, request),
            Err(e) => Answer::Now(Err(e)),
        };
        let body = |page: Result<Page, FeedError>| page.map(|p| raw(page_json(&p.events, p.has_more, p.gap)));
        match page {
            Answer::Now(result) => {
                answer(socket, event, body(result), Some("replay_result"));
                None
            }
            Answer::Later(page) => {
                let socket = socket.clone();
                Some(async move { answer(&socket, event, body(page.await), Some("replay_result")) })
            }
        }
    }

    fn post_event(
        &self,
        socket: &Arc<FeedSocket<S>>,
        event: Event,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<S>> {
        let post = string_arg(&event.args, "message", "post_event")
            .and_then(|message| Ok((message, idempotency_key(&event.args)?)));
        let created = match post {
            // The role as it is now: a reload or a refresh may have lowered it.
            Ok((message, key)) => self.feed.post(&socket.data().principal(), message, key),
            Err(e) => Answer::Now(Err(e)),
        };
        let reply = |socket: &FeedSocket<S>, event: Event, result: Result<Appended, FeedError>| {
            let who = &socket.data().principal;
            let peer = peer_of(socket.conn());
            let result = match result {
                Ok(Appended { event: e, replayed, .. }) => {
                    let outcome = if replayed { "replayed" } else { "created" };
                    tracing::info!(target: "audit", action = "post_event", outcome, tenant = %who.tenant, user = %who.user, event_id = %e.id(), peer = %peer, "event created");
                    Ok(event_body(&e))
                }
                Err(e) => {
                    tracing::info!(target: "audit", action = "post_event", outcome = e.code(), tenant = %who.tenant, user = %who.user, peer = %peer, "event refused");
                    Err(e)
                }
            };
            answer(socket, event, result, None);
        };
        match created {
            Answer::Now(result) => {
                reply(socket, event, result);
                None
            }
            Answer::Later(created) => {
                let socket = socket.clone();
                Some(async move { reply(&socket, event, created.await) })
            }
        }
    }

    /// Takes a `replay` or `post_event` in turn: at once when nothing of this
    /// socket's is waiting for the store, else behind what is.
    pub(super) fn request(&self, socket: &Arc<FeedSocket<S>>, event: Event) {
        {
            let mut requests = socket.data().requests();
            if requests.running {
                if requests.queue.len() >= MAX_QUEUED_REQUESTS {
                    // Bound hit: the client asks faster than the store answers; refuse this one.
                    drop(requests);
                    answer(socket, event, Err(FeedError::RateLimited { retry_after: 1 }), None);
                } else {
                    requests.queue.push_back(event);
                }
                return;
            }
        }
        let Some(first) = self.begin(socket, event) else { return };
        socket.data().requests().running = true;
        let (gateway, socket) = (self.clone(), socket.clone());
        tokio::spawn(async move {
            first.await;
            loop {
                let next = {
                    let mut requests = socket.data().requests();
                    match requests.queue.pop_front() {
                        Some(event) => event,
                        None => {
                            requests.running = false;
                            return;
                        }
                    }
                };
                if let Some(work) = gateway.begin(&socket, next) {
                    work.await;
                }
            }
        });
    }

    /// `refresh_token {token}`: a JWT socket takes a new token of the same
    /// user, allowing the same tenant; its expiry, warning and role follow
    /// the new token. Answers `{expiresAt}` (or `token_refreshed`).
    pub(super) fn refresh_token(&self, socket: &Arc<FeedSocket<S>>, event: Event) {
        let result = self.refreshed(socket, &event.args).map(|exp| {
            let body = json!({"expiresAt": iso(exp)}).to_string();
            raw(body)
        });
        answer(socket, event, result, Some("token_refreshed"));
    }

    fn refreshed(&self, socket: &Arc<FeedSocket<S>>, args: &[Value]) -> Result<i64, FeedError> {
        let token = string_arg(args, "token", "refresh_token")?;
        let session = socket.data();
        let who = &session.principal;
        let peer = peer_of(socket.conn());
        let refuse = |outcome: &str, e: FeedError| {
            tracing::info!(target: "audit", action = "refresh_token", outcome, tenant = %who.tenant, user = %who.user, peer = %peer, "token refresh refused");
            Err(e)
        };
        if session.credential().jwt().is_none() {
            return refuse("forbidden", FeedError::Refused("this socket's token is not a JWT; it cannot be refreshed"));
        }
        let credentials = &self.feed.credentials;
        let grant = match credentials.verify_refresh(token) {
            Ok(grant) => grant,
            Err(failure) => {
                self.feed.auth_failed("socket", failure);
                return refuse(failure.reason(), FeedError::InvalidToken);
            }
        };
        if grant.sub != who.user || !grant.allows(&who.tenant) {
            // A socket's identity never changes: another user or tenant connects anew.
            return refuse("forbidden", FeedError::Refused("the new token is for another user or tenant"));
        }
        if credentials.revoked(&grant.sub, &who.tenant, grant.jti.as_deref(), grant.iat) {
            self.feed.auth_failed("socket", crate::feed::AuthFailure::Revoked);
            return refuse("revoked", FeedError::InvalidToken);
        }
        let expiry = session.refresh(grant, credentials.leeway());
        // The warning may now be due earlier than the timer was set for.
        socket.conn().reschedule();
        self.feed.metrics.token_refreshes.inc();
        tracing::info!(target: "audit", action = "refresh_token", outcome = "token_refreshed", tenant = %who.tenant, user = %who.user, peer = %peer, "token refreshed");
        Ok(expiry.exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let message = |v: Value| string_arg(std::slice::from_ref(&v), "message", "post_event").map(str::to_owned);
        assert_eq!(message(json!({"message": "hi"})).unwrap(), "hi");
        for bad in [json!({}), json!({"message": 5}), json!("hi"), json!(null)] {
            assert_eq!(message(bad.clone()).unwrap_err().code(), "bad_request", "{bad}");
        }
        assert_eq!(string_arg(&[], "message", "post_event").unwrap_err().code(), "bad_request");
        let e = string_arg(&[json!([])], "token", "refresh_token").unwrap_err();
        assert_eq!(e.to_string(), "refresh_token expects an object {token}");
    }
}
