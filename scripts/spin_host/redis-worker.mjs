// The Redis side of the synchronous bridge used by spin-imports.mjs.
//
// A component calls `fermyon:spin/redis` synchronously, while Node sockets are
// asynchronous. The main thread posts a request on a MessagePort and blocks with
// Atomics.wait; this worker runs the command over a plain RESP connection, posts the
// reply and wakes the main thread, which reads it with receiveMessageOnPort.
import net from "node:net";
import { workerData } from "node:worker_threads";

const { port, flag } = workerData;
const signal = new Int32Array(flag);
const connections = new Map(); // address -> Connection

function encode(command, args) {
  const parts = [Buffer.from(command, "utf8"), ...args.map((a) => (typeof a === "bigint" ? Buffer.from(a.toString()) : Buffer.from(a)))];
  const chunks = [Buffer.from(`*${parts.length}\r\n`)];
  for (const part of parts) {
    chunks.push(Buffer.from(`$${part.length}\r\n`), part, Buffer.from("\r\n"));
  }
  return Buffer.concat(chunks);
}

// Parse one RESP reply from buf at offset; returns [value, nextOffset] or null when incomplete.
function parse(buf, offset) {
  const end = buf.indexOf("\r\n", offset);
  if (end < 0) return null;
  const type = String.fromCharCode(buf[offset]);
  const line = buf.toString("utf8", offset + 1, end);
  const next = end + 2;
  switch (type) {
    case "+":
      return [{ status: line }, next];
    case "-":
      return [{ error: line }, next];
    case ":":
      return [BigInt(line), next];
    case "$": {
      const n = Number(line);
      if (n < 0) return [null, next];
      if (buf.length < next + n + 2) return null;
      return [new Uint8Array(buf.subarray(next, next + n)), next + n + 2];
    }
    case "*": {
      const n = Number(line);
      if (n < 0) return [null, next];
      const items = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const item = parse(buf, at);
        if (item === null) return null;
        items.push(item[0]);
        at = item[1];
      }
      return [items, at];
    }
    default:
      return [{ error: `unexpected RESP type ${JSON.stringify(type)}` }, next];
  }
}

class Connection {
  constructor(address) {
    const url = new URL(address);
    if (url.protocol !== "redis:") throw new Error(`unsupported Redis address ${address} (redis://host:port[/db])`);
    this.host = url.hostname || "127.0.0.1";
    this.port = Number(url.port || 6379);
    this.password = url.password ? decodeURIComponent(url.password) : null;
    this.username = url.username ? decodeURIComponent(url.username) : null;
    this.db = url.pathname && url.pathname.length > 1 ? url.pathname.slice(1) : null;
    this.buffer = Buffer.alloc(0);
    this.waiting = [];
    this.ready = null;
  }

  async open() {
    if (this.ready) return this.ready;
    this.ready = new Promise((resolve, reject) => {
      this.socket = net.createConnection({ host: this.host, port: this.port }, () => resolve());
      this.socket.setNoDelay(true);
      this.socket.once("error", (err) => {
        reject(err);
        this.fail(err);
      });
      this.socket.on("data", (data) => this.onData(data));
      this.socket.on("close", () => this.fail(new Error("connection closed")));
    });
    await this.ready;
    if (this.password !== null) {
      const args = this.username ? [this.username, this.password] : [this.password];
      const r = await this.send("AUTH", args.map((a) => Buffer.from(a)));
      if (r && r.error) throw new Error(r.error);
    }
    if (this.db !== null) {
      const r = await this.send("SELECT", [Buffer.from(this.db)]);
      if (r && r.error) throw new Error(r.error);
    }
    return this.ready;
  }

  fail(err) {
    connections.delete(this.key);
    for (const w of this.waiting.splice(0)) w.reject(err);
  }

  onData(data) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, data]) : data;
    while (this.waiting.length) {
      const parsed = parse(this.buffer, 0);
      if (parsed === null) break;
      this.buffer = this.buffer.subarray(parsed[1]);
      this.waiting.shift().resolve(parsed[0]);
    }
  }

  send(command, args) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(encode(command, args));
    });
  }
}

async function run(request) {
  const { address, command, args } = request;
  let conn = connections.get(address);
  if (!conn) {
    conn = new Connection(address);
    conn.key = address;
    connections.set(address, conn);
  }
  await conn.open();
  if (command === "__OPEN__") return { ok: true };
  return { ok: await conn.send(command, args) };
}

port.on("message", async (request) => {
  let reply;
  try {
    reply = await run(request);
  } catch (err) {
    reply = { failure: String(err && err.message ? err.message : err) };
  }
  port.postMessage(reply);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
});
