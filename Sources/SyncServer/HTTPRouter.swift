import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import SyncModel
import SyncTransport
import SyncWire

/// What an HTTP listener answers besides the WebSocket upgrade: the backend API, the operator's
/// endpoints and static files, each where it is configured. ``HTTPListener`` serves them beside
/// the protocol; ``OpsListener`` the operator's endpoints alone.
public struct HTTPRoutes: Sendable {
    /// `POST /v1/courses/{id}/batches` and `GET /v1/courses/{id}` (spec §13) into this server.
    var api: SyncServer?
    /// `GET /health` (the process is up) and `GET /ready` (this answers within 2 s: the store is
    /// reachable and migrated).
    public var ready: (@Sendable () async throws -> Void)?
    /// `GET /metrics`: the metrics' text exposition (Prometheus).
    public var metrics: (@Sendable () -> String)?
    /// Static files by path (`/` too, where one is the index), answered from memory.
    public var files: [String: HTTPFile]

    public init(ready: (@Sendable () async throws -> Void)? = nil, metrics: (@Sendable () -> String)? = nil, files: [String: HTTPFile] = [:]) {
        self.ready = ready
        self.metrics = metrics
        self.files = files
    }

    /// Whether the backend API answers `uri`.
    func isAPI(_ uri: String) -> Bool { api != nil && HTTPRouter.path(uri).hasPrefix(BackendAPI.prefix) }

    /// The paths served, for a 404's body.
    var served: [String] {
        var paths: [String] = []
        if api != nil { paths.append("\(WebSocketProtocol.path) (WebSocket), /v1/courses/{id}") }
        if metrics != nil { paths.append("/metrics") }
        if ready != nil { paths += ["/health", "/ready"] }
        if files["/"] != nil { paths.append("the page at /") }
        return paths
    }
}

/// A static file and the headers it is served with.
public struct HTTPFile: Sendable {
    public var body: ByteBuffer
    public var contentType: String
    public var headers: [(String, String)]

    public init(body: ByteBuffer, contentType: String, headers: [(String, String)] = []) {
        self.body = body
        self.contentType = contentType
        self.headers = headers
    }
}

/// One answer, whatever the route.
struct HTTPAnswer: Sendable {
    var status: HTTPResponseStatus
    var body: ByteBuffer
    var contentType = "text/plain; charset=utf-8"
    var headers: [(String, String)] = []
    /// The token's user, where a route verified one (for the access log).
    var user: String?

    init(_ status: HTTPResponseStatus, _ text: String, contentType: String = "text/plain; charset=utf-8", user: String? = nil) {
        self.status = status
        body = ByteBuffer(string: text)
        self.contentType = contentType
        self.user = user
    }

    init(_ status: HTTPResponseStatus, _ message: WireMessage, user: String?) {
        self.init(status, message.json() + "\n", contentType: "application/json", user: user)
    }

    init(file: HTTPFile) {
        status = .ok
        body = file.body
        contentType = file.contentType
        headers = file.headers
    }
}

