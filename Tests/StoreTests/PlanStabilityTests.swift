import Foundation
import PostgresNIO
@testable import PostgresStore
import SyncModel
import SyncStorage
import Testing
@testable import TestSupport

/// Every statement on the commit, load and catch-up paths keeps an index plan once PostgreSQL has
/// statistics (autovacuum's `ANALYZE`) from many other courses: for a new course (estimated at
/// next to no rows) and for a large one, as a custom plan and as the generic plan a prepared
/// statement switches to. Asserts on plan shape, never on time. And each is bound to one course,
/// as a schema distributed by course needs (docs/scaling.md): every table it reads or changes is
/// reached with the course's key fixed, and every row it inserts names its course.
@Suite struct PlanStabilityTests {
    /// Regression (the plan cliff): planned as a join, the lookup of stored acks and temp IDs
    /// estimated a new course at one row and scanned every row of the course for every key (2.7 M
    /// comparisons, 215 ms per group for 12,816 rows × 210 temps).
    @Test func theCommitLoadAndCatchUpStatementsProbeIndexesAndAreEachBoundToOneCourse() async throws {
        do { try await check() } catch let error as PSQLError {
            Issue.record("\(String(reflecting: error))")
        }
    }

    func check() async throws {
        try await withDatabase { database in
            let client = database.client
            var earlier: [EntityID] = []
            for _ in 0..<20 {
                let course = EntityID.fresh()
                try await database.store.createCourse(Course(id: course, title: "Earlier"))
                try await Self.fill(client, course, chapters: 10, videosPerChapter: 50, batches: 2_000, temps: 3_000)
                earlier.append(course)
            }
            // And the many small courses a deployment has (a few chapters each).
            try await client.query("INSERT INTO courses (id, title, seq) SELECT gen_random_uuid(), 'Small ' || g, 0 FROM generate_series(1, 3000) AS g")
            try await client.query("""
                INSERT INTO chapters (id, course_id, title, position, version)
                SELECT gen_random_uuid(), c.id, 'Chapter', p, 0 FROM courses c, generate_series(0, 3) AS p WHERE c.title LIKE 'Small %'
                """)
            let large = EntityID.fresh(), new = EntityID.fresh()
            try await database.store.createCourse(Course(id: large, title: "Large"))
            try await database.store.createCourse(Course(id: new, title: "New"))
            try await client.query("ANALYZE")
            // Grown after the statistics were taken, as a course grows between autovacuum runs.
            try await Self.fill(client, large, chapters: 50, videosPerChapter: 200, batches: 20_000, temps: 30_000)
            try await Self.fill(client, new, chapters: 2, videosPerChapter: 5, batches: 20, temps: 30)

            for course in [new, large] {
                let keys = try await Self.keys(client, course)
                let statements: [(String, String, PostgresBindings)] = [
                    ("write", WriteGroup.sql, try WriteGroup(Self.groupWrite(course, keys)).makeBindings()),
                    ("lookUp", LookUpStatement.sql, try LookUpStatement(course: course.uuid, batchClients: keys.batchClients, batchSeqs: keys.batchSeqs,
                                                                         tempClients: keys.tempClients, temps: keys.temps).makeBindings()),
                    ("readLog", ReadLogStatement.sql, try ReadLogStatement(course: course.uuid, cursor: 3, limit: 500).makeBindings()),
                    ("courseSeq", CourseSeqStatement.sql, try CourseSeqStatement(course: course.uuid).makeBindings()),
                    ("courseSeqs", CourseSeqsStatement.sql, try CourseSeqsStatement(courses: [course.uuid, new.uuid, large.uuid]).makeBindings()),
                ]
                for (name, sql, binds) in statements {
                    for mode in ["force_custom_plan", "force_generic_plan"] {
                        let plan = try await Self.explainPrepared(client, sql: sql, binds: binds, mode: mode)
                        let scans = Self.scans(plan)
                        #expect(!scans.contains { $0.hasPrefix("Seq Scan") }, "\(name) (\(mode)) for the \(course == new ? "new" : "large") course: \(scans)")
                        #expect(scans.contains { $0.contains("Index") }, "\(name) (\(mode)): \(scans)")
                        // Sharding by course: every table reached by the course's key (courseSeqs
                        // reads several courses' seqs by design: the periodic check of a node's courses).
                        if name != "courseSeqs" {
                            #expect(Self.unbound(plan, to: course).isEmpty, "\(name) (\(mode)) touches rows not bound to one course: \(Self.unbound(plan, to: course))")
                        }
                    }
                    if name != "courseSeqs" { #expect(Self.insertsWithoutCourse(sql).isEmpty, "\(name): \(Self.insertsWithoutCourse(sql))") }
                }
                // Loading a course (a snapshot, or a cache miss), its history and snapshots: a
                // bounded number of queries, each by index, each bound to the course.
                // (The snapshot table is empty here, one row per 1,000 commits in use: a scan of it
                // is no sign of a plan cliff, so only its binding to the course is checked.)
                let snapshots = [CourseQueries.snapshot(course, atOrBefore: 500), CourseQueries.writeSnapshot(course, seq: 1_000, state: [0])]
                for query in [CourseQueries.course(course), CourseQueries.chapters(course), CourseQueries.media(course), CourseQueries.videos(course),
                              CourseQueries.history(course, before: 500, limit: 100), CourseQueries.create(Course(id: course, title: "Again"))] + snapshots {
                    let plan = try await Self.explain(client, query)
                    let scans = Self.scans(plan)
                    if !snapshots.contains(where: { $0.sql == query.sql }) {
                        #expect(!scans.contains { $0.hasPrefix("Seq Scan") }, "\(query.sql) for the \(course == new ? "new" : "large") course: \(scans)")
                    }
                    #expect(Self.unbound(plan, to: course).isEmpty, "\(query.sql): \(Self.unbound(plan, to: course))")
                    #expect(Self.insertsWithoutCourse(query.sql).isEmpty, "\(query.sql)")
                }
            }
            // The lookup finds what is there.
            let keys = try await Self.keys(client, large)
            var temps: [ClientID: Set<TempID>] = [:]
            for (client, temp) in zip(keys.tempClients, keys.temps) { temps[ClientID(EntityID(client)), default: []].insert(TempID(UInt64(temp))!) }
            let records = try await database.store.backend.lookUp(
                zip(keys.batchClients, keys.batchSeqs).map { BatchKey(client: ClientID(EntityID($0)), batchSeq: BatchSeq($1)) },
                temps: temps, courseID: large)
            #expect(records.acks.count == keys.batchSeqs.count && records.temps.values.map(\.count).reduce(0, +) == keys.temps.count)
        }
    }

    /// Rows as a course of that size has them (the diffs and acks are placeholders: plans do not look inside).
    static func fill(_ client: PostgresClient, _ course: EntityID, chapters: Int, videosPerChapter: Int, batches: Int, temps: Int) async throws {
        try await client.query("""
            INSERT INTO chapters (id, course_id, title, position, version)
            SELECT gen_random_uuid(), \(course.uuid), 'Chapter ' || g, g - 1, 1 FROM generate_series(1, \(chapters)) AS g
            """)
        try await client.query("""
            INSERT INTO media_files (id, course_id, name, cdn_url, duration_ms, byte_size)
            SELECT gen_random_uuid(), \(course.uuid), 'Clip ' || g, 'https://cdn.example.com/' || g, 1000, 1000
            FROM generate_series(1, \(chapters * videosPerChapter)) AS g
            """)
        try await client.query("""
            INSERT INTO videos (course_id, id, chapter_id, media_file_id, title, position)
            SELECT \(course.uuid), gen_random_uuid(), c.id, m.id, m.name, m.n % \(videosPerChapter)
            FROM (SELECT id, name, row_number() OVER (ORDER BY id) - 1 AS n FROM media_files WHERE course_id = \(course.uuid)) m
            JOIN (SELECT id, position FROM chapters WHERE course_id = \(course.uuid)) c ON c.position = m.n / \(videosPerChapter)
            """)
        try await client.query("""
            INSERT INTO change_log (course_id, seq, origin_client_id, origin_batch_seq, diff)
            SELECT \(course.uuid), g, gen_random_uuid(), g, '\\x00'::bytea FROM generate_series(1, \(batches)) AS g
            """)
        try await client.query("""
            INSERT INTO client_batches (client_id, course_id, batch_seq, seq, ack)
            SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(g % 16), 12, '0'))::uuid, \(course.uuid), g, g, '\\x00'::bytea
            FROM generate_series(1, \(batches)) AS g
            """)
        try await client.query("""
            INSERT INTO client_temps (client_id, course_id, temp, entity_id)
            SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(g % 16), 12, '0'))::uuid, \(course.uuid), g, gen_random_uuid()
            FROM generate_series(1, \(temps)) AS g
            """)
        try await client.query("UPDATE courses SET seq = \(Int64(batches)) WHERE id = \(course.uuid)")
    }

    struct Keys {
        var batchClients: [UUID] = [], batchSeqs: [Int64] = [], tempClients: [UUID] = [], temps: [Int64] = []
        var chapters: [UUID] = [], videos: [UUID] = [], media: [UUID] = []
    }

    /// Stored keys of the course: 10 batch records, 30 temp IDs, and some rows.
    static func keys(_ client: PostgresClient, _ course: EntityID) async throws -> Keys {
        var keys = Keys()
        for try await (client, seq) in try await client.query(
            "SELECT client_id, batch_seq FROM client_batches WHERE course_id = \(course.uuid) ORDER BY batch_seq LIMIT 10").decode((UUID, Int64).self) {
            keys.batchClients.append(client)
            keys.batchSeqs.append(seq)
        }
        for try await (client, temp) in try await client.query(
            "SELECT client_id, temp FROM client_temps WHERE course_id = \(course.uuid) ORDER BY temp LIMIT 30").decode((UUID, Int64).self) {
            keys.tempClients.append(client)
            keys.temps.append(temp)
        }
        for try await (video, chapter, media) in try await client.query("""
            SELECT id, chapter_id, media_file_id FROM videos WHERE course_id = \(course.uuid) LIMIT 10
            """).decode((UUID, UUID, UUID).self) {
            keys.videos.append(video)
            keys.chapters.append(chapter)
            keys.media.append(media)
        }
        return keys
    }

    /// A group of 10 links into the course's chapters, with a deleted video and a pruned log.
    static func groupWrite(_ course: EntityID, _ keys: Keys) -> GroupWrite {
        let client = ClientID(.fresh())
        let chapter = EntityID(keys.chapters[0])
        let videos = (0..<10).map { Video(id: .fresh(), chapterID: chapter, mediaFileID: EntityID(keys.media[$0]), title: "Linked", position: 50 + $0) }
        let changes = NetChanges(deletedVideos: [EntityID(keys.videos[1])], deletedChapters: [],
                                 chapters: [Chapter(id: chapter, courseID: course, title: "Chapter", position: 0, version: 9)], media: [],
                                 videos: videos, tempMappings: videos.enumerated().map { TempMapping(client: client, temp: TempID(UInt64(1 + $0.offset))!, entity: $0.element.id) })
        return GroupWrite(courseID: course, expectedSeq: 100, newSeq: 101, changes: changes,
                          entries: [GroupWrite.Entry(seq: 101, origin: BatchOrigin(clientID: client, batchSeq: 1), diff: [0], ack: [0])],
                          pruneThrough: 1)
    }

    /// The plan PostgreSQL uses for `sql` as a prepared statement: the custom plan for `binds`, or
    /// the generic plan, which does not depend on the values (so NULLs stand in for them: PostgreSQL
    /// 15 cannot bind parameters inside `EXPLAIN EXECUTE`).
    static func explainPrepared(_ client: PostgresClient, sql: String, binds: PostgresBindings, mode: String) async throws -> String {
        if mode == "force_custom_plan" { return try await explain(client, PostgresQuery(unsafeSQL: sql, binds: binds)) }
        return try await client.withConnection { connection in
            let logger = TestDatabase.logger
            try await connection.query(PostgresQuery(unsafeSQL: "SET plan_cache_mode = \(mode)"), logger: logger)
            try await connection.query(PostgresQuery(unsafeSQL: "PREPARE plan_check AS \(sql)"), logger: logger)
            let arguments = Array(repeating: "NULL", count: binds.count).joined(separator: ", ")
            var plan = ""
            for try await line in try await connection.query(
                PostgresQuery(unsafeSQL: "EXPLAIN (FORMAT JSON) EXECUTE plan_check(\(arguments))"), logger: logger).decode(String.self) {
                plan += line
            }
            try await connection.query("DEALLOCATE plan_check", logger: logger)
            try await connection.query("RESET plan_cache_mode", logger: logger)
            return plan
        }
    }

    /// Every scan node of a JSON plan, as "node type on relation (index)".
    static func scans(_ plan: String) -> [String] {
        var found: [String] = []
        func visit(_ node: Any) {
            if let array = node as? [Any] { array.forEach(visit) }
            guard let object = node as? [String: Any] else { return }
            if let type = object["Node Type"] as? String, object["Relation Name"] != nil || object["Index Name"] != nil {
                found.append(type + ((object["Relation Name"] as? String).map { " on \($0)" } ?? "")
                             + ((object["Index Name"] as? String).map { " (\($0))" } ?? ""))
            }
            object.values.forEach(visit)
        }
        visit((try? JSONSerialization.jsonObject(with: Data(plan.utf8))) ?? [])
        return found
    }

    /// The tables of the schema and the column that holds each one's course.
    static let courseKeys = ["courses": "id", "chapters": "course_id", "media_files": "course_id", "videos": "course_id",
                             "change_log": "course_id", "client_batches": "course_id", "client_temps": "course_id", "course_snapshots": "course_id"]

    /// The nodes of a JSON plan that read or change rows of a course table without the course's
    /// key fixed to the course (the statement's `$1`, or its value in a custom plan) in their
    /// index condition or filter. An insert's rows are not read; ``insertsWithoutCourse(_:)``
    /// checks what it writes.
    static func unbound(_ plan: String, to course: EntityID) -> [String] {
        var found: [String] = []
        func visit(_ node: Any) {
            if let array = node as? [Any] { array.forEach(visit) }
            guard let object = node as? [String: Any] else { return }
            if let relation = object["Relation Name"] as? String, let key = courseKeys[relation], object["Operation"] as? String == nil {
                let conditions = ["Index Cond", "Recheck Cond", "Filter"].compactMap { object[$0] as? String }.joined(separator: " ")
                let bound = ["$1", "'\(course.uuid.uuidString.lowercased())'::uuid"].contains { value in
                    conditions.range(of: "(^|[^a-z_.])([a-z]+\\.)?\(key) = \(NSRegularExpression.escapedPattern(for: value))", options: .regularExpression) != nil
                }
                if !bound { found.append("\(object["Node Type"] ?? "?") on \(relation): \(conditions.isEmpty ? "no condition" : conditions)") }
            }
            object.values.forEach(visit)
        }
        visit((try? JSONSerialization.jsonObject(with: Data(plan.utf8))) ?? [])
        return found
    }

    /// The `INSERT INTO table (columns)` of `sql` whose columns do not include the table's course key.
    static func insertsWithoutCourse(_ sql: String) -> [String] {
        let pattern = try! NSRegularExpression(pattern: "INSERT INTO ([a-z_]+) \\(([^)]*)\\)")
        return pattern.matches(in: sql, range: NSRange(sql.startIndex..., in: sql)).compactMap { match in
            let table = String(sql[Range(match.range(at: 1), in: sql)!])
            let columns = sql[Range(match.range(at: 2), in: sql)!].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let key = courseKeys[table] else { return "\(table) is not a course table" }
            return columns.contains(key) ? nil : "\(table) (\(columns.joined(separator: ", ")))"
        }
    }

    static func explain(_ client: PostgresClient, _ query: PostgresQuery) async throws -> String {
        var plan = ""
        for try await line in try await client.query(PostgresQuery(unsafeSQL: "EXPLAIN (FORMAT JSON) " + query.sql, binds: query.binds)).decode(String.self) {
            plan += line
        }
        return plan
    }
}
