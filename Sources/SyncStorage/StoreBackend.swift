import SyncModel

/// The handful of primitives a database implements to become a ``SyncStore``: read a course,
/// read its change log, look up stored batch records and temp IDs, and write a resolved group if
/// the course has not moved on. Everything else (the course cache, resolution, the exactly-once
/// and temp-ID decisions, catch-up versus snapshot, pruning, encoding, what a copied row means) is ``StoreEngine``'s, and
/// the same for every backend. A new backend implements this protocol and joins the conformance
/// suite's list.
///
/// Stored diffs and acks are protobuf `Envelope`s (a frame's payload): backends store and return
/// the bytes and never look inside.
public protocol StoreBackend: Sendable {
    /// Creates the course row at `course.seq`; throws ``StoreError/courseExists(_:)`` if it exists.
    func insertCourse(_ course: Course) async throws

    /// The course's seq, or `nil` if there is no such course.
    func courseSeq(_ courseID: EntityID) async throws -> CourseSeq?

    /// The seqs of those `courseIDs` that exist.
    func courseSeqs(_ courseIDs: [EntityID]) async throws -> [EntityID: CourseSeq]

    /// The whole course (its row, chapters, media files and videos) read at one point in time, or
    /// `nil` if there is no such course. A bounded number of queries, whatever the course's size.
    func loadCourse(_ courseID: EntityID) async throws -> CourseState?

    /// The course's seq and at most `limit` change-log entries after `cursor`, in seq order, read
    /// together (one query where the database allows), or `nil` if there is no such course.
    func readLog(_ courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> StoredLog?

    /// At most `limit` commits of the course's history, newest first, before `before` (all if
    /// `nil`), from the change log (pruned entries are gone); `nil` if there is no such course.
    func readHistory(_ courseID: EntityID, before: CourseSeq?, limit: Int) async throws -> [HistoryRecord]?

    /// The stored acks of those `batches` committed before, and the entities each client's `temps`
    /// were mapped to, where stored. Each key is an index probe whose plan cannot depend on the
    /// course's size (``StoreEngine`` calls this only for what its cache cannot answer).
    func lookUp(_ batches: [BatchKey], temps: [ClientID: Set<TempID>], courseID: EntityID) async throws -> StoredRecords

    /// Writes a resolved group as one transaction if, and only if, the course is still at
    /// `group.expectedSeq`; then the course is at `group.newSeq` and other nodes are told
    /// (where the backend has notifications). Never writes part of a group.
    func write(_ group: GroupWrite) async throws -> WriteOutcome

    /// Keeps `state` (an encoded course) as the course's snapshot at `seq` (a snapshot kept there
    /// already stays), and drops snapshots older than the change log reaches, but the newest of
    /// those. Snapshots only shorten rebuilding a past state: losing one loses nothing.
    func writeSnapshot(_ courseID: EntityID, seq: CourseSeq, state: [UInt8]) async throws

    /// The newest snapshot of the course at or before `seq`, if one is kept.
    func readSnapshot(_ courseID: EntityID, atOrBefore seq: CourseSeq) async throws -> (seq: CourseSeq, state: [UInt8])?

    /// Every row of each of `tables`, read at one point in time (one read-only transaction), each
    /// row's values in its table's column order, of the kinds the columns name; for
    /// ``StoreEngine/dump()``, which knows what the rows mean.
    func readRows(_ tables: [StoreTable]) async throws -> [[[StoreValue]]]

    /// Inserts the rows, table by table in the order given, in one transaction: all of them or,
    /// if any insert fails (a row that exists), none. For ``StoreEngine/load(_:)``.
    func insertRows(_ tables: [(table: StoreTable, rows: [[StoreValue]])]) async throws
}

extension StoreBackend {
    /// A backend without snapshots (the simulator's): a past state is rebuilt from the whole log.
    public func writeSnapshot(_ courseID: EntityID, seq: CourseSeq, state: [UInt8]) async throws {}

    public func readSnapshot(_ courseID: EntityID, atOrBefore seq: CourseSeq) async throws -> (seq: CourseSeq, state: [UInt8])? { nil }
}

/// A course's seq and the change-log entries read with it.
public struct StoredLog: Sendable {
    public var courseSeq: CourseSeq
    /// (seq, the stored diff) in seq order.
    public var entries: [(seq: CourseSeq, diff: [UInt8])]

