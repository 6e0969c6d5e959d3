import NIOConcurrencyHelpers
import NIOCore

/// When each of the peer's frames arrived, as the event loop decoded it: before the frame waits
/// for the connection's task to take it. The session is given a frame's arrival, not the moment
/// the task got round to it, so a server whose own tasks are held up (every thread of Swift's
/// pool busy) neither closes a peer that kept answering its Pings (the timer also reads the last
/// arrival) nor counts a paced peer's backlog as a burst against its rates.
package final class PeerActivity: Sendable {
    private struct Arrivals {
        var last: ContinuousClock.Instant?
        /// Frames decoded and not yet taken, oldest first (from `head`).
        var pending: [ContinuousClock.Instant] = []
        var head = 0
    }

    private let arrivals = NIOLockedValueBox(Arrivals())

    package init() {}

    /// The moment the last frame arrived, if any did.
    package var lastFrame: ContinuousClock.Instant? { arrivals.withLockedValue { $0.last } }

    func frameArrived() {
        let now = ContinuousClock.now
        arrivals.withLockedValue { arrivals in
            arrivals.last = now
            arrivals.pending.append(now)
        }
    }

    /// The arrival of the oldest frame not yet taken: the frame the connection's task takes next
    /// (frames reach it in the order they were decoded). Bounded by the channel's inbound buffer.
    func takeArrival() -> ContinuousClock.Instant? {
        arrivals.withLockedValue { arrivals in
            guard arrivals.head < arrivals.pending.count else { return nil }
            defer {
                arrivals.head += 1
                if arrivals.head > 64, arrivals.head * 2 > arrivals.pending.count {
                    arrivals.pending.removeFirst(arrivals.head)
                    arrivals.head = 0
                }
            }
            return arrivals.pending[arrivals.head]
        }
    }

    /// The pipeline handler that marks arrivals; it goes last, after the framing, so it sees
    /// whole frames (TCP) or messages (WebSocket), one per frame the connection's task takes.
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
