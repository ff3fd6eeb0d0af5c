//! Rooms and broadcast: join/leave, broadcast to one room, to several rooms
//! (a socket in two of them gets the packet once), except a socket, except
//! rooms; every recipient gets the same bytes; the room index empties when
//! sockets leave or vanish.
//!
//! The test namespace ([`apps::TestNs`]) joins, leaves and broadcasts on
//! request and acknowledges each, so the tests know when it is done. Who did
//! *not* get a broadcast is checked with a second broadcast to everyone: it
//! must be the next frame those sockets see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use apps::SioApp;
use common::TestServer;
use raw::{Eio, Ws, eventually, recv, recv_binary, recv_text, send_text};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn app() -> (SioApp, TestServer, Eio) {
    let app = SioApp::new(apps::config(10_000, 5_000, 10_000, 1_000_000), Duration::from_secs(5));
    let server = TestServer::start(app.router.clone()).await;
    let eio = Eio::new(server.addr, "/socket.io/");
    (app, server, eio)
}

/// A websocket client connected to `/`.
struct Client {
    ws: Ws,
    next_ack: u64,
}

impl Client {
    async fn connect(eio: &Eio) -> Self {
        let (mut ws, _) = eio.ws_open().await;
        send_text(&mut ws, "40").await;
        assert!(recv_text(&mut ws).await.starts_with("40{"));
        Client { ws, next_ack: 1 }
    }

    /// Emits `event` with `args` and an ack id; returns the frames that came
    /// before the ack (broadcasts this client received) and the ack's arguments.
    async fn call(&mut self, event: &str, args: &[Value]) -> (Vec<String>, Vec<Value>) {
        let id = self.next_ack;
        self.next_ack += 1;
        let mut data = vec![json!(event)];
        data.extend_from_slice(args);
        send_text(&mut self.ws, &format!("42{id}{}", Value::Array(data))).await;
        let mut before = Vec::new();
        loop {
            let text = recv_text(&mut self.ws).await;
            if let Some(rest) = text.strip_prefix(&format!("43{id}")) {
                let args: Value = serde_json::from_str(rest).unwrap();
                return (before, args.as_array().unwrap().clone());
            }
            before.push(text);
        }
    }

    async fn join(&mut self, rooms: &[&str]) {
        let args: Vec<Value> = rooms.iter().map(|r| json!(r)).collect();
        let (before, _) = self.call("join", &args).await;
        assert!(before.is_empty(), "{before:?}");
    }

    async fn leave(&mut self, rooms: &[&str]) {
        let args: Vec<Value> = rooms.iter().map(|r| json!(r)).collect();
        let (before, _) = self.call("leave", &args).await;
        assert!(before.is_empty(), "{before:?}");
    }

    async fn rooms(&mut self) -> Value {
        self.call("rooms", &[]).await.1[0].clone()
    }

    /// Broadcasts `news` `[data]` per `spec`; returns what this client got
    /// before the ack, and how many sockets the broadcast reached.
    async fn broadcast(&mut self, mut spec: Value, data: &str) -> (Vec<String>, u64) {
        spec["data"] = json!(data);
        let (before, ack) = self.call("broadcast", &[spec]).await;
        assert_eq!(ack[0]["failed"], 0);
        (before, ack[0]["delivered"].as_u64().unwrap())
    }

    async fn next(&mut self) -> String {
        recv_text(&mut self.ws).await
    }
}

