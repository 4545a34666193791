//! The ActiveDataFlow guest side: the memory ABI (`alloc`/`dealloc`), a small JSON value with
//! its parser and serializer, and the host functions imported from module `adf`.
//! Standard library only (no crates), so it builds with a plain `rustc`.
#![allow(dead_code)]

use std::alloc::{self, Layout};
use std::fmt::Write as _;

// ------------------------------------------------------------------ memory ABI

fn layout(len: i32) -> Layout {
    Layout::from_size_align((len.max(1)) as usize, 1).expect("allocation size")
}

/// The host asks for `len` bytes to write the input (or a host function's response) into.
#[no_mangle]
pub extern "C" fn alloc(len: i32) -> i32 {
    unsafe { alloc::alloc(layout(len)) as i32 }
}

/// Frees what `alloc` returned (the host calls it for the input and the output when done).
#[no_mangle]
pub extern "C" fn dealloc(ptr: i32, len: i32) {
    if ptr != 0 {
        unsafe { alloc::dealloc(ptr as *mut u8, layout(len)) }
    }
}

/// Copies `bytes` into a buffer from `alloc` and packs it as `(ptr << 32) | len`.
fn pack(bytes: &[u8]) -> i64 {
    let ptr = alloc(bytes.len() as i32);
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr as *mut u8, bytes.len()) };
    ((ptr as u32 as i64) << 32) | bytes.len() as i64
}

/// Reads a packed `(ptr << 32) | len` buffer the host allocated for us, then frees it.
fn unpack(packed: i64) -> Vec<u8> {
    let (ptr, len) = ((packed >> 32) as u32 as i32, packed as u32 as i32);
    if ptr == 0 {
        return Vec::new();
    }
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) }.to_vec();
    dealloc(ptr, len);
    bytes
}

/// Runs `f` on the parsed input envelope and returns its result packed for the host. A panic
/// is logged at level error (the host sees the message) and then traps.
pub fn handle(ptr: i32, len: i32, f: impl FnOnce(Value) -> Value) -> i64 {
    std::panic::set_hook(Box::new(|info| log(3, &info.to_string())));
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
    let input = match Value::parse(bytes) {
        Ok(v) => v,
        Err(e) => panic!("invalid input JSON: {}", e),
    };
    pack(f(input).to_json().as_bytes())
}

// ------------------------------------------------------------------ host functions

#[link(wasm_import_module = "adf")]
extern "C" {
    #[link_name = "log"]
    fn host_log(level: i32, ptr: i32, len: i32);
    #[link_name = "get_context"]
    fn host_get_context(ptr: i32, len: i32) -> i64;
    #[link_name = "set_context"]
    fn host_set_context(ptr: i32, len: i32) -> i64;
    #[link_name = "http_request"]
    fn host_http_request(ptr: i32, len: i32) -> i64;
    #[link_name = "db_query"]
    fn host_db_query(ptr: i32, len: i32) -> i64;
    #[link_name = "file_read"]
    fn host_file_read(ptr: i32, len: i32) -> i64;
    #[link_name = "file_write"]
    fn host_file_write(ptr: i32, len: i32) -> i64;
}

/// Logs `message` at `level` (0 debug, 1 info, 2 warning, 3 error).
pub fn log(level: i32, message: &str) {
    unsafe { host_log(level, message.as_ptr() as i32, message.len() as i32) }
}
pub fn debug(message: &str) { log(0, message) }
pub fn info(message: &str) { log(1, message) }
pub fn warn(message: &str) { log(2, message) }
pub fn error(message: &str) { log(3, message) }

/// Sends a JSON request to a host function; `Ok(response)` when it answered `"ok": true`,
/// else `Err(its "error")` (e.g. `"permission denied: ..."`).
fn call(f: unsafe extern "C" fn(i32, i32) -> i64, request: Value) -> Result<Value, String> {
    let text = request.to_json();
    let packed = unsafe { f(text.as_ptr() as i32, text.len() as i32) };
    let response = Value::parse(&unpack(packed))?;
    if response.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(response)
    } else {
        Err(response.get("error").and_then(Value::as_str).unwrap_or("host call failed").to_string())
    }
}

/// The run context's value at `key` (`Null` when unset).
pub fn get_context(key: &str) -> Result<Value, String> {
    call(host_get_context, Value::object().with("key", key)).map(|mut r| r.take("value"))
}

/// Stores `value` at `key` in the run context.
pub fn set_context(key: &str, value: Value) -> Result<(), String> {
    call(host_set_context, Value::object().with("key", key).with("value", value)).map(|_| ())
}

/// An HTTP request; the response object has `status`, `headers` and `body`.
pub fn http_request(method: &str, url: &str, headers: Value, body: &str) -> Result<Value, String> {
    let request = Value::object().with("method", method).with("url", url).with("headers", headers).with("body", body);
    call(host_http_request, request)
}

/// A SQL query on a named connection; the response object has `columns` and `rows`.
pub fn db_query(connection: &str, sql: &str, params: Vec<Value>) -> Result<Value, String> {
    call(host_db_query, Value::object().with("connection", connection).with("sql", sql).with("params", params))
}

/// The text of a file the module may read.
pub fn file_read(path: &str) -> Result<String, String> {
    call(host_file_read, Value::object().with("path", path))
        .map(|r| r.get("content").and_then(Value::as_str).unwrap_or("").to_string())
}

/// Writes `content` to a file the module may write.
pub fn file_write(path: &str, content: &str) -> Result<(), String> {
    call(host_file_write, Value::object().with("path", path).with("content", content)).map(|_| ())
}

