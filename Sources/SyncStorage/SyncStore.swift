import SyncModel

/// What a store did with one batch of a group commit.
public enum BatchOutcome: Hashable, Sendable {
    /// The batch was resolved and committed: its diff goes to every subscriber, its ack to its author.
    case committed(Commit)
    /// The batch was committed before (same client, course and batch seq): the stored ack, unchanged.
    /// Nothing was applied and no diff is sent.
    case replayed(Ack)
    /// The resolver refused the batch; nothing of it was written.
    case rejected(Rejection)
}

/// Where a subscriber's catch-up comes from.
public enum CatchUp: Hashable, Sendable {
    /// The diffs after the cursor, in seq order, with no gap (possibly none: the cursor is current).
    case diffs([Diff])
    /// The log no longer reaches back to the cursor (or the cursor is 0 or ahead of the course):
    /// the whole course instead.
    case snapshot(CourseState)
}

/// Why a store call failed, in terms the server can report.
public enum StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    case unknownCourse(EntityID)
    case courseExists(EntityID)
    /// The database has not been migrated (or is behind this binary's migrations).
    case notMigrated(String)
    /// The stored data contradicts itself (a corrupt change-log row, say). Never caused by a client.
    case corrupt(String)
    /// Other writers kept committing to the course while a group was being resolved, every time:
    /// nothing of the group was written; try again.
    case contended(EntityID)
    /// The database did not answer `operation` (the connection broke, the server refused, was
    /// restarting or in recovery). `detail` is what an operator needs: the database's error code
    /// (SQLSTATE) and message where it sent one, never a query's parameters. From a write, the
    /// outcome is unknown: the group may have committed. ``StoreEngine`` retries such calls for a
    /// while (``StoreEngine/RetryPolicy``) and resolves an unknown outcome from the stored batch
    /// records before it answers; it throws this only once it gives up.
    case unavailable(StoreOperation, detail: String)
    /// The course as it was at `seq` cannot be rebuilt: the seq is past the course's, or older than
    /// its change log reaches.
    case notInHistory(EntityID, seq: CourseSeq, detail: String)

    public var description: String {
        switch self {
        case .notInHistory(let id, let seq, let detail): "course \(id) at seq \(seq) cannot be rebuilt: \(detail)"
        case .unknownCourse(let id): "course \(id) does not exist"
        case .courseExists(let id): "course \(id) already exists"
        case .notMigrated(let detail): "the database schema is not up to date: \(detail); run `coursesync migrate`"
        case .corrupt(let detail): "stored data is inconsistent: \(detail)"
        case .contended(let id): "course \(id) kept changing under this commit; nothing was written"
        case .unavailable(let operation, let detail): "the database did not answer (\(operation)): \(detail)"
        }
    }

    /// The operation the database did not answer, for ``unavailable(_:detail:)``.
    public var operation: StoreOperation? {
        if case .unavailable(let operation, _) = self { return operation }
        return nil
    }

    /// Whether the error says the database could not be reached or failed the call, rather than
    /// something about the data: worth retrying.
    public var isUnavailable: Bool {
        if case .unavailable = self { return true }
        return false
    }
}

/// What a store call was doing, for logs and metrics.
public enum StoreOperation: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Writing a group (``StoreBackend/write(_:)``).
    case commit
    /// Reading the change log (a subscriber's catch-up, or the course cache catching up).
    case catchUp = "catch-up"
    /// Reading a whole course.
    case load
    /// Reading stored batch records and temp IDs.
    case lookUp = "look-up"
    /// Reading courses' seqs.
    case readSeq = "read-seq"
    /// Creating a course.
    case create
    /// Listening for other nodes' commits.
    case listen
    /// Copying (dump or load of a whole store).
    case copy
    /// Finding which of a replicated database's hosts to use (its primary).
    case locate

    public var description: String { rawValue }
}

/// A group commit's outcomes, with the diffs of its commits as encoded for the change log, so
/// that the server broadcasts those bytes rather than encoding each diff again.
public struct CommittedGroup: Sendable {
    /// One per batch, in order.
    public var outcomes: [BatchOutcome]
    /// Each committed diff's `Envelope` (a frame payload), in seq order (empty if none committed).
    public var encodedDiffs: [[UInt8]]

