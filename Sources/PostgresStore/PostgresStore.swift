import Foundation
import Logging
import PostgresNIO
import SyncModel
import SyncStorage
import SyncWire

/// The production ``SyncStore``: the store engine over PostgreSQL, through one `PostgresClient`
/// pool (which must be running, e.g. in the same `ServiceGroup`). Several server processes may
/// share the database: a group is written only at the seq it was resolved against.
public typealias PostgresStore = StoreEngine<PostgresBackend>

extension StoreEngine where Backend == PostgresBackend {
    /// - Parameters:
    ///   - retryPolicy: how long a call PostgreSQL failed is tried again (``StoreRetryPolicy``).
    ///   - onFailure: told of each failed call that is tried again; by default it is logged (warning).
    public convenience init(client: PostgresClient, logger: Logger, logRetention: Int = 100_000, snapshotInterval: Int = 1_000,
                            maxCachedBytes: Int = 256 << 20, retryPolicy: StoreRetryPolicy = .standard, onFailure: (@Sendable (StoreError) -> Void)? = nil) {
        self.init(primary: PostgresPrimary(client: client, logger: logger), logger: logger, logRetention: logRetention,
                  snapshotInterval: snapshotInterval, maxCachedBytes: maxCachedBytes, retryPolicy: retryPolicy, onFailure: onFailure)
    }

    /// A store on a database that may have several hosts (``PostgresPrimary``), writing to its primary.
    public convenience init(primary: PostgresPrimary, logger: Logger, logRetention: Int = 100_000, snapshotInterval: Int = 1_000,
                            maxCachedBytes: Int = 256 << 20, retryPolicy: StoreRetryPolicy = .standard, onFailure: (@Sendable (StoreError) -> Void)? = nil) {
        self.init(backend: PostgresBackend(primary: primary, logger: logger), logRetention: logRetention, snapshotInterval: snapshotInterval,
                  maxCachedBytes: maxCachedBytes,
                  retryPolicy: retryPolicy, onFailure: onFailure ?? { error in
                      logger.warning("database call failed; trying again", metadata: ["error": "\(error)"])
                  })
    }

    public var client: PostgresClient { backend.client }

    /// Fails with ``StoreError/notMigrated(_:)`` unless every migration this binary knows is applied.
    public func checkSchema() async throws {
        let missing = try await Migrator().missing(backend.client, logger: backend.logger)
        guard missing.isEmpty else {
            throw StoreError.notMigrated("missing \(missing.joined(separator: ", "))")
        }
    }

    /// The NOTIFY channel on which every commit announces `<course id> <seq>`.
    public static var notificationChannel: String { PostgresBackend.notificationChannel }
}

extension StoreEngine: CommitNotifications where Backend: CommitNotifications {
    public func listenForCommits(retryDelay: Duration = .seconds(1), onListening: @escaping @Sendable () async -> Void = {},
                                 _ handler: @escaping @Sendable (EntityID, CourseSeq) async -> Void) async {
        await backend.listenForCommits(retryDelay: retryDelay, onListening: onListening, handler)
    }

    public func publishPresence(_ text: String) async throws {
        try await backend.publishPresence(text)
    }

    public func listenForPresence(retryDelay: Duration = .seconds(1), _ handler: @escaping @Sendable (String) async -> Void) async {
        await backend.listenForPresence(retryDelay: retryDelay, handler)
    }
}

/// The PostgreSQL primitives of the store engine (schema: `migrations/`).
///
/// The common case of a group commit is **one statement, one round trip** (``WriteGroup``): it
/// bumps the course's seq only where it is still the expected one, and every other part of the
/// statement (row deletes and upserts, change log, batch records, temp-ID map, pruning, NOTIFY)
/// joins that update, so a stale cache writes nothing. The primary keys of `client_batches` and
/// `client_temps` refuse a batch or temp ID stored before. Every statement is prepared, and every
/// lookup is an index probe per key, so no plan depends on a course's size or on statistics.
public struct PostgresBackend: StoreBackend, CommitNotifications {
    public let primary: PostgresPrimary
    let logger: Logger
    private let connectionGuard: ConnectionGuard

