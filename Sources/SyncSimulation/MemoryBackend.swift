import Foundation
import SyncModel
import SyncStorage

/// A third ``StoreBackend``, in memory: the simulator's database (every node's ``StoreEngine``
/// writes through it, and ``SimDatabase`` fails its calls), and in the tests what adding a backend
/// takes (the primitives, and a line in the conformance suite's list) and a way to count the
/// primitive calls the engine makes. Several engines may share one (as nodes share a database).
/// It keeps the same unique keys as the SQL schema (batch records, temp IDs), so a write the engine
/// resolved from a stale cache is refused as the databases refuse it.
public final class MemoryBackend: StoreBackend, @unchecked Sendable {
    private struct Course {
        var course: SyncModel.Course
        var chapters: [EntityID: Chapter] = [:]
        var media: [EntityID: MediaFile] = [:]
        var videos: [EntityID: Video] = [:]
        var log: [(seq: CourseSeq, origin: BatchOrigin, diff: [UInt8], author: String, summary: String, at: Double)] = []
        var batches: [BatchKey: (seq: CourseSeq, ack: [UInt8])] = [:]
        var temps: [ClientID: [TempID: EntityID]] = [:]
    }

    private let lock = NSLock()
    private var courses: [EntityID: Course] = [:]
    private var counts: [String: Int] = [:]

    /// How often each primitive was called.
    public var calls: [String: Int] { lock.withLock { counts } }

    public init() {}

    private func locked<T>(_ call: String, _ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        counts[call, default: 0] += 1
        return try body()
    }

    public func insertCourse(_ course: SyncModel.Course) async throws {
        try locked("insertCourse") {
            guard courses[course.id] == nil else { throw StoreError.courseExists(course.id) }
            courses[course.id] = Course(course: course)
        }
    }

    public func courseSeq(_ courseID: EntityID) async throws -> CourseSeq? {
        locked("courseSeq") { courses[courseID]?.course.seq }
    }

    public func courseSeqs(_ courseIDs: [EntityID]) async throws -> [EntityID: CourseSeq] {
        locked("courseSeqs") { courseIDs.reduce(into: [:]) { seqs, id in seqs[id] = courses[id]?.course.seq } }
    }

    public func loadCourse(_ courseID: EntityID) async throws -> CourseState? {
        locked("loadCourse") {
            courses[courseID].map { CourseState(course: $0.course, chapters: Array($0.chapters.values), media: Array($0.media.values), videos: Array($0.videos.values)) }
        }
    }

