// The Socket.IO Admin UI's namespace (/admin) driven with the official
// client the way the Admin UI drives it: login, session, config, all_sockets,
// server_stats, the live socket events, and the commands — read-only and not.
//
//   node admin.mjs --bin PATH_TO_EVENTFEED

import { io } from "socket.io-client";
import { check, finish, once, until } from "./harness.mjs";
import { Redis } from "../../bench/faults/servers.mjs";
import { ADMIN_PASSWORD, adminServer } from "./kit.mjs";

const server = adminServer;
const PASSWORD = ADMIN_PASSWORD;

/** An admin socket as the UI opens it; resolves once connected, with what it heard. */
function admin(url, auth) {
  const socket = io(`${url}/admin`, { forceNew: true, reconnection: false, auth });
  const heard = { session: null, config: null, allSockets: null, stats: [], connected: [], disconnected: [], joined: [], left: [], updated: [] };
  socket.on("session", (id) => (heard.session = id));
  socket.on("config", (c) => (heard.config = c));
  socket.on("all_sockets", (s) => (heard.allSockets = s));
  socket.on("server_stats", (s) => heard.stats.push(s));
  socket.on("socket_connected", (s, at) => heard.connected.push({ s, at }));
  socket.on("socket_disconnected", (nsp, id, reason) => heard.disconnected.push({ nsp, id, reason }));
  socket.on("room_joined", (nsp, room, id) => heard.joined.push({ nsp, room, id }));
  socket.on("room_left", (nsp, room, id) => heard.left.push({ nsp, room, id }));
  socket.on("socket_updated", (s) => heard.updated.push(s));
  return { socket, heard };
}

const feedClient = (url, tenant = "company_a", token = "token_admin_a") =>
  io(`${url}/events`, { forceNew: true, auth: { tenantId: tenant, token }, transports: ["polling", "websocket"] });

const until5 = (pred, what) => until(pred, what, 5000);
const audit = (inst, what) => inst.tail.some((l) => l.includes(what));

const ro = await server(true);
const rw = await server(false);
const RO = `http://${ro.addr}`;
const RW = `http://${rw.addr}`;

