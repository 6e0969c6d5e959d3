import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import SyncModel
import SyncStorage
import SyncTransport
import SyncWire

/// How a ``SyncServer`` listens and what it bounds.
public struct ServerConfiguration: Sendable {
    public var host: String
    /// 0 picks a free port (see ``SyncServer/listeningPort()``).
    public var port: Int
    /// The node's name, sent in `Welcome` and logged.
    public var serverID: String
    public var heartbeatInterval: TimeAmount
    /// Frames queued per connection before it is dropped as a slow consumer.
    public var outboxFrames: Int
    /// Pushes a connection may have unanswered before the server stops reading from it.
    public var maxInFlightPushes: Int
    /// Most batches one group commit carries.
    public var maxGroupBatches: Int
    /// Diffs read from the store per catch-up step.
    public var catchUpChunk: Int
    /// How long a closing connection waits for its last frame (the `Error`) to be read and for the
    /// peer to close its side; `nil`: one heartbeat interval.
    public var closeTimeout: TimeAmount?
    /// TLS (certificate, key, optionally the client authorities for mutual TLS) or plaintext.
    public var security: TransportSecurity = .plaintext
    /// A course hub with no subscriber and nothing queued or committing is dropped from memory
    /// after this long (the next connection to the course makes a new one).
    public var hubIdleTimeout: Duration = .seconds(60)
    /// Connections per user and per address, rates, subscriptions and the handshake timeout.
    public var limits = ServerLimits()
    /// The longest a course hub waits for one store call (a group commit, a catch-up read) before
    /// it gives up on it as failed: the writers' or the subscriber's connection is closed with
    /// `INTERNAL_ERROR`, and they reconnect and resend. Longer than the store's own retries
    /// (``StoreRetryPolicy/standard``, about 9 s), so it ends only a call that hangs.
    public var storeCallTimeout: Duration = .seconds(30)

    public init(host: String = "127.0.0.1", port: Int = 7420, serverID: String = ProcessInfo.processInfo.hostName,
                heartbeatInterval: TimeAmount = .seconds(15), outboxFrames: Int = 4096, maxInFlightPushes: Int = 64,
                maxGroupBatches: Int = 512, catchUpChunk: Int = 256) {
        self.host = host
        self.port = port
        self.serverID = serverID
        self.heartbeatInterval = heartbeatInterval
        self.outboxFrames = outboxFrames
        self.maxInFlightPushes = maxInFlightPushes
        self.maxGroupBatches = maxGroupBatches
        self.catchUpChunk = catchUpChunk
    }

    var effectiveCloseTimeout: TimeAmount { closeTimeout ?? heartbeatInterval }
}

/// The sync server: a TCP listener speaking the protocol of `protocol/README.md` over a
/// ``SyncStore``. Run it as a `Service` in a `ServiceGroup`: on graceful shutdown (SIGTERM) it stops
/// accepting connections and batches, answers every batch it accepted, then sends
/// `Error{SHUTTING_DOWN}` and closes each connection.
public final class SyncServer: Service, Sendable {
    public let configuration: ServerConfiguration
    let store: any SyncStore
    let authority: TokenAuthority
    let logger: Logger
    let group: any EventLoopGroup

    private struct State {
        var hubs: [EntityID: CourseHub] = [:]
        var connections: [ObjectIdentifier: ConnectionHandle] = [:]
        var listener: (any Channel)?
        var shuttingDown = false
        var portWaiters: [CheckedContinuation<Int, any Error>] = []
        var port: Int?
        var slowConsumers = 0
        /// Open connections per remote IP address, and per authenticated user.
        var perAddress: [String: Int] = [:]
        var perUser: [String: Int] = [:]
        /// Users lately cut for their rate, and until when they are refused (`RATE_LIMITED`): a
        /// client that reconnects at once does not get a fresh allowance.
        var penalties: [String: NIODeadline] = [:]
        /// Batches sent over HTTP, per user: held to the same rate as a connection's pushes.
        var httpPushes: [String: TokenBucket] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let httpClock = MomentClock()

