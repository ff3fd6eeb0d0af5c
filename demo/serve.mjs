// Serves the demo web page and the official socket.io-client bundle on
// http://127.0.0.1:8080, or on $PORT (0: a free port), and prints the address
// it really listens on (no other dependency than demo/node_modules).
//
//   NB_BACKEND_ALLOWED_ORIGINS=http://127.0.0.1:8080 cargo run --release   # the server
//   cd demo && npm ci && node serve.mjs                                     # this page
//
// The page talks to the event feed at http://127.0.0.1:3000 (change it in the form).

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const port = Number(process.env.PORT || 8080);
const files = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/socket.io.min.js": ["node_modules/socket.io-client/dist/socket.io.min.js", "text/javascript"],
};

const server = createServer(async (req, res) => {
  const file = files[new URL(req.url, "http://x").pathname];
  if (!file) {
    res.writeHead(404).end("not found");
    return;
  }
  try {
    const body = await readFile(join(here, file[0]));
    res.writeHead(200, { "Content-Type": file[1] }).end(body);
  } catch {
    res.writeHead(500).end("run `npm ci` in demo/ first");
  }
});
// The port is read back from the socket: with PORT=0 the system picks it, and
// whoever started this script (tests/demos.rs) learns it from this line.
server.listen(port, "127.0.0.1", () => console.log(`demo page on http://127.0.0.1:${server.address().port}`));
