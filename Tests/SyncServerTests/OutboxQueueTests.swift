import SyncModel
import SyncServer
import SyncWire
import Testing

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