    /// Takes one HTTP batch from `user`'s allowance (``SessionLimits/pushesPerSecond``, with its
    /// burst); `nil` if it may go, else the milliseconds to wait. Users whose allowance is full
    /// again are forgotten once more than 10,000 are held.
    func takeHTTPPush(by user: String) -> UInt32? {
        let now = httpClock.now()
        let limits = configuration.limits.session
        return state.withLockedValue { state in
            if state.httpPushes.count > 10_000 {
                state.httpPushes = state.httpPushes.filter { _, bucket in
                    var bucket = bucket
                    return bucket.wait(until: Double(bucket.burst), now: now) > .zero
                }
            }
            var bucket = state.httpPushes[user] ?? TokenBucket(rate: limits.pushesPerSecond, burst: limits.pushBurst, now: now)
            defer { state.httpPushes[user] = bucket }
            if bucket.take(1, now: now) { return nil }
            return UInt32(clamping: max(bucket.wait(until: 1, now: now).wholeMilliseconds, 1))
        }
    }

    public init(store: any SyncStore, authority: TokenAuthority, configuration: ServerConfiguration = .init(),
                logger: Logger = Logger(label: "coursesync.server"), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        ServerMetrics.register()
        self.store = store
        self.authority = authority
        self.configuration = configuration
        self.logger = logger
        self.group = group
    }

