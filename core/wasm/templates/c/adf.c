/* The ActiveDataFlow guest side for C: see adf.h. */
#include "adf.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ memory ABI */

/* The host asks for len bytes to write the input (or a host function's response) into. */
ADF_EXPORT("alloc") int32_t adf_alloc(int32_t len) {
    return (int32_t)(uintptr_t)malloc(len > 0 ? (size_t)len : 1);
}

/* Frees what alloc returned (the host calls it for the input and the output when done). */
ADF_EXPORT("dealloc") void adf_dealloc(int32_t ptr, int32_t len) {
    (void)len;
    free((void *)(uintptr_t)ptr);
}

static int64_t pack(const char *ptr, size_t len) {
    return (int64_t)(((uint64_t)(uint32_t)(uintptr_t)ptr << 32) | (uint32_t)len);
}

/* ------------------------------------------------------------------ host imports */

#define ADF_IMPORT(name) __attribute__((import_module("adf"), import_name(name)))
ADF_IMPORT("log") void host_log(int32_t level, int32_t ptr, int32_t len);
ADF_IMPORT("get_context") int64_t host_get_context(int32_t ptr, int32_t len);
ADF_IMPORT("set_context") int64_t host_set_context(int32_t ptr, int32_t len);
ADF_IMPORT("http_request") int64_t host_http_request(int32_t ptr, int32_t len);
ADF_IMPORT("db_query") int64_t host_db_query(int32_t ptr, int32_t len);
ADF_IMPORT("file_read") int64_t host_file_read(int32_t ptr, int32_t len);
ADF_IMPORT("file_write") int64_t host_file_write(int32_t ptr, int32_t len);

void adf_log(int level, const char *message) {
    host_log(level, (int32_t)(uintptr_t)message, (int32_t)strlen(message));
}

_Noreturn void adf_fail(const char *message) {
    adf_log(3, message);
    __builtin_trap();
}

/* ------------------------------------------------------------------ text */

