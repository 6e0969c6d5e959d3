import Foundation
import GRDB
import NIOConcurrencyHelpers
import SyncModel
import SyncServer
import SyncWire

/// The embedded ``SyncStore``: one SQLite file (GRDB, WAL mode, `synchronous=FULL` so that an acked
/// batch survives a crash or power loss), for a single server node. The tables and the commit are
/// those of the PostgreSQL store: a group commit is one transaction writing the rows, the change
/// log, the batch records (exactly-once) and the temp-ID map, and bumping the seq.
///
/// SQLite has one writer at a time, which serializes every commit of every course; that is the
/// limit to outgrow (several nodes, many busy courses) by moving to PostgreSQL.
public final class SQLiteStore: SyncStore {
    public let path: String
    /// How many change-log entries are kept per course; older cursors get a snapshot.
    public let logRetention: Int
    let pool: DatabasePool
    private let cache = NIOLockedValueBox<[EntityID: CourseState]>([:])

    /// Opens (creating if needed) the store at `path` and migrates its schema.
    public init(path: String, logRetention: Int = 100_000) throws {
        precondition(logRetention > 0, "the change log must keep at least one entry")
        self.path = path
        self.logRetention = logRetention
        var configuration = Configuration()
        // Another process (or another instance) on the same file waits for the write lock
        // instead of failing at once.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // FULL: the WAL is synced at every commit, so an acknowledged batch is durable.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(pool)
    }

    /// Every row of every course, for `coursesync copy` (read in one transaction).
    public func dump() async throws -> StoreDump {
        try await pool.read { db in
            let id = Self.id
            var dump = StoreDump()
            for row in try Row.fetchAll(db, sql: "SELECT id, title, seq FROM courses") {
                dump.courses.append(Course(id: try id(row["id"]), title: row["title"], seq: CourseSeq(row["seq"] as Int64)))
            }
            for row in try Row.fetchAll(db, sql: "SELECT id, course_id, title, position, version FROM chapters") {
                dump.chapters.append(Chapter(id: try id(row["id"]), courseID: try id(row["course_id"]), title: row["title"],
                                             position: row["position"], version: UInt64(row["version"] as Int64)))
            }
            for row in try Row.fetchAll(db, sql: "SELECT id, course_id, name, cdn_url, duration_ms, byte_size FROM media_files") {
                dump.media.append(MediaFile(id: try id(row["id"]), courseID: try id(row["course_id"]), name: row["name"], cdnURL: row["cdn_url"],
                                            durationMs: UInt64(row["duration_ms"] as Int64), byteSize: UInt64(row["byte_size"] as Int64)))
            }
            for row in try Row.fetchAll(db, sql: "SELECT id, chapter_id, media_file_id, title, position FROM videos") {
                dump.videos.append(Video(id: try id(row["id"]), chapterID: try id(row["chapter_id"]), mediaFileID: try id(row["media_file_id"]),
                                         title: row["title"], position: row["position"]))
            }
            for row in try Row.fetchAll(db, sql: "SELECT course_id, seq, origin_client_id, origin_batch_seq, diff FROM change_log ORDER BY course_id, seq") {
                dump.log.append(.init(courseID: try id(row["course_id"]), seq: CourseSeq(row["seq"] as Int64),
                                      origin: BatchOrigin(clientID: ClientID(try id(row["origin_client_id"])),
                                                          batchSeq: BatchSeq(bitPattern: row["origin_batch_seq"] as Int64)),
                                      diff: Array(row["diff"] as Data)))
            }
            for row in try Row.fetchAll(db, sql: "SELECT client_id, course_id, batch_seq, seq, ack FROM client_batches") {
                dump.batches.append(.init(client: ClientID(try id(row["client_id"])), courseID: try id(row["course_id"]),
                                          batchSeq: BatchSeq(bitPattern: row["batch_seq"] as Int64), seq: CourseSeq(row["seq"] as Int64),
                                          ack: Array(row["ack"] as Data)))
            }
            for row in try Row.fetchAll(db, sql: "SELECT client_id, course_id, temp, entity_id FROM client_temps") {
                guard let temp = TempID(UInt64(bitPattern: row["temp"] as Int64)) else { throw StoreError.corrupt("temp ID 0") }
                dump.temps.append(.init(client: ClientID(try id(row["client_id"])), courseID: try id(row["course_id"]), temp: temp,
                                        entity: try id(row["entity_id"])))
            }
            return dump
        }
    }