    /// The port the server listens on, once it does.
    public func listeningPort() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            let port: Int? = state.withLockedValue { state in
                if state.port == nil { state.portWaiters.append(continuation) }
                return state.port
            }
            if let port { continuation.resume(returning: port) }
        }
    }

    /// Connections dropped so far because they fell too far behind (`SLOW_CONSUMER`).
    public var slowConsumerCount: Int { state.withLockedValue { $0.slowConsumers } }

    /// Connections currently open.
    public var connectionCount: Int { state.withLockedValue { $0.connections.count } }

    public func run() async throws {
        let listener: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, Never>, Never>
        do {
            listener = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: configuration.host, port: configuration.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try self.configure(channel.pipeline.syncOperations)
                        return try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            let waiters = state.withLockedValue { state in
                defer { state.portWaiters = [] }
                return state.portWaiters
            }
            waiters.forEach { $0.resume(throwing: error) }
            throw error
        }
        let port = listener.channel.localAddress?.port ?? configuration.port
        let waiters = state.withLockedValue { state in
            state.port = port
            state.listener = listener.channel
            defer { state.portWaiters = [] }
            return state.portWaiters
        }
        waiters.forEach { $0.resume(returning: port) }
        logger.info("listening", metadata: ["address": "\(configuration.host):\(port)", "server": "\(configuration.serverID)"])

        // Idle hubs are swept every half idle time (between 10 ms and 30 s).
        let sweepEvery = min(max(configuration.hubIdleTimeout / 2, .milliseconds(10)), .seconds(30))
        let sweeper = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: sweepEvery)
                self?.evictIdleHubs()
            }
        }
        defer { sweeper.cancel() }
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await listener.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection, transport: "tcp", tls: self.configuration.security.isTLS) }
                    }
                }
            }
        } onGracefulShutdown: {
            Task { await self.shutDown() }
        }
        logger.info("stopped")
    }

    /// Stops accepting, lets every course answer what it accepted, then closes every connection
    /// with `SHUTTING_DOWN`. ``run()`` returns once all connections are closed.
    public func shutDown() async {
        let (listener, hubs) = state.withLockedValue { state in
            state.shuttingDown = true
            return (state.listener, Array(state.hubs.values))
        }
        logger.info("shutting down: draining in-flight batches", metadata: ["courses": "\(hubs.count)"])
        try? await listener?.close()
        for hub in hubs { await hub.drain() }
        let connections = state.withLockedValue { Array($0.connections.values) }
        for connection in connections {
            connection.outbox.close(ConnectionError(.shuttingDown, "the server is shutting down; reconnect with backoff"))
        }
    }

    private func configure(_ pipeline: ChannelPipeline.SynchronousOperations) throws {
        try ProtocolPipeline.configureServer(pipeline, security: configuration.security, beforeFraming: LingeringClose())
        try pipeline.addHandler(PeerActivity.Handler())
    }

    func hub(for courseID: EntityID) -> CourseHub {
        state.withLockedValue { state in
            let hub = state.hubs[courseID] ?? CourseHub(courseID: courseID, store: store, logger: logger,
                                                        maxGroupBatches: configuration.maxGroupBatches, catchUpChunk: configuration.catchUpChunk,
                                                        storeCallTimeout: configuration.storeCallTimeout)
            if state.hubs.updateValue(hub, forKey: courseID) == nil { ServerMetrics.courseHubs.increment() }
            // Handed out just now: not evicted for at least `hubIdleTimeout`, by which time what it
            // was handed out for (a subscription, a push) has made it busy.
            hub.residency.withLockedValue { $0.handedOut = .now }
            return hub
        }
    }

    /// Course hubs in memory on this node.
    public var residentHubs: Int { state.withLockedValue { $0.hubs.count } }

    /// Drops the hubs that have been quiet for ``ServerConfiguration/hubIdleTimeout``; returns how many.
    @discardableResult
    func evictIdleHubs() -> Int {
        let now = ContinuousClock.now, idle = configuration.hubIdleTimeout
        return state.withLockedValue { state in
            let idleHubs = state.hubs.filter { $0.value.isEvictable(idle: idle, now: now) }.map(\.key)
            for courseID in idleHubs { state.hubs[courseID] = nil }
            if !idleHubs.isEmpty { ServerMetrics.courseHubs.decrement(by: Double(idleHubs.count)) }
            return idleHubs.count
        }
    }

    /// Tells this node's subscribers of `courseID` that another node committed up to `seq`.
    public func noteCommitted(courseID: EntityID, upTo seq: CourseSeq) async {
        guard let hub = state.withLockedValue({ $0.hubs[courseID] }) else { return }
        await hub.noteCommitted(upTo: seq)
    }

    /// Reads the seq of every course this node has subscribers for and catches their hubs up to
    /// it: for commits no notification told of (see ``CommitWatch``).
    public func checkStore() async {
        let hubs = state.withLockedValue { $0.hubs.sorted { $0.key < $1.key } }
        var watched: [(EntityID, CourseHub)] = []
        for (courseID, hub) in hubs where await hub.subscriberCount > 0 { watched.append((courseID, hub)) }
        guard !watched.isEmpty else { return }
        do {
            // Every watched course's seq in one read (one query on PostgreSQL).
            let store = store, courses = watched.map(\.0)
            let seqs = try await withDeadline(configuration.storeCallTimeout, .readSeq) { try await store.courseSeqs(courses) }
            for (courseID, hub) in watched {
                if let seq = seqs[courseID] { await hub.noteCommitted(upTo: seq) }
            }
        } catch {
            ServerMetrics.storeError(error, .readSeq)
            logger.warning("could not read the courses' seqs", metadata: ["courses": "\(watched.count)", "operation": "\(StoreOperation.readSeq)", "error": "\(error)"])
        }
    }

    // MARK: - One connection

    /// The writer: drains the outbox to the socket, what is queued at once (up to
    /// ``framesPerWrite``) in one hop to the event loop and one flush. While the socket is not
    /// writable it waits for the last write (or a close), so the outbox fills up behind a slow
    /// reader and overflows (see ``Outbox``). The `Error` that ends an outbox is the last frame
    /// written.
    private static func write(_ outbox: Outbox, to channel: any Channel, closeTimeout: TimeAmount, logger: Logger,
                              record: NIOLockedValueBox<ConnectionRecord>) async {
        while true {
            let items = await outbox.next(upTo: framesPerWrite)
            guard !items.isEmpty else { return }
            var frames: [ByteBuffer] = []
            frames.reserveCapacity(items.count)
            var closing: ConnectionError?
            for item in items {
                switch item {
                case .frame(let payload): frames.append(payload)
                case .close(let error): closing = error
                }
            }
            if !frames.isEmpty {
                record.withLockedValue { record in
                    record.framesOut += frames.count
                    record.bytesOut += frames.reduce(0) { $0 + $1.readableBytes }
                }
                let written = channel.eventLoop.makePromise(of: Void.self)
                channel.eventLoop.execute { [frames] in
                    for frame in frames.dropLast() { channel.write(frame, promise: nil) }
                    channel.writeAndFlush(frames.last!, promise: written)
                }
                if !channel.isWritable { await outbox.waitForWrite(written.futureResult) }
            }
            if let closing {
                logger.debug("closing connection", metadata: ["code": "\(closing.code)", "reason": "\(closing.message)"])
                await close(channel, after: closing, timeout: closeTimeout)
                return
            }
        }
    }

    /// At most this many queued frames go to the socket together: enough for a group commit's
    /// diffs, few enough that what sits in the channel's buffer beside the bounded outbox stays small.
    static var framesPerWrite: Int { 64 }

    /// Writes `Error` as the last frame, then closes gracefully: FIN after the Error, and what the
    /// peer still sends is read and dropped until it closes its side, so that unread input does not
    /// turn the close into a reset (which can destroy the Error before the peer reads it, e.g.
    /// after an oversized frame arrived with its body). `timeout` bounds the whole close.
    private static func close(_ channel: any Channel, after error: ConnectionError, timeout: TimeAmount) async {
        let deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        let written = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(ByteBuffer(bytes: WireMessage.error(error).payload()), promise: written)
        do { try await written.futureResult.get() } catch { return }
        channel.triggerUserOutboundEvent(LingeringClose.DrainInput(), promise: nil)
        do {
            try await channel.close(mode: .output)
            try await channel.closeFuture.get()
        } catch {
            try? await channel.close()
        }
    }

    /// Arms `session`'s next deadline on the connection's event loop (a scheduled task costs far
    /// less than a sleeping Swift task per idle connection), lets the session decide when it
    /// fires, carries that out, and arms the next. Deadlines only move later as frames arrive, so
    /// a timer that fires early finds nothing due and arms again; once the session is closed it
    /// has no deadline and the chain ends.
    /// The one timer of a connection: when it fires, and its task.
    struct ArmedTimer {
        var deadline: Moment?
        var task: Scheduled<Void>?
    }

    /// Schedules the session's next deadline on the connection's event loop, unless a timer that
    /// fires no later is already armed (a later deadline is found when that one fires: the
    /// heartbeat moves its deadline with every frame, and re-arming per frame would cost more).
    /// An earlier one (the token's expiry, set by the handshake) replaces the armed timer.
    ///
    /// The timer does not depend on the connection's tasks: the peer's last frame is read from
    /// `activity` (marked as the event loop decoded it) and Pings go straight to the channel, so a
    /// server whose tasks are held up neither misses the peer's Pongs nor keeps its own Pings
    /// queued, and does not close a peer that is answering.
    private func armTimer(_ session: SessionBox, timer: NIOLockedValueBox<ArmedTimer>, clock: MomentClock, channel: any Channel,
                          activity: PeerActivity?, outbox: Outbox, handle: @escaping @Sendable () -> ConnectionHandle?) {
        let eventLoop = channel.eventLoop
        guard let deadline = session.withLockedValue({ $0.nextDeadline }) else { return }
        timer.withLockedValue { armed in
            if let current = armed.deadline, current <= deadline { return }
            armed.task?.cancel()
            armed.deadline = deadline
            armed.task = eventLoop.scheduleTask(in: .nanoseconds(max((deadline - clock.now()).wholeNanoseconds, 0))) {
                timer.withLockedValue { $0 = ArmedTimer() }
                let actions = session.withLockedValue { session in
                    if let arrived = activity?.lastFrame { session.peerSent(at: clock.moment(arrived)) }
                    session.handleTimeout(now: clock.now())
                    return session.takeActions()
                }
                var leave: [EntityID] = []
                for action in actions {
                    switch action {
                    case .send(let message):
                        // A Ping. Not after a queued Error (the Error is the last frame); ahead of
                        // queued frames otherwise, which is harmless for a Ping.
                        if !outbox.isClosing { channel.writeAndFlush(ByteBuffer(bytes: message.payload()), promise: nil) }
                    case .close(let error): outbox.close(error)
                    case .unsubscribe(let courseID): leave.append(courseID)
                    case .ready, .subscribe, .push, .authenticate, .throttle: break  // only frames cause these
                    }
                }
                if !leave.isEmpty, let handle = handle() {
                    Task { for courseID in leave { await self.hub(for: courseID).unsubscribe(handle) } }
                }
                self.armTimer(session, timer: timer, clock: clock, channel: channel, activity: activity, outbox: outbox, handle: handle)
            }
        }
    }

    /// One connection of frame payloads, from any transport (TCP, or WebSocket through
    /// ``HTTPListener``), named `transport` in the access log; `tls`: whether its listener serves TLS.
    func serve(_ channel: NIOAsyncChannel<ByteBuffer, Never>, transport: String, tls: Bool) async {
        let remote = channel.channel.remoteAddress.map { "\($0)" } ?? "?"
        let record = NIOLockedValueBox(ConnectionRecord(transport: transport, remote: remote, tls: tls))
        var logger = logger
        logger[metadataKey: "peer"] = "\(remote)"
        let outbox = Outbox(capacity: configuration.outboxFrames) {
            self.state.withLockedValue { $0.slowConsumers += 1 }
            ServerMetrics.slowConsumerCuts.increment()
        }
        ServerMetrics.connections.increment()
        defer { ServerMetrics.connections.decrement() }
        let welcome = Welcome(serverID: configuration.serverID,
                              heartbeatIntervalMs: UInt32(configuration.heartbeatInterval.nanoseconds / 1_000_000),
                              maxPushesPerSecond: UInt32(clamping: configuration.limits.session.pushesPerSecond),
                              maxBytesPerSecond: UInt32(clamping: configuration.limits.session.bytesPerSecond))
        let clock = MomentClock()
        let activity = await PeerActivity.of(channel.channel)
        let session = SessionBox(ServerSession(welcome: welcome, limits: configuration.limits.session, now: clock.now()))
        let handleBox = NIOLockedValueBox<ConnectionHandle?>(nil)
        let address = channel.channel.remoteAddress?.ipAddress ?? "?"
        let (shuttingDown, addressCount) = state.withLockedValue { state in
            state.perAddress[address, default: 0] += 1
            return (state.shuttingDown, state.perAddress[address]!)
        }
        defer {
            state.withLockedValue { state in
                Self.release(address, from: &state.perAddress)
                if let user = record.withLockedValue({ $0.user }) { Self.release(user, from: &state.perUser) }
            }
        }
        if shuttingDown {
            outbox.close(ConnectionError(.shuttingDown, "the server is shutting down"))
        } else if addressCount > configuration.limits.connectionsPerAddress {
            record.withLockedValue { $0.refusal = .connectionsPerAddress }
            outbox.close(ConnectionError(.limitExceeded, "more than \(configuration.limits.connectionsPerAddress) connections from \(address)",
                                         retryAfterMs: Self.countLimitRetryMs))
        }
        do {
            try await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { [logger, closeTimeout = configuration.effectiveCloseTimeout] in
                        await Self.write(outbox, to: channel.channel, closeTimeout: closeTimeout, logger: logger, record: record)
                    }
                    let timer = NIOLockedValueBox(ArmedTimer())
                    let arm = { self.armTimer(session, timer: timer, clock: clock, channel: channel.channel, activity: activity, outbox: outbox,
                                              handle: { handleBox.withLockedValue { $0 } }) }
                    arm()
                    /// Hands one frame (or why it did not decode) to the session, as of when it arrived
                    /// (`arrived`, else now), and carries out its decisions.
                    func receive(_ input: Result<WireMessage, WireError>, bytes: Int = 0, arrived: ContinuousClock.Instant? = nil) async {
                        await perform(session.withLockedValue { session in
                            session.receive(input, bytes: bytes, now: arrived.map(clock.moment) ?? clock.now(), date: Date())
                            return session.takeActions()
                        })
                    }
                    func perform(_ actions: [ServerSession.Action]) async {
                        for action in actions {
                            let handle = handleBox.withLockedValue { $0 }
                            switch action {
                            case .ready(let clientID):
                                let connection = ConnectionHandle(clientID: clientID, outbox: outbox,
                                                                  maxInFlight: configuration.maxInFlightPushes)
                                handleBox.withLockedValue { $0 = connection }
                                state.withLockedValue { $0.connections[ObjectIdentifier(connection)] = connection }
                                logger[metadataKey: "client"] = "\(clientID)"
                                if tls {
                                    // A Hello came through: the TLS handshake is done.
                                    let version = await ConnectionRecord.tlsVersion(of: channel.channel)
                                    record.withLockedValue { $0.tls = version }
                                }
                                // The handshake set the token's expiry, maybe before the armed timer.
                                arm()
                            case .authenticate(let token):
                                // No frame is read until the outcome is in (the session needs it first).
                                let outcome = admit(await authority.verify(token, now: Date()), record: record)
                                await perform(session.withLockedValue { session in
                                    session.authenticated(outcome, now: clock.now(), date: Date())
                                    return session.takeActions()
                                })
                            case .send(let message):
                                outbox.send(message)
                            case .close(let error):
                                if error.code == .rateLimited, let user = record.withLockedValue({ $0.user }), let ms = error.retryAfterMs {
                                    penalize(user, for: .milliseconds(Int64(ms)))
                                }
                                outbox.close(error)
                            case .subscribe(let courseID, let sinceSeq):
                                record.withLockedValue { _ = $0.courses.insert(courseID) }
                                guard let handle else { break }
                                let hub = hub(for: courseID)
                                group.addTask { await hub.subscribe(handle, sinceSeq: sinceSeq) }
                            case .unsubscribe(let courseID):
                                guard let handle else { break }
                                await hub(for: courseID).unsubscribe(handle)
                            case .throttle(let until):
                                // Over the push rate: no frame is read until then (back-pressure).
                                session.withLockedValue { $0.readingPaused(true, now: clock.now()) }
                                let wait = until - clock.now()
                                if wait > .zero { try? await Task.sleep(for: wait) }
                                session.withLockedValue { $0.readingPaused(false, now: clock.now()) }
                            case .push(let batch):
                                record.withLockedValue { record in
                                    record.pushes += 1
                                    record.courses.insert(batch.courseID)
                                }
                                guard let handle else { break }
                                if !handle.inFlight.tryAcquire() {
                                    // Back-pressure: stop reading until an answer frees a slot.
                                    session.withLockedValue { $0.readingPaused(true, now: clock.now()) }
                                    await handle.inFlight.acquire()
                                    session.withLockedValue { $0.readingPaused(false, now: clock.now()) }
                                }
                                if await !hub(for: batch.courseID).push(batch, from: handle) {
                                    handle.inFlight.release()
                                }
                            }
                        }
                    }
                    do {
                        for try await payload in inbound {
                            record.withLockedValue { record in
                                record.framesIn += 1
                                record.bytesIn += payload.readableBytes
                            }
                            let arrived = activity?.takeArrival()
                            await receive(Result { () throws(WireError) in try WireMessage(payload: payload.readableBytesView, sentBy: .client) },
                                          bytes: payload.readableBytes, arrived: arrived)
                            if outbox.isClosing { break }
                        }
                    } catch let error as WireError {
                        await receive(.failure(error))
                    } catch {
                        logger.debug("connection read failed", metadata: ["error": "\(error)"])
                    }
                    // The peer is gone or told to go: the writer sends what is queued (up to a close).
                    if !outbox.isClosing { outbox.finish() }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
        let (actions, refusal) = session.withLockedValue { session in
            session.closed()
            return (session.takeActions(), session.refusal)
        }
        let closedWith = outbox.closeReason
        outbox.finish()
        let ended = record.withLockedValue { record in
            if let refusal { record.refusal = refusal }
            return record
        }
        if let refused = ended.refusal { ServerMetrics.refused(refused) }
        ended.log(to: self.logger, closedWith: closedWith)
        if let handle = handleBox.withLockedValue({ $0 }) {
            state.withLockedValue { $0.connections[ObjectIdentifier(handle)] = nil }
            for case .unsubscribe(let courseID) in actions { await hub(for: courseID).unsubscribe(handle) }
        }
    }
}

