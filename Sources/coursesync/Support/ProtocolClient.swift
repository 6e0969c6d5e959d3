import NIOCore
import NIOPosix
import SyncModel
import SyncTransport
import SyncWire

/// A minimal client connection for the command-line tools: handshake, then send and receive
/// `WireMessage`s in order. (Applications use the client library instead.)
struct ProtocolClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    typealias Channel = NIOAsyncChannel<Result<WireMessage, WireError>, WireMessage>

    /// Connects, completes the handshake and runs `body` with the open connection.
    static func with<T: Sendable>(host: String, port: Int, clientID: ClientID, token: String, security: TransportSecurity = .plaintext,
                                  _ body: (inout Connection) async throws -> T) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try ProtocolPipeline.configureClient(pipeline, security: security, host: host)
                    try pipeline.addHandler(MessageCodecHandler())
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var connection = Connection(channel: channel.channel, inbound: inbound.makeAsyncIterator(), outbound: outbound)
            try await connection.send(.hello(Hello(clientID: clientID, token: token)))
            switch try await connection.next() {
            case .welcome(let welcome): connection.welcome = welcome
            case .error(let error): throw Failure(description: "the server refused the connection: \(error.code): \(error.message)")
            case let other: throw Failure(description: "expected Welcome, received \(other)")
            }
            return try await body(&connection)
        }
    }

    struct Connection {
        let channel: any NIOCore.Channel
        /// The server's `Welcome` (its limits and heartbeat interval).
        var welcome = Welcome(serverID: "", heartbeatIntervalMs: 15_000)
        var inbound: NIOAsyncChannelInboundStream<Result<WireMessage, WireError>>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<WireMessage>

        func send(_ message: WireMessage) async throws {
            try await outbound.write(message)
        }

        /// The next message; a server `Error` or a closed connection throws.
        mutating func next() async throws -> WireMessage {
            guard let result = try await inbound.next() else { throw Failure(description: "the server closed the connection") }
            switch result {
            case .success(.error(let error)): throw Failure(description: "the server closed the connection: \(error.code): \(error.message)")
            case .success(let message): return message
            case .failure(let error): throw Failure(description: "the server sent an invalid frame: \(error)")
            }
        }

        /// Pushes a batch and returns its answer, skipping anything else (diffs, progress, pings are answered).
        mutating func push(_ push: Push) async throws -> Result<Ack, Rejection> {
            try await send(.push(push))
            while true {
                switch try await next() {
                case .ack(let ack) where ack.batchSeq == push.batchSeq && ack.courseID == push.courseID: return .success(ack)
                case .reject(let reject) where reject.batchSeq == push.batchSeq && reject.courseID == push.courseID: return .failure(reject.rejection)
                case .ping(let nonce): try await send(.pong(nonce: nonce))
                default: continue
                }
            }
        }
    }
}
