import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// The operator's endpoints on `serve --http-listen` (behind ``HTTPListener``, which takes the
/// WebSocket upgrades): `/metrics` (Prometheus text), `/health` (the process is up), `/ready` (the
/// store is reachable and migrated: 503 otherwise); with `serve --web`, the course editor page.
final class OpsHTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    let ready: @Sendable () async throws -> Void
    let page: WebPage?
    private var path: String?
    private var method: HTTPMethod = .GET

    init(registry: PrometheusCollectorRegistry, ready: @escaping @Sendable () async throws -> Void, page: WebPage? = nil) {
        self.registry = registry
        self.ready = ready
        self.page = page
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
            case "/metrics":
                respond(context, .ok, registry.emitToString(), contentType: "text/plain; version=0.0.4")
            case "/health":
                respond(context, .ok, "ok\n")
            case "/ready":
                let ready = ready
                let promise = context.eventLoop.makePromise(of: Bool.self)
                promise.completeWithTask { (try? await ready()) != nil }
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                promise.futureResult.whenSuccess { isReady in
                    let (handler, context) = loopBound.value
                    handler.respond(context, isReady ? .ok : .serviceUnavailable, isReady ? "ready\n" : "not ready: the store is unreachable or not migrated\n")
                }
            default:
                if let file = page?.files[path] {
                    respond(context, .ok, file.body, contentType: file.contentType, headers: WebPage.securityHeaders)
                } else {
                    respond(context, .notFound, "not found: /metrics, /health, /ready\(page == nil ? "" : ", the page at /")\n")
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
