import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SyncModel
import SyncStorage
import SyncTransport
import SyncWire

/// The driver of one connection's ``ServerSession`` (which decides), for any transport that
/// carries frame payloads (TCP, or WebSocket through ``HTTPListener``): it hands frames to the
/// session, carries out its actions (the handshake's token check and admission, subscriptions and
/// pushes on the course hubs, the push rate's back-pressure), keeps the connection's one timer,
/// drains the outbox to the socket and closes it. Made and started by ``SyncServer/attach(_:transport:tls:)``.
///
/// **An idle connection runs no task.** Its last handler (``Handler``) puts each frame in an inbox
/// on the event loop; a task is started to work through the inbox when a frame arrives to an empty
/// one, and ends when it is empty again (a task keeps every stack slab it ever needed for as long
/// as it lives, so a task per connection would cost kilobytes while it waits). Frames are worked
/// through one at a time, in order; while the task waits (a token check, the push rate, a full
/// in-flight window), frames wait in the inbox, and past ``inboxHighWater`` the channel stops
/// reading (TCP back-pressure). The outbox is written by the event loop itself (``writeQueued()``),
/// woken by the outbox when frames arrive, and by the channel when it becomes writable again.
final class ServerConnection: Sendable {
    private let server: SyncServer
    private let channel: any Channel
    private let outbox: Outbox
    private let session: NIOLockedValueBox<ServerSession>
    private let record: NIOLockedValueBox<ConnectionRecord>
    private let clock = MomentClock()
    private let activity: PeerActivity?
    private let tls: Bool
    /// The remote IP address, for the per-address count.
    private let address: String
    /// The course hubs' view of the connection, from the handshake on.
    private let handle = NIOLockedValueBox<ConnectionHandle?>(nil)
    private let timer = NIOLockedValueBox(ArmedTimer())
    private let logger: NIOLockedValueBox<Logger>
    private let inbox = NIOLockedValueBox(Inbox())
    /// Subscriptions being served (their catch-up may wait for the outbox): the connection's end
    /// waits for them before leaving the hubs.
    private let subscribing = NIOLockedValueBox<[Int: Task<Void, Never>]>([:])

    /// The one timer of a connection: when it fires, and its task.
    struct ArmedTimer {
        var deadline: Moment?
        var task: Scheduled<Void>?
    }

    /// What the connection has read and not yet handed to the session.
    private struct Inbox {
        enum Input {
            case frame(ByteBuffer, arrived: ContinuousClock.Instant?)
            case failure(WireError)
            /// The channel closed (the peer left, or the connection was closed): the last input.
            case end
        }

        var queue = CircularBuffer<Input>()
        /// A task is working through the queue.
        var working = false
        /// Reading is stopped (the queue reached the high-water mark).
        var readingStopped = false
        /// Frames are no longer taken (the server is closing the connection, or the peer left).
        var refusing = false
        var ended = false
    }

    /// At most this many queued frames go to the socket together: enough for a group commit's
    /// diffs, few enough that what sits in the channel's buffer beside the bounded outbox stays small.
    static var framesPerWrite: Int { 64 }

    /// Frames read and not yet handed to the session past which the channel stops reading, and
    /// below which it reads again.
    static var inboxHighWater: Int { 16 }
    static var inboxLowWater: Int { 4 }

    /// Called once the connection has ended (logged, its courses left).
    private let onEnd: @Sendable () -> Void

    /// `activity`: the channel's ``PeerActivity`` (its handler's); `ended`: called once the
    /// connection has ended.
    init(server: SyncServer, channel: any Channel, transport: String, tls: Bool, activity: PeerActivity?,
         ended: @escaping @Sendable () -> Void) {
        let configuration = server.configuration
        let remote = channel.remoteAddress.map { "\($0)" } ?? "?"
        var logger = server.logger
        logger[metadataKey: "peer"] = "\(remote)"
        self.server = server
        self.channel = channel
        self.tls = tls
        self.logger = NIOLockedValueBox(logger)
        record = NIOLockedValueBox(ConnectionRecord(transport: transport, remote: remote, tls: tls))
        address = channel.remoteAddress?.ipAddress ?? "?"
        outbox = Outbox(capacity: configuration.outboxFrames) { server.countSlowConsumer() }
        let welcome = Welcome(serverID: configuration.serverID,
                              heartbeatIntervalMs: UInt32(configuration.heartbeatInterval.nanoseconds / 1_000_000),
                              maxPushesPerSecond: UInt32(clamping: configuration.limits.session.pushesPerSecond),
                              maxBytesPerSecond: UInt32(clamping: configuration.limits.session.bytesPerSecond))
        session = NIOLockedValueBox(ServerSession(welcome: welcome, limits: configuration.limits.session, now: clock.now()))
        self.activity = activity
        onEnd = ended
    }

