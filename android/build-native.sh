#!/usr/bin/env bash
# Builds libicn_mesh.so for Android into src/main/jniLibs with cargo-ndk: the phone library as
# scripts/phone-library.sh builds and measures it (profile `mobile`, fat LTO, panic = "abort", no
# unwind tables), linked for 16 KB pages (required for apps targeting Android 15+ on 16 KB devices).
# Needs the NDK (ANDROID_NDK_HOME), `rustup target add aarch64-linux-android x86_64-linux-android`
# and `cargo install cargo-ndk`. Not run on the project's CI machine (no NDK there).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-z,max-page-size=16384 -C link-arg=-Wl,-z,common-page-size=16384"
for abi in arm64-v8a x86_64; do
    ICN_ANDROID=1 ICN_CARGO="cargo ndk -t $abi --platform 26 -o android/src/main/jniLibs" \
        scripts/phone-library.sh
done
scripts/bindings.sh
