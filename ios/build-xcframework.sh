#!/usr/bin/env bash
# Builds libicn_mesh.a (profile `mobile`: size-optimised, fat LTO, panic = "abort", as the Android
# library; see scripts/phone-library.sh) for iOS devices and simulators, and wraps it with the UniFFI
# header and module map as build/icn_meshFFI.xcframework; copies the generated Swift bindings into
# the package.
# Needs macOS with Xcode and `rustup target add aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bindings.sh
for target in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios; do
    cargo rustc --locked --profile mobile -p icn-mesh-ffi --lib --crate-type staticlib --target "$target"
done
out=ios/build
rm -rf "$out" && mkdir -p "$out/headers" "$out/sim"
cp bindings/swift/icn_meshFFI.h "$out/headers/"
cp bindings/swift/icn_meshFFI.modulemap "$out/headers/module.modulemap"
lipo -create target/aarch64-apple-ios-sim/mobile/libicn_mesh.a target/x86_64-apple-ios/mobile/libicn_mesh.a \
    -output "$out/sim/libicn_mesh.a"
xcodebuild -create-xcframework \
    -library target/aarch64-apple-ios/mobile/libicn_mesh.a -headers "$out/headers" \
    -library "$out/sim/libicn_mesh.a" -headers "$out/headers" \
    -output "$out/icn_meshFFI.xcframework"
cp bindings/swift/icn_mesh.swift ios/Sources/IcnMesh/IcnMeshBindings.swift
