#!/usr/bin/env bash
# Builds the phone's library, libicn_mesh.so, as shipped: the `mobile` profile (size-optimised, fat
# LTO, panic = "abort"; see Cargo.toml) as a cdylib alone, since cargo does no LTO for a crate that is
# also an rlib, linked without unwind tables (ffi/no-unwind-tables.ld) and with packed relative
# relocations. Prints the library's path.
#   scripts/phone-library.sh                  this machine (x86_64 here, the proxy for arm64)
#   ICN_ANDROID=1 ICN_CARGO="cargo ndk -t arm64-v8a --platform 26 -o DIR" scripts/phone-library.sh
#       for Android (android/build-native.sh): cargo-ndk, and Android's own relocation packing (RELR
#       needs API 28; minSdk is 26)
set -euo pipefail
# x86_64 here stands in for arm64: built without the x86-only ed25519 backend that
# .cargo/config.toml asks for (a RUSTFLAGS variable, even an empty one, replaces it); a caller's
# own RUSTFLAGS is kept.
export RUSTFLAGS="${RUSTFLAGS-}"
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
link=(-C link-arg=-Wl,--no-eh-frame-hdr -C "link-arg=-Wl,-T,$PWD/ffi/no-unwind-tables.ld")
if [ -n "${ICN_ANDROID:-}" ]; then
    link+=(-C link-arg=-Wl,--pack-dyn-relocs=android)
else
    link+=(-C link-arg=-Wl,-z,pack-relative-relocs)  # glibc 2.36+
fi
${ICN_CARGO:-cargo} rustc --locked -q --profile mobile -p icn-mesh-ffi --lib --crate-type cdylib "$@" -- "${link[@]}"
[ -n "${ICN_CARGO:-}" ] || echo "$target/mobile/libicn_mesh.so"