    public init(courseSeq: CourseSeq, entries: [(seq: CourseSeq, diff: [UInt8])]) {
        self.courseSeq = courseSeq
        self.entries = entries
    }
}

/// One commit of a course's history: when, by whom (the token's subject, and the client), and
/// what it did, in words.
public struct HistoryRecord: Hashable, Sendable {
    public var seq: CourseSeq
    /// When it committed, as the database's clock said, in seconds since 1970 (UTC).
    public var committedAt: Double
    public var author: String
    public var origin: BatchOrigin
    public var summary: String

    /// Most commits one history read returns.
    public static let maxPage = 1_000

    public init(seq: CourseSeq, committedAt: Double, author: String, origin: BatchOrigin, summary: String) {
        self.seq = seq
        self.committedAt = committedAt
        self.author = author
        self.origin = origin
        self.summary = summary
    }
}

/// What ``StoreBackend/lookUp(_:temps:courseID:)`` found.
public struct StoredRecords: Sendable {
    /// The stored ack (encoded) of each batch found.
    public var acks: [BatchKey: [UInt8]]
    public var temps: [ClientID: [TempID: EntityID]]

    public init(acks: [BatchKey: [UInt8]] = [:], temps: [ClientID: [TempID: EntityID]] = [:]) {
        self.acks = acks
        self.temps = temps
    }
}

/// One resolved group, ready to write: what changed and the records that go with it.
public struct GroupWrite: Sendable {
    public struct Entry: Sendable {
        public var seq: CourseSeq
        public var origin: BatchOrigin
        /// The diff's `Envelope`, as catch-up sends it.
        public var diff: [UInt8]
        /// The ack's `Envelope`, as a resend is answered.
        public var ack: [UInt8]
        /// Who made the commit (the token's subject) and what it did, in words: the history's line.
        public var author: String
        public var summary: String

        public init(seq: CourseSeq, origin: BatchOrigin, diff: [UInt8], ack: [UInt8], author: String = "", summary: String = "") {
            self.seq = seq
            self.origin = origin
            self.diff = diff
            self.ack = ack
            self.author = author
            self.summary = summary
        }
    }

    public var courseID: EntityID
    /// The seq the group was resolved against: the write happens only if the course is still there.
    public var expectedSeq: CourseSeq
    public var newSeq: CourseSeq
    public var changes: NetChanges
    /// One per committed batch, in seq order: its change-log entry and its batch record.
    public var entries: [Entry]
    /// Change-log entries with a seq up to this one are deleted (0: none).
    public var pruneThrough: CourseSeq

    public init(courseID: EntityID, expectedSeq: CourseSeq, newSeq: CourseSeq, changes: NetChanges, entries: [Entry], pruneThrough: CourseSeq) {
        self.courseID = courseID
        self.expectedSeq = expectedSeq
        self.newSeq = newSeq
        self.changes = changes
        self.entries = entries
        self.pruneThrough = pruneThrough
    }
}

/// What came of ``StoreBackend/write(_:)``.
public enum WriteOutcome: Hashable, Sendable {
    case written
    /// The course is no longer at the expected seq (another node or store instance committed):
    /// nothing was written.
    case moved
    /// A batch record or temp ID of the group is stored already (a batch committed before the
    /// engine's cache knew of it): nothing was written.
    case duplicate
    case unknownCourse
}

/// A store whose commits other nodes can hear of (PostgreSQL's LISTEN/NOTIFY).
public protocol CommitNotifications: Sendable {
    /// Calls `handler` for every commit announced, by any node, until cancelled. A lost
    /// connection is re-established after `retryDelay`; `onListening` is called each time the
    /// listener is in place, first included (what was committed while it was away was not
    /// announced to it, so that is when to read the store).
    func listenForCommits(retryDelay: Duration, onListening: @escaping @Sendable () async -> Void,
                          _ handler: @escaping @Sendable (EntityID, CourseSeq) async -> Void) async

    /// Sends `text` to every node's ``listenForPresence(retryDelay:_:)`` (this one's included).
    /// Best-effort: presence relays are repeated, so a lost one is repaired by the next.
    func publishPresence(_ text: String) async throws

    /// Calls `handler` with every presence relay any node publishes, until cancelled; a lost
    /// connection is re-established after `retryDelay`.
    func listenForPresence(retryDelay: Duration, _ handler: @escaping @Sendable (String) async -> Void) async
}
