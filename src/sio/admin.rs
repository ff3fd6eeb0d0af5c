//! The server side of the official Socket.IO Admin UI
//! ([`@socket.io/admin-ui`](https://github.com/socketio/socket.io-admin-ui)
//! 0.5, its `lib/index.ts` and `lib/typed-events.ts`): a namespace (`/admin`)
//! the unmodified UI connects to, shows this server in, and — when not
//! read-only — acts through.
//!
//! - **Login**: the UI's `auth` is `{username, password}` (checked against a
//!   bcrypt hash, as the UI's own server option takes) or `{sessionId}` from
//!   an earlier login; a login answers `session` with a new id, valid for the
//!   session TTL. A refusal is `connect_error` "invalid credentials" (the
//!   UI's own wording). Bounds: bcrypt costs tens of ms of CPU, so attempts
//!   are limited per peer address ([`LOGINS_PER_PEER`] a minute) and overall
//!   ([`LOGINS_OVERALL`] a minute), at most [`VERIFYING`] run at once, off the
//!   async workers; past a bound the attempt is refused "too many login
//!   attempts" without hashing. Sessions are bounded ([`MAX_SESSIONS`]; the
//!   oldest goes first).
//! - **What it is told**: `config` (`supportedFeatures`), `all_sockets`
//!   (every namespace's sockets, on every server of the cluster through the
//!   adapter's `fetchSockets`), `server_stats` every 2 s (server id, hostname,
//!   pid, uptime, clients by transport, namespaces with their socket counts),
//!   and as they happen `socket_connected`,
//!   `socket_updated` (an upgrade to websocket), `socket_disconnected`,
//!   `room_joined`, `room_left` ([`Observer`]). These are broadcast to the
//!   admin namespace through the adapter, so a UI connected to one instance
//!   sees every instance, as with Node. `ALL_EVENTS` (which would show
//!   message texts) is never offered, nor `AGGREGATED_EVENTS` (offering it
//!   hides the UI's sockets, rooms and clients pages), and a socket is shown as `fetchSockets`
//!   reports it: without its CONNECT payload or any header.
//! - **What it may do**: read-only (the default), `config` offers no action
//!   and `emit`, `join`, `leave` and `_disconnect` are ignored. Otherwise
//!   they are carried out on every server — except emitting to the admin
//!   namespace itself or an event the target namespace refuses
//!   ([`NamespaceHandler::allows_operator_emit`]), and joining or leaving a
//!   room it refuses ([`NamespaceHandler::allows_remote_room_change`]). Every
//!   login, refusal and action is an audit line.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{
    Accept, Adapter, Authorization, BroadcastOp, ConnectRejection, Connecting, Deferred, DisconnectReason, Event,
    NamespaceHandler, Observer, Socket, SocketIo,
};
use crate::engine::{Engine, new_sid};
use eventfeed_protocol::adapter::FetchedSocket;

/// Login attempts one peer address may make per minute.
pub const LOGINS_PER_PEER: usize = 10;
/// Login attempts per minute, all peers together.
pub const LOGINS_OVERALL: usize = 60;
/// Password verifications running at once.
pub const VERIFYING: usize = 2;
/// Admin sessions remembered; the oldest is forgotten first.
pub const MAX_SESSIONS: usize = 1024;
/// How often `server_stats` is sent.
pub const STATS_EVERY: Duration = Duration::from_secs(2);

/// The Admin UI's settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The user name the UI logs in with.
    pub username: String,
    /// The bcrypt hash of its password (`$2a$`/`$2b$`/`$2y$`).
    pub password_hash: String,
    /// Read-only: no action is offered or carried out.
    pub readonly: bool,
    /// How long a login's session id stays valid.
    pub session_ttl: Duration,
    /// The namespace the UI connects to.
    pub namespace: String,
    /// Whether other servers share this one's broadcasts (Redis mode): then
    /// what happens here is told to the admin namespace even with no UI
    /// connected here, since one may be connected elsewhere.
    pub clustered: bool,
}

