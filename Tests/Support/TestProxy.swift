import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A loopback TCP proxy in front of the server that tests use to break the network on purpose:
/// hold what a client sends, swallow what the server answers, or cut every connection.
final class TestProxy: Sendable {
    enum Mode: Sendable {
        /// Bytes flow both ways.
        case pass
        /// Client → server bytes are held (in order) until the mode returns to `.pass`.
        case holdUpstream
        /// Server → client bytes are dropped.
        case dropDownstream
        /// New connections are closed at once.
        case refuse
    }

    private struct State {
        var targetPort: Int
        var mode = Mode.pass
        var held: [(Channel, ByteBuffer)] = []
        var channels: [Channel] = []
    }

    let port: Int
    private let listener: Channel
    private let state: NIOLockedValueBox<State>

    init(targetPort: Int) async throws {
        let state = NIOLockedValueBox(State(targetPort: targetPort))
        self.state = state
        listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                let (mode, targetPort) = state.withLockedValue { ($0.mode, $0.targetPort) }
                if mode == .refuse { return inbound.close() }
                return ClientBootstrap(group: inbound.eventLoop)
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMap { outbound in
                        state.withLockedValue { $0.channels += [inbound, outbound] }
                        let upstream = Pipe(to: outbound, upstream: true, state: state)
                        let downstream = Pipe(to: inbound, upstream: false, state: state)
                        return inbound.pipeline.addHandler(upstream).flatMap { outbound.pipeline.addHandler(downstream) }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = listener.localAddress!.port!
    }

    /// Changes the mode; returning to `.pass` forwards what was held, in order.
    func set(_ mode: Mode) {
        let holding = state.withLockedValue { state -> [Channel] in
            state.mode = mode
            return mode == .pass ? state.held.map(\.0) : []
        }
        // Drained on each connection's event loop, where its reads run, so order is kept.
        for channel in holding { channel.eventLoop.execute { Self.drain(channel, self.state) } }
    }

    /// Forwards what was held for `partner`, in order. Runs on `partner`'s event loop.
    private static func drain(_ partner: Channel, _ state: NIOLockedValueBox<State>) {
        let held = state.withLockedValue { state -> [ByteBuffer] in
            let mine = state.held.filter { $0.0 === partner }.map(\.1)
            state.held.removeAll { $0.0 === partner }
            return mine
        }
        for bytes in held { partner.writeAndFlush(bytes, promise: nil) }
    }

    /// Sends new connections to another port (a server restarted elsewhere).
    func retarget(_ port: Int) {
        state.withLockedValue { $0.targetPort = port }
    }

    /// Closes every proxied connection (both sides), as a network failure would.
    func cutAll() {
        let channels = state.withLockedValue { state in
            defer { state.channels = []; state.held = [] }
            return state.channels
        }
        for channel in channels { channel.close(promise: nil) }
    }

    func close() async {
        cutAll()
        try? await listener.close()
    }

    private final class Pipe: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let partner: Channel
        let upstream: Bool
        let state: NIOLockedValueBox<State>

        init(to partner: Channel, upstream: Bool, state: NIOLockedValueBox<State>) {
            self.partner = partner
            self.upstream = upstream
            self.state = state
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            let forward = state.withLockedValue { state -> Bool in
                switch (state.mode, upstream) {
                case (.holdUpstream, true): state.held.append((partner, bytes)); return false
                case (.dropDownstream, false): return false
                default: return true
                }
            }
            if forward {
                if upstream { TestProxy.drain(partner, state) }
                partner.writeAndFlush(bytes, promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
