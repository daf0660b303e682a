// swift-tools-version:5.9
// The Tribute Swift package: the generated bindings (Sources/Tribute, module `Tribute`)
// over the Rust library through the C module `TributeFFI` (Sources/TributeFFI: the
// generated header and module map).
//
// Where the Rust library comes from:
// - by default, libtribute_ffi.a, a static library for this machine (macOS or Linux),
//   found through the linker's search path: `swift build -Xlinker -L<its directory>`
//   (bindings/swift/test.sh builds it with cargo, links it into ./lib and passes
//   `-Xlinker -L./lib`). No unsafe flags, so other packages can depend on this one;
// - with TRIBUTE_XCFRAMEWORK=<path relative to this directory>, an XCFramework with the
//   static library for each Apple platform (iOS device, simulator, macOS) and the same
//   header and module map; docs/MOBILE.md builds one.
//
// Swift 5 language mode: the generated sources mark their types `@unchecked Sendable`
// and build under Swift 6 toolchains in this mode.
import Foundation
import PackageDescription

let xcframework = Context.environment["TRIBUTE_XCFRAMEWORK"].flatMap { $0.isEmpty ? nil : $0 }

/// The system libraries a Rust static library needs (`cargo rustc -p tribute-ffi --lib --
/// --print native-static-libs` prints them).
let rustSystemLibraries: [LinkerSetting] = [
    .linkedLibrary("dl", .when(platforms: [.linux])),
    .linkedLibrary("pthread", .when(platforms: [.linux])),
    .linkedLibrary("m", .when(platforms: [.linux])),
    .linkedLibrary("rt", .when(platforms: [.linux])),
    .linkedLibrary("util", .when(platforms: [.linux])),
    .linkedLibrary("gcc_s", .when(platforms: [.linux])),
    .linkedFramework("CoreFoundation", .when(platforms: [.macOS, .iOS])),
    .linkedFramework("Security", .when(platforms: [.macOS, .iOS])),
    .linkedFramework("SystemConfiguration", .when(platforms: [.macOS, .iOS])),
    .linkedLibrary("iconv", .when(platforms: [.macOS, .iOS])),
]

let ffiTarget: Target
if let xcframework {
    ffiTarget = .binaryTarget(name: "TributeFFI", path: xcframework)
} else {
    ffiTarget = .target(
        name: "TributeFFI",
        path: "Sources/TributeFFI",
        linkerSettings: [.linkedLibrary("tribute_ffi")] + rustSystemLibraries
    )
}

let package = Package(
    name: "Tribute",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [
        .library(name: "Tribute", targets: ["Tribute"]),
    ],
    targets: [
        ffiTarget,
        .target(
            name: "Tribute",
            dependencies: ["TributeFFI"],
            path: "Sources/Tribute",
            linkerSettings: xcframework == nil ? [] : rustSystemLibraries
        ),
        .testTarget(
            name: "TributeTests",
            dependencies: ["Tribute"],
            path: "Tests/TributeTests"
        ),
    ],
    swiftLanguageVersions: [.v5]
)
