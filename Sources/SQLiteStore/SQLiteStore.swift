import Foundation
import GRDB
import SyncModel
import SyncStorage
import SyncWire

/// The embedded ``SyncStore``: the store engine over one SQLite file, for a single server node.
public typealias SQLiteStore = StoreEngine<SQLiteBackend>

extension StoreEngine where Backend == SQLiteBackend {
    /// Opens (creating if needed) the store at `path` and migrates its schema.
    ///
    /// - Parameters:
    ///   - retryPolicy, onFailure: as for ``StoreEngine/init(backend:logRetention:maxCachedCourses:maxCachedBytes:recentCommitsPerCourse:retryPolicy:sleep:onFailure:)``
    ///     (SQLite fails a call when the file is locked for too long, or on an I/O error or a full disk).
    public convenience init(path: String, logRetention: Int = 100_000, snapshotInterval: Int = 1_000, maxCachedBytes: Int = 256 << 20,
                            retryPolicy: StoreRetryPolicy = .standard, onFailure: @escaping @Sendable (StoreError) -> Void = { _ in }) throws {
        self.init(backend: try SQLiteBackend(path: path), logRetention: logRetention, snapshotInterval: snapshotInterval, maxCachedBytes: maxCachedBytes,
                  retryPolicy: retryPolicy, onFailure: onFailure)
    }

    public var path: String { backend.path }

    /// Every course, by title (for tools).
    public func courses() async throws -> [Course] {
        try await backend.courses()
    }
}

/// The SQLite primitives of the store engine: one file (GRDB, WAL mode, `synchronous=FULL` so that
/// an acked batch survives a crash or power loss). The tables are those of the PostgreSQL schema
/// in SQLite's dialect; a group is written in one transaction that first checks the course's seq.
///
/// SQLite has one writer at a time, which serializes every commit of every course; that is the
/// limit to outgrow (several nodes, many busy courses) by moving to PostgreSQL.
///
/// No commit waits for a checkpoint: automatic checkpoints are off, and after a commit a passive
/// checkpoint runs in the background on a connection of its own (at most one at a time, at most
/// every ``checkpointInterval``), as the client's replica does.
public struct SQLiteBackend: StoreBackend {
    public let path: String
    let pool: DatabasePool
    private let checkpointer: Checkpointer

    /// How often, at most, the WAL is checkpointed after commits.
    static let checkpointInterval: Duration = .milliseconds(500)