/// Checks that `hash` is a bcrypt hash the UI's server would take.
pub fn valid_hash(hash: &str) -> bool {
    hash.parse::<bcrypt::HashParts>().is_ok()
}

/// What the UI's socket carries: how it logged in.
pub struct AdminSocket {
    /// The session id to send it (`session`), after a password login.
    new_session: Option<String>,
}

/// The admin namespace's handler.
pub struct AdminHandler<A: Adapter>(Arc<Admin<A>>);

/// The Admin UI's state, shared by its namespace and the observer.
pub struct Admin<A: Adapter> {
    config: AdminConfig,
    server_id: String,
    hostname: String,
    started: Instant,
    engine: OnceLock<Weak<Engine<SocketIo<A>>>>,
    sessions: Mutex<Sessions>,
    logins: Mutex<Logins>,
    verifying: Arc<tokio::sync::Semaphore>,
    /// Admin sockets connected here.
    here: AtomicUsize,
}

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Instant>,
    order: VecDeque<String>,
}

#[derive(Default)]
struct Logins {
    per_peer: HashMap<IpAddr, VecDeque<Instant>>,
    overall: VecDeque<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now, as JavaScript's `new Date()` serializes (the UI's timestamps).
fn now_iso() -> Value {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_millis() as f64);
    eventfeed_protocol::date::iso_string(ms).map_or(Value::Null, Value::String)
}

impl<A: Adapter> Admin<A> {
    /// The Admin UI with `config`.
    pub fn new(config: AdminConfig) -> Arc<Self> {
        let hostname = hostname();
        Arc::new(Admin {
            // Unique per process, so that the UI lists each instance of a
            // cluster on its own, even several on one host.
            server_id: format!("{hostname}#{}", std::process::id()),
            hostname,
            started: Instant::now(),
            engine: OnceLock::new(),
            sessions: Mutex::default(),
            logins: Mutex::default(),
            verifying: Arc::new(tokio::sync::Semaphore::new(VERIFYING)),
            here: AtomicUsize::new(0),
            config,
        })
    }

