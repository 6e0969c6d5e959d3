import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import SyncModel
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
    }

    private let state = NIOLockedValueBox(State())

    public init(store: any SyncStore, authority: TokenAuthority, configuration: ServerConfiguration = .init(),
                logger: Logger = Logger(label: "coursesync.server"), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
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

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await listener.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection) }
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
        try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: Limits.maxClientFrameBytes,
                                                                  firstFrameMaxBytes: Limits.maxHandshakeFrameBytes)))
        try pipeline.addHandler(MessageToByteHandler(FrameEncoder(maxFrameBytes: Limits.maxServerFrameBytes)))
        let interval = configuration.heartbeatInterval
        try pipeline.addHandler(IdleStateHandler(readTimeout: interval * 3, writeTimeout: interval))
        try pipeline.addHandler(HeartbeatHandler(idleTimeout: interval * 3))
    }

    private func hub(for courseID: EntityID) -> CourseHub {
        state.withLockedValue { state in
            if let hub = state.hubs[courseID] { return hub }
            let hub = CourseHub(courseID: courseID, store: store, logger: logger,
                                maxGroupBatches: configuration.maxGroupBatches, catchUpChunk: configuration.catchUpChunk)
            state.hubs[courseID] = hub
            return hub
        }
    }

    /// Tells this node's subscribers of `courseID` that another node committed up to `seq`.
    public func noteCommitted(courseID: EntityID, upTo seq: CourseSeq) async {
        guard let hub = state.withLockedValue({ $0.hubs[courseID] }) else { return }
        await hub.noteCommitted(upTo: seq)
    }

    // MARK: - One connection

    /// The writer: drains the outbox to the socket. While the socket is not writable it waits for
    /// the last write, so the outbox fills up behind a slow reader (and overflows, see ``Outbox``).
    /// The `Error` frame before a close gets `closeTimeout` to reach the peer.
    private static func write(_ outbox: Outbox, to channel: any Channel, closeTimeout: TimeAmount, logger: Logger) async {
        while let item = await outbox.next() {
            switch item {
            case .frame(let payload):
                let written = channel.eventLoop.makePromise(of: Void.self)
                channel.writeAndFlush(payload, promise: written)
                if !channel.isWritable {
                    do { try await written.futureResult.get() } catch { return }
                }
            case .close(let error):
                logger.debug("closing connection", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
                let deadline = channel.eventLoop.scheduleTask(in: closeTimeout) { channel.close(promise: nil) }
                let written = channel.eventLoop.makePromise(of: Void.self)
                channel.writeAndFlush(ByteBuffer(bytes: WireMessage.error(error).payload()), promise: written)
                try? await written.futureResult.get()
                deadline.cancel()
                try? await channel.close()
                return
            }
        }
    }

    private func serve(_ channel: NIOAsyncChannel<ByteBuffer, Never>) async {
        let remote = channel.channel.remoteAddress.map { "\($0)" } ?? "?"
        var logger = logger
        logger[metadataKey: "peer"] = "\(remote)"
        let outbox = Outbox(capacity: configuration.outboxFrames) { [configuration, rawChannel = channel.channel] in
            // The writer may be stuck behind a peer that reads nothing: give the SLOW_CONSUMER error
            // the close timeout to get through, then cut the connection.
            self.state.withLockedValue { $0.slowConsumers += 1 }
            rawChannel.eventLoop.scheduleTask(in: configuration.heartbeatInterval) { rawChannel.close(promise: nil) }
        }
        let welcome = Welcome(serverID: configuration.serverID,
                              heartbeatIntervalMs: UInt32(configuration.heartbeatInterval.nanoseconds / 1_000_000))
        var session = ServerSession(authority: authority, welcome: welcome)
        var handle: ConnectionHandle?
        var subscribed = Set<EntityID>()
        if state.withLockedValue({ $0.shuttingDown }) {
            outbox.close(ConnectionError(.shuttingDown, "the server is shutting down"))
        }
        do {
            try await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { [logger, closeTimeout = configuration.heartbeatInterval] in
                        await Self.write(outbox, to: channel.channel, closeTimeout: closeTimeout, logger: logger)
                    }
                    do {
                        for try await payload in inbound {
                            let input = Result { () throws(WireError) in try WireMessage(payload: payload.readableBytesView) }
                            for action in session.receive(input, now: Date()) {
                                switch action {
                                case .send(let message):
                                    if case .welcome = message, let clientID = session.clientID {
                                        let connection = ConnectionHandle(clientID: clientID, outbox: outbox,
                                                                          maxInFlight: configuration.maxInFlightPushes)
                                        handle = connection
                                        state.withLockedValue { $0.connections[ObjectIdentifier(connection)] = connection }
                                        logger[metadataKey: "client"] = "\(clientID)"
                                    }
                                    outbox.send(message)
                                case .close(let error):
                                    outbox.close(error)
                                case .subscribe(let courseID, let sinceSeq):
                                    guard let handle else { break }
                                    subscribed.insert(courseID)
                                    let hub = hub(for: courseID)
                                    group.addTask { await hub.subscribe(handle, sinceSeq: sinceSeq) }
                                case .unsubscribe(let courseID):
                                    guard let handle else { break }
                                    subscribed.remove(courseID)
                                    await hub(for: courseID).unsubscribe(handle)
                                case .push(let batch):
                                    guard let handle else { break }
                                    await handle.inFlight.acquire()
                                    if await !hub(for: batch.courseID).push(batch, from: handle) {
                                        handle.inFlight.release()
                                    }
                                }
                            }
                            if outbox.isClosing { break }
                        }
                    } catch let error as WireError {
                        outbox.close(ConnectionError(error.code, error.description))
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
        session.closed()
        outbox.finish()
        if let handle {
            state.withLockedValue { $0.connections[ObjectIdentifier(handle)] = nil }
            for courseID in subscribed { await hub(for: courseID).unsubscribe(handle) }
        }
    }
}

/// Sends a `Ping` when the connection was quiet for a heartbeat interval, and closes it with
/// `IDLE_TIMEOUT` when the peer was silent for three.
final class HeartbeatHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let idleTimeout: TimeAmount

    init(idleTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch idle {
        case .write:
            let ping = WireMessage.ping(nonce: UInt64.random(in: 1 ... .max)).payload()
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(bytes: ping)), promise: nil)
        case .read:
            let error = ConnectionError(.idleTimeout, "nothing received for \(idleTimeout.nanoseconds / 1_000_000_000) s")
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(bytes: WireMessage.error(error).payload())), promise: written)
            written.futureResult.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
        case .all:
            break
        }
    }
}
