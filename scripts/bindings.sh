#!/usr/bin/env bash
# Regenerates the bindings in bindings/ from the ffi crate: Kotlin, Swift and Python by UniFFI's
# generator (the workspace's own uniffi-bindgen, so versions match), the C header by cbindgen (ffi's
# build.rs). `--check` fails if anything differs from what is committed: CI runs it that way.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --locked -q -p icn-mesh-ffi -p uniffi-bindgen
lib="$target/debug/libicn_mesh.so"
for language in kotlin swift python; do
    rm -rf "bindings/$language"
    "$target/debug/uniffi-bindgen" generate --library "$lib" --language "$language" \
        --out-dir "bindings/$language" --no-format >/dev/null
done
if [[ "${1:-}" == "--check" ]]; then
    if [[ -n "$(git status --porcelain -- bindings)" ]]; then
        git status --porcelain -- bindings
        git diff --stat -- bindings
        echo "error: the committed bindings differ from the generated ones: run scripts/bindings.sh" >&2
        exit 1
    fi
    echo "bindings match the library"
fi