try {
  await check("a wrong password is refused with the UI's own message", async () => {
    const { socket } = admin(RO, { username: "ops", password: "wrong" });
    const [err] = await once(socket, "connect_error");
    if (err.message !== "invalid credentials") throw new Error(err.message);
    socket.close();
    await until5(() => audit(ro, "admin UI login refused"), "the audit line");
  });

  let sessionId;
  await check("a login gets a session, the config, the sockets and the server's stats", async () => {
    const { socket, heard } = admin(RO, { username: "ops", password: PASSWORD });
    await once(socket, "connect");
    await until5(() => heard.session && heard.config && heard.allSockets && heard.stats.length, "session, config, all_sockets, server_stats");
    sessionId = heard.session;
    if (JSON.stringify(heard.config.supportedFeatures) !== JSON.stringify([])) {
      throw new Error(`read-only offers an action: ${JSON.stringify(heard.config)}`);
    }
    const stats = heard.stats[0];
    for (const k of ["serverId", "hostname", "pid", "uptime", "clientsCount", "pollingClientsCount", "namespaces"]) {
      if (!(k in stats)) throw new Error(`server_stats lacks ${k}: ${JSON.stringify(stats)}`);
    }
    if (!stats.namespaces.some((n) => n.name === "/events") || !stats.namespaces.some((n) => n.name === "/admin")) {
      throw new Error(`namespaces: ${JSON.stringify(stats.namespaces)}`);
    }
    socket.close();
  });

  await check("the UI hears of a feed socket: who it is, its rooms, never its token", async () => {
    const { socket, heard } = admin(RO, { sessionId });
    await once(socket, "connect");
    if (heard.session) throw new Error("a session login got a new session");
    const client = feedClient(RO);
    await once(client, "connect");
    await until5(() => heard.connected.some(({ s }) => s.id === client.id), "socket_connected");
    const { s, at } = heard.connected.find(({ s }) => s.id === client.id);
    if (s.nsp !== "/events" || s.data.tenant !== "company_a" || s.data.user !== "admin_a") throw new Error(JSON.stringify(s));
    if (!s.clientId || !["polling", "websocket"].includes(s.transport) || Number.isNaN(Date.parse(at))) throw new Error(JSON.stringify({ s, at }));
    if ("auth" in s.handshake || JSON.stringify(heard).includes("token_admin_a")) throw new Error(`a token is shown: ${JSON.stringify(s)}`);
    if (s.clientId === client.io.engine.id || JSON.stringify(heard).includes(client.io.engine.id)) throw new Error("the Engine.IO sid is shown");
    await until5(() => heard.joined.some((j) => j.id === client.id && j.room === "tenant:company_a"), "room_joined");
    if (s.transport === "polling") {
      await until5(() => heard.updated.some((u) => u.id === client.id && u.transport === "websocket"), "socket_updated on the upgrade");
    }
    // A second UI gets it in all_sockets.
    const second = admin(RO, { sessionId });
    await until5(() => second.heard.allSockets, "all_sockets");
    const listed = second.heard.allSockets.find((x) => x.id === client.id);
    if (!listed || listed.data.tenant !== "company_a" || !listed.rooms.includes("tenant:company_a")) {
      throw new Error(`all_sockets: ${JSON.stringify(second.heard.allSockets)}`);
    }
    const id = client.id; // the client forgets it on close
    client.close();
    await until5(() => heard.disconnected.some((d) => d.id === id && d.nsp === "/events"), "socket_disconnected");
    socket.close();
    second.socket.close();
  }, 20_000);

  await check("read-only: a raw _disconnect, join or emit is ignored", async () => {
    const { socket } = admin(RO, { sessionId });
    await once(socket, "connect");
    const client = feedClient(RO);
    await once(client, "connect");
    socket.emit("_disconnect", "/events", true, client.id);
    socket.emit("join", "/events", "vip", client.id);
    socket.emit("emit", "/events", client.id, "notice", "hi");
    let noticed = false;
    client.on("notice", () => (noticed = true));
    await until5(() => ro.tail.filter((l) => l.includes("admin command refused") && l.includes("read-only")).length >= 3, "three refusals");
    // Still connected, nothing received: a round trip on the feed socket proves the order.
    const r = await client.emitWithAck("replay", { limit: 1 });
    if (!client.connected || noticed || r.error) throw new Error(`connected ${client.connected}, noticed ${noticed}`);
    client.close();
    socket.close();
  });

  await check("read-write: commands work, except on tenant rooms, the feed's own events and /admin", async () => {
    const { socket, heard } = admin(RW, { username: "ops", password: PASSWORD });
    await once(socket, "connect");
    await until5(() => heard.config, "config");
    for (const f of ["EMIT", "JOIN", "LEAVE", "DISCONNECT"]) {
      if (!heard.config.supportedFeatures.includes(f)) throw new Error(JSON.stringify(heard.config));
    }
    if (heard.config.supportedFeatures.includes("ALL_EVENTS")) throw new Error("ALL_EVENTS offered");
    if (heard.config.supportedFeatures.includes("AGGREGATED_EVENTS")) throw new Error("the UI would hide its sockets pages");
    const client = feedClient(RW);
    await once(client, "connect");
    // Allowed: a room of one's own, an event of one's own.
    socket.emit("join", "/events", "vip", client.id);
    await until5(() => heard.joined.some((j) => j.id === client.id && j.room === "vip"), "room_joined vip");
    const notice = once(client, "notice");
    socket.emit("emit", "/events", "vip", "notice", { text: "maintenance at noon" });
    const [payload] = await notice;
    if (payload.text !== "maintenance at noon") throw new Error(JSON.stringify(payload));
    // Refused: another tenant's room, the feed's own event, the admin namespace.
    socket.emit("join", "/events", "tenant:company_b", client.id);
    let forged = false;
    client.on("event_created", () => (forged = true));
    socket.emit("emit", "/events", client.id, "event_created", { id: "x", message: "forged" });
    socket.emit("emit", "/admin", undefined, "config", { supportedFeatures: ["ALL_EVENTS"] });
    await until5(() => rw.tail.filter((l) => l.includes("admin command refused")).length >= 3, "three refusals");
    if (heard.joined.some((j) => j.room === "tenant:company_b")) throw new Error("joined another tenant's room");
    await client.emitWithAck("replay", { limit: 1 });
    if (forged) throw new Error("a forged event_created arrived");
    // _disconnect with close: the client's transport closes, it comes back and recovers.
    const gone = once(client, "disconnect");
    socket.emit("_disconnect", "/events", true, client.id);
    const [reason] = await gone;
    if (reason !== "transport close") throw new Error(`disconnect reason ${reason}`);
    await once(client, "connect");
    if (!client.recovered) throw new Error("not recovered");
    await until5(() => audit(rw, "admin command") && rw.tail.some((l) => l.includes('"command":"_disconnect"') && l.includes('"outcome":"ok"')), "the audit line");
    client.close();
    socket.close();
  }, 20_000);

  await check("logins are bounded per peer", async () => {
    let last;
    for (let i = 0; i < 12; i++) {
      const { socket } = admin(RW, { username: "ops", password: `wrong ${i}` });
      [last] = await once(socket, "connect_error");
      socket.close();
    }
    if (last.message !== "too many login attempts") throw new Error(last.message);
    await until5(() => audit(rw, "too many attempts"), "the audit line");
  }, 20_000);
  await check("Redis mode: a UI connected to one instance sees every instance", async () => {
    const redis = new Redis();
    await redis.start();
    const [x, y] = [await server(false, { NB_BACKEND_REDIS_URL: redis.url }), await server(false, { NB_BACKEND_REDIS_URL: redis.url })];
    try {
      const onY = feedClient(`http://${y.addr}`, "company_b", "token_admin_b");
      await once(onY, "connect");
      const { socket, heard } = admin(`http://${x.addr}`, { username: "ops", password: PASSWORD });
      await once(socket, "connect");
      // all_sockets asks every instance (fetchSockets through the adapter).
      await until5(() => heard.allSockets, "all_sockets");
      const listed = heard.allSockets.find((s) => s.id === onY.id);
      if (!listed || listed.data.tenant !== "company_b") throw new Error(`all_sockets lacks y's socket: ${JSON.stringify(heard.allSockets)}`);
      // Each instance's server_stats and socket events reach it through the adapter.
      await until5(() => new Set(heard.stats.map((s) => s.serverId)).size === 2, "server_stats of both instances");
      const later = feedClient(`http://${y.addr}`, "company_a", "token_admin_a");
      await once(later, "connect");
      await until5(() => heard.connected.some(({ s }) => s.id === later.id && s.data.tenant === "company_a"), "socket_connected from y");
      // A command on x reaches y's socket.
      const gone = once(later, "disconnect");
      socket.emit("_disconnect", "/events", false, later.id);
      const [reason] = await gone;
      if (reason !== "io server disconnect") throw new Error(reason);
      onY.close();
      socket.close();
    } finally {
      await x.stop();
      await y.stop();
      await redis.stop();
    }
  }, 30_000);
} finally {
  await ro.stop();
  await rw.stop();
}
finish();
