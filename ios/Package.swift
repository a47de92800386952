// swift-tools-version:5.9
// The icn-mesh Swift package: the UniFFI Swift bindings (generated into ../bindings/swift, copied
// into Sources/IcnMesh by build-xcframework.sh), a Swift wrapper with a BGProcessingTask, and the
// Rust library as an XCFramework. Not built on the project's CI machine (no Swift toolchain).
import PackageDescription

let package = Package(
    name: "IcnMesh",
    platforms: [.iOS(.v15)],
    products: [.library(name: "IcnMesh", targets: ["IcnMesh"])],
    targets: [
        .binaryTarget(name: "icn_meshFFI", path: "build/icn_meshFFI.xcframework"),
        .target(name: "IcnMesh", dependencies: ["icn_meshFFI"], path: "Sources/IcnMesh"),
    ]
)
