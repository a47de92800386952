;; The smallest useful job: copies its input to its output in one call each way.
;; Written in WAT to show the raw ABI; used as the "trivial job" of the start-up benchmark.
(module
  (import "icn" "input_len" (func $input_len (result i32)))
  (import "icn" "get_input" (func $get_input (param i32 i32 i32) (result i32)))
  (import "icn" "put_output" (func $put_output (param i32 i32) (result i32)))
  (import "icn" "progress" (func $progress (param i32)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (local $len i32)
    (local.set $len (call $input_len))
    ;; Inputs larger than one page are refused with exit code 1.
    (if (i32.gt_u (local.get $len) (i32.const 65536)) (then (return (i32.const 1))))
    (drop (call $get_input (i32.const 0) (i32.const 0) (local.get $len)))
    (call $progress (i32.const 1000))
    (call $put_output (i32.const 0) (local.get $len))))
