import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import SyncModel
import SyncServer
import SyncTransport
import SyncWire

/// A raw protocol client for tests: it writes frames (or any bytes) and records every message the
/// server sends, in order. Waiting has a generous deadline that only guards against hangs.
final class TestClient: Sendable {
    let channel: any Channel
    let clientID: ClientID
    private let recorder: Recorder
    /// Over TCP a message is written as a frame (length prefix and payload); over WebSocket as
    /// the payload alone (the adapter makes it one WebSocket message).
    let framed: Bool

    static let deadline: Duration = .seconds(120)

    struct Timeout: Error, CustomStringConvertible {
        var description: String
    }

    /// - Parameter answerPings: answer each `Ping` with a `Pong` (what the protocol asks of every
    ///   client), and send nothing else unasked.
    static func connect(port: Int, clientID: ClientID = ClientID(.fresh()), receiveBuffer: Int32? = nil,
                        answerPings: Bool = false, security: TransportSecurity = .plaintext, host: String = "127.0.0.1") async throws -> TestClient {
        let recorder = Recorder(answerPings: answerPings)
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        if let receiveBuffer { bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer)) }
        let channel = try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try ProtocolPipeline.configureClient(channel.pipeline.syncOperations, security: security, host: host, framesOutbound: false)
                    try channel.pipeline.syncOperations.addHandler(recorder)
                }
            }
            .connect(host: host, port: port).get()
        return TestClient(channel: channel, clientID: clientID, recorder: recorder, framed: true)
    }

    /// A client over WebSocket (an HTTP/1.1 upgrade at `path` on an ``HTTPListener``), speaking
    /// `form`: binary Envelopes, or their JSON mapping as text.
    static func connectWebSocket(port: Int, form: WebSocketProtocol, clientID: ClientID = ClientID(.fresh()), answerPings: Bool = false,
                                 path: String = WebSocketProtocol.path, host: String = "127.0.0.1") async throws -> TestClient {
        let recorder = Recorder(answerPings: answerPings, framed: false)
        let upgraded = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<Bool>(maxFrameSize: Limits.maxServerFrameBytes) { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(NIOWebSocketFrameAggregator(
                                minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16, maxAccumulatedFrameSize: Limits.maxServerFrameBytes))
                            try channel.pipeline.syncOperations.addHandler(WebSocketPayloadAdapter(form: form, isClient: true))
                            try channel.pipeline.syncOperations.addHandler(recorder)
                            return true
                        }
                    }
                    var headers = HTTPHeaders([("Host", "\(host):\(port)"), ("Sec-WebSocket-Protocol", form.rawValue)])
                    headers.add(name: "Content-Length", value: "0")
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                    let configuration = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: .init(
                        upgradeRequestHead: head, upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in channel.eventLoop.makeSucceededFuture(false) }))
                    return (channel, try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: configuration))
                }
            }
        guard try await upgraded.1.get() else {
            try? await upgraded.0.close()
            throw Timeout(description: "the server did not upgrade to WebSocket at \(path)")
        }
        return TestClient(channel: upgraded.0, clientID: clientID, recorder: recorder, framed: false)
    }

    private init(channel: any Channel, clientID: ClientID, recorder: Recorder, framed: Bool) {
        self.channel = channel
        self.clientID = clientID
        self.recorder = recorder
        self.framed = framed
    }

    // MARK: Sending

    func send(_ message: WireMessage) async throws {
        try await sendRaw(framed ? message.frame() : message.payload())
    }

    /// Writes one WebSocket text message as it is, past the client's adapter (which would refuse
    /// anything but a valid Envelope): what a broken browser client could send.
    func sendRawText(_ text: String) async throws {
        let channel = channel
        try await channel.eventLoop.submit {
            let context = try channel.pipeline.syncOperations.context(handlerType: WebSocketPayloadAdapter.self)
            let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: channel.allocator.buffer(string: text))
            context.writeAndFlush(NIOAny(frame), promise: nil)
        }.get()
    }

    /// Writes the header of a masked WebSocket frame (`first`: FIN and opcode; binary by default)
    /// that announces `length` bytes, and `payload` of them (zeros) or none (straight to the
    /// socket, past the frame encoder): a peer must judge the frame by its header.
    func sendWebSocketHeader(_ first: UInt8 = 0x82, length: UInt64, payload: Int = 0) async throws {
        let channel = channel
        try await channel.eventLoop.submit {
            let context = try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
            var header = channel.allocator.buffer(capacity: 14 + payload)
            header.writeInteger(first)
            header.writeInteger(UInt8(0x80 | 127))  // masked, 64-bit length follows
            header.writeInteger(length)
            header.writeBytes([1, 2, 3, 4])  // masking key
            header.writeRepeatingByte(0, count: payload)
            context.writeAndFlush(NIOAny(header), promise: nil)
        }.get()
    }

    func sendRaw(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func close() async {
        try? await channel.close()
    }

    // MARK: Receiving

    /// Every message received so far, in order (including those already consumed by `expect`).
    var received: [WireMessage] { recorder.all }

    /// Every diff received so far, in order.
    var diffs: [Diff] {
        received.compactMap { if case .diff(let diff) = $0 { diff } else { nil } }
    }

    var isClosed: Bool { recorder.closed }

    /// Removes and returns the first not-yet-consumed message `extract` accepts, waiting for it.
    func expect<T>(_ what: String = "\(T.self)", _ extract: @escaping @Sendable (WireMessage) -> T?) async throws -> T {
        let start = ContinuousClock.now
        var next = 0
        while true {
            let (value, scanned) = recorder.consumeFirst(from: next, extract)
            if let value { return value }
            next = scanned
            if recorder.closed { throw Timeout(description: "connection closed while waiting for \(what); received \(received.map(Self.kind))") }
            if ContinuousClock.now - start > Self.deadline { throw Timeout(description: "no \(what) within \(Self.deadline); received \(received.map(Self.kind))") }
            await recorder.waitForArrival(after: next)
        }
    }

    /// Waits until `condition` holds for the messages received so far.
    func waitUntil(_ what: String, _ condition: @escaping @Sendable ([WireMessage]) -> Bool) async throws {
        let start = ContinuousClock.now
        while case let all = recorder.all, !condition(all) {
            if ContinuousClock.now - start > Self.deadline { throw Timeout(description: "timed out waiting until \(what)") }
            await recorder.waitForArrival(after: all.count)
        }
    }

    /// Waits for the server to close the connection and returns the `Error` it sent first (if any).
    func expectClosed() async throws -> ConnectionError? {
        let start = ContinuousClock.now
        while !recorder.closed {
            if ContinuousClock.now - start > Self.deadline { throw Timeout(description: "the server did not close the connection") }
            await recorder.waitForArrival(after: recorder.all.count)
        }
        return recorder.all.lazy.compactMap { if case .error(let error) = $0 { error } else { nil } }.first
    }

    /// Frames that did not decode, if any (a test failure: the server must send valid frames).
    var undecodable: [WireError] { recorder.failures }

    /// Errors the connection itself met (a reset, say), in order.
    var connectionErrors: [String] { recorder.connectionErrors }

    // MARK: Protocol steps

    @discardableResult
    func hello(token: String, version: UInt32 = WireProtocol.version) async throws -> Welcome {
        try await send(.hello(Hello(protocolVersion: version, clientID: clientID, token: token)))
        return try await expect("Welcome") { if case .welcome(let welcome) = $0 { welcome } else { nil } }
    }

    /// Pushes a batch and waits for its answer.
    func push(_ courseID: EntityID, batchSeq: BatchSeq, baseSeq: CourseSeq = 0, _ ops: [SyncModel.Operation]) async throws -> Result<Ack, Rejection> {
        try await send(.push(Push(courseID: courseID, batchSeq: batchSeq, baseSeq: baseSeq, ops: ops)))
        return try await answer(courseID, batchSeq: batchSeq)
    }

    /// Waits for the `Ack` or `Reject` of a batch.
    func answer(_ courseID: EntityID, batchSeq: BatchSeq) async throws -> Result<Ack, Rejection> {
        try await expect("answer to batch \(batchSeq)") { message -> Result<Ack, Rejection>? in
            switch message {
            case .ack(let ack) where ack.courseID == courseID && ack.batchSeq == batchSeq: .success(ack)
            case .reject(let reject) where reject.courseID == courseID && reject.batchSeq == batchSeq: .failure(reject.rejection)
            default: nil
            }
        }
    }

    /// Subscribes and waits for `Subscribed`; returns its seq.
    @discardableResult
    func subscribe(_ courseID: EntityID, since: CourseSeq = 0, presence: Bool = false) async throws -> CourseSeq {
        try await send(.subscribe(courseID: courseID, sinceSeq: since, presence: presence))
        return try await expect("Subscribed") { message -> CourseSeq? in
            if case .subscribed(let id, let seq) = message, id == courseID { seq } else { nil }
        }
    }

    /// Waits until who is present on `courseID`, as the presence updates received so far tell it,
    /// satisfies `condition`.
    func waitForPresence(_ courseID: EntityID, _ what: String, _ condition: @escaping @Sendable ([ClientID: PresencePeer]) -> Bool) async throws {
        try await waitUntil(what) { messages in
            condition(messages.reduce(into: [:]) { present, message in
                if case .presence(let change) = message, change.courseID == courseID { present = change.applied(to: present) }
            })
        }
    }

    /// The course as this client's received snapshot parts and diffs build it.
    func replica(_ courseID: EntityID) throws -> CourseState {
        var builder = ReplicaBuilder(courseID: courseID)
        return try builder.update(received)
    }

    static func kind(_ message: WireMessage) -> String {
        switch message {
        case .error(let error): "Error(\(error.code))"
        case .reject(let reject): "Reject(\(reject.rejection.code))"
        case .diff(let diff): "Diff(\(diff.seq))"
        default: String(String(describing: message).prefix(while: { $0 != "(" }))
        }
    }
}

