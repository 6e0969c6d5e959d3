import Foundation
import NIOConcurrencyHelpers
import SQLiteStore
@testable import SyncClient
import SyncModel
import SyncServer
import SyncStorage
import SyncWire
import Testing
@testable import TestSupport

/// The abuse limits, each at its value and one past it: sans-I/O for the session's (rates,
/// subscriptions, handshake timeout), over real TCP for the node's (connections per user and per
/// address, the penalty after a rate cut), and end to end with the client library (a client cut
/// for its rate waits as told and loses nothing).
@Suite struct AbuseLimitTests {
    let course = EntityID.fresh()
    let client = ClientID(.fresh())
    let date = Date(timeIntervalSince1970: 1_800_000_000)

    func at(_ ms: Int64) -> Moment { .milliseconds(ms) }

    @Test func aTokenBucketLetsItsBurstPassThenWaitsForTheRefill() {
        var bucket = TokenBucket(rate: 10, burst: 20, now: at(0))
        var taken: [Bool] = (0..<21).map { _ in bucket.take(1, now: at(0)) }
        #expect(taken == Array(repeating: true, count: 20) + [false], "the burst, then one past it refused")
        let half = bucket.wait(until: 10, now: at(0)), one = bucket.wait(until: 1, now: at(0))
        #expect(half == .seconds(1) && one == .milliseconds(100))
        taken = [bucket.take(1, now: at(99)), bucket.take(1, now: at(100))]
        #expect(taken == [false, true], "one unit back after 100 ms")
        // A large take passes while a unit is left and overdraws; the debt is paid back first.
        var bytes = TokenBucket(rate: 1_000, burst: 2_000, now: at(0))
        taken = [bytes.take(5_000, now: at(0)), bytes.take(1, now: at(3_000)), bytes.take(1, now: at(3_001))]
        #expect(taken == [true, false, true])
    }

    func readySession(_ limits: SessionLimits) -> ServerSession {
        var session = ServerSession(welcome: Welcome(serverID: "unit", heartbeatIntervalMs: 1000), limits: limits, now: .zero)
        session.receive(.success(.hello(Hello(clientID: client, token: "t"))), now: .zero, date: date)
        _ = session.takeActions()
        session.authenticated(.success(Principal(user: "u", expires: date.addingTimeInterval(3600), roles: [:], everyCourse: .editor)),
                              now: .zero, date: date)
        _ = session.takeActions()
        return session
    }

    func closeCode(_ actions: [ServerSession.Action]) -> ConnectionError? {
        actions.lazy.compactMap { if case .close(let error) = $0 { error } else { nil } }.first
    }

    /// Past the burst a push is taken and the connection is throttled (nothing more read until
    /// the bucket holds the push again: TCP back-pressure, not a cut), frames handed over during a
    /// throttle counting from its end; a peer that keeps over its rate for the sustained period is
    /// cut with a retry-after, and one that falls back under it is throttled no more.
    @Test func pushesPastTheRateAreThrottledAndCutOnlyWhenTheyStayOverIt() {
        var limits = SessionLimits()
        limits.pushesPerSecond = 5
        limits.rateCutPause = .zero  // the bucket's own wait: half its burst back
        limits.sustainedOverRate = .seconds(3)
        func push(_ batchSeq: Int) -> WireMessage { .push(Push(courseID: course, batchSeq: BatchSeq(batchSeq), baseSeq: 0, ops: [.unlinkVideo(.id(.fresh()))])) }
        func throttle(_ actions: [ServerSession.Action]) -> Moment? {
            actions.lazy.compactMap { if case .throttle(let until) = $0 { until } else { nil } }.first
        }
        var session = readySession(limits)
        for batchSeq in 1...10 {  // the burst: two seconds' worth
            session.receive(.success(push(batchSeq)), now: at(0), date: date)
            let actions = session.takeActions()
            #expect(closeCode(actions) == nil && throttle(actions) == nil, "push \(batchSeq) is within the burst")
        }
        session.receive(.success(push(11)), now: at(0), date: date)
        var actions = session.takeActions()
        #expect(actions.contains { if case .push = $0 { true } else { false } }, "taken")
        #expect(throttle(actions) == at(200) && closeCode(actions) == nil, "\(actions)")
        session.receive(.success(push(12)), now: at(0), date: date)
        #expect(throttle(session.takeActions()) == at(400), "handed over after the throttle: counted from its end")
        // A client back under its rate is not throttled, and its over-rate period ends.
        session.receive(.success(push(13)), now: at(1_500), date: date)
        #expect(session.takeActions().count == 1, "taken at once")
        // One that keeps over it: throttled push after push, then cut once it has been over for 3 s.
        var cut: ConnectionError?
        var batchSeq = 14
        while cut == nil, batchSeq < 100 {
            session.receive(.success(push(batchSeq)), now: at(1_500), date: date)
            actions = session.takeActions()
            cut = closeCode(actions)
            batchSeq += 1
        }
        let error = cut
        #expect(error?.code == .rateLimited && error?.retryAfterMs == 1_000, "\(actions)")
        #expect(!actions.contains { if case .push = $0 { true } else { false } }, "the cut push is not committed")
        #expect(session.refusal == .pushesPerSecond)
        #expect(batchSeq - 14 == 5 + 15 + 1, "the burst regained, then 3 s at 5 a second, then the cut")
    }

