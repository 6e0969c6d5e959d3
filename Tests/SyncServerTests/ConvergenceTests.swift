import Foundation
import PostgresNIO
import SyncModel
import SyncServer
import SyncWire
import Testing

/// Several clients editing one course over real TCP, committed to a real PostgreSQL.
@Suite struct ConvergenceTests {
    @Test func twoClientsAppendingToOneChapterAtOnceAreBothKeptDense() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 1, media: 20)
            try await withServer(store: database.store) { server in
                let alice = try await server.editor(of: courseID)
                let bob = try await server.editor(of: courseID)
                try await alice.subscribe(courseID)
                try await bob.subscribe(courseID)
                func links(_ media: ArraySlice<EntityID>) -> [SyncModel.Operation] {
                    [.linkMedia(chapter: .id(chapters[0]),
                                items: media.enumerated().map { LinkItem(temp: TempID(UInt64(1 + $0.offset))!, media: .id($0.element)) },
                                placement: .atEnd)]
                }
                async let aliceAnswer = alice.push(courseID, batchSeq: 1, baseSeq: 1, links(media[0..<10]))
                async let bobAnswer = bob.push(courseID, batchSeq: 1, baseSeq: 1, links(media[10..<20]))
                let (aliceAck, bobAck) = try await (aliceAnswer.get(), bobAnswer.get())
                #expect(Set([aliceAck.seq, bobAck.seq]) == [2, 3])
                #expect(aliceAck.idMap.count == 10 && bobAck.idMap.count == 10)

                for client in [alice, bob] {
                    try await client.waitUntil("both diffs arrived") { messages in
                        messages.filter { if case .diff = $0 { true } else { false } }.count == 2
                    }
                }
                // Same diffs, same order, for both.
                #expect(alice.diffs == bob.diffs)
                #expect(alice.diffs.map(\.seq) == [2, 3])

                let stored = try await database.store.snapshot(courseID: courseID)
                #expect(stored.videos(in: chapters[0]).map(\.position) == Array(0..<20))
                #expect(stored.invariantViolations().isEmpty)
                // The batch that committed first holds positions 0..<10.
                let first = aliceAck.seq < bobAck.seq ? aliceAck : bobAck
                #expect(Set(stored.videos(in: chapters[0]).prefix(10).map(\.id)) == Set(first.idMap.values))
                #expect(try alice.replica(courseID) == stored)
                #expect(try bob.replica(courseID) == stored)
                try await expectDatabase(database, equals: stored)
            }
        }
    }
}

/// Reads the tables directly (not through the store's cache) and compares them with `state`.
func expectDatabase(_ database: TestDatabase, equals state: CourseState, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let courseID = state.course.id
    var seq: Int64 = -1
    for try await value in try await database.client.query("SELECT seq FROM courses WHERE id = \(courseID.uuid)").decode(Int64.self) {
        seq = value
    }
    #expect(UInt64(seq) == state.seq, sourceLocation: sourceLocation)
    var videos: [Video] = []
    for try await (id, chapter, media, title, position) in try await database.client.query("""
        SELECT v.id, v.chapter_id, v.media_file_id, v.title, v.position FROM videos v JOIN chapters c ON c.id = v.chapter_id
        WHERE c.course_id = \(courseID.uuid)
        """).decode((UUID, UUID, UUID, String, Int32).self) {
        videos.append(Video(id: EntityID(id), chapterID: EntityID(chapter), mediaFileID: EntityID(media), title: title, position: Int(position)))
    }
    #expect(Dictionary(uniqueKeysWithValues: videos.map { ($0.id, $0) }) == state.videos, sourceLocation: sourceLocation)
    var chapters: [Chapter] = []
    for try await (id, title, position, version) in try await database.client.query("""
        SELECT id, title, position, version FROM chapters WHERE course_id = \(courseID.uuid)
        """).decode((UUID, String, Int32, Int64).self) {
        chapters.append(Chapter(id: EntityID(id), courseID: courseID, title: title, position: Int(position), version: UInt64(version)))
    }
    #expect(Dictionary(uniqueKeysWithValues: chapters.map { ($0.id, $0) }) == state.chapters, sourceLocation: sourceLocation)
}
