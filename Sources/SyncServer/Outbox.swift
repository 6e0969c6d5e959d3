import NIOConcurrencyHelpers
import NIOCore
import SyncModel
import SyncWire

/// What a connection's writer sends next.
package typealias Outgoing = OutboxQueue<ByteBuffer>.Item

/// A connection's bounded queue of outgoing frames: ``OutboxQueue``'s policy behind a lock, with
/// the waits the NIO driver needs. Fan-out never waits on it: a frame that does not fit ends the
/// queue with `SLOW_CONSUMER` (the client resumes from its cursor), so one slow reader cannot stall
/// a course. Catch-up, which produces many frames for one reader, waits for room instead.
///
/// There is one writer: a task awaiting ``next(upTo:)``, or a connection's event-loop writer
/// (``attach(writer:)``), which takes what is queued with ``take(upTo:)`` and is woken when more
/// arrives. A close wakes the attached writer even while it waits for the socket to become
/// writable, so a queued `Error` overtakes a stalled writer and is the last frame written, behind
/// only what the socket already holds.
package final class Outbox: Sendable {
    package let capacity: Int

    private struct State {
        var queue: OutboxQueue<ByteBuffer>
        var reader: (continuation: CheckedContinuation<[Outgoing], Never>, limit: Int)?
        var spaceWaiters: [CheckedContinuation<Void, Never>] = []
        /// The attached writer's wake-up, and whether it waits for one (it took nothing last time).
        var writer: (@Sendable () -> Void)?
        var writerIdle = false
        /// Presence updates not yet written, one per course (later ones merged in), in the order
        /// their courses first had one: written only when no other frame waits, never counted
        /// against the capacity, and dropped with everything else on a close.
        var presence: [PresenceChange] = []
    }

    private let state: NIOLockedValueBox<State>
    private let onOverflow: @Sendable () -> Void

    /// - Parameter onOverflow: called once, when a frame does not fit (for counting).
    package init(capacity: Int, onOverflow: @escaping @Sendable () -> Void = {}) {
        self.capacity = capacity
        state = NIOLockedValueBox(State(queue: OutboxQueue(capacity: capacity)))
        self.onOverflow = onOverflow
    }

    /// Queues a frame. Returns `false` if the outbox overflowed (the connection is then closed
    /// with `SLOW_CONSUMER`) or is already closing.
    @discardableResult
    package func send(_ message: WireMessage) -> Bool {
        send(encoded: ByteBuffer(bytes: message.payload()))
    }

    /// Queues an already encoded frame; see ``send(_:)``.
    @discardableResult
    package func send(encoded payload: ByteBuffer) -> Bool {
        let outcome = update { $0.enqueue(payload) }
        if outcome == .overflowed { onOverflow() }
        return outcome == .queued
    }

    /// Queues a frame, first waiting while the outbox is full (for catch-up, which may send many
    /// frames to one reader). Returns `false` if the outbox is closing.
    @discardableResult
    package func sendWaiting(_ message: WireMessage) async -> Bool {
        await sendWaiting(encoded: ByteBuffer(bytes: message.payload()))
    }

    /// Queues an already encoded frame; see ``sendWaiting(_:)``.
    @discardableResult
    package func sendWaiting(encoded payload: ByteBuffer) async -> Bool {
        while true {
            switch update({ $0.enqueue(payload, waiting: true) }) {
            case .queued: return true
            case .refused, .overflowed: return false
            case .full: await waitForSpace()
            }
        }
    }

    /// Queues a presence update: merged into the one for its course that waits, if any. Presence
    /// never delays another frame (it goes when nothing else waits) and never overflows the
    /// outbox: what waits for a slow reader is one update per course, however many it missed.
    package func sendPresence(_ change: PresenceChange) {
        let wakeups = state.withLockedValue { state -> Wakeups in
            guard !state.queue.isClosing else { return Wakeups() }
            if let index = state.presence.firstIndex(where: { $0.courseID == change.courseID }) {
                state.presence[index] = state.presence[index].followed(by: change)
            } else {
                state.presence.append(change)
            }
            return Self.wakeups(&state)
        }
        wakeups.resume()
    }

    /// Queues `Error{code}` and the close after what is already queued (or, with `force`, instead
    /// of it). Later frames are dropped; only the first close counts.
    package func close(_ error: ConnectionError, force: Bool = false) {
        update { $0.close(error, discardingQueued: force) }
    }

    /// Ends the outbox at once, dropping what is queued: the writer's ``next(upTo:)`` returns nothing.
    package func finish() {
        update { $0.abandon() }
        // Nothing more to write: the writer (which may refer to its connection) goes.
        state.withLockedValue { $0.writer = nil }
    }

    package var isClosing: Bool { state.withLockedValue { $0.queue.isClosing } }

    /// The `Error` the connection was closed with, if the server closed it.
    package var closeReason: ConnectionError? { state.withLockedValue { $0.queue.closeReason } }

    /// The next item for the writer; `nil` when the outbox is finished.
    package func next() async -> Outgoing? {
        await next(upTo: 1).first
    }

    /// Waits for queued items and takes them all, oldest first, at most `limit`, so that a
    /// writer puts a backlog (a group commit's diffs, say) on the socket with one flush and one
    /// hop to its event loop instead of one per frame. Empty when the outbox is finished.
    package func next(upTo limit: Int) async -> [Outgoing] {
        precondition(limit > 0)
        return await withCheckedContinuation { (continuation: CheckedContinuation<[Outgoing], Never>) in
            let wakeups = state.withLockedValue { state in
                precondition(state.reader == nil, "one writer per outbox")
                state.reader = (continuation, limit)
                return Self.wakeups(&state)
            }
            wakeups.resume()
        }
    }

    /// Makes `wake` the outbox's writer (instead of a task awaiting ``next(upTo:)``): it is called,
    /// from any thread, whenever items arrive after a ``take(upTo:)`` found none, and on a close.
    /// The writer then takes them with ``take(upTo:)`` (where it writes, e.g. on its event loop).
    package func attach(writer wake: @escaping @Sendable () -> Void) {
        let wakeups = state.withLockedValue { state in
            precondition(state.reader == nil && state.writer == nil, "one writer per outbox")
            state.writer = wake
            state.writerIdle = true
            return Self.wakeups(&state)
        }
        wakeups.resume()
    }

    /// What is queued, oldest first, at most `limit` (presence updates only when nothing else
    /// waits); empty if nothing is (the attached writer is woken when something is); `nil` once
    /// the outbox is finished.
    package func take(upTo limit: Int) -> [Outgoing]? {
        precondition(limit > 0)
        let (items, wakeups) = state.withLockedValue { state -> ([Outgoing]?, Wakeups) in
            let items = Self.takeQueued(&state, limit: limit)
            if items.isEmpty {
                if state.queue.isFinished { return (nil, Self.wakeups(&state)) }
                state.writerIdle = true
            }
            return (items, Self.wakeups(&state))
        }
        wakeups.resume()
        return items
    }

    /// Returns once the queue has room for catch-up (at most half full), or is closing.
    package func waitForSpace() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state in
                if state.queue.hasRoom { return true }
                state.spaceWaiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Applies `change` to the queue and wakes whoever it concerns, in one critical section.
    private func update<T>(_ change: (inout OutboxQueue<ByteBuffer>) -> T) -> T {
        let (result, wakeups) = state.withLockedValue { state in
            let result = change(&state.queue)
            return (result, Self.wakeups(&state))
        }
        wakeups.resume()
        return result
    }

    /// Whom the queue's state lets go, resumed outside the lock.
    private struct Wakeups {
        var reader: (CheckedContinuation<[Outgoing], Never>, [Outgoing])?
        var writer: (@Sendable () -> Void)?
        var space: [CheckedContinuation<Void, Never>] = []

        func resume() {
            if let (reader, item) = reader { reader.resume(returning: item) }
            writer?()
            space.forEach { $0.resume() }
        }
    }

    /// Up to `limit` queued items, oldest first; presence updates only when nothing else waits
    /// (none once closing).
    private static func takeQueued(_ state: inout State, limit: Int) -> [Outgoing] {
        var items = state.queue.next(upTo: limit)
        if state.queue.isClosing {
            state.presence = []
        } else if items.isEmpty, !state.presence.isEmpty {
            let taken = state.presence.prefix(limit)
            state.presence.removeFirst(taken.count)
            items = taken.map { .frame(ByteBuffer(bytes: WireMessage.presence($0).payload())) }
        }
        return items
    }

    /// Hands the queued items to a waiting reader (nothing once finished), wakes an attached writer
    /// that waits for items (and any attached writer on a close, even one waiting for the socket),
    /// and releases catch-up waiters when there is room.
    private static func wakeups(_ state: inout State) -> Wakeups {
        var wakeups = Wakeups()
        if let waiting = state.reader {
            let items = takeQueued(&state, limit: waiting.limit)
            if !items.isEmpty || state.queue.isFinished {
                wakeups.reader = (waiting.continuation, items)
                state.reader = nil
            }
        }
        if let writer = state.writer {
            let pending = !state.queue.isEmpty || (!state.presence.isEmpty && !state.queue.isClosing)
            if state.queue.isClosing && !state.queue.isFinished || state.writerIdle && (pending || state.queue.isFinished) {
                wakeups.writer = writer
                state.writerIdle = false
            }
        }
        if state.queue.hasRoom {
            wakeups.space = state.spaceWaiters
            state.spaceWaiters = []
        }
        return wakeups
    }
}
