import Foundation
import SyncModel
import SyncWire

/// The one implementation of ``SyncStore``, over a ``StoreBackend`` (PostgreSQL, SQLite, or
/// another database implementing the primitives).
///
/// **The commit is optimistic.** Each course's state is cached with the acks and temp IDs of its
/// latest commits (``RecentCommits``). A group is resolved against the cache and written with one
/// primitive call that succeeds only if the course is still at the cached seq; on PostgreSQL that
/// is one statement, one round trip. The cache is never trusted blindly:
/// - another node (or store instance) committed meanwhile: the write reports `moved`, nothing is
///   written, the cache catches up from the change log and the group is resolved again;
/// - a batch the cache takes for new was committed before (a resend after a restart, say), or a
///   temp ID it takes for unused is stored: the database's unique keys refuse the write
///   (`duplicate`), the engine looks the group's records up and resolves again;
/// - a batch the cache would reject may only look wrong for want of what the cache does not hold
///   (an older batch's temp IDs, its own stored ack): before any rejection is answered, that
///   batch's record and temp IDs are looked up in the store.
/// A group that writes nothing (replays and rejections only) is answered only after checking the
/// course's seq, so no answer rests on a stale cache.
///
/// **The database may fail any call, also half-way.** A call that fails for want of the database
/// (``StoreError/unavailable(_:detail:)``) is tried again after a pause, a bounded number of times
/// (``StoreRetryPolicy``). A write that fails has an **unknown outcome**: the group may have committed
/// (the answer was lost) or not. The cache only ever holds what a write confirmed, so the engine
/// forgets the course and, before it answers anything of the group, reads the group's batch
/// records: a batch found there is answered with its stored ack (it committed), the others are
/// resolved again against the course as loaded from the store.
public final class StoreEngine<Backend: StoreBackend>: SyncStore {
    public let backend: Backend
    /// How many change-log entries are kept per course; older cursors get a snapshot.
    public let logRetention: Int
    /// A snapshot is kept each time a course's seq passes a multiple of this (``course(_:at:)``).
    public let snapshotInterval: Int
    public let retryPolicy: RetryPolicy
    private let cache: Locked<CourseCache>
    private let sleep: @Sendable (Duration) async throws -> Void
    private let onFailure: @Sendable (StoreError) -> Void
    private let mintIDs: @Sendable () -> any IDAllocator

    /// How often one group is resolved again (after `moved` or `duplicate`) before giving up.
    static var maxAttempts: Int { 64 }

    /// How long the engine keeps trying a call the database failed.
    public typealias RetryPolicy = StoreRetryPolicy

    /// - Parameters:
    ///   - maxCachedCourses, maxCachedBytes: the course cache's bounds (bytes estimated from row
    ///     counts; the least recently used course goes first).
    ///   - retryPolicy: how long a call the database failed is tried again.
    ///   - sleep: the pause between tries (the simulator passes its clock's).
    ///   - onFailure: told of every failed database call that is tried again (for logs and metrics).
    ///   - mintIDs: the allocator of one resolution's new rows: time-ordered IDs stamped with the
    ///     system clock by default (the simulator passes its clock and a seeded generator).
    public init(backend: Backend, logRetention: Int = 100_000, snapshotInterval: Int = 1_000, maxCachedCourses: Int = 1_000, maxCachedBytes: Int = 256 << 20,
                recentCommitsPerCourse: Int = 4_096, retryPolicy: RetryPolicy = .standard,
                sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
                onFailure: @escaping @Sendable (StoreError) -> Void = { _ in },
                mintIDs: @escaping @Sendable () -> any IDAllocator = { TimeOrderedIDAllocator(SystemRandomNumberGenerator()) }) {
        precondition(logRetention > 0, "the change log must keep at least one entry")
        self.backend = backend
        self.logRetention = logRetention
        self.snapshotInterval = max(snapshotInterval, 1)
        self.retryPolicy = retryPolicy
        self.sleep = sleep
        self.onFailure = onFailure
        self.mintIDs = mintIDs
        cache = Locked(CourseCache(maxCourses: maxCachedCourses, maxBytes: maxCachedBytes, recentPerCourse: recentCommitsPerCourse))
    }

