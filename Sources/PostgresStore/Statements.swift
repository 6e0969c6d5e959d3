import Foundation
import PostgresNIO
import SyncModel
import SyncStorage

// The statements of the commit, load and catch-up paths: prepared statements, and the queries of
// `CourseQueries`. `PlanStabilityTests` checks with EXPLAIN, on a database with statistics, that
// each of them probes an index for a new course and for a large one, and that each is bound to
// one course (every table it reads or writes is reached by that course's key), as a schema
// distributed by course needs (docs/scaling.md).

/// The queries that are not prepared statements, each about one course.
enum CourseQueries {
    static func create(_ course: Course) -> PostgresQuery {
        """
        INSERT INTO courses (id, title, seq) VALUES (\(course.id.uuid), \(course.title), \(Int64(course.seq)))
        ON CONFLICT (id) DO NOTHING RETURNING id
        """
    }

    // Loading a course: four reads in one REPEATABLE READ transaction.
    static func course(_ courseID: EntityID) -> PostgresQuery { "SELECT title, seq FROM courses WHERE id = \(courseID.uuid)" }
    static func chapters(_ courseID: EntityID) -> PostgresQuery {
        "SELECT id, title, position, version FROM chapters WHERE course_id = \(courseID.uuid)"
    }
    static func media(_ courseID: EntityID) -> PostgresQuery {
        "SELECT id, name, cdn_url, duration_ms, byte_size FROM media_files WHERE course_id = \(courseID.uuid)"
    }
    /// A probe of the primary key's course prefix (videos carry their course).
    static func videos(_ courseID: EntityID) -> PostgresQuery {
        "SELECT id, chapter_id, media_file_id, title, position FROM videos WHERE course_id = \(courseID.uuid)"
    }

    /// The course's existence and a page of its history in one statement (a course with no
    /// history gives one row of nulls).
    static func history(_ courseID: EntityID, before: CourseSeq?, limit: Int) -> PostgresQuery {
        """
        SELECT l.seq, extract(epoch FROM l.committed_at)::float8, l.author, l.origin_client_id, l.origin_batch_seq, l.summary
        FROM courses c LEFT JOIN LATERAL (
            SELECT seq, committed_at, author, origin_client_id, origin_batch_seq, summary FROM change_log
            WHERE course_id = \(courseID.uuid) AND seq < \(Int64(clamping: before ?? UInt64(Int64.max))) ORDER BY seq DESC LIMIT \(Int64(limit))) l ON true
        WHERE c.id = \(courseID.uuid)
        """
    }

    /// One statement: keep this snapshot, drop those older than the change log reaches (one is
    /// kept below its oldest entry).
    static func writeSnapshot(_ courseID: EntityID, seq: CourseSeq, state: [UInt8]) -> PostgresQuery {
        """
        WITH kept AS (
            INSERT INTO course_snapshots (course_id, seq, state) VALUES (\(courseID.uuid), \(Int64(seq)), \(ByteBuffer(bytes: state)))
            ON CONFLICT DO NOTHING RETURNING seq)
        DELETE FROM course_snapshots WHERE course_id = \(courseID.uuid) AND seq < (
            SELECT max(seq) FROM course_snapshots WHERE course_id = \(courseID.uuid)
            AND seq < coalesce((SELECT min(seq) FROM change_log WHERE course_id = \(courseID.uuid)), 0))
        """
    }

    static func snapshot(_ courseID: EntityID, atOrBefore seq: CourseSeq) -> PostgresQuery {
        """
        SELECT seq, state FROM course_snapshots WHERE course_id = \(courseID.uuid) AND seq <= \(Int64(clamping: seq))
        ORDER BY seq DESC LIMIT 1
        """
    }
}

/// A group commit, in one statement, every part of it bound to the course (`$1`), as a schema
/// distributed by course needs (docs/scaling.md): bump the course's seq if it is still `expected`, and, joined
/// to that update (so nothing happens where it did not match), delete and upsert the changed rows,
/// append the change log, record the batches and their temp IDs, prune the log, and NOTIFY.
/// Returns one row if written, none if the course was not at `expected` (or does not exist).
///
/// The parts of one statement run against one snapshot in no fixed order, which is safe here: they
/// touch disjoint rows, foreign keys are checked at the end of the statement and the position and
/// media uniqueness at commit (deferred).
struct WriteGroup: PostgresPreparedStatement {
    typealias Row = String

