import Foundation
import GRDB
@testable import SyncClient
import SyncModel
import Testing

/// The replica's schema guards its rows: a step that would corrupt it fails, and rolls back,
/// instead of leaving a replica that silently differs from the server.
@Suite struct ReplicaSchemaTests {
    static func id() -> EntityID {
        var generator = SystemRandomNumberGenerator()
        return .random(using: &generator)
    }

    let course = Self.id()
    let chapter = Self.id()
    let file = Self.id()

    /// A replica holding one chapter and one media file at seq 1.
    func replica() throws -> Replica {
        let replica = try Replica(inMemory: "schema")
        let contents = ReplicaContents.empty(clientID: ClientID(Self.id()), courseID: course)
        try replica.create(contents)
        var write = ReplicaWrite()
        write.confirmed = [.diff(diff(seq: 1, ChangeSet(
            chapters: [Chapter(id: chapter, courseID: course, title: "One", position: 0, version: 1)],
            media: [MediaFile(id: file, courseID: course, name: "Clip", cdnURL: "https://cdn.example.com/a.mp4", durationMs: 1, byteSize: 1)])))]
        try replica.apply(write)
        return replica
    }

    func diff(seq: CourseSeq, _ changes: ChangeSet) -> Diff {
        Diff(courseID: course, seq: seq, origin: BatchOrigin(clientID: ClientID(Self.id()), batchSeq: seq), changes: changes)
    }

    func applying(_ replica: Replica, _ changes: ChangeSet) throws {
        var write = ReplicaWrite()
        write.confirmed = [.diff(diff(seq: 2, changes))]
        try replica.apply(write)
    }

    @Test func aVideoInAMissingChapterIsRefused() throws {
        let replica = try replica()
        let dangling = Video(id: Self.id(), chapterID: Self.id(), mediaFileID: file, title: "Lost", position: 0)
        #expect(throws: DatabaseError.self) { try applying(replica, ChangeSet(videos: [dangling])) }
        // Nothing of the step was kept.
        let contents = try #require(try replica.load(courseID: course))
        #expect(contents.confirmed.seq == 1 && contents.confirmed.videos.isEmpty)
    }

    @Test func aVideoOfAMissingMediaFileIsRefused() throws {
        let replica = try replica()
        let dangling = Video(id: Self.id(), chapterID: chapter, mediaFileID: Self.id(), title: "Lost", position: 0)
        #expect(throws: DatabaseError.self) { try applying(replica, ChangeSet(videos: [dangling])) }
    }

    @Test func oneMediaFileTwiceInAChapterIsRefused() throws {
        let replica = try replica()
        let videos = (0..<2).map { Video(id: Self.id(), chapterID: chapter, mediaFileID: file, title: "Twice", position: $0) }
        #expect(throws: DatabaseError.self) { try applying(replica, ChangeSet(videos: videos)) }
    }

    @Test func aVersionOfAMissingChapterIsRefused() throws {
        let replica = try replica()
        #expect(throws: ReplicaError.self) { try applying(replica, ChangeSet(chapterVersions: [ChapterVersion(chapterID: Self.id(), version: 2)])) }
        #expect(try replica.load(courseID: course)?.confirmed.seq == 1)
    }

    /// Two videos trading a media file between chapters in one step is not a duplicate.
    @Test func videosTradingPlacesInOneStepAreAccepted() throws {
        let replica = try replica()
        let other = Self.id()
        let (first, second) = (Self.id(), Self.id())
        let otherFile = Self.id()
        try applying(replica, ChangeSet(
            chapters: [Chapter(id: other, courseID: course, title: "Two", position: 1, version: 1)],
            media: [MediaFile(id: otherFile, courseID: course, name: "Other", cdnURL: "https://cdn.example.com/b.mp4", durationMs: 1, byteSize: 1)],
            videos: [Video(id: first, chapterID: chapter, mediaFileID: file, title: "A", position: 0),
                     Video(id: second, chapterID: other, mediaFileID: file, title: "B", position: 0)]))
        var write = ReplicaWrite()
        write.confirmed = [.diff(diff(seq: 3, ChangeSet(videos: [
            Video(id: first, chapterID: other, mediaFileID: file, title: "A", position: 0),
            Video(id: second, chapterID: chapter, mediaFileID: file, title: "B", position: 0),
        ])))]
        try replica.apply(write)
        let videos = try #require(try replica.load(courseID: course)).confirmed.videos
        #expect(videos[first]?.chapterID == other && videos[second]?.chapterID == chapter)
    }

    /// The rows the app reads are guarded the same way.
    @Test func aVisibleVideoInAMissingChapterIsRefused() throws {
        let replica = try replica()
        var write = ReplicaWrite()
        let key = LocalKey(Self.id())
        write.rows.videos[key] = VideoRow(key: key, id: nil, chapterKey: LocalKey(Self.id()), mediaKey: LocalKey(file),
                                          title: "Lost", position: 0, status: .pending)
        #expect(throws: DatabaseError.self) { try replica.apply(write) }
        #expect(try replica.outline().chapters.allSatisfy { $0.videos.isEmpty })
    }

    /// A file made before the migrations had names opens, and gains the guards.
    @Test func aFileFromBeforeTheNamedMigrationsIsMigrated() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("coursesync-old-\(UInt64.random(in: 0 ... .max)).replica").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        do {
            let old = try DatabaseQueue(path: path)
            // The old first migration's tables, under its old name.
            try Replica.migrator.migrate(old, upTo: "createReplica")
            try old.write { db in try db.execute(sql: "UPDATE grdb_migrations SET identifier = '0001_replica'") }
        }
        let replica = try Replica(path: path)
        let applied = try replica.pool.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY identifier") }
        #expect(applied == ["createReplica", "guardRows"])
    }
}
