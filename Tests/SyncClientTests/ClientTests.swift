import Foundation
@testable import SyncClient
import SyncModel
import SyncServer
import Testing
@testable import TestSupport

/// The client library against a real server on a real PostgreSQL, with real replica files.
@Suite(.timeLimit(.minutes(2)))
struct ClientTests {
    @Test func threeClientsLinkingIntoOneChapterConvergeRowForRow() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 1, media: 12)
            try await withServer(store: database.store) { server in
                try await withReplicaFolder { folder in
                    var clients: [SyncClient] = []
                    for name in ["ada", "grace", "linus"] { clients.append(try await server.client(of: courseID, in: folder, name: name)) }
                    for client in clients { try await client.settle() }
                    let chapter = LocalKey(chapters[0])
                    // Overlapping media: ada 0–5, grace 3–8, linus 6–11, in two edits each.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for (index, client) in clients.enumerated() {
                            group.addTask {
                                let mine = media[(index * 3)..<(index * 3 + 6)].map(LocalKey.init)
                                try await client.linkMedia(Array(mine.prefix(3)), to: chapter)
                                try await client.linkMedia(Array(mine.suffix(3)), to: chapter, placement: .atStart)
                                try await client.settle()
                            }
                        }
                        try await group.waitForAll()
                    }
                    // Every client has seen every commit.
                    let seq = try await database.store.snapshot(courseID: courseID).seq
                    for client in clients { try await eventually("every client reached seq \(seq)") { await client.cursor == seq } }
                    for client in clients { try await expectConverged(client, database) }
                    let outlines = try await clients.asyncMap { try await $0.outline() }
                    #expect(Set(outlines.map { OutlineShape($0) }).count == 1, "the three replicas differ")
                    let state = try await database.store.snapshot(courseID: courseID)
                    #expect(Set(state.videos(in: chapters[0]).map(\.mediaFileID)) == Set(media), "every media file linked exactly once")
                    #expect(state.videos(in: chapters[0]).count == 12)
                    for client in clients { try await client.close() }
                }
            }
        }
    }

    @Test func anOptimisticChapterWithVideosLinkedBeforeItsAckEndsWithRealIDs() async throws {
        try await withClientWorld(chapters: 0, media: 3) { world in
            let (database, proxy, courseID, media) = (world.database, world.proxy, world.courseID, world.media)
            let client = try await world.client("ada") { $0.coalesceWindow = .zero }
            let events = EventLog(client)
            try await client.settle()
            // Hold what the client sends: the link is made, and sent, before the chapter's ack exists.
            proxy.set(.holdUpstream)
            let chapter = try await client.createChapter(title: "Made offline-fast")
            let videos = try await client.linkMedia(media.map(LocalKey.init), to: chapter)
            try await client.renameVideo(videos[1], to: "Second, renamed")
            #expect(await client.pendingBatches.count == 3)
            let optimistic = try await client.outline()
            #expect(optimistic.chapters.map(\.chapter.key) == [chapter])
            #expect(optimistic.chapters[0].chapter.status == .pending && optimistic.chapters[0].chapter.id == nil)
            #expect(optimistic.chapters[0].videos.map(\.key) == videos)
            #expect(optimistic.chapters[0].videos.allSatisfy { $0.chapterKey == chapter && $0.status == .pending })
            try await expectVisibleIsReplay(client)

            proxy.set(.pass)
            try await client.settle()
            try await expectConverged(client, database)
            let outline = try await client.outline()
            // The keys did not change; the real IDs arrived; the references hold.
            #expect(outline.chapters.map(\.chapter.key) == [chapter])
            let chapterID = try #require(outline.chapters[0].chapter.id)
            #expect(outline.chapters[0].videos.map(\.key) == videos)
            #expect(outline.chapters[0].videos.map(\.title) == ["Media 0", "Second, renamed", "Media 2"])
            let state = try await database.store.snapshot(courseID: courseID)
            #expect(state.videos(in: chapterID).map(\.id) == outline.chapters[0].videos.map(\.id!))
            try await client.close()
            let acks = await events.all().compactMap { if case .acked(_, _, let ids) = $0 { ids } else { nil } }
            #expect(acks.count == 3)
            #expect(acks.first?[chapter] == chapterID)
        }
    }

    @Test func aRejectedBatchRollsBackExactlyWithTheBatchesThatDependOnIt() async throws {
        try await withClientWorld(chapters: 2, media: 4) { world in
            let (database, proxy, chapters, media) = (world.database, world.proxy, world.chapters, world.media)
            let ada = try await world.client("ada") { $0.coalesceWindow = .zero }
            let grace = try await world.client("grace", direct: true)
            let events = EventLog(ada)
            try await ada.settle()
            try await grace.settle()
            let doomed = LocalKey(chapters[0])
            proxy.set(.holdUpstream)
            let linked = try await ada.linkMedia([LocalKey(media[0]), LocalKey(media[1])], to: doomed)   // batch 1
            try await ada.renameVideo(linked[0], to: "Depends on batch 1")                                  // batch 2
            let kept = try await ada.createChapter(title: "Independent")                                    // batch 3
            try await ada.linkMedia([LocalKey(media[2])], to: kept)                                         // batch 4
            let batches = await ada.pendingBatches
            #expect(batches.count == 4)

            // Meanwhile grace deletes the chapter ada is linking into.
            try await grace.deleteChapter(doomed)
            try await grace.settle()
            let afterDelete = await grace.cursor
            try await eventually("ada saw the delete") { await ada.cursor == afterDelete }
            try await expectVisibleIsReplay(ada)
            #expect(await ada.visibleState.chapters[chapters[0]] == nil)

            proxy.set(.pass)
            try await ada.settle()
            try await expectConverged(ada, database)
            let outline = try await ada.outline()
            #expect(outline.chapters.map(\.chapter.title) == ["Chapter 1", "Independent"])
            #expect(outline.chapters[1].chapter.key == kept)
            #expect(outline.chapters[1].videos.map(\.mediaKey) == [LocalKey(media[2])])
            try await ada.close()
            try await grace.close()

            let rejections = EventLog.rejections(await events.all())
            #expect(rejections.count == 1)
            let rejected = try #require(rejections.first)
            #expect(rejected.code == .targetDeleted && rejected.batchSeq == batches[0].batchSeq)
            #expect(rejected.droppedEdits.map(\.batchSeq) == [batches[0].batchSeq, batches[1].batchSeq])
            #expect(rejected.droppedEdits.map(\.operation) == batches[0].ops + batches[1].ops)
        }
    }

    @Test func aConnectionKilledAfterSendingAndBeforeTheAckAppliesEachEditOnce() async throws {
        try await withClientWorld(chapters: 1, media: 3) { world in
            let (database, proxy, courseID, chapters, media) = (world.database, world.proxy, world.courseID, world.chapters, world.media)
            let client = try await world.client("ada")
            try await client.settle()
            let before = try await database.store.snapshot(courseID: courseID).seq
            // The server's answers are lost: the batch commits, the client never hears of it.
            proxy.set(.dropDownstream)
            try await client.linkMedia(media.map(LocalKey.init), to: LocalKey(chapters[0]))
            await client.seal()
            try await eventually("the batch committed") { try await database.store.snapshot(courseID: courseID).seq == before + 1 }
            #expect(await client.pendingBatches.count == 1)
            proxy.cutAll()
            proxy.set(.pass)
            try await client.settle()
            let state = try await database.store.snapshot(courseID: courseID)
            #expect(state.seq == before + 1, "the resent batch was applied again")
            #expect(state.videos(in: chapters[0]).map(\.mediaFileID) == media)
            try await expectConverged(client, database)
            #expect(await client.stats.acks == 1)
            try await client.close()
        }
    }

    @Test func pendingEditsSurviveClosingTheReplicaWhileTheServerIsDown() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 1, media: 2)
            try await withReplicaFolder { folder in
                // The client always dials the proxy's port; behind it a server runs, or none does.
                let (proxy, token) = try await withServer(store: database.store) { server in
                    let proxy = try await TestProxy(targetPort: server.port)
                    // First run: the replica catches up, then the server shuts down.
                    let client = try await server.client(of: courseID, in: folder, name: "ada", port: proxy.port)
                    try await client.settle()
                    try await client.close()
                    return (proxy, server.token([courseID: .editor]))
                }
                defer { Task { await proxy.close() } }
                var configuration = ClientConfiguration(port: proxy.port, token: token)
                configuration.reconnectBase = .milliseconds(5)
                configuration.reconnectCap = .milliseconds(50)
                let path = folder.appendingPathComponent("ada.replica").path
                // Second run, no server: edits queue up, the replica closes.
                let chapter: LocalKey
                do {
                    let client = try await SyncClient.open(path: path, courseID: courseID, configuration: configuration)
                    chapter = try await client.createChapter(title: "Written on a plane", placement: .atStart)
                    try await client.linkMedia(media.map(LocalKey.init), to: chapter)
                    try await client.renameChapter(LocalKey(chapters[0]), to: "Renamed offline")
                    #expect(await client.phase != .live)
                    try await client.close()
                }
                // Third run: the edits are still there, pending; a server starts and they sync.
                let client = try await SyncClient.open(path: path, courseID: courseID, configuration: configuration)
                let reopened = try await client.outline()
                #expect(reopened.chapters.map(\.chapter.title) == ["Written on a plane", "Renamed offline"])
                #expect(reopened.chapters.map(\.chapter.status) == [.pending, .pending])
                #expect(reopened.chapters[0].chapter.key == chapter)
                #expect(await client.pendingBatches.flatMap(\.ops).count == 3)
                try await withServer(store: database.store) { server in
                    proxy.retarget(server.port)
                    try await client.settle()
                    try await expectConverged(client, database)
                    let outline = try await client.outline()
                    #expect(outline.chapters.map(\.chapter.title) == ["Written on a plane", "Renamed offline"])
                    #expect(outline.chapters[0].chapter.key == chapter)
                    #expect(outline.chapters[0].videos.map(\.mediaKey) == media.map(LocalKey.init))
                    try await client.close()
                }
            }
        }
    }

    @Test func pendingEditsAreRebasedOnRemoteMovesRenamesAndDeletes() async throws {
        try await withClientWorld(chapters: 2, media: 4) { world in
            let (database, proxy, courseID, chapters, media) = (world.database, world.proxy, world.courseID, world.chapters, world.media)
            let (x, z) = (LocalKey(chapters[0]), LocalKey(chapters[1]))
            let ada = try await world.client("ada") { $0.coalesceWindow = .zero }
            let grace = try await world.client("grace", direct: true)
            let events = EventLog(ada)
            try await grace.settle()
            let videos = try await grace.linkMedia(media.prefix(3).map(LocalKey.init), to: x)
            try await grace.settle()
            let graceSeq = await grace.cursor
            try await eventually("ada caught up") { await ada.cursor == graceSeq }
            // Keys are per replica: grace's rows have grace's keys; ada knows them by their real IDs.
            let ids = try await grace.outline().chapters[0].videos.map { $0.id! }
            #expect(ids.count == 3 && videos.count == 3)
            let (v0, v1, v2) = (LocalKey(ids[0]), LocalKey(ids[1]), LocalKey(ids[2]))

            proxy.set(.holdUpstream)
            try await ada.renameVideo(v0, to: "Ada's title")
            try await ada.moveVideo(v1, to: z, placement: .atStart)
            let linked = try await ada.linkMedia([LocalKey(media[3])], to: x, placement: .after(v2))
            let newChapter = try await ada.createChapter(title: "Ada's chapter", placement: .after(x))
            try await expectVisibleIsReplay(ada)

            // Grace renames the same video, moves ada's anchor away, deletes the video ada moves.
            for step in 0..<3 {
                switch step {
                case 0: try await grace.renameVideo(videos[0], to: "Grace's title")
                case 1: try await grace.moveVideo(videos[2], to: z)
                default: try await grace.unlinkVideo(videos[1])
                }
                try await grace.settle()
                let seq = await grace.cursor
                try await eventually("ada received step \(step)") { await ada.cursor == seq }
                try await expectVisibleIsReplay(ada)
            }
            // The move of a deleted video is predicted to fail and already left out.
            #expect(await ada.visibleState.videos[ids[1]] == nil)

            proxy.set(.pass)
            try await ada.settle()
            try await grace.settle()
            let seq = try await database.store.snapshot(courseID: courseID).seq
            try await eventually("both at seq \(seq)") {
                let (a, g) = (await ada.cursor, await grace.cursor)
                return a == seq && g == seq
            }
            try await expectConverged(ada, database)
            try await expectConverged(grace, database)
            let state = try await database.store.snapshot(courseID: courseID)
            #expect(state.videos[ids[0]]?.title == "Ada's title", "the later rename wins")
            #expect(state.videos(in: chapters[0]).last?.mediaFileID == media[3], "the anchor moved away: placed at the end")
            #expect(state.orderedChapters.map(\.title) == ["Chapter 0", "Ada's chapter", "Chapter 1"])
            let outline = try await ada.outline()
            #expect(outline.chapters[1].chapter.key == newChapter)
            #expect(outline.chapters[0].videos.last?.key == linked[0])
            try await ada.close()
            try await grace.close()
            let all = await events.all()
            #expect(EventLog.rejections(all).map(\.code) == [.targetDeleted])
            #expect(EventLog.notes(all).contains { if case .anchorMissing = $0 { true } else { false } })
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

/// A caller's timeout around `settle()` cancels it: the wait must end (it used to wait on an
/// unanswered continuation for ever, so `coursesync client` hung when the server came up late).
@Suite struct SettleCancellationTests {
    @Test func aCancelledSettleEndsWithCancellationError() async throws {
        try await withReplicaFolder { folder in
            // Nothing listens on this port: the client keeps retrying and never settles.
            let port = PostgresCluster.freePort()
            let client = try await SyncClient.open(path: folder.appendingPathComponent("alone.replica").path, courseID: .fresh(),
                                                   configuration: ClientConfiguration(port: port, token: "t"))
            let waiting = Task { try await client.settle() }
            try await Task.sleep(for: .milliseconds(50))
            waiting.cancel()
            await #expect(throws: CancellationError.self) { try await waiting.value }
            try await client.close()
        }
    }
}