    static let sql = """
        WITH bumped AS (
            UPDATE courses SET seq = $3 WHERE id = $1 AND seq = $2 RETURNING id
        ), deleted_videos AS (
            DELETE FROM videos WHERE course_id = $1 AND id = ANY($4::uuid[]) AND EXISTS (SELECT FROM bumped)
        ), deleted_chapters AS (
            DELETE FROM chapters WHERE course_id = $1 AND id = ANY($5::uuid[]) AND EXISTS (SELECT FROM bumped)
        ), upserted_chapters AS (
            INSERT INTO chapters (course_id, id, title, position, version)
            SELECT $1, u.id, u.title, u.position, u.version
            FROM bumped b, unnest($6::uuid[], $7::text[], $8::bigint[], $9::bigint[]) AS u(id, title, position, version)
            ON CONFLICT (course_id, id) DO UPDATE SET title = excluded.title, position = excluded.position, version = excluded.version
        ), upserted_media AS (
            INSERT INTO media_files (course_id, id, name, cdn_url, duration_ms, byte_size)
            SELECT $1, u.id, u.name, u.cdn_url, u.duration_ms, u.byte_size
            FROM bumped b, unnest($10::uuid[], $11::text[], $12::text[], $13::bigint[], $14::bigint[])
                 AS u(id, name, cdn_url, duration_ms, byte_size)
            ON CONFLICT (course_id, id) DO UPDATE SET name = excluded.name, cdn_url = excluded.cdn_url,
                duration_ms = excluded.duration_ms, byte_size = excluded.byte_size
        ), upserted_videos AS (
            INSERT INTO videos (course_id, id, chapter_id, media_file_id, title, position)
            SELECT $1, u.id, u.chapter_id, u.media_file_id, u.title, u.position
            FROM bumped b, unnest($15::uuid[], $16::uuid[], $17::uuid[], $18::text[], $19::bigint[])
                 AS u(id, chapter_id, media_file_id, title, position)
            ON CONFLICT (course_id, id) DO UPDATE SET chapter_id = excluded.chapter_id, media_file_id = excluded.media_file_id,
                title = excluded.title, position = excluded.position
        ), logged AS (
            INSERT INTO change_log (course_id, seq, origin_client_id, origin_batch_seq, diff, author, summary)
            SELECT $1, u.seq, u.client_id, u.batch_seq, u.diff, u.author, u.summary
            FROM bumped b, unnest($20::bigint[], $21::uuid[], $22::bigint[], $23::bytea[], $30::text[], $31::text[])
                 AS u(seq, client_id, batch_seq, diff, author, summary)
        ), recorded AS (
            INSERT INTO client_batches (client_id, course_id, batch_seq, seq, ack)
            SELECT u.client_id, $1, u.batch_seq, u.seq, u.ack
            FROM bumped b, unnest($21::uuid[], $22::bigint[], $20::bigint[], $24::bytea[]) AS u(client_id, batch_seq, seq, ack)
        ), mapped AS (
            INSERT INTO client_temps (client_id, course_id, temp, entity_id)
            SELECT u.client_id, $1, u.temp, u.entity_id
            FROM bumped b, unnest($25::uuid[], $26::bigint[], $27::uuid[]) AS u(client_id, temp, entity_id)
        ), pruned AS (
            DELETE FROM change_log WHERE course_id = $1 AND seq <= $28 AND EXISTS (SELECT FROM bumped)
        )
        -- Other nodes learn of the commit when it commits (LISTEN/NOTIFY).
        SELECT pg_notify('coursesync_commits', $29)::text FROM bumped
        """

    let group: GroupWrite

    init(_ group: GroupWrite) { self.group = group }

