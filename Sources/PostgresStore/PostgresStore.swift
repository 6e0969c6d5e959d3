import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import SyncModel
import SyncServer
import SyncWire

/// The production ``SyncStore``: PostgreSQL through one `PostgresClient` pool (which must be running,
/// e.g. in the same `ServiceGroup`).
///
/// A group commit is one transaction: lock the course row (`FOR UPDATE`), look up which batches were
/// already applied, resolve the rest with the `SyncModel` resolver, write the final rows, the
/// change-log entries, the batch records and the temp-ID map, bump the course seq, commit. Because
/// the lock is in the database, several server processes may share it. The course state the resolver
/// needs is cached in memory and checked against the locked row's seq, so a commit by another
/// process simply causes a reload.
public final class PostgresStore: SyncStore {
    public let client: PostgresClient
    let logger: Logger
    /// How many change-log entries are kept per course; older cursors get a snapshot.
    public let logRetention: Int
    private let cache = NIOLockedValueBox<[EntityID: CourseState]>([:])

    public init(client: PostgresClient, logger: Logger, logRetention: Int = 100_000) {
        precondition(logRetention > 0, "the change log must keep at least one entry")
        self.client = client
        self.logger = logger
        self.logRetention = logRetention
    }

    /// Fails with ``StoreError/notMigrated(_:)`` unless every migration this binary knows is applied.
    public func checkSchema() async throws {
        let missing = try await Migrator().missing(client, logger: logger)
        guard missing.isEmpty else {
            throw StoreError.notMigrated("missing \(missing.joined(separator: ", "))")
        }
    }

    /// Writes a dump of another store (`coursesync copy`) in one transaction. Refuses, writing
    /// nothing, if any of its courses exists here already.
    public func load(_ dump: StoreDump) async throws {
        try await transaction { connection in
            for course in dump.courses {
                let rows = try await connection.query("""
                    INSERT INTO courses (id, title, seq) VALUES (\(course.id.uuid), \(course.title), \(Int64(course.seq)))
                    ON CONFLICT (id) DO NOTHING RETURNING id
                    """, logger: self.logger)
                guard try await rows.collect().count == 1 else { throw StoreError.courseExists(course.id) }
            }
            for chapter in dump.chapters {
                try await connection.query("""
                    INSERT INTO chapters (id, course_id, title, position, version)
                    VALUES (\(chapter.id.uuid), \(chapter.courseID.uuid), \(chapter.title), \(Int32(chapter.position)), \(Int64(chapter.version)))
                    """, logger: self.logger)
            }
            for file in dump.media {
                try await connection.query("""
                    INSERT INTO media_files (id, course_id, name, cdn_url, duration_ms, byte_size)
                    VALUES (\(file.id.uuid), \(file.courseID.uuid), \(file.name), \(file.cdnURL), \(Int64(file.durationMs)), \(Int64(file.byteSize)))
                    """, logger: self.logger)
            }
            for video in dump.videos {
                try await connection.query("""
                    INSERT INTO videos (id, chapter_id, media_file_id, title, position)
                    VALUES (\(video.id.uuid), \(video.chapterID.uuid), \(video.mediaFileID.uuid), \(video.title), \(Int32(video.position)))
                    """, logger: self.logger)
            }
            for entry in dump.log {
                try await connection.query("""
                    INSERT INTO change_log (course_id, seq, origin_client_id, origin_batch_seq, diff)
                    VALUES (\(entry.courseID.uuid), \(Int64(entry.seq)), \(entry.origin.clientID.id.uuid),
                            \(Int64(bitPattern: entry.origin.batchSeq)), \(ByteBuffer(bytes: entry.diff)))
                    """, logger: self.logger)
            }
            for record in dump.batches {
                try await connection.query("""
                    INSERT INTO client_batches (client_id, course_id, batch_seq, seq, ack)
                    VALUES (\(record.client.id.uuid), \(record.courseID.uuid), \(Int64(bitPattern: record.batchSeq)),
                            \(Int64(record.seq)), \(ByteBuffer(bytes: record.ack)))
                    """, logger: self.logger)
            }
            for record in dump.temps {
                try await connection.query("""
                    INSERT INTO client_temps (client_id, course_id, temp, entity_id)
                    VALUES (\(record.client.id.uuid), \(record.courseID.uuid), \(Int64(bitPattern: record.temp.rawValue)), \(record.entity.uuid))
                    """, logger: self.logger)
            }
        }
    }

