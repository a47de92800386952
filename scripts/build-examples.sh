#!/usr/bin/env bash
# Builds the example jobs in examples/jobs/ to wasm32. Output is byte-for-byte reproducible:
# CI runs this into a temporary directory and fails if the result differs from the committed .wasm.
#   scripts/build-examples.sh [OUT_DIR]      (default: examples/jobs)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-examples/jobs}
mkdir -p "$out"
export PATH=/usr/lib/llvm-14/bin:$PATH   # clang-14 finds wasm-ld (lld-14) here
for src in examples/jobs/*.c; do
  name=$(basename "$src" .c)
  clang-14 --target=wasm32 -O2 -nostdlib -ffreestanding -fno-ident \
    -Wall -Wextra -Werror -Wno-unused-function \
    -Wl,--no-entry -Wl,--export=run -Wl,--strip-all \
    -o "$out/$name.wasm" "$src"
done
for src in examples/jobs/*.wat; do
  wat2wasm "$src" -o "$out/$(basename "$src" .wat).wasm"
done
