import SyncModel
import SyncWire

/// The policy of a connection's outgoing queue, without I/O or locks: the real ``Outbox`` wraps it
/// for the NIO driver, and the simulator uses it as its network's server side, so both follow the
/// same rules:
///
/// - It holds at most `capacity` frames. Fan-out and control frames (diffs, answers, pings) never
///   wait: a frame that does not fit **overflows** the queue, which then drops what it holds and
///   ends with `Error{SLOW_CONSUMER}`. Catch-up frames wait for room instead (``hasRoom``).
/// - A fatal `Error` is the **last** frame: after ``close(_:discardingQueued:)`` (or an overflow)
///   nothing more is accepted, and ``next()`` ends after the error.
package struct OutboxQueue<Frame: Sendable>: Sendable {
    package enum Item: Sendable {
        case frame(Frame)
        /// Send `Error{code}`, then close the connection.
        case close(ConnectionError)
    }

    package enum Enqueued: Hashable, Sendable {
        case queued
        /// The queue was full: it now ends with `SLOW_CONSUMER` (the caller forgets the subscriber).
        case overflowed
        /// The queue is closing or closed: the frame was dropped.
        case refused
        /// (Waiting mode only) the queue is full: wait for ``hasRoom`` and offer the frame again.
        case full
    }

    package let capacity: Int
    private var items: [Item] = []
    private var head = 0
    /// A close is queued: nothing more is accepted.
    package private(set) var isClosing = false
    /// The close was taken by ``next()``: the queue is done.
    package private(set) var isFinished = false
    /// Why it closed (nil until then).
    package private(set) var closeReason: ConnectionError?

    package init(capacity: Int) {
        precondition(capacity > 1)
        self.capacity = capacity
    }

    /// Frames waiting (not counting a queued close).
    package var count: Int {
        let queued = items.count - head
        return isClosing && !isFinished && queued > 0 ? queued - 1 : queued
    }

    package var isEmpty: Bool { items.count == head }

    /// Room for catch-up: at most half full (or closing, which waiters must notice).
    package var hasRoom: Bool { isClosing || count <= capacity / 2 }

    /// Queues a frame. `waiting: false` (fan-out, answers, pings): a full queue overflows.
    /// `waiting: true` (catch-up): a full queue answers ``Enqueued/full`` and nothing changes.
    package mutating func enqueue(_ frame: Frame, waiting: Bool = false) -> Enqueued {
        guard !isClosing else { return .refused }
        if count >= capacity {
            if waiting { return .full }
            close(ConnectionError(.slowConsumer, "the connection did not read fast enough and fell \(capacity) frames behind; reconnect and resubscribe from your cursor"),
                  discardingQueued: true)
            return .overflowed
        }
        items.append(.frame(frame))
        return .queued
    }

    /// Ends the queue with `Error{error.code}` after what is queued, or instead of it. Later frames
    /// are refused; a second close is ignored (the first error stays the last frame).
    package mutating func close(_ error: ConnectionError, discardingQueued: Bool = false) {
        guard !isClosing else { return }
        isClosing = true
        closeReason = error
        if discardingQueued {
            items = []
            head = 0
        }
        items.append(.close(error))
    }

    /// The next item to write, if any. After the close item, always `nil`.
    package mutating func next() -> Item? {
        guard head < items.count else { return nil }
        let item = items[head]
        head += 1
        if head > 64, head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        if case .close = item { isFinished = true }
        return item
    }

    /// The next items to write, oldest first, at most `limit` (the frames one socket write takes
    /// together); a close is always the last of them. Empty when nothing is queued.
    package mutating func next(upTo limit: Int) -> [Item] {
        var taken: [Item] = []
        while taken.count < limit, let item = next() {
            taken.append(item)
        }
        return taken
    }

    /// Drops everything: the connection is gone.
    package mutating func abandon() {
        items = []
        head = 0
        isClosing = true
        isFinished = true
    }
}
