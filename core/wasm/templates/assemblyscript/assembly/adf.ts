// The ActiveDataFlow guest side for AssemblyScript: the memory ABI (alloc/dealloc), a small
// JSON value with its parser and serializer, and the host functions of module "adf".
// No packages besides the compiler; the module imports nothing but "adf" (abort is routed to
// adfAbort by asconfig.json, which logs the message and traps).

// ------------------------------------------------------------------ memory ABI

/** The host asks for len bytes to write the input (or a host function's response) into. */
export function alloc(len: i32): i32 {
  const size: usize = len > 0 ? <usize>len : 1;
  return <i32>heap.alloc(size);
}

/** Frees what alloc returned (the host calls it for the input and the output when done). */
export function dealloc(ptr: i32, len: i32): void {
  if (ptr != 0) heap.free(<usize>ptr);
}

function pack(text: string): i64 {
  const bytes = String.UTF8.encode(text);
  const len = bytes.byteLength;
  const ptr = alloc(len);
  memory.copy(<usize>ptr, changetype<usize>(bytes), <usize>len);
  return (<i64>ptr << 32) | <i64>len;
}

function unpack(packed: i64): string {
  const ptr = <i32>(packed >>> 32);
  const len = <i32>(packed & 0xffffffff);
  if (ptr == 0) return "";
  const text = String.UTF8.decodeUnsafe(<usize>ptr, <usize>len);
  dealloc(ptr, len);
  return text;
}

/** Parses the input envelope at ptr/len, calls f and returns its result packed for the host. */
export function handle(ptr: i32, len: i32, f: (input: Value) => Value): i64 {
  const input = parse(String.UTF8.decodeUnsafe(<usize>ptr, <usize>len));
  return pack(f(input).toJSON());
}

/** Where asconfig.json sends `abort` (failed assertions, `throw`): log at level error, trap. */
export function adfAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  log(3, (message ? message : "abort") + " (" + (fileName ? fileName : "?") + ":" + line.toString() + ":" +
    column.toString() + ")");
  unreachable();
}

// ------------------------------------------------------------------ host functions

@external("adf", "log")
declare function hostLog(level: i32, ptr: i32, len: i32): void;
@external("adf", "get_context")
declare function hostGetContext(ptr: i32, len: i32): i64;
@external("adf", "set_context")
declare function hostSetContext(ptr: i32, len: i32): i64;
@external("adf", "http_request")
declare function hostHttpRequest(ptr: i32, len: i32): i64;
@external("adf", "db_query")
declare function hostDbQuery(ptr: i32, len: i32): i64;
@external("adf", "file_read")
declare function hostFileRead(ptr: i32, len: i32): i64;
@external("adf", "file_write")
declare function hostFileWrite(ptr: i32, len: i32): i64;

/** Logs message at level (0 debug, 1 info, 2 warning, 3 error). */
export function log(level: i32, message: string): void {
  const bytes = String.UTF8.encode(message);
  hostLog(level, <i32>changetype<usize>(bytes), bytes.byteLength);
}

function encode(request: Value): ArrayBuffer {
  return String.UTF8.encode(request.toJSON());
}

function at(bytes: ArrayBuffer): i32 {
  return <i32>changetype<usize>(bytes);
}

// Each host call returns the response object: {"ok": true, ...} or {"ok": false, "error": "..."};
// test it with isOk(response).

export function isOk(response: Value): bool {
  const ok = response.get("ok");
  return ok != null && ok.kind == Kind.Bool && ok.b;
}

/** The response's "value" is the run context's value at key (null when unset). */
export function getContext(key: string): Value {
  const r = encode(newObject().set("key", newString(key)));
  return parse(unpack(hostGetContext(at(r), r.byteLength)));
}

export function setContext(key: string, value: Value): Value {
  const r = encode(newObject().set("key", newString(key)).set("value", value));
  return parse(unpack(hostSetContext(at(r), r.byteLength)));
}

/** The response has "status", "headers" and "body". */
export function httpRequest(method: string, url: string, headers: Value, body: string): Value {
  const r = encode(newObject().set("method", newString(method)).set("url", newString(url))
    .set("headers", headers).set("body", newString(body)));
  return parse(unpack(hostHttpRequest(at(r), r.byteLength)));
}

/** The response has "columns" and "rows". */
export function dbQuery(connection: string, sql: string, params: Value): Value {
  const r = encode(newObject().set("connection", newString(connection)).set("sql", newString(sql))
    .set("params", params));
  return parse(unpack(hostDbQuery(at(r), r.byteLength)));
}

