import Foundation
import PostgresNIO
import SyncModel
import SyncServer
import SyncStorage
import SyncWire
import Testing
@testable import TestSupport

/// Every way a batch or a connection is refused: the code arrives, and the database is unchanged.
@Suite struct RejectionTests {
    /// What must not change when something is refused.
    struct Fingerprint: Equatable {
        var state: CourseState
        var batches: Int
        var log: Int
        var temps: Int
    }

    static func fingerprint(_ database: TestDatabase, _ courseID: EntityID) async throws -> Fingerprint {
        func count(_ table: String) async throws -> Int {
            var count = 0
            for try await value in try await database.client.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)")).decode(Int.self) {
                count = value
            }
            return count
        }
        return Fingerprint(state: try await database.store.snapshot(courseID: courseID), batches: try await count("client_batches"),
                           log: try await count("change_log"), temps: try await count("client_temps"))
    }

    @Test func eachBatchRejectionCodeIsReachableAndLeavesTheDatabaseUnchanged() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 2, media: 3)
            try await withServer(store: database.store) { server in
                let client = try await server.editor(of: courseID)
                // A chapter that another batch deleted.
                let doomed = try await client.push(courseID, batchSeq: 1, [.createChapter(temp: TempID(1)!, title: "Doomed", placement: .atEnd)]).get()
                let doomedID = try #require(doomed.idMap[TempID(1)!])
                _ = try await client.push(courseID, batchSeq: 2, [.deleteChapter(.id(doomedID))]).get()
                let before = try await Self.fingerprint(database, courseID)

                let link = SyncModel.Operation.linkMedia(chapter: .id(chapters[0]), items: [LinkItem(temp: TempID(10)!, media: .id(media[0]))], placement: .atEnd)
                let cases: [(ErrorCode, Int?, [SyncModel.Operation])] = [
                    (.targetDeleted, 1, [link, .renameChapter(.id(doomedID), title: "Back")]),
                    (.unknownMedia, 0, [.linkMedia(chapter: .id(chapters[0]), items: [LinkItem(temp: TempID(11)!, media: .id(.fresh()))], placement: .atEnd)]),
                    (.invalidTitle, 1, [link, .renameChapter(.id(chapters[1]), title: "   ")]),
                    (.invalidTitle, 0, [.renameChapter(.id(chapters[1]), title: String(repeating: "x", count: Limits.maxTitleLength + 1))]),
                    (.batchTooLarge, Limits.maxOpsPerBatch, Array(repeating: .renameChapter(.id(chapters[1]), title: "Same"), count: Limits.maxOpsPerBatch + 1)),
                    (.unknownTempID, 0, [.renameChapter(.temp(TempID(999)!), title: "Never created")]),
                    (.invalidMedia, 0, [.registerMedia(temp: TempID(12)!, name: "Clip", cdnURL: "ftp://example.com/x", durationMs: 1, byteSize: 1)]),
                    (.emptyBatch, nil, []),
                ]
                for (offset, (code, opIndex, ops)) in cases.enumerated() {
                    let result = try await client.push(courseID, batchSeq: 100 + BatchSeq(offset), ops)
                    guard case .failure(let rejection) = result else {
                        Issue.record("expected \(code), the batch was acked")
                        continue
                    }
                    #expect(rejection.code == code)
                    #expect(rejection.opIndex == opIndex, "\(code)")
                    #expect(!rejection.message.isEmpty)
                }

                // Text that is not UTF-8 rejects only the batch.
                var envelope = WireMessage.push(Push(courseID: courseID, batchSeq: 200, baseSeq: 0,
                                                     ops: [.renameChapter(.id(chapters[0]), title: "placeholder")])).envelope
                envelope.push.ops[0].renameChapter.title = Data([0x41, 0xFF, 0xFE])
                try await client.sendRaw(Framing.frame(try envelope.serializedBytes() as [UInt8]))
                let badText = try await client.answer(courseID, batchSeq: 200)
                #expect(badText.failureCode == .invalidTitle)
                if case .failure(let rejection) = badText { #expect(rejection.opIndex == 0) }

                // The connection is still up and the database unchanged.
                #expect(!client.isClosed)
                #expect(try await Self.fingerprint(database, courseID) == before)
                #expect(try await client.push(courseID, batchSeq: 300, [link]).get().seq == before.state.seq + 1)
            }
        }
    }

    @Test func viewersAndOtherCoursesTokensCannotPush() async throws {
        try await withDatabase { database in
            let (courseID, chapters, _) = try await database.makeCourse(chapters: 1)
            let (otherCourse, _, _) = try await database.makeCourse(chapters: 1)
            try await withServer(store: database.store) { server in
                let before = try await Self.fingerprint(database, courseID)
                let rename = SyncModel.Operation.renameChapter(.id(chapters[0]), title: "Renamed")

                let viewer = try await TestClient.connect(port: server.port)
                try await viewer.hello(token: server.token([courseID: .viewer]))
                #expect(try await viewer.subscribe(courseID) == before.state.seq)
                let viewerPush = try await viewer.push(courseID, batchSeq: 1, [rename])
                #expect(viewerPush.failureCode == .forbidden)

                // An editor of another course: its push is refused, its subscription closes the connection.
                let outsider = try await TestClient.connect(port: server.port)
                try await outsider.hello(token: server.token([otherCourse: .editor]))
                #expect(try await outsider.push(courseID, batchSeq: 1, [rename]).failureCode == .forbidden)
                try await outsider.send(.subscribe(courseID: courseID, sinceSeq: 0))
                #expect(try await outsider.expectClosed()?.code == .forbidden)

                #expect(!viewer.isClosed)
                #expect(try await Self.fingerprint(database, courseID) == before)
            }
        }
    }

    @Test func badTokensAndVersionsAreRefusedAtTheHandshake() async throws {
        try await withDatabase { database in
            let (courseID, _, _) = try await database.makeCourse(chapters: 1)
            try await withServer(store: database.store) { server in
                let before = try await Self.fingerprint(database, courseID)
                let claims = TokenClaims(user: "mallory", expires: Date().addingTimeInterval(3600), courses: [courseID: .editor])
                let cases: [(String, UInt32, ErrorCode)] = [
                    (server.token([courseID: .editor], expires: Date().addingTimeInterval(-1)), WireProtocol.version, .tokenExpired),
                    (TestServer.jwt(claims, secret: Array("another-secret-another-secret-another".utf8)), WireProtocol.version, .unauthenticated),
                    (TestServer.jwt(claims, kid: nil), WireProtocol.version, .unauthenticated),
                    (TestServer.jwt(claims, kid: "someone-else"), WireProtocol.version, .unauthenticated),
                    ("not a token", WireProtocol.version, .unauthenticated),
                    ("", WireProtocol.version, .unauthenticated),
                    (server.token([courseID: .editor]), WireProtocol.version + 1, .unsupportedProtocolVersion),
                ]
                for (token, version, code) in cases {
                    let client = try await TestClient.connect(port: server.port)
                    try await client.send(.hello(Hello(protocolVersion: version, clientID: client.clientID, token: token)))
                    #expect(try await client.expectClosed()?.code == code)
                    #expect(!client.received.contains { if case .welcome = $0 { true } else { false } })
                }
                // A first message other than Hello.
                let rude = try await TestClient.connect(port: server.port)
                try await rude.send(.subscribe(courseID: courseID, sinceSeq: 0))
                #expect(try await rude.expectClosed()?.code == .unexpectedMessage)
                // Subscribing to a course that does not exist.
                let lost = try await TestClient.connect(port: server.port)
                let missing = EntityID.fresh()
                try await lost.hello(token: server.token([missing: .editor]))
                try await lost.send(.subscribe(courseID: missing, sinceSeq: 0))
                #expect(try await lost.expectClosed()?.code == .unknownCourse)
                #expect(try await Self.fingerprint(database, courseID) == before)
            }
        }
    }
}

extension Result where Failure == Rejection {
    var failureCode: ErrorCode? {
        if case .failure(let rejection) = self { return rejection.code }
        return nil
    }
}
