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
/// There is one writer (``next(upTo:)``). While the socket is not writable it waits in
/// ``waitForWrite(_:)``, which a close also ends, so a queued `Error` overtakes a stalled writer and
/// is the last frame written, behind only what the socket already holds.
package final class Outbox: Sendable {
    package let capacity: Int

    private struct State {
        var queue: OutboxQueue<ByteBuffer>
        var reader: (continuation: CheckedContinuation<[Outgoing], Never>, limit: Int)?
        var spaceWaiters: [CheckedContinuation<Void, Never>] = []
        var stalled: CheckedContinuation<Void, Never>?
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

    /// Waits until `write` completes or a close is queued, whichever is first: the writer's pause
    /// while the socket is not writable.
    package func waitForWrite(_ write: EventLoopFuture<Void>) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiting = state.withLockedValue { state in
                guard !state.queue.isClosing else { return false }
                state.stalled = continuation
                return true
            }
            guard waiting else { return continuation.resume() }
            write.whenComplete { _ in
                self.state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                    defer { state.stalled = nil }
                    return state.stalled
                }?.resume()
            }
        }
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
        var stalled: CheckedContinuation<Void, Never>?
        var space: [CheckedContinuation<Void, Never>] = []

        func resume() {
            if let (reader, item) = reader { reader.resume(returning: item) }
            stalled?.resume()
            space.forEach { $0.resume() }
        }
    }

    /// Hands the queued items to a waiting writer (nothing once finished), ends a stalled write wait
    /// on a close, and releases catch-up waiters when there is room.
    private static func wakeups(_ state: inout State) -> Wakeups {
        var wakeups = Wakeups()
        if let waiting = state.reader {
            var items = state.queue.next(upTo: waiting.limit)
            if state.queue.isClosing {
                state.presence = []
            } else if items.isEmpty, !state.presence.isEmpty {
                let taken = state.presence.prefix(waiting.limit)
                state.presence.removeFirst(taken.count)
                items = taken.map { .frame(ByteBuffer(bytes: WireMessage.presence($0).payload())) }
            }
            if !items.isEmpty || state.queue.isFinished {
                wakeups.reader = (waiting.continuation, items)
                state.reader = nil
            }
        }
        if state.queue.isClosing {
            wakeups.stalled = state.stalled
            state.stalled = nil
        }
        if state.queue.hasRoom {
            wakeups.space = state.spaceWaiters
            state.spaceWaiters = []
        }
        return wakeups
    }
}
