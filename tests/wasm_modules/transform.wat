;; Memory ABI: a bump allocator and three JSON transformations.
;;   run(ptr, len)   -> {"marker":"adf-wasm","echo":<input>}
;;   echo(ptr, len)  -> the input itself
;;   upper(ptr, len) -> the input with a-z upper-cased inside JSON strings (one pass over every byte)
;;   count(ptr, len) -> {"n":D}: how many times this instance was called, mod 10
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 16) "{\"marker\":\"adf-wasm\",\"echo\":")
  (data (i32.const 64) "{\"n\":0}")

  (func $pack (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))

  ;; bump allocator; grows memory when needed, returns 0 when memory cannot grow
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

  ;; frees the most recent allocation (stack discipline)
  (func (export "dealloc") (param $p i32) (param $n i32)
    (if (i32.eq (i32.add (local.get $p) (local.get $n)) (global.get $heap))
      (then (global.set $heap (local.get $p)))))

  (func (export "heap") (param i32 i32) (result i64)
    (i64.extend_i32_u (global.get $heap)))

  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (local $out i32) (local $len i32)
    (local.set $len (i32.add (i32.const 29) (local.get $n)))
    (local.set $out (call $alloc (local.get $len)))
    (memory.copy (local.get $out) (i32.const 16) (i32.const 28))
    (memory.copy (i32.add (local.get $out) (i32.const 28)) (local.get $p) (local.get $n))
    (i32.store8 (i32.add (local.get $out) (i32.add (i32.const 28) (local.get $n))) (i32.const 125))
    (call $pack (local.get $out) (local.get $len)))

  (func (export "echo") (param $p i32) (param $n i32) (result i64)
    (call $pack (local.get $p) (local.get $n)))

  (func (export "upper") (param $p i32) (param $n i32) (result i64)
    (local $out i32) (local $i i32) (local $c i32) (local $instr i32) (local $esc i32)
    (local.set $out (call $alloc (local.get $n)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (if (local.get $esc)
          (then (local.set $esc (i32.const 0)))
          (else
            (if (local.get $instr)
              (then
                (if (i32.eq (local.get $c) (i32.const 92)) (then (local.set $esc (i32.const 1))))
                (if (i32.eq (local.get $c) (i32.const 34)) (then (local.set $instr (i32.const 0))))
                (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
                  (then (local.set $c (i32.sub (local.get $c) (i32.const 32))))))
              (else
                (if (i32.eq (local.get $c) (i32.const 34)) (then (local.set $instr (i32.const 1))))))))
        (i32.store8 (i32.add (local.get $out) (local.get $i)) (local.get $c))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $pack (local.get $out) (local.get $n)))

  (func (export "count") (param i32 i32) (result i64)
    (local $out i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (local.set $out (call $alloc (i32.const 7)))
    (memory.copy (local.get $out) (i32.const 64) (i32.const 7))
    (i32.store8 (i32.add (local.get $out) (i32.const 5))
      (i32.add (i32.const 48) (i32.rem_u (global.get $calls) (i32.const 10))))
    (call $pack (local.get $out) (i32.const 7)))
)