    public func readLog(_ courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> StoredLog? {
        locked("readLog") {
            courses[courseID].map { course in
                StoredLog(courseSeq: course.course.seq, entries: course.log.filter { $0.seq > cursor }.prefix(limit).map { ($0.seq, $0.diff) })
            }
        }
    }

    public func readHistory(_ courseID: EntityID, before: CourseSeq?, limit: Int) async throws -> [HistoryRecord]? {
        locked("readHistory") {
            courses[courseID].map { course in
                course.log.reversed().filter { entry in before.map { entry.seq < $0 } ?? true }.prefix(limit).map {
                    HistoryRecord(seq: $0.seq, committedAt: $0.at, author: $0.author, origin: $0.origin, summary: $0.summary)
                }
            }
        }
    }

    /// The wall clock's time of a write (the history's "when"; the simulator never reads it).
    static func now() -> Double { Date().timeIntervalSince1970 }

    public func lookUp(_ batches: [BatchKey], temps: [ClientID: Set<TempID>], courseID: EntityID) async throws -> StoredRecords {
        locked("lookUp") {
            var records = StoredRecords()
            guard let course = courses[courseID] else { return records }
            for key in batches { if let record = course.batches[key] { records.acks[key] = record.ack } }
            for (client, set) in temps {
                for temp in set { if let id = course.temps[client]?[temp] { records.temps[client, default: [:]][temp] = id } }
            }
            return records
        }
    }

    public func write(_ group: GroupWrite) async throws -> WriteOutcome {
        locked("write") {
            guard var course = courses[group.courseID] else { return .unknownCourse }
            guard course.course.seq == group.expectedSeq else { return .moved }
            // The unique keys: nothing is written if a batch record or temp ID exists.
            for entry in group.entries where course.batches[BatchKey(client: entry.origin.clientID, batchSeq: entry.origin.batchSeq)] != nil {
                return .duplicate
            }
            for mapping in group.changes.tempMappings where course.temps[mapping.client]?[mapping.temp] != nil { return .duplicate }
            let changes = group.changes
            for id in changes.deletedVideos { course.videos[id] = nil }
            for id in changes.deletedChapters {
                course.chapters[id] = nil
                course.videos = course.videos.filter { $0.value.chapterID != id }
            }
            for chapter in changes.chapters { course.chapters[chapter.id] = chapter }
            for file in changes.media { course.media[file.id] = file }
            for video in changes.videos { course.videos[video.id] = video }
            for entry in group.entries {
                course.log.append((entry.seq, entry.origin, entry.diff, entry.author, entry.summary, Self.now()))
                course.batches[BatchKey(client: entry.origin.clientID, batchSeq: entry.origin.batchSeq)] = (entry.seq, entry.ack)
            }
            for mapping in changes.tempMappings { course.temps[mapping.client, default: [:]][mapping.temp] = mapping.entity }
            course.log.removeAll { $0.seq <= group.pruneThrough }
            course.course.seq = group.newSeq
            courses[group.courseID] = course
            return .written
        }
    }

    public func readRows(_ tables: [StoreTable]) async throws -> [[[StoreValue]]] {
        let rows = Dictionary(uniqueKeysWithValues: dump().rows.map { ($0.table, $0.rows) })
        return tables.map { rows[$0] ?? [] }
    }

    public func insertRows(_ tables: [(table: StoreTable, rows: [[StoreValue]])]) async throws {
        let byTable = Dictionary(uniqueKeysWithValues: tables.map { ($0.table, $0.rows) })
        try load(try StoreDump(rows: StoreTable.all.map { byTable[$0] ?? [] }))
    }

    /// The typed form of every row (the engine's tables are made from it).
    private func dump() -> StoreDump {
        locked("dump") {
            var dump = StoreDump()
            for (id, course) in courses {
                dump.courses.append(course.course)
                dump.chapters += course.chapters.values
                dump.media += course.media.values
                dump.videos += course.videos.values
                dump.log += course.log.map { .init(courseID: id, seq: $0.seq, origin: $0.origin, diff: $0.diff, author: $0.author, summary: $0.summary) }
                dump.batches += course.batches.map { .init(client: $0.key.client, courseID: id, batchSeq: $0.key.batchSeq, seq: $0.value.seq, ack: $0.value.ack) }
                for (client, map) in course.temps {
                    dump.temps += map.map { .init(client: client, courseID: id, temp: $0.key, entity: $0.value) }
                }
            }
            return dump
        }
    }

    private func load(_ dump: StoreDump) throws {
        try locked("load") {
            for course in dump.courses where courses[course.id] != nil { throw StoreError.courseExists(course.id) }
            var loaded: [EntityID: Course] = [:]
            for course in dump.courses { loaded[course.id] = Course(course: course) }
            for chapter in dump.chapters { loaded[chapter.courseID]?.chapters[chapter.id] = chapter }
            for file in dump.media { loaded[file.courseID]?.media[file.id] = file }
            let chapterCourse = Dictionary(uniqueKeysWithValues: dump.chapters.map { ($0.id, $0.courseID) })
            for video in dump.videos { if let course = chapterCourse[video.chapterID] { loaded[course]?.videos[video.id] = video } }
            for entry in dump.log { loaded[entry.courseID]?.log.append((entry.seq, entry.origin, entry.diff, entry.author, entry.summary, Self.now())) }
            for record in dump.batches { loaded[record.courseID]?.batches[BatchKey(client: record.client, batchSeq: record.batchSeq)] = (record.seq, record.ack) }
            for record in dump.temps { loaded[record.courseID]?.temps[record.client, default: [:]][record.temp] = record.entity }
            courses.merge(loaded) { _, new in new }
        }
    }
}
