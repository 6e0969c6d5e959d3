import Foundation
@testable import SyncClient
import SyncModel
import SyncServer
import Testing
@testable import TestSupport

/// Presence through the client library against a real server: who is here, on which row (in
/// each replica's own keys, also for a row made on the other replica), and gone on close.
@Suite(.timeLimit(.minutes(2))) struct PresenceClientTests {
    @Test func clientsSeeEachOtherAndWhatTheyLookAt() async throws {
        try await withCourseServer { folder, _, course, server in
            let ada = try await server.client(of: course, in: folder, name: "ada")
            let grace = try await server.client(of: course, in: folder, name: "grace")
            var updates = await grace.observePresence().makeAsyncIterator()
            #expect(await updates.next() == [], "the current list comes first")

            let chapter = try await ada.createChapter(title: "Intro")
            try await ada.settle()
            try await ada.setPresence(name: "Ada", color: 0x3366CC, focus: .chapter(chapter))
            var seen: [Collaborator] = []
            while let next = await updates.next() {
                seen = next
                if next.first?.focus != nil { break }
            }
            let id = try #require(try await ada.outline().chapters.first?.chapter.id)
            #expect(seen == [Collaborator(clientID: await ada.clientID, user: "ada", name: "Ada", color: 0x3366CC, focus: .chapter(LocalKey(id)))],
                    "Grace sees Ada on the chapter under the key her replica knows it by")
            let adaSees = await ada.collaborators
            #expect(adaSees.isEmpty, "Grace has not announced herself: she watches unseen")

            await grace.setFocus(.library)
            try await eventually("Ada sees Grace in the library, named by her token") {
                let present = await ada.collaborators
                return present.map(\.name) == ["grace"] && present.first?.focus == .library
            }
            await #expect(throws: EditError.self) { try await grace.setPresence(name: String(repeating: "x", count: 65)) }

            try await ada.close()
            try await eventually("Ada's departure reaches Grace") { await grace.collaborators.isEmpty }
            try await grace.close()
        }
    }
}