    /// - Parameter callTimeout: the longest one primitive is waited for (``ConnectionGuard``).
    public init(primary: PostgresPrimary, logger: Logger, callTimeout: Duration = .seconds(15)) {
        self.primary = primary
        self.logger = logger
        connectionGuard = ConnectionGuard(timeout: callTimeout)
    }

    public init(client: PostgresClient, logger: Logger, callTimeout: Duration = .seconds(15)) {
        self.init(primary: PostgresPrimary(client: client, logger: logger), logger: logger, callTimeout: callTimeout)
    }

    /// The pool of the host in use.
    public var client: PostgresClient { primary.client }

    /// The NOTIFY channel on which every commit announces `<course id> <seq>`.
    public static let notificationChannel = "coursesync_commits"

    public func insertCourse(_ course: Course) async throws {
        let logger = logger
        let inserted = try await onConnection(.create) { connection in
            try await connection.query(CourseQueries.create(course), logger: logger).collect().count == 1
        }
        guard inserted else { throw StoreError.courseExists(course.id) }
    }

    public func courseSeq(_ courseID: EntityID) async throws -> CourseSeq? {
        let logger = logger
        return try await onConnection(.readSeq) { connection in
            for try await seq in try await connection.execute(CourseSeqStatement(course: courseID.uuid), logger: logger) {
                return CourseSeq(seq)
            }
            return nil
        }
    }

    public func courseSeqs(_ courseIDs: [EntityID]) async throws -> [EntityID: CourseSeq] {
        let logger = logger
        return try await onConnection(.readSeq) { connection in
            var seqs: [EntityID: CourseSeq] = [:]
            for try await (id, seq) in try await connection.execute(CourseSeqsStatement(courses: courseIDs.map(\.uuid)), logger: logger) {
                seqs[EntityID(id)] = CourseSeq(seq)
            }
            return seqs
        }
    }

