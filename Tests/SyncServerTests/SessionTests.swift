import Foundation
import SyncModel
import SyncServer
import SyncWire
import Testing
@testable import TestSupport

extension ServerSession {
    /// One frame in at monotonic time zero and wall-clock `date`; the actions out, with a token
    /// check the session asks for answered at once (``answeringTokenCheck(now:date:)``).
    mutating func receive(_ input: Result<WireMessage, WireError>, now date: Date) -> [Action] {
        receive(input, now: .zero, date: date)
        return answeringTokenCheck(now: .zero, date: date)
    }

    /// The actions so far, an ``Action/authenticate(token:)`` among them replaced by what the
    /// session does with the outcome. The tokens here are unsigned claims (``SessionTests/token(_:expires:)``):
    /// the session checks claims; signatures are the authority's business (``TokenTests``).
    mutating func answeringTokenCheck(now: Moment, date: Date) -> [Action] {
        var answered: [Action] = []
        for action in takeActions() {
            guard case .authenticate(let token) = action else { answered.append(action); continue }
            let outcome = Result { try JSONDecoder().decode(TokenClaims.self, from: Data(token.utf8)) }
                .mapError { _ in ConnectionError(.unauthenticated, "not a token") }
                .flatMap { $0.principal(at: date, rules: TokenRules(leeway: 0)) }
            authenticated(outcome, now: now, date: date)
            answered += takeActions()
        }
        return answered
    }
}

/// The sans-I/O session: handshake, authentication and authorization without a socket.
@Suite struct SessionTests {
    let course = EntityID.fresh()
    let other = EntityID.fresh()
    let client = ClientID(.fresh())
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func session() -> ServerSession {
        ServerSession(welcome: Welcome(serverID: "unit", heartbeatIntervalMs: 1000), now: .zero)
    }

    func token(_ roles: [EntityID: Role], expires: TimeInterval = 3600) -> String {
        String(decoding: try! JSONEncoder().encode(TokenClaims(user: "u", expires: now.addingTimeInterval(expires), courses: roles)),
               as: UTF8.self)
    }

    func ready(_ roles: [EntityID: Role]) -> ServerSession {
        var session = session()
        _ = session.receive(.success(.hello(Hello(clientID: client, token: token(roles)))), now: now)
        return session
    }

    /// `Hello` asks the driver to check the token and takes no frame until the outcome is in; a
    /// refused token closes with the checker's error; an outcome after the handshake deadline
    /// (the check took too long) finds the session closed and changes nothing.
    @Test func helloWaitsForTheTokenCheck() {
        var session = session()
        session.receive(.success(.hello(Hello(clientID: client, token: "t"))), now: .zero, date: now)
        #expect(session.takeActions() == [.authenticate(token: "t")])
        #expect(session.nextDeadline == at(1_000), "the handshake deadline keeps running during the check")
        var eager = session
        eager.receive(.success(.ping(nonce: 1)), now: .zero, date: now)
        guard case .close(let early) = eager.takeActions().first else { Issue.record("a frame during the check was taken"); return }
        #expect(early.code == .unexpectedMessage)

        var refused = session
        refused.authenticated(.failure(ConnectionError(.unauthenticated, "bad signature")), now: at(5), date: now)
        guard case .close(let error) = refused.takeActions().first else { Issue.record("expected a close"); return }
        #expect(error.code == .unauthenticated && error.message == "bad signature")

        var late = session
        late.handleTimeout(now: at(1_000))
        _ = late.takeActions()
        late.authenticated(.success(Principal(user: "u", expires: now.addingTimeInterval(60), roles: [course: .editor])), now: at(1_001), date: now)
        #expect(late.takeActions().isEmpty && late.state == .closed)

        // A principal whose token lapsed while it was checked is refused as expired.
        var lapsed = session
        lapsed.authenticated(.success(Principal(user: "u", expires: now, roles: [:])), now: at(5), date: now)
        guard case .close(let expired) = lapsed.takeActions().first else { Issue.record("expected a close"); return }
        #expect(expired.code == .tokenExpired)

        session.authenticated(.success(Principal(user: "u", expires: now.addingTimeInterval(60), roles: [course: .editor])), now: at(5), date: now)
        #expect(session.takeActions().first == .ready(client))
    }

    @Test func claimsGiveRolesPerCourseAndAWildcardCoversEveryCourse() throws {
        let claims = TokenClaims(user: "u", expires: now.addingTimeInterval(60), courses: [course: .editor], everyCourse: .viewer)
        let principal = try claims.principal(at: now).get()
        #expect(principal.role(in: course) == .editor && principal.role(in: .fresh()) == .viewer)
        let scoped = try TokenClaims(user: "u", expires: now.addingTimeInterval(60), courses: [course: .editor, other: .viewer]).principal(at: now).get()
        #expect(scoped.role(in: course) == .editor && scoped.role(in: other) == .viewer && scoped.role(in: .fresh()) == nil)
    }

