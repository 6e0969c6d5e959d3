import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SyncModel
import SyncServer
import SyncWire
import Testing
@testable import TestSupport

/// Backends over plain HTTP: `POST /v1/courses/{id}/batches` and `GET /v1/courses/{id}`, over
/// real HTTP, into the same hubs as connected clients.
@Suite struct BackendAPITests {
    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// A backend job registering a media file and linking it into a chapter, as the README's curl example does.
    static func registerAndLink(client: EntityID, chapter: EntityID) -> String {
        """
        {"clientId": "\(client)", "batchSeq": "1", "ops": [
          {"registerMedia": {"temp": "1", "name": "\(base64("lecture-1.mp4"))", "cdnUrl": "\(base64("https://cdn.example.com/lecture-1.mp4"))",
                             "durationMs": "600000", "byteSize": "200000000"}},
          {"linkMedia": {"chapter": {"id": "\(Data(chapter.bytes).base64EncodedString())"}, "items": [{"temp": "2", "media": {"temp": "1"}}],
                         "placement": {"atEnd": {}}}}
        ]}
        """
    }

    @Test func aBackendsBatchIsAckedOnceSeenLiveAndReadBack() async throws {
        try await withHTTPSetup { setup in
            let editor = setup.server.token([setup.course: .editor], user: "pipeline")
            let watcher = try await setup.editor(.webSocketJSON)
            try await watcher.subscribe(setup.course)
            let chapter = try await watcher.push(setup.course, batchSeq: 1, [.createChapter(temp: TempID(1)!, title: "Lectures", placement: .atEnd)]).get()
                .idMap[TempID(1)!]!
            let body = Self.registerAndLink(client: .fresh(), chapter: chapter)

            let answer = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/batches", token: editor, body: body)
            #expect(answer.status == 200, "\(answer.body)")
            guard case .ack(let ack)? = answer.message else { Issue.record("not an Ack: \(answer.body)"); return }
            #expect(ack.seq == 2 && ack.idMap.count == 2)
            // The connected client sees it as a Diff.
            let diff = try await watcher.expect("the backend's Diff") { if case .diff(let diff) = $0, diff.seq == 2 { diff } else { nil } }
            #expect(diff.changes.videos.map(\.title) == ["lecture-1.mp4"])
            // The same request again: the identical answer, and nothing committed twice.
            let again = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/batches", token: editor, body: body)
            #expect(again.status == 200 && again.message == answer.message)
            #expect(try await setup.store.courseSeq(setup.course) == 2)

            let outline = try await HTTPTest.request(setup.httpPort, "GET", "/v1/courses/\(setup.course)", token: editor)
            guard case .snapshot(let part)? = outline.message else { Issue.record("not a snapshot: \(outline.body)"); return }
            #expect(part.course.seq == 2 && part.chapters.map(\.title) == ["Lectures"] && part.videos.map(\.title) == ["lecture-1.mp4"])
            await watcher.close()
        }
    }

