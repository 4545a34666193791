#!/usr/bin/env node
// Local Spin host for HTTP components (`wasi:http/incoming-handler`), for tests and for
// machines without the spin CLI.
//
//   node scripts/spin_host/serve.mjs http.wasm --port 3000 [options]
//   (or: python -m active_data_flow.spin_app.host serve http.wasm --port 3000)
//
// The component is transpiled with jco (cached by content hash), served with
// preview2-shim's HTTP server, and given the Spin imports from spin-imports.mjs:
// key-value (JSON file), variables, Redis (real server), SQLite (sql.js). Like Spin, every
// request gets a fresh component instance unless --reuse-instance is given.
//
// Options:
//   --port N                 port (default 3000; 0 picks a free one)
//   --host ADDR              address (default 127.0.0.1)
//   --state-dir DIR          key-value and SQLite files (default .spin)
//   --var name=value         a Spin variable (repeatable); also SPIN_VARIABLE_<NAME> env
//   --vars-file FILE         Spin variables from a JSON object
//   --env NAME=value         an environment variable of the component (repeatable)
//   --dir HOST[:GUEST]       mount a host directory (like the manifest's `files`; GUEST default /)
//   --kv-stores a,b          allowed key-value labels (default: any)
//   --reuse-instance         keep one instance for all requests (faster, not Spin's semantics)
//   --cache-dir DIR          where transpiled components are kept (default <state-dir>/jco)
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import * as shim from "@bytecodealliance/preview2-shim";
import { HTTPServer } from "@bytecodealliance/preview2-shim/http";
import { transpile } from "@bytecodealliance/jco";

import { configStore, keyValue, loadVariables, redis, sqlite, unsupported, variables } from "./spin-imports.mjs";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: "string", default: "3000" },
    host: { type: "string", default: "127.0.0.1" },
    "state-dir": { type: "string", default: ".spin" },
    var: { type: "string", multiple: true, default: [] },
    "vars-file": { type: "string" },
    env: { type: "string", multiple: true, default: [] },
    dir: { type: "string", multiple: true, default: [] },
    "kv-stores": { type: "string" },
    "reuse-instance": { type: "boolean", default: false },
    "cache-dir": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (opts.help || positionals.length !== 1) {
  console.error("usage: serve.mjs COMPONENT.wasm [--port 3000] [--host 127.0.0.1] [--state-dir .spin] [--var k=v] [--env K=V] [--dir HOST[:GUEST]] [--reuse-instance]");
  process.exit(opts.help ? 0 : 2);
}

const methodName = (m) => (m && m.tag ? (m.tag === "other" ? m.val : m.tag.toUpperCase()) : String(m));
const pairs = (list) => Object.fromEntries(list.map((s) => [s.slice(0, s.indexOf("=")), s.slice(s.indexOf("=") + 1)]));

const GLUE = "memory-hook-1";

// jco keeps the component's linear memory in a local of its glue; hand each instance's to
// the host so that the request log line can give the memory size (Spin logs no such thing,
// and a Python guest cannot read its own memory size).
export function exposeMemory(js) {
  const hooked = js.replace(/\n(\s*)memory0 = (exports\d+)\.memory;/,
    (line, indent, exp) => `\n${indent}memory0 = ${exp}.memory;\n${indent}globalThis.__adfMemory = memory0;`);
  if (hooked === js) console.error(JSON.stringify({ level: "WARNING", event: "no memory hook: memory size not logged" }));
  return hooked;
}

export async function transpiled(wasmPath, cacheRoot) {
  const bytes = fs.readFileSync(wasmPath);
  // GLUE names what this host adds to jco's output (see exposeMemory); part of the cache key.
  const digest = crypto.createHash("sha256").update(bytes).update(GLUE).digest("hex").slice(0, 24);
  const dir = path.join(cacheRoot, digest);
  const entry = path.join(dir, "component.js");
  if (!fs.existsSync(entry)) {
    const { files } = await transpile(bytes, {
      name: "component",
      instantiation: { tag: "sync" },
      noTypescript: true,
      quiet: true,
    });
    const tmp = `${dir}.${process.pid}.tmp`;
    files["component.js"] = exposeMemory(Buffer.from(files["component.js"]).toString("utf8"));
    for (const [name, data] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(tmp, name)), { recursive: true });
      fs.writeFileSync(path.join(tmp, name), data);
    }
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  }
  return { dir, entry };
}