    /// Courses whose state is cached, and their estimated bytes (for metrics and tests).
    public var cachedCourses: (count: Int, bytes: Int) { cache.withLock { ($0.count, $0.bytes) } }

    /// The course as cached, if it is (for the simulator's check that no cache is ahead of the
    /// store or differs from it).
    public func cachedState(of courseID: EntityID) -> CourseState? { cache.withLock { $0.state(of: courseID) } }

    public func createCourse(_ course: Course) async throws {
        try await backend.insertCourse(course)
    }

    public func courseSeq(_ courseID: EntityID) async throws -> CourseSeq? {
        try await retrying(.readSeq) { try await backend.courseSeq(courseID) }
    }

    public func courseSeqs(_ courseIDs: [EntityID]) async throws -> [EntityID: CourseSeq] {
        courseIDs.isEmpty ? [:] : try await retrying(.readSeq) { try await backend.courseSeqs(courseIDs) }
    }

    public func commitEncoded(_ batches: [Batch], courseID: EntityID) async throws -> CommittedGroup {
        precondition(batches.allSatisfy { $0.courseID == courseID }, "a group commit is for one course")
        guard !batches.isEmpty else { return CommittedGroup(outcomes: [], encodedDiffs: []) }
        var foundAcks: [BatchKey: Ack] = [:]
        var foundTemps: [ClientID: [TempID: EntityID]] = [:]
        var probed = Set<BatchKey>()
        // A write of this call failed: it may have committed. Until the group's records are read
        // again, nothing of the group is answered.
        var outcomeUnknown = false
        var failures = 0
        var rounds = 0

        // Reads what the store holds of `unsure`'s batch records and temp IDs.
        func probe(_ unsure: [Batch]) async throws {
            var temps: [ClientID: Set<TempID>] = [:]
            for batch in unsure { temps[batch.clientID, default: []].formUnion(batch.mentionedTemps) }
            let keys = unsure.map(BatchKey.init)
            let records = try await backend.lookUp(keys, temps: temps, courseID: courseID)
            for (key, bytes) in records.acks { foundAcks[key] = try Self.decodeAck(bytes) }
            for (client, map) in records.temps { foundTemps[client, default: [:]].merge(map) { _, stored in stored } }
            probed.formUnion(keys)
        }

        while rounds < Self.maxAttempts {
            do {
                if outcomeUnknown {
                    try await probe(batches)
                    outcomeUnknown = false
                }
                let state = try await cachedCourse(courseID)
                // What the batches need of their authors' earlier batches: found in the store during
                // this call, or else remembered from recent commits (only the keys and temp IDs the
                // batches mention; copying whole maps cost more than resolving).
                var acks = foundAcks
                var temps: [ClientID: [TempID: EntityID]] = [:]
                cache.withLock { cache in
                    for batch in batches {
                        let key = BatchKey(batch)
                        if acks[key] == nil, let ack = cache.recentAck(key, in: courseID) { acks[key] = ack }
                        for temp in batch.mentionedTemps {
                            if let id = foundTemps[batch.clientID]?[temp] ?? cache.recentTemp(temp, of: batch.clientID, in: courseID) {
                                temps[batch.clientID, default: [:]][temp] = id
                            }
                        }
                    }
                }
                var allocator = mintIDs()
                let group = GroupCommit.resolve(batches, against: state, appliedAcks: acks, knownTemps: temps, allocator: &allocator)

                let unsure = zip(batches, group.outcomes).compactMap { batch, outcome -> Batch? in
                    if case .rejected = outcome, !probed.contains(BatchKey(batch)) { return batch }
                    return nil
                }
                rounds += 1
                if !unsure.isEmpty {
                    try await probe(unsure)
                    continue
                }
                if group.commits.isEmpty {
                    guard let seq = try await backend.courseSeq(courseID) else { throw forgetting(courseID) }
                    if seq == state.seq { return CommittedGroup(outcomes: group.outcomes, encodedDiffs: []) }
                    try await catchUpCache(courseID, from: state)
                    continue
                }
                let write = makeWrite(group, from: state.seq)
                let written: WriteOutcome
                do {
                    written = try await backend.write(write)
                } catch let error as StoreError where !error.isUnavailable {
                    throw error
                } catch {
                    // Committed or not: the cache must not stand for the database until the
                    // store says which.
                    cache.withLock { $0.forget(courseID) }
                    outcomeUnknown = true
                    throw error
                }
                switch written {
                case .written:
                    cache.withLock { $0.remember(group) }
                    keepSnapshotIfDue(group.state, after: state.seq)
                    return CommittedGroup(outcomes: group.outcomes, encodedDiffs: write.entries.map(\.diff))
                case .moved:
                    try await catchUpCache(courseID, from: state)
                case .duplicate:
                    let unprobed = batches.filter { !probed.contains(BatchKey($0)) }
                    if unprobed.isEmpty { try await catchUpCache(courseID, from: state) } else { try await probe(unprobed) }
                case .unknownCourse:
                    throw forgetting(courseID)
                }
            } catch {
                failures += 1
                try await pauseOrGiveUp(error, failures: failures, operation: .commit)
            }
        }
        throw StoreError.contended(courseID)
    }

