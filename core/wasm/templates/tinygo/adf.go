// The ActiveDataFlow guest side for TinyGo: the memory ABI (alloc/dealloc), a small JSON value
// with its parser and serializer, and the host functions of module "adf". Standard library
// only. Built with -buildmode=c-shared, so the host calls the module's _initialize export once
// before anything else (TinyGo sets up its heap there).
package main

import (
	"runtime"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

func main() {}

// ------------------------------------------------------------------ memory ABI

// pinned keeps the buffers handed to the host alive until dealloc (the GC cannot see the host).
var pinned = map[uintptr][]byte{}

func allocate(size int32) int32 {
	if size <= 0 {
		size = 1
	}
	buf := make([]byte, size)
	ptr := uintptr(unsafe.Pointer(&buf[0]))
	pinned[ptr] = buf
	return int32(ptr)
}

// alloc: the host asks for size bytes to write the input (or a host function's response) into.
//
//go:wasmexport alloc
func alloc(size int32) int32 { return allocate(size) }

// dealloc frees what alloc returned (the host calls it for the input and the output when done).
//
//go:wasmexport dealloc
func dealloc(ptr int32, size int32) { delete(pinned, uintptr(ptr)) }

func bytesAt(ptr, size int32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(ptr))), size)
}

func pack(data []byte) int64 {
	ptr := allocate(int32(len(data)))
	copy(bytesAt(ptr, int32(len(data))), data)
	return int64(ptr)<<32 | int64(len(data))
}

func unpack(packed int64) []byte {
	ptr, size := int32(uint64(packed)>>32), int32(uint32(packed))
	if ptr == 0 {
		return nil
	}
	data := append([]byte(nil), bytesAt(ptr, size)...)
	delete(pinned, uintptr(ptr))
	return data
}

// handle parses the input envelope at ptr/size, calls f and returns its result packed for the host.
func handle(ptr, size int32, f func(input *Value) *Value) int64 {
	input, err := Parse(bytesAt(ptr, size))
	if err != nil {
		Fail("invalid input JSON: " + err.Error())
	}
	return pack([]byte(f(input).JSON()))
}

// Fail logs message at level error, then traps (build with -panic=trap).
func Fail(message string) {
	Log(3, message)
	panic(message)
}

// ------------------------------------------------------------------ host functions

//go:wasmimport adf log
func hostLog(level, ptr, size int32)

//go:wasmimport adf get_context
func hostGetContext(ptr, size int32) int64

//go:wasmimport adf set_context
func hostSetContext(ptr, size int32) int64

//go:wasmimport adf http_request
func hostHTTPRequest(ptr, size int32) int64

//go:wasmimport adf db_query
func hostDBQuery(ptr, size int32) int64

//go:wasmimport adf file_read
func hostFileRead(ptr, size int32) int64

//go:wasmimport adf file_write
func hostFileWrite(ptr, size int32) int64

// Log logs message at level (0 debug, 1 info, 2 warning, 3 error).
func Log(level int32, message string) {
	buf := []byte(message + " ") // never empty, so &buf[0] exists
	hostLog(level, int32(uintptr(unsafe.Pointer(&buf[0]))), int32(len(message)))
	runtime.KeepAlive(buf)
}

// encode gives a request's JSON bytes (one spare byte, so never empty), their address and size.
func encode(request *Value) ([]byte, int32, int32) {
	buf := []byte(request.JSON() + " ")
	return buf, int32(uintptr(unsafe.Pointer(&buf[0]))), int32(len(buf) - 1)
}

// decode reads a host function's packed response: {"ok": true, ...} or
// {"ok": false, "error": "..."} (test it with OK). request is kept alive until the call returned.
func decode(packed int64, request []byte) *Value {
	runtime.KeepAlive(request)
	response, err := Parse(unpack(packed))
	if err != nil || response.Kind != KindObject {
		return NewObject().Set("ok", NewBool(false)).Set("error", NewString("invalid response from the host"))
	}
	return response
}

// OK reports whether a host function's response says "ok": true.
func OK(response *Value) bool {
	ok := response.Get("ok")
	return ok != nil && ok.Kind == KindBool && ok.Bool
}

// GetContext: the response's "value" is the run context's value at key (null when unset).
func GetContext(key string) *Value {
	buf, ptr, size := encode(NewObject().Set("key", NewString(key)))
	return decode(hostGetContext(ptr, size), buf)
}

// SetContext stores value at key in the run context.
func SetContext(key string, value *Value) *Value {
	buf, ptr, size := encode(NewObject().Set("key", NewString(key)).Set("value", value))
	return decode(hostSetContext(ptr, size), buf)
}

// HTTPRequest: the response has "status", "headers" and "body".
func HTTPRequest(method, url string, headers *Value, body string) *Value {
	buf, ptr, size := encode(NewObject().Set("method", NewString(method)).Set("url", NewString(url)).
		Set("headers", headers).Set("body", NewString(body)))
	return decode(hostHTTPRequest(ptr, size), buf)
}