    @Test func bytesPastTheRateAreCut() {
        var limits = SessionLimits()
        limits.bytesPerSecond = 4 << 20  // burst 8 MiB: one largest frame
        var session = readySession(limits)
        session.receive(.success(.ping(nonce: 1)), bytes: Limits.maxClientFrameBytes, now: at(0), date: date)
        #expect(closeCode(session.takeActions()) == nil, "at the burst")
        session.receive(.success(.ping(nonce: 2)), bytes: 10, now: at(0), date: date)
        #expect(closeCode(session.takeActions())?.code == .rateLimited, "one past it")
        #expect(session.refusal == .bytesPerSecond)
    }

    @Test func subscriptionsPastTheLimitClose() {
        var limits = SessionLimits()
        limits.maxSubscriptions = 3
        var session = readySession(limits)
        let courses = (0..<4).map { _ in EntityID.fresh() }
        for course in courses.prefix(3) {
            session.receive(.success(.subscribe(courseID: course, sinceSeq: 0)), now: at(0), date: date)
            #expect(closeCode(session.takeActions()) == nil)
        }
        session.receive(.success(.subscribe(courseID: courses[0], sinceSeq: 5)), now: at(0), date: date)
        #expect(closeCode(session.takeActions()) == nil, "subscribing again to a course it has is not another subscription")
        session.receive(.success(.unsubscribe(courseID: courses[1])), now: at(0), date: date)
        session.receive(.success(.subscribe(courseID: courses[3], sinceSeq: 0)), now: at(0), date: date)
        #expect(closeCode(session.takeActions()) == nil, "an unsubscribe makes room")
        session.receive(.success(.subscribe(courseID: courses[1], sinceSeq: 0)), now: at(0), date: date)
        #expect(closeCode(session.takeActions())?.code == .limitExceeded, "one past")
        #expect(session.refusal == .subscriptions)
    }

    @Test func theHandshakeTimeoutIsItsOwn() {
        var limits = SessionLimits()
        limits.handshakeTimeout = .milliseconds(250)
        var session = ServerSession(welcome: Welcome(serverID: "unit", heartbeatIntervalMs: 1000), limits: limits, now: .zero)
        #expect(session.nextDeadline == at(250))
        session.handleTimeout(now: at(249))
        #expect(session.takeActions().isEmpty)
        #expect(session.refusal == nil)
        session.handleTimeout(now: at(250))
        #expect(closeCode(session.takeActions())?.code == .idleTimeout)
        #expect(session.refusal == .handshakeTimeout)
    }

    /// Connections per user: at the limit all are welcomed, one past is refused with
    /// `LIMIT_EXCEEDED`; closing one makes room. Per address (every test client is 127.0.0.1):
    /// one past is refused before its `Hello`.
    @Test func connectionsPerUserAndPerAddressOverTCP() async throws {
        try await withReplicaFolder { folder in
            let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            try await store.createCourse(Course(id: course, title: "Limits"))
            try await withServer(store: store, configure: { $0.limits.connectionsPerUser = 2; $0.limits.connectionsPerAddress = 4 }) { server in
                var ada: [TestClient] = []
                for _ in 0..<2 {
                    let connection = try await TestClient.connect(port: server.port)
                    _ = try await connection.hello(token: server.token([course: .editor], user: "ada"))
                    ada.append(connection)
                }
                let third = try await TestClient.connect(port: server.port)
                try await third.send(.hello(Hello(clientID: third.clientID, token: server.token([course: .editor], user: "ada"))))
                let refused = try await third.expectClosed()
                #expect(refused?.code == .limitExceeded && refused?.retryAfterMs != nil, "\(String(describing: refused))")
                let bo = try await TestClient.connect(port: server.port)
                _ = try await bo.hello(token: server.token([course: .editor], user: "bo"))
                await ada[0].close()
                try await eventually("ada's closed connection uncounted") { server.server.connectionCount == 2 }
                let again = try await TestClient.connect(port: server.port)
                _ = try await again.hello(token: server.token([course: .editor], user: "ada"))
                let cy = try await TestClient.connect(port: server.port)
                _ = try await cy.hello(token: server.token([course: .editor], user: "cy"))
                // Four connections from 127.0.0.1 now (ada twice, bo, cy): a fifth is refused before it says anything.
                let fifth = try await TestClient.connect(port: server.port)
                #expect(try await fifth.expectClosed()?.code == .limitExceeded)
                #expect(!bo.isClosed && !cy.isClosed && !again.isClosed)
            }
        }
    }