/** The response has "content". */
export function fileRead(path: string): Value {
  const r = encode(newObject().set("path", newString(path)));
  return parse(unpack(hostFileRead(at(r), r.byteLength)));
}

export function fileWrite(path: string, content: string): Value {
  const r = encode(newObject().set("path", newString(path)).set("content", newString(content)));
  return parse(unpack(hostFileWrite(at(r), r.byteLength)));
}

// ------------------------------------------------------------------ JSON

export enum Kind { Null, Bool, Num, Str, Arr, Obj }

/** A JSON value; objects keep their keys in order. */
export class Value {
  kind: Kind = Kind.Null;
  b: bool = false;
  n: f64 = 0;
  s: string = "";
  /** the items of an array, or the values of an object */
  items: Array<Value> = [];
  /** the keys of an object, aligned with items */
  keys: Array<string> = [];

  get isNull(): bool { return this.kind == Kind.Null; }

  /** The value at key, or null when absent (or this is not an object). */
  get(key: string): Value | null {
    const i = this.keys.indexOf(key);
    return i < 0 ? null : this.items[i];
  }

  /** true when key is present and not null */
  has(key: string): bool {
    const v = this.get(key);
    return v != null && v.kind != Kind.Null;
  }

  /** true when key holds a number */
  hasNumber(key: string): bool {
    const v = this.get(key);
    return v != null && v.kind == Kind.Num;
  }

  /** The number at key, or fallback. */
  num(key: string, fallback: f64 = NaN): f64 {
    const v = this.get(key);
    return v != null && v.kind == Kind.Num ? v.n : fallback;
  }

  /** Sets key (replacing an existing entry) and returns this, for chaining. */
  set(key: string, value: Value): Value {
    if (this.kind != Kind.Obj) return this;
    const i = this.keys.indexOf(key);
    if (i >= 0) this.items[i] = value;
    else { this.keys.push(key); this.items.push(value); }
    return this;
  }

  /** Removes key and returns its value (a null value when absent). */
  take(key: string): Value {
    const i = this.keys.indexOf(key);
    if (i < 0) return newNull();
    const v = this.items[i];
    this.keys.splice(i, 1);
    this.items.splice(i, 1);
    return v;
  }

  /** Appends to an array and returns this. */
  push(value: Value): Value {
    if (this.kind == Kind.Arr) this.items.push(value);
    return this;
  }

  toJSON(): string {
    const out = new Array<string>();
    write(this, out);
    return out.join("");
  }
}

export function newNull(): Value { return new Value(); }
export function newBool(b: bool): Value { const v = new Value(); v.kind = Kind.Bool; v.b = b; return v; }
export function newNumber(n: f64): Value { const v = new Value(); v.kind = Kind.Num; v.n = n; return v; }
export function newString(s: string): Value { const v = new Value(); v.kind = Kind.Str; v.s = s; return v; }
export function newArray(): Value { const v = new Value(); v.kind = Kind.Arr; return v; }
export function newObject(): Value { const v = new Value(); v.kind = Kind.Obj; return v; }

/** An array of strings, e.g. a `next` entry: strings(["big"]). */
export function strings(list: string[]): Value {
  const v = newArray();
  for (let i = 0; i < list.length; i++) v.push(newString(list[i]));
  return v;
}

/** A number as JSON writes it: integers without ".0", null for NaN and infinities. */
export function formatNumber(n: f64): string {
  if (!isFinite(n)) return "null";
  if (n == Math.floor(n) && Math.abs(n) < 1e17) return (<i64>n).toString();
  return n.toString();
}

const HEX = "0123456789abcdef";

function writeString(s: string, out: Array<string>): void {
  out.push("\"");
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c != 0x22 && c != 0x5c) continue;
    if (i > start) out.push(s.substring(start, i));
    if (c == 0x22) out.push("\\\"");
    else if (c == 0x5c) out.push("\\\\");
    else if (c == 0x0a) out.push("\\n");
    else if (c == 0x0d) out.push("\\r");
    else if (c == 0x09) out.push("\\t");
    else out.push("\\u00" + HEX.charAt(c >> 4) + HEX.charAt(c & 15));
    start = i + 1;
  }
  if (start < s.length) out.push(s.substring(start));
  out.push("\"");
}