// DBQuery: the response has "columns" and "rows".
func DBQuery(connection, sql string, params *Value) *Value {
	buf, ptr, size := encode(NewObject().Set("connection", NewString(connection)).
		Set("sql", NewString(sql)).Set("params", params))
	return decode(hostDBQuery(ptr, size), buf)
}

// FileRead: the response has "content".
func FileRead(path string) *Value {
	buf, ptr, size := encode(NewObject().Set("path", NewString(path)))
	return decode(hostFileRead(ptr, size), buf)
}

// FileWrite writes content to path.
func FileWrite(path, content string) *Value {
	buf, ptr, size := encode(NewObject().Set("path", NewString(path)).Set("content", NewString(content)))
	return decode(hostFileWrite(ptr, size), buf)
}

// ------------------------------------------------------------------ JSON

type Kind int

const (
	KindNull Kind = iota
	KindBool
	KindNumber
	KindString
	KindArray
	KindObject
)

// Value is a JSON value; objects keep their keys in order.
type Value struct {
	Kind  Kind
	Bool  bool
	Num   float64
	Str   string
	Items []*Value // the items of an array, or the values of an object
	Keys  []string // the keys of an object, aligned with Items
}

func NewNull() *Value                 { return &Value{} }
func NewBool(b bool) *Value           { return &Value{Kind: KindBool, Bool: b} }
func NewNumber(n float64) *Value      { return &Value{Kind: KindNumber, Num: n} }
func NewString(s string) *Value       { return &Value{Kind: KindString, Str: s} }
func NewArray(items ...*Value) *Value { return &Value{Kind: KindArray, Items: items} }
func NewObject() *Value               { return &Value{Kind: KindObject} }

// Strings makes an array of strings, e.g. a "next" entry: Strings("big").
func Strings(list ...string) *Value {
	v := NewArray()
	for _, s := range list {
		v.Push(NewString(s))
	}
	return v
}

func (v *Value) index(key string) int {
	if v == nil || v.Kind != KindObject {
		return -1
	}
	for i, k := range v.Keys {
		if k == key {
			return i
		}
	}
	return -1
}

// Get returns the value at key, or nil when absent.
func (v *Value) Get(key string) *Value {
	if i := v.index(key); i >= 0 {
		return v.Items[i]
	}
	return nil
}

// Has reports whether key is present and not null.
func (v *Value) Has(key string) bool {
	x := v.Get(key)
	return x != nil && x.Kind != KindNull
}

// Text returns the string at key ("" when absent or not a string).
func (v *Value) Text(key string) string {
	if x := v.Get(key); x != nil && x.Kind == KindString {
		return x.Str
	}
	return ""
}

// Number returns the number at key and whether there is one.
func (v *Value) Number(key string) (float64, bool) {
	x := v.Get(key)
	if x == nil || x.Kind != KindNumber {
		return 0, false
	}
	return x.Num, true
}

// Set sets key (replacing an existing entry) and returns v, for chaining.
func (v *Value) Set(key string, x *Value) *Value {
	if v.Kind != KindObject {
		return v
	}
	if i := v.index(key); i >= 0 {
		v.Items[i] = x
	} else {
		v.Keys = append(v.Keys, key)
		v.Items = append(v.Items, x)
	}
	return v
}

// Take removes key and returns its value (a null value when absent).
func (v *Value) Take(key string) *Value {
	i := v.index(key)
	if i < 0 {
		return NewNull()
	}
	x := v.Items[i]
	v.Keys = append(v.Keys[:i], v.Keys[i+1:]...)
	v.Items = append(v.Items[:i], v.Items[i+1:]...)
	return x
}

// Push appends to an array and returns v.
func (v *Value) Push(x *Value) *Value {
	if v.Kind == KindArray {
		v.Items = append(v.Items, x)
	}
	return v
}

// FormatNumber writes a number as JSON does: integers without a fraction, null for NaN/Inf.
func FormatNumber(n float64) string {
	switch {
	case n != n || n > 1.7976931348623157e308 || n < -1.7976931348623157e308:
		return "null"
	case n == float64(int64(n)) && n < 1e17 && n > -1e17:
		return strconv.FormatInt(int64(n), 10)
	case (n > 1e-6 && n < 1e21) || (n < -1e-6 && n > -1e21):
		return strconv.FormatFloat(n, 'f', -1, 64)
	}
	return strconv.FormatFloat(n, 'g', -1, 64)
}

// JSON serializes v.
func (v *Value) JSON() string {
	return string(v.appendTo(nil))
}

