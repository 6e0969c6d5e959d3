import Foundation
import SyncModel
import SyncServer
import SyncWire
import Testing

/// The sans-I/O session: handshake, authentication and authorization without a socket.
@Suite struct SessionTests {
    let authority = try! TokenAuthority(secret: TestServer.secret)
    let course = EntityID.fresh()
    let other = EntityID.fresh()
    let client = ClientID(.fresh())
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func session() -> ServerSession {
        ServerSession(authority: authority, welcome: Welcome(serverID: "unit", heartbeatIntervalMs: 1000))
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
        guard case .send(.welcome(let welcome)) = actions.first else { Issue.record("expected Welcome, got \(actions)"); return }
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
}