    /// `GET /v1/courses/{id}/history`: who did what, newest first, a page at a time, for any role.
    @Test func aCoursesHistorySaysWhoDidWhat() async throws {
        try await withHTTPSetup { setup in
            let watcher = try await setup.editor(.webSocketJSON)  // the token's user: "tester"
            let chapter = try await watcher.push(setup.course, batchSeq: 1, [.createChapter(temp: TempID(1)!, title: "Lectures", placement: .atEnd)]).get()
                .idMap[TempID(1)!]!
            let editor = setup.server.token([setup.course: .editor], user: "pipeline")
            let posted = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/batches", token: editor,
                                                    body: Self.registerAndLink(client: .fresh(), chapter: chapter))
            #expect(posted.status == 200, "\(posted.body)")
            let viewer = setup.server.token([setup.course: .viewer], user: "auditor")
            let first = try await HTTPTest.request(setup.httpPort, "GET", "/v1/courses/\(setup.course)/history?limit=1", token: viewer)
            #expect(first.status == 200, "\(first.body)")
            let page = try #require(try JSONSerialization.jsonObject(with: Data(first.body.utf8)) as? [String: Any])
            let entries = try #require(page["history"] as? [[String: String]])
            #expect(entries.map { $0["author"] } == ["pipeline"] && entries.first?["seq"] == "2")
            #expect(entries.first?["summary"] == "registered “lecture-1.mp4”; linked 1 video into “Lectures”", "\(entries)")
            #expect(page["next"] as? String == "2")
            let second = try await HTTPTest.request(setup.httpPort, "GET", "/v1/courses/\(setup.course)/history?before=2", token: viewer)
            let older = try #require((try JSONSerialization.jsonObject(with: Data(second.body.utf8)) as? [String: Any])?["history"] as? [[String: String]])
            #expect(older.map { $0["author"] } == ["tester"] && older.first?["summary"] == "added chapter “Lectures”", "\(older)")
            #expect(try await HTTPTest.request(setup.httpPort, "GET", "/v1/courses/\(setup.course)/history", token: nil).status == 401)
            #expect(try await HTTPTest.request(setup.httpPort, "GET", "/v1/courses/\(EntityID.fresh())/history",
                                               token: setup.server.token([:], user: "x")).status == 403)
        }
    }

    /// `GET /v1/courses/{id}?at=SEQ` shows the course as it was; `POST …/restore` brings it back as
    /// one batch of the caller's (exactly-once, seen live as a Diff, refused to a viewer);
    /// `GET …/restore?to=` gives that batch to send as one's own; a seq past the course is 410.
    @Test func theCourseAsItWasAndItsRestore() async throws {
        try await withHTTPSetup { setup in
            let watcher = try await setup.editor(.webSocketJSON)
            try await watcher.subscribe(setup.course)
            let chapter = try await watcher.push(setup.course, batchSeq: 1, [.createChapter(temp: TempID(1)!, title: "Lectures", placement: .atEnd)]).get()
                .idMap[TempID(1)!]!
            let editor = setup.server.token([setup.course: .editor], user: "pipeline")
            _ = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/batches", token: editor,
                                           body: Self.registerAndLink(client: .fresh(), chapter: chapter))
            let earlier = try await setup.store.snapshot(courseID: setup.course)  // seq 2
            _ = try await watcher.push(setup.course, batchSeq: 2, [.renameChapter(.id(chapter), title: "Renamed"),
                                                                   .createChapter(temp: TempID(2)!, title: "Extra", placement: .atStart)]).get()
            let videoID = try #require(earlier.videos.keys.first)
            _ = try await watcher.push(setup.course, batchSeq: 3, [.unlinkVideo(.id(videoID))]).get()

            let viewer = setup.server.token([setup.course: .viewer], user: "auditor")
            let at = try await HTTPTest.request(setup.httpPort, "GET", "/v1/courses/\(setup.course)?at=2", token: viewer)
            guard case .snapshot(let part)? = at.message else { Issue.record("not a snapshot: \(at.body)"); return }
            #expect(CourseState(parts: [part]) == earlier)
            let gone = try await HTTPTest.request(setup.httpPort, "GET", "/v1/courses/\(setup.course)?at=99", token: viewer)
            #expect(gone.status == 410 && gone.body.contains("the course is at seq 4"), "\(gone.status) \(gone.body)")

            let offered = try await HTTPTest.request(setup.httpPort, "GET", "/v1/courses/\(setup.course)/restore?to=2", token: viewer)
            guard case .push(let push)? = offered.message else { Issue.record("not a push: \(offered.body)"); return }
            #expect(push.baseSeq == 4 && push.ops.map(\.kind).sorted() == ["deleteChapter", "linkMedia", "renameChapter"], "\(push.ops)")

            let body = #"{"clientId": "\#(EntityID.fresh())", "batchSeq": "1", "to": "2"}"#
            let refused = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/restore", token: viewer, body: body)
            #expect(refused.status == 403, "\(refused.body)")
            let restored = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/restore", token: editor, body: body)
            guard case .ack(let ack)? = restored.message else { Issue.record("not an Ack: \(restored.body)"); return }
            #expect(ack.seq == 5)
            _ = try await watcher.expect("the restore's Diff") { if case .diff(let diff) = $0, diff.seq == 5 { diff } else { nil } }
            let now = try await setup.store.snapshot(courseID: setup.course)
            #expect(now.orderedChapters.map(\.title) == ["Lectures"] && now.chapters[chapter] != nil)
            #expect(now.videos.values.map(\.title) == earlier.videos.values.map(\.title))
            let again = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/restore", token: editor, body: body)
            #expect(again.message == restored.message, "the same request again: the same answer")
            #expect(try await setup.store.courseSeq(setup.course) == 5)
            let nothing = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/restore", token: editor,
                                                     body: #"{"clientId": "\#(EntityID.fresh())", "batchSeq": "1", "to": "5"}"#)
            #expect(nothing.status == 200 && nothing.body.contains(#""unchanged": true"#), "\(nothing.body)")
            await watcher.close()
        }
    }

    @Test func refusalsHaveTheirStatusAndCode() async throws {
        try await withHTTPSetup { setup in
            let path = "/v1/courses/\(setup.course)/batches"
            let body = #"{"clientId": "\#(EntityID.fresh())", "batchSeq": "1", "ops": [{"createChapter": {"temp": "1", "title": "\#(Self.base64("Ok"))", "placement": {"atEnd": {}}}}]}"#
            let viewer = setup.server.token([setup.course: .viewer])
            let missing = EntityID.fresh()
            let cases: [(String, HTTPTest.Response, Int, String)] = [
                ("no token", try await HTTPTest.request(setup.httpPort, "POST", path, token: nil, body: body), 401, "UNAUTHENTICATED"),
                ("a bad token", try await HTTPTest.request(setup.httpPort, "POST", path, token: "nope", body: body), 401, "UNAUTHENTICATED"),
                ("a viewer", try await HTTPTest.request(setup.httpPort, "POST", path, token: viewer, body: body), 403, "FORBIDDEN"),
                ("another course", try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(EntityID.fresh())/batches",
                                                          token: setup.server.token([setup.course: .editor]), body: body), 403, "FORBIDDEN"),
                ("no such course", try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(missing)/batches",
                                                          token: setup.server.token([missing: .editor]),
                                                          body: body.replacingOccurrences(of: "\"batchSeq\": \"1\"", with: "\"batchSeq\": \"2\"")),
                 404, "UNKNOWN_COURSE"),
                ("not JSON", try await HTTPTest.request(setup.httpPort, "POST", path, token: viewer, body: "{"), 400, "MALFORMED_FRAME"),
                ("an empty title", try await HTTPTest.request(setup.httpPort, "POST", path, token: setup.server.token([setup.course: .editor]),
                                                          body: body.replacingOccurrences(of: Self.base64("Ok"), with: "")), 422, "INVALID_TITLE"),
            ]
            for (what, response, status, code) in cases {
                #expect(response.status == status && response.body.contains(code), "\(what): \(response.status) \(response.body)")
            }
            #expect(try await setup.store.courseSeq(setup.course) == 0, "nothing refused was committed")
        }
    }

    /// HTTP batches are held to a connection's push rate, per user: past the burst, 429 with
    /// RATE_LIMITED and how long to wait; nothing refused is committed.
    @Test func aFloodOfRequestsIsRateLimited() async throws {
        try await withHTTPSetup(configure: { $0.limits.session.pushesPerSecond = 1 }) { setup in
            let token = setup.server.token([setup.course: .editor], user: "script")
            let client = EntityID.fresh()
            // Twenty at once (one after another, a loaded machine can serve them slower than the bucket refills).
            let responses = try await withThrowingTaskGroup(of: HTTPTest.Response.self) { group in
                for batchSeq in 1...20 {
                    let body = #"{"clientId": "\#(client)", "batchSeq": "\#(batchSeq)", "ops": [{"createChapter": {"temp": "\#(batchSeq)", "title": "\#(Self.base64("C\(batchSeq)"))", "placement": {"atEnd": {}}}}]}"#
                    group.addTask { try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/batches", token: token, body: body) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let statuses = responses.map(\.status)
            let limited = responses.first { $0.status == 429 }
            #expect(statuses.count { $0 == 200 } >= 2, "the burst (two seconds' worth) passes: \(statuses)")
            #expect(Set(statuses).isSubset(of: [200, 429]), "\(statuses)")
            #expect(statuses.contains(429), "\(statuses)")
            guard case .error(let error)? = limited?.message else { Issue.record("no RATE_LIMITED error"); return }
            #expect(error.code == .rateLimited && (error.retryAfterMs ?? 0) > 0)
            #expect(try await setup.store.courseSeq(setup.course) == CourseSeq(statuses.count { $0 == 200 }))
        }
    }
}

