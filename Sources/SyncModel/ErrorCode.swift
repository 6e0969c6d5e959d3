/// Every error a client can meet, batch rejections and connection errors alike. Each case maps to
/// one value of the wire enum `ErrorCode` (see `protocol/README.md`).
public enum ErrorCode: String, Hashable, Sendable, CaseIterable {
    // MARK: Batch rejections (sent in `Reject`; the connection stays up)

    /// An operation targets a row that no longer exists (deleted meanwhile).
    case targetDeleted
    /// A temp ID is referenced that this client never created, or whose batch was rejected.
    case unknownTempID
    /// A link names a media file that is not in the course's library.
    case unknownMedia
    /// A title or name is empty after trimming, too long, has control characters or bad UTF-8.
    case invalidTitle
    /// A media file's URL, duration or size is out of range, or its URL has bad UTF-8.
    case invalidMedia
    /// The batch weighs more than `maxOpsPerBatch`.
    case batchTooLarge
    /// The chapter would hold more than `maxVideosPerChapter` videos.
    case chapterFull
    /// The course would hold more chapters, videos or media files than its limits allow.
    case courseFull
    /// A temp ID is created twice (in this batch or an earlier one).
    case duplicateTempID
    /// A placement is anchored on the row being moved.
    case invalidPlacement
    /// A video is moved into a chapter that already holds the same media file.
    case mediaAlreadyInChapter
    /// The batch has no operations, or a `linkMedia` has no items.
    case emptyBatch
    /// The token does not allow this: a viewer pushing, or a course the token does not cover.
    case forbidden

    // MARK: Connection errors (sent in `Error`; the server closes the connection after it)

    /// The client's protocol version is not one the server speaks.
    case unsupportedProtocolVersion
    /// The token is missing, malformed or its signature does not verify.
    case unauthenticated
    /// The token's expiry has passed.
    case tokenExpired
    /// A frame could not be decoded, or a message lacks a required field.
    case malformedFrame
    /// A frame's length prefix exceeds the maximum frame size.
    case frameTooLarge
    /// A message arrived that is not allowed in the connection's state (e.g. `Push` before `Hello`).
    case unexpectedMessage
    /// The course does not exist.
    case unknownCourse
    /// The client read its diffs too slowly; resubscribe from your cursor.
    case slowConsumer
    /// Nothing arrived for longer than the idle timeout.
    case idleTimeout
    /// The server is shutting down; reconnect (with backoff) to another node or later.
    case shuttingDown
    /// The server failed; the batch was not applied. Retry later.
    case internalError
    /// The connection sent more pushes or bytes per second than the server allows; reconnect after
    /// the `retry_after_ms` the error carries (unanswered batches are resent then).
    case rateLimited
    /// A count limit: too many connections for this user or from this address, or too many
    /// subscriptions on one connection. Reconnect later (after `retry_after_ms` if given).
    case limitExceeded

    /// Whether this code rejects one batch (`Reject`) rather than ending the connection (`Error`).
    public var isBatchRejection: Bool {
        switch self {
        case .targetDeleted, .unknownTempID, .unknownMedia, .invalidTitle, .invalidMedia, .batchTooLarge,
             .chapterFull, .courseFull, .duplicateTempID, .invalidPlacement, .mediaAlreadyInChapter,
             .emptyBatch, .forbidden:
            true
        default:
            false
        }
    }
}

/// Why a batch was refused: a code, the index of the failing operation (when one op is to blame)
/// and a sentence a person understands.
public struct Rejection: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var opIndex: Int?
    public var message: String

    public init(_ code: ErrorCode, opIndex: Int? = nil, _ message: String) {
        self.code = code
        self.opIndex = opIndex
        self.message = message
    }

    public var description: String {
        if let opIndex { return "\(code.rawValue) at op \(opIndex): \(message)" }
        return "\(code.rawValue): \(message)"
    }
}

extension ErrorCode {
    /// Connection errors after which reconnecting cannot help (the spec's error table): a client stops and
    /// reports them instead of retrying. The client library and the editor page (through the
    /// server's generated `limits.js`) both read this one list.
    public var isPermanentRefusal: Bool {
        switch self {
        case .unsupportedProtocolVersion, .unauthenticated, .tokenExpired, .forbidden, .unknownCourse: true
        default: false
        }
    }
}