    /// After a failed call: rethrows what is not the database's failing, and a failure once the
    /// retries are spent; otherwise reports it and pauses before the next try.
    private func pauseOrGiveUp(_ error: any Error, failures: Int, operation: StoreOperation) async throws {
        if error is CancellationError { throw error }
        let failure = (error as? StoreError) ?? .unavailable(operation, detail: String(describing: error))
        guard failure.isUnavailable else { throw failure }
        guard failures <= retryPolicy.retries else { throw failure }
        onFailure(failure)
        try await sleep(retryPolicy.delay(beforeRetry: failures))
    }

    /// `body`, tried again while the database fails it (``StoreRetryPolicy``).
    private func retrying<T>(_ operation: StoreOperation, _ body: () async throws -> T) async throws -> T {
        var failures = 0
        while true {
            do {
                return try await body()
            } catch {
                failures += 1
                try await pauseOrGiveUp(error, failures: failures, operation: operation)
            }
        }
    }

    public func catchUpEncoded(courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> EncodedCatchUp {
        precondition(limit > 0)
        func snapshot() async throws -> EncodedCatchUp {
            EncodedCatchUp(catchUp: .snapshot(try await self.loadSnapshot(courseID)), encodedDiffs: [:])
        }
        return try await retrying(.catchUp) {
            if cursor == 0 { return try await snapshot() }
            guard let log = try await backend.readLog(courseID, after: cursor, limit: limit) else { throw forgetting(courseID) }
            if cursor > log.courseSeq { return try await snapshot() }
            if cursor == log.courseSeq { return EncodedCatchUp(catchUp: .diffs([]), encodedDiffs: [:]) }
            let diffs = try Self.decode(log.entries)
            // The log was pruned past the cursor.
            guard diffs.first?.seq == cursor + 1 else { return try await snapshot() }
            return EncodedCatchUp(catchUp: .diffs(diffs), encodedDiffs: Dictionary(log.entries.map { ($0.seq, $0.diff) }) { first, _ in first })
        }
    }

    public func history(_ courseID: EntityID, before: CourseSeq?, limit: Int) async throws -> [HistoryRecord] {
        let limit = min(max(limit, 1), HistoryRecord.maxPage)
        guard let records = try await retrying(.catchUp, { try await backend.readHistory(courseID, before: before, limit: limit) }) else {
            throw StoreError.unknownCourse(courseID)
        }
        return records
    }

    /// A snapshot of the course is kept each time its seq passes a multiple of ``snapshotInterval``,
    /// written after the commit, off its path: a snapshot that fails to be written only makes
    /// rebuilding a past state read more of the log.
    private func keepSnapshotIfDue(_ state: CourseState, after previous: CourseSeq) {
        let interval = CourseSeq(snapshotInterval)
        guard state.seq / interval > previous / interval else { return }
        let backend = backend, courseID = state.course.id, seq = state.seq, bytes = Self.encodeSnapshot(state)
        Task { try? await backend.writeSnapshot(courseID, seq: seq, state: bytes) }
    }

    static func encodeSnapshot(_ state: CourseState) -> [UInt8] {
        WireMessage.snapshot(SnapshotPart(whole: state)).payload()
    }

    static func decodeSnapshot(_ bytes: [UInt8]) throws -> CourseState {
        guard case .snapshot(let part) = try WireMessage(payload: bytes) else { throw StoreError.corrupt("a stored snapshot is not a Snapshot message") }
        return CourseState(parts: [part])
    }

    public func course(_ courseID: EntityID, at seq: CourseSeq) async throws -> CourseState {
        try await retrying(.catchUp) {
            guard let current = try await backend.courseSeq(courseID) else { throw forgetting(courseID) }
            if seq > current { throw StoreError.notInHistory(courseID, seq: seq, detail: "the course is at seq \(current)") }
            if seq == current { return try await loadSnapshot(courseID) }
            var state: CourseState
            if let (snapshotSeq, bytes) = try await backend.readSnapshot(courseID, atOrBefore: seq) {
                state = try Self.decodeSnapshot(bytes)
                guard state.seq == snapshotSeq, state.course.id == courseID else { throw StoreError.corrupt("snapshot at seq \(snapshotSeq) holds another state") }
            } else {
                // No snapshot before it: from the empty course (its title never changes), if the log reaches back that far.
                state = CourseState(course: Course(id: courseID, title: try await loadSnapshot(courseID).course.title, seq: 0))
            }
            while state.seq < seq {
                guard let log = try await backend.readLog(courseID, after: state.seq, limit: Int(min(seq - state.seq, 1_000))) else { throw forgetting(courseID) }
                let diffs = try Self.decode(log.entries)
                guard let first = diffs.first, first.seq == state.seq + 1 else {
                    throw StoreError.notInHistory(courseID, seq: seq, detail: "the change log no longer reaches it (it keeps the last \(logRetention) commits)")
                }
                for diff in diffs where diff.seq <= seq { state.apply(diff) }
            }
            return state
        }
    }

    public var cacheUsage: (courses: Int, bytes: Int) { cache.withLock { ($0.count, $0.bytes) } }

    public func snapshot(courseID: EntityID) async throws -> CourseState {
        try await retrying(.load) { try await loadSnapshot(courseID) }
    }

    private func loadSnapshot(_ courseID: EntityID) async throws -> CourseState {
        guard let seq = try await backend.courseSeq(courseID) else { throw forgetting(courseID) }
        if let cached = cache.withLock({ $0.state(of: courseID) }), cached.seq == seq { return cached }
        guard let state = try await backend.loadCourse(courseID) else { throw forgetting(courseID) }
        try Self.check(state)
        cache.withLock { $0.keep(state) }
        return state
    }

    /// Every row of every course, as stored (diffs and acks in their stored encoding).
    public func dump() async throws -> StoreDump {
        try StoreDump(rows: try await backend.readRows(StoreTable.all))
    }

    /// Writes a dump of another store (`coursesync copy`) in one transaction. Refuses, writing
    /// nothing, if any of its courses exists here already (one that appears meanwhile fails the
    /// transaction on its key, and nothing is written either).
    public func load(_ dump: StoreDump) async throws {
        let existing = try await backend.courseSeqs(dump.courses.map(\.id))
        if let course = dump.courses.first(where: { existing[$0.id] != nil }) { throw StoreError.courseExists(course.id) }
        try await backend.insertRows(dump.rows)
    }

    // MARK: - The cache

    /// The cached state of the course, loaded if absent.
    private func cachedCourse(_ courseID: EntityID) async throws -> CourseState {
        if let cached = cache.withLock({ $0.use(courseID) }) { return cached }
        guard let state = try await backend.loadCourse(courseID) else { throw forgetting(courseID) }
        try Self.check(state)
        cache.withLock { $0.keep(state) }
        return state
    }

    /// Brings the cached course past `state` (which a write found stale): by applying the
    /// change-log entries since (one read), or by loading the course if the log does not reach.
    private func catchUpCache(_ courseID: EntityID, from state: CourseState) async throws {
        guard let log = try await backend.readLog(courseID, after: state.seq, limit: 1_000) else { throw forgetting(courseID) }
        var next = state
        let diffs = try Self.decode(log.entries)
        if log.courseSeq >= state.seq, diffs.first.map({ $0.seq == state.seq + 1 }) ?? (log.courseSeq == state.seq),
           diffs.last.map({ $0.seq == log.courseSeq }) ?? true {
            for diff in diffs { next.apply(diff) }
            try Self.check(next)
        } else {
            guard let loaded = try await backend.loadCourse(courseID) else { throw forgetting(courseID) }
            try Self.check(loaded)
            next = loaded
        }
        cache.withLock { $0.keep(next) }
    }

    private func forgetting(_ courseID: EntityID) -> StoreError {
        cache.withLock { $0.forget(courseID) }
        return .unknownCourse(courseID)
    }

    private func makeWrite(_ group: GroupCommit, from startSeq: CourseSeq) -> GroupWrite {
        let newSeq = group.state.seq
        // Prune now and then (when the seq crosses a multiple of the interval), not every commit.
        let interval = UInt64(max(1, min(100, logRetention / 4)))
        let prune = newSeq / interval != startSeq / interval && newSeq > UInt64(logRetention)
        return GroupWrite(
            courseID: group.state.course.id, expectedSeq: startSeq, newSeq: newSeq, changes: group.netChanges,
            entries: zip(group.commits, group.history).map { commit, history in
                GroupWrite.Entry(seq: commit.seq, origin: commit.diff.origin, diff: WireMessage.diff(commit.diff).payload(),
                                 ack: WireMessage.ack(commit.ack).payload(), author: history.author, summary: history.summary)
            },
            pruneThrough: prune ? newSeq - UInt64(logRetention) : 0)
    }

    // MARK: - Stored encodings

    static func check(_ state: CourseState) throws {
        let violations = state.invariantViolations()
        guard violations.isEmpty else { throw StoreError.corrupt("course \(state.course.id): \(violations.joined(separator: "; "))") }
    }

    static func decode(_ entries: [(seq: CourseSeq, diff: [UInt8])]) throws -> [Diff] {
        try entries.map { entry in
            let diff = try decodeDiff(entry.diff)
            guard diff.seq == entry.seq else { throw StoreError.corrupt("change-log row \(entry.seq) holds seq \(diff.seq)") }
            return diff
        }
    }

    public static func decodeDiff(_ bytes: some Collection<UInt8>) throws -> Diff {
        guard case .diff(let diff) = try? WireMessage(payload: bytes) else {
            throw StoreError.corrupt("a change-log row does not hold a Diff")
        }
        return diff
    }

    public static func decodeAck(_ bytes: some Collection<UInt8>) throws -> Ack {
        guard case .ack(let ack) = try? WireMessage(payload: bytes) else {
            throw StoreError.corrupt("a batch record does not hold an Ack")
        }
        return ack
    }
}

/// A value behind a lock (Foundation's: this target has no NIO).
final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()

    init(_ value: Value) { self.value = value }

    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
