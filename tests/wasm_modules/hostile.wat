;; Memory ABI functions that misbehave, one way each.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "this is not json")

  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))

  ;; runs forever
  (func (export "spin") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0))

  ;; grows memory one page at a time until the host refuses, then traps
  (func (export "bomb") (param i32 i32) (result i64)
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)

  ;; recurses without end
  (func $down (param $d i32) (result i32)
    (i32.add (call $down (i32.add (local.get $d) (i32.const 1))) (i32.const 1)))
  (func (export "recurse") (param i32 i32) (result i64)
    (i64.extend_i32_u (call $down (i32.const 0))))

  ;; answers 2 MiB
  (func (export "huge") (param i32 i32) (result i64)
    (drop (memory.grow (i32.const 32)))
    (i64.or (i64.shl (i64.const 65536) (i64.const 32)) (i64.const 2097152)))

  ;; answers bytes that are not JSON
  (func (export "garbage") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 16)))

  ;; traps
  (func (export "crash") (param i32 i32) (result i64)
    unreachable)
)