static void text_bytes(adf_text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        while (cap < t->len + n + 1) cap *= 2;
        char *data = realloc(t->data, cap);
        if (!data) adf_fail("out of memory");
        t->data = data;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void text_char(adf_text *t, char c) { text_bytes(t, &c, 1); }

void adf_text_add(adf_text *t, const char *s) { text_bytes(t, s, strlen(s)); }

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* x * 10^e (exact powers up to 1e22, so one rounding step in the common cases) */
static double scale10(double x, int e) {
    for (; e > 22; e -= 22) x *= 1e22;
    for (; e < -22; e += 22) x /= 1e22;
    return e >= 0 ? x * POW10[e] : x / POW10[-e];
}

static void text_uint(adf_text *t, uint64_t n) {
    char buf[24];
    int i = 24;
    do buf[--i] = (char)('0' + n % 10); while ((n /= 10) > 0);
    text_bytes(t, buf + i, (size_t)(24 - i));
}

void adf_text_number(adf_text *t, double v) {
    if (v != v || v - v != 0) { adf_text_add(t, "null"); return; } /* NaN, infinities */
    if (v == 0) { text_char(t, '0'); return; }
    if (v < 0) { text_char(t, '-'); v = -v; }
    if (v < 1e17 && v == (double)(uint64_t)v) { text_uint(t, (uint64_t)v); return; }
    /* 15 significant digits: v ~ 0.ddddddddddddddd * 10^(e+1) */
    int e = 0;
    if (v >= 1) while (e < 308 && scale10(1.0, e + 1) <= v) e++;
    else while (e > -330 && scale10(1.0, e) > v) e--;
    uint64_t digits = (uint64_t)(scale10(v, 14 - e) + 0.5);
    if (digits >= 1000000000000000ULL) { digits = (digits + 5) / 10; e++; }
    if (digits < 100000000000000ULL) { digits = (uint64_t)(scale10(v, 15 - e) + 0.5); e--; }
    char d[16];
    for (int i = 14; i >= 0; i--, digits /= 10) d[i] = (char)('0' + digits % 10);
    int nd = 15;
    while (nd > 1 && d[nd - 1] == '0') nd--;
    if (e >= 0 && e < 21) {            /* 123.45 */
        for (int i = 0; i <= e; i++) text_char(t, i < nd ? d[i] : '0');
        if (nd > e + 1) { text_char(t, '.'); text_bytes(t, d + e + 1, (size_t)(nd - e - 1)); }
    } else if (e < 0 && e >= -6) {     /* 0.00123 */
        adf_text_add(t, "0.");
        for (int i = -1; i > e; i--) text_char(t, '0');
        text_bytes(t, d, (size_t)nd);
    } else {                           /* 1.5e-7, 1.2e+21 */
        text_char(t, d[0]);
        if (nd > 1) { text_char(t, '.'); text_bytes(t, d + 1, (size_t)(nd - 1)); }
        adf_text_add(t, e < 0 ? "e-" : "e+");
        text_uint(t, (uint64_t)(e < 0 ? -e : e));
    }
}

/* ------------------------------------------------------------------ JSON values */

static json *json_new(json_type type) {
    json *v = calloc(1, sizeof(json));
    if (!v) adf_fail("out of memory");
    v->type = type;
    return v;
}

static char *copy_string(const char *s, size_t n) {
    char *c = malloc(n + 1);
    if (!c) adf_fail("out of memory");
    memcpy(c, s, n);
    c[n] = '\0';
    return c;
}

json *json_null(void) { return json_new(JSON_NULL); }
json *json_bool(int value) { json *v = json_new(JSON_BOOL); v->boolean = value != 0; return v; }
json *json_number(double value) { json *v = json_new(JSON_NUMBER); v->number = value; return v; }
json *json_array(void) { return json_new(JSON_ARRAY); }
json *json_object(void) { return json_new(JSON_OBJECT); }

json *json_string(const char *value) {
    json *v = json_new(JSON_STRING);
    v->string = copy_string(value, strlen(value));
    return v;
}

void json_free(json *v) {
    if (!v) return;
    for (size_t i = 0; i < v->count; i++) {
        json_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}

static void grow(json *v) {
    if (v->count < v->capacity) return;
    v->capacity = v->capacity ? v->capacity * 2 : 8;
    v->items = realloc(v->items, v->capacity * sizeof(json *));
    if (v->type == JSON_OBJECT) v->keys = realloc(v->keys, v->capacity * sizeof(char *));
    if (!v->items || (v->type == JSON_OBJECT && !v->keys)) adf_fail("out of memory");
}

void json_push(json *array, json *value) {
    if (!array || array->type != JSON_ARRAY) { json_free(value); return; }
    grow(array);
    array->items[array->count++] = value;
}

static long find_key(const json *object, const char *key) {
    if (!object || object->type != JSON_OBJECT) return -1;
    for (size_t i = 0; i < object->count; i++)
        if (strcmp(object->keys[i], key) == 0) return (long)i;
    return -1;
}

json *json_get(const json *object, const char *key) {
    long i = find_key(object, key);
    return i < 0 ? NULL : object->items[i];
}

int json_get_number(const json *object, const char *key, double *out) {
    const json *v = json_get(object, key);
    if (!v || v->type != JSON_NUMBER) return 0;
    *out = v->number;
    return 1;
}

const char *json_get_string(const json *object, const char *key) {
    const json *v = json_get(object, key);
    return v && v->type == JSON_STRING ? v->string : NULL;
}

void json_set(json *object, const char *key, json *value) {
    if (!object || object->type != JSON_OBJECT) { json_free(value); return; }
    long i = find_key(object, key);
    if (i >= 0) {
        json_free(object->items[i]);
        object->items[i] = value;
        return;
    }
    grow(object);
    object->keys[object->count] = copy_string(key, strlen(key));
    object->items[object->count++] = value;
}

json *json_take(json *object, const char *key) {
    long i = find_key(object, key);
    if (i < 0) return NULL;
    json *value = object->items[i];
    free(object->keys[i]);
    size_t rest = object->count - (size_t)i - 1;
    memmove(object->items + i, object->items + i + 1, rest * sizeof(json *));
    memmove(object->keys + i, object->keys + i + 1, rest * sizeof(char *));
    object->count--;
    return value;
}

/* ------------------------------------------------------------------ serializer */

static void dump_string(adf_text *t, const char *s) {
    static const char hex[] = "0123456789abcdef";
    text_char(t, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { text_char(t, '\\'); text_char(t, (char)c); }
        else if (c == '\n') adf_text_add(t, "\\n");
        else if (c == '\r') adf_text_add(t, "\\r");
        else if (c == '\t') adf_text_add(t, "\\t");
        else if (c < 0x20) { char u[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]}; text_bytes(t, u, 6); }
        else text_char(t, (char)c);
    }
    text_char(t, '"');
}

static void dump(adf_text *t, const json *v) {
    switch (v ? v->type : JSON_NULL) {
    case JSON_NULL: adf_text_add(t, "null"); break;
    case JSON_BOOL: adf_text_add(t, v->boolean ? "true" : "false"); break;
    case JSON_NUMBER: adf_text_number(t, v->number); break;
    case JSON_STRING: dump_string(t, v->string); break;
    case JSON_ARRAY:
    case JSON_OBJECT:
        text_char(t, v->type == JSON_ARRAY ? '[' : '{');
        for (size_t i = 0; i < v->count; i++) {
            if (i) text_char(t, ',');
            if (v->type == JSON_OBJECT) { dump_string(t, v->keys[i]); text_char(t, ':'); }
            dump(t, v->items[i]);
        }
        text_char(t, v->type == JSON_ARRAY ? ']' : '}');
        break;
    }
}

char *json_dump(const json *value, size_t *len) {
    adf_text t = {0};
    dump(&t, value);
    *len = t.len;
    return t.data;
}

/* ------------------------------------------------------------------ parser */

typedef struct { const char *s; size_t n, i; int depth; } parser;

static void skip_ws(parser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(parser *p, double *out) {
    uint64_t mantissa = 0;
    int digits = 0, exp10 = 0, negative = 0;
    if (p->i < p->n && p->s[p->i] == '-') { negative = 1; p->i++; }
    if (p->i >= p->n || !is_digit(p->s[p->i])) return 0;
    for (; p->i < p->n && is_digit(p->s[p->i]); p->i++) {
        if (digits < 19) { mantissa = mantissa * 10 + (uint64_t)(p->s[p->i] - '0'); if (mantissa) digits++; }
        else exp10++;
    }
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (p->i >= p->n || !is_digit(p->s[p->i])) return 0;
        for (; p->i < p->n && is_digit(p->s[p->i]); p->i++) {
            if (digits < 19) { mantissa = mantissa * 10 + (uint64_t)(p->s[p->i] - '0'); exp10--; if (mantissa) digits++; }
        }
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        int sign = 1, e = 0;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) sign = p->s[p->i++] == '-' ? -1 : 1;
        if (p->i >= p->n || !is_digit(p->s[p->i])) return 0;
        for (; p->i < p->n && is_digit(p->s[p->i]); p->i++) if (e < 10000) e = e * 10 + (p->s[p->i] - '0');
        exp10 += sign * e;
    }
    double v = mantissa == 0 ? 0.0 : exp10 < -400 ? 0.0 : scale10((double)mantissa, exp10 > 400 ? 400 : exp10);
    *out = negative ? -v : v;
    return 1;
}

