import Foundation
import PostgresStore
import SyncModel
import SyncServer
import SyncStorage
import SyncWire
import Testing
@testable import TestSupport

/// Presence over real TCP between two nodes on one real PostgreSQL (relays on its NOTIFY channel),
/// and on one node with the protocol's rules (the opt-in, a client that did not ask sees nothing).
@Suite(.timeLimit(.minutes(3))) struct PresenceAcrossNodesTests {
    func fastPresence(_ configuration: inout ServerConfiguration) {
        configuration.presenceRefresh = .milliseconds(200)
        configuration.presenceTTL = .seconds(1)
    }

    /// Ada on node A and Grace on node B see each other join, move and leave; when node A stops
    /// relaying (as if it died) its entry on B ends within the TTL, without any departure.
    @Test func collaboratorsOnTwoNodesSeeEachOther() async throws {
        try await withDatabase { database in
            let (courseID, chapters, _) = try await database.makeCourse(chapters: 2)
            try await withServer(store: database.store, configure: fastPresence) { nodeA in
                let storeB = PostgresStore(client: database.client, logger: TestDatabase.logger)
                try await withServer(store: storeB, configure: fastPresence) { nodeB in
                    let listenerA = Task { try await CommitListener(store: database.store, server: nodeA.server).run() }
                    let listenerB = Task { try await CommitListener(store: storeB, server: nodeB.server).run() }
                    defer { listenerB.cancel() }

                    let ada = try await TestClient.connect(port: nodeA.port, answerPings: true)
                    try await ada.hello(token: nodeA.token([courseID: .editor], user: "ada"))
                    try await ada.subscribe(courseID, presence: true)
                    try await ada.send(.setPresence(PresenceAnnouncement(courseID: courseID, name: "Ada", color: 0x3366CC, focus: .chapter(chapters[0]))))

                    let grace = try await TestClient.connect(port: nodeB.port, answerPings: true)
                    try await grace.hello(token: nodeB.token([courseID: .viewer], user: "grace"))
                    try await grace.subscribe(courseID, presence: true)
                    try await grace.waitForPresence(courseID, "Grace on B sees Ada on A") { present in
                        present[ada.clientID] == PresencePeer(clientID: ada.clientID, user: "ada", name: "Ada", color: 0x3366CC, focus: .chapter(chapters[0]))
                    }
                    try await grace.send(.setPresence(PresenceAnnouncement(courseID: courseID, focus: .library)))
                    try await ada.waitForPresence(courseID, "Ada sees Grace, named by her token") { present in
                        present[grace.clientID]?.name == "grace" && present[grace.clientID]?.focus == .library && present.count == 2
                    }
                    try await ada.send(.setPresence(PresenceAnnouncement(courseID: courseID, name: "Ada", color: 0x3366CC, focus: .chapter(chapters[1]))))
                    try await grace.waitForPresence(courseID, "Ada's move reaches B") { $0[ada.clientID]?.focus == .chapter(chapters[1]) }

                    // A watcher that did not ask for presence gets none.
                    let quiet = try await TestClient.connect(port: nodeB.port, answerPings: true)
                    try await quiet.hello(token: nodeB.token([courseID: .viewer]))
                    try await quiet.subscribe(courseID)

                    // Grace leaves: Ada hears of it through the relay.
                    try await grace.send(.unsubscribe(courseID: courseID))
                    try await ada.waitForPresence(courseID, "Grace's departure reaches A") { $0[grace.clientID] == nil && $0.count == 1 }

                    // Node A stops relaying (its listener ends), then Ada's connection ends: B never
                    // hears of it, and her entry expires there after the TTL.
                    let watcher = try await TestClient.connect(port: nodeB.port, answerPings: true)
                    try await watcher.hello(token: nodeB.token([courseID: .viewer]))
                    try await watcher.subscribe(courseID, presence: true)
                    try await watcher.waitForPresence(courseID, "B knows Ada") { $0[ada.clientID] != nil }
                    listenerA.cancel()
                    _ = await listenerA.result
                    await ada.close()
                    try await watcher.waitForPresence(courseID, "Ada's entry expired on B") { $0.isEmpty }
                    #expect(!quiet.received.contains { if case .presence = $0 { true } else { false } })
                    #expect(watcher.undecodable.isEmpty && ada.undecodable.isEmpty)
                }
            }
        }
    }
}
