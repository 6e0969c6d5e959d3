import SyncModel

extension Convert {
    /// The one table between SyncModel's error codes and the wire's.
    static let codes: [(ErrorCode, Coursesync_V1_ErrorCode)] = [
        (.targetDeleted, .targetDeleted),
        (.unknownTempID, .unknownTempID),
        (.unknownMedia, .unknownMedia),
        (.invalidTitle, .invalidTitle),
        (.invalidMedia, .invalidMedia),
        (.batchTooLarge, .batchTooLarge),
        (.chapterFull, .chapterFull),
        (.courseFull, .courseFull),
        (.duplicateTempID, .duplicateTempID),
        (.invalidPlacement, .invalidPlacement),
        (.mediaAlreadyInChapter, .mediaAlreadyInChapter),
        (.emptyBatch, .emptyBatch),
        (.forbidden, .forbidden),
        (.unsupportedProtocolVersion, .unsupportedProtocolVersion),
        (.unauthenticated, .unauthenticated),
        (.tokenExpired, .tokenExpired),
        (.malformedFrame, .malformedFrame),
        (.frameTooLarge, .frameTooLarge),
        (.unexpectedMessage, .unexpectedMessage),
        (.unknownCourse, .unknownCourse),
        (.slowConsumer, .slowConsumer),
        (.idleTimeout, .idleTimeout),
        (.shuttingDown, .shuttingDown),
        (.internalError, .internalError),
        (.rateLimited, .rateLimited),
        (.limitExceeded, .limitExceeded),
    ]

    private static let toWire = Dictionary(uniqueKeysWithValues: codes.map { ($0.0, $0.1) })
    private static let fromWire = Dictionary(uniqueKeysWithValues: codes.map { ($0.1.rawValue, $0.0) })

    static func wire(_ code: ErrorCode) -> Coursesync_V1_ErrorCode { toWire[code]! }

    /// Unknown (newer) and unspecified codes are refused: new codes only come with a new protocol version.
    static func code(_ wire: Coursesync_V1_ErrorCode, _ path: String) throws(WireError) -> ErrorCode {
        guard let code = fromWire[wire.rawValue] else { throw .unknownEnumValue(field: path, value: wire.rawValue) }
        return code
    }
}

extension ErrorCode {
    /// The numeric value of this code on the wire (`protocol/sync.proto`'s `ErrorCode`).
    public var wireValue: Int { Convert.wire(self).rawValue }
}
