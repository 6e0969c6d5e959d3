import NIOConcurrencyHelpers
import NIOCore
import SyncModel
import SyncWire

/// What a connection's writer sends next.
public enum Outgoing: Sendable {
    /// An encoded `Envelope` (without the length prefix). A diff is encoded once and shared by every
    /// subscriber's outbox.
    case frame(ByteBuffer)
    /// Send `Error{code}`, then close.
    case close(ConnectionError)
}

/// A connection's bounded queue of outgoing frames. Fan-out never waits on it: a frame that does
/// not fit marks the outbox overflowed, and the connection is closed with `SLOW_CONSUMER` (the
/// client resumes from its cursor), so one slow reader cannot stall a course. Catch-up, which
/// produces many frames for one reader, waits for space instead.
public final class Outbox: Sendable {
    public let capacity: Int

    private struct State {
        var queue = CircularBuffer<Outgoing>()
        var reader: CheckedContinuation<Outgoing?, Never>?
        var spaceWaiters: [CheckedContinuation<Void, Never>] = []
        var finished = false
        var closing = false
    }

    private let state = NIOLockedValueBox(State())
    private let onOverflow: @Sendable () -> Void

    /// - Parameter onOverflow: called once, when a frame does not fit. The writer may be stuck
    ///   behind a peer that reads nothing, so this is where the driver arranges the close.
    public init(capacity: Int, onOverflow: @escaping @Sendable () -> Void = {}) {
        precondition(capacity > 1)
        self.capacity = capacity
        self.onOverflow = onOverflow
    }

    /// Queues a frame. Returns `false` if the outbox is full (the connection is then closed with
    /// `SLOW_CONSUMER`) or already closing.
    @discardableResult
    public func send(_ message: WireMessage) -> Bool {
        send(encoded: ByteBuffer(bytes: message.payload()))
    }

    /// Queues an already encoded frame; see ``send(_:)``.
    @discardableResult
    public func send(encoded payload: ByteBuffer) -> Bool {
        let (accepted, overflowed) = enqueue(.frame(payload))
        if overflowed {
            close(ConnectionError(.slowConsumer, "the connection did not read fast enough and fell \(capacity) frames behind; reconnect and resubscribe from your cursor"),
                  force: true)
            onOverflow()
        }
        return accepted
    }

    /// Queues a frame, first waiting while the outbox is full (for catch-up, which may send many
    /// frames to one reader). Returns `false` if the outbox is closing.
    @discardableResult
    public func sendWaiting(_ message: WireMessage) async -> Bool {
        while true {
            let full = state.withLockedValue { $0.queue.count >= capacity }
            if !full { return send(message) }
            await waitForSpace()
            if isClosing { return false }
        }
    }

    /// Queues `Error{code}` and the close after what is already queued (or, with `force`, instead
    /// of it). Later frames are dropped.
    public func close(_ error: ConnectionError, force: Bool = false) {
        let (reader, waiters): (CheckedContinuation<Outgoing?, Never>?, [CheckedContinuation<Void, Never>]) = state.withLockedValue { state in
            guard !state.closing, !state.finished else { return (nil, []) }
            state.closing = true
            if force { state.queue.removeAll() }
            state.queue.append(.close(error))
            defer {
                state.reader = nil
                state.spaceWaiters = []
            }
            let reader = state.reader.map { reader in
                _ = state.queue.popFirst()
                return reader
            }
            return (reader, state.spaceWaiters)
        }
        waiters.forEach { $0.resume() }
        reader?.resume(returning: .close(error))
    }

    /// Ends the outbox at once, dropping what is queued: the writer's ``next()`` returns `nil`.
    public func finish() {
        let (reader, waiters) = state.withLockedValue { state in
            state.finished = true
            state.queue.removeAll()
            defer {
                state.reader = nil
                state.spaceWaiters = []
            }
            return (state.reader, state.spaceWaiters)
        }
        reader?.resume(returning: nil)
        waiters.forEach { $0.resume() }
    }

    public var isClosing: Bool { state.withLockedValue { $0.closing || $0.finished } }

    /// The next item for the writer; `nil` when the outbox is finished.
    public func next() async -> Outgoing? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Outgoing?, Never>) in
            let (item, ready, waiters): (Outgoing?, Bool, [CheckedContinuation<Void, Never>]) = state.withLockedValue { state in
                if state.finished { return (nil, true, []) }
                guard let item = state.queue.popFirst() else {
                    precondition(state.reader == nil, "one writer per outbox")
                    state.reader = continuation
                    return (nil, false, [])
                }
                var released: [CheckedContinuation<Void, Never>] = []
                if state.queue.count <= capacity / 2 {
                    released = state.spaceWaiters
                    state.spaceWaiters = []
                }
                return (item, true, released)
            }
            waiters.forEach { $0.resume() }
            if ready { continuation.resume(returning: item) }
        }
    }

    /// Returns once the queue is at most half full (or the outbox is closing).
    public func waitForSpace() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state in
                if state.finished || state.closing || state.queue.count <= capacity / 2 { return true }
                state.spaceWaiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func enqueue(_ item: Outgoing) -> (accepted: Bool, overflowed: Bool) {
        let result: (Bool, Bool, CheckedContinuation<Outgoing?, Never>?) = state.withLockedValue { state in
            guard !state.closing, !state.finished else { return (false, false, nil) }
            if let reader = state.reader {
                state.reader = nil
                return (true, false, reader)
            }
            guard state.queue.count < capacity else { return (false, true, nil) }
            state.queue.append(item)
            return (true, false, nil)
        }
        result.2?.resume(returning: item)
        return (result.0, result.1)
    }
}
