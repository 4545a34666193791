;; Memory ABI module whose initial memory (200 pages, 12.5 MiB) is larger than a small limit.
(module
  (memory (export "memory") 200)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
)
