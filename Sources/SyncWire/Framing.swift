import SyncModel

/// The framing of the protocol: a 4-byte big-endian payload length, then the payload.
public enum Framing {
    /// Bytes of the length prefix.
    public static let headerBytes = 4

    /// `payload` with its length prefix.
    public static func frame(_ payload: some Collection<UInt8>) -> [UInt8] {
        let length = UInt32(payload.count)
        return [UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16),
                UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length)] + payload
    }

    /// The payload of one complete frame held in `bytes` (which must be exactly one frame).
    public static func payload(ofFrame bytes: [UInt8], limit: Int) throws(WireError) -> ArraySlice<UInt8> {
        guard bytes.count >= headerBytes else {
            throw .truncatedFrame(expected: headerBytes, received: bytes.count)
        }
        let length = bytes[0..<headerBytes].reduce(0) { $0 << 8 | Int($1) }
        guard length <= limit else { throw .frameTooLarge(length: length, limit: limit) }
        guard bytes.count - headerBytes >= length else {
            throw .truncatedFrame(expected: headerBytes + length, received: bytes.count)
        }
        guard bytes.count - headerBytes == length else {
            throw .malformed("\(bytes.count - headerBytes - length) bytes after the frame")
        }
        return bytes[headerBytes...]
    }
}
