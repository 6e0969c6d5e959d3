import NIOCore
import NIOEmbedded
import SyncModel
import SyncTransport
import SyncWire
import Testing

@Suite("Frame codec")
struct FrameDecoderTests {
    func channel(limit: Int) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: limit)))
        try channel.pipeline.syncOperations.addHandler(FrameHeaderWriter(maxFrameBytes: limit))
        return channel
    }

    func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

    /// Every byte written out so far, in order (a frame's prefix and payload are two buffers).
    func written(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out += Array(buffer.readableBytesView) }
        return out
    }

    func payloads(_ channel: EmbeddedChannel) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        while let payload = try channel.readInbound(as: ByteBuffer.self) { out.append(Array(payload.readableBytesView)) }
        return out
    }

    @Test func framesSplitAndCoalescedAcrossReadsComeOutWhole() throws {
        let channel = try channel(limit: 64)
        let a = Framing.frame([1, 2, 3])
        let b = Framing.frame([])
        let c = Framing.frame(Array(repeating: 9, count: 40))
        let stream = a + b + c
        // Two frames and a bit in one read, then the rest byte by byte.
        try channel.writeInbound(buffer(Array(stream[0..<(a.count + b.count + 2)])))
        for byte in stream[(a.count + b.count + 2)...] { try channel.writeInbound(buffer([byte])) }
        #expect(try payloads(channel) == [[1, 2, 3], [], Array(repeating: 9, count: 40)])
        #expect(try channel.finish().isClean)
    }

    @Test func frameAtTheLimitPassesAndOneByteMoreIsRefusedFromItsPrefix() throws {
        let limit = Limits.maxClientFrameBytes
        let atLimit = try channel(limit: limit)
        try atLimit.writeInbound(buffer(Framing.frame(Array(repeating: 0, count: limit))))
        #expect(try payloads(atLimit).map(\.count) == [limit])

        let over = try channel(limit: limit)
        // Only the 4-byte prefix is sent: refused before a single payload byte is buffered.
        #expect(throws: WireError.frameTooLarge(length: limit + 1, limit: limit)) {
            try over.writeInbound(self.buffer([0x00, 0x80, 0x00, 0x01]))
        }
    }

    @Test func streamEndingInsideAFrameIsATruncatedFrame() throws {
        let channel = try channel(limit: 64)
        try channel.writeInbound(buffer(Framing.frame([1, 2]) + [0, 0, 0, 9, 1, 2, 3]))
        #expect(try payloads(channel) == [[1, 2]])
        #expect(throws: WireError.truncatedFrame(expected: 13, received: 7)) { _ = try channel.finish() }
    }

    /// The writer prefixes the length and passes the payload itself on, not a copy (a server sends
    /// one encoded diff to many connections); a payload over the limit is refused, nothing written.
    @Test func writerPrefixesLengthWithoutCopyingAndRefusesPayloadsOverTheLimit() throws {
        let channel = try channel(limit: 8)
        let payload = buffer([7, 7, 7])
        try channel.writeOutbound(payload)
        let header = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let body = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(header.readableBytesView) + Array(body.readableBytesView) == [0, 0, 0, 3, 7, 7, 7])
        body.withUnsafeReadableBytes { written in
            payload.withUnsafeReadableBytes { sent in #expect(written.baseAddress == sent.baseAddress, "the payload's own storage") }
        }
        #expect(throws: WireError.frameTooLarge(length: 9, limit: 8)) {
            try channel.writeOutbound(self.buffer(Array(repeating: 1, count: 9)))
        }
        #expect(try written(channel).isEmpty)
    }

    @Test func firstFrameHasItsOwnLimit() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 64, firstFrameMaxBytes: 8)))
        try channel.writeInbound(buffer(Framing.frame(Array(repeating: 1, count: 8))))
        #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == 8)
        // After the first frame, the general limit applies.
        try channel.writeInbound(buffer(Framing.frame(Array(repeating: 2, count: 64))))
        #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == 64)

        let fresh = EmbeddedChannel()
        try fresh.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 64, firstFrameMaxBytes: 8)))
        #expect(throws: WireError.frameTooLarge(length: 9, limit: 8)) {
            try fresh.writeInbound(self.buffer(Framing.frame(Array(repeating: 1, count: 9))))
        }
    }

    @Test func messageCodecDecodesMessagesAndReportsGarbageAsTypedErrors() throws {
        let channel = try channel(limit: 1024)
        try channel.pipeline.syncOperations.addHandler(MessageCodecHandler())
        typealias Inbound = Result<WireMessage, WireError>
        try channel.writeInbound(buffer(WireMessage.ping(nonce: 7).frame()))
        #expect(try channel.readInbound(as: Inbound.self) == .success(.ping(nonce: 7)))

        // Garbage: field 1 with wire type 7 (invalid) arrives as a typed failure, not an error.
        try channel.writeInbound(self.buffer(Framing.frame([0x0F, 0xFF, 0xFF])))
        let garbage = try #require(try channel.readInbound(as: Inbound.self))
        guard case .failure(let error) = garbage else {
            Issue.record("garbage decoded as \(garbage)")
            return
        }
        #expect(error.code == .malformedFrame)
        // The channel still works after a bad frame: closing is the engine's decision.
        try channel.writeInbound(buffer(WireMessage.pong(nonce: 8).frame()))
        #expect(try channel.readInbound(as: Inbound.self) == .success(.pong(nonce: 8)))

        try channel.writeOutbound(WireMessage.ping(nonce: 9))
        #expect(try written(channel) == WireMessage.ping(nonce: 9).frame())
    }
}
