// swift-tools-version:5.9
// SwiftPM package of the Linli device SDK: the Swift bindings generated from linli-ffi (target
// `Linli`) over the Rust library wrapped in an XCFramework (binary target `LinliFFI`).
//
// Both inputs are build output of `mobile-bindings/build.sh ios` (on a Mac with Xcode) and are
// never committed:
//   build/swift/Sources/Linli/Linli.swift   generated in library mode
//   build/ios/LinliFFI.xcframework          static libraries for device and simulator
//
// In Xcode: File > Add Package Dependencies > Add Local… > this directory; or in another
// package: .package(path: "path/to/linli/mobile-bindings"). Then `import Linli`.
import PackageDescription

let package = Package(
    name: "Linli",
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "Linli", targets: ["Linli"]),
    ],
    targets: [
        .binaryTarget(name: "LinliFFI", path: "build/ios/LinliFFI.xcframework"),
        .target(
            name: "Linli",
            dependencies: ["LinliFFI"],
            path: "build/swift/Sources/Linli"
        ),
    ]
)
