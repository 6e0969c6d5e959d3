import Foundation
import NIOCore
import NIOWebSocket
import SyncModel
import SyncWire

/// The protocol over WebSocket (spec §2.2): one `Envelope` per message, binary
/// (`coursesync.v1+proto`) or in protobuf's JSON mapping as text (`coursesync.v1+json`).
public enum WebSocketProtocol: String, Sendable, CaseIterable {
    case binary = "coursesync.v1+proto"
    case json = "coursesync.v1+json"

    /// The path a server accepts WebSocket connections on.
    public static let path = "/v1/sync"

    /// The subprotocol to answer for a client's `Sec-WebSocket-Protocol` header (a comma-separated
    /// list, in the client's order of preference), or `nil` if it offers none of ours.
    public static func negotiate(_ offered: [String]) -> WebSocketProtocol? {
        offered.flatMap { $0.split(separator: ",") }.lazy
            .compactMap { WebSocketProtocol(rawValue: $0.trimmingCharacters(in: .whitespaces)) }.first
    }
}

/// Makes a WebSocket look like the framed TCP stream to what sits behind it: inbound, each data
/// message becomes one payload (`ByteBuffer`, a serialized `Envelope`; JSON text is converted);
/// outbound, each payload becomes one message in the connection's form. Pings are answered;
/// a peer's close is answered and ends the connection; closing our output sends a close frame.
///
/// A message that is not an `Envelope` in the negotiated form is passed on as an empty payload,
/// which the session refuses as a malformed frame, like a bad frame on TCP. Messages arrive
/// whole (fragments are joined by `NIOWebSocketFrameAggregator` in front of this handler).
public final class WebSocketPayloadAdapter: ChannelDuplexHandler {
    public typealias InboundIn = WebSocketFrame
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = WebSocketFrame

    public let form: WebSocketProtocol
    /// Clients mask what they send (RFC 6455 §5.3); servers do not.
    public let isClient: Bool
    /// The most bytes the first message may carry (a server's handshake limit, as the first
    /// frame's on TCP); past it the read fails with ``WireError/frameTooLarge(length:limit:)``.
    public let firstMessageLimit: Int?
    /// The most bytes any message may carry, if this side refuses larger ones itself (a server,
    /// whose upgrader's frame decoder and aggregator enforce it and whose errors this handler
    /// turns into ``WireError``s: see ``errorCaught(context:error:)``).
    public let messageLimit: Int?
    private var closeSent = false
    private var messages = 0
    private var refused = false

    public init(form: WebSocketProtocol, isClient: Bool, firstMessageLimit: Int? = nil, messageLimit: Int? = nil) {
        self.form = form
        self.isClient = isClient
        self.firstMessageLimit = firstMessageLimit
        self.messageLimit = messageLimit
    }

    /// A WebSocket protocol error below this handler (a frame or message over the limit, a
    /// fragmented control frame, …) becomes the ``WireError`` a frame over TCP would have given,
    /// so the session answers it as the protocol says (`Error{FRAME_TOO_LARGE}` or
    /// `Error{MALFORMED_FRAME}`, then a close) instead of a bare WebSocket close. The server's
    /// upgrader runs without NIO's automatic error handling for this.
    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.fireErrorCaught(Self.wireError(for: error, messageLimit: messageLimit))
    }

    static func wireError(for error: any Error, messageLimit: Int?) -> any Error {
        switch error {
        case NIOWebSocketError.invalidFrameLength, NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge:
            if let messageLimit { return WireError.messageTooLarge(limit: messageLimit) }
            return WireError.malformed("a WebSocket message over the limit")
        case let error as NIOWebSocketError: return WireError.malformed("WebSocket: \(error)")
        case let error as NIOWebSocketFrameAggregator.Error: return WireError.malformed("WebSocket: \(error)")
        default: return error
        }
    }

    private var maskKey: WebSocketMaskingKey? { isClient ? .random() : nil }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .text:
            guard !refused else { return }
            messages += 1
            if messages == 1, let limit = firstMessageLimit, frame.length > limit {
                refused = true
                return context.fireErrorCaught(WireError.frameTooLarge(length: frame.length, limit: limit))
            }
            var data = frame.unmaskedData
            let bytes = data.readBytes(length: data.readableBytes) ?? []
            let payload: [UInt8]
            switch (form, frame.opcode) {
            case (.binary, .binary): payload = bytes
            case (.json, .text): payload = (try? JSONMapping.payload(fromJSON: bytes)) ?? []
            default: payload = []  // the other form: malformed for this connection
            }
            context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(bytes: payload)))
        case .ping:
            var data = frame.unmaskedData
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: maskKey, data: data.readSlice(length: data.readableBytes)!)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            // The peer is done: answer its close (unless ours went first) and end the connection.
            if !closeSent {
                closeSent = true
                var data = frame.unmaskedData
                let code = data.readSlice(length: min(2, data.readableBytes)) ?? context.channel.allocator.buffer(capacity: 0)
                let reply = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: maskKey, data: code)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(reply)).whenComplete { _ in channel.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        default:
            break
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let payload = unwrapOutboundIn(data)
        let frame: WebSocketFrame
        switch form {
        case .binary:
            frame = WebSocketFrame(fin: true, opcode: .binary, maskKey: maskKey, data: payload)
        case .json:
            guard let json = try? JSONMapping.json(fromPayload: payload.readableBytesView) else {
                promise?.fail(WireError.malformed("an outbound payload is not an Envelope"))
                return
            }
            frame = WebSocketFrame(fin: true, opcode: .text, maskKey: maskKey, data: context.channel.allocator.buffer(string: json))
        }
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // Closing our output is the end of what we send: a close frame (normal closure). The peer
        // answers with its own and closes, which ends the connection.
        guard mode == .output else { return context.close(mode: mode, promise: promise) }
        guard !closeSent else { promise?.succeed(()); return }
        closeSent = true
        var code = context.channel.allocator.buffer(capacity: 2)
        code.write(webSocketErrorCode: .normalClosure)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: maskKey, data: code)), promise: promise)
    }
}