    /// The pipeline's last handler: frames into the connection's inbox, the end of input, and
    /// the socket's writability.
    final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let connection: ServerConnection

        init(_ connection: ServerConnection) {
            self.connection = connection
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            // PeerActivity's handler, just before this one, marked this frame's arrival.
            connection.arrived(.frame(unwrapInboundIn(data), arrived: connection.activity?.lastFrame))
        }

        /// A frame did not decode: what the decoder says after that (it drops later bytes) is not news.
        private var failed = false

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if failed { return }
            if let error = error as? WireError {
                failed = true
                connection.arrived(.failure(error))
            } else {
                connection.logger.withLockedValue { $0 }.debug("connection read failed", metadata: ["error": "\(error)"])
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            connection.arrived(.end)
            context.fireChannelInactive()
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            if context.channel.isWritable { connection.writeQueued() }
            context.fireChannelWritabilityChanged()
        }
    }

    /// Starts serving the channel, on its event loop, once ``Handler`` is its last handler:
    /// admission, the outbox's writer, the timer. The connection ends by itself when the channel
    /// closes.
    func start() {
        ServerMetrics.connections.increment()
        if server.isShuttingDown {
            outbox.close(ConnectionError(.shuttingDown, "the server is shutting down"))
        }
        // Counted even when refused: the release at the end ends every connection.
        if let (error, refusal) = server.admission.open(from: address), !outbox.isClosing {
            record.withLockedValue { $0.refusal = refusal }
            outbox.close(error)
        }
        outbox.attach { [channel] in channel.eventLoop.execute { self.writeQueued() } }
        armTimer()
    }

    // MARK: - Reading

    /// On the event loop: an input for the session, worked through by a task started if none is.
    private func arrived(_ input: Inbox.Input) {
        let (accepted, start, stopReading) = inbox.withLockedValue { inbox -> (Bool, Bool, Bool) in
            if case .end = input {
                guard !inbox.ended else { return (false, false, false) }
                inbox.ended = true
            } else if inbox.refusing || inbox.ended {
                return (false, false, false)
            }
            inbox.queue.append(input)
            let stop = !inbox.readingStopped && inbox.queue.count >= Self.inboxHighWater
            if stop { inbox.readingStopped = true }
            defer { inbox.working = true }
            return (true, !inbox.working, stop)
        }
        if accepted, case .frame(let payload, _) = input {
            record.withLockedValue { record in
                record.framesIn += 1
                record.bytesIn += payload.readableBytes
            }
        }
        if stopReading { _ = channel.setOption(ChannelOptions.autoRead, value: false) }
        if start { Task { await self.work() } }
    }

    /// Hands the inbox's inputs to the session one by one, in order, until it is empty.
    private func work() async {
        while true {
            let (next, resumeReading) = inbox.withLockedValue { inbox -> (Inbox.Input?, Bool) in
                guard let input = inbox.queue.popFirst() else {
                    inbox.working = false
                    return (nil, false)
                }
                let resume = inbox.readingStopped && inbox.queue.count <= Self.inboxLowWater
                if resume { inbox.readingStopped = false }
                return (input, resume)
            }
            if resumeReading { _ = channel.setOption(ChannelOptions.autoRead, value: true) }
            guard let next else { return }
            switch next {
            case .frame(let payload, let arrived):
                await receive(Result { () throws(WireError) in try WireMessage(payload: payload.readableBytesView, sentBy: .client) },
                              bytes: payload.readableBytes, arrived: arrived)
                if outbox.isClosing { refuseFrames() }
            case .failure(let error):
                await receive(.failure(error))
                refuseFrames()
            case .end:
                await ended()
                return
            }
        }
    }

    /// Later frames are dropped (the connection is closing): the end still comes.
    private func refuseFrames() {
        inbox.withLockedValue { inbox in
            inbox.refusing = true
            inbox.queue.removeAll { if case .end = $0 { false } else { true } }
        }
    }

    /// After the close: the access-log line, the refusal metric, and leaving the hubs.
    private func ended() async {
        let (actions, refusal) = session.withLockedValue { session in
            session.closed()
            return (session.takeActions(), session.refusal)
        }
        timer.withLockedValue { armed in
            armed.task?.cancel()
            armed = ArmedTimer()
        }
        let closedWith = outbox.closeReason
        outbox.finish()
        let ended = record.withLockedValue { record in
            if let refusal { record.refusal = refusal }
            return record
        }
        if let refused = ended.refusal { ServerMetrics.refused(refused) }
        ended.log(to: server.logger, closedWith: closedWith)
        for task in subscribing.withLockedValue({ Array($0.values) }) { await task.value }
        if let handle = handle.withLockedValue({ $0 }) {
            server.forget(handle)
            for case .unsubscribe(let courseID) in actions { await server.hub(for: courseID).unsubscribe(handle) }
        }
        server.admission.release(address: address, user: ended.user)
        ServerMetrics.connections.decrement()
        onEnd()
    }

    /// Hands one frame (or why it did not decode) to the session, as of when it arrived
    /// (`arrived`, else now), and carries out its decisions.
    private func receive(_ input: Result<WireMessage, WireError>, bytes: Int = 0, arrived: ContinuousClock.Instant? = nil) async {
        await perform(session.withLockedValue { session in
            session.receive(input, bytes: bytes, now: arrived.map(clock.moment) ?? clock.now(), date: Date())
            return session.takeActions()
        })
    }

    /// Carries out the session's actions in order (an authentication's outcome brings more, which
    /// follow at once). Each step that waits is a small function of its own, so that the task
    /// working through a busy connection's inbox keeps a small stack.
    private func perform(_ actions: [ServerSession.Action]) async {
        var queue = actions[...]
        while let action = queue.popFirst() {
            switch action {
            case .ready(let clientID):
                await ready(clientID)
            case .authenticate(let token):
                // No frame is read until the outcome is in (the session needs it first).
                queue = await authenticate(token)[...] + queue
            case .send(let message):
                outbox.send(message)
            case .close(let error):
                close(error)
            case .subscribe(let courseID, let sinceSeq, let presence):
                record.withLockedValue { _ = $0.courses.insert(courseID) }
                guard let handle = handle.withLockedValue({ $0 }) else { break }
                let hub = server.hub(for: courseID)
                subscribing.withLockedValue { tasks in
                    let key = (tasks.keys.max() ?? 0) + 1
                    tasks[key] = Task {
                        await hub.subscribe(handle, sinceSeq: sinceSeq, presence: presence)
                        _ = self.subscribing.withLockedValue { $0.removeValue(forKey: key) }
                    }
                }
            case .setPresence(let courseID, let peer):
                guard let handle = handle.withLockedValue({ $0 }) else { break }
                await server.hub(for: courseID).setPresence(peer, from: handle)
            case .unsubscribe(let courseID):
                await unsubscribe(courseID)
            case .throttle(let until):
                await throttle(until: until)
            case .push(let batch):
                await push(batch)
            }
        }
    }

    private func ready(_ clientID: ClientID) async {
        let connection = ConnectionHandle(clientID: clientID, outbox: outbox, maxInFlight: server.configuration.maxInFlightPushes)
        handle.withLockedValue { $0 = connection }
        server.remember(connection)
        logger.withLockedValue { $0[metadataKey: "client"] = "\(clientID)" }
        if tls {
            // A Hello came through: the TLS handshake is done.
            let version = await ConnectionRecord.tlsVersion(of: channel)
            record.withLockedValue { $0.tls = version }
        }
        // The handshake set the token's expiry, maybe before the armed timer.
        armTimer()
    }

    /// The token's check, through the node's admission, and what the session does with the outcome.
    private func authenticate(_ token: String) async -> [ServerSession.Action] {
        // Verified in a child task: the check's deep async frames live in the child's stack and go
        // with it.
        let authority = server.authority
        let verified = await withTaskGroup(of: Result<Principal, ConnectionError>.self) { verifying in
            verifying.addTask { await authority.verify(token, now: Date()) }
            return await verifying.next()!
        }
        let outcome = admit(verified)
        return session.withLockedValue { session in
            session.authenticated(outcome, now: clock.now(), date: Date())
            return session.takeActions()
        }
    }

    private func close(_ error: ConnectionError) {
        if error.code == .rateLimited, let user = record.withLockedValue({ $0.user }), let ms = error.retryAfterMs {
            server.admission.penalize(user, for: .milliseconds(Int64(ms)))
        }
        outbox.close(error)
    }

    private func unsubscribe(_ courseID: EntityID) async {
        guard let handle = handle.withLockedValue({ $0 }) else { return }
        await server.hub(for: courseID).unsubscribe(handle)
    }

    /// Over the push rate: no frame is read until `until` (back-pressure).
    private func throttle(until: Moment) async {
        session.withLockedValue { $0.readingPaused(true, now: clock.now()) }
        let wait = until - clock.now()
        if wait > .zero { try? await Task.sleep(for: wait) }
        session.withLockedValue { $0.readingPaused(false, now: clock.now()) }
    }

    private func push(_ batch: Batch) async {
        record.withLockedValue { record in
            record.pushes += 1
            record.courses.insert(batch.courseID)
        }
        guard let handle = handle.withLockedValue({ $0 }) else { return }
        if !handle.inFlight.tryAcquire() {
            // Back-pressure: stop reading until an answer frees a slot.
            session.withLockedValue { $0.readingPaused(true, now: clock.now()) }
            await handle.inFlight.acquire()
            session.withLockedValue { $0.readingPaused(false, now: clock.now()) }
        }
        if await !server.hub(for: batch.courseID).push(batch, from: handle) {
            handle.inFlight.release()
        }
    }

    /// A verified principal through the node's ``Admission`` (its user noted for the access log
    /// and the release), or why it is refused.
    private func admit(_ outcome: Result<Principal, ConnectionError>) -> Result<Principal, ConnectionError> {
        guard case .success(let principal) = outcome else { return outcome }
        if let (error, refusal) = server.admission.admit(principal) {
            record.withLockedValue { $0.refusal = refusal }
            return .failure(error)
        }
        record.withLockedValue { $0.user = principal.user }
        return outcome
    }

    // MARK: - Writing and closing

    /// The writer, on the event loop: puts what the outbox holds on the socket, up to
    /// ``framesPerWrite`` frames per flush, while the socket is writable (the channel's
    /// writability calls it again); so the outbox fills up behind a slow reader and overflows (see
    /// ``Outbox``). A queued close is taken even while the socket is not writable: the `Error`
    /// that ends an outbox is the last frame written.
    private func writeQueued() {
        let channel = channel
        while channel.isWritable || outbox.isClosing {
            guard let items = outbox.take(upTo: Self.framesPerWrite), !items.isEmpty else { return }
            var frames = 0, bytes = 0
            var closing: ConnectionError?
            for item in items {
                switch item {
                case .frame(let payload):
                    frames += 1
                    bytes += payload.readableBytes
                    channel.write(payload, promise: nil)
                case .close(let error): closing = error
                }
            }
            if frames > 0 {
                channel.flush()
                record.withLockedValue { record in
                    record.framesOut += frames
                    record.bytesOut += bytes
                }
            }
            if let closing {
                logger.withLockedValue { $0 }.debug("closing connection", metadata: ["code": "\(closing.code)", "reason": "\(closing.message)"])
                Self.close(channel, after: closing, timeout: server.configuration.effectiveCloseTimeout)
                return
            }
        }
    }

    /// Writes `Error` as the last frame, then closes gracefully: FIN after the Error, and what the
    /// peer still sends is read and dropped until it closes its side, so that unread input does not
    /// turn the close into a reset (which can destroy the Error before the peer reads it, e.g.
    /// after an oversized frame arrived with its body). `timeout` bounds the whole close.
    private static func close(_ channel: any Channel, after error: ConnectionError, timeout: TimeAmount) {
        let deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in deadline.cancel() }
        channel.writeAndFlush(ByteBuffer(bytes: WireMessage.error(error).payload())).flatMap {
            channel.triggerUserOutboundEvent(LingeringClose.DrainInput())
        }.flatMap {
            channel.close(mode: .output)
        }.whenFailure { _ in
            channel.close(promise: nil)
        }
    }

    // MARK: - The timer

    /// Schedules the session's next deadline on the connection's event loop (a scheduled task
    /// costs far less than a sleeping Swift task per idle connection), unless a timer that fires
    /// no later is already armed (a later deadline is found when that one fires: the heartbeat
    /// moves its deadline with every frame, and re-arming per frame would cost more). An earlier
    /// one (the token's expiry, set by the handshake) replaces the armed timer. When it fires, the
    /// session decides, the timer carries that out and arms the next; once the session is closed
    /// it has no deadline and the chain ends.
    ///
    /// The timer does not depend on the connection's tasks: the peer's last frame is read from
    /// `activity` (marked as the event loop decoded it) and Pings go straight to the channel, so a
    /// server whose tasks are held up neither misses the peer's Pongs nor keeps its own Pings
    /// queued, and does not close a peer that is answering.
    private func armTimer() {
        guard let deadline = session.withLockedValue({ $0.nextDeadline }) else { return }
        timer.withLockedValue { armed in
            if let current = armed.deadline, current <= deadline { return }
            armed.task?.cancel()
            armed.deadline = deadline
            armed.task = channel.eventLoop.scheduleTask(in: .nanoseconds(max((deadline - clock.now()).wholeNanoseconds, 0))) {
                self.timerFired()
            }
        }
    }

    private func timerFired() {
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
            case .setPresence(let courseID, let peer):
                // Held back by the presence rate, due now.
                if let handle = handle.withLockedValue({ $0 }) {
                    let hub = server.hub(for: courseID)
                    Task { await hub.setPresence(peer, from: handle) }
                }
            case .ready, .subscribe, .push, .authenticate, .throttle: break  // only frames cause these
            }
        }
        if !leave.isEmpty, let handle = handle.withLockedValue({ $0 }) {
            let server = server
            Task { for courseID in leave { await server.hub(for: courseID).unsubscribe(handle) } }
        }
        armTimer()
    }
}

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
