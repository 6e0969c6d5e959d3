import Foundation
import SQLiteStore
@testable import SyncServer
import SyncModel
import SyncStorage
import SyncWire
import Testing
@testable import TestSupport

/// Course hubs do not accumulate: a hub with no subscriber and nothing queued leaves memory after
/// the idle time; one with a subscriber stays, and an evicted course works again when touched.
@Suite struct HubEvictionTests {
    @Test func aThousandCoursesTouchedOnceLeaveOnlyTheBusyHubResident() async throws {
        try await withReplicaFolder { folder in
            let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            var courses: [EntityID] = []
            for index in 0..<1_000 {
                let course = EntityID.fresh()
                try await store.createCourse(Course(id: course, title: "Course \(index)"))
                courses.append(course)
            }
            try await withServer(store: store, configure: { $0.hubIdleTimeout = .milliseconds(300) }) { server in
                let token = TestServer.jwt(TokenClaims(user: "ops", expires: Date().addingTimeInterval(600), courses: [:], everyCourse: .editor))
                let watcher = try await TestClient.connect(port: server.port, answerPings: true)
                try await watcher.hello(token: token)
                _ = try await watcher.subscribe(courses[0])
                let visitor = try await TestClient.connect(port: server.port, answerPings: true)
                try await visitor.hello(token: token)
                for course in courses {
                    _ = try await visitor.subscribe(course)
                    try await visitor.send(.unsubscribe(courseID: course))
                }
                #expect(server.server.residentHubs <= 1_000)
                try await eventually("the idle hubs evicted") { server.server.residentHubs == 1 }
                // The hub with a subscriber stayed, and serves it: a push reaches it.
                _ = try await visitor.push(courses[0], batchSeq: 1, [.createChapter(temp: TempID(1)!, title: "Still here", placement: .atEnd)]).get()
                try await watcher.waitUntil("the diff") { $0.contains { if case .diff = $0 { true } else { false } } }
                // An evicted course works again: a new hub, from the store.
                _ = try await visitor.push(courses[999], batchSeq: 2, [.createChapter(temp: TempID(2)!, title: "Back", placement: .atEnd)]).get()
                #expect(try await visitor.subscribe(courses[999]) == 1)
                #expect(server.server.residentHubs == 2)
            }
        }
    }
}
