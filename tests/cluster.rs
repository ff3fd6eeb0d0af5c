//! Redis mode with two `eventfeed` instances on one Redis (raw protocol
//! clients): events posted on either instance over REST and over sockets reach
//! every client of the tenant on both, exactly once and in `seq` order; reads
//! answer alike on both; Redis down gives `unavailable` (REST 503 with
//! `Retry-After`, socket error, `/readyz` 503) and delivery resumes by itself;
//! Redis killed and restarted under load loses no acknowledged event and
//! leaves no client with a hole; a dropped subscription is filled from the
//! store; a store that lost its history closes the sockets instead of leaving
//! a silent gap; a slow Redis gets `unavailable` within the deadline; an
//! instance started before Redis serves once it is up; a Server-Sent Events
//! stream on one instance gets the events posted on both, in `seq` order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/feed.rs"]
mod feed;
#[path = "common/raw.rs"]
mod raw;
#[path = "common/sse.rs"]
mod sse;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use cluster::{Instance, RedisServer};
use feed::{A, B, FeedClient, Who, assert_feed_error, connect_packet, list_events, parse_event, post_event};
use raw::Eio;
use serde_json::Value;

const NO_LIMITS: &[(&str, &str)] = &[
    ("NB_BACKEND_RATE_LIMIT", "off"),
    ("NB_BACKEND_TENANT_RATE_LIMIT", "off"),
    // Generous: Redis fsyncs every write (AOF `always`) and the tests run in
    // parallel on a small machine, so a call can take hundreds of ms. The
    // slow-Redis test sets its own, short deadline.
    ("NB_BACKEND_REDIS_TIMEOUT", "3000"),
    ("NB_BACKEND_LOG", "warn,eventfeed=info"),
];

/// Redis and two instances on it, ready.
async fn cluster() -> (RedisServer, Instance, Instance) {
    cluster_with(&[]).await
}

/// Redis and two instances on it with these settings too, ready.
async fn cluster_with(extra: &'static [(&'static str, &'static str)]) -> (RedisServer, Instance, Instance) {
    cluster_each(extra, extra).await
}

/// Redis and two instances on it, A with `extra_a` and B with `extra_b` too, ready.
async fn cluster_each(
    extra_a: &'static [(&'static str, &'static str)],
    extra_b: &'static [(&'static str, &'static str)],
) -> (RedisServer, Instance, Instance) {
    tokio::task::spawn_blocking(move || {
        let env = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            NO_LIMITS.iter().chain(extra).copied().collect()
        };
        let redis = RedisServer::start();
        let a = Instance::start(Some(&redis.url()), &env(extra_a));
        let b = Instance::start(Some(&redis.url()), &env(extra_b));
        a.wait_ready(Duration::from_secs(10));
        b.wait_ready(Duration::from_secs(10));
        (redis, a, b)
    })
    .await
    .unwrap()
}

/// Runs `op` on Redis (kill, restart: blocking) off the runtime's threads.
async fn with_redis(mut redis: RedisServer, op: fn(&mut RedisServer)) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        op(&mut redis);
        redis
    })
    .await
    .unwrap()
}

/// Kills Redis (SIGKILL).
async fn kill_redis(redis: RedisServer) -> RedisServer {
    with_redis(redis, RedisServer::kill).await
}

