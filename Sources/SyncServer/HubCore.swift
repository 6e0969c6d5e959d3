import SyncModel
import SyncStorage
import SyncWire

/// A course hub's decisions, without I/O: batches queued and committed in groups, answers to
/// authors, diffs fanned out, subscribers caught up from the store and made live. ``CourseHub``
/// drives it with the real store and outboxes; the simulator drives it with a fake store and network.
///
/// Inputs are mutating methods; the effects they cause are collected and taken with
/// ``takeEffects()`` (the same output style as ``ServerSession`` and the client's engine).
///
/// Order guarantees: the batches of one connection are answered in arrival order; a commit's `Ack`
/// is sent before its `Diff`, also when a catch-up read finds that diff before the commit returns;
/// every subscriber gets every commit once, in seq order, with no gap (a subscriber that would see
/// a gap, because another node committed, is caught up from the store), and whenever the hub learns
/// of a later commit, from any source, every live subscriber behind it is caught up.
package struct HubCore<Connection: Hashable & Comparable & Sendable>: Sendable {
    /// What the driver must do. Effects that start work (`commit`, `loadCatchUp`, `sendCatchUp`)
    /// are answered later with the matching input.
    package enum Effect: Hashable, Sendable {
        /// Commit the group in one store transaction; answer with ``committed(_:)`` or ``commitFailed(unknownCourse:)``.
        case commit([Batch])
        /// Queue a frame (never waits; a full outbox cuts the connection as a slow consumer).
        case send(Connection, WireMessage)
        /// Queue a diff (encoded once) to each connection; answer ``sendFailed(_:)`` for each whose outbox was full.
        case broadcast(Diff, to: [Connection])
        /// Read the commits after `after` (or a snapshot); answer ``caughtUp(_:generation:_:)`` or ``catchUpFailed(_:generation:unknownCourse:)``.
        case loadCatchUp(Connection, generation: Int, after: CourseSeq)
        /// Queue catch-up frames, each waiting for room, then wait for room for a few more; then
        /// answer ``catchUpSent(_:generation:)``.
        case sendCatchUp(Connection, generation: Int, [WireMessage])
        /// Send `Error` and close the connection.
        case close(Connection, ConnectionError)
        /// One of the connection's pushes is answered (its in-flight budget).
        case release(Connection)
        /// Draining and nothing is queued or committing any more.
        case idle
    }

    struct Subscription: Hashable, Sendable {
        var cursor: CourseSeq
        /// Live: receives diffs as they commit. Not live: being caught up from the store.
        var live = false
        /// `Subscribed` was sent (the initial catch-up ended).
        var announced = false
        /// Tells a restarted subscription's catch-up from an abandoned one.
        let generation: Int
        /// The last read returned a full chunk: the log may hold more than this hub has seen
        /// committed (after a restart the hub has seen nothing), so read again before going live.
        var more = false
        /// The last read stopped before the diff of this connection's own batch in the group being
        /// committed: its `Ack` must go first, so the catch-up resumes once the group is answered.
        var heldForGroup = false
        /// The catch-up frames were sent while held: read on when the group is answered.
        var waitingForGroup = false
    }

    struct Pending: Hashable, Sendable {
        let batch: Batch
        let origin: Connection
    }

    package let courseID: EntityID
    let maxGroupBatches: Int
    /// The most diffs one catch-up read returns (the driver's store read limit).
    package let catchUpChunk: Int
    /// The highest seq this hub has seen committed.
    private(set) var lastSeq: CourseSeq = 0
    private(set) var subscriptions: [Connection: Subscription] = [:]
    private var queue: [Pending] = []
    /// The group being committed.
    private var committing: [Pending]?
    private(set) var accepting = true
    private var draining = false
    private var nextGeneration = 0
    /// A commit announced by another node while a group commit was in flight (its own commit's
    /// announcement may overtake its broadcast); looked at once the group is answered.
    private var announcedSeq: CourseSeq = 0
    private var effects: [Effect] = []

    package init(courseID: EntityID, maxGroupBatches: Int, catchUpChunk: Int) {
        precondition(maxGroupBatches > 0 && catchUpChunk > 0)
        self.courseID = courseID
        self.maxGroupBatches = maxGroupBatches
        self.catchUpChunk = catchUpChunk
    }

    package var subscriberCount: Int { subscriptions.count }

    /// No subscriber (live or catching up), nothing queued, nothing being committed: the hub
    /// holds nothing anyone waits for, and may be dropped.
    package var isQuiet: Bool { subscriptions.isEmpty && queue.isEmpty && committing == nil }

    /// What to do since the last call, in order.
    package mutating func takeEffects() -> [Effect] {
        defer { effects = [] }
        return effects
    }

    /// Whether the hub still needs `connection` (a subscription, or a batch not yet answered).
    package func references(_ connection: Connection) -> Bool {
        subscriptions[connection] != nil || queue.contains { $0.origin == connection }
            || (committing?.contains { $0.origin == connection } ?? false)
    }

    // MARK: - Batches

    /// Queues `batch`; `false` if the hub no longer accepts batches (draining): the batch is not
    /// answered, and its author resends it after reconnecting.
    package mutating func push(_ batch: Batch, from origin: Connection) -> Bool {
        guard accepting else { return false }
        queue.append(Pending(batch: batch, origin: origin))
        let weight = batch.ops.reduce(0) { $0 + $1.weight }
        if weight > Limits.progressThresholdOps {
            effects.append(.send(origin, .progress(Progress(courseID: courseID, batchSeq: batch.batchSeq, done: 0, total: UInt32(weight)))))
        }
        if committing == nil { startGroup() }
        return true
    }

    private mutating func startGroup() {
        guard committing == nil, !queue.isEmpty else { return }
        let group = Array(queue.prefix(maxGroupBatches))
        queue.removeFirst(group.count)
        committing = group
        effects.append(.commit(group.map(\.batch)))
    }

    /// The group committed: one outcome per batch, in order.
    package mutating func committed(_ outcomes: [BatchOutcome]) {
        guard let group = committing else { return }
        precondition(outcomes.count == group.count, "one outcome per batch")
        committing = nil
        for (pending, outcome) in zip(group, outcomes) {
            answer(pending, outcome)
            effects.append(.release(pending.origin))
        }
        groupEnded()
    }

    /// The store failed: nothing of the group was committed. For a course that does not exist each
    /// batch is rejected with `UNKNOWN_COURSE` (every `Push` gets an `Ack` or a `Reject`); for any
    /// other failure each author's connection is closed with `INTERNAL_ERROR`, and the clients
    /// resend after reconnecting, which exactly-once makes safe.
    package mutating func commitFailed(unknownCourse: Bool) {
        guard let group = committing else { return }
        committing = nil
        for pending in group {
            if unknownCourse {
                let rejection = Rejection(.unknownCourse, "course \(courseID) does not exist")
                effects.append(.send(pending.origin, .reject(BatchRejection(courseID: courseID, batchSeq: pending.batch.batchSeq,
                                                                            rejection: rejection))))
            } else {
                effects.append(.close(pending.origin, ConnectionError(.internalError, "the server could not commit; reconnect and resend")))
            }
            effects.append(.release(pending.origin))
        }
        groupEnded()
    }

    private mutating func groupEnded() {
        // Catch-ups that stopped before a diff of this group read on: its acks are out.
        for connection in subscriptions.keys.sorted() where subscriptions[connection]!.heldForGroup {
            subscriptions[connection]!.heldForGroup = false
            if subscriptions[connection]!.waitingForGroup {
                subscriptions[connection]!.waitingForGroup = false
                effects.append(.loadCatchUp(connection, generation: subscriptions[connection]!.generation,
                                            after: subscriptions[connection]!.cursor))
            }
        }
        startGroup()
        if committing == nil {
            if announcedSeq > lastSeq { catchUpLiveSubscribers(to: announcedSeq) }
            if draining { effects.append(.idle) }
        }
    }

    private mutating func answer(_ pending: Pending, _ outcome: BatchOutcome) {
        let batch = pending.batch
        switch outcome {
        case .committed(let commit):
            let weight = batch.ops.reduce(0) { $0 + $1.weight }
            if weight > Limits.progressThresholdOps {
                effects.append(.send(pending.origin, .progress(Progress(courseID: courseID, batchSeq: batch.batchSeq,
                                                                        done: UInt32(weight), total: UInt32(weight)))))
            }
            effects.append(.send(pending.origin, .ack(commit.ack)))
            broadcast(commit.diff)
        case .replayed(let ack):
            effects.append(.send(pending.origin, .ack(ack)))
            // Committed by a call whose answer was lost (this node's, or another's after a resend):
            // the hub never broadcast it, so its live subscribers are caught up from the store.
            if ack.seq > lastSeq { announcedSeq = max(announcedSeq, ack.seq) }
        case .rejected(let rejection):
            effects.append(.send(pending.origin, .reject(BatchRejection(courseID: courseID, batchSeq: batch.batchSeq, rejection: rejection))))
        }
    }

    /// Stops accepting batches; `.idle` comes once every queued batch is answered (at once if none is).
    package mutating func drain() {
        accepting = false
        draining = true
        if committing == nil && queue.isEmpty { effects.append(.idle) }
    }

    // MARK: - Subscriptions

    /// Catches `connection` up from `sinceSeq` (diffs, or a snapshot), then `Subscribed`, then live.
    /// Subscribing again restarts the catch-up from the new cursor.
    package mutating func subscribe(_ connection: Connection, sinceSeq: CourseSeq) {
        nextGeneration += 1
        subscriptions[connection] = Subscription(cursor: sinceSeq, generation: nextGeneration)
        effects.append(.loadCatchUp(connection, generation: nextGeneration, after: sinceSeq))
    }

    package mutating func unsubscribe(_ connection: Connection) {
        subscriptions[connection] = nil
    }

    /// The connection's outbox was full: it is cut as a slow consumer and stops receiving.
    package mutating func sendFailed(_ connection: Connection) {
        subscriptions[connection] = nil
    }

    private mutating func broadcast(_ diff: Diff) {
        lastSeq = max(lastSeq, diff.seq)
        var recipients: [Connection] = []
        var gaps: [Effect] = []
        // In connection order, so that a simulation replays exactly.
        for connection in subscriptions.keys.sorted() {
            let subscription = subscriptions[connection]!
            guard subscription.live, diff.seq > subscription.cursor else { continue }
            guard diff.seq == subscription.cursor + 1 else {
                // Another node committed in between: fill the gap from the store.
                subscriptions[connection]?.live = false
                gaps.append(.loadCatchUp(connection, generation: subscription.generation, after: subscription.cursor))
                continue
            }
            subscriptions[connection]?.cursor = diff.seq
            recipients.append(connection)
        }
        if !recipients.isEmpty { effects.append(.broadcast(diff, to: recipients)) }
        effects += gaps
    }

    /// A commit became known by other means than this hub's own group (another node's
    /// notification, a periodic check of the store, a subscriber's catch-up read): catch every live
    /// subscriber up to it.
    package mutating func noteCommitted(upTo seq: CourseSeq) {
        guard seq > lastSeq else { return }
        if committing != nil {
            // Its own commit's announcement may overtake the group's answer: look once answered.
            announcedSeq = max(announcedSeq, seq)
            return
        }
        catchUpLiveSubscribers(to: seq)
    }

    private mutating func catchUpLiveSubscribers(to seq: CourseSeq) {
        guard seq > lastSeq else { return }
        lastSeq = seq
        for connection in subscriptions.keys.sorted() {
            let subscription = subscriptions[connection]!
            guard subscription.live, subscription.cursor < seq else { continue }
            subscriptions[connection]?.live = false
            effects.append(.loadCatchUp(connection, generation: subscription.generation, after: subscription.cursor))
        }
    }

    /// The store answered a ``Effect/loadCatchUp(_:generation:after:)``.
    package mutating func caughtUp(_ connection: Connection, generation: Int, _ result: CatchUp) {
        // The subscription may have been dropped or restarted while the store was read.
        guard var current = subscriptions[connection], current.generation == generation else { return }
        var messages: [WireMessage] = []
        switch result {
        case .snapshot(let state):
            if mayHoldUnanswered(state, for: connection) {
                // Possibly taken after the store committed this connection's batch, before the
                // hub heard back: it must not reach the author before the batch's Ack.
                current.heldForGroup = true
            } else {
                messages = Self.snapshotParts(of: state).map(WireMessage.snapshot)
                current.cursor = state.seq
            }
            current.more = false
        case .diffs(let diffs):
            current.more = diffs.count >= catchUpChunk
            for diff in diffs where diff.seq == current.cursor + 1 {
                if isUnanswered(diff.origin, from: connection) {
                    current.heldForGroup = true
                    current.more = false
                    break
                }
                messages.append(.diff(diff))
                current.cursor = diff.seq
            }
        }
        subscriptions[connection] = current
        effects.append(.sendCatchUp(connection, generation: generation, messages))
    }

    /// Whether `origin` is a batch `connection` pushed that is in the group being committed.
    private func isUnanswered(_ origin: BatchOrigin, from connection: Connection) -> Bool {
        committing?.contains { $0.origin == connection && $0.batch.clientID == origin.clientID && $0.batch.batchSeq == origin.batchSeq } ?? false
    }

    /// A snapshot may hold the effect of the group being committed; the author must wait for it
    /// when any of its batches is in that group and the snapshot is at or past the hub's last seq.
    private func mayHoldUnanswered(_ state: CourseState, for connection: Connection) -> Bool {
        state.seq > lastSeq && (committing?.contains { $0.origin == connection } ?? false)
    }

    package mutating func catchUpFailed(_ connection: Connection, generation: Int, unknownCourse: Bool) {
        guard subscriptions[connection]?.generation == generation else { return }
        subscriptions[connection] = nil
        effects.append(.close(connection, unknownCourse ? ConnectionError(.unknownCourse, "course \(courseID) does not exist")
                                                        : ConnectionError(.internalError, "the server could not read the course; reconnect")))
    }

    /// The catch-up frames are queued and there is room for more: go live, or read on.
    package mutating func catchUpSent(_ connection: Connection, generation: Int) {
        guard var current = subscriptions[connection], current.generation == generation else { return }
        if current.heldForGroup {
            // The rest waits for this connection's Ack (``groupEnded()``).
            subscriptions[connection]!.waitingForGroup = true
            return
        }
        // A read that reached past what the hub knew tells of commits the other live subscribers
        // have not been sent: catch them up too.
        noteCommitted(upTo: current.cursor)
        guard current.cursor >= max(lastSeq, announcedSeq), !current.more else {
            return effects.append(.loadCatchUp(connection, generation: generation, after: current.cursor))
        }
        // From here until the next commit's broadcast nothing waits, so no commit can slip past.
        current.live = true
        if !current.announced {
            current.announced = true
            effects.append(.send(connection, .subscribed(courseID: courseID, seq: current.cursor)))
        }
        subscriptions[connection] = current
    }

    /// Splits a snapshot into parts of about ``Limits/snapshotPartBytes``, each repeating the course row.
    package static func snapshotParts(of state: CourseState) -> [SnapshotPart] {
        let budget = Limits.snapshotPartBytes
        var parts: [SnapshotPart] = []
        var part = SnapshotPart(course: state.course, chapters: [], media: [], videos: [], part: 0, last: false)
        var bytes = 0
        func add(_ size: Int, _ append: (inout SnapshotPart) -> Void) {
            if bytes + size > budget, bytes > 0 {
                parts.append(part)
                part = SnapshotPart(course: state.course, chapters: [], media: [], videos: [], part: UInt32(parts.count), last: false)
                bytes = 0
            }
            append(&part)
            bytes += size
        }
        // Rough encoded sizes: three 18-byte IDs and small integers per row, plus the text.
        for chapter in state.orderedChapters {
            add(64 + chapter.title.utf8.count) { $0.chapters.append(chapter) }
        }
        for media in state.media.values.sorted(by: { $0.id < $1.id }) {
            add(80 + media.name.utf8.count + media.cdnURL.utf8.count) { $0.media.append(media) }
        }
        for chapter in state.orderedChapters {
            for video in state.videos(in: chapter.id) {
                add(80 + video.title.utf8.count) { $0.videos.append(video) }
            }
        }
        part.last = true
        parts.append(part)
        return parts
    }
}
