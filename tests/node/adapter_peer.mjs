// A Node socket.io@4 server with @socket.io/redis-adapter@8 on REDIS_URL,
// as a peer of an eventfeed instance that *sends* cluster requests
// (tests/cluster_adapter.rs). Its namespace /events has one client of its
// own, in the room "node-room"; a server-side listener answers
// serverSideEmit("ping", n, ack) with {pong: n}. It prints one line per
// thing that happens, for the Rust test to wait on:
//   ready <socket id>            the client is connected (and in node-room)
//   event <name> <json args>     the client received an event
//   disconnected <reason>        the client was disconnected
// It stops when its stdin closes.
//
// Usage: REDIS_URL=redis://127.0.0.1:P node adapter_peer.mjs

import { io as connectClient } from "socket.io-client";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import http from "node:http";

const REDIS_URL = process.env.REDIS_URL;
if (!REDIS_URL) {
  console.error("REDIS_URL is required (redis://127.0.0.1:PORT)");
  process.exit(2);
}
const NSP = "/events";

const redis = async () => {
  const c = createClient({ url: REDIS_URL, socket: { reconnectStrategy: false, connectTimeout: 5000 } });
  c.on("error", (e) => console.error(`redis client error: ${e.message}`));
  await c.connect();
  return c;
};
const pub = await redis();
const sub = await redis();
const httpServer = http.createServer();
const io = new Server(httpServer, { adapter: createAdapter(pub, sub) });
const nsp = io.of(NSP);
nsp.on("connection", (socket) => socket.join("node-room"));
nsp.on("ping", (n, ack) => ack({ pong: n }));
await new Promise((res) => httpServer.listen(0, "127.0.0.1", res));

const client = connectClient(`http://127.0.0.1:${httpServer.address().port}${NSP}`, {
  transports: ["websocket"],
  forceNew: true,
  reconnection: false,
});
client.onAny((name, ...args) => console.log(`event ${name} ${JSON.stringify(args)}`));
client.on("disconnect", (reason) => console.log(`disconnected ${reason}`));
client.on("connect", () => {
  // The server-side socket joins node-room in its connection handler, before
  // the client is told it is connected.
  console.log(`ready ${client.id}`);
});

const stop = () => {
  client.close();
  io.close();
  pub.quit().catch(() => {});
  sub.quit().catch(() => {});
  process.exit(0);
};
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
