import NIOCore
import NIOPosix
import SyncModel
import SyncTransport
import SyncWire

/// One TCP connection to the server, speaking framed `WireMessage`s.
struct Transport {
    typealias Channel = NIOAsyncChannel<Result<WireMessage, WireError>, WireMessage>

    static func connect(_ configuration: ClientConfiguration) async throws -> Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.nanoseconds(configuration.handshakeTimeout.wholeNanoseconds))
            .connect(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: Limits.maxServerFrameBytes)))
                    try pipeline.addHandler(MessageToByteHandler(FrameEncoder(maxFrameBytes: Limits.maxClientFrameBytes)))
                    try pipeline.addHandler(MessageCodecHandler())
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
    }
}