    /// The namespace handler to serve the UI with.
    pub fn handler(self: &Arc<Self>) -> AdminHandler<A> {
        AdminHandler(self.clone())
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    /// Attaches the engine (once it is built): the UI is then told of every
    /// socket, and `server_stats` runs until `shutdown`.
    pub fn attach(self: &Arc<Self>, engine: &Arc<Engine<SocketIo<A>>>, shutdown: tokio_util::sync::CancellationToken) {
        let _ = self.engine.set(Arc::downgrade(engine));
        engine.handler().observe(self.clone());
        let admin = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let Some(admin) = admin.upgrade() else { return };
                if admin.listening() {
                    admin.send_stats();
                }
            }
        });
    }

    fn engine(&self) -> Option<Arc<Engine<SocketIo<A>>>> {
        self.engine.get().and_then(Weak::upgrade)
    }

    /// Broadcasts `event` to the admin namespace, here and on every other server.
    fn tell(&self, event: &str, args: Vec<Value>) {
        if let Some(engine) = self.engine() {
            let _ = engine.handler().broadcast(&self.config.namespace, &BroadcastOp::default(), event, args, vec![]);
        }
    }

    fn stats(&self) -> Value {
        let Some(engine) = self.engine() else { return Value::Null };
        let (polling, websocket) = engine.sessions_by_transport();
        let io = engine.handler();
        let namespaces: Vec<Value> =
            io.namespaces().iter().map(|n| json!({"name": n.name(), "socketsCount": n.socket_count()})).collect();
        json!({
            "serverId": self.server_id,
            "hostname": self.hostname,
            "pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs_f64(),
            "clientsCount": polling + websocket,
            "pollingClientsCount": polling,
            "namespaces": namespaces,
        })
    }

    fn send_stats(&self) {
        let stats = self.stats();
        if !stats.is_null() {
            self.tell("server_stats", vec![stats]);
        }
    }

    /// The actions offered. `AGGREGATED_EVENTS` is not: the UI shows its
    /// sockets, rooms and clients pages only to a server that does not offer
    /// it (its "development" view), and those pages are what an operator
    /// comes for. `ALL_EVENTS` never is: it would show message texts.
    fn features(&self) -> Vec<&'static str> {
        if self.config.readonly {
            vec![]
        } else {
            vec!["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]
        }
    }

    /// Whether `id` names a live session.
    fn session_valid(&self, id: &str) -> bool {
        let mut sessions = lock(&self.sessions);
        match sessions.by_id.get(id) {
            Some(expires) if *expires > Instant::now() => true,
            Some(_) => {
                sessions.by_id.remove(id);
                false
            }
            None => false,
        }
    }

    fn new_session(&self) -> String {
        let id = new_sid();
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        // Bound: forget expired sessions, then the oldest past the limit.
        while let Some(oldest) = sessions.order.front().cloned() {
            let expired = sessions.by_id.get(&oldest).is_none_or(|e| *e <= now);
            if !expired && sessions.by_id.len() < MAX_SESSIONS {
                break;
            }
            sessions.order.pop_front();
            sessions.by_id.remove(&oldest);
        }
        sessions.by_id.insert(id.clone(), now + self.config.session_ttl);
        sessions.order.push_back(id.clone());
        id
    }

    /// Counts a login attempt from `peer`; false past a bound (nothing is
    /// hashed then).
    fn may_try(&self, peer: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        let mut logins = lock(&self.logins);
        let recent = |q: &mut VecDeque<Instant>| {
            while q.front().is_some_and(|t| now.duration_since(*t) >= minute) {
                q.pop_front();
            }
        };
        recent(&mut logins.overall);
        if logins.overall.len() >= LOGINS_OVERALL {
            return false;
        }
        logins.per_peer.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < minute));
        if let Some(ip) = peer {
            let q = logins.per_peer.entry(ip).or_default();
            recent(q);
            if q.len() >= LOGINS_PER_PEER {
                return false;
            }
            q.push_back(now);
        }
        logins.overall.push_back(now);
        true
    }

    /// Carries out one of the UI's commands (not when read-only).
    fn command(&self, peer: &str, event: &Event) {
        let args = &event.args;
        let Some(engine) = self.engine() else { return };
        let io = engine.handler();
        let str_at = |i: usize| args.get(i).and_then(Value::as_str);
        let Some(nsp) = str_at(0) else { return };
        let refuse = |why: &str| {
            tracing::warn!(target: "audit", action = "admin_command", outcome = "refused", command = %event.name, nsp, reason = why, peer, "admin command refused");
        };
        if self.config.readonly {
            return refuse("read-only");
        }
        if nsp == self.config.namespace {
            return refuse("the admin namespace");
        }
        let Some(namespace) = io.namespace(nsp) else {
            return refuse("unknown namespace");
        };
        let (room, filter) = match event.name.as_str() {
            "emit" => (None, str_at(1)),
            "join" | "leave" => (str_at(1), str_at(2)),
            "_disconnect" => (None, str_at(2)),
            _ => return,
        };
        let filters: Vec<&str> = filter.into_iter().collect();
        let op = BroadcastOp { rooms: &filters, ..BroadcastOp::default() };
        let done = match event.name.as_str() {
            "emit" => {
                let Some(name) = str_at(2) else { return refuse("no event name") };
                if !namespace.allows_operator_emit(name) {
                    return refuse("an event only the server sends");
                }
                io.broadcast(nsp, &op, name, args[3..].to_vec(), vec![]).is_ok()
            }
            "join" | "leave" => {
                let Some(room) = room else { return refuse("no room") };
                if !namespace.allows_remote_room_change(room) {
                    return refuse("a room only the server manages");
                }
                if event.name == "join" {
                    io.sockets_join(nsp, &op, &[room]).is_ok()
                } else {
                    io.sockets_leave(nsp, &op, &[room]).is_ok()
                }
            }
            _ => {
                let close = args.get(1).and_then(Value::as_bool).unwrap_or(false);
                io.disconnect_sockets(nsp, &op, close).is_ok()
            }
        };
        tracing::info!(target: "audit", action = "admin_command", outcome = if done { "ok" } else { "failed" }, command = %event.name, nsp, room = room.unwrap_or(""), filter = filter.unwrap_or(""), peer, "admin command");
    }

    /// Sends `all_sockets` to `socket`: every namespace's sockets, on every server.
    fn send_all_sockets(self: &Arc<Self>, socket: &Arc<Socket<AdminHandler<A>>>) {
        let Some(engine) = self.engine() else { return };
        let socket = socket.clone();
        tokio::spawn(async move {
            let io = engine.handler();
            let names: Vec<String> = io.namespaces().iter().map(|n| n.name().to_owned()).collect();
            let mut all = Vec::new();
            for nsp in names {
                // Another server that does not answer in time is left out.
                if let Ok(sockets) = io.fetch_sockets(&nsp, &BroadcastOp::default()).await {
                    all.extend(sockets.into_iter().map(|s| serialize(&nsp, s)));
                }
            }
            let _ = socket.emit("all_sockets", vec![Value::Array(all)], vec![]);
        });
    }
}

