import Foundation
import Logging
import SQLiteStore
import SyncModel
import SyncServer

/// A server on a SQLite store in `folder`, in this process, on a free loopback port, with a fresh
/// secret: what `demo` and `bench local` run against.
struct EmbeddedServer {
    let store: SQLiteStore
    let authority: TokenAuthority
    let server: SyncServer
    let port: Int

    /// Runs `body` with the server listening; shuts it down (draining) afterwards.
    static func with<T>(folder: URL, name: String, logger: Logger, _ body: (EmbeddedServer) async throws -> T) async throws -> T {
        let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
        let authority = try await TokenAuthority(secret: Array(TokenSecret.generate().utf8))
        let server = SyncServer(store: store, authority: authority,
                                configuration: ServerConfiguration(host: "127.0.0.1", port: 0, serverID: name), logger: logger)
        let serving = Task { try await server.run() }
        defer { serving.cancel() }
        let embedded = EmbeddedServer(store: store, authority: authority, server: server, port: try await server.listeningPort())
        let result = try await body(embedded)
        await server.shutDown()
        _ = await serving.result
        return result
    }

    /// A token for `user` with `role` in `courseID`, valid for a day.
    func token(_ user: String, _ role: Role, in courseID: EntityID) async throws -> String {
        try await authority.issue(TokenClaims(user: user, expires: Date().addingTimeInterval(86_400), courses: [courseID: role]))
    }
}

/// A folder for scratch files: `kept` if given (and kept), else a new temporary one removed afterwards.
func withScratchFolder<T>(_ prefix: String, kept: String? = nil, _ body: (URL) async throws -> T) async throws -> T {
    let folder = kept.map { URL(fileURLWithPath: $0) }
        ?? FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UInt64.random(in: 0 ... .max))")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { if kept == nil { try? FileManager.default.removeItem(at: folder) } }
    return try await body(folder)
}

/// Runs `body`; if it has not finished after `seconds`, cancels it and throws `failure()`.
func withTimeout(_ seconds: Double, _ body: @escaping @Sendable () async throws -> Void,
                 failure: @escaping @Sendable () async -> any Error) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
            throw await failure()
        }
        try await group.next()
        group.cancelAll()
    }
}
