import Foundation
import Logging
import SQLiteStore
@testable import SyncClient
import SyncModel
import SyncServer
import Testing

/// A folder for one test's replica files, removed afterwards.
func withReplicaFolder<T>(_ body: (URL) async throws -> T) async throws -> T {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("coursesync-replicas-\(UInt64.random(in: 0 ... .max))")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    return try await body(folder)
}

extension TestServer {
    /// A ``SyncClient`` with an editor token on a replica file in `folder` (reopened if it exists).
    func client(of courseID: EntityID, in folder: URL, name: String, port: Int? = nil,
                configure: (inout ClientConfiguration) -> Void = { _ in }) async throws -> SyncClient {
        var configuration = ClientConfiguration(port: port ?? self.port, token: token([courseID: .editor], user: name))
        configuration.reconnectBase = .milliseconds(20)
        configuration.reconnectCap = .milliseconds(200)
        configure(&configuration)
        return try await SyncClient.open(path: folder.appendingPathComponent("\(name).replica").path, courseID: courseID,
                                         configuration: configuration, logger: TestDatabase.logger)
    }
}

/// Collects a client's events in the background.
final class EventLog: Sendable {
    private let task: Task<[ClientEvent], Never>

    init(_ client: SyncClient) {
        task = Task { await client.events.reduce(into: []) { $0.append($1) } }
    }

    /// Every event up to the client's close.
    func all() async -> [ClientEvent] { await task.value }

    static func rejections(_ events: [ClientEvent]) -> [Rejected] {
        events.compactMap { if case .rejected(let rejected) = $0 { rejected } else { nil } }
    }

    static func notes(_ events: [ClientEvent]) -> [ResolutionNote] {
        events.compactMap { if case .resolution(_, let note) = $0 { note } else { nil } }
    }
}

/// Polls `condition` every few milliseconds until it holds; fails the test after `seconds`.
func eventually(_ what: String, seconds: Double = 15, sourceLocation: SourceLocation = #_sourceLocation,
                _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    Issue.record("timed out waiting until \(what)", sourceLocation: sourceLocation)
    throw CancellationError()
}

/// The replica's invariant: what it shows is the confirmed state with the pending batches replayed
/// by the resolver, and the rows stored in the file are exactly that state.
func expectVisibleIsReplay(_ client: SyncClient, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let (confirmed, pending, temps, visible) = await client.internals()
    let replayed = Replay.replay(pending.map(\.batch), onto: confirmed, knownTemps: temps).visible
    #expect(visible == replayed, "the visible state is not confirmed + pending replayed", sourceLocation: sourceLocation)
    let outline = try await client.outline()
    #expect(OutlineShape(outline) == OutlineShape(visible), "the replica file does not show the visible state", sourceLocation: sourceLocation)
}

/// The client is settled and its replica equals the server's database row for row.
func expectConverged(_ client: SyncClient, _ database: TestDatabase, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let confirmed = await client.confirmedState
    try await expectDatabase(database, equals: confirmed, sourceLocation: sourceLocation)
    #expect(await client.visibleState == confirmed, "visible differs from confirmed after settling", sourceLocation: sourceLocation)
    #expect(await client.pendingBatches.isEmpty, sourceLocation: sourceLocation)
    let outline = try await client.outline()
    #expect(OutlineShape(outline) == OutlineShape(confirmed), sourceLocation: sourceLocation)
    let rows = outline.chapters.flatMap { [($0.chapter.id, $0.chapter.status)] + $0.videos.map { ($0.id, $0.status) } }
    #expect(rows.allSatisfy { $0.0 != nil && !$0.0!.isProvisional && $0.1 == .confirmed }, "a row is pending or has no real ID",
            sourceLocation: sourceLocation)
}

/// An outline reduced to what must match between the file and a state: IDs (provisional for
/// unconfirmed rows), titles, positions and versions, in order.
struct OutlineShape: Hashable, CustomStringConvertible {
    var lines: [String]

    init(_ outline: Outline) {
        lines = outline.chapters.flatMap { entry in
            ["\(entry.chapter.id ?? entry.chapter.key.rawValue) \(entry.chapter.title) @\(entry.chapter.position) v\(entry.chapter.version)"]
                + entry.videos.map { "  \($0.id ?? $0.key.rawValue) \($0.title) @\($0.position)" }
        }
    }

    init(_ state: CourseState) {
        lines = state.orderedChapters.flatMap { chapter in
            ["\(chapter.id) \(chapter.title) @\(chapter.position) v\(chapter.version)"]
                + state.videos(in: chapter.id).map { "  \($0.id) \($0.title) @\($0.position)" }
        }
    }

    var description: String { lines.joined(separator: "\n") }
}

extension SyncClient {
    /// The engine's state, for invariant checks.
    func internals() -> (CourseState, [ClientCore.PendingBatch], [TempID: EntityID], CourseState) {
        (confirmedState, coreForTests.pending, coreForTests.knownTemps, visibleState)
    }
}

/// What most client tests need: a database with a course (`chapters` chapters, `media` media
/// files), a server on it, a breakable proxy in front of the server, and a folder for replicas.
struct ClientWorld {
    let database: TestDatabase
    let server: TestServer
    let proxy: TestProxy
    let folder: URL
    let courseID: EntityID
    let chapters: [EntityID]
    let media: [EntityID]

    /// A client with its own replica, connected through the proxy unless `direct`.
    func client(_ name: String, direct: Bool = false, configure: (inout ClientConfiguration) -> Void = { _ in }) async throws -> SyncClient {
        try await server.client(of: courseID, in: folder, name: name, port: direct ? server.port : proxy.port, configure: configure)
    }
}

func withClientWorld(chapters: Int, media: Int, _ body: (ClientWorld) async throws -> Void) async throws {
    try await withDatabase { database in
        let (courseID, chapterIDs, mediaIDs) = try await database.makeCourse(chapters: chapters, media: media)
        try await withServer(store: database.store) { server in
            let proxy = try await TestProxy(targetPort: server.port)
            defer { Task { await proxy.close() } }
            try await withReplicaFolder { folder in
                try await body(ClientWorld(database: database, server: server, proxy: proxy, folder: folder,
                                           courseID: courseID, chapters: chapterIDs, media: mediaIDs))
            }
        }
    }
}

/// A SQLite store with one course, served on loopback, in a scratch folder: what most tests of
/// the client library start from.
func withCourseServer<T>(_ title: String = "Course", configure: (inout ServerConfiguration) -> Void = { _ in }, logger: Logger = TestDatabase.logger,
                         _ body: (_ folder: URL, _ store: SQLiteStore, _ course: EntityID, _ server: TestServer) async throws -> T) async throws -> T {
    try await withReplicaFolder { folder in
        let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
        let course = EntityID.fresh()
        try await store.createCourse(Course(id: course, title: title))
        return try await withServer(store: store, configure: configure, logger: logger) { server in try await body(folder, store, course, server) }
    }
}
