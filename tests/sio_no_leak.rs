//! No leak: 10,000 connect/disconnect cycles over every transport — graceful,
//! abandoned, vanishing mid-poll, half-finished upgrades — and afterwards the
//! session table, every namespace's sockets and the room index are empty.
//!
//! A short heartbeat (100/100 ms) reaps the abandoned sessions quickly. A
//! cycle that the server cuts short (its heartbeat may expire on a loaded
//! machine, since these clients never answer pings) simply ends there: that
//! is one more way for a client to go, and it must not leak either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/apps.rs"]
mod apps;
mod common;
#[path = "common/raw.rs"]
mod raw;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apps::SioApp;
use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use raw::{Eio, HttpConn, WAIT, Ws, eventually, open_sid};
use tokio_tungstenite::tungstenite::Message;

const CYCLES: usize = 10_000;
const CONCURRENCY: usize = 50;
const KINDS: [&str; 8] = [
    "polling, graceful close",
    "polling, abandoned after connect",
    "polling, vanishes mid-poll",
    "polling, never connects",
    "websocket, graceful close",
    "websocket, abandoned",
    "upgrade, then close frame",
    "upgrade, half-finished and abandoned",
];

/// Why a cycle ended early (the server closed the session first).
type Step<T> = Result<T, String>;

fn body(res: io::Result<raw::Response>) -> Step<String> {
    let res = res.map_err(|e| e.to_string())?;
    if res.status != 200 {
        return Err(format!("status {}", res.status));
    }
    String::from_utf8(res.body).map_err(|_| "non-UTF-8 body".to_owned())
}

async fn next_text(ws: &mut Ws) -> Step<String> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.map_err(|_| "no frame in time".to_owned())? {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return Err(format!("{other:?}")),
        }
    }
}

async fn send(ws: &mut Ws, text: String) -> Step<()> {
    ws.send(Message::text(text)).await.map_err(|e| e.to_string())
}

/// CONNECT to `/` and join two rooms, in one polling payload.
fn connect_and_join(i: usize) -> String {
    format!("40\x1e42[\"join\",\"room-{}\",\"all\"]", i % 37)
}

/// A polling session connected to `/` and in two rooms, on one keep-alive connection.
async fn polling_session(eio: &Eio, i: usize) -> Step<(HttpConn, String)> {
    let mut conn = HttpConn::connect(eio.addr).await;
    let res = conn.request("GET", &format!("{}?EIO=4&transport=polling", eio.path), &[], b"").await.unwrap();
    assert_eq!(res.status, 200, "every handshake succeeds");
    let sid = open_sid(std::str::from_utf8(&res.body).unwrap());
    let ok = body(conn.request("POST", &eio.polling(&sid), &[], connect_and_join(i).as_bytes()).await)?;
    if ok != "ok" {
        return Err(ok);
    }
    let answer = body(conn.request("GET", &eio.polling(&sid), &[], b"").await)?;
    if !answer.starts_with("40{") {
        return Err(answer);
    }
    Ok((conn, sid))
}

async fn upgrade(eio: &Eio, sid: &str) -> Step<Ws> {
    let mut ws = raw::ws_connect(eio.addr, &eio.websocket(Some(sid))).await.map_err(|e| e.to_string())?;
    send(&mut ws, "2probe".to_owned()).await?;
    let probe = next_text(&mut ws).await?;
    if probe != "3probe" {
        return Err(probe);
    }
    Ok(ws)
}

async fn cycle(eio: &Eio, i: usize) -> Step<()> {
    match i % KINDS.len() {
        0 => {
            let (mut conn, sid) = polling_session(eio, i).await?;
            body(conn.request("POST", &eio.polling(&sid), &[], b"41\x1e1").await)?;
        }
        1 => {
            let (conn, _) = polling_session(eio, i).await?;
            drop(conn);
        }
        2 => {
            let (mut conn, sid) = polling_session(eio, i).await?;
            conn.send("GET", &eio.polling(&sid), &[], b"").await.map_err(|e| e.to_string())?;
            // Let the server start holding the GET, then vanish.
            tokio::task::yield_now().await;
            drop(conn);
        }
        3 => {
            let mut conn = HttpConn::connect(eio.addr).await;
            let res = conn.request("GET", &format!("{}?EIO=4&transport=polling", eio.path), &[], b"").await.unwrap();
            assert_eq!(res.status, 200, "every handshake succeeds");
        }
        4 | 5 => {
            let mut ws = raw::ws_connect(eio.addr, &eio.websocket(None)).await.expect("every handshake succeeds");
            let open = next_text(&mut ws).await?;
            assert!(open.starts_with("0{"), "{open}");
            send(&mut ws, "40".to_owned()).await?;
            send(&mut ws, format!("42[\"join\",\"room-{}\",\"all\"]", i % 37)).await?;
            let answer = next_text(&mut ws).await?;
            if !answer.starts_with("40{") {
                return Err(answer);
            }
            if i % KINDS.len() == 4 {
                send(&mut ws, "41".to_owned()).await?;
                send(&mut ws, "1".to_owned()).await?;
                // The server closes the socket.
                while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
            }
            // 5: dropped without a close frame or packet.
        }
        6 => {
            let (conn, sid) = polling_session(eio, i).await?;
            let mut ws = upgrade(eio, &sid).await?;
            send(&mut ws, "5".to_owned()).await?;
            drop(conn);
            ws.close(None).await.map_err(|e| e.to_string())?;
            while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
        }
        _ => {
            let (conn, sid) = polling_session(eio, i).await?;
            let ws = upgrade(eio, &sid).await?;
            drop((conn, ws));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_disconnect_cycles_leave_no_session_socket_or_room() {
    let app = SioApp::new(apps::config(100, 100, 200, 1_000_000), Duration::from_millis(500));
    let server = TestServer::start(app.router.clone()).await;
    let eio = Eio::new(server.addr, "/socket.io/");

    let next = Arc::new(AtomicUsize::new(0));
    let done: Arc<[AtomicUsize; 8]> = Arc::new(Default::default());
    let cut: Arc<[AtomicUsize; 8]> = Arc::new(Default::default());
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (eio, next, done, cut) = (eio.clone(), next.clone(), done.clone(), cut.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CYCLES {
                    break;
                }
                let counter = if cycle(&eio, i).await.is_ok() { &done } else { &cut };
                counter[i % KINDS.len()].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.expect("a cycle panicked");
    }
    for (k, kind) in KINDS.iter().enumerate() {
        let (d, c) = (done[k].load(Ordering::Relaxed), cut[k].load(Ordering::Relaxed));
        println!("{kind}: {d} as planned, {c} cut short by the server");
        assert!(d > 0, "{kind}: no cycle ran as planned");
    }

    eventually("no session, socket or room is left", || app.is_empty()).await;
    let metrics = app.engine.metrics();
    let opened = metrics.sessions_opened.get();
    assert_eq!(opened, CYCLES as u64, "one session per cycle");
    eventually("every session's close was counted", || metrics.sessions_closed.get() == opened).await;
    for nsp in ["/", "/custom", "/private"] {
        let n = app.namespace(nsp);
        assert_eq!((n.socket_count(), n.room_count()), (0, 0), "{nsp}");
    }
    let log = app.log();
    let connects = log.iter().filter(|l| l.starts_with("connect ")).count();
    let disconnects = log.iter().filter(|l| l.starts_with("disconnect ")).count();
    assert_eq!(connects, disconnects, "every connected socket was disconnected once");
    assert!(server.stop().await, "the server drained");
}
