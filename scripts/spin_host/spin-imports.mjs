// Spin 3 host imports for components transpiled with jco, run under Node.
//
//   fermyon:spin/key-value@2.0.0   stores in a JSON file (values base64), one object per label
//   fermyon:spin/variables@2.0.0   --var name=value, a JSON file, SPIN_VARIABLE_<NAME> env
//   wasi:config/store              the same variables (Spin 3 exposes them both ways)
//   fermyon:spin/redis@2.0.0       a real Redis server, through a synchronous worker bridge
//   fermyon:spin/sqlite@2.0.0      SQLite files through sql.js (WebAssembly SQLite), written back after each change
//   everything else Spin offers     stubs that fail with an error naming the interface
//
// The file formats are shared with the Python host (spin_app/host.py), so both hosts can
// work on the same state directory.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { MessageChannel, Worker, receiveMessageOnPort } from "node:worker_threads";

const require = createRequire(import.meta.url);

function specErr(payload) {
  // jco turns a thrown object with a `payload` into the `err` case of the import's result
  const error = new Error(typeof payload === "object" && payload.tag ? payload.tag : String(payload));
  error.payload = payload;
  return error;
}

// ------------------------------------------------------------------ key-value

export function keyValue({ file, labels }) {
  let cache = null;
  let seen = null;

  function load() {
    let stat = null;
    try {
      stat = fs.statSync(file);
    } catch {
      stat = null;
    }
    const stamp = stat ? `${stat.mtimeMs}:${stat.size}` : "none";
    if (cache === null || stamp !== seen) {
      cache = stat ? JSON.parse(fs.readFileSync(file, "utf8") || "{}") : {};
      seen = stamp;
    }
    return cache;
  }

  function save() {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(cache));
    fs.renameSync(tmp, file);
    const stat = fs.statSync(file);
    seen = `${stat.mtimeMs}:${stat.size}`;
  }

  class Store {
    static open(label) {
      if (labels && !labels.includes(label)) throw specErr({ tag: "no-such-store" });
      const store = Object.create(Store.prototype);
      store.label = label;
      return store;
    }
    _data() {
      const all = load();
      return (all[this.label] ??= {});
    }
    get(key) {
      const v = this._data()[key];
      return v === undefined ? undefined : new Uint8Array(Buffer.from(v, "base64"));
    }
    set(key, value) {
      this._data()[key] = Buffer.from(value).toString("base64");
      save();
    }
    delete(key) {
      const data = this._data();
      if (key in data) {
        delete data[key];
        save();
      }
    }
    exists(key) {
      return key in this._data();
    }
    getKeys() {
      return Object.keys(this._data());
    }
  }
  return { Store };
}

// ------------------------------------------------------------------ variables

export function loadVariables({ vars = {}, varsFile = null, env = process.env }) {
  const out = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith("SPIN_VARIABLE_")) out[k.slice("SPIN_VARIABLE_".length).toLowerCase()] = v;
  }
  if (varsFile && fs.existsSync(varsFile)) Object.assign(out, JSON.parse(fs.readFileSync(varsFile, "utf8")));
  Object.assign(out, vars);
  return out;
}

export function variables(values) {
  const valid = /^[a-z0-9_]+$/;
  return {
    get(name) {
      if (!valid.test(name)) throw specErr({ tag: "invalid-name", val: `invalid variable name ${JSON.stringify(name)}` });
      if (!(name in values)) throw specErr({ tag: "undefined", val: `no variable for ${JSON.stringify(name)}` });
      return String(values[name]);
    },
  };
}

export function configStore(values) {
  return {
    get(key) {
      return key in values ? String(values[key]) : undefined;
    },
    getAll() {
      return Object.entries(values).map(([k, v]) => [k, String(v)]);
    },
  };
}

// ------------------------------------------------------------------ redis

export function redis({ timeoutMs = 10000 } = {}) {
  let bridge = null;

  function call(address, command, args = []) {
    if (bridge === null) {
      const { port1, port2 } = new MessageChannel();
      const flag = new SharedArrayBuffer(4);
      const worker = new Worker(new URL("./redis-worker.mjs", import.meta.url), {
        workerData: { port: port2, flag },
        transferList: [port2],
      });
      worker.unref();
      port1.unref?.();
      bridge = { port: port1, signal: new Int32Array(flag), worker };
    }
    Atomics.store(bridge.signal, 0, 0);
    bridge.port.postMessage({ address, command, args });
    const waited = Atomics.wait(bridge.signal, 0, 0, timeoutMs);
    if (waited === "timed-out") throw specErr({ tag: "other", val: `Redis ${command} timed out after ${timeoutMs} ms` });
    const reply = receiveMessageOnPort(bridge.port);
    if (!reply) throw specErr({ tag: "other", val: "no reply from the Redis bridge" });
    const msg = reply.message;
    if (msg.failure) throw specErr({ tag: "other", val: msg.failure });
    if (msg.ok && msg.ok.error) throw specErr({ tag: "other", val: msg.ok.error });
    return msg.ok;
  }

  function flatten(value, out) {
    if (value === null || value === undefined) out.push({ tag: "nil" });
    else if (typeof value === "bigint") out.push({ tag: "int64", val: value });
    else if (value instanceof Uint8Array) out.push({ tag: "binary", val: value });
    else if (Array.isArray(value)) value.forEach((v) => flatten(v, out));
    else if (value.status !== undefined) out.push({ tag: "status", val: value.status });
    else out.push({ tag: "nil" });
    return out;
  }

  const enc = (s) => Buffer.from(s, "utf8");

  class Connection {
    static open(address) {
      try {
        new URL(address);
      } catch {
        throw specErr({ tag: "invalid-address" });
      }
      call(address, "__OPEN__");
      const c = Object.create(Connection.prototype);
      c.address = address;
      return c;
    }
    publish(channel, payload) {
      call(this.address, "PUBLISH", [enc(channel), payload]);
    }
    get(key) {
      const v = call(this.address, "GET", [enc(key)]);
      return v === null ? undefined : v;
    }
    set(key, value) {
      call(this.address, "SET", [enc(key), value]);
    }
    incr(key) {
      return call(this.address, "INCR", [enc(key)]);
    }
    del(keys) {
      return Number(call(this.address, "DEL", keys.map(enc)));
    }
    sadd(key, values) {
      return Number(call(this.address, "SADD", [enc(key), ...values.map(enc)]));
    }
    smembers(key) {
      return call(this.address, "SMEMBERS", [enc(key)]).map((b) => Buffer.from(b).toString("utf8"));
    }
    srem(key, values) {
      return Number(call(this.address, "SREM", [enc(key), ...values.map(enc)]));
    }
    execute(command, args) {
      const raw = args.map((a) => (a.tag === "int64" ? enc(a.val.toString()) : a.val));
      return flatten(call(this.address, command, raw), []);
    }
  }
  return { Connection };
}

