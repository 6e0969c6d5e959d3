import SyncModel

/// Why bytes from the network could not become a ``WireMessage``. Never a crash: every malformed
/// input ends in one of these, and each maps to the protocol error code the peer is sent.
public enum WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A frame's length prefix announces more than the receiver accepts.
    case frameTooLarge(length: Int, limit: Int)
    /// A WebSocket message is larger than the receiver accepts (its frame header announced it, or
    /// its fragments added up to it); `FRAME_TOO_LARGE`, like a frame's length prefix.
    case messageTooLarge(limit: Int)
    /// The stream ended inside a frame.
    case truncatedFrame(expected: Int, received: Int)
    /// The payload is not a valid protobuf `Envelope` (garbage bytes, bad UTF-8 in a server string, ...).
    case malformed(String)
    /// The envelope carries no message (or one this version does not know).
    case emptyEnvelope
    /// A required field is absent (or zero, for IDs and temp IDs). The associated value is its path.
    case missingField(String)
    /// A field has a value of the wrong shape (e.g. an ID that is not 16 bytes).
    case invalidField(String, reason: String)
    /// An enum field holds a value this protocol version does not define.
    case unknownEnumValue(field: String, value: Int)
    /// A message that only the other side may send (a client sending `Diff`, a server sending
    /// `Push`): checked before its fields, so it is `UNEXPECTED_MESSAGE` even when incomplete.
    case wrongDirection(String)
    /// A `Push` is well-formed but one of its operations has invalid content (bad UTF-8 text):
    /// the batch is rejected, the connection stays up.
    case invalidBatch(courseID: EntityID, batchSeq: BatchSeq, rejection: Rejection)

    /// The protocol error code that tells the peer what went wrong.
    public var code: ErrorCode {
        switch self {
        case .frameTooLarge, .messageTooLarge: .frameTooLarge
        case .wrongDirection: .unexpectedMessage
        case .truncatedFrame, .malformed, .emptyEnvelope, .missingField, .invalidField, .unknownEnumValue: .malformedFrame
        case .invalidBatch(_, _, let rejection): rejection.code
        }
    }

    public var description: String {
        switch self {
        case .frameTooLarge(let length, let limit): "frame of \(length) bytes exceeds the limit of \(limit) bytes"
        case .messageTooLarge(let limit): "a WebSocket message exceeds the limit of \(limit) bytes"
        case .truncatedFrame(let expected, let received): "stream ended inside a frame: \(received) of \(expected) bytes"
        case .malformed(let reason): "malformed frame: \(reason)"
        case .emptyEnvelope: "the envelope carries no known message"
        case .wrongDirection(let sentence): sentence
        case .missingField(let path): "missing required field \(path)"
        case .invalidField(let path, let reason): "invalid field \(path): \(reason)"
        case .unknownEnumValue(let field, let value): "unknown value \(value) for \(field)"
        case .invalidBatch(_, let batchSeq, let rejection): "batch \(batchSeq) rejected: \(rejection)"
        }
    }
}
