// swift-tools-version:6.1
import PackageDescription

/// What the server's tests and their support both build on: every module of the stack, and the
/// NIO, PostgreSQL and logging products they drive it with.
let serverStack: [Target.Dependency] = [
    "SyncModel", "SyncWire", "SyncTransport", "SyncStorage", "SyncServer", "PostgresStore", "SQLiteStore", "SyncClient",
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
    .product(name: "PostgresNIO", package: "postgres-nio"),
    .product(name: "Logging", package: "swift-log"),
]

let package = Package(
    name: "CourseSync",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "coursesync", targets: ["coursesync"]),
        .library(name: "SyncModel", targets: ["SyncModel"]),
        .library(name: "SyncWire", targets: ["SyncWire"]),
        .library(name: "SyncTransport", targets: ["SyncTransport"]),
        .library(name: "SyncStorage", targets: ["SyncStorage"]),
        .library(name: "SyncServer", targets: ["SyncServer"]),
        .library(name: "PostgresStore", targets: ["PostgresStore"]),
        .library(name: "SQLiteStore", targets: ["SQLiteStore"]),
        .library(name: "CourseSyncClient", targets: ["SyncClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // `swift package generate-documentation` (the client library's reference).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.5.0"),
        // Test certificates only (the TLS tests make their own CA).
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
    ],
    targets: [
        // Pure Swift: entities, operations, CourseState and the resolver. No I/O, no clocks, no randomness.
        .target(name: "SyncModel"),
        // The wire contract: generated protobuf messages, framing, conversions to and from SyncModel. No I/O.
        .target(
            name: "SyncWire",
            dependencies: [
                "SyncModel",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // The protocol over NIO channels: TLS, the frame decoder/encoder, message codec handlers, and
        // the one pipeline builder the server, the client library, the tools and the tests use.
        .target(
            name: "SyncTransport",
            dependencies: [
                "SyncModel",
                "SyncWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
        // The store engine: the SyncStore contract, the group commit, the course cache and the
        // decisions every backend shares, over a few primitives a backend implements. No I/O of its own.
        .target(name: "SyncStorage", dependencies: ["SyncModel", "SyncWire"]),
        // The server engine: sessions, auth, per-course serialization, group commit and fan-out, over a SyncStore.
        .target(
            name: "SyncServer",
            dependencies: [
                "SyncModel",
                "SyncWire",
                "SyncTransport",
                "SyncStorage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // The production SyncStore on PostgreSQL, and the migrations runner.
        .target(
            name: "PostgresStore",
            dependencies: [
                "SyncModel",
                "SyncWire",
                "SyncStorage",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The embedded SyncStore on a SQLite file (GRDB), for a single node.
        .target(
            name: "SQLiteStore",
            dependencies: [
                "SyncModel",
                "SyncWire",
                "SyncStorage",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The client library: a SQLite replica with optimistic edits, reconciliation and reconnects.
        .target(
            name: "SyncClient",
            dependencies: [
                "SyncModel",
                "SyncWire",
                "SyncTransport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The deterministic simulator: the engines under a seeded scheduler, network and faults.
        .target(
            name: "SyncSimulation",
            dependencies: ["SyncModel", "SyncWire", "SyncStorage", "SyncServer", "SyncClient"]
        ),
        .executableTarget(
            name: "coursesync",
            dependencies: [
                "SyncModel",
                "SyncWire",
                "SyncTransport",
                "SyncStorage",
                "SyncServer",
                "PostgresStore",
                "SQLiteStore",
                "SyncClient",
                "SyncSimulation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The live course editor page (`serve --http-listen … --web`): static files, no build step.
            resources: [.copy("Web")]
        ),
        // An example app on the client library's public API alone: without package access, the
        // library's `package` declarations are out of its reach, as for an app in another package.
        .executableTarget(
            name: "coursesync-outline",
            dependencies: ["SyncClient"],
            path: "Examples/CourseOutline",
            packageAccess: false
        ),
        // The README's client example, compiled the same way, and checked to match the README.
        .testTarget(name: "ReadmeExampleTests", dependencies: ["SyncClient"], packageAccess: false),
        .testTarget(name: "SyncModelTests", dependencies: ["SyncModel"]),
        .testTarget(name: "SimulationTests", dependencies: ["SyncSimulation"]),
        .testTarget(name: "SyncStorageTests", dependencies: ["SyncStorage", "SyncModel"]),
        // What the integration tests share: a private PostgreSQL cluster, a server on a free port,
        // a raw protocol client, a breakable proxy, child processes, WebDriver. The test targets
        // reach it with `@testable import` (debug builds, as `swift test` makes).
        .target(
            name: "TestSupport",
            dependencies: serverStack + [
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            path: "Tests/Support"
        ),
        // The client library: its engine without sockets (a model server drives it), its replica's
        // schema, and the library against a real server over real TCP.
        .testTarget(
            name: "SyncClientTests",
            dependencies: [
                "SyncClient", "SyncModel", "SyncWire", "SyncStorage", "SyncServer", "PostgresStore", "SQLiteStore", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // Both stores under one conformance suite, the migrations, copying, plans, the schema's
        // parity and the files' permissions, on real PostgreSQL and real SQLite files.
        .testTarget(
            name: "StoreTests",
            dependencies: [
                "SyncModel", "SyncWire", "SyncStorage", "PostgresStore", "SQLiteStore", "SyncServer", "SyncClient", "SyncSimulation", "TestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        // The server over real TCP, TLS, WebSocket and HTTP, on real PostgreSQL and SQLite.
        .testTarget(
            name: "SyncServerTests",
            dependencies: serverStack + [
                // The in-memory backend (the simulator's database) under the failure tests.
                "SyncSimulation",
                "TestSupport",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The command-line tool as an operator runs it (the built binary: depending on the
        // executable makes `swift test` build it), the editor page in real Chromium and its model
        // under Node.
        .testTarget(
            name: "CourseSyncCLITests",
            dependencies: [
                "coursesync", "SyncModel", "SyncWire", "SyncServer", "SQLiteStore", "SyncStorage", "TestSupport",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Web"]
        ),
        .testTarget(
            name: "SyncWireTests",
            dependencies: [
                "SyncModel",
                "SyncWire",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // The frame codec and pipeline handlers on NIO's embedded channel.
        .testTarget(
            name: "SyncTransportTests",
            dependencies: [
                "SyncModel",
                "SyncWire",
                "SyncTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