    public func createCourse(_ course: Course) async throws {
        try await pool.write { db in
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM courses WHERE id = ?", arguments: [course.id.blob]) == nil else {
                throw StoreError.courseExists(course.id)
            }
            try db.execute(sql: "INSERT INTO courses (id, title, seq) VALUES (?, ?, ?)",
                           arguments: [course.id.blob, course.title, Int64(course.seq)])
        }
    }

    /// Every course, by title (for tools).
    public func courses() async throws -> [Course] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, title, seq FROM courses ORDER BY title, id").map { row in
                Course(id: try Self.id(row["id"]), title: row["title"], seq: CourseSeq(row["seq"] as Int64))
            }
        }
    }

    public func commit(_ batches: [Batch], courseID: EntityID) async throws -> [BatchOutcome] {
        precondition(batches.allSatisfy { $0.courseID == courseID }, "a group commit is for one course")
        guard !batches.isEmpty else { return [] }
        let cached = cache.withLockedValue { $0[courseID] }
        let group = try await pool.write { db -> GroupCommit in
            guard let seq = try Int64.fetchOne(db, sql: "SELECT seq FROM courses WHERE id = ?", arguments: [courseID.blob]) else {
                throw StoreError.unknownCourse(courseID)
            }
            let state = try cached.flatMap { $0.seq == UInt64(seq) ? $0 : nil } ?? Self.loadState(courseID, db)
            let (applied, temps) = try Self.lookUp(batches, courseID: courseID, db)
            var allocator = RandomIDAllocator(SystemRandomNumberGenerator())
            let group = GroupCommit.resolve(batches, against: state, appliedAcks: applied, knownTemps: temps, allocator: &allocator)
            if !group.commits.isEmpty { try self.write(group, startSeq: state.seq, db) }
            return group
        }
        cache.withLockedValue { cache in
            if (cache[courseID]?.seq ?? 0) <= group.state.seq { cache[courseID] = group.state }
        }
        return group.outcomes
    }

    public func catchUp(courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> CatchUp {
        precondition(limit > 0)
        return try await pool.read { db in
            guard let seq = try Int64.fetchOne(db, sql: "SELECT seq FROM courses WHERE id = ?", arguments: [courseID.blob]) else {
                throw StoreError.unknownCourse(courseID)
            }
            if cursor == 0 || cursor > UInt64(seq) { return .snapshot(try Self.loadState(courseID, db)) }
            if cursor == UInt64(seq) { return .diffs([]) }
            let rows = try Row.fetchAll(db, sql: "SELECT seq, diff FROM change_log WHERE course_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                        arguments: [courseID.blob, Int64(cursor), limit])
            var diffs: [Diff] = []
            for row in rows {
                guard case .diff(let diff) = try WireMessage(payload: (row["diff"] as Data)) else {
                    throw StoreError.corrupt("a change-log row does not hold a Diff")
                }
                guard diff.seq == UInt64(row["seq"] as Int64) else { throw StoreError.corrupt("change-log row \(row["seq"] as Int64) holds seq \(diff.seq)") }
                diffs.append(diff)
            }
            guard diffs.first?.seq == cursor + 1 else { return .snapshot(try Self.loadState(courseID, db)) }
            return .diffs(diffs)
        }
    }

    public func snapshot(courseID: EntityID) async throws -> CourseState {
        try await pool.read { db in try Self.loadState(courseID, db) }
    }

    public func courseSeq(_ courseID: EntityID) async throws -> CourseSeq? {
        try await pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT seq FROM courses WHERE id = ?", arguments: [courseID.blob]).map { CourseSeq($0) }
        }
    }

    // MARK: - Schema

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        // The tables of migrations/0001_schema.sql in SQLite's dialect. SQLite has no deferrable
        // unique constraints, so writes renumber in two steps (see `write`).
        migrator.registerMigration("0001_schema") { db in
            try db.execute(sql: """
                CREATE TABLE courses (
                    id BLOB PRIMARY KEY NOT NULL, title TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0 CHECK (seq >= 0));
                CREATE TABLE chapters (
                    id BLOB PRIMARY KEY NOT NULL,
                    course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    title TEXT NOT NULL, position INTEGER NOT NULL, version INTEGER NOT NULL,
                    UNIQUE (course_id, position));
                CREATE TABLE media_files (
                    id BLOB PRIMARY KEY NOT NULL,
                    course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    name TEXT NOT NULL, cdn_url TEXT NOT NULL,
                    duration_ms INTEGER NOT NULL CHECK (duration_ms > 0), byte_size INTEGER NOT NULL CHECK (byte_size > 0));
                CREATE INDEX media_files_course_idx ON media_files (course_id);
                CREATE TABLE videos (
                    id BLOB PRIMARY KEY NOT NULL,
                    chapter_id BLOB NOT NULL REFERENCES chapters (id) ON DELETE CASCADE,
                    media_file_id BLOB NOT NULL REFERENCES media_files (id) ON DELETE RESTRICT,
                    title TEXT NOT NULL, position INTEGER NOT NULL CHECK (position >= 0),
                    UNIQUE (chapter_id, position), UNIQUE (chapter_id, media_file_id));
                CREATE INDEX videos_media_file_idx ON videos (media_file_id);
                CREATE TABLE change_log (
                    course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL CHECK (seq > 0),
                    origin_client_id BLOB NOT NULL, origin_batch_seq INTEGER NOT NULL, diff BLOB NOT NULL,
                    committed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
                    PRIMARY KEY (course_id, seq));
                CREATE TABLE client_batches (
                    client_id BLOB NOT NULL, course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    batch_seq INTEGER NOT NULL, seq INTEGER NOT NULL, ack BLOB NOT NULL,
                    PRIMARY KEY (client_id, course_id, batch_seq));
                CREATE TABLE client_temps (
                    client_id BLOB NOT NULL, course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    temp INTEGER NOT NULL, entity_id BLOB NOT NULL,
                    PRIMARY KEY (client_id, course_id, temp));
                """)
        }
        return migrator
    }

    // MARK: - Group commit

    private static func lookUp(_ batches: [Batch], courseID: EntityID, _ db: Database) throws -> ([BatchKey: Ack], [ClientID: [TempID: EntityID]]) {
        var acks: [BatchKey: Ack] = [:]
        var temps: [ClientID: [TempID: EntityID]] = [:]
        let ackStatement = try db.cachedStatement(sql: "SELECT ack FROM client_batches WHERE client_id = ? AND course_id = ? AND batch_seq = ?")
        let tempStatement = try db.cachedStatement(sql: "SELECT entity_id FROM client_temps WHERE client_id = ? AND course_id = ? AND temp = ?")
        for batch in batches {
            let client = batch.clientID.id.blob
            if let bytes = try Data.fetchOne(ackStatement, arguments: [client, courseID.blob, Int64(bitPattern: batch.batchSeq)]) {
                guard case .ack(let ack) = try WireMessage(payload: bytes) else { throw StoreError.corrupt("a batch record does not hold an Ack") }
                acks[BatchKey(batch)] = ack
            }
            for temp in batch.mentionedTemps {
                if let entity = try Data.fetchOne(tempStatement, arguments: [client, courseID.blob, Int64(bitPattern: temp.rawValue)]) {
                    temps[batch.clientID, default: [:]][temp] = try id(entity)
                }
            }
        }
        return (acks, temps)
    }

    private func write(_ group: GroupCommit, startSeq: CourseSeq, _ db: Database) throws {
        let state = group.state
        let courseID = state.course.id.blob
        let net = group.netChanges
        for id in net.deletedVideos { try db.execute(sql: "DELETE FROM videos WHERE id = ?", arguments: [id.blob]) }
        for id in net.deletedChapters { try db.execute(sql: "DELETE FROM chapters WHERE id = ?", arguments: [id.blob]) }
        // Without deferrable unique constraints: park the renumbered chapters at negative positions
        // first, and re-insert the changed videos (nothing refers to a video row).
        for chapter in net.chapters {
            try db.execute(sql: "UPDATE chapters SET position = -1 - position WHERE id = ?", arguments: [chapter.id.blob])
        }
        for video in net.videos { try db.execute(sql: "DELETE FROM videos WHERE id = ?", arguments: [video.id.blob]) }
        for chapter in net.chapters {
            try db.execute(sql: """
                INSERT INTO chapters (id, course_id, title, position, version) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET title = excluded.title, position = excluded.position, version = excluded.version
                """, arguments: [chapter.id.blob, courseID, chapter.title, chapter.position, Int64(chapter.version)])
        }
        for media in net.media {
            try db.execute(sql: """
                INSERT INTO media_files (id, course_id, name, cdn_url, duration_ms, byte_size) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET name = excluded.name, cdn_url = excluded.cdn_url,
                    duration_ms = excluded.duration_ms, byte_size = excluded.byte_size
                """, arguments: [media.id.blob, courseID, media.name, media.cdnURL, Int64(media.durationMs), Int64(media.byteSize)])
        }
        for video in net.videos {
            try db.execute(sql: "INSERT INTO videos (id, chapter_id, media_file_id, title, position) VALUES (?, ?, ?, ?, ?)",
                           arguments: [video.id.blob, video.chapterID.blob, video.mediaFileID.blob, video.title, video.position])
        }
        for commit in group.commits {
            try db.execute(sql: "INSERT INTO change_log (course_id, seq, origin_client_id, origin_batch_seq, diff) VALUES (?, ?, ?, ?, ?)",
                           arguments: [courseID, Int64(commit.seq), commit.clientID.id.blob, Int64(bitPattern: commit.batchSeq),
                                       Data(WireMessage.diff(commit.diff).payload())])
            try db.execute(sql: "INSERT INTO client_batches (client_id, course_id, batch_seq, seq, ack) VALUES (?, ?, ?, ?, ?)",
                           arguments: [commit.clientID.id.blob, courseID, Int64(bitPattern: commit.batchSeq), Int64(commit.seq),
                                       Data(WireMessage.ack(commit.ack).payload())])
        }
        for mapping in net.tempMappings {
            try db.execute(sql: "INSERT INTO client_temps (client_id, course_id, temp, entity_id) VALUES (?, ?, ?, ?)",
                           arguments: [mapping.client.id.blob, courseID, Int64(bitPattern: mapping.temp.rawValue), mapping.entity.blob])
        }
        try db.execute(sql: "UPDATE courses SET seq = ? WHERE id = ?", arguments: [Int64(state.seq), courseID])
        let interval = UInt64(max(1, min(100, logRetention / 4)))
        if state.seq / interval != startSeq / interval, state.seq > UInt64(logRetention) {
            try db.execute(sql: "DELETE FROM change_log WHERE course_id = ? AND seq <= ?",
                           arguments: [courseID, Int64(state.seq) - Int64(logRetention)])
        }
    }

    // MARK: - Reading

    private static func loadState(_ courseID: EntityID, _ db: Database) throws -> CourseState {
        guard let row = try Row.fetchOne(db, sql: "SELECT title, seq FROM courses WHERE id = ?", arguments: [courseID.blob]) else {
            throw StoreError.unknownCourse(courseID)
        }
        let course = Course(id: courseID, title: row["title"], seq: CourseSeq(row["seq"] as Int64))
        let chapters = try Row.fetchAll(db, sql: "SELECT id, title, position, version FROM chapters WHERE course_id = ?", arguments: [courseID.blob]).map { row in
            Chapter(id: try id(row["id"]), courseID: courseID, title: row["title"], position: row["position"], version: UInt64(row["version"] as Int64))
        }
        let media = try Row.fetchAll(db, sql: "SELECT id, name, cdn_url, duration_ms, byte_size FROM media_files WHERE course_id = ?", arguments: [courseID.blob]).map { row in
            MediaFile(id: try id(row["id"]), courseID: courseID, name: row["name"], cdnURL: row["cdn_url"],
                      durationMs: UInt64(row["duration_ms"] as Int64), byteSize: UInt64(row["byte_size"] as Int64))
        }
        let videos = try Row.fetchAll(db, sql: """
            SELECT v.id, v.chapter_id, v.media_file_id, v.title, v.position FROM videos v JOIN chapters c ON c.id = v.chapter_id
            WHERE c.course_id = ?
            """, arguments: [courseID.blob]).map { row in
            Video(id: try id(row["id"]), chapterID: try id(row["chapter_id"]), mediaFileID: try id(row["media_file_id"]),
                  title: row["title"], position: row["position"])
        }
        let state = CourseState(course: course, chapters: chapters, media: media, videos: videos)
        let violations = state.invariantViolations()
        guard violations.isEmpty else { throw StoreError.corrupt("course \(courseID): \(violations.joined(separator: "; "))") }
        return state
    }

    static func id(_ data: Data?) throws -> EntityID {
        guard let data, let id = EntityID(bytes: data) else { throw StoreError.corrupt("an ID that is not 16 bytes") }
        return id
    }
}

extension EntityID {
    /// The 16 bytes, as SQLite stores an ID.
    var blob: Data { Data(bytes) }
}
