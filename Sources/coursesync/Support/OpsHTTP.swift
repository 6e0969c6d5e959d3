import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import SyncServer

/// The operator's endpoints: `/metrics` (Prometheus text), `/health` (the process is up), `/ready`
/// (the store is reachable and migrated: 503 otherwise). On `serve --http-listen` (behind
/// ``HTTPListener``, which takes the WebSocket upgrades and the backend API), with `serve --web`
/// also the course editor page, and without `/metrics` when `serve --metrics-listen` serves it
/// on an address of its own (``OpsListener``).
final class OpsHTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    let ready: @Sendable () async throws -> Void
    let page: WebPage?
    /// `/metrics` is served here (not when another listener serves it).
    let metrics: Bool
    private var path: String?
    private var method: HTTPMethod = .GET

    init(registry: PrometheusCollectorRegistry, ready: @escaping @Sendable () async throws -> Void, page: WebPage? = nil, metrics: Bool = true) {
        self.registry = registry
        self.ready = ready
        self.page = page
        self.metrics = metrics
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
            method = head.method
        case .body:
            break
        case .end:
            let path = path ?? "/"
            guard method == .GET || method == .HEAD else { return respond(context, .methodNotAllowed, "only GET\n") }
            switch path {
            case "/metrics" where metrics:
                respond(context, .ok, registry.emitToString(), contentType: "text/plain; version=0.0.4")
            case "/health":
                respond(context, .ok, "ok\n")
            case "/ready":
                let ready = ready
                let promise = context.eventLoop.makePromise(of: Bool.self)
                // Not ready while the store does not answer within 2 s (a database that is down may
                // leave a query waiting for a connection far longer).
                promise.completeWithTask { (try? await withDeadline(.seconds(2), .readSeq) { try await ready() }) != nil }
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                promise.futureResult.whenSuccess { isReady in
                    let (handler, context) = loopBound.value
                    handler.respond(context, isReady ? .ok : .serviceUnavailable, isReady ? "ready\n" : "not ready: the store is unreachable or not migrated\n")
                }
            default:
                if let file = page?.files[path] {
                    respond(context, .ok, file.body, contentType: file.contentType, headers: WebPage.securityHeaders)
                } else {
                    respond(context, .notFound, "not found: \(metrics ? "/metrics, " : "")/health, /ready\(page == nil ? "" : ", the page at /")\n")
                }
            }
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: String, contentType: String = "text/plain; charset=utf-8") {
        respond(context, status, ByteBuffer(string: body), contentType: contentType)
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: ByteBuffer, contentType: String,
                         headers extra: [(String, String)] = []) {
        var headers = HTTPHeaders(extra)
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// `serve --metrics-listen`: the operator's endpoints alone (``OpsHTTPHandler`` without the page)
/// on an address of their own, plain HTTP, so that `/metrics` can stay on a private interface
/// while `--http-listen` faces browsers, and a server without `--http-listen` still exports it.
struct OpsListener: Service {
    let host: String
    let port: Int
    let handler: @Sendable () -> OpsHTTPHandler
    let logger: Logger
    let announce: @Sendable (Int) -> Void

    func run() async throws {
        let handler = handler
        // The connections run on their channels (the handler answers each request); this task
        // holds the listener open until the group shuts down.
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTPAccessLog(logger: logger))
                    try channel.pipeline.syncOperations.addHandler(handler())
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