static int hex4(parser *p, uint32_t *out) {
    if (p->i + 4 > p->n) return 0;
    uint32_t code = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i++];
        code <<= 4;
        if (c >= '0' && c <= '9') code |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') code |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') code |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = code;
    return 1;
}

static void utf8_encode(adf_text *t, uint32_t c) {
    char b[4];
    if (c < 0x80) { b[0] = (char)c; text_bytes(t, b, 1); }
    else if (c < 0x800) { b[0] = (char)(0xC0 | c >> 6); b[1] = (char)(0x80 | (c & 0x3F)); text_bytes(t, b, 2); }
    else if (c < 0x10000) {
        b[0] = (char)(0xE0 | c >> 12); b[1] = (char)(0x80 | (c >> 6 & 0x3F)); b[2] = (char)(0x80 | (c & 0x3F));
        text_bytes(t, b, 3);
    } else {
        b[0] = (char)(0xF0 | c >> 18); b[1] = (char)(0x80 | (c >> 12 & 0x3F));
        b[2] = (char)(0x80 | (c >> 6 & 0x3F)); b[3] = (char)(0x80 | (c & 0x3F));
        text_bytes(t, b, 4);
    }
}

/* The string at p->i (after its opening quote); NULL when malformed. */
static char *parse_string(parser *p) {
    adf_text t = {0};
    text_bytes(&t, "", 0);
    while (p->i < p->n) {
        char c = p->s[p->i++];
        if (c == '"') return t.data;
        if (c != '\\') { text_char(&t, c); continue; }
        if (p->i >= p->n) break;
        c = p->s[p->i++];
        uint32_t code;
        switch (c) {
        case '"': case '\\': case '/': text_char(&t, c); break;
        case 'b': text_char(&t, '\b'); break;
        case 'f': text_char(&t, '\f'); break;
        case 'n': text_char(&t, '\n'); break;
        case 'r': text_char(&t, '\r'); break;
        case 't': text_char(&t, '\t'); break;
        case 'u':
            if (!hex4(p, &code)) goto fail;
            if (code >= 0xD800 && code < 0xDC00 && p->i + 1 < p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                uint32_t low;
                p->i += 2;
                if (!hex4(p, &low)) goto fail;
                code = 0x10000 + ((code - 0xD800) << 10) + ((low - 0xDC00) & 0x3FF);
            }
            utf8_encode(&t, code);
            break;
        default: goto fail;
        }
    }
fail:
    free(t.data);
    return NULL;
}