    /// The client library paces its pushes at the rate the server's `Welcome` states: a backlog
    /// three times the server's burst goes out without a cut, every edit committed, none rolled back.
    @Test func aClientKeepsToTheRateItIsToldAndIsNeverCut() async throws {
        try await withReplicaFolder { folder in
            let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            try await store.createCourse(Course(id: course, title: "Rates"))
            try await withServer(store: store, configure: { $0.limits.session.pushesPerSecond = 20 }) { server in
                var configuration = ClientConfiguration(port: server.port, token: server.token([course: .editor], user: "ada"))
                // What ended a connection, if one ended: the server's Error frame (none: a read timeout or the client's own decision).
                let errors = NIOLockedValueBox<[ConnectionError]>([])
                configuration.frameObserver = { if case .received(.error(let error)) = $0 { errors.withLockedValue { $0.append(error) } } }
                let client = try await SyncClient.open(path: folder.appendingPathComponent("ada.replica").path, courseID: course,
                                                       configuration: configuration, logger: TestDatabase.logger)
                let events = EventLog(client)
                try await client.settle()
                for index in 0..<120 {
                    _ = try await client.createChapter(title: "Chapter \(index)")
                    await client.seal()
                }
                try await client.settle()
                #expect(try await store.courseSeq(course) == 120)
                try await client.close()
                let all = await events.all()
                #expect(!all.contains { if case .rejected = $0 { true } else { false } })
                #expect(!all.contains { if case .connection(.offline) = $0 { true } else { false } },
                        "never cut; the server's errors: \(errors.withLockedValue { $0 }); the events: \(all.suffix(40))")
            }
        }
    }

    /// Pushes bunched past the burst (as a loaded machine or network delivers a paced client's
    /// frames) are read more slowly, not cut: every one is answered, none with an Error, and the
    /// last no sooner than the rate allows.
    @Test func aBurstPastTheRateIsThrottledNotCut() async throws {
        try await withReplicaFolder { folder in
            let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            try await store.createCourse(Course(id: course, title: "Rates"))
            try await withServer(store: store, configure: { $0.limits.session.pushesPerSecond = 20 }) { server in
                let client = try await TestClient.connect(port: server.port, answerPings: true)
                _ = try await client.hello(token: server.token([course: .editor], user: "ada"))
                let started = ContinuousClock.now
                // 60 pushes in one write: the burst (40) and one second's worth more.
                try await client.sendRaw((1...60).flatMap { batchSeq in
                    WireMessage.push(Push(courseID: course, batchSeq: BatchSeq(batchSeq), baseSeq: 0,
                                          ops: [.createChapter(temp: TempID(UInt64(batchSeq))!, title: "Burst", placement: .atEnd)])).frame()
                })
                let last = try await client.answer(course, batchSeq: 60)
                #expect(try last.get().seq == 60)
                #expect(ContinuousClock.now - started >= .milliseconds(900), "the 20 past the burst waited for the rate")
                #expect(!client.received.contains { if case .error = $0 { true } else { false } })
                #expect(try await store.courseSeq(course) == 60)
            }
        }
    }

    /// Cut for its rate, a user is refused for the retry-after even on a new connection (else a
    /// reconnect would buy a fresh allowance); other users are not.
    @Test func aUserCutForItsRateIsRefusedUntilTheRetryAfter() async throws {
        try await withReplicaFolder { folder in
            let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            try await store.createCourse(Course(id: course, title: "Rates"))
            try await withServer(store: store, configure: {
                $0.limits.session.pushesPerSecond = 2
                $0.limits.session.rateCutPause = .seconds(60)
                $0.limits.session.sustainedOverRate = .milliseconds(500)
            }) { server in
                let flood = try await TestClient.connect(port: server.port)
                _ = try await flood.hello(token: server.token([course: .editor], user: "mallory"))
                // 40 pushes in one write, so that they arrive together however loaded the machine is.
                try? await flood.sendRaw((1...40).flatMap { batchSeq in
                    WireMessage.push(Push(courseID: course, batchSeq: BatchSeq(batchSeq), baseSeq: 0,
                                          ops: [.createChapter(temp: TempID(UInt64(batchSeq))!, title: "Spam", placement: .atEnd)])).frame()
                })
                let cut = try await flood.expectClosed()
                #expect(cut?.code == .rateLimited && cut?.retryAfterMs == 60_000, "\(String(describing: cut))")
                let again = try await TestClient.connect(port: server.port)
                try await again.send(.hello(Hello(clientID: again.clientID, token: server.token([course: .editor], user: "mallory"))))
                #expect(try await again.expectClosed()?.code == .rateLimited)
                _ = try await TestClient.connect(port: server.port).hello(token: server.token([course: .editor], user: "bo"))
                // The burst (4, and what refilled while the frames were read) was committed; the rest was not.
                try await eventually("the burst committed") { ((try? await store.courseSeq(self.course)) ?? 0) >= 4 }
                try await Task.sleep(for: .milliseconds(200))
                let seq = try #require(try await store.courseSeq(course))
                #expect(seq >= 4 && seq < 40, "seq \(seq)")
            }
        }
    }
}
