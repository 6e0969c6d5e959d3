import Foundation
import PostgresStore
import SQLiteStore
import SyncModel
import SyncServer
import SyncStorage
import Testing
@testable import TestSupport

/// `coursesync copy`: a store moved into another backend (SQLite → PostgreSQL → SQLite), with
/// what clients rely on intact.
@Suite struct StoreCopyTests {
    @Test func aCopiedStoreKeepsStateLogExactlyOnceRecordsAndTempIDs() async throws {
        try await withReplicaFolder { folder in
            let sqlite = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            let client = ClientID(.fresh())
            var originals: [EntityID: [Batch: Ack]] = [:]
            var courses: [EntityID] = []
            for title in ["First", "Second"] {
                let courseID = EntityID.fresh()
                courses.append(courseID)
                try await sqlite.createCourse(Course(id: courseID, title: title))
                let batches = [
                    Batch(clientID: client, courseID: courseID, batchSeq: 1, baseSeq: 0, ops: [
                        .createChapter(temp: TempID(1)!, title: "Intro", placement: .atEnd),
                        .registerMedia(temp: TempID(2)!, name: "a.mp4", cdnURL: "https://cdn.example.com/a", durationMs: 10, byteSize: 10),
                        .registerMedia(temp: TempID(3)!, name: "b.mp4", cdnURL: "https://cdn.example.com/b", durationMs: 10, byteSize: 10),
                    ]),
                    Batch(clientID: client, courseID: courseID, batchSeq: 2, baseSeq: 1, ops: [
                        .linkMedia(chapter: .temp(TempID(1)!), items: [LinkItem(temp: TempID(4)!, media: .temp(TempID(2)!))], placement: .atEnd),
                    ]),
                    Batch(clientID: client, courseID: courseID, batchSeq: 3, baseSeq: 2, ops: [.renameChapter(.temp(TempID(1)!), title: "")]),
                ]
                for batch in batches {
                    if case .committed(let commit) = try await sqlite.commit([batch], courseID: courseID).first {
                        originals[courseID, default: [:]][batch] = commit.ack
                    }
                }
                #expect(originals[courseID]?.count == 2, "two commits and a rejection")
            }
            try await withDatabase { database in
                try await database.store.load(try await sqlite.dump())
                for courseID in courses {
                    #expect(try await database.store.snapshot(courseID: courseID) == (try await sqlite.snapshot(courseID: courseID)))
                    // Who did what comes along (the times are the copy's own).
                    #expect(try await database.store.history(courseID, before: nil, limit: 10).map { [$0.author, $0.summary] }
                            == (try await sqlite.history(courseID, before: nil, limit: 10)).map { [$0.author, $0.summary] })
                    #expect(try await database.store.catchUp(courseID: courseID, after: 1, limit: 10)
                            == (try await sqlite.catchUp(courseID: courseID, after: 1, limit: 10)))
                    // A resend after the move replays the original ack and changes nothing.
                    for (batch, ack) in originals[courseID]! {
                        #expect(try await database.store.commit([batch], courseID: courseID) == [.replayed(ack)])
                    }
                    // The client's temp IDs are still known: a new batch may use them.
                    let next = Batch(clientID: client, courseID: courseID, batchSeq: 4, baseSeq: 2, ops: [
                        .linkMedia(chapter: .temp(TempID(1)!), items: [LinkItem(temp: TempID(5)!, media: .temp(TempID(3)!))], placement: .atEnd),
                    ])
                    guard case .committed(let commit) = try await database.store.commit([next], courseID: courseID).first else {
                        Issue.record("the batch using old temp IDs was not committed")
                        continue
                    }
                    #expect(commit.seq == 3)
                }
                // A second copy is refused whole.
                await #expect(throws: StoreError.courseExists(courses[0])) { try await database.store.load(try await sqlite.dump()) }
                #expect(try await database.store.snapshot(courseID: courses[1]).seq == 3)
                // And back, from PostgreSQL into a new SQLite store: the same, row for row.
                let back = try SQLiteStore(path: folder.appendingPathComponent("back.sqlite").path)
                try await back.load(try await database.store.dump())
                for courseID in courses {
                    #expect(try await back.snapshot(courseID: courseID) == (try await database.store.snapshot(courseID: courseID)))
                    #expect(try await back.catchUp(courseID: courseID, after: 1, limit: 10)
                            == (try await database.store.catchUp(courseID: courseID, after: 1, limit: 10)))
                    for (batch, ack) in originals[courseID]! {
                        #expect(try await back.commit([batch], courseID: courseID) == [.replayed(ack)])
                    }
                }
            }
        }
    }
}
