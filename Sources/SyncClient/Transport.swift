import NIOCore
import NIOPosix
import SyncModel
import SyncTransport
import SyncWire

/// One TCP connection to the server, speaking framed `WireMessage`s.
struct Transport {
    typealias Channel = NIOAsyncChannel<Result<WireMessage, WireError>, WireMessage>

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
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
    }
}
