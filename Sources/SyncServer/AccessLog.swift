import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import SyncModel
import SyncWire

/// What the access log says of one protocol connection: gathered while it lives, written as one
/// structured `info` line when it ends (never the token).
struct ConnectionRecord: Sendable {
    /// `tcp`, `websocket` (binary) or `websocket-json`.
    let transport: String
    let remote: String
    let started = ContinuousClock.now
    /// `TLSv1.3`, `TLSv1.2`, `none`, or `TLS` for a connection that never completed its handshake.
    var tls = "none"
    /// The token's subject, once admitted.
    var user: String?
    var courses = Set<EntityID>()
    var framesIn = 0
    var bytesIn = 0
    var framesOut = 0
    var bytesOut = 0
    var pushes = 0
    /// The limit that refused the connection, if one did.
    var refusal: Refusal?

    /// `tls`: the listener's TLS, whose version is known once the handshake is done (``tlsVersion(of:)``).
    init(transport: String, remote: String, tls: Bool) {
        self.transport = transport
        self.remote = remote
        self.tls = tls ? "TLS" : "none"
    }

    /// The line, with how it closed: the server's `Error` (code and reason), or the peer's leaving.
    func log(to logger: Logger, closedWith error: ConnectionError?) {
        let duration = ContinuousClock.now - started
        var metadata: Logger.Metadata = [
            "remote": "\(remote)", "transport": "\(transport)", "tls": "\(tls)",
            "duration_ms": "\(duration.wholeMilliseconds)",
            "frames_in": "\(framesIn)", "bytes_in": "\(bytesIn)", "frames_out": "\(framesOut)", "bytes_out": "\(bytesOut)",
            "pushes": "\(pushes)", "close": "\(error.map { "\($0.code)" } ?? "peer")",
        ]
        if let user { metadata["user"] = "\(user)" }
        if !courses.isEmpty { metadata["courses"] = "\(courses.sorted().map(\.description).joined(separator: ","))" }
        if let error { metadata["reason"] = "\(error.message)" }
        if let refusal { metadata["refused"] = "\(refusal.rawValue)" }
        logger.info("connection", metadata: metadata)
    }

    /// The version a TLS connection's handshake negotiated, asked once it is done (asked before,
    /// the TLS library answers its default).
    static func tlsVersion(of channel: any Channel) async -> String {
        guard let version = try? await channel.nioSSL_tlsVersion().get() else { return "TLS" }
        switch version {
        case .tlsv13: return "TLSv1.3"
        case .tlsv12: return "TLSv1.2"
        case .tlsv11: return "TLSv1.1"
        case .tlsv1: return "TLSv1"
        }
    }
}

/// The access log of HTTP requests: one `info` line per response (method, path without its
/// query, status, duration, and the token's user where a handler checked one), never a header.
/// Sits between the HTTP codec and the handlers that answer.
public final class HTTPAccessLog: ChannelDuplexHandler, @unchecked Sendable {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    /// Sent down the pipeline (a user outbound event) by a handler that verified a token.
    public struct User: Sendable {
        public let name: String
        public init(name: String) { self.name = name }
    }

    let logger: Logger
    private var request: (method: HTTPMethod, path: Substring, started: ContinuousClock.Instant)?
    private var status: HTTPResponseStatus?
    private var user: String?

    public init(logger: Logger) { self.logger = logger }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            request = (head.method, HTTPRouter.path(head.uri), ContinuousClock.now)
            status = nil
            user = nil
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            status = head.status
        case .end:
            if let request {
                var metadata: Logger.Metadata = [
                    "method": "\(request.method.rawValue)", "path": "\(request.path)", "status": "\(status?.code ?? 0)",
                    "duration_ms": "\((ContinuousClock.now - request.started).wholeMilliseconds)",
                    "remote": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")",
                ]
                if let user { metadata["user"] = "\(user)" }
                logger.info("http request", metadata: metadata)
                self.request = nil
            }
        case .body:
            break
        }
        context.write(data, promise: promise)
    }

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let event = event as? User else { return context.triggerUserOutboundEvent(event, promise: promise) }
        user = event.name
        promise?.succeed(())
    }
}
