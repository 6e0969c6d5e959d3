import Logging
import NIOConcurrencyHelpers
import NIOCore
import SyncModel
import SyncWire

/// A connection as the course hubs see it: where its frames go, and its budget of unanswered pushes.
public final class ConnectionHandle: Sendable {
    public let clientID: ClientID
    public let outbox: Outbox
    let inFlight: InFlightLimit

    public init(clientID: ClientID, outbox: Outbox, maxInFlight: Int) {
        self.clientID = clientID
        self.outbox = outbox
        inFlight = InFlightLimit(maxInFlight)
    }
}

/// One course on this node: it queues the course's batches and commits them in groups (one
/// store transaction for everything queued, which turns a lock convoy into throughput), answers
/// each batch's author, and fans each commit's diff out to the course's subscribers, encoded once.
///
/// Order guarantees: the batches of one connection are answered in arrival order; a commit's `Ack`
/// is queued before its `Diff`; every subscriber gets every commit once, in seq order, with no gap
/// (a subscriber that would see a gap, because another node committed, is caught up from the store).
actor CourseHub {
    let courseID: EntityID
    private let store: any SyncStore
    private let logger: Logger
    private let maxGroupBatches: Int
    private let catchUpChunk: Int

    /// The highest seq this hub has seen committed.
    private var lastSeq: CourseSeq = 0
    private var subscriptions: [ObjectIdentifier: Subscription] = [:]
    private var queue: [Pending] = []
    private var committing = false
    private var accepting = true
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var nextGeneration = 0
    /// A commit announced by another node while a group commit was in flight (its own commit's
    /// announcement may overtake its broadcast); looked at once the group is answered.
    private var announcedSeq: CourseSeq = 0

    private struct Subscription {
        let handle: ConnectionHandle
        var cursor: CourseSeq
        /// Live: receives diffs as they commit. Not live: being caught up from the store.
        var live = false
        /// `Subscribed` was sent (the initial catch-up ended).
        var announced = false
        /// Tells a restarted subscription's catch-up from an abandoned one.
        let generation: Int
    }

    private struct Pending {
        let batch: Batch
        let origin: ConnectionHandle
    }

    init(courseID: EntityID, store: any SyncStore, logger: Logger, maxGroupBatches: Int, catchUpChunk: Int) {
        self.courseID = courseID
        self.store = store
        self.maxGroupBatches = maxGroupBatches
        self.catchUpChunk = catchUpChunk
        var logger = logger
        logger[metadataKey: "course"] = "\(courseID)"
        self.logger = logger
    }

    // MARK: - Batches

    /// Queues `batch` for commit. `false` if the hub no longer accepts batches (shutting down): the
    /// batch is not answered, and its author resends it after reconnecting.
    func push(_ batch: Batch, from origin: ConnectionHandle) -> Bool {
        guard accepting else { return false }
        queue.append(Pending(batch: batch, origin: origin))
        let weight = batch.ops.reduce(0) { $0 + $1.weight }
        if weight > Limits.progressThresholdOps {
            origin.outbox.send(.progress(Progress(courseID: courseID, batchSeq: batch.batchSeq, done: 0, total: UInt32(weight))))
        }
        if !committing {
            committing = true
            Task { await self.commitQueued() }
        }
        return true
    }

    /// Stops accepting batches and returns once every queued batch is answered.
    func drain() async {
        accepting = false
        guard committing || !queue.isEmpty else { return }
        await withCheckedContinuation { idleWaiters.append($0) }
    }

    private func commitQueued() async {
        while !queue.isEmpty {
            let group = Array(queue.prefix(maxGroupBatches))
            queue.removeFirst(group.count)
            let outcomes: [BatchOutcome]
            do {
                outcomes = try await store.commit(group.map(\.batch), courseID: courseID)
            } catch {
                fail(group, error)
                continue
            }
            assert(outcomes.count == group.count, "one outcome per batch")
            for (pending, outcome) in zip(group, outcomes) {
                answer(pending, outcome)
                pending.origin.inFlight.release()
            }
        }
        committing = false
        if announcedSeq > lastSeq { catchUpLiveSubscribers(to: announcedSeq) }
        let waiters = idleWaiters
        idleWaiters = []
        waiters.forEach { $0.resume() }
    }

    private func answer(_ pending: Pending, _ outcome: BatchOutcome) {
        let outbox = pending.origin.outbox
        let batch = pending.batch
        switch outcome {
        case .committed(let commit):
            let weight = batch.ops.reduce(0) { $0 + $1.weight }
            if weight > Limits.progressThresholdOps {
                outbox.send(.progress(Progress(courseID: courseID, batchSeq: batch.batchSeq, done: UInt32(weight), total: UInt32(weight))))
            }
            outbox.send(.ack(commit.ack))
            broadcast(commit.diff)
        case .replayed(let ack):
            logger.debug("replayed the ack of an already committed batch", metadata: ["client": "\(batch.clientID)", "batch": "\(batch.batchSeq)"])
            outbox.send(.ack(ack))
        case .rejected(let rejection):
            logger.debug("rejected a batch", metadata: ["client": "\(batch.clientID)", "batch": "\(batch.batchSeq)", "code": "\(rejection.code)"])
            outbox.send(.reject(BatchRejection(courseID: courseID, batchSeq: batch.batchSeq, rejection: rejection)))
        }
    }

    /// The store failed: nothing of the group was committed. Each author's connection is closed;
    /// the clients resend after reconnecting, and exactly-once makes that safe.
    private func fail(_ group: [Pending], _ error: any Error) {
        let connectionError: ConnectionError
        if case StoreError.unknownCourse = error {
            connectionError = ConnectionError(.unknownCourse, "course \(courseID) does not exist")
        } else {
            logger.error("group commit failed", metadata: ["batches": "\(group.count)", "error": "\(error)"])
            connectionError = ConnectionError(.internalError, "the server could not commit; reconnect and resend")
        }
        for pending in group {
            pending.origin.outbox.close(connectionError)
            pending.origin.inFlight.release()
        }
    }

    // MARK: - Subscriptions

    /// Catches `handle` up from `sinceSeq` (diffs, or a snapshot), sends `Subscribed`, then keeps it live.
    /// Subscribing again restarts the catch-up from the new cursor.
    func subscribe(_ handle: ConnectionHandle, sinceSeq: CourseSeq) async {
        nextGeneration += 1
        let key = ObjectIdentifier(handle)
        subscriptions[key] = Subscription(handle: handle, cursor: sinceSeq, generation: nextGeneration)
        await catchUp(key, generation: nextGeneration)
    }

    func unsubscribe(_ handle: ConnectionHandle) {
        subscriptions[ObjectIdentifier(handle)] = nil
    }

    var subscriberCount: Int { subscriptions.count }

    private func broadcast(_ diff: Diff) {
        lastSeq = max(lastSeq, diff.seq)
        var encoded: ByteBuffer?
        for (key, subscription) in subscriptions where subscription.live && diff.seq > subscription.cursor {
            guard diff.seq == subscription.cursor + 1 else {
                // Another node committed in between: fill the gap from the store.
                subscriptions[key]?.live = false
                let generation = subscription.generation
                Task { await self.catchUp(key, generation: generation) }
                continue
            }
            if encoded == nil { encoded = ByteBuffer(bytes: WireMessage.diff(diff).payload()) }
            if subscription.handle.outbox.send(encoded: encoded!) {
                subscriptions[key]?.cursor = diff.seq
            } else {
                subscriptions[key] = nil
            }
        }
    }

    /// A commit by another node became known (e.g. by a notification): catch every live
    /// subscriber up to it.
    func noteCommitted(upTo seq: CourseSeq) {
        guard seq > lastSeq else { return }
        if committing {
            announcedSeq = max(announcedSeq, seq)
            return
        }
        catchUpLiveSubscribers(to: seq)
    }

    private func catchUpLiveSubscribers(to seq: CourseSeq) {
        guard seq > lastSeq else { return }
        lastSeq = seq
        for (key, subscription) in subscriptions where subscription.live && subscription.cursor < seq {
            subscriptions[key]?.live = false
            let generation = subscription.generation
            Task { await self.catchUp(key, generation: generation) }
        }
    }

    private func catchUp(_ key: ObjectIdentifier, generation: Int) async {
        while true {
            guard let subscription = subscriptions[key], subscription.generation == generation else { return }
            let handle = subscription.handle
            guard !handle.outbox.isClosing else {
                subscriptions[key] = nil
                return
            }
            let result: CatchUp
            do {
                result = try await store.catchUp(courseID: courseID, after: subscription.cursor, limit: catchUpChunk)
            } catch {
                subscriptions[key] = nil
                if case StoreError.unknownCourse = error {
                    handle.outbox.close(ConnectionError(.unknownCourse, "course \(courseID) does not exist"))
                } else {
                    logger.error("catch-up failed", metadata: ["error": "\(error)"])
                    handle.outbox.close(ConnectionError(.internalError, "the server could not read the course; reconnect"))
                }
                return
            }
            // The subscription may have been dropped or restarted while the store was read.
            guard var current = subscriptions[key], current.generation == generation else { return }
            switch result {
            case .snapshot(let state):
                for part in Self.snapshotParts(of: state) { await handle.outbox.sendWaiting(.snapshot(part)) }
                current.cursor = state.seq
            case .diffs(let diffs):
                for diff in diffs where diff.seq == current.cursor + 1 {
                    await handle.outbox.sendWaiting(.diff(diff))
                    current.cursor = diff.seq
                }
            }
            // Room for `Subscribed` and the first live diffs; then no await until the subscription is live.
            await handle.outbox.waitForSpace()
            // The subscription may have been dropped or restarted while waiting for space.
            guard subscriptions[key]?.generation == generation else { return }
            lastSeq = max(lastSeq, current.cursor)
            if current.cursor >= lastSeq {
                // Nothing between here and going live awaits, so no commit can slip past.
                current.live = true
                if !current.announced {
                    current.announced = true
                    handle.outbox.send(.subscribed(courseID: courseID, seq: current.cursor))
                }
                subscriptions[key] = current
                return
            }
            subscriptions[key] = current
        }
    }

    /// Splits a snapshot into parts of about ``Limits/snapshotPartBytes``, each repeating the course row.
    static func snapshotParts(of state: CourseState) -> [SnapshotPart] {
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

/// A connection's budget of pushes sent but not yet answered. When it is used up the connection
/// stops reading, so TCP pushes back on a client that sends faster than its course commits.
final class InFlightLimit: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state: NIOLockedValueBox<State>

    init(_ limit: Int) {
        precondition(limit > 0)
        state = NIOLockedValueBox(State(available: limit))
    }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLockedValue { state in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume()
    }
}
