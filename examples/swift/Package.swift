// swift-tools-version:5.9
// The Swift quickstart (main.swift) as a package that uses the Tribute package in
// bindings/swift. Build the library first (bindings/swift/test.sh does, and runs this), then:
//   cd examples/swift && swift run -Xlinker -L../../bindings/swift/lib Quickstart ../..
import PackageDescription

let package = Package(
    name: "TributeQuickstart",
    platforms: [.macOS(.v12)],
    dependencies: [
        .package(path: "../../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "Quickstart",
            dependencies: [.product(name: "Tribute", package: "swift")],
            path: ".",
            sources: ["main.swift"]
        ),
    ],
    swiftLanguageVersions: [.v5]
)