extension SyncServer {
    /// The wait a connection refused for a count limit is asked for: a connection must close first.
    static let countLimitRetryMs: UInt32 = 5_000

    /// One connection fewer under `key`; a count that reaches zero leaves the map.
    static func release(_ key: String, from counts: inout [String: Int]) {
        counts[key]! -= 1
        if counts[key] == 0 { counts[key] = nil }
    }

    /// A verified principal is admitted unless its user was cut for its rate a moment ago or holds
    /// as many connections as allowed; an admitted one is counted (its user in `record`, for the
    /// close), a refused one's limit noted there.
    func admit(_ outcome: Result<Principal, ConnectionError>, record: NIOLockedValueBox<ConnectionRecord>) -> Result<Principal, ConnectionError> {
        guard case .success(let principal) = outcome else { return outcome }
        let limit = configuration.limits.connectionsPerUser
        return state.withLockedValue { state in
            let now = NIODeadline.now()
            if let until = state.penalties[principal.user] {
                if until > now {
                    record.withLockedValue { $0.refusal = .rateCutPause }
                    let ms = UInt32(clamping: max((until - now).nanoseconds / 1_000_000, 1))
                    return .failure(ConnectionError(.rateLimited, "\(principal.user) was cut for its rate; reconnect in \(ms) ms",
                                                    retryAfterMs: ms))
                }
                state.penalties[principal.user] = nil
            }
            guard state.perUser[principal.user, default: 0] < limit else {
                record.withLockedValue { $0.refusal = .connectionsPerUser }
                return .failure(ConnectionError(.limitExceeded, "\(principal.user) already has \(limit) connections to this node",
                                                retryAfterMs: Self.countLimitRetryMs))
            }
            state.perUser[principal.user, default: 0] += 1
            record.withLockedValue { $0.user = principal.user }
            return outcome
        }
    }

    /// Refuses `user`'s connections for `wait` (bounded: expired entries go when a new one comes).
    func penalize(_ user: String, for wait: TimeAmount) {
        state.withLockedValue { state in
            let now = NIODeadline.now()
            if state.penalties.count >= 10_000 { state.penalties = state.penalties.filter { $0.value > now } }
            state.penalties[user] = now + wait
        }
    }
}

typealias SessionBox = NIOLockedValueBox<ServerSession>

/// The first handler of a connection: once told to (``DrainInput``), it reads and drops whatever
/// the peer still sends, so that a connection closing after its `Error` is not reset by unread input.
final class LingeringClose: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct DrainInput: Sendable {}

    private var draining = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !draining else { return }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard draining else { return context.fireChannelReadComplete() }
        context.read()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is DrainInput else { return context.triggerUserOutboundEvent(event, promise: promise) }
        draining = true
        context.read()
        promise?.succeed(())
    }
}
