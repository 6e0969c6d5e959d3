import NIOCore
import NIOPosix
import SyncModel
import SyncWire

/// One TCP connection to the server, speaking framed `WireMessage`s.
struct Transport {
    typealias Channel = NIOAsyncChannel<Result<WireMessage, WireError>, WireMessage>

    static func connect(_ configuration: ClientConfiguration) async throws -> Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.nanoseconds(Int64(configuration.connectTimeout.nanoseconds)))
            .connect(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(IdleStateHandler(readTimeout: .nanoseconds(Int64(configuration.readTimeout.nanoseconds))))
                    try pipeline.addHandler(CloseOnReadIdle())
                    try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: Limits.maxServerFrameBytes)))
                    try pipeline.addHandler(MessageToByteHandler(FrameEncoder(maxFrameBytes: Limits.maxClientFrameBytes)))
                    try pipeline.addHandler(MessageCodecHandler())
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
    }
}

/// Closes a connection on which nothing arrived for the read timeout: the server or the path to it is gone.
final class CloseOnReadIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