async function main() {
  const wasm = path.resolve(positionals[0]);
  const stateDir = path.resolve(opts["state-dir"]);
  fs.mkdirSync(stateDir, { recursive: true });
  const cacheDir = path.resolve(opts["cache-dir"] ?? path.join(stateDir, "jco"));
  const t0 = performance.now();
  const { dir, entry } = await transpiled(wasm, cacheDir);
  const { instantiate } = await import(pathToFileURL(entry).href);
  const modules = new Map();
  const getCoreModule = (name) => {
    let m = modules.get(name);
    if (!m) {
      m = new WebAssembly.Module(fs.readFileSync(path.join(dir, name)));
      modules.set(name, m);
    }
    return m;
  };

  // WASI: the component sees only the environment and directories it is given (as in Spin)
  shim.cli._setEnv(pairs(opts.env));
  shim.cli._setArgs(["spin-component"]);
  const preopens = {};
  for (const spec of opts.dir) {
    const [host, guest = "/"] = spec.split(":");
    preopens[guest] = path.resolve(host);
  }
  shim.filesystem._setPreopens(preopens);

  const vars = loadVariables({ vars: pairs(opts.var), varsFile: opts["vars-file"] });
  const wasiImports = {
    "wasi:cli/environment": shim.cli.environment,
    "wasi:cli/exit": shim.cli.exit,
    "wasi:cli/stderr": shim.cli.stderr,
    "wasi:cli/stdin": shim.cli.stdin,
    "wasi:cli/stdout": shim.cli.stdout,
    "wasi:cli/terminal-input": shim.cli.terminalInput,
    "wasi:cli/terminal-output": shim.cli.terminalOutput,
    "wasi:cli/terminal-stderr": shim.cli.terminalStderr,
    "wasi:cli/terminal-stdin": shim.cli.terminalStdin,
    "wasi:cli/terminal-stdout": shim.cli.terminalStdout,
    "wasi:clocks/monotonic-clock": shim.clocks.monotonicClock,
    "wasi:clocks/wall-clock": shim.clocks.wallClock,
    "wasi:filesystem/preopens": shim.filesystem.preopens,
    "wasi:filesystem/types": shim.filesystem.types,
    "wasi:http/outgoing-handler": shim.http.outgoingHandler,
    "wasi:http/types": shim.http.types,
    "wasi:io/error": shim.io.error,
    "wasi:io/poll": shim.io.poll,
    "wasi:io/streams": shim.io.streams,
    "wasi:random/insecure-seed": shim.random.insecureSeed,
    "wasi:random/insecure": shim.random.insecure,
    "wasi:random/random": shim.random.random,
    "wasi:sockets/instance-network": shim.sockets.instanceNetwork,
    "wasi:sockets/ip-name-lookup": shim.sockets.ipNameLookup,
    "wasi:sockets/network": shim.sockets.network,
    "wasi:sockets/tcp-create-socket": shim.sockets.tcpCreateSocket,
    "wasi:sockets/tcp": shim.sockets.tcp,
    "wasi:sockets/udp-create-socket": shim.sockets.udpCreateSocket,
    "wasi:sockets/udp": shim.sockets.udp,
  };
  const spinImports = {
    "fermyon:spin/key-value": keyValue({
      file: path.join(stateDir, "key_value.json"),
      labels: opts["kv-stores"] ? opts["kv-stores"].split(",") : null,
    }),
    "fermyon:spin/variables": variables(vars),
    "wasi:config/store": configStore(vars),
    "fermyon:spin/redis": redis(),
    "fermyon:spin/sqlite": await sqlite({ dir: stateDir }),
  };
  const imports = new Proxy(
    { ...wasiImports, ...spinImports },
    { get: (target, key) => (key in target ? target[key] : unsupported(String(key))) },
  );

  const newInstance = () => instantiate(getCoreModule, imports);
  const first = newInstance();
  const handlerOf = (inst) => inst.incomingHandler ?? inst["wasi:http/incoming-handler@0.2.0"];
  if (!handlerOf(first)) {
    console.error(`${wasm} does not export wasi:http/incoming-handler; it is not an HTTP component`);
    process.exit(2);
  }
  let reuse = first;
  const { Fields, OutgoingResponse, OutgoingBody, ResponseOutparam } = shim.http.types;
  const trapAnswer = (responseOut, err) => {
    // The instance trapped (out of memory, a panic...): answer 500 if the guest had not
    // answered yet, and never take the host down. The instance is not used again.
    const body = new TextEncoder().encode(JSON.stringify({
      error: `the component trapped: ${String(err && err.message ? err.message : err)}`,
      error_id: crypto.randomBytes(6).toString("hex"),
    }));
    try {
      const response = new OutgoingResponse(Fields.fromList([
        ["content-type", new TextEncoder().encode("application/json")],
        ["content-length", new TextEncoder().encode(String(body.length))],
      ]));
      response.setStatusCode(500);
      const outgoing = response.body();
      ResponseOutparam.set(responseOut, { tag: "ok", val: response });
      const stream = outgoing.write();
      stream.blockingWriteAndFlush(body);
      stream[Symbol.dispose]?.();
      OutgoingBody.finish(outgoing);
    } catch {
      // the guest had already started its answer: nothing more to send
    }
  };
  // What the guest answered (status, x-request-id), seen as it sets the response.
  let answered = null;
  const setResponse = ResponseOutparam.set;
  ResponseOutparam.set = function (param, response) {
    if (response && response.tag === "ok") {
      const headers = Object.fromEntries(response.val.headers().entries().map(([k, v]) => [k.toLowerCase(), new TextDecoder().decode(v)]));
      answered = { status: response.val.statusCode(), requestId: headers["x-request-id"] ?? null };
    }
    return setResponse.call(this, param, response);
  };
  const logRequest = (request, started, extra) => {
    // One JSON line per request from the host: the guest's own lines carry the run, this one
    // the wasm memory size the instance ended with.
    const memory = globalThis.__adfMemory;
    console.log(JSON.stringify({
      ts: new Date().toISOString(), level: extra.error ? "error" : "info", logger: "spin.host", msg: "request",
      request_id: answered?.requestId ?? null, method: methodName(request.method()), path: request.pathWithQuery(),
      status: answered?.status ?? null, duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
      memory_bytes: memory ? memory.buffer.byteLength : null, instance: opts["reuse-instance"] ? "reused" : "fresh",
      ...extra,
    }));
  };
  const handler = {
    handle(request, responseOut) {
      const started = performance.now();
      answered = null;
      const inst = opts["reuse-instance"] ? reuse : (reuse ?? newInstance());
      reuse = opts["reuse-instance"] ? reuse : null; // the first request may use the prewarmed instance
      const method = request.method();
      const path = request.pathWithQuery();
      const seen = { method: () => method, pathWithQuery: () => path };
      try {
        handlerOf(inst).handle(request, responseOut);
        logRequest(seen, started, {});
      } catch (err) {
        const error = String(err && err.stack ? err.stack : err);
        console.error(JSON.stringify({ level: "ERROR", event: "trap", error }));
        if (opts["reuse-instance"]) reuse = newInstance();
        trapAnswer(responseOut, err);
        logRequest(seen, started, { error: `the component trapped: ${String(err && err.message ? err.message : err)}`, status: answered?.status ?? 500 });
      }
    },
  };
  const server = new HTTPServer(handler);
  server.listen(Number(opts.port), opts.host);
  const { port } = server.address();
  const ready = Math.round(performance.now() - t0);
  console.log(JSON.stringify({ event: "listening", url: `http://${opts.host}:${port}`, component: wasm, ready_ms: ready }));
  const stop = () => {
    server.stop();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
