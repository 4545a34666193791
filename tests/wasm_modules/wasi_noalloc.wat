;; WASI command calling a host function that answers in guest memory, without exporting alloc.
(module
  (import "adf" "get_context" (func $get_context (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{\"key\":\"greeting\"}")
  (func (export "_start")
    (drop (call $get_context (i32.const 64) (i32.const 18))))
)