    /// Opens (creating if needed) the store at `path` and migrates its schema. Several processes or
    /// instances may open a new file at once: whoever loses the race to create the schema (or to
    /// switch the file to WAL, or to record a migration) retries, and then finds it done.
    public init(path: String) throws {
        self.path = path
        var configuration = Configuration()
        // Another process (or another instance) on the same file waits for the write lock
        // instead of failing at once.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // FULL: the WAL is synced at every commit, so an acknowledged batch is durable.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
        }
        // The store holds every course: readable by its owner only. SQLite gives the WAL and
        // shared-memory files the database file's permissions.
        // O_EXCL: never truncates a file another opener created meanwhile.
        let created = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600)
        if created >= 0 { close(created) }
        var attempt = 0
        while true {
            do {
                let pool = try DatabasePool(path: path, configuration: configuration)
                try Self.migrator.migrate(pool)
                self.pool = pool
                break
            } catch let error as DatabaseError where attempt < 50
                && (error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED || error.message?.contains("already exists") == true
                    || error.message?.contains("grdb_migrations") == true || error.message?.contains("duplicate column") == true) {
                attempt += 1
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
        var checkpointing = Configuration()
        checkpointing.busyMode = .timeout(10)
        checkpointer = Checkpointer(queue: try DatabaseQueue(path: path, configuration: checkpointing))
    }

    public func insertCourse(_ course: Course) async throws {
        try await pool.write { db in
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM courses WHERE id = ?", arguments: [course.id.data]) == nil else {
                throw StoreError.courseExists(course.id)
            }
            try db.execute(sql: "INSERT INTO courses (id, title, seq) VALUES (?, ?, ?)",
                           arguments: [course.id.data, course.title, Int64(course.seq)])
        }
    }

    func courses() async throws -> [Course] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, title, seq FROM courses ORDER BY title, id").map { row in
                Course(id: try Self.id(row["id"]), title: row["title"], seq: CourseSeq(row["seq"] as Int64))
            }
        }
    }

    public func courseSeq(_ courseID: EntityID) async throws -> CourseSeq? {
        try await pool.read { db in try Self.seq(courseID, db) }
    }

    public func courseSeqs(_ courseIDs: [EntityID]) async throws -> [EntityID: CourseSeq] {
        try await pool.read { db in
            var seqs: [EntityID: CourseSeq] = [:]
            for id in courseIDs { if let seq = try Self.seq(id, db) { seqs[id] = seq } }
            return seqs
        }
    }

    public func loadCourse(_ courseID: EntityID) async throws -> CourseState? {
        try await pool.read { db in try Self.loadCourse(courseID, db) }
    }

    public func readLog(_ courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> StoredLog? {
        try await pool.read { db in
            guard let seq = try Self.seq(courseID, db) else { return nil }
            let rows = try Row.fetchAll(db.cachedStatement(sql: "SELECT seq, diff FROM change_log WHERE course_id = ? AND seq > ? ORDER BY seq LIMIT ?"),
                                        arguments: [courseID.data, Int64(cursor), limit])
            return StoredLog(courseSeq: seq, entries: rows.map { (CourseSeq($0["seq"] as Int64), Array($0["diff"] as Data)) })
        }
    }

    public func lookUp(_ batches: [BatchKey], temps: [ClientID: Set<TempID>], courseID: EntityID) async throws -> StoredRecords {
        try await pool.read { db in
            var records = StoredRecords()
            let ackStatement = try db.cachedStatement(sql: "SELECT ack FROM client_batches WHERE client_id = ? AND course_id = ? AND batch_seq = ?")
            let tempStatement = try db.cachedStatement(sql: "SELECT entity_id FROM client_temps WHERE client_id = ? AND course_id = ? AND temp = ?")
            for key in batches {
                if let bytes = try Data.fetchOne(ackStatement, arguments: [key.client.id.data, courseID.data, Int64(bitPattern: key.batchSeq)]) {
                    records.acks[key] = Array(bytes)
                }
            }
            for (client, set) in temps {
                for temp in set {
                    if let entity = try Data.fetchOne(tempStatement, arguments: [client.id.data, courseID.data, Int64(bitPattern: temp.rawValue)]) {
                        records.temps[client, default: [:]][temp] = try Self.id(entity)
                    }
                }
            }
            return records
        }
    }

    public func write(_ group: GroupWrite) async throws -> WriteOutcome {
        let outcome: WriteOutcome
        do {
            outcome = try await pool.write { db -> WriteOutcome in
                guard let seq = try Self.seq(group.courseID, db) else { return .unknownCourse }
                guard seq == group.expectedSeq else { return .moved }
                try Self.write(group, db)
                return .written
            }
        } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY
            && (error.message?.contains("client_batches") == true || error.message?.contains("client_temps") == true) {
            return .duplicate
        }
        if outcome == .written { checkpointer.afterCommit() }
        return outcome
    }

    /// A statement of the commit path, compiled once per connection (GRDB's statement cache):
    /// `Database.execute(sql:)` parses its SQL on every call, which was most of the store's
    /// share of a group commit.
    private static func execute(_ db: Database, sql: String, arguments: StatementArguments) throws {
        try db.cachedStatement(sql: sql).execute(arguments: arguments)
    }

    /// Where a renumbered chapter waits during a write: past every position a course can reach.
    static let parkedOffset = 1 << 40

    private static func write(_ group: GroupWrite, _ db: Database) throws {
        let courseID = group.courseID.data
        let net = group.changes
        for id in net.deletedVideos { try Self.execute(db, sql: "DELETE FROM videos WHERE course_id = ? AND id = ?", arguments: [courseID, id.data]) }
        for id in net.deletedChapters { try Self.execute(db, sql: "DELETE FROM chapters WHERE course_id = ? AND id = ?", arguments: [courseID, id.data]) }
        // Without deferrable unique constraints: park the renumbered chapters beyond any real
        // position first (still `>= 0`, as the check wants), and re-insert the changed videos
        // (nothing refers to a video row).
        for chapter in net.chapters {
            try Self.execute(db, sql: "UPDATE chapters SET position = position + \(Self.parkedOffset) WHERE course_id = ? AND id = ?",
                             arguments: [courseID, chapter.id.data])
        }
        for video in net.videos { try Self.execute(db, sql: "DELETE FROM videos WHERE course_id = ? AND id = ?", arguments: [courseID, video.id.data]) }
        for chapter in net.chapters {
            try Self.execute(db, sql: """
                INSERT INTO chapters (id, course_id, title, position, version) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (course_id, id) DO UPDATE SET title = excluded.title, position = excluded.position, version = excluded.version
                """, arguments: [chapter.id.data, courseID, chapter.title, chapter.position, Int64(chapter.version)])
        }
        for media in net.media {
            try Self.execute(db, sql: """
                INSERT INTO media_files (id, course_id, name, cdn_url, duration_ms, byte_size) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (course_id, id) DO UPDATE SET name = excluded.name, cdn_url = excluded.cdn_url,
                    duration_ms = excluded.duration_ms, byte_size = excluded.byte_size
                """, arguments: [media.id.data, courseID, media.name, media.cdnURL, Int64(media.durationMs), Int64(media.byteSize)])
        }
        for video in net.videos {
            try Self.execute(db, sql: "INSERT INTO videos (course_id, id, chapter_id, media_file_id, title, position) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [courseID, video.id.data, video.chapterID.data, video.mediaFileID.data, video.title, video.position])
        }
        for entry in group.entries {
            try Self.execute(db, sql: "INSERT INTO change_log (course_id, seq, origin_client_id, origin_batch_seq, diff, author, summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           arguments: [courseID, Int64(entry.seq), entry.origin.clientID.id.data, Int64(bitPattern: entry.origin.batchSeq), Data(entry.diff),
                                       entry.author, entry.summary])
            try Self.execute(db, sql: "INSERT INTO client_batches (client_id, course_id, batch_seq, seq, ack) VALUES (?, ?, ?, ?, ?)",
                           arguments: [entry.origin.clientID.id.data, courseID, Int64(bitPattern: entry.origin.batchSeq), Int64(entry.seq), Data(entry.ack)])
        }
        for mapping in net.tempMappings {
            try Self.execute(db, sql: "INSERT INTO client_temps (client_id, course_id, temp, entity_id) VALUES (?, ?, ?, ?)",
                           arguments: [mapping.client.id.data, courseID, Int64(bitPattern: mapping.temp.rawValue), mapping.entity.data])
        }
        try Self.execute(db, sql: "UPDATE courses SET seq = ? WHERE id = ?", arguments: [Int64(group.newSeq), courseID])
        if group.pruneThrough > 0 {
            try Self.execute(db, sql: "DELETE FROM change_log WHERE course_id = ? AND seq <= ?", arguments: [courseID, Int64(group.pruneThrough)])
        }
    }

    // MARK: - Copying

    public func readHistory(_ courseID: EntityID, before: CourseSeq?, limit: Int) async throws -> [HistoryRecord]? {
        try await pool.read { db in
            guard try Self.seq(courseID, db) != nil else { return nil }
            return try Row.fetchAll(db.cachedStatement(sql: """
                SELECT seq, CAST(strftime('%s', committed_at) AS INTEGER) AS at, author, origin_client_id, origin_batch_seq, summary
                FROM change_log WHERE course_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?
                """), arguments: [courseID.data, Int64(clamping: before ?? UInt64(Int64.max)), limit]).map { row in
                HistoryRecord(seq: CourseSeq(row["seq"] as Int64), committedAt: Double(row["at"] as Int64), author: row["author"],
                              origin: BatchOrigin(clientID: ClientID(try Self.id(row["origin_client_id"])),
                                                  batchSeq: BatchSeq(bitPattern: row["origin_batch_seq"] as Int64)),
                              summary: row["summary"])
            }
        }
    }

    public func writeSnapshot(_ courseID: EntityID, seq: CourseSeq, state: [UInt8]) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO course_snapshots (course_id, seq, state) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                           arguments: [courseID.data, Int64(seq), Data(state)])
            // Older than the change log reaches (one kept below its oldest entry): of no more use.
            try db.execute(sql: """
                DELETE FROM course_snapshots WHERE course_id = ?1 AND seq < (
                    SELECT max(seq) FROM course_snapshots WHERE course_id = ?1
                    AND seq < coalesce((SELECT min(seq) FROM change_log WHERE course_id = ?1), 0))
                """, arguments: [courseID.data])
        }
    }

    public func readSnapshot(_ courseID: EntityID, atOrBefore seq: CourseSeq) async throws -> (seq: CourseSeq, state: [UInt8])? {
        try await pool.read { db in
            try Row.fetchOne(db.cachedStatement(sql: """
                SELECT seq, state FROM course_snapshots WHERE course_id = ? AND seq <= ? ORDER BY seq DESC LIMIT 1
                """), arguments: [courseID.data, Int64(clamping: seq)]).map { row in
                (CourseSeq(row["seq"] as Int64), Array(row["state"] as Data))
            }
        }
    }

    public func readRows(_ tables: [StoreTable]) async throws -> [[[StoreValue]]] {
        try await pool.read { db in
            try tables.map { table in
                let sql = "SELECT \(table.columns.map(\.name).joined(separator: ", ")) FROM \(table.name)"
                return try Row.fetchAll(db, sql: sql).map { row in
                    try table.columns.enumerated().map { index, column -> StoreValue in
                        switch column.kind {
                        case .id: .id(try Self.id(row[index]))
                        case .integer: .integer(row[index])
                        case .text: .text(row[index])
                        case .bytes: .bytes(Array(row[index] as Data))
                        }
                    }
                }
            }
        }
    }

    public func insertRows(_ tables: [(table: StoreTable, rows: [[StoreValue]])]) async throws {
        try await pool.write { db in
            for (table, rows) in tables where !rows.isEmpty {
                let statement = try db.makeStatement(sql: """
                    INSERT INTO \(table.name) (\(table.columns.map(\.name).joined(separator: ", "))) \
                    VALUES (\(Array(repeating: "?", count: table.columns.count).joined(separator: ", ")))
                    """)
                for row in rows {
                    try statement.execute(arguments: StatementArguments(row.map { value -> (any DatabaseValueConvertible) in
                        switch value {
                        case .id(let id): id.data
                        case .integer(let integer): integer
                        case .text(let text): text
                        case .bytes(let bytes): Data(bytes)
                        }
                    }))
                }
            }
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
        // What 0001 left out of the PostgreSQL schema (a course's creation time, the chapters'
        // checks). SQLite cannot add a column with a non-constant default or a check to a table, so
        // both tables are rebuilt (foreign keys are off during a migration and checked at its end).
        // `SchemaParityTests` holds the two schemas to each other, column by column.
        migrator.registerMigration("0002_parity") { db in
            try db.execute(sql: """
                CREATE TABLE courses_new (
                    id BLOB PRIMARY KEY NOT NULL, title TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0 CHECK (seq >= 0),
                    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
                INSERT INTO courses_new (id, title, seq) SELECT id, title, seq FROM courses;
                DROP TABLE courses;
                ALTER TABLE courses_new RENAME TO courses;
                CREATE TABLE chapters_new (
                    id BLOB PRIMARY KEY NOT NULL,
                    course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    title TEXT NOT NULL, position INTEGER NOT NULL CHECK (position >= 0), version INTEGER NOT NULL CHECK (version >= 0),
                    UNIQUE (course_id, position));
                INSERT INTO chapters_new (id, course_id, title, position, version) SELECT id, course_id, title, position, version FROM chapters;
                DROP TABLE chapters;
                ALTER TABLE chapters_new RENAME TO chapters;
                """)
        }
        // Each commit's author and what it did (migrations/0002_history.sql).
        migrator.registerMigration("0003_history") { db in
            try db.execute(sql: """
                ALTER TABLE change_log ADD COLUMN author TEXT NOT NULL DEFAULT '';
                ALTER TABLE change_log ADD COLUMN summary TEXT NOT NULL DEFAULT '';
                """)
        }
        migrator.registerMigration("0004_snapshots") { db in
            try db.execute(sql: """
                CREATE TABLE course_snapshots (
                    course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL CHECK (seq >= 0),
                    state BLOB NOT NULL,
                    PRIMARY KEY (course_id, seq));
                """)
        }
        // Every table keyed by its course (migrations/0004_course_keys.sql): chapters, media files
        // and videos rebuilt with (course_id, id) keys, videos with their course and foreign keys
        // that carry it.
        migrator.registerMigration("0005_course_keys") { db in
            try db.execute(sql: """
                CREATE TABLE chapters_new (
                    id BLOB NOT NULL,
                    course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    title TEXT NOT NULL, position INTEGER NOT NULL CHECK (position >= 0), version INTEGER NOT NULL CHECK (version >= 0),
                    PRIMARY KEY (course_id, id),
                    UNIQUE (course_id, position));
                INSERT INTO chapters_new (id, course_id, title, position, version) SELECT id, course_id, title, position, version FROM chapters;
                CREATE TABLE media_files_new (
                    id BLOB NOT NULL,
                    course_id BLOB NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
                    name TEXT NOT NULL, cdn_url TEXT NOT NULL,
                    duration_ms INTEGER NOT NULL CHECK (duration_ms > 0), byte_size INTEGER NOT NULL CHECK (byte_size > 0),
                    PRIMARY KEY (course_id, id));
                INSERT INTO media_files_new (id, course_id, name, cdn_url, duration_ms, byte_size)
                    SELECT id, course_id, name, cdn_url, duration_ms, byte_size FROM media_files;
                CREATE TABLE videos_new (
                    id BLOB NOT NULL,
                    chapter_id BLOB NOT NULL,
                    media_file_id BLOB NOT NULL,
                    title TEXT NOT NULL, position INTEGER NOT NULL CHECK (position >= 0),
                    course_id BLOB NOT NULL,
                    PRIMARY KEY (course_id, id),
                    FOREIGN KEY (course_id, chapter_id) REFERENCES chapters (course_id, id) ON DELETE CASCADE,
                    FOREIGN KEY (course_id, media_file_id) REFERENCES media_files (course_id, id) ON DELETE RESTRICT,
                    UNIQUE (course_id, chapter_id, position), UNIQUE (course_id, chapter_id, media_file_id));
                INSERT INTO videos_new (id, chapter_id, media_file_id, title, position, course_id)
                    SELECT v.id, v.chapter_id, v.media_file_id, v.title, v.position, c.course_id FROM videos v JOIN chapters c ON c.id = v.chapter_id;
                DROP TABLE videos;
                DROP TABLE chapters;
                DROP TABLE media_files;
                ALTER TABLE chapters_new RENAME TO chapters;
                ALTER TABLE media_files_new RENAME TO media_files;
                ALTER TABLE videos_new RENAME TO videos;
                """)
        }
        return migrator
    }

    // MARK: - Reading

    private static func seq(_ courseID: EntityID, _ db: Database) throws -> CourseSeq? {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM courses WHERE id = ?"), arguments: [courseID.data]).map { CourseSeq($0) }
    }

    private static func loadCourse(_ courseID: EntityID, _ db: Database) throws -> CourseState? {
        guard let row = try Row.fetchOne(db, sql: "SELECT title, seq FROM courses WHERE id = ?", arguments: [courseID.data]) else {
            return nil
        }
        let course = Course(id: courseID, title: row["title"], seq: CourseSeq(row["seq"] as Int64))
        let chapters = try Row.fetchAll(db, sql: "SELECT id, title, position, version FROM chapters WHERE course_id = ?", arguments: [courseID.data]).map { row in
            Chapter(id: try id(row["id"]), courseID: courseID, title: row["title"], position: row["position"], version: UInt64(row["version"] as Int64))
        }
        let media = try Row.fetchAll(db, sql: "SELECT id, name, cdn_url, duration_ms, byte_size FROM media_files WHERE course_id = ?", arguments: [courseID.data]).map { row in
            MediaFile(id: try id(row["id"]), courseID: courseID, name: row["name"], cdnURL: row["cdn_url"],
                      durationMs: UInt64(row["duration_ms"] as Int64), byteSize: UInt64(row["byte_size"] as Int64))
        }
        let videos = try Row.fetchAll(db, sql: """
            SELECT id, chapter_id, media_file_id, title, position FROM videos WHERE course_id = ?
            """, arguments: [courseID.data]).map { row in
            Video(id: try id(row["id"]), chapterID: try id(row["chapter_id"]), mediaFileID: try id(row["media_file_id"]),
                  title: row["title"], position: row["position"])
        }
        return CourseState(course: course, chapters: chapters, media: media, videos: videos)
    }

    static func id(_ data: Data?) throws -> EntityID {
        guard let data, let id = EntityID(bytes: data) else { throw StoreError.corrupt("an ID that is not 16 bytes") }
        return id
    }
}

/// Runs passive WAL checkpoints in the background, one at a time and not too often.
private final class Checkpointer: @unchecked Sendable {
    private let queue: DatabaseQueue
    private let lock = NSLock()
    private var running = false
    private var last = ContinuousClock.now

    init(queue: DatabaseQueue) { self.queue = queue }

    func afterCommit() {
        let now = ContinuousClock.now
        let start: Bool = lock.withLock {
            guard !running, now - last >= SQLiteBackend.checkpointInterval else { return false }
            running = true
            return true
        }
        guard start else { return }
        Task.detached { [self] in
            // On the connection's own queue: a cooperative thread is not held through the fsyncs.
            try? await queue.writeWithoutTransaction { db in _ = try db.checkpoint(.passive) }
            lock.withLock {
                running = false
                last = .now
            }
        }
    }
}
