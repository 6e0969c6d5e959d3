import GRDB
import Logging
import NIOCore
import ServiceLifecycle
import SyncModel
import SyncWire

/// The shell around the engine: the run loop, the connection, the timer, and carrying out what
/// the engine decides (replica writes, frames, events).
extension SyncClient {
    /// Syncs until the task is cancelled, a graceful shutdown is triggered, ``close()`` is
    /// called, or the server refuses the client for good; then seals and writes the open batch
    /// and closes the connection. Every task it starts is its child: none outlives it. A client
    /// runs once.
    ///
    /// - Throws: ``SyncError/refused(code:message:)`` or ``SyncError/protocolViolation(_:)`` if
    ///   the server stopped it, ``SyncError/storage(path:reason:)`` if the replica could not be
    ///   written, ``SyncError/closed`` if the client already ran or was closed.
    public func run() async throws {
        guard !running, !closed else { throw SyncError.closed }
        running = true
        defer {
            running = false
            for waiter in runEndWaiters { waiter.resume() }
            runEndWaiters = []
        }
        // Graceful shutdown ends syncing like cancellation does.
        await cancelWhenGracefulShutdown { await self.runLoops() }
        try finish()
        if let stopped { throw stopped }
    }

    /// Connects when the engine asks, wakes it at its deadlines, checkpoints the replica, until
    /// cancelled or told to close.
    private func runLoops() async {
        core.start()
        carryOut()
        await withDiscardingTaskGroup { group in
            group.addTask { [replica, logger] in await Self.checkpointLoop(replica, logger) }
            loop: for await command in commands {
                switch command {
                case .connect:
                    group.addTask { await self.runConnection() }
                case .timer(let deadline):
                    group.addTask { [clock] in
                        do { try await clock.sleep(until: deadline) } catch { return }
                        await self.timerFired(deadline)
                    }
                case .close:
                    break loop
                }
            }
            // Closing: the connection's end must not schedule another.
            closed = true
            channel?.close(promise: nil)
            group.cancelAll()
        }
    }

    /// Copies the WAL into the database file every half second (passive: it never blocks a write).
    private static func checkpointLoop(_ replica: Replica, _ logger: Logger) async {
        while true {
            do { try await Task.sleep(for: .milliseconds(500)) } catch { return }
            do { try await replica.checkpoint() } catch { logger.debug("checkpoint failed", metadata: ["error": "\(error)"]) }
        }
    }

    /// After the loops: no more connections; the last step is written and waiters answered.
    func finish() throws {
        closed = true
        core.seal()
        core.stop()
        core.disconnected(now: now(), retry: false)
        _ = core.takeActions()
        var failure: SyncError?
        do {
            try replica.apply(core.takeWrite())
        } catch {
            logger.error("cannot write the replica on close", metadata: ["path": "\(replica.path)", "error": "\(error)"])
            failure = .storage(path: replica.path, reason: "\(error)")
        }
        // Not a loss if it fails: the WAL holds what the checkpoint would have copied.
        do { try replica.checkpoint() } catch { logger.debug("checkpoint failed", metadata: ["error": "\(error)"]) }
        claim.release()
        eventSink.finish()
        commandSink.finish()
        for observer in presenceObservers.values { observer.finish() }
        presenceObservers = [:]
        for waiter in settleWaiters.values { waiter.resume(throwing: stopped ?? failure ?? .closed) }
        settleWaiters = [:]
        closeFailure = failure
        if let failure { throw failure }
    }

    // MARK: Carrying out the engine's decisions

    /// Writes the step to the replica, then sends frames and emits events, in order. A write that
    /// fails stops the client with ``SyncError/storage(path:reason:)``.
    func carryOut() {
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
            stop(.storage(path: replica.path, reason: "\(error)"))
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
                } else if case .presence(let collaborators) = event {
                    for observer in presenceObservers.values { observer.yield(collaborators) }
                }
                eventSink.yield(event)
            case .reconnect(let reason):
                logger.info("reconnecting", metadata: ["reason": "\(reason)"])
                dropConnection()
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

    private func recordRoundTrip(_ duration: Duration) {
        if ackRoundTrips.count == Self.roundTripWindow { ackRoundTrips.removeFirst(Self.roundTripWindow / 2) }
        ackRoundTrips.append(duration)
    }