    /// `exp` and `nbf` with the leeway, `iss` and `aud` when required, the course IDs' form.
    @Test func claimsAreCheckedAgainstTheServersRules() {
        func code(_ claims: TokenClaims, at date: Date, _ rules: TokenRules = TokenRules()) -> ErrorCode? {
            if case .failure(let error) = claims.principal(at: date, rules: rules) { error.code } else { nil }
        }
        let claims = TokenClaims(user: "u", expires: now, courses: [course: .editor], issuer: "https://idp.example", audience: "coursesync")
        #expect(code(claims, at: now.addingTimeInterval(29), TokenRules(leeway: 30)) == nil, "within the leeway")
        #expect(code(claims, at: now.addingTimeInterval(30), TokenRules(leeway: 30)) == .tokenExpired)
        #expect(code(claims, at: now, TokenRules(leeway: 0)) == .tokenExpired)
        var early = claims
        early.exp += 3600
        early.nbf = now.addingTimeInterval(60).timeIntervalSince1970
        #expect(code(early, at: now, TokenRules(leeway: 30)) == .unauthenticated, "not valid before nbf - leeway")
        #expect(code(early, at: now.addingTimeInterval(31), TokenRules(leeway: 30)) == nil)
        var valid = claims
        valid.exp += 3600
        #expect(code(valid, at: now, TokenRules(issuer: "https://idp.example", audience: "coursesync")) == nil)
        #expect(code(valid, at: now, TokenRules(issuer: "https://other.example")) == .unauthenticated)
        #expect(code(valid, at: now, TokenRules(audience: "elsewhere")) == .unauthenticated)
        var unnamed = valid
        unnamed.iss = nil
        unnamed.aud = nil
        #expect(code(unnamed, at: now, TokenRules(issuer: "https://idp.example")) == .unauthenticated)
        #expect(code(unnamed, at: now, TokenRules(audience: "coursesync")) == .unauthenticated)
        #expect(code(unnamed, at: now) == nil, "iss and aud are checked only when required")
        var badCourse = valid
        badCourse.courses = ["not-a-uuid": .editor]
        #expect(code(badCourse, at: now) == .unauthenticated)
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
        #expect(session.receive(.success(.push(push)), now: now) == [.push(push.batch(from: client, author: "u"))], "the batch carries its author")
        var viewerPush = push
        viewerPush.courseID = other
        guard case .send(.reject(let reject)) = session.receive(.success(.push(viewerPush)), now: now).first else {
            Issue.record("a viewer's push was not rejected"); return
        }
        #expect(reject.rejection.code == .forbidden && reject.batchSeq == 1)
        // The connection stays up; subscribing as a viewer is fine, to an unknown course is not.
        #expect(session.receive(.success(.subscribe(courseID: other, sinceSeq: 3)), now: now) == [.subscribe(courseID: other, sinceSeq: 3, presence: false)])
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
        _ = session.answeringTokenCheck(now: at(0), date: now)
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

    /// The driver reports when a frame arrived, before its (held-up) task hands the frame over:
    /// the peer counts as heard from then. The same peer's frames arriving no later than the
    /// first timeout but not handed over were judged silent before.
    @Test func aFrameThatArrivedButWasNotHandedOverYetCountsAsHearingFromThePeer() {
        var session = ready([course: .viewer])
        session.handleTimeout(now: at(1_000))
        guard case .send(.ping) = session.takeActions().first else { Issue.record("no Ping at the first interval"); return }
        session.peerSent(at: at(1_020))  // its Pong, still waiting for the driver's task
        session.peerSent(at: at(500))  // an older mark changes nothing
        func closed(_ actions: [ServerSession.Action]) -> Bool {
            actions.contains { if case .close(let error) = $0 { error.code == .idleTimeout } else { false } }
        }
        session.handleTimeout(now: at(2_000))
        session.handleTimeout(now: at(3_000))
        #expect(!closed(session.takeActions()), "not silent for three intervals: it answered at 1.02 s")
        session.handleTimeout(now: at(4_020))
        #expect(closed(session.takeActions()), "silent for three intervals after its last frame")
        // Without the mark the same peer is closed at 3 s.
        var unmarked = ready([course: .viewer])
        for time: Int64 in [1_000, 2_000, 3_000] { unmarked.handleTimeout(now: at(time)) }
        #expect(closed(unmarked.takeActions()))
    }

    /// A `Hello` that arrived before the handshake deadline, but was handed over after it (the
    /// server's tasks held up), is not refused for lateness; one that arrived after it is.
    @Test func aHelloThatArrivedInTimeIsNotLateForBeingHandedOverLate() {
        var onTime = session()
        onTime.peerSent(at: at(900))
        #expect(onTime.nextDeadline == nil, "nothing to time out while the frame waits")
        onTime.handleTimeout(now: at(1_000))
        #expect(onTime.takeActions().isEmpty)
        onTime.receive(.success(.hello(Hello(clientID: client, token: "t"))), now: at(900), date: now)
        #expect(onTime.takeActions() == [.authenticate(token: "t")])

        var late = session()
        late.peerSent(at: at(1_000))
        late.handleTimeout(now: at(1_000))
        guard case .close(let error) = late.takeActions().first else { Issue.record("a Hello arriving at the deadline was taken"); return }
        #expect(error.code == .idleTimeout)
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

    @Test func aServerMessageFromAClientClosesAsUnexpected() {
        var session = ready([course: .editor])
        let input: Result<WireMessage, WireError> = .failure(.wrongDirection("Diff is sent by servers, not clients"))
        guard case .close(let closed) = session.receive(input, now: now).first else { Issue.record("expected a close"); return }
        #expect(closed.code == .unexpectedMessage)
    }
}
