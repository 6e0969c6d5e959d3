import Foundation
import NIOCore
@testable import SyncServer
import SyncModel
import SyncWire
import Testing
@testable import TestSupport

/// Presence without I/O: the board of one course on one node, what the session lets through, the
/// outbox's place for it, and the relay's text form.
@Suite struct PresenceTests {
    let course = EntityID.fresh()

    func peer(_ n: UInt64, focus: PresenceFocus? = nil) -> PresencePeer {
        PresencePeer(clientID: ClientID(EntityID(high: 7, low: n)), user: "u\(n)", name: "User \(n)", color: UInt32(n), focus: focus)
    }

    func at(_ ms: Int64) -> Moment { .milliseconds(ms) }

    /// A watcher gets everyone at once, then each change; the board relays its own entries and
    /// departures; a connection's departure ends only its own entry.
    @Test func watchersSeeJoinsChangesAndLeaves() {
        var board = PresenceBoard<Int>(courseID: course, node: "a", ttl: .seconds(30))
        board.set(peer(1), origin: "a#1", from: 1)
        #expect(board.takeEffects() == [.relay(PresenceRelay(node: "a", courseID: course, entries: [.init(peer: peer(1), origin: "a#1")]))],
                "nobody watches yet: only the relay")
        board.watch(2)
        #expect(board.takeEffects() == [.send(2, PresenceChange(courseID: course, full: true, peers: [peer(1)])),
                                        .relay(PresenceRelay(node: "a", courseID: course, query: true))],
                "the first watcher gets the whole list, and the other nodes are asked for theirs")
        board.watch(3)
        #expect(board.takeEffects() == [.send(3, PresenceChange(courseID: course, full: true, peers: [peer(1)]))], "asked once")
        board.set(peer(1, focus: .library), origin: "a#1", from: 1)
        let changed = PresenceChange(courseID: course, peers: [peer(1, focus: .library)])
        #expect(board.takeEffects() == [.send(2, changed), .send(3, changed),
                                        .relay(PresenceRelay(node: "a", courseID: course, entries: [.init(peer: peer(1, focus: .library), origin: "a#1")]))])
        board.set(peer(1, focus: .library), origin: "a#1", from: 1)
        #expect(board.takeEffects().isEmpty, "the same again changes nothing")
        board.remove(3)
        #expect(board.takeEffects().isEmpty, "a watcher without an entry leaves quietly")
        board.remove(1)
        #expect(board.takeEffects() == [.send(2, PresenceChange(courseID: course, left: [peer(1).clientID])),
                                        .relay(PresenceRelay(node: "a", courseID: course, left: [.init(clientID: peer(1).clientID, origin: "a#1")]))])
        #expect(!board.references(1) && board.references(2))
    }

    /// Another node's entries come and go by relay; a departure names its origin, so an old
    /// connection's departure does not end the client's newer entry; unmentioned entries expire;
    /// a query is answered with this node's entries; this node's own relays are ignored.
    @Test func relayedEntriesFollowTheirOriginAndExpire() {
        var board = PresenceBoard<Int>(courseID: course, node: "a", ttl: .seconds(30))
        board.watch(9)
        _ = board.takeEffects()
        board.relayed(PresenceRelay(node: "b", courseID: course, entries: [.init(peer: peer(1), origin: "b#1"), .init(peer: peer(2), origin: "b#2")]),
                      now: at(0))
        #expect(board.takeEffects() == [.send(9, PresenceChange(courseID: course, peers: [peer(1), peer(2)]))])
        // Client 1 moved to node c; node b notices its old connection's end later.
        board.relayed(PresenceRelay(node: "c", courseID: course, entries: [.init(peer: peer(1, focus: .library), origin: "c#7")]), now: at(1_000))
        _ = board.takeEffects()
        board.relayed(PresenceRelay(node: "b", courseID: course, left: [.init(clientID: peer(1).clientID, origin: "b#1")]), now: at(2_000))
        #expect(board.takeEffects().isEmpty && board.peers.contains(peer(1, focus: .library)), "a stale departure ends nothing")
        board.relayed(PresenceRelay(node: "a", courseID: course, left: [.init(clientID: peer(2).clientID, origin: "b#2")]), now: at(2_000))
        #expect(board.takeEffects().isEmpty, "this node's own relay comes back and is ignored")
        // Node b goes quiet: its entry ends a TTL after it was last mentioned; c's lives on.
        board.tick(now: at(29_999))
        #expect(board.takeEffects().isEmpty)
        board.tick(now: at(30_000))
        #expect(board.takeEffects() == [.send(9, PresenceChange(courseID: course, left: [peer(2).clientID]))])
        #expect(board.peers == [peer(1, focus: .library)])
        // A query from another node is answered with this node's own entries only.
        board.set(peer(5), origin: "a#5", from: 5)
        _ = board.takeEffects()
        board.relayed(PresenceRelay(node: "d", courseID: course, query: true), now: at(30_001))
        #expect(board.takeEffects() == [.relay(PresenceRelay(node: "a", courseID: course, entries: [.init(peer: peer(5), origin: "a#5")]))])
        // A local connection of a client beats another node's claim to it.
        board.relayed(PresenceRelay(node: "d", courseID: course, entries: [.init(peer: peer(5, focus: .library), origin: "d#1")]), now: at(30_002))
        #expect(board.takeEffects().isEmpty && board.peers.contains(peer(5)))
    }

    /// Merging updates for a slow reader gives what applying them one by one gives, from any
    /// starting point (random sequences).
    @Test func mergedChangesEqualTheirSequence() {
        var random = SplitMix64(seed: 29)
        for _ in 0..<2_000 {
            func randomChange() -> PresenceChange {
                var change = PresenceChange(courseID: course, full: Int.random(in: 0..<6, using: &random) == 0)
                for n in 0..<5 where Bool.random(using: &random) {
                    if Bool.random(using: &random) {
                        change.peers.append(peer(UInt64(n), focus: Bool.random(using: &random) ? .library : nil))
                    } else if !change.full {
                        change.left.append(peer(UInt64(n)).clientID)
                    }
                }
                return change
            }
            let start = Dictionary(uniqueKeysWithValues: (0..<5).filter { _ in Bool.random(using: &random) }.map { (peer(UInt64($0)).clientID, peer(UInt64($0))) })
            let changes = (0..<Int.random(in: 1...5, using: &random)).map { _ in randomChange() }
            let stepwise = changes.reduce(start) { $1.applied(to: $0) }
            let merged = changes.dropFirst().reduce(changes[0]) { $0.followed(by: $1) }
            #expect(merged.applied(to: start) == stepwise)
        }
    }

    /// Presence goes only on a subscribed course, with the token's name when the client gives
    /// none; past ten a second the latest per course waits for the rate (never a cut).
    @Test func theSessionChecksAndPacesPresence() {
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        let claims = TokenClaims(user: "ada", expires: date.addingTimeInterval(3_600), courses: [course: .viewer], name: "Ada L.")
        let token = String(decoding: try! JSONEncoder().encode(claims), as: UTF8.self)
        let client = ClientID(.fresh())
        var session = ServerSession(welcome: Welcome(serverID: "unit", heartbeatIntervalMs: 60_000), now: .zero)
        _ = session.receive(.success(.hello(Hello(clientID: client, token: token))), now: date)

        var unsubscribed = session
        unsubscribed.receive(.success(.setPresence(PresenceAnnouncement(courseID: course))), now: at(1), date: date)
        guard case .close(let error) = unsubscribed.takeActions().first else { Issue.record("presence without a subscription was taken"); return }
        #expect(error.code == .unexpectedMessage)

        session.receive(.success(.subscribe(courseID: course, sinceSeq: 0, presence: true)), now: at(1), date: date)
        #expect(session.takeActions() == [.subscribe(courseID: course, sinceSeq: 0, presence: true)])
        session.receive(.success(.setPresence(PresenceAnnouncement(courseID: course, color: 0xFF0000))), now: at(2), date: date)
        #expect(session.takeActions() == [.setPresence(courseID: course, PresencePeer(clientID: client, user: "ada", name: "Ada L.", color: 0xFF0000, focus: nil))],
                "a viewer may show itself; no name given: the token's")
        // A burst: twenty pass, the rest are coalesced to the latest.
        var passed = 0
        for n in 0..<40 {
            session.receive(.success(.setPresence(PresenceAnnouncement(courseID: course, name: " Ada ", focus: n == 39 ? .library : nil))), now: at(3), date: date)
            passed += session.takeActions().count
        }
        #expect(passed == 19, "a burst of two seconds' worth (one was used above)")
        let due = session.nextDeadline
        #expect(due != nil && due! > at(3) && due! <= at(103), "the held update waits about one token")
        session.handleTimeout(now: due!)
        #expect(session.takeActions() == [.setPresence(courseID: course, PresencePeer(clientID: client, user: "ada", name: "Ada", color: 0, focus: .library))],
                "only the latest, trimmed")
        #expect(session.state != .closed)
    }

    /// Presence waits beside the outbox: it goes when no other frame waits, merges per course,
    /// never counts against the capacity, and is dropped on a close.
    @Test func theOutboxKeepsPresenceAside() async throws {
        let outbox = Outbox(capacity: 2)
        outbox.send(.ping(nonce: 1))
        outbox.sendPresence(PresenceChange(courseID: course, peers: [peer(1)]))
        outbox.sendPresence(PresenceChange(courseID: course, left: [peer(1).clientID]))
        outbox.send(.ping(nonce: 2))
        #expect(!outbox.isClosing, "presence does not count against the capacity")
        let frames = await outbox.next(upTo: 10)
        #expect(frames.count == 2, "the other frames first, presence after they are written")
        let presence = await outbox.next(upTo: 10)
        guard case .frame(let bytes)? = presence.first, presence.count == 1 else { Issue.record("expected one presence frame"); return }
        #expect(try WireMessage(payload: bytes.readableBytesView, sentBy: .server) == .presence(PresenceChange(courseID: course, left: [peer(1).clientID])),
                "merged: the join and the leave in one update")
        outbox.sendPresence(PresenceChange(courseID: course, peers: [peer(2)]))
        outbox.close(ConnectionError(.shuttingDown, "bye"))
        let last = await outbox.next(upTo: 10)
        guard case .close? = last.first, last.count == 1 else { Issue.record("presence outlived the close: \(last)"); return }
    }

    /// The relay's text form round-trips every kind of focus and fits a NOTIFY payload.
    @Test func relayTextRoundTrips() {
        let longName = String(repeating: "é", count: PresenceAnnouncement.maxNameLength)
        let relay = PresenceRelay(node: "node-1/ab12", courseID: course,
                                  entries: (0..<40).map { n in
                                      .init(peer: PresencePeer(clientID: ClientID(.fresh()), user: String(repeating: "u", count: 64), name: longName, color: 0xFFFFFF,
                                                               focus: [nil, .library, .chapter(.fresh()), .video(.fresh())][n % 4]),
                                            origin: UUID().uuidString)
                                  },
                                  left: [.init(clientID: ClientID(.fresh()), origin: "x")], query: true)
        let pieces = relay.pieces()
        #expect(pieces.count == 4 && pieces[0].query && !pieces[1].query)
        #expect(pieces.flatMap(\.entries) == relay.entries && pieces.flatMap(\.left) == relay.left)
        for piece in pieces {
            #expect(piece.text.utf8.count < 8_000, "PostgreSQL's NOTIFY payload limit")
            #expect(PresenceRelay(text: piece.text) == piece)
        }
        #expect(PresenceRelay(text: "{}") == nil && PresenceRelay(text: "not json") == nil)
    }
}
