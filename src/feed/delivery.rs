//! New events to the sockets of their tenant: the `event_created` packet is
//! encoded once from the stored JSON and the same bytes are queued to every
//! socket in the room `tenant:{id}` of the feed's namespace on this server.
//! (Other servers of a cluster deliver to their own sockets from the shared
//! store: nothing here crosses instances.)

use std::sync::{Arc, OnceLock};

use eventfeed_protocol::engine::session::CloseReason;
use eventfeed_protocol::socket::{Encoded, encode_raw_event};
use serde_json::value::RawValue;

use super::store::Delivery;
use super::{StoredEvent, tenant_room};
use crate::metrics::Metrics;
use crate::sio::{BroadcastOp, Namespace, NamespaceHandler, Socket};

/// The feed's [`Delivery`]: events to the tenant's room of its namespace
/// (served by `H`, the feed's gateway).
pub struct SocketDelivery<H: NamespaceHandler> {
    namespace: OnceLock<Arc<Namespace<H>>>,
    metrics: Arc<Metrics>,
    /// Append the offset argument (connection state recovery is on).
    with_offsets: bool,
}

impl<H: NamespaceHandler> SocketDelivery<H> {
    pub(super) fn new(metrics: Arc<Metrics>, with_offsets: bool) -> Self {
        SocketDelivery { namespace: OnceLock::new(), metrics, with_offsets }
    }

    /// Points delivery at the namespace (once, at start).
    pub fn attach(&self, namespace: Arc<Namespace<H>>) {
        let _ = self.namespace.set(namespace);
    }
}

impl<H: NamespaceHandler> Delivery for SocketDelivery<H> {
    fn deliver(&self, event: &Arc<StoredEvent>) {
        let Some(nsp) = self.namespace.get() else { return };
        let frame = event_frame(nsp.name(), event, self.with_offsets);
        let packet = Encoded { text: frame, binary: Vec::new() };
        let room = tenant_room(event.tenant_id());
        let stats = nsp.broadcast(&BroadcastOp { rooms: &[&room], ..BroadcastOp::default() }, &packet);
        self.metrics.deliveries.inc_by(stats.delivered as u64);
        self.metrics.delivery_failures.inc_by(stats.failed as u64);
    }

    fn reset(&self, tenant: &str) {
        let Some(nsp) = self.namespace.get() else { return };
        let room = tenant_room(tenant);
        for socket in nsp.sockets_in(&BroadcastOp { rooms: &[&room], ..BroadcastOp::default() }) {
            socket.conn().close(CloseReason::ForcedClose);
        }
    }
}

/// The offset argument of an `event_created`: the event's `seq` as a JSON string.
pub fn offset_json(seq: u64) -> Box<RawValue> {
    use eventfeed_protocol::json::{decimal_len, push_decimal};
    // `"` digits `"`, written without the formatting machinery into a buffer
    // of the exact length (no reallocation when it is boxed).
    let mut json = Vec::with_capacity(decimal_len(seq) + 2);
    json.push(b'"');
    push_decimal(&mut json, seq);
    json.push(b'"');
    RawValue::from_string(String::from_utf8(json).unwrap_or_default()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The `event_created` frame of `event` in namespace `nsp`, with its offset
/// as last argument when recovery is on.
fn event_frame(nsp: &str, event: &StoredEvent, with_offset: bool) -> eventfeed_protocol::engine::Frame {
    let offset = with_offset.then(|| offset_json(event.seq));
    let args: &[&RawValue] = match &offset {
        Some(offset) => &[event.json(), offset],
        None => &[event.json()],
    };
    encode_raw_event(nsp, "event_created", args, None)
}

/// Queues one `event_created` to one socket (a recovery's missed events).
pub(super) fn send_event<H: NamespaceHandler>(socket: &Socket<H>, event: &StoredEvent, with_offset: bool) {
    let _ = socket.conn().send(event_frame(socket.namespace().name(), event, with_offset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_json_strings_of_the_seq() {
        for seq in [0, 7, 10, 42, 1234, u64::MAX] {
            assert_eq!(offset_json(seq).get(), format!("\"{seq}\""));
        }
    }
}
