import Foundation
import NIOCore
import PostgresStore
import SyncModel
import SyncServer
import SyncStorage
import SyncWire
import Testing
@testable import TestSupport

/// What happens at the edges of a connection's life, over real TCP: heartbeats on busy courses,
/// the last frame before a close, and closes that must not turn into resets. Each test is the
/// regression test of a defect found from outside with an independent client.
@Suite struct ConnectionEndTests {
    /// Regression: a subscriber that only listens was closed for idleness on a busy course, since
    /// the server pinged only connections it had sent nothing to. A client that does no more than
    /// the protocol asks (answer Pings) must stay connected however long the course is busy.
    @Test func aListeningSubscriberOfABusyCourseStaysConnected() async throws {
        try await withDatabase { database in
            let (courseID, chapters, _) = try await database.makeCourse(chapters: 1)
            try await withServer(store: database.store, configure: { $0.heartbeatInterval = .milliseconds(400) }) { server in
                let watcher = try await TestClient.connect(port: server.port, answerPings: true)
                try await watcher.hello(token: server.token([courseID: .viewer]))
                try await watcher.subscribe(courseID)
                let writer = try await TestClient.connect(port: server.port, answerPings: true)
                try await writer.hello(token: server.token([courseID: .editor]))
                // Commits every 50 ms for 10 heartbeat intervals (more than three idle timeouts).
                let start = ContinuousClock.now
                var batchSeq: BatchSeq = 0
                while ContinuousClock.now - start < .seconds(4) {
                    batchSeq += 1
                    _ = try await writer.push(courseID, batchSeq: batchSeq, [.renameChapter(.id(chapters[0]), title: "Title \(batchSeq)")]).get()
                    try await Task.sleep(for: .milliseconds(50))
                }
                let last = batchSeq + 1
                try await watcher.waitUntil("every commit arrived") { messages in
                    messages.contains { if case .diff(let diff) = $0 { diff.seq == last } else { false } }
                }
                #expect(!watcher.isClosed, "closed: \(watcher.received.suffix(3).map(TestClient.kind))")
                #expect(!watcher.received.contains { if case .error = $0 { true } else { false } })
                #expect(watcher.received.contains { if case .ping = $0 { true } else { false } }, "the server pings a peer it hears nothing from")
            }
        }
    }

    /// Regression (seen once in CI, under the whole suite's load): a server whose tasks were held
    /// up for longer than the idle timeout closed a peer that had kept answering its Pings. The
    /// Pongs waited, read but not handed over, behind the stalled connection task while the timer
    /// (on the event loop) judged the peer silent; and the Pings themselves waited in the outbox
    /// for the stalled writer. Now the timer counts a frame from when the event loop decoded it
    /// and writes its Pings straight to the channel.
    @Test func aPeerThatAnswersIsNotClosedWhileTheServersTasksAreHeldUp() async throws {
        try await withDatabase { database in
            let (courseID, _, _) = try await database.makeCourse(chapters: 1)
            let executor = HoldableExecutor()
            // A short heartbeat (the harness keeps the handshake's own timeout): the test is about the heartbeat.
            try await withServer(store: database.store, configure: {
                $0.heartbeatInterval = .milliseconds(300)
            }, executor: executor) { server in
                let watcher = try await TestClient.connect(port: server.port, answerPings: true)
                try await watcher.hello(token: server.token([courseID: .viewer]))
                try await watcher.subscribe(courseID)
                let pingsBefore = watcher.received.filter { if case .ping = $0 { true } else { false } }.count
                // Held up for more than three intervals: the server's tasks do nothing meanwhile.
                await executor.hold(for: .seconds(2))
                try await Task.sleep(for: .milliseconds(500))
                #expect(!watcher.isClosed, "closed: \(watcher.received.suffix(4).map(TestClient.kind))")
                let pings = watcher.received.filter { if case .ping = $0 { true } else { false } }.count
                #expect(pings > pingsBefore, "the server went on pinging its quiet peer")
            }
        }
    }

