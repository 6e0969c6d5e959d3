import Foundation
import PostgresNIO
import PostgresStore
@testable import SyncClient
import SyncModel
import SyncServer
import SyncStorage
import Testing
@testable import TestSupport

/// PostgreSQL fails over under a running deployment: a primary with a synchronous standby
/// (`pg_basebackup -R`, `synchronous_standby_names`), two server nodes given both hosts
/// (`target_session_attrs=read-write`), editors pushing and subscribed through both nodes with
/// the client library; the primary is killed (no shutdown, as a lost machine) and the standby
/// promoted. Nothing acknowledged may be lost, every edit must be answered, and every client
/// must end live at the new primary's state.
@Suite(.timeLimit(.minutes(4))) struct FailoverTests {
    @Test func aPromotedStandbyTakesOverWithNothingAcknowledgedLostAndEveryClientLive() async throws {
        let primary = try PostgresCluster.start(settings: "-c max_connections=200 -c fsync=on -c synchronous_standby_names='*'")
        defer { primary.stop() }
        let standby = try PostgresCluster.startStandby(of: primary)
        defer { standby.stop() }
        let setUp = try await TestDatabase.make(on: primary)
        let (courseID, chapters, media) = try await setUp.makeCourse(chapters: 2, media: 48)
        await setUp.close()

        let url = "postgres://postgres@127.0.0.1:\(primary.port),127.0.0.1:\(standby.port)/\(setUp.name)"
            + "?sslmode=disable&target_session_attrs=read-write&connect_timeout=2"
        let target = try PostgresURL.target(url)
        let hosts = try (0..<2).map { _ in try PostgresPrimary(target: target, logger: TestDatabase.logger) }
        let pools = hosts.map { host in Task { await host.run() } }
        defer { pools.forEach { $0.cancel() } }
        for host in hosts { try await host.locate() }
        let stores = hosts.map { PostgresStore(primary: $0, logger: TestDatabase.logger, onFailure: { _ in }) }

        try await withServer(store: stores[0]) { nodeA in
            try await withServer(store: stores[1]) { nodeB in
                let listeners = zip(stores, [nodeA, nodeB]).map { store, node in
                    Task { try await CommitListener(store: store, server: node.server, checkInterval: .seconds(1)).run() }
                }
                defer { listeners.forEach { $0.cancel() } }
                try await withReplicaFolder { folder in
                    // Two editors on each node; each links its own twelve files, one at a time,
                    // and renames a chapter after each.
                    let editors = try await withThrowingTaskGroup(of: SyncClient.self) { group in
                        for index in 0..<4 {
                            group.addTask { try await (index < 2 ? nodeA : nodeB).client(of: courseID, in: folder, name: "editor\(index)") }
                        }
                        return try await group.reduce(into: []) { $0.append($1) }
                    }
                    let logs = editors.map(EventLog.init)
                    for editor in editors { try await editor.settle() }
                    let editing = editors.enumerated().map { index, editor in
                        Task {
                            let ownMedia = media[(index * 12)..<(index * 12 + 12)]
                            for (step, file) in ownMedia.enumerated() {
                                let chapter = await editor.key(for: chapters[step % 2])
                                _ = try await editor.linkMedia([editor.key(for: file)], to: chapter)
                                try await editor.renameChapter(chapter, to: "Editor \(index), step \(step)")
                                try await Task.sleep(for: .milliseconds(40))
                            }
                        }
                    }
                    // Some edits are committed on the primary first.
                    try await eventually("edits were acknowledged before the failure", seconds: 30) {
                        await editors.asyncMap { await $0.cursor }.min()! >= 8
                    }
                    try primary.kill()
                    try await Task.sleep(for: .milliseconds(300))
                    try standby.promote()
                    for task in editing { try await task.value }
                    // Every edit answered (a bound for a hang, not a figure: the failover takes seconds).
                    for editor in editors { await editor.seal() }
                    try await eventually("every editor's edits are answered", seconds: 90) {
                        await editors.asyncMap { await $0.isSettled }.allSatisfy { $0 }
                    }

                    // The new primary holds every batch each editor was told was committed, at the
                    // seq it was told.
                    let promoted = PostgresClient(configuration: standby.configuration(database: setUp.name), backgroundLogger: TestDatabase.logger)
                    let promotedPool = Task { await promoted.run() }
                    defer { promotedPool.cancel() }
                    var stored: [ClientID: [BatchSeq: CourseSeq]] = [:]
                    for try await (client, batchSeq, seq) in try await promoted.query("""
                        SELECT client_id, batch_seq, seq FROM client_batches WHERE course_id = \(courseID.uuid)
                        """).decode((UUID, Int64, Int64).self) {
                        stored[ClientID(EntityID(client)), default: [:]][BatchSeq(bitPattern: batchSeq)] = CourseSeq(seq)
                    }
                    let state = try await PostgresStore(client: promoted, logger: TestDatabase.logger).snapshot(courseID: courseID)
                    for editor in editors {
                        try await eventually("every client is live at seq \(state.seq)") { await editor.cursor == state.seq }
                        #expect(await editor.confirmedState == state, "a client is live at the new primary's state")
                    }
                    for (editor, log) in zip(editors, logs) {
                        let clientID = editor.clientID
                        try await editor.close()
                        let acked = await log.all().compactMap { event -> (BatchSeq, CourseSeq)? in
                            if case .acked(let batchSeq, let seq, _) = event { (batchSeq, seq) } else { nil }
                        }
                        #expect(!acked.isEmpty)
                        for (batchSeq, seq) in acked {
                            #expect(stored[clientID]?[batchSeq] == seq, "batch \(batchSeq) of \(clientID) was acknowledged at seq \(seq)")
                        }
                        #expect(EventLog.rejections(await log.all()).isEmpty)
                    }
                    // Every edit landed once: 48 links, and each chapter's last rename.
                    #expect(state.videos.count == 48)
                    #expect(Set(state.videos.values.map(\.mediaFileID)) == Set(media))
                    #expect(state.invariantViolations().isEmpty)
                }
            }
        }
    }
}