    public init(outcomes: [BatchOutcome], encodedDiffs: [[UInt8]]) {
        self.outcomes = outcomes
        self.encodedDiffs = encodedDiffs
    }
}

/// The durable state of every course: what the server commits batches to and catches
/// subscribers up from. ``StoreEngine`` implements it over a ``StoreBackend``: PostgreSQL
/// (production, several nodes) or SQLite (embedded, one node).
///
/// A store serializes commits per course itself (a write succeeds only at the seq it was
/// resolved against), so several server processes may share one store.
public protocol SyncStore: Sendable {
    /// Creates an empty course at seq 0.
    func createCourse(_ course: Course) async throws

    /// Resolves and commits `batches`, all for the course `courseID`, in order, as **one**
    /// transaction (a group commit). Each batch is still all or nothing: a rejected batch writes
    /// nothing, and the later batches of the group see the state without it. A batch already
    /// committed earlier (same client, course and batch seq) is not applied again; its stored ack is
    /// returned. One outcome per batch, in order.
    ///
    /// Throws ``StoreError/unknownCourse(_:)`` if the course does not exist; any other error means
    /// nothing of the group was committed.
    func commit(_ batches: [Batch], courseID: EntityID) async throws -> [BatchOutcome]

    /// ``commit(_:courseID:)``, with the committed diffs as encoded for the change log.
    func commitEncoded(_ batches: [Batch], courseID: EntityID) async throws -> CommittedGroup

    /// The commits of `courseID` after `cursor`, at most `limit` of them, or a snapshot if the log
    /// does not reach back that far; with each diff as stored (its `Envelope`), so that the
    /// server sends those bytes rather than encoding the diff again.
    func catchUpEncoded(courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> EncodedCatchUp

    /// The whole course at its current seq.
    func snapshot(courseID: EntityID) async throws -> CourseState

    /// The course's current seq (its last commit), or `nil` if there is no such course. Nodes
    /// read it to catch up on commits no notification told them of (``CommitWatch``).
    func courseSeq(_ courseID: EntityID) async throws -> CourseSeq?

    /// The seqs of those `courseIDs` that exist, read together (one query where the database
    /// allows): a node's periodic check of every course it serves.
    func courseSeqs(_ courseIDs: [EntityID]) async throws -> [EntityID: CourseSeq]

    /// Who committed what, newest first: at most `limit` (1 to ``HistoryRecord/maxPage``)
    /// commits before `before` (the newest if `nil`), as far back as the change log reaches.
    /// Throws ``StoreError/unknownCourse(_:)`` if there is no such course.
    func history(_ courseID: EntityID, before: CourseSeq?, limit: Int) async throws -> [HistoryRecord]

    /// The course as it was right after commit `seq` (0: before any), rebuilt from the nearest
    /// snapshot at or before it and the change log. Throws ``StoreError/notInHistory(_:seq:detail:)``
    /// for a seq past the course's or older than the log reaches, ``StoreError/unknownCourse(_:)``
    /// if there is no such course.
    func course(_ courseID: EntityID, at seq: CourseSeq) async throws -> CourseState

    /// The courses the store keeps in memory and about how many bytes they hold (bounded by its
    /// cache limits), for the node's metrics.
    var cacheUsage: (courses: Int, bytes: Int) { get }
}

/// A catch-up with the stored encoding of each of its diffs.
public struct EncodedCatchUp: Sendable {
    public var catchUp: CatchUp
    /// The `Envelope` of each diff in ``catchUp``, by seq.
    public var encodedDiffs: [CourseSeq: [UInt8]]

    public init(catchUp: CatchUp, encodedDiffs: [CourseSeq: [UInt8]]) {
        self.catchUp = catchUp
        self.encodedDiffs = encodedDiffs
    }
}

extension SyncStore {
    /// The commits of `courseID` after `cursor`, at most `limit` of them, or a snapshot if the log
    /// does not reach back that far.
    public func catchUp(courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> CatchUp {
        try await catchUpEncoded(courseID: courseID, after: cursor, limit: limit).catchUp
    }

    public func commit(_ batches: [Batch], courseID: EntityID) async throws -> [BatchOutcome] {
        try await commitEncoded(batches, courseID: courseID).outcomes
    }
}
