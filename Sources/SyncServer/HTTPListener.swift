import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ServiceLifecycle
import SyncModel
import SyncTransport
import SyncWire

/// An HTTP/1.1 listener (TLS if configured) in front of a ``SyncServer``: a WebSocket upgrade at
/// `/v1/sync` offering one of the protocol's subprotocols (spec §2.2) becomes a protocol
/// connection, served exactly like one over TCP (same session, hubs and limits); every other
/// request goes to one ``HTTPRouter``: the backend API (spec §13), and what `routes` adds (the
/// operator's `/metrics`, `/health`, `/ready`, the editor page), else 404.
public struct HTTPListener: Service {
    let server: SyncServer
    let host: String
    let port: Int
    let security: TransportSecurity
    let routes: HTTPRoutes
    let logger: Logger
    let announce: @Sendable (Int) -> Void

    public init(server: SyncServer, host: String, port: Int, security: TransportSecurity = .plaintext,
                logger: Logger = Logger(label: "coursesync.http"), routes: HTTPRoutes = HTTPRoutes(),
                announce: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.server = server
        self.host = host
        self.port = port
        self.security = security
        var routes = routes
        routes.api = server
        self.routes = routes
        self.logger = logger
        self.announce = announce
    }

    enum Upgrade: Sendable {
        /// Upgraded, and served by the sync server from then on (``SyncServer/attach(_:transport:tls:)``).
        case webSocket
        case http
    }

    public func run() async throws {
        let security = security, routes = routes, server = server
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.configure(channel, server: server, security: security, routes: routes, logger: logger)
                }
            }
        announce(listener.channel.localAddress?.port ?? port)
        logger.info("HTTP listening", metadata: ["address": "\(host):\(listener.channel.localAddress?.port ?? port)",
                                                 "websocket": "\(WebSocketProtocol.path)"])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await listener.executeThenClose { inbound in
                    for try await upgrade in inbound {
                        // An HTTP request is served by its pipeline; an upgraded one by the sync server.
                        group.addTask { _ = try? await upgrade.get() }
                    }
                }
            }
        } onGracefulShutdown: {
            listener.channel.close(promise: nil)
        }
    }

    private static func configure(_ channel: any Channel, server: SyncServer, security: TransportSecurity, routes: HTTPRoutes,
                                  logger: Logger) throws -> EventLoopFuture<Upgrade> {
        let pipeline = channel.pipeline.syncOperations
        if case .tls(let context) = security {
            try pipeline.addHandler(NIOSSLServerHandler(context: context))
        }
        let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
            maxFrameSize: Limits.maxClientFrameBytes,
            // Protocol errors reach the session as WireErrors (WebSocketPayloadAdapter.errorCaught),
            // which answers them with the protocol's Error message before closing.
            enableAutomaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                guard HTTPRouter.path(head.uri) == WebSocketProtocol.path,
                      let form = WebSocketProtocol.negotiate(head.headers["Sec-WebSocket-Protocol"]) else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                return channel.eventLoop.makeSucceededFuture(HTTPHeaders([("Sec-WebSocket-Protocol", form.rawValue)]))
            },
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    let form = WebSocketProtocol.negotiate(head.headers["Sec-WebSocket-Protocol"]) ?? .binary
                    let pipeline = channel.pipeline.syncOperations
                    // Sizes are judged by the frame headers, before NIO's decoder waits for the bytes.
                    let decoder = try pipeline.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
                    try pipeline.addHandler(WebSocketSizeGuard(firstMessageLimit: Limits.maxHandshakeFrameBytes, messageLimit: Limits.maxClientFrameBytes),
                                            position: .before(decoder))
                    try pipeline.addHandler(NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16,
                                                                        maxAccumulatedFrameSize: Limits.maxClientFrameBytes))
                    try pipeline.addHandler(WebSocketPayloadAdapter(form: form, isClient: false, messageLimit: Limits.maxClientFrameBytes))
                    try pipeline.addHandler(PeerActivity.Handler())
                    try server.attach(channel, transport: form == .json ? "websocket-json" : "websocket", tls: security.isTLS)
                    return .webSocket
                }
            }
        )
        let configuration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: .init(
            upgraders: [upgrader],
            notUpgradingCompletionHandler: { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTPAccessLog(logger: logger))
                    try channel.pipeline.syncOperations.addHandler(HTTPRouter(routes: routes))
                    return .http
                }
            }
        ))
        let upgrade = try pipeline.configureUpgradableHTTPServerPipeline(configuration: configuration)
        try pipeline.addHandler(UpgradeRefusal())
        return upgrade
    }
}

/// Answers a WebSocket upgrade the listener refuses (another path, none of the protocol's
/// subprotocols) with 400: NIO reports the refusal as an error, which nothing else would answer.
final class UpgradeRefusal: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundOut = HTTPServerResponsePart

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is NIOWebSocketUpgradeError else { return context.fireErrorCaught(error) }
        HTTPRouter.write(context, HTTPAnswer(.badRequest, """
            a WebSocket upgrade must be to \(WebSocketProtocol.path) with Sec-WebSocket-Protocol \
            \(WebSocketProtocol.allCases.map(\.rawValue).joined(separator: " or "))\n
            """))
    }
}