fn news(data: &str) -> String {
    format!(r#"42["news","{data}"]"#)
}

/// Sends a broadcast to every socket from `from` and checks it is the next
/// frame of each of `clients`: they got nothing else before it.
async fn assert_nothing_else_received(from: &mut Client, clients: &mut [&mut Client]) {
    let (before, delivered) = from.broadcast(json!({}), "sentinel").await;
    assert_eq!(before, vec![news("sentinel")]);
    assert!(delivered as usize > clients.len());
    for c in clients.iter_mut() {
        assert_eq!(c.next().await, news("sentinel"), "nothing came before the sentinel");
    }
}

#[tokio::test]
async fn join_and_leave_update_the_room_index() {
    let (app, _server, eio) = app().await;
    let nsp = app.namespace("/");
    let mut a = Client::connect(&eio).await;
    let mut b = Client::connect(&eio).await;
    a.join(&["red", "blue"]).await;
    b.join(&["red"]).await;
    assert_eq!(a.rooms().await, json!(["blue", "red"]));
    assert_eq!((nsp.room_size("red"), nsp.room_size("blue"), nsp.room_count()), (2, 1, 2));
    // Joining twice changes nothing.
    a.join(&["red"]).await;
    assert_eq!(nsp.room_size("red"), 2);
    a.leave(&["red"]).await;
    assert_eq!(a.rooms().await, json!(["blue"]));
    assert_eq!((nsp.room_size("red"), nsp.room_size("blue")), (1, 1));
    // Leaving a room one is not in changes nothing either.
    a.leave(&["green"]).await;
    a.leave(&["blue"]).await;
    assert_eq!((nsp.room_size("blue"), nsp.room_count()), (0, 1), "an empty room is dropped");
    b.leave(&["red"]).await;
    assert_eq!(nsp.room_count(), 0);
}

#[tokio::test]
async fn broadcast_to_one_room_reaches_its_members_only() {
    let (_app, _server, eio) = app().await;
    let mut a = Client::connect(&eio).await;
    let mut b = Client::connect(&eio).await;
    let mut c = Client::connect(&eio).await;
    let mut d = Client::connect(&eio).await;
    a.join(&["red"]).await;
    b.join(&["red"]).await;
    c.join(&["blue"]).await;
    let (before, delivered) = a.broadcast(json!({"rooms": ["red"]}), "to red").await;
    assert_eq!(delivered, 2);
    assert_eq!(before, vec![news("to red")], "the sender is a member too");
    assert_eq!(b.next().await, news("to red"));
    assert_nothing_else_received(&mut a, &mut [&mut b, &mut c, &mut d]).await;
}

#[tokio::test]
async fn broadcast_to_several_rooms_reaches_a_socket_in_two_of_them_once() {
    let (_app, _server, eio) = app().await;
    let mut a = Client::connect(&eio).await;
    let mut b = Client::connect(&eio).await;
    let mut c = Client::connect(&eio).await;
    let mut d = Client::connect(&eio).await;
    let mut sender = Client::connect(&eio).await;
    a.join(&["red", "blue"]).await;
    b.join(&["red"]).await;
    c.join(&["blue", "green"]).await;
    d.join(&["yellow"]).await;
    let (before, delivered) = sender.broadcast(json!({"rooms": ["red", "blue", "green", "nobody"]}), "rb").await;
    assert!(before.is_empty(), "the sender is in none of the rooms");
    assert_eq!(delivered, 3, "a, b and c, each once");
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(x.next().await, news("rb"));
    }
    assert_nothing_else_received(&mut sender, &mut [&mut a, &mut b, &mut c, &mut d]).await;
}

#[tokio::test]
async fn broadcast_except_the_sender() {
    let (_app, _server, eio) = app().await;
    let mut a = Client::connect(&eio).await;
    let mut b = Client::connect(&eio).await;
    let mut c = Client::connect(&eio).await;
    a.join(&["red"]).await;
    b.join(&["red"]).await;
    let (before, delivered) = a.broadcast(json!({"rooms": ["red"], "exceptSelf": true}), "not me").await;
    assert!(before.is_empty(), "the sender is skipped: {before:?}");
    assert_eq!(delivered, 1);
    assert_eq!(b.next().await, news("not me"));
    // To the whole namespace, except the sender.
    let (before, delivered) = a.broadcast(json!({"exceptSelf": true}), "all but me").await;
    assert!(before.is_empty());
    assert_eq!(delivered, 2);
    assert_eq!(b.next().await, news("all but me"));
    assert_eq!(c.next().await, news("all but me"));
    assert_nothing_else_received(&mut a, &mut [&mut b, &mut c]).await;
}

#[tokio::test]
async fn broadcast_except_rooms() {
    let (_app, _server, eio) = app().await;
    let mut a = Client::connect(&eio).await;
    let mut b = Client::connect(&eio).await;
    let mut c = Client::connect(&eio).await;
    let mut sender = Client::connect(&eio).await;
    a.join(&["news", "muted"]).await;
    b.join(&["news"]).await;
    c.join(&["muted"]).await;
    let (_, delivered) = sender.broadcast(json!({"rooms": ["news"], "exceptRooms": ["muted"]}), "n").await;
    assert_eq!(delivered, 1);
    assert_eq!(b.next().await, news("n"));
    let (before, delivered) = sender.broadcast(json!({"exceptRooms": ["muted"]}), "everyone unmuted").await;
    assert_eq!(before, vec![news("everyone unmuted")]);
    assert_eq!(delivered, 2);
    assert_eq!(b.next().await, news("everyone unmuted"));
    assert_nothing_else_received(&mut sender, &mut [&mut a, &mut b, &mut c]).await;
}