/// A socket as the UI shows it: `fetchSockets`' view with `clientId` and
/// `transport` lifted out of `data._admin`, as Node's instrumentation does.
fn serialize(nsp: &str, socket: FetchedSocket) -> Value {
    let mut data = match socket.data {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let admin = data.remove("_admin").unwrap_or(Value::Null);
    let mut handshake = socket.handshake;
    if let Some(h) = handshake.as_object_mut() {
        // Never shown: the CONNECT payload holds credentials.
        h.remove("auth");
    }
    json!({
        "id": socket.id,
        "clientId": admin.get("clientId").cloned().unwrap_or(Value::Null),
        "transport": admin.get("transport").cloned().unwrap_or(Value::Null),
        "nsp": nsp,
        "data": data,
        "handshake": handshake,
        "rooms": socket.rooms,
    })
}

impl<A: Adapter> Observer for Admin<A> {
    fn listening(&self) -> bool {
        self.config.clustered || self.here.load(Ordering::Relaxed) > 0
    }

    fn connected(&self, nsp: &str, socket: FetchedSocket) {
        self.tell("socket_connected", vec![serialize(nsp, socket), now_iso()]);
    }

    fn disconnected(&self, nsp: &str, id: &str, reason: &str) {
        self.tell("socket_disconnected", vec![json!(nsp), json!(id), json!(reason), now_iso()]);
    }

    fn joined(&self, nsp: &str, room: &str, id: &str) {
        self.tell("room_joined", vec![json!(nsp), json!(room), json!(id), now_iso()]);
    }

    fn left(&self, nsp: &str, room: &str, id: &str) {
        self.tell("room_left", vec![json!(nsp), json!(room), json!(id), now_iso()]);
    }

    fn upgraded(&self, nsp: &str, id: &str, transport: &str) {
        self.tell("socket_updated", vec![json!({"id": id, "nsp": nsp, "transport": transport})]);
    }
}

fn invalid() -> ConnectRejection {
    ConnectRejection::new("invalid credentials")
}

impl<A: Adapter> NamespaceHandler for AdminHandler<A> {
    type Data = AdminSocket;

    fn authorize(
        &self,
        connecting: &Connecting<'_, Self>,
        auth: Option<&Value>,
    ) -> Authorization<AdminSocket, impl Deferred<AdminSocket> + use<A>> {
        let admin = &self.0;
        let peer_ip = connecting.conn.peer().map(|p| p.ip());
        let peer = peer_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let field = |name: &str| auth.and_then(|a| a.get(name)).and_then(Value::as_str).map(str::to_owned);
        if let Some(id) = field("sessionId")
            && admin.session_valid(&id)
        {
            tracing::info!(target: "audit", action = "admin_login", outcome = "ok", via = "session", peer = %peer, "admin UI connected");
            return Authorization::Now(Ok(Accept::new(AdminSocket { new_session: None })));
        }
        let (Some(username), Some(password)) = (field("username"), field("password")) else {
            tracing::info!(target: "audit", action = "admin_login", outcome = "refused", reason = "no credentials", peer = %peer, "admin UI refused");
            return Authorization::Now(Err(invalid()));
        };
        if !admin.may_try(peer_ip) {
            tracing::warn!(target: "audit", action = "admin_login", outcome = "refused", reason = "rate_limited", peer = %peer, "admin UI login refused: too many attempts");
            return Authorization::Now(Err(ConnectRejection::new("too many login attempts")));
        }
        let Ok(permit) = admin.verifying.clone().try_acquire_owned() else {
            // Bound: VERIFYING hashes at once; a crowd is refused, not queued.
            tracing::warn!(target: "audit", action = "admin_login", outcome = "refused", reason = "busy", peer = %peer, "admin UI login refused: too many at once");
            return Authorization::Now(Err(ConnectRejection::new("too many login attempts")));
        };
        let admin = admin.clone();
        Authorization::Later(async move {
            let hash = admin.config.password_hash.clone();
            let user_ok: bool = username.as_bytes().ct_eq(admin.config.username.as_bytes()).into();
            // bcrypt runs even for a wrong user name, so timing tells nothing.
            let verified = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
            drop(permit);
            if user_ok && verified {
                tracing::info!(target: "audit", action = "admin_login", outcome = "ok", via = "password", peer = %peer, "admin UI logged in");
                Ok(Accept::new(AdminSocket { new_session: Some(admin.new_session()) }))
            } else {
                tracing::warn!(target: "audit", action = "admin_login", outcome = "refused", reason = "invalid credentials", peer = %peer, "admin UI login refused");
                Err(invalid())
            }
        })
    }

    fn on_connect(&self, socket: &Arc<Socket<Self>>) {
        let admin = &self.0;
        admin.here.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = &socket.data().new_session {
            let _ = socket.emit("session", vec![json!(id)], vec![]);
        }
        let _ = socket.emit("config", vec![json!({"supportedFeatures": admin.features()})], vec![]);
        admin.send_all_sockets(socket);
        // The UI lists this server at once, not at the next tick.
        let stats = admin.stats();
        if !stats.is_null() {
            let _ = socket.emit("server_stats", vec![stats], vec![]);
        }
    }

    fn on_event(&self, socket: &Arc<Socket<Self>>, event: Event) {
        let peer = socket.conn().peer().map(|p| p.ip().to_string()).unwrap_or_default();
        match event.name.as_str() {
            "emit" | "join" | "leave" | "_disconnect" => self.0.command(&peer, &event),
            _ => {}
        }
    }

    fn on_disconnect(&self, _socket: &Arc<Socket<Self>>, _reason: DisconnectReason) {
        self.0.here.fetch_sub(1, Ordering::Relaxed);
    }

    fn allows_remote_room_change(&self, _room: &str) -> bool {
        // Nobody else puts the UI's sockets in rooms.
        false
    }

    fn allows_operator_emit(&self, _event: &str) -> bool {
        false
    }
}

/// This machine's name (what the UI shows as the server's hostname).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_recognized() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        assert!(valid_hash(&hash));
        assert!(bcrypt::verify("secret", &hash).unwrap());
        assert!(!valid_hash("not a hash"));
        assert!(!valid_hash("$2b$04$short"));
    }
}