    public func createCourse(_ course: Course) async throws {
        let rows = try await client.query("""
            INSERT INTO courses (id, title, seq) VALUES (\(course.id.uuid), \(course.title), \(Int64(course.seq)))
            ON CONFLICT (id) DO NOTHING RETURNING id
            """, logger: logger)
        guard try await rows.collect().count == 1 else { throw StoreError.courseExists(course.id) }
    }

    public func commit(_ batches: [Batch], courseID: EntityID) async throws -> [BatchOutcome] {
        precondition(batches.allSatisfy { $0.courseID == courseID }, "a group commit is for one course")
        guard !batches.isEmpty else { return [] }
        let (outcomes, state) = try await transaction { connection in
            try await self.commit(batches, courseID: courseID, on: connection)
        }
        cache.withLockedValue { cache in
            if (cache[courseID]?.seq ?? 0) <= state.seq { cache[courseID] = state }
        }
        return outcomes
    }

    /// `body` in one transaction; our own errors (an unknown course, a corrupt row) are thrown as
    /// they are rather than inside postgres-nio's wrapper, which means less to a caller.
    private func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await client.withTransaction(logger: logger) { connection in try await body(connection) }
        } catch let error as PostgresTransactionError {
            if let inner = error.closureError as? StoreError { throw inner }
            throw error
        }
    }

    public func catchUp(courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> CatchUp {
        precondition(limit > 0)
        guard let seq = try await courseSeq(courseID) else { throw StoreError.unknownCourse(courseID) }
        if cursor == 0 || cursor > seq { return .snapshot(try await snapshot(courseID: courseID)) }
        if cursor == seq { return .diffs([]) }
        let rows = try await client.query("""
            SELECT seq, diff FROM change_log WHERE course_id = \(courseID.uuid) AND seq > \(Int64(cursor))
            ORDER BY seq LIMIT \(limit)
            """, logger: logger)
        var diffs: [Diff] = []
        for try await (seq, bytes) in rows.decode((Int64, ByteBuffer).self) {
            let diff = try Self.decodeDiff(bytes)
            guard diff.seq == UInt64(seq) else { throw StoreError.corrupt("change-log row \(seq) holds the diff of seq \(diff.seq)") }
            diffs.append(diff)
        }
        // A log that starts after the cursor was pruned: the subscriber is too far behind.
        guard diffs.first?.seq == cursor + 1 else { return .snapshot(try await snapshot(courseID: courseID)) }
        return .diffs(diffs)
    }

    public func snapshot(courseID: EntityID) async throws -> CourseState {
        try await client.withConnection { connection in
            // REPEATABLE READ: the four reads see one consistent state.
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: self.logger)
            do {
                let state = try await self.loadState(courseID, on: connection)
                try await connection.query("COMMIT", logger: self.logger)
                return state
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: self.logger)
                throw error
            }
        }
    }

    /// The course's current seq, or `nil` if it does not exist.
    public func courseSeq(_ courseID: EntityID) async throws -> CourseSeq? {
        let rows = try await client.query("SELECT seq FROM courses WHERE id = \(courseID.uuid)", logger: logger)
        for try await seq in rows.decode(Int64.self) { return CourseSeq(seq) }
        return nil
    }

    // MARK: - Group commit

    private func commit(_ batches: [Batch], courseID: EntityID, on connection: PostgresConnection) async throws -> ([BatchOutcome], CourseState) {
        let lock = try await connection.query("SELECT seq FROM courses WHERE id = \(courseID.uuid) FOR UPDATE", logger: logger)
        var lockedSeq: Int64?
        for try await seq in lock.decode(Int64.self) { lockedSeq = seq }
        guard let lockedSeq else { throw StoreError.unknownCourse(courseID) }

        var state: CourseState
        if let cached = cache.withLockedValue({ $0[courseID] }), cached.seq == UInt64(lockedSeq) {
            state = cached
        } else {
            state = try await loadState(courseID, on: connection)
        }
        let startSeq = state.seq
        let (applied, temps) = try await lookUp(batches, courseID: courseID, on: connection)
        var allocator = RandomIDAllocator(SystemRandomNumberGenerator())
        let group = GroupCommit.resolve(batches, against: state, appliedAcks: applied, knownTemps: temps, allocator: &allocator)
        if !group.commits.isEmpty {
            try await write(group, startSeq: startSeq, on: connection)
        }
        return (group.outcomes, group.state)
    }

    /// In one round trip: the acks of the batches in `batches` that were committed before, and each
    /// client's temp IDs that the batches mention, mapped to their real IDs.
    private func lookUp(_ batches: [Batch], courseID: EntityID, on connection: PostgresConnection) async throws -> ([BatchKey: Ack], [ClientID: [TempID: EntityID]]) {
        let batchClients = batches.map(\.clientID.id.uuid)
        let batchSeqs = batches.map { Int64(bitPattern: $0.batchSeq) }
        var tempClients: [UUID] = []
        var temps: [Int64] = []
        for batch in batches {
            for temp in batch.mentionedTemps {
                tempClients.append(batch.clientID.id.uuid)
                temps.append(Int64(bitPattern: temp.rawValue))
            }
        }
        let rows = try await connection.query(Self.lookUpQuery(courseID: courseID, batchClients: batchClients, batchSeqs: batchSeqs,
                                                               tempClients: tempClients, temps: temps), logger: logger)
        var acks: [BatchKey: Ack] = [:]
        var known: [ClientID: [TempID: EntityID]] = [:]
        for try await (kind, client, key, ack, entity) in rows.decode((Int32, UUID, Int64, ByteBuffer?, UUID?).self) {
            let clientID = ClientID(EntityID(client))
            if kind == 0, let ack {
                acks[BatchKey(client: clientID, batchSeq: BatchSeq(bitPattern: key))] = try Self.decodeAck(ack)
            } else if kind == 1, let entity, let temp = TempID(UInt64(bitPattern: key)) {
                known[clientID, default: [:]][temp] = EntityID(entity)
            } else {
                throw StoreError.corrupt("an unreadable batch record or temp ID of client \(client)")
            }
        }
        return (acks, known)
    }

    /// The stored acks and known temp IDs of a group, as one query. Each key is looked up by the
    /// primary key, one index probe per key (a `LATERAL` subquery with `LIMIT 1`, which the
    /// planner cannot flatten into a join): planned as a join, the lookup depended on the course's
    /// row estimate, and once statistics existed from other courses (autovacuum's `ANALYZE`), a
    /// new course was estimated at one row, planned as a nested loop over a sequential scan, and
    /// compared every row of the course with every key (2.7 M pairs, 215 ms, for 12,816 rows ×
    /// 210 temps).
    static func lookUpQuery(courseID: EntityID, batchClients: [UUID], batchSeqs: [Int64], tempClients: [UUID], temps: [Int64]) -> PostgresQuery {
        """
        SELECT 0, k.client_id, k.batch_seq, b.ack, NULL::uuid
        FROM unnest(\(batchClients)::uuid[], \(batchSeqs)::bigint[]) AS k(client_id, batch_seq)
        CROSS JOIN LATERAL (SELECT ack FROM client_batches b
                            WHERE b.client_id = k.client_id AND b.course_id = \(courseID.uuid) AND b.batch_seq = k.batch_seq
                            LIMIT 1) b
        UNION ALL
        SELECT 1, k.client_id, k.temp, NULL::bytea, t.entity_id
        FROM unnest(\(tempClients)::uuid[], \(temps)::bigint[]) AS k(client_id, temp)
        CROSS JOIN LATERAL (SELECT entity_id FROM client_temps t
                            WHERE t.client_id = k.client_id AND t.course_id = \(courseID.uuid) AND t.temp = k.temp
                            LIMIT 1) t
        """
    }

    /// Writes the net effect of `commits` (the rows as they are in `finalState`), one statement per
    /// table, plus the change log, batch records, temp-ID map and course seq.
    private func write(_ group: GroupCommit, startSeq: CourseSeq, on connection: PostgresConnection) async throws {
        let state = group.state, commits = group.commits
        let courseID = state.course.id
        let net = group.netChanges
        let goneVideos = net.deletedVideos.map(\.uuid), goneChapters = net.deletedChapters.map(\.uuid)
        let chapters = net.chapters, media = net.media, videos = net.videos
        let seqs = commits.map { Int64($0.seq) }
        let clients = commits.map(\.clientID.id.uuid)
        let batchSeqs = commits.map { Int64(bitPattern: $0.batchSeq) }
        let diffs = commits.map { ByteBuffer(bytes: WireMessage.diff($0.diff).payload()) }
        let acks = commits.map { ByteBuffer(bytes: WireMessage.ack($0.ack).payload()) }
        let tempClients = net.tempMappings.map(\.client.id.uuid)
        let temps = net.tempMappings.map { Int64(bitPattern: $0.temp.rawValue) }
        let entities = net.tempMappings.map(\.entity.uuid)
        // One statement, one round trip. Its parts run against one snapshot in no fixed order, which
        // is safe here: they touch disjoint rows, foreign keys are checked at the end of the statement
        // and the position/media uniqueness at commit (deferred).
        try await connection.query("""
            WITH deleted_videos AS (
                DELETE FROM videos WHERE id = ANY(\(goneVideos)::uuid[])
            ), deleted_chapters AS (
                DELETE FROM chapters WHERE id = ANY(\(goneChapters)::uuid[])
            ), upserted_chapters AS (
                INSERT INTO chapters (id, course_id, title, position, version)
                SELECT u.id, \(courseID.uuid), u.title, u.position, u.version
                FROM unnest(\(chapters.map(\.id.uuid))::uuid[], \(chapters.map(\.title))::text[],
                            \(chapters.map { Int64($0.position) })::bigint[], \(chapters.map { Int64($0.version) })::bigint[])
                     AS u(id, title, position, version)
                ON CONFLICT (id) DO UPDATE SET title = excluded.title, position = excluded.position, version = excluded.version
            ), upserted_media AS (
                INSERT INTO media_files (id, course_id, name, cdn_url, duration_ms, byte_size)
                SELECT u.id, \(courseID.uuid), u.name, u.cdn_url, u.duration_ms, u.byte_size
                FROM unnest(\(media.map(\.id.uuid))::uuid[], \(media.map(\.name))::text[], \(media.map(\.cdnURL))::text[],
                            \(media.map { Int64($0.durationMs) })::bigint[], \(media.map { Int64($0.byteSize) })::bigint[])
                     AS u(id, name, cdn_url, duration_ms, byte_size)
                ON CONFLICT (id) DO UPDATE SET name = excluded.name, cdn_url = excluded.cdn_url,
                    duration_ms = excluded.duration_ms, byte_size = excluded.byte_size
            ), upserted_videos AS (
                INSERT INTO videos (id, chapter_id, media_file_id, title, position)
                SELECT * FROM unnest(\(videos.map(\.id.uuid))::uuid[], \(videos.map(\.chapterID.uuid))::uuid[],
                                     \(videos.map(\.mediaFileID.uuid))::uuid[], \(videos.map(\.title))::text[],
                                     \(videos.map { Int64($0.position) })::bigint[])
                ON CONFLICT (id) DO UPDATE SET chapter_id = excluded.chapter_id, media_file_id = excluded.media_file_id,
                    title = excluded.title, position = excluded.position
            ), logged AS (
                INSERT INTO change_log (course_id, seq, origin_client_id, origin_batch_seq, diff)
                SELECT \(courseID.uuid), * FROM unnest(\(seqs)::bigint[], \(clients)::uuid[], \(batchSeqs)::bigint[], \(diffs)::bytea[])
            ), recorded AS (
                INSERT INTO client_batches (client_id, course_id, batch_seq, seq, ack)
                SELECT u.client_id, \(courseID.uuid), u.batch_seq, u.seq, u.ack
                FROM unnest(\(clients)::uuid[], \(batchSeqs)::bigint[], \(seqs)::bigint[], \(acks)::bytea[]) AS u(client_id, batch_seq, seq, ack)
            ), mapped AS (
                INSERT INTO client_temps (client_id, course_id, temp, entity_id)
                SELECT u.client_id, \(courseID.uuid), u.temp, u.entity_id
                FROM unnest(\(tempClients)::uuid[], \(temps)::bigint[], \(entities)::uuid[]) AS u(client_id, temp, entity_id)
            )
            UPDATE courses SET seq = \(Int64(state.seq)) WHERE id = \(courseID.uuid)
            -- Other nodes learn of the commit when the transaction commits (LISTEN/NOTIFY).
            RETURNING pg_notify(\(Self.notificationChannel), \("\(courseID) \(state.seq)"))
            """, logger: logger)

        // Prune the log now and then (when the seq crosses a multiple of the interval), not every commit.
        let interval = UInt64(max(1, min(100, logRetention / 4)))
        if state.seq / interval != startSeq / interval, state.seq > UInt64(logRetention) {
            try await connection.query("""
                DELETE FROM change_log WHERE course_id = \(courseID.uuid) AND seq <= \(Int64(state.seq) - Int64(logRetention))
                """, logger: logger)
        }
    }

    // MARK: - Notifications

    /// The NOTIFY channel on which every commit announces `<course id> <seq>`.
    public static let notificationChannel = "coursesync_commits"

    /// Calls `handler` for every commit announced on the database, by any node, until cancelled.
    /// A lost connection is re-established (after `retryDelay`). `onListening` is called each
    /// time the LISTEN is in place, first included: what was committed before it (or while the
    /// listener was away) was not announced to it, so that is when to read the store.
    public func listenForCommits(retryDelay: Duration = .seconds(1),
                                 onListening: @escaping @Sendable () async -> Void = {},
                                 _ handler: @escaping @Sendable (EntityID, CourseSeq) async -> Void) async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.notificationChannel) { notifications in
                        await onListening()
                        for try await notification in notifications {
                            let parts = notification.payload.split(separator: " ")
                            guard parts.count == 2, let courseID = EntityID(String(parts[0])), let seq = CourseSeq(parts[1]) else {
                                logger.warning("ignored a malformed commit notification", metadata: ["payload": "\(notification.payload)"])
                                continue
                            }
                            await handler(courseID, seq)
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("commit notifications interrupted; listening again", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: retryDelay)
        }
    }

    // MARK: - Reading

    private func loadState(_ courseID: EntityID, on connection: PostgresConnection) async throws -> CourseState {
        var course: Course?
        for try await (title, seq) in try await connection.query("SELECT title, seq FROM courses WHERE id = \(courseID.uuid)", logger: logger).decode((String, Int64).self) {
            course = Course(id: courseID, title: title, seq: CourseSeq(seq))
        }
        guard let course else { throw StoreError.unknownCourse(courseID) }
        var chapters: [Chapter] = []
        for try await (id, title, position, version) in try await connection.query("""
            SELECT id, title, position, version FROM chapters WHERE course_id = \(courseID.uuid)
            """, logger: logger).decode((UUID, String, Int32, Int64).self) {
            chapters.append(Chapter(id: EntityID(id), courseID: courseID, title: title, position: Int(position), version: UInt64(version)))
        }
        var media: [MediaFile] = []
        for try await (id, name, url, duration, size) in try await connection.query("""
            SELECT id, name, cdn_url, duration_ms, byte_size FROM media_files WHERE course_id = \(courseID.uuid)
            """, logger: logger).decode((UUID, String, String, Int64, Int64).self) {
            media.append(MediaFile(id: EntityID(id), courseID: courseID, name: name, cdnURL: url,
                                   durationMs: UInt64(duration), byteSize: UInt64(size)))
        }
        var videos: [Video] = []
        for try await (id, chapter, mediaFile, title, position) in try await connection.query("""
            SELECT v.id, v.chapter_id, v.media_file_id, v.title, v.position
            FROM videos v JOIN chapters c ON c.id = v.chapter_id WHERE c.course_id = \(courseID.uuid)
            """, logger: logger).decode((UUID, UUID, UUID, String, Int32).self) {
            videos.append(Video(id: EntityID(id), chapterID: EntityID(chapter), mediaFileID: EntityID(mediaFile), title: title, position: Int(position)))
        }
        let state = CourseState(course: course, chapters: chapters, media: media, videos: videos)
        let violations = state.invariantViolations()
        guard violations.isEmpty else { throw StoreError.corrupt("course \(courseID): \(violations.joined(separator: "; "))") }
        return state
    }

    static func decodeDiff(_ bytes: ByteBuffer) throws -> Diff {
        guard case .diff(let diff) = try WireMessage(payload: bytes.readableBytesView) else {
            throw StoreError.corrupt("a change-log row does not hold a Diff")
        }
        return diff
    }

    static func decodeAck(_ bytes: ByteBuffer) throws -> Ack {
        guard case .ack(let ack) = try WireMessage(payload: bytes.readableBytesView) else {
            throw StoreError.corrupt("a batch record does not hold an Ack")
        }
        return ack
    }
}
