import SyncModel

/// When a node checks the store for commits it may not have heard of, without I/O. Nodes that
/// share a store learn of each other's commits by notifications (PostgreSQL's LISTEN/NOTIFY), which
/// can be lost: a listener whose connection dropped hears nothing of what was committed meanwhile.
/// So a node reads every active course's seq from the store when its listener (re)connects, and
/// every ``checkInterval`` anyway, which bounds how stale a subscriber can stay if a notification
/// is lost some other way. The real ``SyncServer`` and the simulator follow this one policy.
package struct CommitWatch: Hashable, Sendable {
    package let checkInterval: Duration
    package private(set) var nextCheck: Moment

    package init(checkInterval: Duration, now: Moment) {
        precondition(checkInterval > .zero)
        self.checkInterval = checkInterval
        nextCheck = now + checkInterval
    }

    /// The listener (re)connected: notifications sent while it was away are lost, check now.
    package mutating func listenerConnected(now: Moment) -> Bool {
        nextCheck = now + checkInterval
        return true
    }

    /// Whether a check is due at `now` (then the next is scheduled).
    package mutating func handleTimeout(now: Moment) -> Bool {
        guard now >= nextCheck else { return false }
        nextCheck = now + checkInterval
        return true
    }
}
