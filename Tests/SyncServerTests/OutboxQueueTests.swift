import SyncModel
import SyncServer
import SyncWire
import Testing
@testable import TestSupport

/// The outbox's policy, without sockets (the NIO driver and the simulator share it).
@Suite struct OutboxQueueTests {
    func drain(_ queue: inout OutboxQueue<Int>) -> [String] {
        var items: [String] = []
        while let item = queue.next() {
            switch item {
            case .frame(let frame): items.append("\(frame)")
            case .close(let error): items.append("\(error.code)")
            }
        }
        return items
    }

    @Test func aFanOutFrameThatDoesNotFitEndsTheQueueWithSlowConsumerAsTheLastFrame() {
        var queue = OutboxQueue<Int>(capacity: 3)
        for frame in 1...3 { #expect(queue.enqueue(frame) == .queued) }
        #expect(queue.enqueue(4) == .overflowed)
        #expect(queue.enqueue(5) == .refused, "nothing after the Error")
        queue.close(ConnectionError(.shuttingDown, "later close"))
        #expect(drain(&queue) == ["slowConsumer"], "the backlog is dropped: the client resumes from its cursor")
        #expect(queue.isFinished && queue.next() == nil)
    }

    @Test func aCloseGoesAfterWhatIsQueuedAndOnlyTheFirstCounts() {
        var queue = OutboxQueue<Int>(capacity: 8)
        #expect(queue.enqueue(1) == .queued)
        queue.close(ConnectionError(.idleTimeout, "quiet"))
        #expect(queue.enqueue(2) == .refused, "a ping after the fatal Error is dropped")
        queue.close(ConnectionError(.slowConsumer, "second"))
        #expect(drain(&queue) == ["1", "idleTimeout"])
        #expect(queue.closeReason?.code == .idleTimeout)
    }

    /// The writer takes what is queued together (one socket write), in order, the close last.
    @Test func theWriterTakesTheBacklogTogetherUpToItsLimitWithTheCloseLast() async {
        var queue = OutboxQueue<Int>(capacity: 16)
        for frame in 1...5 { #expect(queue.enqueue(frame) == .queued) }
        queue.close(ConnectionError(.shuttingDown, "bye"))
        func names(_ items: [OutboxQueue<Int>.Item]) -> [String] {
            items.map { if case .frame(let frame) = $0 { "\(frame)" } else { "close" } }
        }
        #expect(names(queue.next(upTo: 3)) == ["1", "2", "3"])
        #expect(names(queue.next(upTo: 3)) == ["4", "5", "close"])
        #expect(queue.next(upTo: 3).isEmpty && queue.isFinished)

        // The same through the driver's outbox: a waiting writer gets what arrives, a writer that
        // comes late gets the whole backlog at once, and nothing once it is finished.
        let outbox = Outbox(capacity: 16)
        async let first = outbox.next(upTo: 64)
        try? await Task.sleep(for: .milliseconds(20))
        outbox.send(.ping(nonce: 1))
        #expect(await first.count == 1)
        for nonce in 2...4 { outbox.send(.ping(nonce: UInt64(nonce))) }
        outbox.close(ConnectionError(.shuttingDown, "bye"))
        let backlog = await outbox.next(upTo: 64)
        #expect(backlog.count == 4)
        if case .close(let error) = backlog.last { #expect(error.code == .shuttingDown) } else { Issue.record("the close is not last: \(backlog)") }
        #expect(await outbox.next(upTo: 64).isEmpty)
    }

    @Test func catchUpWaitsForRoomInsteadOfOverflowing() {
        var queue = OutboxQueue<Int>(capacity: 4)
        for frame in 1...4 { #expect(queue.enqueue(frame, waiting: true) == .queued) }
        #expect(queue.enqueue(5, waiting: true) == .full)
        #expect(!queue.hasRoom)
        _ = queue.next()
        _ = queue.next()
        #expect(queue.hasRoom, "at most half full")
        #expect(!queue.isClosing)
    }
}
