import NIOConcurrencyHelpers
import NIOCore

/// When the peer last sent a frame, as the event loop decoded it: before the frame waits for the
/// connection's task to take it. The heartbeat counts the peer as heard from at that moment, so a
/// server whose own tasks are held up (every thread of Swift's pool busy for longer than the idle
/// timeout) does not close peers that kept answering its Pings.
public final class PeerActivity: Sendable {
    private let last = NIOLockedValueBox<ContinuousClock.Instant?>(nil)

    public init() {}

    /// The moment the last frame arrived, if any did.
    public var lastFrame: ContinuousClock.Instant? { last.withLockedValue { $0 } }

    func frameArrived() { last.withLockedValue { $0 = .now } }

    /// The pipeline handler that marks arrivals; it goes last, after the framing, so it sees
    /// whole frames (TCP) or messages (WebSocket).
    public final class Handler: ChannelInboundHandler {
        public typealias InboundIn = ByteBuffer
        public typealias InboundOut = ByteBuffer
        public let activity = PeerActivity()

        public init() {}

        public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            activity.frameArrived()
            context.fireChannelRead(data)
        }
    }

    /// The activity of `channel`'s pipeline, if it has the handler.
    static func of(_ channel: any Channel) async -> PeerActivity? {
        try? await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: Handler.self).activity
        }.get()
    }
}
