import Foundation
import CoreMetrics
import GRDB
import Logging
import NIOCore
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
/// ```swift
/// let client = try await SyncClient.open(path: "course.replica", courseID: course,
///                                        configuration: ClientConfiguration(port: 7420, token: token))
/// let intro = try await client.createChapter(title: "Introduction")
/// let videos = try await client.linkMedia([clipA, clipB], to: intro)
/// for try await rows in client.observeVideos(inChapter: intro) { render(rows) }
/// ```
public actor SyncClient {
    public let configuration: ClientConfiguration
    /// The replica file.
    public let replica: Replica
    /// Everything the app may want to show; see ``ClientEvent``.
    public nonisolated let events: AsyncStream<ClientEvent>
    private let eventSink: AsyncStream<ClientEvent>.Continuation
    private var core: ClientCore
    private let logger: Logger
    private var connectionTask: Task<Void, Never>?
    private var checkpointTask: Task<Void, Never>?
    /// Sleeps until the engine's next deadline.
    private var timerTask: Task<Void, Never>?
    private var armedDeadline: Moment?
    /// The engine's clock: a monotonic one, from when this client opened.
    private let clock = MomentClock()
    private var outbound: AsyncStream<WireMessage>.Continuation?
    private var channel: (any NIOCore.Channel)?
    private var closed = false
    private var stopped: ConnectionError?
    private var settleWaiters: [Int: CheckedContinuation<Void, any Error>] = [:]
    private var nextSettleWaiter = 0

    /// Opens the replica at `path` (creating it for `courseID` if new) and starts syncing.
    /// Pending edits left by an earlier run are sent as soon as the server is reachable.
    public static func open(path: String, courseID: EntityID, configuration: ClientConfiguration,
                            logger: Logger = Logger(label: "coursesync.client")) async throws -> SyncClient {
        let replica = try Replica(path: path)
        let contents: ReplicaContents
        if let stored = try replica.load(courseID: courseID) {
            contents = stored
        } else {
            var generator = SystemRandomNumberGenerator()
            contents = .empty(clientID: ClientID(.random(using: &generator)), courseID: courseID)
            try replica.create(contents)
        }
        let client = SyncClient(replica: replica, contents: contents, configuration: configuration, logger: logger)
        try await client.start()
        return client
    }

    private init(replica: Replica, contents: ReplicaContents, configuration: ClientConfiguration, logger: Logger) {
        self.replica = replica
        self.configuration = configuration
        self.logger = logger
        var generator = SystemRandomNumberGenerator()
        core = ClientCore(contents, maxPendingBatches: configuration.maxPendingBatches, timing: configuration.timing,
                          seed: generator.next())
        core.renewsTokens = configuration.tokenProvider != nil
        metrics = ClientMetrics(factory: configuration.metricsFactory ?? MetricsSystem.factory)
        clientID = contents.clientID
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(configuration.eventBuffer))
    }

    private func start() throws {
        try replica.apply(core.takeWrite())
        core.start()
        carryOut()
        checkpointTask = Task.detached(priority: .background) { [replica, logger] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                do { try replica.checkpoint() } catch { logger.debug("checkpoint failed", metadata: ["error": "\(error)"]) }
            }
        }
    }

    /// Stops syncing and closes the connection. Pending edits stay in the replica for the next open.
    public func close() async {
        guard !closed else { return }
        closed = true
        core.seal()
        core.stop()
        timerTask?.cancel()
        connectionTask?.cancel()
        checkpointTask?.cancel()
        channel?.close(promise: nil)
        await connectionTask?.value
        core.disconnected(now: now(), retry: false)
        do {
            try replica.apply(core.takeWrite())
        } catch {
            logger.error("cannot write the replica on close", metadata: ["path": "\(replica.path)", "error": "\(error)"])
        }
        await checkpointTask?.value
        try? replica.checkpoint()
        eventSink.finish()
        for waiter in settleWaiters.values { waiter.resume(throwing: EditError.closed) }
        settleWaiters = [:]
    }

    // MARK: Reading

    /// The client's ID (one per replica file).
    public nonisolated let clientID: ClientID
    /// The course this replica holds.
    public var courseID: EntityID { core.courseID }
    /// The confirmed course seq: the cursor.
    public var cursor: CourseSeq { core.confirmed.seq }
    /// The confirmed state (the server's, at the cursor).
    public var confirmedState: CourseState { core.confirmed }
    /// The visible state: confirmed with the pending batches replayed (IDs of unconfirmed rows are provisional).
    public var visibleState: CourseState { core.visible }
    /// Batches waiting for the server (sealed or not).
    public var pendingBatches: [Batch] { core.pendingBatches }
    /// Counters: edits, batches, acks, rejections, how often the local prediction was right.
    public var stats: ClientCore.Stats { core.stats }
    /// Where the connection is: offline, awaiting the handshake, catching up, live.
    public var phase: ClientCore.Phase { core.phase }

    /// Why the last connection failed or ended (a refused TCP connection, a TLS certificate the
    /// client does not trust, …), for diagnostics; `nil` if none has.
    public private(set) var lastConnectionError: String?
    /// Push → Ack round trips of the most recent batches (at most ``roundTripWindow``), oldest first.
    public private(set) var ackRoundTrips: [Duration] = []
    public static let roundTripWindow = 10_000
    private var sentAt: [BatchSeq: ContinuousClock.Instant] = [:]

    private func recordRoundTrip(_ duration: Duration) {
        if ackRoundTrips.count == Self.roundTripWindow { ackRoundTrips.removeFirst(Self.roundTripWindow / 2) }
        ackRoundTrips.append(duration)
    }

    /// When the last `Reject` frame arrived, before it was applied (for `coursesync bench local`).
    public private(set) var lastRejectArrival: ContinuousClock.Instant?
    /// When the last `Diff` frame arrived, before it was applied (for `coursesync bench local`).
    public private(set) var lastDiffArrival: ContinuousClock.Instant?
    /// The whole engine, for tests that check its invariants.
    var coreForTests: ClientCore { core }

    /// The outline as the replica shows it now.
    public func outline() throws -> Outline { try replica.outline() }

    /// The chapters and their videos, re-read after every change to the replica.
    public nonisolated func observeOutline() -> AsyncValueObservation<Outline> {
        ValueObservation.tracking(Replica.outline).values(in: replica.pool)
    }

    /// A chapter's videos in order (with their status), re-read after every change.
    public nonisolated func observeVideos(inChapter chapter: LocalKey) -> AsyncValueObservation<[VideoRow]> {
        ValueObservation.tracking { try Replica.videos(inChapter: chapter, $0) }.values(in: replica.pool)
    }

    /// The local key of the row with the server ID `id` (rows made on this replica keep the key
    /// they had before their ID was known). For turning IDs from elsewhere (a URL, a command line) into keys.
    public func key(for id: EntityID) -> LocalKey { core.key(for: id) }

    /// The course's media library.
    public func media() throws -> [MediaRow] { try replica.media() }

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
    /// live (caught up). Waits through disconnects; throws only if the client is closed or refused.
    public func settle() async throws {
        seal()
        if let stopped { throw stopped }
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

    private var isSettled: Bool { core.isSettled && core.phase == .live }

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

    private func perform(_ op: SyncModel.Operation, holdOpen: Bool = false) throws {
        guard !closed else { throw EditError.closed }
        try core.edit(op, now: now(), holdOpen: holdOpen)
        carryOut()
    }

    // MARK: Carrying out the engine's decisions

    /// Writes the step to the replica, then sends frames and emits events, in order.
    private let metrics: ClientMetrics
    private var reportedStats = ClientCore.Stats()
    private var reportedPending = -1
    private var connections = 0

    private func carryOut() {
        defer {
            let stats = core.stats, pending = core.pendingCount
            if stats != reportedStats || pending != reportedPending {
                metrics.report(from: reportedStats, to: stats, pending: pending)
                (reportedStats, reportedPending) = (stats, pending)
            }
        }
        do {
            try replica.apply(core.takeWrite())
        } catch {
            // The in-memory engine is ahead of the file; the next successful write does not repair
            // that, so stop syncing rather than acknowledge what was not stored.
            logger.critical("cannot write the replica", metadata: ["path": "\(replica.path)", "error": "\(error)"])
            stop(ConnectionError(.internalError, "cannot write the replica \(replica.path): \(error)"))
            return
        }
        for action in core.takeActions() {
            switch action {
            case .send(let message):
                if case .push(let push) = message { sentAt[push.batchSeq] = ContinuousClock.now }
                if let outbound {
                    configuration.frameObserver?(.sent(message))
                    outbound.yield(message)
                }
            case .emit(let event):
                if case .acked(let batchSeq, _, _) = event, let sent = sentAt.removeValue(forKey: batchSeq) {
                    recordRoundTrip(ContinuousClock.now - sent)
                } else if case .rejected(let rejected) = event {
                    for edit in rejected.droppedEdits { sentAt[edit.batchSeq] = nil }
                }
                eventSink.yield(event)
            case .reconnect(let reason):
                logger.info("reconnecting", metadata: ["reason": "\(reason)"])
                if let channel { channel.close(promise: nil) } else { connectionTask?.cancel() }
            case .stop(let error): stop(error)
            case .connect: connect()
            }
        }
        armTimer()
        if isSettled {
            for waiter in settleWaiters.values { waiter.resume() }
            settleWaiters = [:]
        }
    }

    private func stop(_ error: ConnectionError) {
        guard stopped == nil else { return }
        stopped = error
        core.stop()
        logger.error("the server refused this client", metadata: ["code": "\(error.code)", "message": "\(error.message)"])
        eventSink.yield(.connection(.refused(code: error.code, message: error.message)))
        connectionTask?.cancel()
        channel?.close(promise: nil)
        for waiter in settleWaiters.values { waiter.resume(throwing: error) }
        settleWaiters = [:]
    }

    // MARK: Time and connection

    private func now() -> Moment { clock.now() }

    /// Keeps one timer armed for the engine's next deadline. A deadline that moved later (every
    /// frame received moves the heartbeat's) keeps the armed timer: it fires early, finds nothing
    /// due, and arms for the later one, which is cheaper than a new timer per frame.
    private func armTimer() {
        let deadline = closed || stopped != nil ? nil : core.nextDeadline
        guard deadline != armedDeadline else { return }
        if let deadline, let armed = armedDeadline, armed < deadline { return }
        timerTask?.cancel()
        armedDeadline = deadline
        guard let deadline else { return timerTask = nil }
        timerTask = Task { [clock] in
            do { try await clock.sleep(until: deadline) } catch { return }
            self.timerFired(deadline)
        }
    }

    private func timerFired(_ deadline: Moment) {
        guard armedDeadline == deadline else { return }
        armedDeadline = nil
        core.handleTimeout(now: now())
        carryOut()
    }

    /// One connection, from connecting to its end; then the engine schedules the next.
    private func connect() {
        guard !closed, stopped == nil, connectionTask == nil else { return }
        if connections > 0 { metrics.reconnects.increment() }
        connections += 1
        core.connecting(now: now())
        carryOut()
        connectionTask = Task { await self.runConnection() }
    }

    private func runConnection() async {
        do {
            let token = try await configuration.tokenProvider?() ?? configuration.token
            let connection = try await Transport.connect(configuration)
            // Closed or stopped while connecting: nobody would ever close this connection.
            guard !closed, stopped == nil else {
                try? await connection.channel.close()
                throw CancellationError()
            }
            try await connection.executeThenClose { inbound, writer in
                let (queue, sink) = AsyncStream.makeStream(of: WireMessage.self)
                self.attach(connection.channel, sink)
                defer { sink.finish() }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await message in queue { try await writer.write(message) }
                    }
                    let hello = WireMessage.hello(Hello(clientID: self.clientID, token: token))
                    self.configuration.frameObserver?(.connected)
                    self.configuration.frameObserver?(.sent(hello))
                    sink.yield(hello)
                    for try await frames in inbound {
                        try self.receive(frames)
                    }
                    sink.finish()
                    group.cancelAll()
                }
            }
        } catch {
            lastConnectionError = "\(error)"
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
        detach()
        connectionTask = nil
        guard !closed, stopped == nil else { return }
        core.disconnected(now: now())
        carryOut()
    }

    private func attach(_ channel: any NIOCore.Channel, _ sink: AsyncStream<WireMessage>.Continuation) {
        self.channel = channel
        outbound = sink
    }

    private func detach() {
        channel = nil
        outbound = nil
    }

    /// The messages of one read, in one engine step (one replica transaction); a frame that does
    /// not decode ends the connection after those before it are taken.
    private func receive(_ frames: [Result<WireMessage, WireError>]) throws {
        defer { carryOut() }
        let now = now()
        for frame in frames {
            let message = try frame.get()
            switch message {
            case .reject: lastRejectArrival = ContinuousClock.now
            case .diff: lastDiffArrival = ContinuousClock.now
            default: break
            }
            configuration.frameObserver?(.received(message))
            core.received(message, now: now)
        }
    }

    /// Closes the current connection as if the network dropped it (for tests and tools); the
    /// client reconnects after its backoff.
    public func dropConnection() {
        channel?.close(promise: nil)
    }
}

/// Where a new or moved row goes, by local key.
public enum LocalPlacement: Hashable, Sendable {
    case atEnd
    case atStart
    case after(LocalKey)
    case before(LocalKey)
}