    public func readLog(_ courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> StoredLog? {
        let logger = logger
        return try await onConnection(.catchUp) { connection in
            var log: StoredLog?
            let statement = ReadLogStatement(course: courseID.uuid, cursor: Int64(cursor), limit: Int64(limit))
            for try await (courseSeq, seq, diff) in try await connection.execute(statement, logger: logger) {
                if log == nil { log = StoredLog(courseSeq: CourseSeq(courseSeq), entries: []) }
                if let seq, let diff { log!.entries.append((CourseSeq(seq), Array(diff.readableBytesView))) }
            }
            return log
        }
    }

    public func lookUp(_ batches: [BatchKey], temps: [ClientID: Set<TempID>], courseID: EntityID) async throws -> StoredRecords {
        let logger = logger
        return try await onConnection(.lookUp) { connection in
            try await Self.lookUpRecords(batches, temps: temps, courseID: courseID, on: connection, logger: logger)
        }
    }

    private static func lookUpRecords(_ batches: [BatchKey], temps: [ClientID: Set<TempID>], courseID: EntityID,
                                      on connection: PostgresConnection, logger: Logger) async throws -> StoredRecords {
        var statement = LookUpStatement(course: courseID.uuid, batchClients: batches.map(\.client.id.uuid),
                                        batchSeqs: batches.map { Int64(bitPattern: $0.batchSeq) }, tempClients: [], temps: [])
        for (client, set) in temps {
            for temp in set {
                statement.tempClients.append(client.id.uuid)
                statement.temps.append(Int64(bitPattern: temp.rawValue))
            }
        }
        var records = StoredRecords()
        for try await (kind, client, key, ack, entity) in try await connection.execute(statement, logger: logger) {
            let clientID = ClientID(EntityID(client))
            if kind == 0, let ack {
                records.acks[BatchKey(client: clientID, batchSeq: BatchSeq(bitPattern: key))] = Array(ack.readableBytesView)
            } else if kind == 1, let entity, let temp = TempID(UInt64(bitPattern: key)) {
                records.temps[clientID, default: [:]][temp] = EntityID(entity)
            } else {
                throw StoreError.corrupt("an unreadable batch record or temp ID of client \(client)")
            }
        }
        return records
    }

    /// Writes the group, and reports `.written` only once PostgreSQL has **committed** it.
    ///
    /// postgres-nio ends a statement's rows at its CommandComplete, which the server sends before
    /// it commits the statement's implicit transaction (at the Sync that follows, answered by
    /// ReadyForQuery). A backend terminated in between, or a deferred constraint failing at commit,
    /// rolls back rows that have already arrived; postgres-nio then only closes the connection. So a
    /// written group is followed by a fence on the same connection: a statement that starts only
    /// after that ReadyForQuery and fails if the commit did. Any failure is thrown as
    /// ``StoreError/unavailable(_:detail:)``: the outcome is unknown, and the engine resolves it.
    public func write(_ group: GroupWrite) async throws -> WriteOutcome {
        let logger = logger
        // nil: a batch record or temp ID is stored already (their primary keys refused the write).
        let written: Bool? = try await onConnection(.commit) { connection in
            do {
                var written = false
                for try await _ in try await connection.execute(WriteGroup(group), logger: logger) { written = true }
                if written {
                    for try await _ in try await connection.execute(CommitFence(), logger: logger) {}
                }
                return written
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505"
                && ["client_batches", "client_temps"].contains(error.serverInfo?[.tableName]) {
                return nil
            }
        }
        guard let written else { return .duplicate }
        if written { return .written }
        // Nothing written: the course moved on, or is gone.
        return try await courseSeq(group.courseID) == nil ? .unknownCourse : .moved
    }

    public func loadCourse(_ courseID: EntityID) async throws -> CourseState? {
        try await onConnection(.load) { connection in
            // REPEATABLE READ: the four reads see one state.
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: self.logger)
            do {
                let state = try await self.loadCourse(courseID, on: connection)
                try await connection.query("COMMIT", logger: self.logger)
                return state
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: self.logger)
                throw error
            }
        }
    }

    private func loadCourse(_ courseID: EntityID, on connection: PostgresConnection) async throws -> CourseState? {
        var course: Course?
        for try await (title, seq) in try await connection.query(CourseQueries.course(courseID), logger: logger).decode((String, Int64).self) {
            course = Course(id: courseID, title: title, seq: CourseSeq(seq))
        }
        guard let course else { return nil }
        var chapters: [Chapter] = []
        for try await (id, title, position, version) in try await connection.query(CourseQueries.chapters(courseID), logger: logger).decode((UUID, String, Int32, Int64).self) {
            chapters.append(Chapter(id: EntityID(id), courseID: courseID, title: title, position: Int(position), version: UInt64(version)))
        }
        var media: [MediaFile] = []
        for try await (id, name, url, duration, size) in try await connection.query(CourseQueries.media(courseID), logger: logger).decode((UUID, String, String, Int64, Int64).self) {
            media.append(MediaFile(id: EntityID(id), courseID: courseID, name: name, cdnURL: url,
                                   durationMs: UInt64(duration), byteSize: UInt64(size)))
        }
        var videos: [Video] = []
        for try await (id, chapter, mediaFile, title, position) in try await connection.query(CourseQueries.videos(courseID), logger: logger)
            .decode((UUID, UUID, UUID, String, Int32).self) {
            videos.append(Video(id: EntityID(id), chapterID: EntityID(chapter), mediaFileID: EntityID(mediaFile), title: title, position: Int(position)))
        }
        return CourseState(course: course, chapters: chapters, media: media, videos: videos)
    }

    // MARK: - Copying