#[tokio::test]
async fn broadcast_stays_in_its_namespace() {
    let (app, _server, eio) = app().await;
    let mut a = Client::connect(&eio).await;
    // Another session on /custom only, in a room of the same name.
    let (mut other, _) = eio.ws_open().await;
    send_text(&mut other, "40/custom,").await;
    assert!(recv_text(&mut other).await.starts_with("40/custom,"));
    send_text(&mut other, r#"42/custom,1["join","red"]"#).await;
    assert_eq!(recv_text(&mut other).await, "43/custom,1[]");
    a.join(&["red"]).await;
    let (before, delivered) = a.broadcast(json!({"rooms": ["red"]}), "main only").await;
    assert_eq!((before.len(), delivered), (1, 1));
    assert_eq!(app.namespace("/custom").room_size("red"), 1);
    // The /custom socket's next frame is its own echo, not the broadcast.
    send_text(&mut other, r#"42/custom,["echo","mine"]"#).await;
    assert_eq!(recv_text(&mut other).await, r#"42/custom,["echo-back","mine"]"#);
}

#[tokio::test]
async fn every_recipient_gets_identical_bytes_text_and_binary() {
    let (_app, _server, eio) = app().await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect(&eio).await;
        c.join(&["all"]).await;
        clients.push(c);
    }
    let mut sender = Client::connect(&eio).await;
    // A binary broadcast: the header plus one attachment.
    let ph = r#"{"_placeholder":true,"num":0}"#;
    let header = format!(r#"451-21["broadcast",{{"rooms":["all"],"data":{{"file":{ph},"é":"ü"}}}}]"#);
    send_text(&mut sender.ws, &header).await;
    raw::send_binary(&mut sender.ws, &[0xde, 0xad, 0xbe, 0xef]).await;
    assert_eq!(recv_text(&mut sender.ws).await, r#"4321[{"delivered":20,"failed":0}]"#);
    let mut seen = Vec::new();
    for c in &mut clients {
        let text = match recv(&mut c.ws).await {
            Some(Message::Text(t)) => t.as_bytes().to_vec(),
            other => panic!("{other:?}"),
        };
        let bin = recv_binary(&mut c.ws).await;
        seen.push((text, bin));
    }
    let first = seen[0].clone();
    assert_eq!(String::from_utf8(first.0.clone()).unwrap(), format!(r#"451-["news",{{"file":{ph},"é":"ü"}}]"#));
    assert_eq!(first.1, vec![0xde, 0xad, 0xbe, 0xef]);
    assert!(seen.iter().all(|s| *s == first), "every recipient got the same bytes");
}

#[tokio::test]
async fn polling_members_receive_broadcasts_too() {
    let (_app, _server, eio) = app().await;
    let sid = eio.open().await;
    eio.post_ok(&sid, b"40").await;
    assert!(eio.get_ok(&sid).await.starts_with("40{"));
    eio.post_ok(&sid, br#"421["join","red"]"#).await;
    assert_eq!(eio.get_ok(&sid).await, "431[]");
    let mut a = Client::connect(&eio).await;
    let (_, delivered) = a.broadcast(json!({"rooms": ["red"]}), "to a poller").await;
    assert_eq!(delivered, 1);
    assert_eq!(eio.get_ok(&sid).await, news("to a poller"));
}

#[tokio::test]
async fn rooms_are_left_when_sockets_disconnect_or_vanish() {
    let (app, _server, eio) = app().await;
    let nsp = app.namespace("/");
    let mut graceful = Client::connect(&eio).await;
    let mut leaves_nsp = Client::connect(&eio).await;
    let mut vanishes = Client::connect(&eio).await;
    let mut stays = Client::connect(&eio).await;
    for c in [&mut graceful, &mut leaves_nsp, &mut vanishes, &mut stays] {
        c.join(&["shared"]).await;
    }
    graceful.join(&["g-only"]).await;
    vanishes.join(&["v-only"]).await;
    assert_eq!((nsp.room_size("shared"), nsp.room_count()), (4, 3));

    send_text(&mut graceful.ws, "1").await;
    raw::until_closed(&mut graceful.ws).await;
    send_text(&mut leaves_nsp.ws, "41").await;
    drop(vanishes); // the TCP connection is dropped, no close of any kind
    eventually("the room index only holds the remaining socket", || {
        nsp.room_size("shared") == 1 && nsp.room_count() == 1 && nsp.socket_count() == 1
    })
    .await;
    let (before, delivered) = stays.broadcast(json!({"rooms": ["shared", "g-only", "v-only"]}), "left").await;
    assert_eq!((before.len(), delivered), (1, 1));
    drop(stays);
    drop(leaves_nsp);
    eventually("everything is gone", || app.is_empty()).await;
}
