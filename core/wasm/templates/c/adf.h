/* The ActiveDataFlow guest side for C: the memory ABI (alloc/dealloc, exported by adf.c), a
 * small JSON tree with its parser and serializer, and the host functions of module "adf".
 * Needs only malloc/free from wasi-libc (no stdio), so the module imports nothing but "adf". */
#ifndef ADF_H
#define ADF_H

#include <stddef.h>
#include <stdint.h>

/* Marks a function as a module export: ADF_EXPORT("run") int64_t run(int32_t ptr, int32_t len) */
#define ADF_EXPORT(name) __attribute__((export_name(name)))

/* ------------------------------------------------------------------ JSON */

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json {
    json_type type;
    int boolean;           /* JSON_BOOL */
    double number;         /* JSON_NUMBER */
    char *string;          /* JSON_STRING: UTF-8, NUL-terminated */
    size_t count;          /* JSON_ARRAY / JSON_OBJECT: number of items */
    size_t capacity;
    struct json **items;   /* the items (array) or the values (object) */
    char **keys;           /* JSON_OBJECT: the keys, aligned with items */
} json;

json *json_parse(const char *text, size_t len);   /* NULL when the text is not valid JSON */
char *json_dump(const json *value, size_t *len);  /* malloc'ed UTF-8 text, *len its size */
void json_free(json *value);                      /* frees the whole tree (NULL is fine) */

json *json_null(void);
json *json_bool(int value);
json *json_number(double value);
json *json_string(const char *value);
json *json_array(void);
json *json_object(void);

json *json_get(const json *object, const char *key); /* NULL when absent or not an object */
int json_get_number(const json *object, const char *key, double *out); /* 1 when key holds a number */
const char *json_get_string(const json *object, const char *key);     /* NULL unless a string */
json *json_take(json *object, const char *key);   /* removes key and hands its value over (or NULL) */
void json_set(json *object, const char *key, json *value); /* takes ownership; replaces */
void json_push(json *array, json *value);                  /* takes ownership */

/* ------------------------------------------------------------------ host functions */

void adf_log(int level, const char *message); /* 0 debug, 1 info, 2 warning, 3 error */

/* Each sends a JSON request and returns the response object ({"ok": true, ...} or
 * {"ok": false, "error": "..."}); the caller frees it with json_free. The request
 * arguments of type json * are taken over (freed by the call). */
json *adf_get_context(const char *key);                 /* response "value" */
json *adf_set_context(const char *key, json *value);
json *adf_http_request(const char *method, const char *url, json *headers, const char *body);
json *adf_db_query(const char *connection, const char *sql, json *params);
json *adf_file_read(const char *path);                  /* response "content" */
json *adf_file_write(const char *path, const char *content);
int adf_ok(const json *response);                       /* 1 when "ok" is true */

/* ------------------------------------------------------------------ entry */

/* A step function: gets the parsed envelope (owned by the caller) and returns the output
 * object (handed over). */
typedef json *(*adf_handler)(json *input);

/* Parses the input at ptr/len, calls handler, returns the output packed as (ptr << 32) | len.
 * Invalid input JSON is logged at level error and traps. */
int64_t adf_handle(int32_t ptr, int32_t len, adf_handler handler);

/* Logs message at level error, then traps. */
_Noreturn void adf_fail(const char *message);

/* ------------------------------------------------------------------ text */

/* A growing text buffer (no stdio here): start with adf_text t = {0}; free(t.data) when done. */
typedef struct { char *data; size_t len, cap; } adf_text;
void adf_text_add(adf_text *t, const char *s);
void adf_text_number(adf_text *t, double value); /* integers exactly, others to 15 digits */

#endif
