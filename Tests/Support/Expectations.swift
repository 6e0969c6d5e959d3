import Foundation
import PostgresNIO
import SyncModel
import SyncStorage
import SyncWire
import Testing

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
        SELECT id, chapter_id, media_file_id, title, position FROM videos WHERE course_id = \(courseID.uuid)
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

/// Builds a course from a client's received snapshot parts and diffs, incrementally.
struct ReplicaBuilder {
    let courseID: EntityID
    var state: CourseState?
    var snapshot = SnapshotCollector()
    var consumed = 0

    init(courseID: EntityID) { self.courseID = courseID }

    struct Broken: Error, CustomStringConvertible { var description: String }

    mutating func update(_ messages: [WireMessage]) throws -> CourseState {
        for message in messages[consumed...] {
            switch message {
            case .snapshot(let part) where part.course.id == courseID:
                if let whole = snapshot.add(part) { state = whole }
            case .diff(let diff) where diff.courseID == courseID:
                guard var current = state else { throw Broken(description: "a diff arrived before any snapshot") }
                guard diff.seq == current.seq + 1 else { throw Broken(description: "gap: diff \(diff.seq) after \(current.seq)") }
                current.apply(diff)
                state = current
            default:
                break
            }
        }
        consumed = messages.count
        guard let state else { throw Broken(description: "no snapshot received") }
        return state
    }
}

/// A course for store-level tests: chapters "One" and "Two" and four media files, made by a set-up batch.
func makeStoreCourse(_ store: any SyncStore) async throws -> (course: EntityID, chapters: [EntityID], media: [EntityID]) {
    let seeded = try await CourseSeed(id: .fresh(), title: "Conformance", chapters: ["One", "Two"],
                                      media: CourseSeed.Media.numbered(4).map { CourseSeed.Media(name: $0.name, cdnURL: $0.cdnURL, durationMs: 1000, byteSize: 1000) })
        .make(in: store)
    return (seeded.course, seeded.chapters, seeded.media)
}

func linkBatch(_ client: ClientID, _ courseID: EntityID, _ batchSeq: BatchSeq, chapter: EntityID, media: EntityID, temp: UInt64) -> Batch {
    Batch(clientID: client, courseID: courseID, batchSeq: batchSeq, baseSeq: 0,
          ops: [.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: TempID(temp)!, media: .id(media))], placement: .atEnd)])
}

/// A file's permission bits.
func fileMode(_ path: String) throws -> Int {
    try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) & 0o777
}