/// Starts Redis again on its port and data.
async fn restart_redis(redis: RedisServer) -> RedisServer {
    with_redis(redis, RedisServer::restart).await
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Waits (bounded) until `/readyz` of `addr` answers `status`.
async fn readyz_becomes(addr: SocketAddr, status: u16) {
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let res = raw::request(addr, "GET", "/readyz", &[], b"").await;
        if res.status == status {
            return;
        }
        assert!(tokio::time::Instant::now() < end, "/readyz stayed {} ({})", res.status, res.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_both_instances_reach_every_client_once_in_seq_order() {
    let (_redis, a, b) = cluster().await;
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..3 {
        on_a.push(FeedClient::connect(a.addr(), A).await);
        on_b.push(FeedClient::connect(b.addr(), A).await);
    }
    let mut other_a = FeedClient::connect(a.addr(), B).await;
    let mut other_b = FeedClient::connect(b.addr(), B).await;
    let mut socket_writer = FeedClient::connect(b.addr(), A).await;

    // REST writers on both instances at once, and socket writes on B.
    const REST_EACH: usize = 60;
    const SOCKET: usize = 20;
    let writers: Vec<_> = [a.addr(), b.addr()]
        .into_iter()
        .map(|addr| {
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..REST_EACH {
                    let res = post_event(addr, A, &format!("rest {addr} {i}")).await;
                    assert_eq!(res.status, 201, "{res:?}");
                    ids.push(res.json()["id"].as_str().unwrap().to_owned());
                }
                ids
            })
        })
        .collect();
    let mut written: HashSet<String> = HashSet::new();
    for i in 0..SOCKET {
        let ack = socket_writer.post(i as u64 + 1, &format!("socket {i}")).await;
        written.insert(ack["event"]["id"].as_str().unwrap_or_else(|| panic!("{ack}")).to_owned());
    }
    for w in writers {
        written.extend(w.await.unwrap());
    }
    let total = 2 * REST_EACH + SOCKET;
    assert_eq!(written.len(), total);

    for (i, client) in on_a.iter_mut().chain(on_b.iter_mut()).chain([&mut socket_writer]).enumerate() {
        let got = client.events(total).await;
        assert_eq!(seqs(&got), (1..=total as u64).collect::<Vec<_>>(), "client {i}: every seq once, in order");
        let ids: HashSet<String> = got.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, written, "client {i}: exactly the events written");
        assert!(got.iter().all(|e| e["tenant_id"] == "company_a"));
    }
    // Nothing of company_a reached company_b: the first event they see is theirs.
    let mine = post_event(a.addr(), B, "b's own").await.json();
    for client in [&mut other_a, &mut other_b] {
        let got = client.events(1).await;
        assert_eq!(got[0]["id"], mine["id"], "company_b saw {}", got[0]);
        assert_eq!(got[0]["seq"], 1);
    }
    // A client connecting now gets the same snapshot on either instance.
    let late_a = FeedClient::connect(a.addr(), A).await;
    let late_b = FeedClient::connect(b.addr(), A).await;
    assert_eq!(late_a.snapshot.len(), 100);
    assert_eq!(late_a.snapshot, late_b.snapshot);
    assert_eq!(seqs(&late_a.snapshot), ((total as u64 - 99)..=total as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_alike_on_every_instance() {
    let (_redis, a, b) = cluster().await;
    let mut created = Vec::new();
    for i in 0..5 {
        let res = post_event(a.addr(), A, &format!("m{i}")).await;
        assert_eq!(res.status, 201);
        assert_eq!(
            res.header("location"),
            Some(format!("/api/events/{}", res.json()["id"].as_str().unwrap()).as_str())
        );
        created.push(res.json());
    }
    let id = created[1]["id"].as_str().unwrap();
    // Get by id on B: the very same JSON.
    let [t, k] = feed::auth_headers(A);
    let got = raw::request(b.addr(), "GET", &format!("/api/events/{id}"), &[t, k], b"").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created[1]);
    // Another tenant: 404, as if it did not exist.
    let [t, k] = feed::auth_headers(B);
    let other = raw::request(b.addr(), "GET", &format!("/api/events/{id}"), &[t, k], b"").await;
    assert_feed_error(&other, 404, "not_found");
    // sinceId and paging on B.
    let page = list_events(b.addr(), A, &format!("sinceId={id}&limit=2")).await.json();
    assert_eq!(seqs(page["events"].as_array().unwrap()), vec![3, 4]);
    assert_eq!((page["hasMore"].as_bool(), page["gap"].as_bool()), (Some(true), Some(false)));
    let unknown = list_events(b.addr(), A, &format!("sinceId={}", uuid_like())).await.json();
    assert_eq!(
        (seqs(unknown["events"].as_array().unwrap()), unknown["gap"].as_bool()),
        (vec![1, 2, 3, 4, 5], Some(true))
    );
    let latest_a = list_events(a.addr(), A, "limit=3").await.json();
    let latest_b = list_events(b.addr(), A, "limit=3").await.json();
    assert_eq!(latest_a, latest_b);
    assert_eq!(seqs(latest_a["events"].as_array().unwrap()), vec![3, 4, 5]);
    // A replay over a socket on B, and a connect with sinceId on B.
    let mut client = FeedClient::connect(b.addr(), A).await;
    client.send(&format!(r#"42/events,7["replay",{{"sinceId":"{id}","limit":10}}]"#)).await;
    let answer = client.ack(7).await;
    assert_eq!(seqs(answer["events"].as_array().unwrap()), vec![3, 4, 5]);
    let (mut ws, _) = Eio::new(b.addr(), "/socket.io/").ws_open().await;
    raw::send_text(
        &mut ws,
        &format!(r#"40/events,{{"tenantId":"company_a","token":"token_admin_a","sinceId":"{id}"}}"#),
    )
    .await;
    let mut replay = None;
    while replay.is_none() {
        let frame = feed::next_frame(&mut ws).await.unwrap();
        if let Some((name, args)) = parse_event(&frame) {
            assert_ne!(name, "snapshot", "sinceId replaces the snapshot");
            if name == "replay_result" {
                replay = Some(args[0].clone());
            }
        }
    }
    let replay = replay.unwrap();
    assert_eq!((seqs(replay["events"].as_array().unwrap()), replay["gap"].as_bool()), (vec![3, 4, 5], Some(false)));
}

fn uuid_like() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}

/// CONNECTs `who` on a fresh websocket session and returns the answer frame.
async fn connect_answer(addr: SocketAddr, who: Who) -> String {
    let (mut ws, _) = Eio::new(addr, "/socket.io/").ws_open().await;
    raw::send_text(&mut ws, &connect_packet(who)).await;
    feed::next_frame(&mut ws).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_unavailable_and_delivery_resumes_by_itself() {
    let (redis, a, b) = cluster().await;
    let mut client_a = FeedClient::connect(a.addr(), A).await;
    let mut client_b = FeedClient::connect(b.addr(), A).await;
    let first = post_event(b.addr(), A, "before").await.json();
    assert_eq!(client_a.events(1).await[0]["id"], first["id"]);
    assert_eq!(client_b.events(1).await[0]["id"], first["id"]);

    let redis = kill_redis(redis).await;
    readyz_becomes(a.addr(), 503).await;
    readyz_becomes(b.addr(), 503).await;
    let res = raw::request(a.addr(), "GET", "/readyz", &[], b"").await;
    assert_eq!(res.json()["status"], "redis unavailable");

    let res = post_event(a.addr(), A, "while down").await;
    assert_feed_error(&res, 503, "unavailable");
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_feed_error(&list_events(b.addr(), A, "").await, 503, "unavailable");
    let ack = client_b.post(1, "while down, over the socket").await;
    assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
    // A tenant this instance has a copy of still connects (its snapshot is a
    // gapless prefix); one it has never seen cannot until Redis is back.
    let late = FeedClient::connect(a.addr(), A).await;
    assert_eq!(seqs(&late.snapshot), vec![1]);
    let refused = connect_answer(a.addr(), B).await;
    assert!(refused.starts_with("44/events,"), "{refused}");
    assert!(refused.contains("unavailable"), "{refused}");
    feed::assert_serving(a.addr()).await;

    let redis = restart_redis(redis).await;
    readyz_becomes(a.addr(), 200).await;
    readyz_becomes(b.addr(), 200).await;
    let after = post_event(a.addr(), A, "after").await;
    assert_eq!(after.status, 201, "{after:?}");
    assert_eq!(after.json()["seq"], 2, "the history survived the restart (AOF)");
    for client in [&mut client_a, &mut client_b] {
        let got = client.events(1).await;
        assert_eq!(got[0]["id"], after.json()["id"], "delivery resumed: {}", got[0]);
    }
    let connected = connect_answer(a.addr(), B).await;
    assert!(connected.starts_with("40/events,"), "{connected}");
    // The outage is in the metrics.
    let metrics = raw::request(a.addr(), "GET", "/metrics", &[], b"").await;
    let text = metrics.text();
    let errors = text
        .lines()
        .find_map(|l| l.strip_prefix("eventfeed_redis_errors_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no redis_errors metric:\n{text}"));
    assert!(errors >= 1.0, "{text}");
    assert!(text.contains("# TYPE eventfeed_redis_up gauge"), "{text}");
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_loses_no_acknowledged_event_and_leaves_no_hole() {
    let (redis, a, b) = cluster().await;
    let mut clients = Vec::new();
    for addr in [a.addr(), b.addr()] {
        for _ in 0..2 {
            clients.push(FeedClient::connect(addr, A).await);
        }
    }
    // Writers alternate between the instances until told to stop.
    let stop = tokio_util::sync::CancellationToken::new();
    let writers: Vec<_> = [a.addr(), b.addr()]
        .into_iter()
        .map(|addr| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut acked, mut refused) = (Vec::new(), 0usize);
                let mut i = 0;
                while !stop.is_cancelled() {
                    let res = post_event(addr, A, &format!("load {i}")).await;
                    match res.status {
                        201 => acked.push(res.json()),
                        503 => refused += 1,
                        other => panic!("unexpected {other}: {res:?}"),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acked, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis = kill_redis(redis).await;
    readyz_becomes(a.addr(), 503).await;
    let redis = restart_redis(redis).await;
    readyz_becomes(a.addr(), 200).await;
    readyz_becomes(b.addr(), 200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let mut acked = Vec::new();
    let mut refused = 0;
    for w in writers {
        let (ok, no) = w.await.unwrap();
        acked.extend(ok);
        refused += no;
    }
    assert!(refused > 0, "some writes were refused while Redis was down");
    let last = acked.iter().map(|e| e["seq"].as_u64().unwrap()).max().unwrap();
    // Every acknowledged event is in the store; seqs have no holes.
    let stored = list_events(a.addr(), A, "limit=1000").await.json();
    let stored = stored["events"].as_array().unwrap().clone();
    assert_eq!(seqs(&stored), (1..=stored.len() as u64).collect::<Vec<_>>(), "no hole in the store");
    let stored_ids: HashSet<&str> = stored.iter().map(|e| e["id"].as_str().unwrap()).collect();
    for e in &acked {
        assert!(stored_ids.contains(e["id"].as_str().unwrap()), "acknowledged event lost: {e}");
    }
    // Every client got every stored event once, in order (the copies caught up).
    let total = stored.len();
    assert!(total as u64 >= last);
    for (i, client) in clients.iter_mut().enumerate() {
        let got = client.events(total).await;
        assert_eq!(seqs(&got), (1..=total as u64).collect::<Vec<_>>(), "client {i}");
        assert_eq!(got, stored, "client {i}: the same events as the store");
    }
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_its_history_is_never_a_silent_gap() {
    // A buffer of 3 and 10 events: the copies no longer hold seq 1 when the
    // new history's seq 1 arrives.
    let (redis, a, b) = cluster_with(&[("NB_BACKEND_EVENTS_BUFFER_SIZE", "3")]).await;
    let mut on_a = FeedClient::connect(a.addr(), A).await;
    let mut on_b = FeedClient::connect(b.addr(), A).await;
    for i in 0..10 {
        assert_eq!(post_event(a.addr(), A, &format!("old {i}")).await.status, 201);
    }
    assert_eq!(seqs(&on_a.events(10).await), (1..=10).collect::<Vec<_>>());
    assert_eq!(seqs(&on_b.events(10).await), (1..=10).collect::<Vec<_>>());
    // Redis loses everything (as a restart without persistence would).
    assert_eq!(redis.redis_cmd(&["FLUSHALL"]).trim(), "+OK");
    let fresh = post_event(b.addr(), A, "new history").await.json();
    assert_eq!(fresh["seq"], 1, "the store began again");
    // The clients are not fed the new seq 1 as if it followed 3, nor left
    // waiting: their sessions are closed, so they come back.
    for client in [&mut on_a, &mut on_b] {
        loop {
            match client.next_frame().await {
                None => break,
                Some(frame) if frame == "1" => break,
                Some(frame) => {
                    if let Some((name, _)) = parse_event(&frame) {
                        assert_ne!(name, "event_created", "no event across the lost history: {frame}");
                    }
                }
            }
        }
    }
    // Coming back: a snapshot of the new history.
    let back = FeedClient::connect(a.addr(), A).await;
    assert_eq!(back.snapshot.len(), 1);
    assert_eq!(back.snapshot[0]["id"], fresh["id"]);
    let metrics = raw::request(a.addr(), "GET", "/metrics", &[], b"").await;
    assert!(
        metrics.text().lines().any(|l| l.starts_with("eventfeed_cluster_resets_total ") && !l.ends_with(" 0")),
        "{}",
        metrics.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_missed_by_a_dropped_subscription_are_filled_in_order() {
    let (redis, a, b) = cluster().await;
    let mut clients = [FeedClient::connect(a.addr(), A).await, FeedClient::connect(b.addr(), A).await];
    let writer = {
        let addr = b.addr();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..150 {
                let res = post_event(addr, A, &format!("w{i}")).await;
                assert_eq!(res.status, 201, "{res:?}");
                seqs.push(res.json()["seq"].as_u64().unwrap());
            }
            seqs
        })
    };
    // Cut every subscription a few times while events are written.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let killed = redis.redis_cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed.starts_with(':'), "{killed}");
    }
    let written = writer.await.unwrap();
    assert_eq!(written, (1..=150).collect::<Vec<_>>());
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(seqs(&client.events(150).await), written, "client {i}: every event once, in order");
    }
    // The holes were real: events came from the store, not the subscription.
    let fetched: f64 = [a.addr(), b.addr()]
        .into_iter()
        .map(|addr| async move { raw::request(addr, "GET", "/metrics", &[], b"").await.text().to_owned() })
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .iter()
        .filter_map(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("eventfeed_cluster_missed_events_fetched_total ")?.trim().parse::<f64>().ok()
            })
        })
        .sum();
    assert!(fetched > 0.0, "no event was fetched to fill a hole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_answers_unavailable_within_the_deadline_then_serves_again() {
    let (redis, a, _b) = cluster_with(&[("NB_BACKEND_REDIS_TIMEOUT", "500")]).await;
    let mut client = FeedClient::connect(a.addr(), A).await;
    // Redis stops answering for 2 s (every client paused).
    assert_eq!(redis.redis_cmd(&["CLIENT", "PAUSE", "2000", "ALL"]).trim(), "+OK");
    let started = std::time::Instant::now();
    let res = post_event(a.addr(), A, "while slow").await;
    assert_feed_error(&res, 503, "unavailable");
    // Bounded by NB_BACKEND_REDIS_TIMEOUT (500 ms), not by Redis.
    assert!(started.elapsed() < Duration::from_millis(1900), "{:?}", started.elapsed());
    readyz_becomes(a.addr(), 503).await;
    feed::assert_serving(a.addr()).await;
    readyz_becomes(a.addr(), 200).await;
    let after = post_event(a.addr(), A, "after").await;
    assert_eq!(after.status, 201, "{after:?}");
    // Whatever happened to "while slow" (its outcome is unknown), the client
    // sees the store's events once, in order, ending with "after".
    let stored = list_events(a.addr(), A, "").await.json()["events"].as_array().unwrap().clone();
    assert_eq!(client.events(stored.len()).await, stored);
    assert_eq!(stored.last().unwrap()["id"], after.json()["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_before_redis_serves_once_redis_is_up() {
    let redis = tokio::task::spawn_blocking(|| {
        let mut redis = RedisServer::start();
        redis.kill();
        redis
    })
    .await
    .unwrap();
    let url = redis.url();
    let a = tokio::task::spawn_blocking(move || Instance::start(Some(&url), NO_LIMITS)).await.unwrap();
    feed::assert_serving(a.addr()).await;
    let res = raw::request(a.addr(), "GET", "/readyz", &[], b"").await;
    assert_eq!((res.status, res.json()["status"].as_str()), (503, Some("redis unavailable")));
    assert_feed_error(&post_event(a.addr(), A, "too early").await, 503, "unavailable");
    let refused = connect_answer(a.addr(), A).await;
    assert!(refused.starts_with("44/events,") && refused.contains("unavailable"), "{refused}");
    let _redis = restart_redis(redis).await;
    readyz_becomes(a.addr(), 200).await;
    let mut client = FeedClient::connect(a.addr(), A).await;
    let created = post_event(a.addr(), A, "now").await;
    assert_eq!(created.status, 201);
    assert_eq!(client.events(1).await[0]["id"], created.json()["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sockets_writes_keep_their_order() {
    let (_redis, a, _b) = cluster().await;
    let mut writer = FeedClient::connect(a.addr(), A).await;
    // 40 post_events sent at once, without waiting for any ack.
    for i in 1..=40u64 {
        writer.send(&format!(r#"42/events,{i}["post_event",{{"message":"in order {i}"}}]"#)).await;
    }
    let mut seqs_by_ack = Vec::new();
    for i in 1..=40u64 {
        let ack = writer.ack(i).await;
        assert_eq!(ack["event"]["message"], format!("in order {i}"), "{ack}");
        seqs_by_ack.push(ack["event"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs_by_ack, (1..=40).collect::<Vec<_>>(), "seq follows the order the socket sent them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_on_one_socket_is_bounded_and_each_gets_one_answer() {
    let (_redis, a, _b) = cluster().await;
    assert_eq!(post_event(a.addr(), A, "one").await.status, 201);
    let mut client = FeedClient::connect(a.addr(), A).await;
    const N: u64 = 300;
    for i in 1..=N {
        client.send(&format!(r#"42/events,{i}["replay",{{"limit":1}}]"#)).await;
    }
    let (mut pages, mut refused) = (0, 0);
    for i in 1..=N {
        let ack = client.ack(i).await;
        if ack["events"].is_array() {
            assert_eq!(ack["events"][0]["message"], "one");
            pages += 1;
        } else {
            assert_eq!(ack["error"]["code"], "rate_limited", "{ack}");
            refused += 1;
        }
    }
    assert_eq!(pages + refused, N);
    assert!(pages >= 64, "at least a queue's worth answered: {pages}");
    // The socket is still fine.
    let ack = client.post(N + 1, "still here").await;
    assert_eq!(ack["event"]["message"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_with_other_prefixes_on_one_redis_do_not_mix() {
    let (redis, a, b) =
        cluster_each(&[("NB_BACKEND_REDIS_PREFIX", "prod")], &[("NB_BACKEND_REDIS_PREFIX", "staging")]).await;
    let mut prod = FeedClient::connect(a.addr(), A).await;
    let staging_event = post_event(b.addr(), A, "staging only").await.json();
    assert_eq!(staging_event["seq"], 1);
    let prod_event = post_event(a.addr(), A, "prod only").await.json();
    assert_eq!(prod_event["seq"], 1, "each deployment has its own history");
    let got = prod.events(1).await;
    assert_eq!(got[0]["id"], prod_event["id"], "prod saw staging's event: {}", got[0]);
    assert!(prod.pending.iter().all(|f| !f.contains("staging only")));
    assert_eq!(list_events(a.addr(), A, "").await.json()["events"].as_array().unwrap().len(), 1);
    assert!(redis.redis_cmd(&["EXISTS", "prod:{company_a}:log"]).contains(":1"));
    assert!(redis.redis_cmd(&["EXISTS", "staging:{company_a}:log"]).contains(":1"));
}

/// The log is trimmed in batches (with a buffer of 3, one event of slack),
/// yet every read, on either instance, answers as from exactly the newest
/// 3 events; the id index keeps the ids in the log, and is a hash table
/// whatever its size (adding and dropping an id is O(1), not a scan of the
/// compact encoding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_trimmed_in_batches_answers_as_its_newest_buffer() {
    let (redis, a, b) = cluster_with(&[("NB_BACKEND_EVENTS_BUFFER_SIZE", "3")]).await;
    let (log, index) = ("eventfeed:{company_a}:log", "eventfeed:{company_a}:ids");
    let mut ids = Vec::new();
    for k in 0..4 {
        let at = if k % 2 == 0 { a.addr() } else { b.addr() };
        ids.push(post_event(at, A, &format!("event {k}")).await.json()["id"].as_str().unwrap().to_owned());
    }
    // Four events stored, the oldest one past the buffer (the slack).
    assert_eq!(redis.redis_int(&["LLEN", log]), 4);
    assert_eq!(redis.redis_int(&["HLEN", index]), 5, "four ids and the field that keeps the encoding");
    let encoding = redis.redis_cmd(&["OBJECT", "ENCODING", index]);
    assert!(encoding.contains("hashtable"), "{encoding}");
    for at in [a.addr(), b.addr()] {
        let latest = list_events(at, A, "").await.json();
        assert_eq!(seqs(latest["events"].as_array().unwrap()), [2, 3, 4], "{latest}");
        let past = list_events(at, A, &format!("sinceId={}", ids[0])).await.json();
        assert_eq!((seqs(past["events"].as_array().unwrap()), past["gap"].as_bool()), (vec![2, 3, 4], Some(true)));
        let after = list_events(at, A, &format!("sinceId={}&limit=1", ids[1])).await.json();
        assert_eq!(seqs(after["events"].as_array().unwrap()), [3], "{after}");
        assert_eq!((after["hasMore"].as_bool(), after["gap"].as_bool()), (Some(true), Some(false)));
        let [t, k] = feed::auth_headers(A);
        let gone = raw::request(at, "GET", &format!("/api/events/{}", ids[0]), &[t, k], b"").await;
        assert_feed_error(&gone, 404, "not_found");
        let [t, k] = feed::auth_headers(A);
        let kept = raw::request(at, "GET", &format!("/api/events/{}", ids[1]), &[t, k], b"").await;
        assert_eq!((kept.status, kept.json()["seq"].as_u64()), (200, Some(2)));
    }
    // A client connecting now gets the newest three as its snapshot.
    let fresh = FeedClient::connect(b.addr(), A).await;
    assert_eq!(seqs(&fresh.snapshot), [2, 3, 4]);
    // The fifth event takes the log past the slack: both oldest go at once.
    ids.push(post_event(a.addr(), A, "event 4").await.json()["id"].as_str().unwrap().to_owned());
    assert_eq!(redis.redis_int(&["LLEN", log]), 3);
    assert_eq!(redis.redis_int(&["HLEN", index]), 4);
    for (k, id) in ids.iter().enumerate() {
        let seq = redis.redis_cmd(&["HGET", index, id]);
        if k < 2 {
            assert!(seq.starts_with("$-1"), "evicted event {k} left the index: {seq}");
        } else {
            assert!(seq.ends_with(&format!("{}\r\n", k + 1)), "event {k}: {seq}");
        }
    }
    let latest = list_events(a.addr(), A, "").await.json();
    assert_eq!(seqs(latest["events"].as_array().unwrap()), [3, 4, 5], "{latest}");
}

/// A log far longer than the buffer (the buffer was made smaller since the
/// last append) is cut to the buffer by the next append, in steps, however
/// many events go: 9,000 here, past what a Lua `unpack` takes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_far_past_a_smaller_buffer_is_cut_to_it_by_the_next_append() {
    let (redis, a, _b) = cluster_with(&[("NB_BACKEND_EVENTS_BUFFER_SIZE", "3")]).await;
    let (log, index, seq) = ("eventfeed:{company_a}:log", "eventfeed:{company_a}:ids", "eventfeed:{company_a}:seq");
    // 9,000 entries as a bigger buffer left them: an id where every entry
    // has it, indexed.
    let seed = "for i = 1, 9000 do \
                  local id = string.format('%036d', i) \
                  redis.call('RPUSH', KEYS[1], '{\"id\":\"' .. id .. '\"}') \
                  redis.call('HSET', KEYS[2], id, i) \
                end \
                redis.call('SET', KEYS[3], 9000)";
    redis.redis_cmd(&["EVAL", seed, "3", log, index, seq]);
    assert_eq!(redis.redis_int(&["LLEN", log]), 9000);
    let res = post_event(a.addr(), A, "after the buffer shrank").await;
    assert_eq!((res.status, res.json()["seq"].as_u64()), (201, Some(9001)), "{}", res.json());
    assert_eq!(redis.redis_int(&["LLEN", log]), 3);
    assert_eq!(redis.redis_int(&["HLEN", index]), 4, "the three ids in the log and the marker field");
}

/// CONNECTs with `auth` on a fresh websocket to `addr`; returns the socket
/// and the CONNECT answer's data.
async fn raw_connect(addr: SocketAddr, auth: Value) -> (raw::Ws, Value) {
    let (mut ws, _) = Eio::new(addr, "/socket.io/").ws_open().await;
    raw::send_text(&mut ws, &format!("40/events,{auth}")).await;
    let answer = feed::next_frame(&mut ws).await.unwrap();
    let (kind, _, data) = feed::parse_frame(&answer).unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(kind, '0', "CONNECT refused: {answer}");
    (ws, data)
}

/// The next event frame: its name and arguments.
async fn next_event(ws: &mut raw::Ws) -> (String, Vec<Value>) {
    loop {
        let frame = feed::next_frame(ws).await.expect("the socket ended");
        if let Some(event) = parse_event(&frame) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_recovers_on_another_instance_after_its_own_crashed() {
    let (redis, mut a, b) = cluster().await;
    let auth = serde_json::json!({"tenantId": "company_a", "token": "token_admin_a"});
    let (mut ws, answer) = raw_connect(a.addr(), auth.clone()).await;
    let (sid, pid) = (answer["sid"].as_str().unwrap().to_owned(), answer["pid"].as_str().unwrap().to_owned());
    assert_eq!(next_event(&mut ws).await.0, "snapshot");
    for i in 0..2 {
        assert_eq!(post_event(a.addr(), A, &format!("seen {i}")).await.status, 201);
    }
    let mut offset = String::new();
    for seq in 1..=2 {
        let (name, args) = next_event(&mut ws).await;
        assert_eq!((name.as_str(), args[0]["seq"].as_u64()), ("event_created", Some(seq)));
        offset = args[1].as_str().unwrap().to_owned();
    }
    // The session is in Redis while the socket lives (written at connect).
    let key = format!("eventfeed:session:{pid}");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !redis.redis_cmd(&["EXISTS", &key]).contains(":1") {
        assert!(std::time::Instant::now() < end, "the session was not written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ttl = redis.redis_int(&["PTTL", &key]);
    assert!(ttl > 0 && ttl <= 120_000, "expires with the window: {ttl}");
    // A crashes: nothing of its sockets is written any more.
    tokio::task::spawn_blocking(move || {
        a.kill9();
        a
    })
    .await
    .unwrap();
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(post_event(b.addr(), A, &format!("missed {i}")).await.json());
    }
    // Another tenant's token with the pid: no recovery (and the owner still can).
    let thief = serde_json::json!({"tenantId": "company_b", "token": "token_admin_b", "pid": pid, "offset": offset});
    let (mut other, stolen) = raw_connect(b.addr(), thief).await;
    assert_ne!(stolen["sid"], sid.as_str());
    assert_eq!(next_event(&mut other).await.0, "snapshot");
    // The owner comes back on B with its pid and offset.
    let mut back_auth = auth.clone();
    back_auth["pid"] = pid.clone().into();
    back_auth["offset"] = offset.clone().into();
    let (mut back, again) = raw_connect(b.addr(), back_auth).await;
    assert_eq!((again["sid"].as_str(), again["pid"].as_str()), (Some(sid.as_str()), Some(pid.as_str())), "recovered");
    for expected in &missed {
        let (name, args) = next_event(&mut back).await;
        assert_eq!(name, "event_created", "no snapshot on recovery");
        assert_eq!(&args[0], expected);
    }
    // Then live ones.
    let live = post_event(b.addr(), A, "live").await.json();
    let (name, args) = next_event(&mut back).await;
    assert_eq!((name.as_str(), &args[0]), ("event_created", &live));
    // A normal disconnect keeps nothing: the session is deleted.
    assert!(redis.redis_cmd(&["EXISTS", &key]).contains(":1"), "written again on recovery");
    raw::send_text(&mut back, "41/events,").await;
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !redis.redis_cmd(&["EXISTS", &key]).contains(":0") {
        assert!(std::time::Instant::now() < end, "the session outlived a normal disconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_stops_without_a_false_alarm() {
    let (_redis, mut a, mut b) = cluster().await;
    // One socket came and went normally on B: its session was written, then deleted.
    drop(FeedClient::connect(b.addr(), A).await);
    for instance in [&mut a, &mut b] {
        let status = tokio::task::block_in_place(|| instance.terminate());
        assert!(status.success(), "exit status {status:?}");
        let logs = instance.logs();
        for alarm in ["redis call failed", "were lost", "were not written"] {
            assert!(!logs.contains(alarm), "a shutdown with Redis up logged {alarm:?}:\n{logs}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_instance_gets_the_events_of_both_in_order() {
    let (_redis, a, b) = cluster().await;
    let posted_before = post_event(b.addr(), A, "before").await.json();
    let [t, k] = feed::auth_headers(A);
    let target = format!("/api/events/stream?sinceId={}", posted_before["id"].as_str().unwrap());
    let mut on_a = sse::SseClient::get(a.addr(), &target, &[t, k]).await;
    assert_eq!(on_a.status, 200);
    let mut posted = Vec::new();
    for i in 0..20 {
        let on = if i % 2 == 0 { a.addr() } else { b.addr() };
        let res = post_event(on, A, &format!("m{i}")).await;
        assert_eq!(res.status, 201);
        posted.push(res.json());
    }
    let got = on_a.events(20).await;
    assert_eq!(got, posted, "every event of both instances, once, in seq order");
    // Another tenant's events never reach it.
    assert_eq!(post_event(b.addr(), B, "other tenant").await.status, 201);
    let last = post_event(b.addr(), A, "last").await.json();
    assert_eq!(on_a.events(1).await, vec![last]);
}