    private func stop(_ error: SyncError) {
        guard stopped == nil else { return }
        stopped = error
        core.stop()
        logger.error("the client stopped syncing", metadata: ["reason": "\(error)"])
        if case .refused(let code, let message) = error { eventSink.yield(.connection(.refused(code: code, message: message))) }
        dropConnection()
        for waiter in settleWaiters.values { waiter.resume(throwing: error) }
        settleWaiters = [:]
        // The run ends: nothing more will connect.
        commandSink.yield(.close)
    }

    // MARK: Time and connection

    func now() -> Moment { clock.now() }

    /// Keeps the engine's next deadline armed. A deadline that moved later (every frame received
    /// moves the heartbeat's) keeps the armed wake-up: it fires early, finds nothing due, and arms
    /// for the later one, which is cheaper than a new one per frame; an earlier one gets its own.
    private func armTimer() {
        let deadline = closed || stopped != nil ? nil : core.nextDeadline
        guard deadline != armedDeadline else { return }
        if let deadline, let armed = armedDeadline, armed < deadline { return }
        armedDeadline = deadline
        if let deadline { commandSink.yield(.timer(deadline)) }
    }

    private func timerFired(_ deadline: Moment) {
        guard armedDeadline == deadline else { return }
        armedDeadline = nil
        core.handleTimeout(now: now())
        carryOut()
    }

    /// Asks the run loop for a connection (the engine said connect).
    private func connect() {
        guard !closed, stopped == nil, !connectionActive else { return }
        if connections > 0 { metrics.reconnects.increment() }
        connections += 1
        connectionActive = true
        abandonConnection = false
        core.connecting(now: now())
        carryOut()
        commandSink.yield(.connect)
    }

    /// One connection, from connecting to its end (a child task of the run loop); then the
    /// engine schedules the next.
    private func runConnection() async {
        do {
            let token = try await configuration.tokenProvider?() ?? configuration.token
            let connection = try await Transport.connect(configuration)
            // Closed, stopped or given up on while connecting: close it at once.
            guard !closed, stopped == nil, !abandonConnection, !Task.isCancelled else {
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
        channel = nil
        outbound = nil
        connectionActive = false
        guard !closed, stopped == nil else { return }
        core.disconnected(now: now())
        carryOut()
    }

    private func attach(_ channel: any NIOCore.Channel, _ sink: AsyncStream<WireMessage>.Continuation) {
        self.channel = channel
        outbound = sink
    }

    /// The messages of one read, in one engine step (one replica transaction); a frame that does
    /// not decode ends the connection after those before it are taken.
    private func receive(_ frames: [Result<WireMessage, WireError>]) throws {
        defer { carryOut() }
        let now = now()
        var messages: [WireMessage] = []
        messages.reserveCapacity(frames.count)
        // The messages before a malformed frame are taken (as one step); the frame ends the connection.
        var failure: WireError?
        for frame in frames {
            guard case .success(let message) = frame else {
                if case .failure(let error) = frame { failure = error }
                break
            }
            switch message {
            case .reject: lastRejectArrival = ContinuousClock.now
            case .diff: lastDiffArrival = ContinuousClock.now
            default: break
            }
            configuration.frameObserver?(.received(message))
            messages.append(message)
        }
        core.received(messages, now: now)
        if let failure { throw failure }
    }

    /// Closes the current connection (or gives up on the one being made) as if the network
    /// dropped it; the engine reconnects after its backoff.
    package func dropConnection() {
        if let channel { channel.close(promise: nil) } else if connectionActive { abandonConnection = true }
    }
}

/// Hooks for the package's tests, simulator and tools.
extension SyncClient {
    /// The confirmed state (the server's, at the cursor).
    package var confirmedState: CourseState { core.confirmed }
    /// The visible state: confirmed with the pending batches replayed (IDs of unconfirmed rows are provisional).
    package var visibleState: CourseState { core.visible }
    /// Batches waiting for the server (sealed or not).
    package var pendingBatches: [Batch] { core.pendingBatches }
    /// Counters: edits, batches, acks, rejections, how often the local prediction was right.
    package var stats: ClientCore.Stats { core.stats }
    /// Where the connection is: offline, awaiting the handshake, catching up, live.
    package var phase: ClientCore.Phase { core.phase }
    /// The whole engine, for tests that check its invariants.
    package var coreForTests: ClientCore { core }

    /// Caps the replica file at its current size, as a full disk would (for tests of storage failures).
    package func limitReplicaGrowth() throws {
        try replica.pool.writeWithoutTransaction { db in
            let pages = try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0
            try db.execute(sql: "PRAGMA max_page_count = \(pages)")
        }
    }
}
