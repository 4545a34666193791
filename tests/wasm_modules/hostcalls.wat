;; Memory ABI: each function hands its input to the host function of the same name and
;; returns the host's response as its output.
(module
  (import "adf" "log" (func $log (param i32 i32 i32)))
  (import "adf" "get_context" (func $get_context (param i32 i32) (result i64)))
  (import "adf" "set_context" (func $set_context (param i32 i32) (result i64)))
  (import "adf" "http_request" (func $http_request (param i32 i32) (result i64)))
  (import "adf" "db_query" (func $db_query (param i32 i32) (result i64)))
  (import "adf" "file_read" (func $file_read (param i32 i32) (result i64)))
  (import "adf" "file_write" (func $file_write (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32) (local $pages i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (local.set $pages
          (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
        (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func (export "dealloc") (param $p i32) (param $n i32)
    (if (i32.eq (i32.add (local.get $p) (local.get $n)) (global.get $heap))
      (then (global.set $heap (local.get $p)))))

  (func (export "get_context") (param i32 i32) (result i64) (call $get_context (local.get 0) (local.get 1)))
  (func (export "set_context") (param i32 i32) (result i64) (call $set_context (local.get 0) (local.get 1)))
  (func (export "http_request") (param i32 i32) (result i64) (call $http_request (local.get 0) (local.get 1)))
  (func (export "db_query") (param i32 i32) (result i64) (call $db_query (local.get 0) (local.get 1)))
  (func (export "file_read") (param i32 i32) (result i64) (call $file_read (local.get 0) (local.get 1)))
  (func (export "file_write") (param i32 i32) (result i64) (call $file_write (local.get 0) (local.get 1)))

  ;; logs its input at info and at error level, then echoes it
  (func (export "log") (param $p i32) (param $n i32) (result i64)
    (call $log (i32.const 1) (local.get $p) (local.get $n))
    (call $log (i32.const 3) (local.get $p) (local.get $n))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
)
