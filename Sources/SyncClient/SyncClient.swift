import CoreMetrics
import GRDB
import Logging
import NIOCore
import ServiceLifecycle
import SyncModel
import SyncWire

/// A course replica that edits instantly and syncs in the background.
///
/// Every edit applies to the local SQLite replica at once (optimistically, with temporary IDs for
/// new rows) and returns the new rows' ``LocalKey``s. Edits made close together are sent as one
/// batch; the server orders and resolves them, and its acks and diffs flow back: temp IDs become
/// real IDs (local keys stay), pending edits are rebased on others' changes, and a rejected batch
/// is rolled back exactly, together with the later batches that depended on it.
///
/// Syncing runs in ``run()``, inside your task tree (it is a swift-service-lifecycle `Service`);
/// cancelling it, or a graceful shutdown, stops syncing and closes the connection. Edits and reads
/// work whether it runs or not: made offline, edits wait in the replica for the next run.
///
/// ```swift
/// let client = try SyncClient(path: "course.replica", courseID: course,
///                             configuration: ClientConfiguration(host: "sync.example.com", token: token))
/// try await withThrowingDiscardingTaskGroup { group in
///     group.addTask { try await client.run() }
///     let intro = try await client.createChapter(title: "Introduction")
///     let videos = try await client.linkMedia([clipA, clipB], to: intro)
///     for try await rows in client.observeVideos(inChapter: intro) { render(rows) }
/// }
/// ```
///
/// ``open(path:courseID:configuration:logger:)`` and ``close()`` are a convenience over it for
/// code that does not keep a task tree: `open` starts ``run()`` in a task the client owns, and
/// `close` ends it and waits.
public actor SyncClient {
    /// How this client reaches its server.
    public nonisolated let configuration: ClientConfiguration
    /// The replica file.
    package nonisolated let replica: Replica
    /// This client's hold on the file, released when it closes.
    nonisolated let claim: ReplicaClaim
    /// Everything the app may want to show; see ``ClientEvent``. Ends when the client stops.
    public nonisolated let events: AsyncStream<ClientEvent>
    let eventSink: AsyncStream<ClientEvent>.Continuation
    var core: ClientCore
    let logger: Logger
    /// The engine's clock: a monotonic one, from when this client opened.
    let clock = MomentClock()
    /// What the engine asks of ``run()``'s loop: connect, wake at a deadline, stop.
    let commands: AsyncStream<Command>
    let commandSink: AsyncStream<Command>.Continuation
    enum Command { case connect, timer(Moment), close }
    var running = false
    /// ``close()`` calls waiting for a ``run()`` they did not start to end.
    var runEndWaiters: [CheckedContinuation<Void, Never>] = []
    /// The task ``open(path:courseID:configuration:logger:)`` runs ``run()`` in.
    var ownedRun: Task<Void, any Error>?
    var armedDeadline: Moment?
    var outbound: AsyncStream<WireMessage>.Continuation?
    var channel: (any NIOCore.Channel)?
    /// A connection is being made or is open.
    var connectionActive = false
    /// The connection being made must be closed as soon as it opens (the engine gave up on it).
    var abandonConnection = false
    var closed = false
    var stopped: SyncError?
    /// The last replica write, on closing, failed.
    var closeFailure: SyncError?
    var settleWaiters: [Int: CheckedContinuation<Void, any Error>] = [:]
    var nextSettleWaiter = 0
    let metrics: ClientMetrics
    var reportedStats = ClientCore.Stats()
    var reportedPending = -1
    var connections = 0
    var sentAt: [BatchSeq: ContinuousClock.Instant] = [:]
    /// Push → Ack round trips of the most recent batches (at most ``roundTripWindow``), oldest first.
    package internal(set) var ackRoundTrips: [Duration] = []
    package static let roundTripWindow = 10_000
    /// When the last `Reject` and `Diff` frames arrived, before they were applied (for `coursesync bench local`).
    package internal(set) var lastRejectArrival: ContinuousClock.Instant?
    package internal(set) var lastDiffArrival: ContinuousClock.Instant?
    /// ``observePresence()``'s streams, by number.
    var presenceObservers: [Int: AsyncStream<[Collaborator]>.Continuation] = [:]
    var nextPresenceObserver = 0

    /// Opens the replica at `path` (creating it for `courseID` if new) without syncing yet: call
    /// ``run()``. Pending edits left by an earlier run are sent once it connects.
    ///
    /// - Throws: ``ReplicaError`` if the file is another course's, cannot be read, or is open in
    ///   another `SyncClient` (until that one's ``close()`` or end of ``run()``), GRDB's
    ///   `DatabaseError` if it cannot be opened, or a `POSIXError` if it cannot be locked.
    public init(path: String, courseID: EntityID, configuration: ClientConfiguration,
                logger: Logger = Logger(label: "coursesync.client")) throws {
        let replica = try Replica(path: path)
        claim = try ReplicaClaim(path: path)
        let contents: ReplicaContents
        if let stored = try replica.load(courseID: courseID) {
            contents = stored
        } else {
            var generator = SystemRandomNumberGenerator()
            contents = .empty(clientID: ClientID(.random(using: &generator)), courseID: courseID)
            try replica.create(contents)
        }
        self.replica = replica
        self.configuration = configuration
        self.logger = logger
        var generator = SystemRandomNumberGenerator()
        var core = ClientCore(contents, maxPendingBatches: configuration.maxPendingBatches, timing: configuration.timing,
                              seed: generator.next())
        core.renewsTokens = configuration.tokenProvider != nil
        // The replica's rows, rebuilt from what it stores.
        try replica.apply(core.takeWrite())
        self.core = core
        metrics = ClientMetrics(factory: configuration.metricsFactory ?? MetricsSystem.factory)
        clientID = contents.clientID
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(configuration.eventBuffer))
        (commands, commandSink) = AsyncStream.makeStream()
    }

    /// Opens the replica at `path` (creating it for `courseID` if new) and starts syncing in a
    /// task the client owns, until ``close()``.
    public static func open(path: String, courseID: EntityID, configuration: ClientConfiguration,
                            logger: Logger = Logger(label: "coursesync.client")) async throws -> SyncClient {
        let client = try SyncClient(path: path, courseID: courseID, configuration: configuration, logger: logger)
        await client.startOwnedRun()
        return client
    }

    private func startOwnedRun() {
        ownedRun = Task { try await self.run() }
    }

    /// Stops syncing: the open batch is sealed and written, the connection closed, ``run()``
    /// returns. Pending edits stay in the replica for the next run. Edits after it throw
    /// ``EditError/closed``.
    ///
    /// - Throws: ``SyncError/storage(path:reason:)`` if the last replica write failed (what the
    ///   file held before stays). Why a client stopped earlier (a refusal) is not thrown again:
    ///   ``settle()``, ``run()`` and the ``events`` reported it.
    public func close() async throws {
        if running {
            commandSink.yield(.close)
            if let ownedRun { _ = await ownedRun.result } else { await withCheckedContinuation { runEndWaiters.append($0) } }
        } else if !closed {
            return try finish()
        }
        if let closeFailure { throw closeFailure }
    }

    // MARK: Reading

    /// The client's ID (one per replica file).
    public nonisolated let clientID: ClientID
    /// The course this replica holds.
    public var courseID: EntityID { core.courseID }
    /// The confirmed course seq: how far the replica has the server's history.
    public var cursor: CourseSeq { core.confirmed.seq }
    /// Why the last connection failed or ended (a refused TCP connection, a TLS certificate the
    /// client does not trust, …), for diagnostics; `nil` if none has.
    public internal(set) var lastConnectionError: String?

    /// The outline as the replica shows it now.
    public func outline() throws -> Outline { try replica.outline() }

    /// The chapters and their videos, re-read after every change to the replica.
    public nonisolated func observeOutline() -> AsyncValueObservation<Outline> {
        ValueObservation.tracking(Replica.outline).values(in: replica.pool)
    }

    /// A chapter's videos in order (with their status), re-read after every change to them.
    public nonisolated func observeVideos(inChapter chapter: LocalKey) -> AsyncValueObservation<[VideoRow]> {
        ValueObservation.tracking { try Replica.videos(inChapter: chapter, $0) }.values(in: replica.pool)
    }

    /// The course's media library, by name.
    public func media() throws -> [MediaRow] { try replica.media() }

    /// The course's media library, re-read after every change to it.
    public nonisolated func observeMedia() -> AsyncValueObservation<[MediaRow]> {
        ValueObservation.tracking(Replica.media).values(in: replica.pool)
    }

    /// The local key of the row with the server ID `id` (rows made on this replica keep the key
    /// they had before their ID was known). For turning IDs from elsewhere (a URL, a command line) into keys.
    public func key(for id: EntityID) -> LocalKey { core.key(for: id) }

    // MARK: Edits

    /// Creates a chapter; returns its local key.
    @discardableResult
    public func createChapter(title: String, placement: LocalPlacement = .atEnd) throws -> LocalKey {
        let temp = core.mintTemp()
        try perform(.createChapter(temp: temp, title: title, placement: try resolve(placement)))
        return core.key(forTemp: temp)
    }

    /// Renames a chapter (1–500 characters after trimming, no control characters).
    public func renameChapter(_ chapter: LocalKey, to title: String) throws {
        try perform(.renameChapter(try ref(chapter), title: title))
    }

    /// Moves a chapter among the course's chapters.
    public func moveChapter(_ chapter: LocalKey, to placement: LocalPlacement) throws {
        try perform(.moveChapter(try ref(chapter), placement: try resolve(placement)))
    }

    /// Deletes a chapter and its videos.
    public func deleteChapter(_ chapter: LocalKey) throws {
        try perform(.deleteChapter(try ref(chapter)))
    }

    /// Adds a media file to the course's library; returns its local key.
    @discardableResult
    public func registerMedia(name: String, cdnURL: String, durationMs: UInt64, byteSize: UInt64) throws -> LocalKey {
        let temp = core.mintTemp()
        try perform(.registerMedia(temp: temp, name: name, cdnURL: cdnURL, durationMs: durationMs, byteSize: byteSize))
        return core.key(forTemp: temp)
    }

    /// Links media files into a chapter as one contiguous run at `placement`; returns the videos'
    /// local keys in order. A media file the chapter already holds maps to the existing video.
    @discardableResult
    public func linkMedia(_ media: [LocalKey], to chapter: LocalKey, placement: LocalPlacement = .atEnd,
                          titles: [String?]? = nil) throws -> [LocalKey] {
        let chapterRef = try ref(chapter)
        var items: [LinkItem] = []
        for (index, file) in media.enumerated() {
            items.append(LinkItem(temp: core.mintTemp(), media: try ref(file), title: titles?[index]))
        }
        try perform(.linkMedia(chapter: chapterRef, items: items, placement: try resolve(placement)))
        return items.map { core.key(forTemp: $0.temp) }
    }

    /// Moves a video within its chapter or into another one (which must not already link its media file).
    public func moveVideo(_ video: LocalKey, to chapter: LocalKey, placement: LocalPlacement = .atEnd) throws {
        try perform(.moveVideo(try ref(video), toChapter: try ref(chapter), placement: try resolve(placement)))
    }

    /// Renames a video.
    public func renameVideo(_ video: LocalKey, to title: String) throws {
        try perform(.renameVideo(try ref(video), title: title))
    }

    /// Removes a video from its chapter (the media file stays in the library).
    public func unlinkVideo(_ video: LocalKey) throws {
        try perform(.unlinkVideo(try ref(video)))
    }

    /// Takes back this replica's last own edit that is not undone yet (one call of the edit API,
    /// or the edits coalesced into one batch), even after others' edits: as intent, resolved like
    /// any edit — renamed back, moved back after the row it followed, unlinked, re-created with
    /// new IDs. Returns `false` if there is nothing to undo. Throws ``EditError/invalid(_:)`` if
    /// the undo cannot apply to what the replica shows now (a row it names was deleted meanwhile);
    /// that edit then stays as it is. A media file's registration is not undone (nothing removes
    /// one from the library). At most 100 edits are remembered, in memory only.
    @discardableResult
    public func undo() throws -> Bool {
        try performBatch { core, now throws(EditError) in try core.undo(now: now) }
    }

    /// Makes again what the last ``undo()`` took back; `false` if there is nothing to redo (a new
    /// edit ends what could be redone).
    @discardableResult
    public func redo() throws -> Bool {
        try performBatch { core, now throws(EditError) in try core.redo(now: now) }
    }

    /// Whether ``undo()`` / ``redo()`` have something to take back or make again.
    public var canUndo: Bool { core.canUndo }
    public var canRedo: Bool { core.canRedo }

    /// Resubmits rolled-back edits as a new batch, resolved against the current state. Throws
    /// (changing nothing) if they no longer make sense, e.g. their chapter is really gone.
    public func retry(_ edits: [DroppedEdit]) throws {
        for edit in edits { try perform(edit.operation, holdOpen: true) }
        seal()
    }

    /// Sends the open batch now instead of at the end of the coalescing window.
    public func seal() {
        core.seal()
        carryOut()
    }

    /// Returns when every edit made so far has been answered by the server and the replica is
    /// live (caught up). Waits through disconnects.
    ///
    /// - Throws: the ``SyncError`` that stopped the client (refused, storage, protocol),
    ///   ``SyncError/closed`` if it is closed first, `CancellationError` if the waiting task is
    ///   cancelled.
    public func settle() async throws {
        seal()
        if let stopped { throw stopped }
        if closed { throw SyncError.closed }
        if isSettled { return }
        let id = nextSettleWaiter
        nextSettleWaiter += 1
        // A cancelled wait ends with CancellationError (a caller's timeout must not wait for ever).
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                if Task.isCancelled { return continuation.resume(throwing: CancellationError()) }
                settleWaiters[id] = continuation
            }
        } onCancel: {
            Task { await self.cancelSettle(id) }
        }
    }

    var isSettled: Bool { core.isSettled && core.phase == .live }

    private func cancelSettle(_ id: Int) {
        settleWaiters.removeValue(forKey: id)?.resume(throwing: CancellationError())
    }

    private func ref(_ key: LocalKey) throws(EditError) -> Ref {
        guard let ref = core.ref(key) else { throw .unknownKey(key) }
        return ref
    }

    private func resolve(_ placement: LocalPlacement) throws(EditError) -> Placement {
        switch placement {
        case .atEnd: .atEnd
        case .atStart: .atStart
        case .after(let key): .after(try ref(key))
        case .before(let key): .before(try ref(key))
        }
    }

    /// Runs an engine step that sends a batch of its own making (an undo, a redo, a restore) and
    /// writes it to the replica, as ``perform(_:holdOpen:)`` does for one edit; what the step returns.
    func performBatch(_ step: (inout ClientCore, Moment) throws(EditError) -> Bool) throws -> Bool {
        guard !closed else { throw EditError.closed }
        if case .storage? = stopped { throw stopped! }
        let sent = try step(&core, now())
        carryOut()
        if case .storage? = stopped { throw stopped! }
        return sent
    }

    /// Applies an edit and writes it to the replica; if the replica cannot be written the edit
    /// is not kept and the call throws ``SyncError/storage(path:reason:)``.
    private func perform(_ op: SyncModel.Operation, holdOpen: Bool = false) throws {
        guard !closed else { throw EditError.closed }
        if case .storage? = stopped { throw stopped! }
        try core.edit(op, now: now(), holdOpen: holdOpen)
        carryOut()
        if case .storage? = stopped { throw stopped! }
    }
}

extension SyncClient: Service {}

/// Where a new or moved row goes, by local key.
public enum LocalPlacement: Hashable, Sendable {
    case atEnd
    case atStart
    case after(LocalKey)
    case before(LocalKey)
}
