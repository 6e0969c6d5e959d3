import Foundation
import SyncModel
import SyncServer
import SyncWire
import Testing
@testable import TestSupport

/// Exactly-once resends and catching up from a cursor.
@Suite struct CatchUpTests {
    @Test func aBatchResentAfterADroppedConnectionGetsTheIdenticalAckAndChangesNothing() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 1, media: 4)
            try await withServer(store: database.store) { server in
                let clientID = ClientID(.fresh())
                let ops: [SyncModel.Operation] = [
                    .createChapter(temp: TempID(1)!, title: "Fresh", placement: .atStart),
                    .linkMedia(chapter: .temp(TempID(1)!), items: media.enumerated().map { LinkItem(temp: TempID(UInt64(10 + $0.offset))!, media: .id($0.element)) }, placement: .atEnd),
                    .linkMedia(chapter: .id(chapters[0]), items: [LinkItem(temp: TempID(20)!, media: .id(media[0]))], placement: .atEnd),
                ]
                let first = try await server.editor(of: courseID, clientID: clientID)
                try await first.subscribe(courseID)
                let ack = try await first.push(courseID, batchSeq: 7, ops).get()
                let ackFrame = WireMessage.ack(ack).frame()
                try await first.waitUntil("its diff arrived") { $0.contains { if case .diff = $0 { true } else { false } } }
                await first.close()
                let before = try await RejectionTests.fingerprint(database, courseID)

                // The same client resends the same batch on a new connection (it never saw the ack).
                let second = try await server.editor(of: courseID, clientID: clientID)
                try await second.subscribe(courseID, since: before.state.seq)
                let replayed = try await second.push(courseID, batchSeq: 7, ops).get()
                #expect(WireMessage.ack(replayed).frame() == ackFrame)
                #expect(try await RejectionTests.fingerprint(database, courseID) == before)
                // No new commit, so no diff: a later batch is the next seq.
                let next = try await second.push(courseID, batchSeq: 8, [.renameVideo(.temp(TempID(20)!), title: "Later")]).get()
                #expect(next.seq == before.state.seq + 1)
                try await second.waitUntil("the later diff arrived") { $0.contains { if case .diff = $0 { true } else { false } } }
                #expect(second.diffs.map(\.seq) == [next.seq])

                // A resend in the same group as its original (two pushes back to back) is applied once too.
                try await second.send(.push(Push(courseID: courseID, batchSeq: 9, baseSeq: 0, ops: [.renameChapter(.id(chapters[0]), title: "Twice")])))
                try await second.send(.push(Push(courseID: courseID, batchSeq: 9, baseSeq: 0, ops: [.renameChapter(.id(chapters[0]), title: "Twice")])))
                let once = try await second.answer(courseID, batchSeq: 9).get()
                let again = try await second.answer(courseID, batchSeq: 9).get()
                #expect(once == again)
                #expect(try await database.store.snapshot(courseID: courseID).seq == next.seq + 1)
            }
        }
    }

    @Test func aReconnectingClientReceivesExactlyTheDiffsItMissed() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 2, media: 10)
            try await withServer(store: database.store) { server in
                let watcher = try await server.editor(of: courseID)
                let cursor = try await watcher.subscribe(courseID)
                let before = try watcher.replica(courseID)
                await watcher.close()

                let writer = try await server.editor(of: courseID)
                for batchSeq in 1...200 as ClosedRange<BatchSeq> {
                    let ops: [SyncModel.Operation] = batchSeq % 2 == 1
                        ? [.linkMedia(chapter: .id(chapters[Int(batchSeq / 2) % 2]), items: [LinkItem(temp: TempID(batchSeq)!, media: .id(media[Int(batchSeq / 2) % 10]))], placement: .atStart)]
                        : [.renameChapter(.id(chapters[0]), title: "Rename \(batchSeq)")]
                    _ = try await writer.push(courseID, batchSeq: batchSeq, ops).get()
                }

                let back = try await server.editor(of: courseID)
                let seq = try await back.subscribe(courseID, since: cursor)
                #expect(seq == cursor + 200)
                #expect(back.diffs.map(\.seq) == Array(cursor + 1 ... cursor + 200))
                #expect(!back.received.contains { if case .snapshot = $0 { true } else { false } })
                var state = before
                for diff in back.diffs { state.apply(diff) }
                #expect(state == (try await database.store.snapshot(courseID: courseID)))
            }
        }
    }

    @Test func aCursorOlderThanTheLogKeepsGetsASnapshot() async throws {
        try await withDatabase(logRetention: 50) { database in
            let (courseID, chapters, _) = try await database.makeCourse(chapters: 1)
            try await withServer(store: database.store) { server in
                let writer = try await server.editor(of: courseID)
                for batchSeq in 1...200 as ClosedRange<BatchSeq> {
                    _ = try await writer.push(courseID, batchSeq: batchSeq, [.renameChapter(.id(chapters[0]), title: "Rename \(batchSeq)")]).get()
                }
                let stored = try await database.store.snapshot(courseID: courseID)
                // Within the log: diffs.
                let recent = try await server.editor(of: courseID)
                try await recent.subscribe(courseID, since: stored.seq - 10)
                #expect(recent.diffs.map(\.seq) == Array(stored.seq - 9 ... stored.seq))
                // Older than the log keeps: one snapshot, then live.
                let old = try await server.editor(of: courseID)
                #expect(try await old.subscribe(courseID, since: 5) == stored.seq)
                #expect(old.diffs.isEmpty)
                #expect(try old.replica(courseID) == stored)
                _ = try await writer.push(courseID, batchSeq: 201, [.renameChapter(.id(chapters[0]), title: "Live")]).get()
                try await old.waitUntil("the live diff arrived") { $0.contains { if case .diff = $0 { true } else { false } } }
                #expect(try old.replica(courseID) == (try await database.store.snapshot(courseID: courseID)))
            }
        }
    }

    /// Found by the simulator (seeds 4907, 6006, 6631, 8495): a hub that has not seen the latest
    /// commits (a restarted server, or another node's commits) took the end of one catch-up read as
    /// the end of the log, so a subscriber more than a chunk behind went live too early and missed
    /// commits until the next one arrived.
    @Test func aSubscriberMoreThanOneReadBehindIsCaughtUpToTheEndBeforeGoingLive() async throws {
        try await withDatabase { database in
            let (courseID, chapters, _) = try await database.makeCourse(chapters: 1)
            // Committed behind the server's back: its hub has seen none of it.
            try await database.renameRepeatedly(chapters[0], of: courseID, times: 10)
            let seq = try await database.store.snapshot(courseID: courseID).seq
            try await withServer(store: database.store, configure: { $0.catchUpChunk = 4 }) { server in
                let client = try await server.editor(of: courseID)
                #expect(try await client.subscribe(courseID, since: 1) == seq)
                let diffs = client.received.compactMap { if case .diff(let diff) = $0 { diff.seq } else { nil } }
                #expect(diffs == Array(2...seq), "every commit after the cursor, in order, before Subscribed")
            }
        }
    }
}
