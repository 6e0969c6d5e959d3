import Foundation
import SyncModel
import SyncServer
import SyncWire
import Testing

extension ServerSession {
    /// One frame in at monotonic time zero and wall-clock `date`; the actions out.
    mutating func receive(_ input: Result<WireMessage, WireError>, now date: Date) -> [Action] {
        receive(input, now: .zero, date: date)
        return takeActions()
    }
}

/// The sans-I/O session: handshake, authentication and authorization without a socket.
@Suite struct SessionTests {
    let authority = try! TokenAuthority(secret: TestServer.secret)
    let course = EntityID.fresh()
    let other = EntityID.fresh()
    let client = ClientID(.fresh())
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func session() -> ServerSession {
        ServerSession(authority: authority, welcome: Welcome(serverID: "unit", heartbeatIntervalMs: 1000), now: .zero)
    }

    func token(_ roles: [EntityID: Role], expires: TimeInterval = 3600) -> String {
        authority.issue(TokenClaims(user: "u", expires: now.addingTimeInterval(expires), courses: roles))
    }

    func ready(_ roles: [EntityID: Role]) -> ServerSession {
        var session = session()
        _ = session.receive(.success(.hello(Hello(clientID: client, token: token(roles)))), now: now)
        return session
    }

    @Test func aTokenRoundTripsAndATamperedOneIsRefused() throws {
        let issued = token([course: .editor, other: .viewer])
        let principal = try authority.verify(issued, now: now).get()
        #expect(principal.role(in: course) == .editor && principal.role(in: other) == .viewer && principal.role(in: .fresh()) == nil)
        // Flip one character of the claims: the signature no longer matches.
        var bytes = Array(issued.utf8)
        bytes[5] = bytes[5] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(throws: ConnectionError.self) { try authority.verify(String(decoding: bytes, as: UTF8.self), now: now).get() }
        #expect((try? authority.verify(issued, now: now.addingTimeInterval(3601)).get()) == nil)
        if case .failure(let error) = authority.verify(issued, now: now.addingTimeInterval(3601)) { #expect(error.code == .tokenExpired) }
        #expect(throws: TokenError.self) { try TokenAuthority(secret: Array("short".utf8)) }
    }

    @Test func aWildcardTokenCoversEveryCourse() throws {
        let issued = authority.issue(TokenClaims(user: "ops", expires: now.addingTimeInterval(60), courses: [:], everyCourse: .viewer))
        #expect(try authority.verify(issued, now: now).get().role(in: .fresh()) == .viewer)
    }

    /// A connection ends when its token expires, subscribed or not and whether or not it sends
    /// anything: the session's deadline says when, also while the driver is not reading.
    @Test func theConnectionEndsWhenItsTokenExpires() {
        var session = session()
        _ = session.receive(.success(.hello(Hello(clientID: client, token: token([course: .viewer], expires: 10.5)))), now: now)
        _ = session.receive(.success(.subscribe(courseID: course, sinceSeq: 0)), now: now)
        _ = session.takeActions()
        session.readingPaused(true, now: .zero)
        #expect(session.nextDeadline == Moment.zero + .milliseconds(10_000))  // the token's exp is in whole seconds
        session.handleTimeout(now: Moment.zero + .milliseconds(9_999))
        #expect(session.state != .closed)
        session.handleTimeout(now: Moment.zero + .milliseconds(10_000))
        let actions = session.takeActions()
        guard let error = actions.lazy.compactMap({ if case .close(let error) = $0 { error } else { nil } }).first else {
            Issue.record("expected a close: \(actions)")
            return
        }
        #expect(error.code == .tokenExpired)
        #expect(actions.contains { if case .unsubscribe(courseID: course) = $0 { true } else { false } })
        #expect(session.state == .closed)
    }

    @Test func theFirstMessageMustBeHello() {
        var session = session()
        let actions = session.receive(.success(.ping(nonce: 1)), now: now)
        #expect(actions.count == 1)
        guard case .close(let error) = actions.first else { Issue.record("expected a close"); return }
        #expect(error.code == .unexpectedMessage)
        #expect(session.state == .closed)
        #expect(session.receive(.success(.ping(nonce: 2)), now: now).isEmpty)
    }

    @Test func helloAnswersWelcomeAndASecondHelloCloses() {
        var session = session()
        let actions = session.receive(.success(.hello(Hello(clientID: client, token: token([course: .editor])))), now: now)
        #expect(actions.first == .ready(client), "the driver registers the connection before Welcome goes out")
        guard case .send(.welcome(let welcome)) = actions.last else { Issue.record("expected Welcome, got \(actions)"); return }
        #expect(welcome.serverID == "unit")
        #expect(session.clientID == client)
        guard case .close(let error) = session.receive(.success(.hello(Hello(clientID: client, token: ""))), now: now).first else {
            Issue.record("expected a close"); return
        }
        #expect(error.code == .unexpectedMessage)
    }

    @Test func pushesAreAuthorizedPerCourse() {
        var session = ready([course: .editor, other: .viewer])
        let push = Push(courseID: course, batchSeq: 1, baseSeq: 0, ops: [.unlinkVideo(.id(.fresh()))])
        #expect(session.receive(.success(.push(push)), now: now) == [.push(push.batch(from: client))])
        var viewerPush = push
        viewerPush.courseID = other
        guard case .send(.reject(let reject)) = session.receive(.success(.push(viewerPush)), now: now).first else {
            Issue.record("a viewer's push was not rejected"); return
        }
        #expect(reject.rejection.code == .forbidden && reject.batchSeq == 1)
        // The connection stays up; subscribing as a viewer is fine, to an unknown course is not.
        #expect(session.receive(.success(.subscribe(courseID: other, sinceSeq: 3)), now: now) == [.subscribe(courseID: other, sinceSeq: 3)])
        guard case .close(let error) = session.receive(.success(.subscribe(courseID: .fresh(), sinceSeq: 0)), now: now).first else {
            Issue.record("expected a close"); return
        }
        #expect(error.code == .forbidden)
    }

    @Test func aTokenThatExpiresDuringTheConnectionStopsIt() {
        var session = ready([course: .editor])
        let push = Push(courseID: course, batchSeq: 1, baseSeq: 0, ops: [.unlinkVideo(.id(.fresh()))])
        guard case .close(let error) = session.receive(.success(.push(push)), now: now.addingTimeInterval(7200)).first else {
            Issue.record("expected a close"); return
        }
        #expect(error.code == .tokenExpired)
    }

    @Test func serverMessagesFromAClientAndBadFramesClose() {
        var session = ready([course: .editor])
        guard case .close(let error) = session.receive(.success(.ack(Ack(courseID: course, batchSeq: 1, seq: 1, idMap: [:], notes: []))), now: now).first else {
            Issue.record("expected a close"); return
        }
        #expect(error.code == .unexpectedMessage)
        var other = ready([course: .editor])
        guard case .close(let malformed) = other.receive(.failure(.emptyEnvelope), now: now).first else {
            Issue.record("expected a close"); return
        }
        #expect(malformed.code == .malformedFrame)
    }

    // MARK: Timers

    func at(_ ms: Int64) -> Moment { .milliseconds(ms) }

    @Test func aConnectionThatSendsNoHelloIsClosedAfterOneIntervalWithoutBeingPinged() {
        var session = session()
        #expect(session.nextDeadline == at(1_000))
        session.handleTimeout(now: at(999))
        #expect(session.takeActions().isEmpty)
        session.handleTimeout(now: at(1_000))
        guard case .close(let error) = session.takeActions().first else { Issue.record("expected a close"); return }
        #expect(error.code == .idleTimeout)
        #expect(session.nextDeadline == nil)
    }

    /// Regression (a watcher cut on a busy course): the server pinged only connections it had
    /// sent nothing to, so a subscriber that only listens, receiving diffs all the time, was never
    /// pinged, never answered, and was closed for idleness after three intervals. Now what counts
    /// is what the server *received*: it pings a quiet peer whatever it sends, and the Pongs keep
    /// the connection up.
    @Test func aListeningPeerIsPingedAndItsPongsKeepItOpen() {
        var session = session()
        session.receive(.success(.hello(Hello(clientID: client, token: token([course: .viewer])))), now: at(0), date: now)
        session.receive(.success(.subscribe(courseID: course, sinceSeq: 0)), now: at(10), date: now)
        _ = session.takeActions()
        var time = at(10)
        for _ in 0..<20 {
            // However many diffs go out meanwhile, the session sees only what comes in.
            time = session.nextDeadline!
            session.handleTimeout(now: time)
            guard case .send(.ping(let nonce)) = session.takeActions().first else { Issue.record("expected a Ping at \(time)"); return }
            session.receive(.success(.pong(nonce: nonce)), now: time + .milliseconds(20), date: now)
            #expect(session.takeActions().isEmpty)
        }
        #expect(session.state != .closed)
    }

    /// While the driver does not read (a peer with 64 pushes unanswered waits for the commits),
    /// the peer's silence is the server's own doing: no Ping, no IDLE_TIMEOUT until reading resumes.
    @Test func aPeerIsNotClosedForSilenceWhileTheServerDoesNotReadIt() {
        var session = ready([course: .editor])
        session.readingPaused(true, now: at(0))
        #expect(session.nextDeadline == Moment.zero + .seconds(3600))  // only the token's expiry
        session.handleTimeout(now: at(60_000))
        #expect(session.takeActions().isEmpty)
        session.readingPaused(false, now: at(60_000))
        #expect(session.nextDeadline == at(61_000), "reading again counts as hearing from the peer")
    }

    @Test func aSilentPeerIsClosedAfterThreeIntervalsAndNothingFollowsTheError() {
        var session = ready([course: .editor])
        _ = session.receive(.success(.subscribe(courseID: course, sinceSeq: 0)), now: now)
        var actions: [ServerSession.Action] = []
        while let deadline = session.nextDeadline {
            session.handleTimeout(now: deadline)
            actions += session.takeActions()
        }
        #expect(actions.count == 4, "\(actions)")
        guard actions.count == 4, case .send(.ping) = actions[0], case .send(.ping) = actions[1],
              case .close(let error) = actions[2] else { Issue.record("\(actions)"); return }
        #expect(error.code == .idleTimeout)
        #expect(actions[3] == .unsubscribe(courseID: course), "the session tells the driver to leave its courses")
        session.handleTimeout(now: at(100_000))
        session.receive(.success(.ping(nonce: 1)), now: at(100_000), date: now)
        #expect(session.takeActions().isEmpty, "a closed session sends nothing more")
    }

    /// Spec §3.1/§6: an empty token is a well-formed Hello refused as `UNAUTHENTICATED` (vector 20).
    @Test func anEmptyTokenIsUnauthenticated() {
        var session = session()
        guard case .close(let error) = session.receive(.success(.hello(Hello(clientID: client, token: ""))), now: now).first else {
            Issue.record("expected a close"); return
        }
        #expect(error.code == .unauthenticated)
    }

    @Test func aServerMessageFromAClientClosesAsUnexpected() {
        var session = ready([course: .editor])
        let input: Result<WireMessage, WireError> = .failure(.wrongDirection("Diff is sent by servers, not clients"))
        guard case .close(let closed) = session.receive(input, now: now).first else { Issue.record("expected a close"); return }
        #expect(closed.code == .unexpectedMessage)
    }
}