/// Records what arrives on a test client's connection.
private final class Recorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private struct State {
        var all: [WireMessage] = []
        var consumed: Set<Int> = []
        var failures: [WireError] = []
        var connectionErrors: [String] = []
        var closed = false
        /// Callers waiting for the next message or the close (``waitForArrival(after:)``).
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = NIOLockedValueBox(State())
    private let answerPings: Bool
    private let framed: Bool

    init(answerPings: Bool, framed: Bool = true) {
        self.answerPings = answerPings
        self.framed = framed
    }

    var connectionErrors: [String] { state.withLockedValue { $0.connectionErrors } }

    var all: [WireMessage] { state.withLockedValue { $0.all } }
    var closed: Bool { state.withLockedValue { $0.closed } }
    var failures: [WireError] { state.withLockedValue { $0.failures } }

    /// The first message not yet consumed, from index `start` on, that `extract` accepts (then
    /// consumed), and the index to look from next time. A caller that polls passes that index
    /// back: what `extract` refused once it refuses again, so each poll looks only at what arrived
    /// since (rescanning everything every poll made a long test quadratic and pinned its threads).
    func consumeFirst<T>(from start: Int = 0, _ extract: (WireMessage) -> T?) -> (value: T?, next: Int) {
        state.withLockedValue { state in
            var index = start
            while index < state.all.count {
                if !state.consumed.contains(index), let value = extract(state.all[index]) {
                    state.consumed.insert(index)
                    return (value, index + 1)
                }
                index += 1
            }
            return (nil, index)
        }
    }

