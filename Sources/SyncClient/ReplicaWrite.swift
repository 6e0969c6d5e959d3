import SyncModel

/// Everything one engine step changed that the replica file must keep, written in one transaction.
package struct ReplicaWrite: Hashable, Sendable {
    package enum ConfirmedChange: Hashable, Sendable {
        /// Logged after the base.
        case diff(Diff)
        /// The new base (from the server, or the engine's state when the log has grown); the log empties.
        case snapshot(CourseState)
    }

    /// Changes to the confirmed state, in order.
    var confirmed: [ConfirmedChange] = []
    /// Pending batches to store (new or rewritten).
    var batches: [BatchSeq: Batch] = [:]
    /// Pending batches to forget (acked and confirmed, or rolled back).
    var deletedBatches: Set<BatchSeq> = []
    var temps: [TempID: EntityID] = [:]
    var localKeys: [EntityID: LocalKey] = [:]
    /// The temp and batch counters, when they moved.
    var counters: Counters?
    /// Replace every visible row (when the replica opens).
    var replaceRows: VisibleRows?
    var rows = RowDelta()

    package var isEmpty: Bool {
        confirmed.isEmpty && batches.isEmpty && deletedBatches.isEmpty && temps.isEmpty && localKeys.isEmpty
            && counters == nil && replaceRows == nil && rows.isEmpty
    }
}

/// The next temp ID and batch seq to hand out: never reused, so stored with every step that moves them.
package struct Counters: Hashable, Sendable {
    package var nextTemp: UInt64
    package var nextBatchSeq: BatchSeq
}

/// What a replica file holds, loaded when it opens.
package struct ReplicaContents: Hashable, Sendable {
    package var clientID: ClientID
    package var confirmed: CourseState
    package var pending: [Batch]
    package var knownTemps: [TempID: EntityID]
    package var localKeys: [EntityID: LocalKey]
    package var nextTemp: UInt64
    package var nextBatchSeq: BatchSeq
    /// Rows named by the diffs logged after the confirmed state's base.
    package var loggedRows = 0

    /// A new replica of `courseID` that has seen nothing yet.
    package static func empty(clientID: ClientID, courseID: EntityID) -> ReplicaContents {
        ReplicaContents(clientID: clientID, confirmed: CourseState(course: Course(id: courseID, title: "", seq: 0)),
                        pending: [], knownTemps: [:], localKeys: [:], nextTemp: 1, nextBatchSeq: 1)
    }
}
