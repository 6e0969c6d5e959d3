import Foundation
import GRDB
import NIOConcurrencyHelpers
import SyncModel
import SyncWire

/// Why a replica file could not be used.
public enum ReplicaError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file is a replica of another course.
    case otherCourse(file: String, holds: EntityID, wanted: EntityID)
    /// A stored row could not be decoded (the file was changed by something else).
    case corrupt(String)
    /// Another ``SyncClient``, in this process or another, has the file open: two would send
    /// different batches as one client (the same client ID and batch seqs), and the server would
    /// answer the second's with the first's acks.
    case inUse(file: String)

    public var description: String {
        switch self {
        case .otherCourse(let file, let holds, let wanted): "\(file) is a replica of course \(holds), not \(wanted)"
        case .corrupt(let what): "the replica file is corrupt: \(what)"
        case .inUse(let file): "\(file) is open in another SyncClient (this process or another); close that one first"
        }
    }
}

/// The replica file: the confirmed state at the cursor (a base and the diffs after it), the
/// pending batches, the temp-ID map and local keys, and the visible rows the app reads and
/// observes. One file per (client, course).
///
/// WAL mode with `synchronous = NORMAL`: a committed edit survives the process crashing (the
/// pending queue is what must not be lost); a power cut may lose the last moments of edits,
/// which the server never saw either.
package final class Replica: Sendable {
    package let path: String
    let pool: any DatabaseWriter
    /// A separate connection that checkpoints the WAL (see ``checkpoint()``); nil in memory.
    private let checkpointer: DatabaseQueue?

    /// Opens (creating if needed) the replica file at `path` and migrates its schema.
    package init(path: String) throws {
        self.path = path
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // No checkpoint inside an edit's commit (its fsync is what makes the slowest edits
            // slow); ``checkpoint()`` does it from another connection instead.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
        }
        // A replica holds the course and the user's edits: readable by its owner only (SQLite gives
        // the WAL and shared-memory files the same permissions).
        let created = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600)  // never truncates an existing file
        if created >= 0 { close(created) }
        pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrate(pool)
        var checkpointing = Configuration()
        checkpointing.busyMode = .timeout(5)
        checkpointer = try DatabaseQueue(path: path, configuration: checkpointing)
    }

    /// Copies the WAL back into the database file without blocking writers (a passive
    /// checkpoint, on its own connection). ``SyncClient`` calls it in the background.
    package func checkpoint() throws {
        try checkpointer?.writeWithoutTransaction { db in
            _ = try db.checkpoint(.passive)
        }
    }

    /// ``checkpoint()`` on the checkpointing connection's own queue: the caller's thread is not
    /// held through the checkpoint's fsyncs (on Swift's cooperative pool, with two cores, a
    /// blocked thread is half the process).
    package func checkpoint() async throws {
        try await checkpointer?.writeWithoutTransaction { db in
            _ = try db.checkpoint(.passive)
        }
    }

    /// A replica in memory (the simulator's clients): the same schema and code, no file.
    package init(inMemory name: String) throws {
        path = ":memory:\(name)"
        pool = try DatabaseQueue()
        checkpointer = nil
        try Self.migrate(pool)
    }

    // MARK: Loading

    /// What the file holds for `courseID`, or `nil` for a new file. A file of another course throws.
    package func load(courseID: EntityID) throws -> ReplicaContents? {
        try pool.read { db in
            guard let client = try Data.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'client_id'") else { return nil }
            guard let clientID = EntityID(bytes: client), let courseID2 = try Data.fetchOne(db, sql: "SELECT id FROM course").flatMap({ EntityID(bytes: $0) }) else {
                throw ReplicaError.corrupt("meta or course row")
            }
            guard courseID2 == courseID else { throw ReplicaError.otherCourse(file: path, holds: courseID2, wanted: courseID) }
            let courseRow = try Row.fetchOne(db, sql: "SELECT title, seq FROM course")!
            let (confirmed, loggedRows) = try Self.confirmed(db, courseID: courseID, title: try courseRow.decode(forColumn: "title"))
            let seq = UInt64(bitPattern: try courseRow.decode(forColumn: "seq"))
            guard confirmed.seq == seq else { throw ReplicaError.corrupt("the course row is at seq \(seq), its confirmed state at \(confirmed.seq)") }
            let pending = try Row.fetchAll(db, sql: "SELECT batch_seq, push FROM pending_batches ORDER BY batch_seq").map { row in
                let bytes: Data = row["push"]
                guard case .push(let push) = try WireMessage(payload: bytes) else { throw ReplicaError.corrupt("pending batch \(row["batch_seq"] as Int64)") }
                return push.batch(from: ClientID(clientID))
            }
            var temps: [TempID: EntityID] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT temp, id FROM temps") {
                guard let temp = TempID(UInt64(bitPattern: row["temp"])) else { throw ReplicaError.corrupt("temp 0") }
                temps[temp] = try Self.id(row["id"])
            }
            var keys: [EntityID: LocalKey] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT id, key FROM local_keys") {
                keys[try Self.id(row["id"])] = LocalKey(try Self.id(row["key"]))
            }
            let nextTemp = try Int64.fetchOne(db, sql: "SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'next_temp'") ?? 1
            let nextBatch = try Int64.fetchOne(db, sql: "SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'next_batch_seq'") ?? 1
            return ReplicaContents(clientID: ClientID(clientID), confirmed: confirmed,
                                   pending: pending, knownTemps: temps, localKeys: keys,
                                   nextTemp: UInt64(nextTemp), nextBatchSeq: UInt64(nextBatch), loggedRows: loggedRows)
        }
    }

    /// The confirmed state: the base (an empty course at seq 0 if none yet) with the logged diffs
    /// applied in seq order; and how many rows those diffs name. Every diff must follow the one
    /// before and fit the state, and the result must keep every invariant, or the file is corrupt.
    private static func confirmed(_ db: Database, courseID: EntityID, title: String) throws -> (CourseState, loggedRows: Int) {
        var state = CourseState(course: Course(id: courseID, title: title, seq: 0))
        if let base = try Data.fetchOne(db, sql: "SELECT snapshot FROM confirmed_base") {
            guard case .snapshot(let part) = try? WireMessage(payload: base), part.course.id == courseID else {
                throw ReplicaError.corrupt("the confirmed state's base")
            }
            state = CourseState(course: part.course, chapters: part.chapters, media: part.media, videos: part.videos)
        }
        var loggedRows = 0
        for row in try Row.fetchAll(db, sql: "SELECT seq, diff FROM confirmed_diffs ORDER BY seq") {
            let bytes: Data = row["diff"]
            guard case .diff(let diff) = try? WireMessage(payload: bytes), diff.courseID == courseID, diff.seq == state.seq + 1,
                  state.problems(applying: diff).isEmpty else {
                throw ReplicaError.corrupt("the logged diff at seq \(row["seq"] as Int64) does not follow seq \(state.seq)")
            }
            state.apply(diff)
            loggedRows += diff.changes.rowCount
        }
        let violations = state.invariantViolations()
        guard violations.isEmpty else { throw ReplicaError.corrupt("the confirmed state: \(violations.prefix(3))") }
        return (state, loggedRows)
    }

    /// Records a new replica's identity (its client ID and course).
    package func create(_ contents: ReplicaContents) throws {
        try pool.write { db in
            try db.execute(sql: "INSERT INTO meta (name, value) VALUES ('client_id', ?)", arguments: [contents.clientID.id.data])
            try db.execute(sql: "INSERT INTO course (id, title, seq) VALUES (?, ?, ?)",
                           arguments: [contents.confirmed.course.id.data, contents.confirmed.course.title, Int64(bitPattern: contents.confirmed.seq)])
        }
    }

    /// How the file differs from `state`, which a settled replica of the course holds: `state` as
    /// its confirmed state, no pending batch, and exactly `state`'s rows shown, all confirmed.
    /// Empty when it matches. For checkers (the simulator, `coursesync stress`).
    package func differences(from state: CourseState) throws -> [String] {
        guard let contents = try load(courseID: state.course.id) else { return ["the replica is empty"] }
        var problems: [String] = []
        if contents.confirmed != state { problems.append("its confirmed state differs") }
        if !contents.pending.isEmpty { problems.append("\(contents.pending.count) batches are still pending") }
        if !(try outline().mirrors(state)) { problems.append("the rows it shows differ or are not all confirmed") }
        return problems
    }

    // MARK: Writing

    /// Writes one engine step in one transaction.
    package func apply(_ write: ReplicaWrite) throws {
        guard !write.isEmpty else { return }
        try pool.write { db in try Self.apply(write, db) }
    }

    static func apply(_ write: ReplicaWrite, _ db: Database) throws {
        let logDiff = try db.cachedStatement(sql: "INSERT INTO confirmed_diffs (seq, diff) VALUES (?, ?)")
        for change in write.confirmed {
            switch change {
            case .diff(let diff):
                // A seq logged twice fails on the primary key.
                try logDiff.execute(arguments: [Int64(bitPattern: diff.seq), Data(WireMessage.diff(diff).payload())])
            case .snapshot(let state): try replaceBase(with: state, db)
            }
        }
        if case .diff(let diff) = write.confirmed.last {
            // Cached like every statement of a step: `execute(sql:)` would parse the SQL each time.
            try db.cachedStatement(sql: "UPDATE course SET seq = ?").execute(arguments: [Int64(bitPattern: diff.seq)])
        }
        let deleteBatch = try db.cachedStatement(sql: "DELETE FROM pending_batches WHERE batch_seq = ?")
        for seq in write.deletedBatches { try deleteBatch.execute(arguments: [Int64(bitPattern: seq)]) }
        let storeBatch = try db.cachedStatement(sql: "INSERT OR REPLACE INTO pending_batches (batch_seq, push) VALUES (?, ?)")
        for (seq, batch) in write.batches {
            try storeBatch.execute(arguments: [Int64(bitPattern: seq), Data(WireMessage.push(Push(batch)).payload())])
        }
        let storeTemp = try db.cachedStatement(sql: "INSERT OR REPLACE INTO temps (temp, id) VALUES (?, ?)")
        for (temp, id) in write.temps { try storeTemp.execute(arguments: [Int64(bitPattern: temp.rawValue), id.data]) }
        let storeKey = try db.cachedStatement(sql: "INSERT OR REPLACE INTO local_keys (id, key) VALUES (?, ?)")
        for (id, key) in write.localKeys { try storeKey.execute(arguments: [id.data, key.rawValue.data]) }
        if let counters = write.counters {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO meta (name, value) VALUES ('next_temp', ?), ('next_batch_seq', ?)")
                .execute(arguments: [Int64(bitPattern: counters.nextTemp), Int64(bitPattern: counters.nextBatchSeq)])
        }
        if let rows = write.replaceRows {
            try db.execute(sql: "DELETE FROM visible_chapters; DELETE FROM visible_media; DELETE FROM visible_videos")
            var delta = RowDelta()
            delta.chapters = rows.chapters
            delta.media = rows.media
            delta.videos = rows.videos
            try apply(delta, db)
        }
        try apply(write.rows, db)
    }

    /// Makes `state` the confirmed state's base and empties the log.
    private static func replaceBase(with state: CourseState, _ db: Database) throws {
        let part = SnapshotPart(course: state.course, chapters: state.orderedChapters, media: Array(state.media.values),
                                videos: Array(state.videos.values), part: 0, last: true)
        try db.execute(sql: "DELETE FROM confirmed_diffs")
        try db.execute(sql: "INSERT OR REPLACE INTO confirmed_base (id, snapshot) VALUES (1, ?)",
                       arguments: [Data(WireMessage.snapshot(part).payload())])
        try db.execute(sql: "UPDATE course SET title = ?, seq = ?", arguments: [state.course.title, Int64(bitPattern: state.seq)])
    }

    // The visible rows are written so that the schema's constraints catch a corrupt step instead
    // of letting the replica diverge: updates never replace (a replace would delete a row's
    // dependants, or a row in the way of a unique key), and the videos a step moves to another
    // (chapter, media file) pair are deleted before they are written back, so that two of them
    // trading places is not taken for a duplicate. Foreign keys are checked at commit.

    private static func apply(_ delta: RowDelta, _ db: Database) throws {
        let deleteVideo = try db.cachedStatement(sql: "DELETE FROM visible_videos WHERE key = ?")
        for key in delta.deletedVideos.union(delta.movedVideos) { try deleteVideo.execute(arguments: [key]) }
        let deleteChapter = try db.cachedStatement(sql: "DELETE FROM visible_chapters WHERE key = ?")
        for key in delta.deletedChapters { try deleteChapter.execute(arguments: [key]) }
        let deleteMedia = try db.cachedStatement(sql: "DELETE FROM visible_media WHERE key = ?")
        for key in delta.deletedMedia { try deleteMedia.execute(arguments: [key]) }
        try upsert(Array(delta.chapters.values), db)
        try upsert(Array(delta.media.values), db)
        try upsert(Array(delta.videos.values), db)
    }

    /// Writes records with one cached statement per table: an upsert that inserts a new row or
    /// updates it in place (never `REPLACE`, which would delete it and whatever depends on it).
    private static func upsert<Record: ReplicaRecord>(_ records: [Record], _ db: Database) throws {
        guard !records.isEmpty else { return }
        let columns = Record.databaseColumns
        // The first column is the primary key.
        let updates = columns.dropFirst().map { "\($0) = excluded.\($0)" }
        let sql = "INSERT INTO \(Record.databaseTableName) (\(columns.joined(separator: ", "))) VALUES (\(columns.map { _ in "?" }.joined(separator: ", ")))"
            + " ON CONFLICT (\(columns[0])) DO UPDATE SET \(updates.joined(separator: ", "))"
        let statement = try db.cachedStatement(sql: sql)
        for record in records {
            statement.setUncheckedArguments(StatementArguments(record.databaseValues))
            try statement.execute()
        }
    }

    // MARK: Reading

    /// The outline as stored now.
    package func outline() throws -> Outline { try pool.read(Self.outline) }

    /// The media library as stored now, by name.
    package func media() throws -> [MediaRow] { try pool.read(Self.media) }

    /// A chapter's videos as stored now, in order.
    package func videos(inChapter key: LocalKey) throws -> [VideoRow] { try pool.read { try Self.videos(inChapter: key, $0) } }

    static func outline(_ db: Database) throws -> Outline {
        let course = try Row.fetchOne(db, sql: "SELECT title, seq FROM course")
        let chapters = try ChapterRow.order(Column("position")).fetchAll(db)
        var videos: [LocalKey: [VideoRow]] = [:]
        for video in try VideoRow.order(Column("chapter_key"), Column("position")).fetchAll(db) {
            videos[video.chapterKey, default: []].append(video)
        }
        return Outline(title: try course?.decode(forColumn: "title") ?? "", seq: UInt64(bitPattern: try course?.decode(forColumn: "seq") ?? 0),
                       chapters: chapters.map { Outline.Entry(chapter: $0, videos: videos[$0.key] ?? []) })
    }

    static func videos(inChapter key: LocalKey, _ db: Database) throws -> [VideoRow] {
        try VideoRow.filter(Column("chapter_key") == key).order(Column("position")).fetchAll(db)
    }

    static func media(_ db: Database) throws -> [MediaRow] {
        try MediaRow.order(Column("name"), Column("key")).fetchAll(db)
    }

    static func id(_ data: Data?) throws -> EntityID {
        guard let data, let id = EntityID(bytes: data) else { throw ReplicaError.corrupt("an ID is not 16 bytes") }
        return id
    }

    // MARK: Schema

    /// Applies the schema's migrations: `createReplica` (the tables), `guardRows` (foreign keys,
    /// unique (chapter, media) pairs, ID and position checks), `confirmedLog` (the confirmed state
    /// as a base and a log of diffs instead of rows).
    static func migrate(_ writer: any DatabaseWriter) throws {
        // Files made before the migrations had names.
        try writer.write { db in
            if try db.tableExists("grdb_migrations") {
                try db.execute(sql: "UPDATE grdb_migrations SET identifier = 'createReplica' WHERE identifier = '0001_replica'")
            }
        }
        try migrator.migrate(writer)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("createReplica") { db in
            try db.execute(sql: """
                CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
                CREATE TABLE course (id BLOB PRIMARY KEY, title TEXT NOT NULL, seq INTEGER NOT NULL);
                CREATE TABLE chapters (id BLOB PRIMARY KEY, title TEXT NOT NULL, position INTEGER NOT NULL, version INTEGER NOT NULL);
                CREATE TABLE media (id BLOB PRIMARY KEY, name TEXT NOT NULL, cdn_url TEXT NOT NULL,
                                    duration_ms INTEGER NOT NULL, byte_size INTEGER NOT NULL);
                CREATE TABLE videos (id BLOB PRIMARY KEY, chapter_id BLOB NOT NULL, media_id BLOB NOT NULL,
                                     title TEXT NOT NULL, position INTEGER NOT NULL);
                CREATE TABLE pending_batches (batch_seq INTEGER PRIMARY KEY, push BLOB NOT NULL);
                CREATE TABLE temps (temp INTEGER PRIMARY KEY, id BLOB NOT NULL);
                CREATE TABLE local_keys (id BLOB PRIMARY KEY, key BLOB NOT NULL);
                CREATE TABLE visible_chapters (key BLOB PRIMARY KEY, id BLOB, title TEXT NOT NULL, position INTEGER NOT NULL,
                                               version INTEGER NOT NULL, status INTEGER NOT NULL);
                CREATE TABLE visible_media (key BLOB PRIMARY KEY, id BLOB, name TEXT NOT NULL, cdn_url TEXT NOT NULL,
                                            duration_ms INTEGER NOT NULL, byte_size INTEGER NOT NULL, status INTEGER NOT NULL);
                CREATE TABLE visible_videos (key BLOB PRIMARY KEY, id BLOB, chapter_key BLOB NOT NULL, media_key BLOB NOT NULL,
                                             title TEXT NOT NULL, position INTEGER NOT NULL, status INTEGER NOT NULL);
                CREATE INDEX visible_videos_by_chapter ON visible_videos (chapter_key, position);
                """)
        }
        // The rows guard themselves: a step that would leave a video in a missing chapter, link
        // one media file twice into a chapter, or store a malformed ID fails (and rolls back)
        // instead of the replica diverging from the server. Foreign keys are checked at commit,
        // so the order of a step's writes does not matter.
        migrator.registerMigration("guardRows") { db in
            try db.execute(sql: """
                CREATE TABLE new_chapters (id BLOB PRIMARY KEY CHECK (length(id) = 16), title TEXT NOT NULL,
                                           position INTEGER NOT NULL CHECK (position >= 0), version INTEGER NOT NULL);
                INSERT INTO new_chapters SELECT id, title, position, version FROM chapters;
                DROP TABLE chapters;
                ALTER TABLE new_chapters RENAME TO chapters;
                CREATE TABLE new_media (id BLOB PRIMARY KEY CHECK (length(id) = 16), name TEXT NOT NULL, cdn_url TEXT NOT NULL,
                                        duration_ms INTEGER NOT NULL, byte_size INTEGER NOT NULL);
                INSERT INTO new_media SELECT id, name, cdn_url, duration_ms, byte_size FROM media;
                DROP TABLE media;
                ALTER TABLE new_media RENAME TO media;
                CREATE TABLE new_videos (id BLOB PRIMARY KEY CHECK (length(id) = 16),
                                         chapter_id BLOB NOT NULL REFERENCES chapters (id) DEFERRABLE INITIALLY DEFERRED,
                                         media_id BLOB NOT NULL REFERENCES media (id) DEFERRABLE INITIALLY DEFERRED,
                                         title TEXT NOT NULL, position INTEGER NOT NULL CHECK (position >= 0),
                                         UNIQUE (chapter_id, media_id));
                INSERT INTO new_videos SELECT id, chapter_id, media_id, title, position FROM videos;
                DROP TABLE videos;
                ALTER TABLE new_videos RENAME TO videos;

                CREATE TABLE new_visible_chapters (key BLOB PRIMARY KEY CHECK (length(key) = 16), id BLOB CHECK (length(id) = 16),
                                                   title TEXT NOT NULL, position INTEGER NOT NULL CHECK (position >= 0),
                                                   version INTEGER NOT NULL, status INTEGER NOT NULL CHECK (status IN (0, 1)));
                INSERT INTO new_visible_chapters SELECT key, id, title, position, version, status FROM visible_chapters;
                DROP TABLE visible_chapters;
                ALTER TABLE new_visible_chapters RENAME TO visible_chapters;
                CREATE TABLE new_visible_media (key BLOB PRIMARY KEY CHECK (length(key) = 16), id BLOB CHECK (length(id) = 16),
                                                name TEXT NOT NULL, cdn_url TEXT NOT NULL, duration_ms INTEGER NOT NULL,
                                                byte_size INTEGER NOT NULL, status INTEGER NOT NULL CHECK (status IN (0, 1)));
                INSERT INTO new_visible_media SELECT key, id, name, cdn_url, duration_ms, byte_size, status FROM visible_media;
                DROP TABLE visible_media;
                ALTER TABLE new_visible_media RENAME TO visible_media;
                CREATE TABLE new_visible_videos (key BLOB PRIMARY KEY CHECK (length(key) = 16), id BLOB CHECK (length(id) = 16),
                                                 chapter_key BLOB NOT NULL REFERENCES visible_chapters (key) DEFERRABLE INITIALLY DEFERRED,
                                                 media_key BLOB NOT NULL REFERENCES visible_media (key) DEFERRABLE INITIALLY DEFERRED,
                                                 title TEXT NOT NULL, position INTEGER NOT NULL CHECK (position >= 0),
                                                 status INTEGER NOT NULL CHECK (status IN (0, 1)),
                                                 UNIQUE (chapter_key, media_key));
                INSERT INTO new_visible_videos SELECT key, id, chapter_key, media_key, title, position, status FROM visible_videos;
                DROP TABLE visible_videos;
                ALTER TABLE new_visible_videos RENAME TO visible_videos;
                CREATE INDEX visible_videos_by_chapter ON visible_videos (chapter_key, position);
                """)
            // No index on the media columns: media files are never deleted but with the whole
            // course (a snapshot, after its videos), so the foreign keys need none.
        }
        // The confirmed state was three tables written row by row with every diff: about 40% of
        // what a client under load spent writing. Nothing reads those rows but the replica
        // opening, so the state is kept as a base (a snapshot message) and the diffs after it (as
        // they came), one row each; the engine writes a new base when the log outgrows the course.
        // A file with confirmed rows keeps them as its base.
        migrator.registerMigration("confirmedLog") { db in
            try db.execute(sql: """
                CREATE TABLE confirmed_base (id INTEGER PRIMARY KEY CHECK (id = 1), snapshot BLOB NOT NULL);
                CREATE TABLE confirmed_diffs (seq INTEGER PRIMARY KEY, diff BLOB NOT NULL);
                """)
            if let course = try Row.fetchOne(db, sql: "SELECT id, title, seq FROM course") {
                let id = try Self.id(course["id"])
                try replaceBase(with: CourseState(
                    course: Course(id: id, title: try course.decode(forColumn: "title"), seq: UInt64(bitPattern: try course.decode(forColumn: "seq"))),
                    chapters: try ConfirmedChapter.fetchAll(db).map { $0.chapter(in: id) },
                    media: try ConfirmedMedia.fetchAll(db).map { $0.file(in: id) },
                    videos: try ConfirmedVideo.fetchAll(db).map(\.video)), db)
            }
            try db.execute(sql: "DROP TABLE videos; DROP TABLE chapters; DROP TABLE media")
        }
        return migrator
    }
}

/// A ``SyncClient``'s hold on its replica file while it is open: an exclusive `flock` on a
/// descriptor of its own, so that a second client on the same file, in this process or another,
/// is refused instead of speaking as the same client. (SQLite's own locks are `fcntl` locks, which
/// do not meet these; they are per process and would not see a second client in this one.)
/// Released by ``release()``, or when the claim is freed or the process ends.
package final class ReplicaClaim: Sendable {
    private let descriptor: NIOLockedValueBox<Int32>

    /// Claims the file at `path` (which must exist).
    /// - Throws: ``ReplicaError/inUse(file:)`` if another claim holds it; a `POSIXError` if the
    ///   file cannot be opened or locked at all (a file system without `flock`).
    package init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let failure = errno
            close(fd)
            if failure == EWOULDBLOCK { throw ReplicaError.inUse(file: path) }
            throw POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO)
        }
        descriptor = NIOLockedValueBox(fd)
    }

    /// Lets another client open the file (idempotent).
    package func release() {
        descriptor.withLockedValue { fd in
            guard fd >= 0 else { return }
            close(fd) // closing the only descriptor of the claim releases its flock
            fd = -1
        }
    }

    deinit { release() }
}
