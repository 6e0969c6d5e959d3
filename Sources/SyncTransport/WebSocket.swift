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
    /// The most bytes any message may carry, if this side refuses larger ones itself (a server,
    /// whose upgrader's frame decoder and aggregator enforce it and whose errors this handler
    /// turns into ``WireError``s: see ``errorCaught(context:error:)``).
    public let messageLimit: Int?
    private var closeSent = false

    public init(form: WebSocketProtocol, isClient: Bool, messageLimit: Int? = nil) {
        self.form = form
        self.isClient = isClient
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

/// Judges a peer's WebSocket messages by their frame headers, before their bytes are read (spec
/// §1.1), as TCP's length prefix is judged: the first message may carry `firstMessageLimit` bytes
/// (the handshake's), every later one `messageLimit`, counting all the frames of a fragmented
/// message. A header that takes its message past the limit fails the read at once with
/// ``WireError/frameTooLarge(length:limit:)`` (the session answers `Error{FRAME_TOO_LARGE}` and
/// closes); nothing after it is passed on. Sits in front of NIO's frame decoder, which would wait
/// for a whole frame (up to its own, larger, limit) before anyone could look at it; the bytes pass
/// through unchanged.
public final class WebSocketSizeGuard: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    public let firstMessageLimit: Int
    public let messageLimit: Int
    /// The header being read (2 to 14 bytes; it may span reads).
    private var header: [UInt8] = []
    /// Payload bytes of the current frame still to pass.
    private var payloadLeft: UInt64 = 0
    /// Bytes announced so far by the current data message's frames.
    private var messageBytes: UInt64 = 0
    private var messagesDone = 0
    private var refused = false

    public init(firstMessageLimit: Int, messageLimit: Int) {
        self.firstMessageLimit = firstMessageLimit
        self.messageLimit = messageLimit
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        let bytes = buffer.readableBytesView
        var index = bytes.startIndex
        var headerStart = index
        while index < bytes.endIndex {
            if payloadLeft > 0 {
                let step = Int(min(payloadLeft, UInt64(bytes.endIndex - index)))
                index += step
                payloadLeft -= UInt64(step)
                continue
            }
            if header.isEmpty { headerStart = index }
            header.append(bytes[index])
            index += 1
            guard let (fin, opcode, length) = Self.parse(header) else { continue }
            header.removeAll(keepingCapacity: true)
            payloadLeft = length
            // Data frames (continuation, text, binary) make up messages; control frames are the decoder's.
            guard opcode <= 0x2 else { continue }
            let limit = messagesDone == 0 ? firstMessageLimit : messageLimit
            let (total, overflow) = messageBytes.addingReportingOverflow(length)
            if overflow || total > UInt64(limit) {
                refused = true
                // What came before the header goes on (whole frames, answered before the error).
                let before = headerStart - bytes.startIndex
                if before > 0, let slice = buffer.getSlice(at: buffer.readerIndex, length: before) {
                    context.fireChannelRead(wrapInboundOut(slice))
                }
                return context.fireErrorCaught(WireError.frameTooLarge(length: Int(clamping: total), limit: limit))
            }
            messageBytes = total
            if fin {
                messagesDone += 1
                messageBytes = 0
            }
        }
        context.fireChannelRead(data)
    }

    /// FIN, the opcode and the payload length of a complete frame header (RFC 6455 §5.2), or nil
    /// while `header` is shorter than the header it begins.
    static func parse(_ header: [UInt8]) -> (fin: Bool, opcode: UInt8, length: UInt64)? {
        guard header.count >= 2 else { return nil }
        let short = header[1] & 0x7F
        let extended = short == 126 ? 2 : short == 127 ? 8 : 0
        let masked = header[1] & 0x80 != 0
        guard header.count == 2 + extended + (masked ? 4 : 0) else { return nil }
        var length = UInt64(short)
        if extended > 0 { length = header[2..<(2 + extended)].reduce(0) { $0 << 8 | UInt64($1) } }
        return (header[0] & 0x80 != 0, header[0] & 0x0F, length)
    }
}