function write(v: Value, out: Array<string>): void {
  switch (v.kind) {
    case Kind.Null: out.push("null"); break;
    case Kind.Bool: out.push(v.b ? "true" : "false"); break;
    case Kind.Num: out.push(formatNumber(v.n)); break;
    case Kind.Str: writeString(v.s, out); break;
    case Kind.Arr: {
      out.push("[");
      for (let i = 0; i < v.items.length; i++) {
        if (i > 0) out.push(",");
        write(v.items[i], out);
      }
      out.push("]");
      break;
    }
    default: {
      out.push("{");
      for (let i = 0; i < v.items.length; i++) {
        if (i > 0) out.push(",");
        writeString(v.keys[i], out);
        out.push(":");
        write(v.items[i], out);
      }
      out.push("}");
    }
  }
}

/** Parses JSON text; invalid text aborts (logged at level error, then a trap). */
export function parse(text: string): Value {
  const p = new Parser(text);
  const v = p.value();
  p.ws();
  if (p.i != text.length) p.fail("trailing data");
  return v;
}

class Parser {
  i: i32 = 0;
  constructor(public s: string) {}

  fail(what: string): void {
    throw new Error("invalid JSON: " + what + " at " + this.i.toString());
  }

  ws(): void {
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.i++;
    }
  }

  word(w: string, v: Value): Value {
    if (this.s.substr(this.i, w.length) != w) this.fail("unexpected token");
    this.i += w.length;
    return v;
  }

  value(): Value {
    this.ws();
    if (this.i >= this.s.length) this.fail("unexpected end");
    const c = this.s.charCodeAt(this.i);
    if (c == 0x6e) return this.word("null", newNull());
    if (c == 0x74) return this.word("true", newBool(true));
    if (c == 0x66) return this.word("false", newBool(false));
    if (c == 0x22) return newString(this.string());
    if (c == 0x5b) {
      const a = newArray();
      this.i++;
      this.ws();
      if (this.s.charCodeAt(this.i) == 0x5d) { this.i++; return a; }
      while (true) {
        a.items.push(this.value());
        this.ws();
        const d = this.s.charCodeAt(this.i++);
        if (d == 0x5d) return a;
        if (d != 0x2c) this.fail("expected ',' or ']'");
      }
    }
    if (c == 0x7b) {
      const o = newObject();
      this.i++;
      this.ws();
      if (this.s.charCodeAt(this.i) == 0x7d) { this.i++; return o; }
      while (true) {
        this.ws();
        if (this.s.charCodeAt(this.i) != 0x22) this.fail("expected a key");
        const key = this.string();
        this.ws();
        if (this.s.charCodeAt(this.i++) != 0x3a) this.fail("expected ':'");
        o.keys.push(key);
        o.items.push(this.value());
        this.ws();
        const d = this.s.charCodeAt(this.i++);
        if (d == 0x7d) return o;
        if (d != 0x2c) this.fail("expected ',' or '}'");
      }
    }
    const start = this.i;
    while (this.i < this.s.length) {
      const d = this.s.charCodeAt(this.i);
      if (!((d >= 0x30 && d <= 0x39) || d == 0x2d || d == 0x2b || d == 0x2e || d == 0x65 || d == 0x45)) break;
      this.i++;
    }
    if (this.i == start) this.fail("unexpected character");
    const n = parseFloat(this.s.substring(start, this.i));
    if (isNaN(n)) this.fail("invalid number");
    return newNumber(n);
  }

  string(): string {
    this.i++; // the opening quote
    const parts = new Array<string>();
    let start = this.i;
    while (true) {
      if (this.i >= this.s.length) this.fail("unterminated string");
      const c = this.s.charCodeAt(this.i);
      if (c == 0x22) break;
      if (c != 0x5c) { this.i++; continue; }
      if (this.i > start) parts.push(this.s.substring(start, this.i));
      const e = this.s.charCodeAt(this.i + 1);
      this.i += 2;
      if (e == 0x75) {
        const code = parseInt(this.s.substr(this.i, 4), 16);
        if (this.s.length < this.i + 4 || isNaN(code)) this.fail("invalid \\u escape");
        parts.push(String.fromCharCode(<i32>code)); // surrogate pairs join up in UTF-16
        this.i += 4;
      } else if (e == 0x6e) parts.push("\n");
      else if (e == 0x74) parts.push("\t");
      else if (e == 0x72) parts.push("\r");
      else if (e == 0x62) parts.push("\b");
      else if (e == 0x66) parts.push("\f");
      else if (e == 0x22 || e == 0x5c || e == 0x2f) parts.push(String.fromCharCode(e));
      else this.fail("invalid escape");
      start = this.i;
    }
    if (this.i > start) parts.push(this.s.substring(start, this.i));
    this.i++; // the closing quote
    return parts.join("");
  }
}
