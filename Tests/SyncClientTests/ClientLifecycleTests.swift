import Foundation
import GRDB
import Logging
import ServiceLifecycle
import SQLiteStore
import SyncClient
import SyncModel
import SyncServer
import Testing
@testable import TestSupport

/// The client's lifetime is its `run()`'s: started in the caller's task tree, stopped by
/// cancellation or a graceful shutdown, leaving nothing running; and its errors say what happened.
@Suite struct ClientLifecycleTests {
    @Test func cancellingRunStopsSyncingAndLeavesNothingRunning() async throws {
        try await withCourseServer { folder, store, course, server in
            let path = folder.appendingPathComponent("ada.replica").path
            let client = try SyncClient(path: path, courseID: course,
                                        configuration: ClientConfiguration(port: server.port, token: server.token([course: .editor])),
                                        logger: TestDatabase.logger)
            // Made before syncing starts: kept in the replica, sent once run() connects.
            let chapter = try await client.createChapter(title: "Made offline")
            #expect(server.server.connectionCount == 0)
            let run = Task { try await client.run() }
            try await client.settle()
            #expect(try await store.courseSeq(course) == 1)
            #expect(server.server.connectionCount == 1)

            run.cancel()
            try await run.value
            // Its connection is closed, its events have ended, and it takes no more edits.
            try await eventually("the server saw the connection close") { server.server.connectionCount == 0 }
            for await _ in client.events {}
            await #expect(throws: EditError.closed) { try await client.renameChapter(chapter, to: "Too late") }
            await #expect(throws: SyncError.closed) { try await client.settle() }
            await #expect(throws: SyncError.closed) { try await client.run() }

            // The replica holds what was synced.
            let again = try SyncClient(path: path, courseID: course, configuration: ClientConfiguration(port: server.port, token: ""))
            let outline = try await again.outline()
            #expect(outline.chapters.map(\.chapter.title) == ["Made offline"] && outline.pendingCount == 0)
        }
    }

    /// Two clients on one replica file would speak as one client (its ID and batch seqs) with two
    /// different engines: the second is refused, in this process or from another, until the first
    /// closes.
    @Test func aReplicaFileServesOneClientAtATime() async throws {
        try await withCourseServer { folder, _, course, server in
            let path = folder.appendingPathComponent("ada.replica").path
            let configuration = ClientConfiguration(port: server.port, token: server.token([course: .editor]))
            let first = try await SyncClient.open(path: path, courseID: course, configuration: configuration, logger: TestDatabase.logger)
            try await first.createChapter(title: "One")
            try await first.settle()
            #expect(throws: ReplicaError.inUse(file: path)) {
                try SyncClient(path: path, courseID: course, configuration: configuration, logger: TestDatabase.logger)
            }
            try await first.close()
            let second = try SyncClient(path: path, courseID: course, configuration: configuration, logger: TestDatabase.logger)
            #expect(second.clientID == first.clientID)
            #expect(try await second.outline().chapters.map(\.chapter.title) == ["One"])
            try await second.close()

            // Another process holding the file (util-linux's flock(1), the same kind of lock; -o: the
            // lock is flock's own, not inherited by the sleep it runs, so killing flock releases it).
            let holder = try Subprocess(["-o", "-x", path, "sleep", "60"], executable: "/usr/bin/flock")
            defer { holder.signal(SIGKILL) }
            try await eventually("the other process to hold the file") {
                let probe = try await Subprocess.run(["-n", "-x", path, "true"], executable: "/usr/bin/flock")
                return probe.status != 0
            }
            #expect(throws: ReplicaError.inUse(file: path)) {
                try SyncClient(path: path, courseID: course, configuration: configuration, logger: TestDatabase.logger)
            }
            holder.signal(SIGKILL)
            _ = try await holder.wait()
            try await SyncClient(path: path, courseID: course, configuration: configuration, logger: TestDatabase.logger).close()
        }
    }

    @Test func aGracefulShutdownOfItsServiceGroupStopsIt() async throws {
        try await withCourseServer { folder, store, course, server in
            let client = try SyncClient(path: folder.appendingPathComponent("ada.replica").path, courseID: course,
                                        configuration: ClientConfiguration(port: server.port, token: server.token([course: .editor])),
                                        logger: TestDatabase.logger)
            let group = ServiceGroup(services: [client], logger: TestDatabase.logger)
            let running = Task { try await group.run() }
            try await client.createChapter(title: "Synced")
            try await client.settle()
            await group.triggerGracefulShutdown()
            try await running.value
            try await eventually("the server saw the connection close") { server.server.connectionCount == 0 }
            await #expect(throws: EditError.closed) { try await client.createChapter(title: "Too late") }
            #expect(try await store.courseSeq(course) == 1)
        }
    }

    /// A refused client's run ends with the refusal (a service that cannot work says so).
    @Test func aRefusedClientsRunThrowsTheRefusal() async throws {
        try await withCourseServer { folder, _, course, server in
            let client = try SyncClient(path: folder.appendingPathComponent("ada.replica").path, courseID: course,
                                        configuration: ClientConfiguration(port: server.port, token: server.token([EntityID.fresh(): .editor])),
                                        logger: TestDatabase.logger)
            await #expect { try await client.run() } throws: { error in
                guard case SyncError.refused(let code, _) = error else { return false }
                return code == .forbidden || code == .unknownCourse
            }
        }
    }

    /// A replica that cannot be written stops the client with a storage error, which the edit
    /// that could not be stored throws (not a "refused" connection error, not a log line).
    @Test func aReplicaThatCannotBeWrittenIsAStorageError() async throws {
        try await withCourseServer { folder, _, course, server in
            let path = folder.appendingPathComponent("ada.replica").path
            let client = try await SyncClient.open(path: path, courseID: course,
                                                   configuration: ClientConfiguration(port: server.port, token: server.token([course: .editor])),
                                                   logger: TestDatabase.logger)
            try await client.settle()
            // The file may not grow by a page more (as a full disk would refuse it).
            try await client.limitReplicaGrowth()
            var thrown: (any Error)?
            for index in 0..<500 where thrown == nil {
                do { try await client.createChapter(title: String(repeating: "Long title \(index) ", count: 20)) } catch { thrown = error }
            }
            guard case SyncError.storage(let file, _)? = thrown else { Issue.record("expected a storage error, got \(String(describing: thrown))"); return }
            #expect(file == path)
            await #expect { try await client.settle() } throws: { if case SyncError.storage = $0 { true } else { false } }
            try? await client.close()
        }
    }
}