// ------------------------------------------------------------------ JSON

/// A JSON value; objects keep their keys in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>),
}

impl Value {
    pub fn object() -> Value { Value::Obj(Vec::new()) }

    /// `self` with `key` set to `value` (for building objects in one expression).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Value {
        self.set(key, value);
        self
    }

    /// Sets `key` (replacing an existing entry); does nothing when `self` is not an object.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        if let Value::Obj(entries) = self {
            let value = value.into();
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key.to_string(), value)),
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Removes `key` and returns its value (`Null` when absent).
    pub fn take(&mut self, key: &str) -> Value {
        match self {
            Value::Obj(entries) => match entries.iter().position(|(k, _)| k == key) {
                Some(i) => entries.remove(i).1,
                None => Value::Null,
            },
            _ => Value::Null,
        }
    }

    /// The number at `key`, when there is one.
    pub fn num(&self, key: &str) -> Option<f64> { self.get(key).and_then(Value::as_f64) }

    pub fn is_null(&self) -> bool { matches!(self, Value::Null) }
    pub fn as_bool(&self) -> Option<bool> { if let Value::Bool(b) = self { Some(*b) } else { None } }
    pub fn as_f64(&self) -> Option<f64> { if let Value::Num(n) = self { Some(*n) } else { None } }
    pub fn as_str(&self) -> Option<&str> { if let Value::Str(s) = self { Some(s) } else { None } }
    pub fn as_array(&self) -> Option<&Vec<Value>> { if let Value::Arr(a) = self { Some(a) } else { None } }

    /// The items of an array (empty for anything else).
    pub fn into_array(self) -> Vec<Value> { if let Value::Arr(a) = self { a } else { Vec::new() } }

    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            // integers without ".0"; others the shortest text that reads back the same
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e17 => { let _ = write!(out, "{}", n); }
            Value::Num(n) if n.is_finite() => { let _ = write!(out, "{:?}", n); }
            Value::Num(_) => out.push_str("null"),
            Value::Str(s) => write_str(s, out),
            Value::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 { out.push(','); }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Obj(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 { out.push(','); }
                    write_str(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    pub fn parse(text: &[u8]) -> Result<Value, String> {
        let mut p = Parser { s: text, i: 0 };
        let v = p.value()?;
        p.ws();
        if p.i != text.len() { return Err(format!("trailing data at byte {}", p.i)); }
        Ok(v)
    }
}

impl From<f64> for Value { fn from(n: f64) -> Value { Value::Num(n) } }
impl From<i64> for Value { fn from(n: i64) -> Value { Value::Num(n as f64) } }
impl From<usize> for Value { fn from(n: usize) -> Value { Value::Num(n as f64) } }
impl From<bool> for Value { fn from(b: bool) -> Value { Value::Bool(b) } }
impl From<&str> for Value { fn from(s: &str) -> Value { Value::Str(s.to_string()) } }
impl From<String> for Value { fn from(s: String) -> Value { Value::Str(s) } }
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Value { Value::Arr(items.into_iter().map(Into::into).collect()) }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value { v.map_or(Value::Null, Into::into) }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => { let _ = write!(out, "\\u{:04x}", c as u32); }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') { self.i += 1; }
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> { Err(format!("{} at byte {}", what, self.i)) }

    fn eat(&mut self, word: &str, v: Value) -> Result<Value, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            self.fail("unexpected token")
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        match self.s.get(self.i) {
            None => self.fail("unexpected end"),
            Some(b'n') => self.eat("null", Value::Null),
            Some(b't') => self.eat("true", Value::Bool(true)),
            Some(b'f') => self.eat("false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') { self.i += 1; return Ok(Value::Arr(items)); }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => { self.i += 1; return Ok(Value::Arr(items)); }
                        _ => return self.fail("expected ',' or ']'"),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') { self.i += 1; return Ok(Value::Obj(entries)); }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') { return self.fail("expected a key"); }
                    let key = self.string()?;
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') { return self.fail("expected ':'"); }
                    self.i += 1;
                    entries.push((key, self.value()?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => { self.i += 1; return Ok(Value::Obj(entries)); }
                        _ => return self.fail("expected ',' or '}'"),
                    }
                }
            }
            Some(_) => self.number(),
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        match text.parse::<f64>() {
            Ok(n) if !text.is_empty() => Ok(Value::Num(n)),
            _ => { self.i = start; self.fail("invalid number") }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.s.get(self.i..self.i + 4).and_then(|d| std::str::from_utf8(d).ok());
        match digits.and_then(|d| u32::from_str_radix(d, 16).ok()) {
            Some(n) => { self.i += 4; Ok(n) }
            None => self.fail("invalid \\u escape"),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // the opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return self.fail("unterminated string"),
                Some(b'"') => { self.i += 1; break; }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.s.get(self.i) { Some(c) => *c, None => return self.fail("bad escape") };
                    self.i += 1;
                    let ch = match c {
                        b'"' => '"', b'\\' => '\\', b'/' => '/', b'b' => '\u{8}', b'f' => '\u{c}',
                        b'n' => '\n', b'r' => '\r', b't' => '\t',
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) && self.s[self.i..].starts_with(b"\\u") {
                                self.i += 2;
                                let low = self.hex4()?;
                                code = 0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        _ => return self.fail("bad escape"),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                Some(c) => { out.push(*c); self.i += 1; }
            }
        }
        String::from_utf8(out).or_else(|_| self.fail("invalid UTF-8"))
    }
}