/// The one HTTP request handler: reads a request (a body only where a route takes one, bounded),
/// answers it from ``HTTPRoutes`` (asynchronously where a route needs to), writes the answer and
/// keeps the connection open when the client asked to.
final class HTTPRouter: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum Reading {
        case idle
        case request(HTTPRequestHead, body: ByteBuffer)
        /// Answered already (the body was too large): the rest of it is dropped.
        case skipping
    }

    let routes: HTTPRoutes
    private var reading = Reading.idle

    init(routes: HTTPRoutes) { self.routes = routes }

    /// A request's path, without its query.
    static func path(_ uri: String) -> Substring { uri.split(separator: "?", maxSplits: 1).first ?? "" }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            reading = .request(head, body: context.channel.allocator.buffer(capacity: 0))
        case .body(var chunk):
            guard case .request(let head, var body) = reading else { return }
            // Only the backend API reads a body; every other route ignores one.
            guard routes.isAPI(head.uri) else { return }
            guard body.readableBytes + chunk.readableBytes <= Limits.maxClientFrameBytes else {
                reading = .skipping
                return write(context, head: head, HTTPAnswer(.payloadTooLarge, .error(ConnectionError(.frameTooLarge, "the body exceeds \(Limits.maxClientFrameBytes) bytes")), user: nil))
            }
            reading = .idle  // no copy-on-write while appending
            body.writeBuffer(&chunk)
            reading = .request(head, body: body)
        case .end:
            guard case .request(let head, let body) = reading else {
                reading = .idle
                return
            }
            reading = .idle
            if let answer = immediateAnswer(head) { return write(context, head: head, answer) }
            let routes = routes
            let promise = context.eventLoop.makePromise(of: HTTPAnswer.self)
            promise.completeWithTask { await Self.answer(head, body, routes) }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { answer in
                let (router, context) = loopBound.value
                router.write(context, head: head, answer)
            }
        }
    }

    /// The answer of a route that needs no waiting, or `nil`.
    private func immediateAnswer(_ head: HTTPRequestHead) -> HTTPAnswer? {
        if routes.isAPI(head.uri) { return nil }
        let path = Self.path(head.uri)
        guard head.method == .GET || head.method == .HEAD else { return HTTPAnswer(.methodNotAllowed, "only GET here\n") }
        switch path {
        case "/metrics" where routes.metrics != nil: return HTTPAnswer(.ok, routes.metrics!(), contentType: "text/plain; version=0.0.4")
        case "/health" where routes.ready != nil: return HTTPAnswer(.ok, "ok\n")
        case "/ready" where routes.ready != nil: return nil
        default:
            if let file = routes.files[String(path)] { return HTTPAnswer(file: file) }
            return HTTPAnswer(.notFound, "not found; served here: \(routes.served.joined(separator: ", "))\n")
        }
    }

    /// The routes that wait: the backend API, and `/ready`.
    private static func answer(_ head: HTTPRequestHead, _ body: ByteBuffer, _ routes: HTTPRoutes) async -> HTTPAnswer {
        if let server = routes.api, routes.isAPI(head.uri) {
            return await BackendAPI.answer(head, body, server)
        }
        // Not ready while the store does not answer within 2 s (a database that is down may
        // leave a query waiting for a connection far longer).
        let ready = routes.ready!
        let isReady = (try? await withDeadline(.seconds(2), .readSeq) { try await ready() }) != nil
        return isReady ? HTTPAnswer(.ok, "ready\n") : HTTPAnswer(.serviceUnavailable, "not ready: the store is unreachable or not migrated\n")
    }

    private func write(_ context: ChannelHandlerContext, head request: HTTPRequestHead, _ answer: HTTPAnswer) {
        if let user = answer.user { context.triggerUserOutboundEvent(HTTPAccessLog.User(name: user), promise: nil) }
        Self.write(context, answer, bodyless: request.method == .HEAD, keepAlive: request.isKeepAlive)
    }

    /// Writes `answer`; closes the connection after it unless `keepAlive`.
    static func write(_ context: ChannelHandlerContext, _ answer: HTTPAnswer, bodyless: Bool = false, keepAlive: Bool = false) {
        var headers = HTTPHeaders(answer.headers)
        headers.add(name: "Content-Type", value: answer.contentType)
        headers.add(name: "Content-Length", value: "\(answer.body.readableBytes)")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: answer.status, headers: headers))), promise: nil)
        if !bodyless { context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(answer.body))), promise: nil) }
        let channel = context.channel
        let written = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
        if !keepAlive { written.whenComplete { _ in channel.close(promise: nil) } }
    }
}

/// The operator's endpoints alone (``HTTPRoutes`` without the API) on an address of their own,
/// plain HTTP: `/metrics` can stay on a private interface while ``HTTPListener`` faces browsers,
/// and a server without an HTTP listener still exports it.
public struct OpsListener: Service {
    let host: String
    let port: Int
    let routes: HTTPRoutes
    let logger: Logger
    let announce: @Sendable (Int) -> Void

    public init(host: String, port: Int, routes: HTTPRoutes, logger: Logger, announce: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.host = host
        self.port = port
        self.routes = routes
        self.logger = logger
        self.announce = announce
    }

    public func run() async throws {
        let routes = routes, logger = logger
        // The connections run on their channels (the router answers each request); this task
        // holds the listener open until the group shuts down.
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTPAccessLog(logger: logger))
                    try channel.pipeline.syncOperations.addHandler(HTTPRouter(routes: routes))
                }
            }
            .bind(host: host, port: port).get()
        let bound = listener.localAddress?.port ?? port
        announce(bound)
        logger.info("operator endpoints listening", metadata: ["address": "\(host):\(bound)"])
        try await withGracefulShutdownHandler {
            try await withTaskCancellationHandler {
                try await listener.closeFuture.get()
            } onCancel: {
                listener.close(promise: nil)
            }
        } onGracefulShutdown: {
            listener.close(promise: nil)
        }
    }
}