    func makeBindings() throws -> PostgresBindings {
        let changes = group.changes
        var b = PostgresBindings(capacity: 31)
        b.append(group.courseID.uuid)
        b.append(Int64(group.expectedSeq))
        b.append(Int64(group.newSeq))
        b.append(changes.deletedVideos.map(\.uuid))
        b.append(changes.deletedChapters.map(\.uuid))
        b.append(changes.chapters.map(\.id.uuid))
        b.append(changes.chapters.map(\.title))
        b.append(changes.chapters.map { Int64($0.position) })
        b.append(changes.chapters.map { Int64($0.version) })
        b.append(changes.media.map(\.id.uuid))
        b.append(changes.media.map(\.name))
        b.append(changes.media.map(\.cdnURL))
        b.append(changes.media.map { Int64($0.durationMs) })
        b.append(changes.media.map { Int64($0.byteSize) })
        b.append(changes.videos.map(\.id.uuid))
        b.append(changes.videos.map(\.chapterID.uuid))
        b.append(changes.videos.map(\.mediaFileID.uuid))
        b.append(changes.videos.map(\.title))
        b.append(changes.videos.map { Int64($0.position) })
        b.append(group.entries.map { Int64($0.seq) })
        b.append(group.entries.map(\.origin.clientID.id.uuid))
        b.append(group.entries.map { Int64(bitPattern: $0.origin.batchSeq) })
        b.append(group.entries.map { ByteBuffer(bytes: $0.diff) })
        b.append(group.entries.map { ByteBuffer(bytes: $0.ack) })
        b.append(changes.tempMappings.map(\.client.id.uuid))
        b.append(changes.tempMappings.map { Int64(bitPattern: $0.temp.rawValue) })
        b.append(changes.tempMappings.map(\.entity.uuid))
        b.append(Int64(group.pruneThrough))
        b.append("\(group.courseID) \(group.newSeq)")
        b.append(group.entries.map(\.author))
        b.append(group.entries.map(\.summary))
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(String.self) }
}

/// Sent after a group's write on the same connection: it runs only once the write's transaction
/// has committed, and fails if the commit failed (``PostgresBackend/write(_:)``).
struct CommitFence: PostgresPreparedStatement {
    typealias Row = Bool
    static let sql = "SELECT true"

    func makeBindings() throws -> PostgresBindings { PostgresBindings() }
    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Bool.self) }
}

struct CourseSeqStatement: PostgresPreparedStatement {
    typealias Row = Int64
    static let sql = "SELECT seq FROM courses WHERE id = $1"
    let course: UUID

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings()
        b.append(course)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}

struct CourseSeqsStatement: PostgresPreparedStatement {
    typealias Row = (UUID, Int64)
    static let sql = "SELECT id, seq FROM courses WHERE id = ANY($1::uuid[])"
    let courses: [UUID]

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings()
        b.append(courses)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// The course's seq with the change-log entries after a cursor, in one query: one row with null
/// entry columns when there are none, no row when there is no course.
struct ReadLogStatement: PostgresPreparedStatement {
    typealias Row = (Int64, Int64?, ByteBuffer?)
    static let sql = """
        SELECT c.seq, l.seq, l.diff FROM courses c
        LEFT JOIN LATERAL (SELECT seq, diff FROM change_log WHERE course_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) l ON true
        WHERE c.id = $1 ORDER BY l.seq
        """
    let course: UUID
    let cursor: Int64
    let limit: Int64

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings()
        b.append(course)
        b.append(cursor)
        b.append(limit)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// The stored acks and known temp IDs of a group, as one query. Each key is looked up by the
/// primary key, one index probe per key (a `LATERAL` subquery with `LIMIT 1`, which the planner
/// cannot flatten into a join): planned as a join, the lookup depended on the course's row
/// estimate, and once statistics existed from other courses (autovacuum's `ANALYZE`), a new course
/// was estimated at one row, planned as a nested loop over a sequential scan, and compared every
/// row of the course with every key (2.7 M pairs, 215 ms, for 12,816 rows × 210 temps).
struct LookUpStatement: PostgresPreparedStatement {
    typealias Row = (Int32, UUID, Int64, ByteBuffer?, UUID?)
    static let sql = """
        SELECT 0, k.client_id, k.batch_seq, b.ack, NULL::uuid
        FROM unnest($2::uuid[], $3::bigint[]) AS k(client_id, batch_seq)
        CROSS JOIN LATERAL (SELECT ack FROM client_batches b
                            WHERE b.client_id = k.client_id AND b.course_id = $1 AND b.batch_seq = k.batch_seq
                            LIMIT 1) b
        UNION ALL
        SELECT 1, k.client_id, k.temp, NULL::bytea, t.entity_id
        FROM unnest($4::uuid[], $5::bigint[]) AS k(client_id, temp)
        CROSS JOIN LATERAL (SELECT entity_id FROM client_temps t
                            WHERE t.client_id = k.client_id AND t.course_id = $1 AND t.temp = k.temp
                            LIMIT 1) t
        """
    let course: UUID
    var batchClients: [UUID]
    var batchSeqs: [Int64]
    var tempClients: [UUID]
    var temps: [Int64]

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings()
        b.append(course)
        b.append(batchClients)
        b.append(batchSeqs)
        b.append(tempClients)
        b.append(temps)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}
