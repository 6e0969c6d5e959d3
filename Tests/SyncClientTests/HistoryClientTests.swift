import Foundation
@testable import SyncClient
import SyncModel
import SyncServer
import Testing
@testable import TestSupport

/// The course's history through the client library, against a real server and its HTTP API:
/// who did what, the course at a commit, and a restore that is one undoable edit.
@Suite(.timeLimit(.minutes(2))) struct HistoryClientTests {
    @Test func aClientReadsTheHistoryAndRestoresAnEarlierCourse() async throws {
        try await withCourseServer { folder, store, course, server in
            let (ports, sink) = AsyncStream.makeStream(of: Int.self)
            let listener = HTTPListener(server: server.server, host: "127.0.0.1", port: 0, logger: TestDatabase.logger, announce: { sink.yield($0) })
            let running = Task { try await listener.run() }
            defer { running.cancel() }
            var iterator = ports.makeAsyncIterator()
            let httpPort = try #require(await iterator.next())
            let withHTTP: (inout ClientConfiguration) -> Void = { $0.httpURL = URL(string: "http://127.0.0.1:\(httpPort)") }
            let ada = try await server.client(of: course, in: folder, name: "ada", configure: withHTTP)
            let grace = try await server.client(of: course, in: folder, name: "grace")

            let intro = try await ada.createChapter(title: "Intro")
            let clip = try await ada.registerMedia(name: "welcome.mp4", cdnURL: "https://cdn.example.com/w.mp4", durationMs: 60_000, byteSize: 1_000)
            _ = try await ada.linkMedia([clip], to: intro)
            try await ada.settle()
            let earlierSeq = await ada.cursor
            let earlier = try await store.snapshot(courseID: course)
            try await ada.renameChapter(intro, to: "Renamed")
            let videos = try await ada.outline().chapters[0].videos.map(\.key)
            try await ada.unlinkVideo(videos[0])
            _ = try await ada.createChapter(title: "Later")
            try await ada.settle()

            let entries = try await ada.history(limit: 10)
            #expect(entries.first?.author == "ada" && entries.first?.summary.hasPrefix("renamed chapter “Intro” to “Renamed”") == true, "\(entries)")
            #expect(try await ada.course(at: earlierSeq) == earlier)

            #expect(try await ada.restore(to: earlierSeq))
            try await ada.settle()
            let restored = try await store.snapshot(courseID: course)
            #expect(restored.orderedChapters.map(\.title) == ["Intro"] && restored.videos.values.map(\.title) == ["welcome.mp4"])
            try await eventually("Grace sees the restore like any edit") { try await grace.outline().chapters.map(\.chapter.title) == ["Intro"] }
            #expect(try await ada.restore(to: earlierSeq) == false, "already so")

            #expect(try await ada.undo(), "the restore is one edit: undo takes it back")
            try await ada.settle()
            #expect(try await store.snapshot(courseID: course).orderedChapters.map(\.title) == ["Renamed", "Later"])

            await #expect(throws: HistoryError.self) { try await ada.course(at: 999) }
            await #expect(throws: HistoryError.noHTTPURL) { try await grace.history() }
            try await ada.close()
            try await grace.close()
        }
    }
}