    /// A `Hello` sent in time to a server whose tasks are held up past the handshake deadline is
    /// welcomed when they run again, not refused as late (found by the simulator's node stalls).
    @Test func aHelloSentInTimeToAHeldUpServerIsWelcomed() async throws {
        try await withDatabase { database in
            let (courseID, _, _) = try await database.makeCourse(chapters: 1)
            let executor = HoldableExecutor()
            // Generous times: the Hello must arrive within 3 s however loaded the machine; if the
            // server is slow to set the connection up, the hold comes first and the test proves less.
            try await withServer(store: database.store, configure: { $0.limits.session.handshakeTimeout = .seconds(3) },
                                 executor: executor) { server in
                let client = try await TestClient.connect(port: server.port)
                try await Task.sleep(for: .milliseconds(300))  // the connection's session is set up, its deadline armed
                async let held: Void = executor.hold(for: .seconds(5))
                _ = try await client.hello(token: server.token([courseID: .viewer]))
                await held
                #expect(!client.isClosed)
            }
        }
    }

    /// A client that keeps to the stated push rate while the server's tasks are held up is not
    /// cut for its rate when the server catches up and takes its pushes all at once: the rate is
    /// the client's sending, measured from when each frame arrived.
    @Test func aPacedClientIsNotRateLimitedForTheBacklogOfAHeldUpServer() async throws {
        try await withDatabase { database in
            let (courseID, chapters, _) = try await database.makeCourse(chapters: 1)
            let executor = HoldableExecutor()
            try await withServer(store: database.store, configure: { $0.limits.session.pushesPerSecond = 4 }, executor: executor) { server in
                let client = try await TestClient.connect(port: server.port, answerPings: true)
                try await client.hello(token: server.token([courseID: .editor]))
                async let held: Void = executor.hold(for: .seconds(3))
                // 12 pushes at 3 per second (the stated rate is 4, bursts of 8), all arriving
                // while the server is held: taken together afterwards they would be 12 at once.
                for batchSeq in 1...12 where !client.isClosed {
                    try? await client.send(.push(Push(courseID: courseID, batchSeq: BatchSeq(batchSeq), baseSeq: 0,
                                                     ops: [.renameChapter(.id(chapters[0]), title: "Title \(batchSeq)")])))
                    try await Task.sleep(for: .milliseconds(333))
                }
                await held
                try await client.waitUntil("every push answered") { messages in
                    messages.filter { if case .ack = $0 { true } else { false } }.count == 12
                        || messages.contains { if case .error = $0 { true } else { false } }
                }
                #expect(!client.isClosed, "closed: \(client.received.suffix(3).map(TestClient.kind))")
            }
        }
    }

    /// Regression: after `Error{IDLE_TIMEOUT}` the server still sent Pings before closing. The
    /// Error is the last frame (protocol §6).
    @Test func theErrorIsTheLastFrameBeforeAnIdleClose() async throws {
        try await withDatabase { database in
            let (courseID, _, _) = try await database.makeCourse(chapters: 1)
            try await withServer(store: database.store, configure: { $0.heartbeatInterval = .seconds(1) }) { server in
                let silent = try await TestClient.connect(port: server.port)
                // After the handshake it says nothing more: nothing to race with on a loaded machine.
                try await silent.hello(token: server.token([courseID: .viewer]))
                let error = try await silent.expectClosed()
                #expect(error?.code == .idleTimeout)
                let kinds = silent.received.map(TestClient.kind)
                #expect(kinds.last == "Error(idleTimeout)", "\(kinds)")
                #expect(kinds.filter { $0 == "ping" }.count >= 2, "a Ping per quiet interval before the close: \(kinds)")
            }
        }
    }

