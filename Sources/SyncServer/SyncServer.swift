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
    /// How long an entry another node relayed stays without being mentioned again; each node
    /// mentions its own every ``presenceRefresh`` (protocol §14).
    public var presenceTTL: Duration = .seconds(30)
    public var presenceRefresh: Duration = .seconds(10)

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
        /// Connections started and not yet ended (any transport), and who waits for none.
        var liveConnections: [ObjectIdentifier: any Channel] = [:]
        var endWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = NIOLockedValueBox(State())
    /// Connections per address and per user, rate-cut pauses, and the HTTP batches' rate.
    let admission: Admission
    /// This node's name in presence relays: unique per process, even if two nodes share a name.
    let presenceNode: String
    /// Presence relays for the other nodes, bounded (the oldest are dropped: the next refresh
    /// repairs what they said). ``CommitListener`` publishes them through the store.
    let presenceRelays: AsyncStream<PresenceRelay>
    private let presenceOutlet: AsyncStream<PresenceRelay>.Continuation

    public init(store: any SyncStore, authority: TokenAuthority, configuration: ServerConfiguration = .init(),
                logger: Logger = Logger(label: "coursesync.server"), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        ServerMetrics.register()
        self.store = store
        self.authority = authority
        self.configuration = configuration
        self.logger = logger
        self.group = group
        admission = Admission(limits: configuration.limits)
        presenceNode = "\(configuration.serverID)/\(UUID().uuidString.prefix(8))"
        (presenceRelays, presenceOutlet) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1_024))
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
        // Each connection is served by its pipeline and by tasks only while it has work
        // (``ServerConnection``): no task waits per connection.
        let listener: any Channel
        do {
            listener = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                // Reads start small and grow with what arrives: the channel keeps its read buffer
                // between reads, and an idle connection's should be small.
                .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536))
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try self.configure(channel.pipeline.syncOperations)
                        try self.attach(channel, transport: "tcp", tls: self.configuration.security.isTLS)
                    }
                }
                .bind(host: configuration.host, port: configuration.port).get()
        } catch {
            let waiters = state.withLockedValue { state in
                defer { state.portWaiters = [] }
                return state.portWaiters
            }
            waiters.forEach { $0.resume(throwing: error) }
            throw error
        }
        let port = listener.localAddress?.port ?? configuration.port
        let waiters = state.withLockedValue { state in
            state.port = port
            state.listener = listener
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
                self?.refreshGauges()
            }
        }
        // Presence: relayed entries expire and this node's are relayed again, every refresh.
        let presenceTicker = Task { [weak self, refresh = configuration.presenceRefresh] in
            while !Task.isCancelled {
                try? await Task.sleep(for: refresh)
                guard let self else { return }
                for hub in self.state.withLockedValue({ Array($0.hubs.values) }) { await hub.presenceTick() }
            }
        }
        defer {
            sweeper.cancel()
            presenceTicker.cancel()
        }
        await withGracefulShutdownHandler {
            // Until the listener closes (shutdown, or cancellation), then until every connection has ended.
            await withTaskCancellationHandler {
                try? await listener.closeFuture.get()
            } onCancel: {
                listener.close(promise: nil)
                self.closeAllConnections()
            }
            await self.connectionsEnded()
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
            let outlet = presenceOutlet
            let hub = state.hubs[courseID] ?? CourseHub(courseID: courseID, store: store, logger: logger,
                                                        maxGroupBatches: configuration.maxGroupBatches, catchUpChunk: configuration.catchUpChunk,
                                                        storeCallTimeout: configuration.storeCallTimeout,
                                                        presenceNode: presenceNode, presenceTTL: configuration.presenceTTL,
                                                        relay: { outlet.yield($0) })
            if state.hubs.updateValue(hub, forKey: courseID) == nil { ServerMetrics.courseHubs.increment() }
            // Handed out just now: not evicted for at least `hubIdleTimeout`, by which time what it
            // was handed out for (a subscription, a push) has made it busy.
            hub.residency.withLockedValue { $0.handedOut = .now }
            return hub
        }
    }

    /// Course hubs in memory on this node.
    public var residentHubs: Int { state.withLockedValue { $0.hubs.count } }

    /// Sets the store's cache gauges (`coursesync_store_cached_courses`, `…_cache_bytes`) to what it
    /// holds now: before each export of the metrics, and at each sweep of idle hubs.
    public func refreshGauges() {
        let usage = store.cacheUsage
        ServerMetrics.cachedCourses.set(Double(usage.courses))
        ServerMetrics.cacheBytes.set(Double(usage.bytes))
    }

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

    /// Another node's presence relay: told to the course's hub, if this node hosts the course
    /// (otherwise nobody here watches it; a hub made later asks the other nodes).
    package func notePresence(_ relay: PresenceRelay) async {
        guard relay.node != presenceNode, let hub = state.withLockedValue({ $0.hubs[relay.courseID] }) else { return }
        await hub.relayed(relay)
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

    // MARK: - Connections

    /// Serves `channel` as a connection of frame payloads, from any transport (TCP, or WebSocket
    /// through ``HTTPListener``), named `transport` in the access log; `tls`: whether its listener
    /// serves TLS. On the channel's event loop, with its pipeline ending in the framing and
    /// ``PeerActivity/Handler``.
    func attach(_ channel: any Channel, transport: String, tls: Bool) throws {
        let activity = try? channel.pipeline.syncOperations.handler(type: PeerActivity.Handler.self).activity
        let key = ObjectIdentifier(channel)
        let connection = ServerConnection(server: self, channel: channel, transport: transport, tls: tls, activity: activity,
                                          ended: { [weak self] in self?.connectionEnded(key) })
        try channel.pipeline.syncOperations.addHandler(ServerConnection.Handler(connection))
        state.withLockedValue { $0.liveConnections[key] = channel }
        connection.start()
    }

    private func connectionEnded(_ key: ObjectIdentifier) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.liveConnections[key] = nil
            guard state.liveConnections.isEmpty else { return [] }
            defer { state.endWaiters = [] }
            return state.endWaiters
        }
        waiters.forEach { $0.resume() }
    }

    /// Returns once no connection is open.
    private func connectionsEnded() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLockedValue { state in
                if state.liveConnections.isEmpty { return true }
                state.endWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Cancelled: every connection is closed at once.
    private func closeAllConnections() {
        for channel in state.withLockedValue({ Array($0.liveConnections.values) }) { channel.close(promise: nil) }
    }

    var isShuttingDown: Bool { state.withLockedValue { $0.shuttingDown } }

    /// A connection dropped for falling too far behind.
    func countSlowConsumer() {
        state.withLockedValue { $0.slowConsumers += 1 }
        ServerMetrics.slowConsumerCuts.increment()
    }

    /// A connection past its handshake, until ``forget(_:)``: shutdown closes it.
    func remember(_ connection: ConnectionHandle) {
        state.withLockedValue { $0.connections[ObjectIdentifier(connection)] = connection }
    }

    func forget(_ connection: ConnectionHandle) {
        state.withLockedValue { $0.connections[ObjectIdentifier(connection)] = nil }
    }
}