func appendString(out []byte, s string) []byte {
	const hex = "0123456789abcdef"
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			out = append(out, '\\', c)
		case c == '\n':
			out = append(out, '\\', 'n')
		case c == '\r':
			out = append(out, '\\', 'r')
		case c == '\t':
			out = append(out, '\\', 't')
		case c < 0x20:
			out = append(out, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			out = append(out, c)
		}
	}
	return append(out, '"')
}

func (v *Value) appendTo(out []byte) []byte {
	if v == nil {
		return append(out, "null"...)
	}
	switch v.Kind {
	case KindBool:
		if v.Bool {
			return append(out, "true"...)
		}
		return append(out, "false"...)
	case KindNumber:
		return append(out, FormatNumber(v.Num)...)
	case KindString:
		return appendString(out, v.Str)
	case KindArray, KindObject:
		open, close := byte('['), byte(']')
		if v.Kind == KindObject {
			open, close = '{', '}'
		}
		out = append(out, open)
		for i, item := range v.Items {
			if i > 0 {
				out = append(out, ',')
			}
			if v.Kind == KindObject {
				out = append(appendString(out, v.Keys[i]), ':')
			}
			out = item.appendTo(out)
		}
		return append(out, close)
	}
	return append(out, "null"...)
}

type jsonError string

func (e jsonError) Error() string { return string(e) }

type parser struct {
	s []byte
	i int
}

// Parse parses JSON text.
func Parse(data []byte) (*Value, error) {
	p := &parser{s: data}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.s) {
		return nil, p.fail("trailing data")
	}
	return v, nil
}

func (p *parser) fail(what string) error {
	return jsonError(what + " at byte " + strconv.Itoa(p.i))
}

func (p *parser) ws() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *parser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *parser) word(w string, v *Value) (*Value, error) {
	if p.i+len(w) > len(p.s) || string(p.s[p.i:p.i+len(w)]) != w {
		return nil, p.fail("unexpected token")
	}
	p.i += len(w)
	return v, nil
}

func (p *parser) value(depth int) (*Value, error) {
	p.ws()
	if depth > 200 {
		return nil, p.fail("nested too deeply")
	}
	switch c := p.peek(); {
	case c == 'n':
		return p.word("null", NewNull())
	case c == 't':
		return p.word("true", NewBool(true))
	case c == 'f':
		return p.word("false", NewBool(false))
	case c == '"':
		s, err := p.str()
		return NewString(s), err
	case c == '[' || c == '{':
		v, close := NewArray(), byte(']')
		if c == '{' {
			v, close = NewObject(), '}'
		}
		p.i++
		p.ws()
		if p.peek() == close {
			p.i++
			return v, nil
		}
		for {
			if c == '{' {
				p.ws()
				if p.peek() != '"' {
					return nil, p.fail("expected a key")
				}
				key, err := p.str()
				if err != nil {
					return nil, err
				}
				p.ws()
				if p.peek() != ':' {
					return nil, p.fail("expected ':'")
				}
				p.i++
				v.Keys = append(v.Keys, key)
			}
			item, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			v.Items = append(v.Items, item)
			p.ws()
			switch p.peek() {
			case ',':
				p.i++
			case close:
				p.i++
				return v, nil
			default:
				return nil, p.fail("expected ',' or a closing bracket")
			}
		}
	}
	start := p.i
	for p.i < len(p.s) && (p.s[p.i] >= '0' && p.s[p.i] <= '9' || p.s[p.i] == '-' || p.s[p.i] == '+' ||
		p.s[p.i] == '.' || p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
	}
	n, err := strconv.ParseFloat(string(p.s[start:p.i]), 64)
	if err != nil || start == p.i {
		p.i = start
		return nil, p.fail("invalid value")
	}
	return NewNumber(n), nil
}

func (p *parser) hex4() (rune, error) {
	if p.i+4 > len(p.s) {
		return 0, p.fail("invalid \\u escape")
	}
	n, err := strconv.ParseUint(string(p.s[p.i:p.i+4]), 16, 32)
	if err != nil {
		return 0, p.fail("invalid \\u escape")
	}
	p.i += 4
	return rune(n), nil
}

func (p *parser) str() (string, error) {
	p.i++ // the opening quote
	var out []byte
	for {
		if p.i >= len(p.s) {
			return "", p.fail("unterminated string")
		}
		c := p.s[p.i]
		p.i++
		if c == '"' {
			return string(out), nil
		}
		if c != '\\' {
			out = append(out, c)
			continue
		}
		e := p.peek()
		p.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, err := p.hex4()
			if err != nil {
				return "", err
			}
			if utf16.IsSurrogate(r) && p.i+1 < len(p.s) && p.s[p.i] == '\\' && p.s[p.i+1] == 'u' {
				p.i += 2
				low, err := p.hex4()
				if err != nil {
					return "", err
				}
				r = utf16.DecodeRune(r, low)
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", p.fail("invalid escape")
		}
	}
}
