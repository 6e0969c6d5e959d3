import SyncModel

/// Something the app may want to show: acknowledgements, rejections, others' changes, how
/// conflicts were resolved, and the connection's state.
public enum ClientEvent: Hashable, Sendable {
    /// The server committed one of this replica's batches as course seq `seq`. `ids` maps the local
    /// key of every row the batch created to its real ID (merged rows map to the existing row).
    case acked(batchSeq: BatchSeq, seq: CourseSeq, ids: [LocalKey: EntityID])
    /// The server refused a batch; it and every later batch that depended on it were rolled back.
    case rejected(Rejected)
    /// Another client's commit changed the course (`seq` is the new cursor).
    case remoteChange(seq: CourseSeq, origin: ClientID)
    /// How the server resolved a conflict in one of this replica's batches.
    case resolution(batchSeq: BatchSeq, note: ResolutionNote)
    /// Progress of a large batch on the server (informational).
    case progress(batchSeq: BatchSeq, done: Int, total: Int)
    case connection(ConnectionState)
    /// Who else is on the course changed (everyone but this replica; empty while offline).
    case presence([Collaborator])
}

/// A rejection as the app sees it: why, and which edits are gone.
public struct Rejected: Hashable, Sendable {
    public var batchSeq: BatchSeq
    public var code: ErrorCode
    /// The failing op's index in the rejected batch, when one op is to blame.
    public var opIndex: Int?
    public var message: String
    /// The rejected batch's edits, then those of every later pending batch that used rows it
    /// created (they could not commit either), in the order they were made.
    public var droppedEdits: [DroppedEdit]
}

/// One edit that was rolled back. ``SyncClient/retry(_:)`` resubmits edits like these.
public struct DroppedEdit: Hashable, Sendable, CustomStringConvertible {
    public var batchSeq: BatchSeq
    /// The operation as it was sent (for ``SyncClient/retry(_:)``).
    package var operation: SyncModel.Operation

    public var description: String { "batch \(batchSeq): \(operation.summary)" }
}

/// The replica's link to the server.
public enum ConnectionState: Hashable, Sendable, CustomStringConvertible {
    /// Not connected; edits queue up. `retryInMs` is the wait before the next attempt, if any.
    case offline(retryInMs: Int?)
    case connecting
    /// Handshake done; catching up.
    case catchingUp
    /// Caught up: live diffs flow and pending batches have been sent.
    case live(seq: CourseSeq)
    /// The server refused this client for good (bad token, no access, unknown course,
    /// unsupported version); the client stops reconnecting.
    case refused(code: ErrorCode, message: String)

    public var description: String {
        switch self {
        case .offline(let wait): wait.map { "offline (retry in \($0) ms)" } ?? "offline"
        case .connecting: "connecting"
        case .catchingUp: "catching up"
        case .live(let seq): "live at seq \(seq)"
        case .refused(let code, let message): "refused: \(code): \(message)"
        }
    }
}

/// Why the client stopped syncing, or why waiting on it (``SyncClient/settle()``,
/// ``SyncClient/run()``) failed. Task cancellation is reported as `CancellationError`.
public enum SyncError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The server refused this client for good: a bad or expired token, no access to the
    /// course, an unknown course, an unsupported protocol version. Reconnecting cannot help.
    case refused(code: ErrorCode, message: String)
    /// The replica file could not be written (disk full, permissions, an I/O error). The client
    /// stopped rather than acknowledge what it did not store; what the file holds is intact.
    case storage(path: String, reason: String)
    /// The server broke the protocol in a way reconnecting cannot repair (an inconsistent
    /// snapshot); the client stopped rather than write it to the replica.
    case protocolViolation(String)
    /// The client was closed before the wait ended.
    case closed

    public var description: String {
        switch self {
        case .refused(let code, let message): "the server refused this client: \(code): \(message)"
        case .storage(let path, let reason): "cannot write the replica \(path): \(reason)"
        case .protocolViolation(let what): "the server broke the protocol: \(what)"
        case .closed: "the client is closed"
        }
    }
}

/// Why an edit call did not take effect. Nothing was applied or queued.
public enum EditError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The edit is invalid against what the replica shows (a bad title, a row that no longer
    /// exists, a chapter already holding the media…): the server would reject it the same way.
    case invalid(Rejection)
    /// The row named by this key is not in the replica.
    case unknownKey(LocalKey)
    /// ``ClientConfiguration/maxPendingBatches`` batches are waiting for the server already.
    case queueFull(limit: Int)
    /// The client was closed.
    case closed

    public var description: String {
        switch self {
        case .invalid(let rejection): "\(rejection.code): \(rejection.message)"
        case .unknownKey(let key): "no row with key \(key) in the replica"
        case .queueFull(let limit): "\(limit) batches are already waiting for the server; wait for the connection to return"
        case .closed: "the client is closed"
        }
    }
}

extension SyncModel.Operation {
    /// A short human description, for logs and rejection reports.
    package var summary: String {
        switch self {
        case .createChapter(let temp, let title, _): "create chapter \(temp) \"\(title)\""
        case .renameChapter(let ref, let title): "rename chapter \(ref) to \"\(title)\""
        case .moveChapter(let ref, let placement): "move chapter \(ref) \(placement)"
        case .deleteChapter(let ref): "delete chapter \(ref)"
        case .registerMedia(let temp, let name, _, _, _): "register media \(temp) \"\(name)\""
        case .linkMedia(let chapter, let items, _): "link \(items.count) media into chapter \(chapter)"
        case .moveVideo(let ref, let chapter, let placement): "move video \(ref) to chapter \(chapter) \(placement)"
        case .renameVideo(let ref, let title): "rename video \(ref) to \"\(title)\""
        case .unlinkVideo(let ref): "unlink video \(ref)"
        }
    }
}