static json *parse_value(parser *p);

static json *parse_container(parser *p, int is_object) {
    json *v = is_object ? json_object() : json_array();
    char close = is_object ? '}' : ']';
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close) { p->i++; return v; }
    for (;;) {
        char *key = NULL;
        if (is_object) {
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != '"') break;
            p->i++;
            if (!(key = parse_string(p))) break;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { free(key); break; }
            p->i++;
        }
        json *item = parse_value(p);
        if (!item) { free(key); break; }
        grow(v);
        if (is_object) v->keys[v->count] = key;
        v->items[v->count++] = item;
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == close) { p->i++; return v; }
        break;
    }
    json_free(v);
    return NULL;
}

static int match_word(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->i + n > p->n || memcmp(p->s + p->i, word, n) != 0) return 0;
    p->i += n;
    return 1;
}

static json *parse_value(parser *p) {
    skip_ws(p);
    if (p->i >= p->n || p->depth > 200) return NULL;
    char c = p->s[p->i];
    if (c == '{' || c == '[') {
        p->depth++;
        json *v = parse_container(p, c == '{');
        p->depth--;
        return v;
    }
    if (c == '"') {
        p->i++;
        char *s = parse_string(p);
        if (!s) return NULL;
        json *v = json_new(JSON_STRING);
        v->string = s;
        return v;
    }
    if (match_word(p, "null")) return json_null();
    if (match_word(p, "true")) return json_bool(1);
    if (match_word(p, "false")) return json_bool(0);
    double number;
    return parse_number(p, &number) ? json_number(number) : NULL;
}

json *json_parse(const char *text, size_t len) {
    parser p = {text, len, 0, 0};
    json *v = parse_value(&p);
    skip_ws(&p);
    if (v && p.i != p.n) { json_free(v); return NULL; }
    return v;
}

/* ------------------------------------------------------------------ host calls */

static json *call(int64_t (*host)(int32_t, int32_t), json *request) {
    size_t n;
    char *text = json_dump(request, &n);
    json_free(request);
    uint64_t packed = (uint64_t)host((int32_t)(uintptr_t)text, (int32_t)n);
    free(text);
    char *ptr = (char *)(uintptr_t)(uint32_t)(packed >> 32);
    json *response = ptr ? json_parse(ptr, (uint32_t)packed) : NULL;
    free(ptr);
    if (!response || response->type != JSON_OBJECT) {
        json_free(response);
        response = json_object();
        json_set(response, "ok", json_bool(0));
        json_set(response, "error", json_string("invalid response from the host"));
    }
    return response;
}

int adf_ok(const json *response) {
    const json *ok = json_get(response, "ok");
    return ok && ok->type == JSON_BOOL && ok->boolean;
}

json *adf_get_context(const char *key) {
    json *r = json_object();
    json_set(r, "key", json_string(key));
    return call(host_get_context, r);
}

json *adf_set_context(const char *key, json *value) {
    json *r = json_object();
    json_set(r, "key", json_string(key));
    json_set(r, "value", value);
    return call(host_set_context, r);
}

json *adf_http_request(const char *method, const char *url, json *headers, const char *body) {
    json *r = json_object();
    json_set(r, "method", json_string(method));
    json_set(r, "url", json_string(url));
    json_set(r, "headers", headers ? headers : json_object());
    json_set(r, "body", body ? json_string(body) : json_null());
    return call(host_http_request, r);
}

json *adf_db_query(const char *connection, const char *sql, json *params) {
    json *r = json_object();
    json_set(r, "connection", json_string(connection));
    json_set(r, "sql", json_string(sql));
    json_set(r, "params", params ? params : json_array());
    return call(host_db_query, r);
}

json *adf_file_read(const char *path) {
    json *r = json_object();
    json_set(r, "path", json_string(path));
    return call(host_file_read, r);
}

json *adf_file_write(const char *path, const char *content) {
    json *r = json_object();
    json_set(r, "path", json_string(path));
    json_set(r, "content", json_string(content));
    return call(host_file_write, r);
}

/* ------------------------------------------------------------------ entry */

int64_t adf_handle(int32_t ptr, int32_t len, adf_handler handler) {
    json *input = json_parse((const char *)(uintptr_t)ptr, (size_t)len);
    if (!input) adf_fail("invalid input JSON");
    json *output = handler(input);
    json_free(input);
    size_t n;
    char *text = json_dump(output, &n);
    json_free(output);
    return pack(text, n);
}