// ------------------------------------------------------------------ sqlite

export async function sqlite({ dir, databases = null }) {
  const initSqlJs = require("sql.js");
  const SQL = await initSqlJs();
  const open = new Map(); // name -> {db, file, seen}

  function fileFor(name) {
    // Spin's default database lives in .spin/sqlite_db.db; others by name
    return path.join(dir, name === "default" ? "sqlite_db.db" : `${name}.db`);
  }

  function stampOf(file) {
    try {
      const s = fs.statSync(file);
      return `${s.mtimeMs}:${s.size}`;
    } catch {
      return "none";
    }
  }

  function database(name) {
    let entry = open.get(name);
    const file = fileFor(name);
    const stamp = stampOf(file);
    if (!entry || entry.seen !== stamp) {
      // (re)load: another process (the Python host) may have written the file meanwhile
      entry?.db.close();
      const data = stamp === "none" ? undefined : fs.readFileSync(file);
      entry = { db: new SQL.Database(data), file, seen: stamp };
      open.set(name, entry);
    }
    return entry;
  }

  function persist(entry) {
    fs.mkdirSync(path.dirname(entry.file), { recursive: true });
    const tmp = `${entry.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, Buffer.from(entry.db.export()));
    fs.renameSync(tmp, entry.file);
    entry.seen = stampOf(entry.file);
  }

  function toJs(value) {
    switch (value.tag) {
      case "integer":
        return value.val >= BigInt(Number.MIN_SAFE_INTEGER) && value.val <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value.val) : value.val;
      case "real":
        return value.val;
      case "text":
        return value.val;
      case "blob":
        return value.val;
      default:
        return null;
    }
  }

  function fromJs(v) {
    if (v === null || v === undefined) return { tag: "null" };
    if (typeof v === "bigint") return { tag: "integer", val: v };
    if (typeof v === "number") return Number.isInteger(v) ? { tag: "integer", val: BigInt(v) } : { tag: "real", val: v };
    if (typeof v === "string") return { tag: "text", val: v };
    if (v instanceof Uint8Array) return { tag: "blob", val: v };
    return { tag: "text", val: String(v) };
  }

  class Connection {
    static open(name) {
      if (databases && !databases.includes(name)) throw specErr({ tag: "no-such-database" });
      const c = Object.create(Connection.prototype);
      c.name = name;
      return c;
    }
    execute(statement, parameters) {
      const entry = database(this.name);
      const db = entry.db;
      let stmt;
      try {
        stmt = db.prepare(statement);
        stmt.bind(parameters.map(toJs));
        const rows = [];
        let columns = stmt.getColumnNames();
        while (stmt.step()) {
          rows.push({ values: stmt.get(null, { useBigInt: true }).map(fromJs) });
        }
        columns = stmt.getColumnNames();
        const changed = db.getRowsModified() > 0 || !/^\s*(select|pragma\s+\w+\s*$|with\s)/i.test(statement);
        stmt.free();
        stmt = null;
        // sql.js's export() closes and reopens the database, which would end an open
        // transaction: write the file back only outside of BEGIN ... COMMIT/ROLLBACK.
        if (/^\s*begin\b/i.test(statement)) entry.inTx = true;
        else if (/^\s*(commit|end|rollback)\b/i.test(statement) && !/^\s*rollback\s+to\b/i.test(statement)) entry.inTx = false;
        if ((changed || entry.dirty) && !entry.inTx) {
          persist(entry);
          entry.dirty = false;
        } else if (changed) entry.dirty = true;
        return { columns, rows };
      } catch (err) {
        stmt?.free();
        if (err && err.payload) throw err;
        throw specErr({ tag: "io", val: String(err && err.message ? err.message : err) });
      }
    }
  }
  return { Connection };
}

// ------------------------------------------------------------------ stubs

export function unsupported(iface) {
  const fail = (what) => () => {
    throw specErr({ tag: "other", val: `${iface} (${what}) is not provided by the local Spin host` });
  };
  return new Proxy(
    {},
    {
      get(_target, prop) {
        if (typeof prop !== "string") return undefined;
        if (/^[A-Z]/.test(prop)) {
          // a resource class: any static or method call fails
          return new Proxy(class {}, { get: (_t, p) => (p === "prototype" ? {} : fail(`${prop}.${String(p)}`)) });
        }
        return fail(prop);
      },
    },
  );
}