    /// Returns once more than `seen` messages have arrived or the connection has closed, or after
    /// `limit` at the latest (a caller's own deadline is checked between waits): waiters wake when
    /// a frame arrives instead of polling.
    func waitForArrival(after seen: Int, limit: TimeAmount = .milliseconds(200)) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let id = state.withLockedValue { state -> Int? in
                if state.all.count > seen || state.closed { return nil }
                state.nextWaiter += 1
                state.waiters[state.nextWaiter] = continuation
                return state.nextWaiter
            }
            guard let id else { return continuation.resume() }
            MultiThreadedEventLoopGroup.singleton.next().scheduleTask(in: limit) {
                self.state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume()
            }
        }
    }

    /// Wakes every waiter (a message arrived, or the connection closed).
    private func wakeWaiters() {
        let waiters = state.withLockedValue { state in
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        let result = Result { () throws(WireError) in try WireMessage(payload: payload.readableBytesView) }
        state.withLockedValue { state in
            switch result {
            case .success(let message): state.all.append(message)
            case .failure(let error): state.failures.append(error)
            }
        }
        wakeWaiters()
        if answerPings, case .success(.ping(let nonce)) = result {
            context.writeAndFlush(NIOAny(ByteBuffer(bytes: framed ? WireMessage.pong(nonce: nonce).frame() : WireMessage.pong(nonce: nonce).payload())), promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.withLockedValue { $0.closed = true }
        wakeWaiters()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.withLockedValue { $0.connectionErrors.append("\(error)") }
        context.close(promise: nil)
    }
}
