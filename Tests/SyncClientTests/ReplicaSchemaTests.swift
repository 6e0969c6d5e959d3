import Foundation
import GRDB
@testable import SyncClient
import SyncModel
import Testing

/// The replica's schema guards its rows: a step that would corrupt it fails, and rolls back,
/// instead of leaving a replica that silently differs from the server. Its confirmed state is a
/// base and a log of diffs, checked when the file opens.
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

    /// How many diffs the log holds.
    func logged(_ replica: Replica) throws -> Int {
        try replica.pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM confirmed_diffs") ?? 0 }
    }

    /// One write can carry several engine steps (a read of several frames): a video one step
    /// deleted and a later one restored (a rollback) elsewhere, while a new video takes its old
    /// (chapter, media file) pair. The restored video's row is deleted before any row is written,
    /// whatever order the rows go in; it used to be updated in place, and a new row written
    /// before it broke the unique pair (seen in a simulated seed whose outcome depended on the
    /// process's hashing). Twelve such pairs: the old code fails unless all twelve happen to go in
    /// the safe order.
    @Test func aVideoDeletedAndRestoredInOneWriteLeavesItsPairToANewOne() throws {
        let replica = try replica()
        func key() -> LocalKey { LocalKey(Self.id()) }
        let (x, y) = (key(), key())
        let files = (0..<12).map { _ in key() }
        var setUp = ReplicaWrite()
        for (index, chapter) in [x, y].enumerated() {
            setUp.rows.chapters[chapter] = ChapterRow(key: chapter, id: nil, title: "C\(index)", position: index, version: 1, status: .pending)
        }
        for file in files {
            setUp.rows.media[file] = MediaRow(key: file, id: nil, name: "M", cdnURL: "https://cdn.example.com/m", durationMs: 1, byteSize: 1, status: .pending)
        }
        let restored = files.enumerated().map { VideoRow(key: key(), id: nil, chapterKey: x, mediaKey: $0.element, title: "A", position: $0.offset, status: .pending) }
        for video in restored { setUp.rows.videos[video.key] = video }
        try replica.apply(setUp)

        var write = ReplicaWrite()
        var deleted = RowDelta()
        deleted.deletedVideos = Set(restored.map(\.key))
        var back = RowDelta()
        for (index, video) in restored.enumerated() {
            var elsewhere = video
            elsewhere.chapterKey = y
            back.videos[video.key] = elsewhere
            let newcomer = VideoRow(key: key(), id: nil, chapterKey: x, mediaKey: video.mediaKey, title: "B", position: index, status: .pending)
            back.videos[newcomer.key] = newcomer
        }
        write.rows = deleted
        write.rows.merge(back)
        try replica.apply(write)
        let pairs = try replica.pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM visible_videos WHERE chapter_key = ?", arguments: [y]) }
        #expect(pairs == 12)
    }

    /// The confirmed state is a base and the diffs after it, each one row; a new base empties the log.
    @Test func theConfirmedStateIsABaseAndTheDiffsAfterIt() throws {
        let replica = try replica()
        let video = Video(id: Self.id(), chapterID: chapter, mediaFileID: file, title: "A", position: 0)
        try applying(replica, ChangeSet(videos: [video], chapterVersions: [ChapterVersion(chapterID: chapter, version: 2)]))
        let loaded = try #require(try replica.load(courseID: course)).confirmed
        #expect(loaded.seq == 2 && loaded.videos[video.id] == video && loaded.chapters[chapter]?.version == 2)
        #expect(try logged(replica) == 2)
        #expect(try replica.load(courseID: course)?.loggedRows == 4, "the rows the two logged diffs name")
        // A new base.
        let state = CourseState(course: Course(id: course, title: "Renamed", seq: 2), chapters: Array(loaded.chapters.values),
                                media: Array(loaded.media.values), videos: Array(loaded.videos.values))
        var write = ReplicaWrite()
        write.confirmed = [.snapshot(state)]
        try replica.apply(write)
        #expect(try logged(replica) == 0)
        #expect(try replica.load(courseID: course)?.confirmed == state)
        // And diffs after it.
        write.confirmed = [.diff(diff(seq: 3, ChangeSet(deletedVideos: [video.id], chapterVersions: [ChapterVersion(chapterID: chapter, version: 3)])))]
        try replica.apply(write)
        let reloaded = try #require(try replica.load(courseID: course))
        #expect(reloaded.confirmed.seq == 3 && reloaded.confirmed.videos.isEmpty && reloaded.confirmed.course.title == "Renamed")
        #expect(try replica.outline().seq == 3)
    }

    /// A seq logged twice is refused; a log with a gap, or a diff that does not fit the state
    /// before it, makes the file corrupt rather than a wrong state.
    @Test func aLogThatDoesNotFollowIsCorrupt() throws {
        let again = try replica()
        var write = ReplicaWrite()
        write.confirmed = [.diff(diff(seq: 1, ChangeSet()))]
        #expect(throws: DatabaseError.self) { try again.apply(write) }

        let gap = try replica()
        write.confirmed = [.diff(diff(seq: 3, ChangeSet()))]
        try gap.apply(write)
        #expect(throws: ReplicaError.self) { try gap.load(courseID: course) }

        let dangling = try replica()
        try applying(dangling, ChangeSet(videos: [Video(id: Self.id(), chapterID: Self.id(), mediaFileID: file, title: "Lost", position: 0)]))
        #expect(throws: ReplicaError.self) { try dangling.load(courseID: course) }
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

    /// Two visible videos trading their media files in one step are not a duplicate when the step
    /// says they moved; without that they are (which is why the engine says so).
    @Test func visibleVideosTradingPlacesInOneStepAreAccepted() throws {
        let replica = try replica()
        let (chapterKey, mediaA, mediaB) = (LocalKey(Self.id()), LocalKey(Self.id()), LocalKey(Self.id()))
        let (first, second) = (LocalKey(Self.id()), LocalKey(Self.id()))
        var write = ReplicaWrite()
        write.rows.chapters[chapterKey] = ChapterRow(key: chapterKey, id: nil, title: "One", position: 0, version: 1, status: .pending)
        for key in [mediaA, mediaB] {
            write.rows.media[key] = MediaRow(key: key, id: nil, name: "Clip", cdnURL: "https://cdn.example.com/a.mp4", durationMs: 1, byteSize: 1, status: .pending)
        }
        write.rows.videos[first] = VideoRow(key: first, id: nil, chapterKey: chapterKey, mediaKey: mediaA, title: "A", position: 0, status: .pending)
        write.rows.videos[second] = VideoRow(key: second, id: nil, chapterKey: chapterKey, mediaKey: mediaB, title: "B", position: 1, status: .pending)
        try replica.apply(write)
        var swap = ReplicaWrite()
        swap.rows.videos[first] = VideoRow(key: first, id: nil, chapterKey: chapterKey, mediaKey: mediaB, title: "A", position: 0, status: .pending)
        swap.rows.videos[second] = VideoRow(key: second, id: nil, chapterKey: chapterKey, mediaKey: mediaA, title: "B", position: 1, status: .pending)
        #expect(throws: DatabaseError.self) { try replica.apply(swap) }
        swap.rows.movedVideos = [first, second]
        try replica.apply(swap)
        let videos = try replica.videos(inChapter: chapterKey)
        #expect(videos.map(\.mediaKey) == [mediaB, mediaA])
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
        #expect(applied == ["confirmedLog", "createReplica", "guardRows"])
    }

    /// A file from before the log keeps its confirmed rows, as its base.
    @Test func aFileWithConfirmedRowsKeepsThemAsItsBase() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("coursesync-rows-\(UInt64.random(in: 0 ... .max)).replica").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let client = ClientID(Self.id())
        let video = Self.id()
        do {
            let old = try DatabaseQueue(path: path)
            try Replica.migrator.migrate(old, upTo: "guardRows")
            try old.write { db in
                try db.execute(sql: "INSERT INTO meta (name, value) VALUES ('client_id', ?)", arguments: [client.id.data])
                try db.execute(sql: "INSERT INTO course (id, title, seq) VALUES (?, 'Old', 7)", arguments: [course.data])
                try db.execute(sql: "INSERT INTO chapters (id, title, position, version) VALUES (?, 'One', 0, 3)", arguments: [chapter.data])
                try db.execute(sql: "INSERT INTO media (id, name, cdn_url, duration_ms, byte_size) VALUES (?, 'Clip', 'https://cdn.example.com/a.mp4', 5, 6)",
                               arguments: [file.data])
                try db.execute(sql: "INSERT INTO videos (id, chapter_id, media_id, title, position) VALUES (?, ?, ?, 'A', 0)",
                               arguments: [video.data, chapter.data, file.data])
            }
        }
        let contents = try #require(try Replica(path: path).load(courseID: course))
        #expect(contents.clientID == client && contents.loggedRows == 0)
        #expect(contents.confirmed == CourseState(
            course: Course(id: course, title: "Old", seq: 7),
            chapters: [Chapter(id: chapter, courseID: course, title: "One", position: 0, version: 3)],
            media: [MediaFile(id: file, courseID: course, name: "Clip", cdnURL: "https://cdn.example.com/a.mp4", durationMs: 5, byteSize: 6)],
            videos: [Video(id: video, chapterID: chapter, mediaFileID: file, title: "A", position: 0)]))
    }
}
