import NIOConcurrencyHelpers
import NIOCore

/// When the peer's last frame arrived, as the event loop decoded it: the connection puts each
/// frame in its inbox with that moment, so the session takes a frame as of its arrival, not of
/// when a task got round to it; and the timer reads it. So a server whose own tasks are held up
/// (every thread of Swift's pool busy) neither closes a peer that kept answering its Pings nor
/// counts a paced peer's backlog as a burst against its rates.
package final class PeerActivity: Sendable {
    private let last = NIOLockedValueBox<ContinuousClock.Instant?>(nil)

    package init() {}

    /// The moment the last frame arrived, if any did.
    package var lastFrame: ContinuousClock.Instant? { last.withLockedValue { $0 } }

    func frameArrived() {
        let now = ContinuousClock.now
        last.withLockedValue { $0 = now }
    }

    /// The pipeline handler that marks arrivals; it goes after the framing, so it sees whole
    /// frames (TCP) or messages (WebSocket), just before the connection's own handler.
    package final class Handler: ChannelInboundHandler {
        package typealias InboundIn = ByteBuffer
        package typealias InboundOut = ByteBuffer
        package let activity = PeerActivity()

        package init() {}

        package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            activity.frameArrived()
            context.fireChannelRead(data)
        }
    }
}