    public func readHistory(_ courseID: EntityID, before: CourseSeq?, limit: Int) async throws -> [HistoryRecord]? {
        try await onConnection(.catchUp) { connection in
            let rows = try await connection.query(CourseQueries.history(courseID, before: before, limit: limit), logger: self.logger)
            var found = false
            var records: [HistoryRecord] = []
            for try await (seq, at, author, client, batchSeq, summary) in rows.decode((Int64?, Double?, String?, UUID?, Int64?, String?).self) {
                found = true
                guard let seq, let at, let author, let client, let batchSeq, let summary else { continue }
                records.append(HistoryRecord(seq: CourseSeq(seq), committedAt: at, author: author,
                                             origin: BatchOrigin(clientID: ClientID(EntityID(client)), batchSeq: BatchSeq(bitPattern: batchSeq)),
                                             summary: summary))
            }
            return found ? records : nil
        }
    }

    public func writeSnapshot(_ courseID: EntityID, seq: CourseSeq, state: [UInt8]) async throws {
        let logger = logger
        _ = try await onConnection(.commit) { connection in
            try await connection.query(CourseQueries.writeSnapshot(courseID, seq: seq, state: state), logger: logger).collect().count
        }
    }

    public func readSnapshot(_ courseID: EntityID, atOrBefore seq: CourseSeq) async throws -> (seq: CourseSeq, state: [UInt8])? {
        let logger = logger
        return try await onConnection(.catchUp) { connection in
            let rows = try await connection.query(CourseQueries.snapshot(courseID, atOrBefore: seq), logger: logger)
            for try await (found, state) in rows.decode((Int64, ByteBuffer).self) { return (CourseSeq(found), Array(buffer: state)) }
            return nil
        }
    }

