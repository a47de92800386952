#!/usr/bin/env bash
# Builds libicn_mesh.so for Android into src/main/jniLibs with cargo-ndk, linked for 16 KB pages
# (required for apps targeting Android 15+ on 16 KB devices). Needs the NDK (ANDROID_NDK_HOME) and
# `rustup target add aarch64-linux-android x86_64-linux-android`; `cargo install cargo-ndk`.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-z,max-page-size=16384 -C link-arg=-Wl,-z,common-page-size=16384"
cargo ndk -t arm64-v8a -t x86_64 --platform 26 -o android/src/main/jniLibs \
    build --release --locked -p icn-mesh-ffi
# Keep only the shared library (the staticlib is for C and iOS).
find android/src/main/jniLibs -name '*.a' -delete
scripts/bindings.sh