    /// Regression: an oversized frame sent with its body got a TCP reset instead of
    /// `Error{FRAME_TOO_LARGE}`: the server closed with unread input. It now closes gracefully.
    @Test(arguments: [false, true])
    func anOversizedFrameSentWithItsBodyGetsFrameTooLarge(afterHello: Bool) async throws {
        try await withDatabase { database in
            let (courseID, _, _) = try await database.makeCourse(chapters: 1)
            try await withServer(store: database.store) { server in
                let client = try await TestClient.connect(port: server.port)
                if afterHello { try await client.hello(token: server.token([courseID: .editor])) }
                let length = (afterHello ? Limits.maxClientFrameBytes : Limits.maxHandshakeFrameBytes) + 1
                var frame = ByteBuffer()
                frame.writeInteger(UInt32(length))
                frame.writeRepeatingByte(0x5A, count: length)
                // The write may fail part-way: the server answers after the prefix and half-closes,
                // and this client's channel closes on that end of input.
                try? await client.sendRaw(Array(frame.readableBytesView))
                let error = try await client.expectClosed()
                #expect(error?.code == .frameTooLarge, "received \(client.received.map(TestClient.kind)), connection errors \(client.connectionErrors)")
                #expect(client.connectionErrors.isEmpty, "a clean close, not a reset: \(client.connectionErrors)")
            }
        }
    }

    /// Regression: a subscriber cut as a slow consumer did not get `SLOW_CONSUMER`. Its backlog is
    /// dropped, the Error written behind what the socket already holds, and the connection stays
    /// open (up to the close timeout) for the peer to read up to it. One that kept sending Pings
    /// while not reading lost the Error to a reset: the server stopped reading once it decided to
    /// close, then closed with those Pings unread. It now closes gracefully (FIN after the Error,
    /// the rest of the input read and dropped).
    @Test(arguments: [false, true])
    func aSubscriberThatStopsReadingFindsSlowConsumerAsItsLastFrame(pinging: Bool) async throws {
        try await withDatabase { database in
            let (courseID, chapters, _) = try await database.makeCourse(chapters: 4)
            try await withServer(store: database.store, configure: {
                $0.outboxFrames = 64
                $0.closeTimeout = .seconds(30)
            }) { server in
                let stuck = try await TestClient.connect(port: server.port)
                try await stuck.hello(token: server.token([courseID: .viewer]))
                try await stuck.subscribe(courseID)
                try await stuck.channel.setOption(ChannelOptions.autoRead, value: false).get()
                let pings = Task {
                    var nonce: UInt64 = 0
                    while pinging, !Task.isCancelled {
                        nonce += 1
                        try? await stuck.send(.ping(nonce: nonce))
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                }
                defer { pings.cancel() }
                let title = String(repeating: "\u{1D11E}", count: 490)  // ~2 KB per diff
                // Four writers, default socket buffers: megabytes pile up before the outbox overflows.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for writerIndex in 0..<4 {
                        let writer = try await server.editor(of: courseID)
                        group.addTask {
                            var batchSeq: BatchSeq = 0
                            while server.server.slowConsumerCount == 0, batchSeq < 50_000 {
                                batchSeq += 1
                                _ = try await writer.push(courseID, batchSeq: batchSeq, [
                                    .renameChapter(.id(chapters[writerIndex]), title: "\(batchSeq) \(title)"),
                                ]).get()
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(server.server.slowConsumerCount == 1)
                // It reads again a while later (within the close timeout) and drains everything.
                try await Task.sleep(for: .milliseconds(500))
                pings.cancel()
                try await stuck.channel.setOption(ChannelOptions.autoRead, value: true).get()
                let error = try await stuck.expectClosed()
                #expect(error?.code == .slowConsumer)
                #expect(stuck.received.map(TestClient.kind).last == "Error(slowConsumer)", "nothing follows the Error")
                #expect(stuck.connectionErrors.isEmpty, "\(stuck.connectionErrors)")
            }
        }
    }
}
