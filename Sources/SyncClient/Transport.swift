import NIOCore
import NIOPosix
import SyncModel
import SyncTransport
import SyncWire

/// One TCP connection to the server, speaking framed `WireMessage`s; inbound, the messages of one
/// socket read come as one array, so that the client takes them in one engine step and one
/// replica transaction (a client that falls behind catches up in bigger steps, not more of them).
struct Transport {
    typealias Channel = NIOAsyncChannel<[Result<WireMessage, WireError>], WireMessage>

    static func connect(_ configuration: ClientConfiguration) async throws -> Channel {
        let security = try configuration.tls.map { try TransportSecurity.client(caFile: $0.caFile, certificateFile: $0.certificateFile, keyFile: $0.keyFile) } ?? .plaintext
        return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.nanoseconds(configuration.handshakeTimeout.wholeNanoseconds))
            .connect(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try ProtocolPipeline.configureClient(pipeline, security: security, host: configuration.host)
                    try pipeline.addHandler(MessageCodecHandler())
                    try pipeline.addHandler(ReadBatcher())
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
    }
}

/// Collects the messages decoded from one read and passes them on together at the read's end.
final class ReadBatcher: ChannelInboundHandler {
    typealias InboundIn = Result<WireMessage, WireError>
    typealias InboundOut = [Result<WireMessage, WireError>]

    private var batch: [Result<WireMessage, WireError>] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        batch.append(Self.unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flush(context)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        flush(context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        flush(context)
        context.fireErrorCaught(error)
    }

    private func flush(_ context: ChannelHandlerContext) {
        guard !batch.isEmpty else { return }
        let messages = batch
        batch = []
        context.fireChannelRead(Self.wrapInboundOut(messages))
    }
}
