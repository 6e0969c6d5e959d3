import NIOCore
import SyncModel
import SyncWire

/// Splits a byte stream into frame payloads. Refuses a length prefix over `maxFrameBytes` as soon
/// as the prefix arrives, before buffering the frame, so a peer cannot make us hold more.
///
/// `firstFrameMaxBytes` bounds the first frame separately: a server sets it to
/// ``Limits/maxHandshakeFrameBytes`` so that an unauthenticated peer cannot make it buffer 8 MiB.
public struct FrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = ByteBuffer

    public let maxFrameBytes: Int
    public let firstFrameMaxBytes: Int
    private var framesDecoded = 0

    public init(maxFrameBytes: Int, firstFrameMaxBytes: Int? = nil) {
        self.maxFrameBytes = maxFrameBytes
        self.firstFrameMaxBytes = min(firstFrameMaxBytes ?? maxFrameBytes, maxFrameBytes)
    }

    private var currentLimit: Int { framesDecoded == 0 ? firstFrameMaxBytes : maxFrameBytes }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let payload = try nextPayload(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(payload))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while let payload = try nextPayload(&buffer) {
            context.fireChannelRead(Self.wrapInboundOut(payload))
        }
        if buffer.readableBytes > 0 {
            let expected = buffer.readableBytes >= Framing.headerBytes
                ? Framing.headerBytes + Int(buffer.getInteger(at: buffer.readerIndex, as: UInt32.self)!)
                : Framing.headerBytes
            let received = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: received)
            throw WireError.truncatedFrame(expected: expected, received: received)
        }
        return .needMoreData
    }

    /// The next complete payload in `buffer`, or `nil` if more bytes are needed.
    mutating func nextPayload(_ buffer: inout ByteBuffer) throws(WireError) -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        let limit = currentLimit
        guard length <= limit else { throw .frameTooLarge(length: Int(length), limit: limit) }
        guard buffer.readableBytes >= Framing.headerBytes + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: Framing.headerBytes)
        framesDecoded += 1
        return buffer.readSlice(length: Int(length))
    }
}

/// Prefixes each outbound payload with its length, without copying it: the 4-byte prefix and the
/// payload go to the socket as two buffers (gathered into one write).
/// A server sends one encoded diff to many connections: each gets the same bytes, and no
/// connection keeps an encoding buffer as large as the largest frame it was sent. Refuses a payload
/// over `maxFrameBytes` (its write fails with ``WireError/frameTooLarge(length:limit:)``).
public final class FrameHeaderWriter: ChannelOutboundHandler, Sendable {
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int) {
        self.maxFrameBytes = maxFrameBytes
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let payload = unwrapOutboundIn(data)
        guard payload.readableBytes <= maxFrameBytes else {
            promise?.fail(WireError.frameTooLarge(length: payload.readableBytes, limit: maxFrameBytes))
            return
        }
        var header = context.channel.allocator.buffer(capacity: Framing.headerBytes)
        header.writeInteger(UInt32(payload.readableBytes))
        context.write(wrapOutboundOut(header), promise: nil)
        context.write(wrapOutboundOut(payload), promise: promise)
    }
}

/// Turns frame payloads into ``WireMessage``s and back: sits behind ``FrameDecoder``/``FrameHeaderWriter``.
/// A payload that does not decode is passed on as a `.failure` carrying a ``WireError`` rather than
/// as an error, so an async reader's stream does not end: what to do about it (close, or reject one
/// batch) is the engine's decision.
public final class MessageCodecHandler: ChannelDuplexHandler, Sendable {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = Result<WireMessage, WireError>
    public typealias OutboundIn = WireMessage
    public typealias OutboundOut = ByteBuffer

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = Self.unwrapInboundIn(data)
        let result = Result { () throws(WireError) in try WireMessage(payload: payload.readableBytesView) }
        context.fireChannelRead(Self.wrapInboundOut(result))
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let message = Self.unwrapOutboundIn(data)
        let bytes = message.payload()
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.write(Self.wrapOutboundOut(buffer), promise: promise)
    }
}
