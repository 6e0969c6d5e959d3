// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "CourseSync",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "coursesync", targets: ["coursesync"]),
        .library(name: "SyncModel", targets: ["SyncModel"]),
        .library(name: "SyncWire", targets: ["SyncWire"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // Pure Swift: entities, operations, CourseState and the resolver. No I/O, no clocks, no randomness.
        .target(name: "SyncModel"),
        // The wire contract: generated protobuf messages, the frame codec, conversions to and from SyncModel.
        .target(
            name: "SyncWire",
            dependencies: [
                "SyncModel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .executableTarget(
            name: "coursesync",
            dependencies: [
                "SyncModel",
                "SyncWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "SyncModelTests", dependencies: ["SyncModel"]),
        // Depends on the executable so that `swift test` builds the binary it runs.
        .testTarget(name: "CourseSyncCLITests", dependencies: ["coursesync"]),
        .testTarget(
            name: "SyncWireTests",
            dependencies: [
                "SyncModel",
                "SyncWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