    public func readRows(_ tables: [StoreTable]) async throws -> [[[StoreValue]]] {
        try await client.withConnection { connection in
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: self.logger)
            var result: [[[StoreValue]]] = []
            for table in tables {
                let sql = "SELECT \(table.columns.map(\.name).joined(separator: ", ")) FROM \(table.name)"
                var rows: [[StoreValue]] = []
                for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: self.logger) {
                    let cells = row.makeRandomAccess()
                    rows.append(try table.columns.enumerated().map { index, column -> StoreValue in
                        switch column.kind {
                        case .id: .id(EntityID(try cells[index].decode(UUID.self)))
                        case .integer: .integer(try cells[index].decode(Int64.self))
                        case .text: .text(try cells[index].decode(String.self))
                        case .bytes: .bytes(Array(try cells[index].decode(ByteBuffer.self).readableBytesView))
                        }
                    })
                }
                result.append(rows)
            }
            try await connection.query("COMMIT", logger: self.logger)
            return result
        }
    }

    public func insertRows(_ tables: [(table: StoreTable, rows: [[StoreValue]])]) async throws {
        try await transaction { connection in
            for (table, rows) in tables {
                let sql = """
                    INSERT INTO \(table.name) (\(table.columns.map(\.name).joined(separator: ", "))) \
                    VALUES (\((1...table.columns.count).map { "$\($0)" }.joined(separator: ", ")))
                    """
                for row in rows {
                    var binds = PostgresBindings(capacity: row.count)
                    for value in row {
                        switch value {
                        case .id(let id): binds.append(id.uuid)
                        case .integer(let integer): binds.append(integer)
                        case .text(let text): binds.append(text)
                        case .bytes(let bytes): binds.append(ByteBuffer(bytes: bytes))
                        }
                    }
                    try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: self.logger)
                }
            }
        }
    }

    /// `body` in one transaction; our own errors are thrown as they are rather than inside
    /// postgres-nio's wrapper, which means less to a caller.
    private func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await client.withTransaction(logger: logger) { connection in try await body(connection) }
        } catch let error as PostgresTransactionError {
            if let inner = error.closureError as? StoreError { throw inner }
            throw error
        }
    }

    // MARK: - Failures

    /// `body` on a pooled connection of the host in use, waited for (lease included) no longer than
    /// the connection lives, the host stays in use, or the call timeout allows
    /// (``ConnectionGuard``), with its failures described (``database(_:_:)``).
    func onConnection<T: Sendable>(_ operation: StoreOperation, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await database(operation) { try await connectionGuard.run(operation, primary: primary, body) }
    }

    /// `body`, with a failure of PostgreSQL's (or of the connection to it) thrown as
    /// ``StoreError/unavailable(_:detail:)``, described as an operator needs it. Such a failure
    /// makes a replicated database's hosts be asked again which one to use (``PostgresPrimary``).
    func database<T>(_ operation: StoreOperation, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as StoreError {
            if error.isUnavailable { primary.suspect() }
            throw error
        } catch let error as CancellationError {
            throw error
        } catch {
            primary.suspect()
            throw StoreError.unavailable(operation, detail: Self.describe(error))
        }
    }

    /// What went wrong, for a log: postgres-nio's code, the server's SQLSTATE, severity and message
    /// where it sent them, and the underlying network error. Never the query or its parameters
    /// (postgres-nio's own description says nothing at all, lest it leak them).
    public static func describe(_ error: any Error) -> String {
        if let error = error as? PostgresTransactionError {
            return [error.beginError, error.closureError, error.commitError, error.rollbackError]
                .compactMap { $0.map(describe) }.joined(separator: "; ")
        }
        guard let error = error as? PSQLError else { return String(describing: error) }
        var parts = ["\(error.code)"]
        if let info = error.serverInfo {
            if let state = info[.sqlState] { parts.append("SQLSTATE \(state)") }
            if let severity = info[.severity] { parts.append(severity) }
            if let message = info[.message] { parts.append(message) }
        }
        if let underlying = error.underlying { parts.append(String(describing: underlying)) }
        return parts.joined(separator: ": ")
    }

    // MARK: - Notifications

    public func listenForCommits(retryDelay: Duration = .seconds(1),
                                 onListening: @escaping @Sendable () async -> Void = {},
                                 _ handler: @escaping @Sendable (EntityID, CourseSeq) async -> Void) async {
        await listen(on: Self.notificationChannel, what: "commit notifications", retryDelay: retryDelay, onListening: onListening) { payload in
            let parts = payload.split(separator: " ")
            guard parts.count == 2, let courseID = EntityID(String(parts[0])), let seq = CourseSeq(parts[1]) else {
                logger.warning("ignored a malformed commit notification", metadata: ["payload": "\(payload)"])
                return
            }
            await handler(courseID, seq)
        }
    }

    /// The NOTIFY channel presence relays travel on (protocol §14; never stored).
    public static let presenceChannel = "coursesync_presence"

    public func publishPresence(_ text: String) async throws {
        let logger = logger
        _ = try await onConnection(.listen) { connection in
            try await connection.query("SELECT pg_notify(\(Self.presenceChannel), \(text))::text", logger: logger).collect().count
        }
    }

    public func listenForPresence(retryDelay: Duration = .seconds(1), _ handler: @escaping @Sendable (String) async -> Void) async {
        await listen(on: Self.presenceChannel, what: "presence relays", retryDelay: retryDelay, onListening: {}, handler)
    }

    /// LISTENs on `channel` and hands every payload to `handler`, listening again after
    /// `retryDelay` whenever the connection is lost, until cancelled.
    private func listen(on channel: String, what: String, retryDelay: Duration, onListening: @escaping @Sendable () async -> Void,
                        _ handler: @escaping @Sendable (String) async -> Void) async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: channel) { notifications in
                        await onListening()
                        for try await notification in notifications { await handler(notification.payload) }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                primary.suspect()
                logger.warning("\(what) interrupted; listening again",
                               metadata: ["operation": "\(StoreOperation.listen)", "error": "\(Self.describe(error))"])
            }
            try? await Task.sleep(for: retryDelay)
        }
    }
}
