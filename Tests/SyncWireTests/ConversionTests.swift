import Foundation
import SwiftProtobuf
import SyncModel
@testable import SyncWire
import Testing

/// Malformed messages give typed errors naming the field, never a crash.
@Suite("Wire conversions")
struct ConversionTests {
    typealias V = GoldenVectors

    func decode(_ build: (inout Coursesync_V1_Envelope) -> Void) throws(WireError) -> WireMessage {
        try WireMessage(payload: Array(GoldenVectors.rawFrame(build).dropFirst(4)))
    }

    func validPush(_ edit: @escaping (inout Coursesync_V1_Push) -> Void = { _ in }) -> (inout Coursesync_V1_Envelope) -> Void {
        { envelope in
            guard case .message(.push(let push)) = V.valid.first(where: { $0.name == "09-push-create-and-link" })!.content else { fatalError() }
            var wire = Convert.wire(push)
            edit(&wire)
            envelope.push = wire
        }
    }

    /// A message of the other side's is refused for its direction before its fields are checked:
    /// a client's `Diff` without `origin` is `UNEXPECTED_MESSAGE`, not `MALFORMED_FRAME`.
    @Test func theDirectionIsCheckedBeforeRequiredFields() throws {
        let payload = Array(GoldenVectors.rawFrame { $0.diff = Coursesync_V1_Diff() }.dropFirst(4))
        #expect(throws: WireError.self) { try WireMessage(payload: payload) }
        do {
            _ = try WireMessage(payload: payload, sentBy: .client)
            Issue.record("a client's Diff decoded")
        } catch {
            #expect(error.code == .unexpectedMessage)
        }
        // The same frame from a server is judged on its fields.
        do {
            _ = try WireMessage(payload: payload, sentBy: .server)
            Issue.record("a Diff without origin decoded")
        } catch {
            #expect(error.code == .malformedFrame)
        }
        let push = Array(GoldenVectors.rawFrame(validPush()).dropFirst(4))
        #expect(throws: WireError.wrongDirection("Push is sent by clients, not servers")) { try WireMessage(payload: push, sentBy: .server) }
        _ = try WireMessage(payload: push, sentBy: .client)
    }

    @Test func aValidPushDecodes() throws {
        guard case .push(let push) = try decode(validPush()) else { Issue.record("not a push"); return }
        #expect(push.ops.count == 3)
    }

    @Test(arguments: [
        ("push.course", { @Sendable (p: inout Coursesync_V1_Push) in p.course = Data() }),
        ("push.batch_seq", { @Sendable (p: inout Coursesync_V1_Push) in p.batchSeq = 0 }),
        ("push.ops[0].kind", { @Sendable (p: inout Coursesync_V1_Push) in p.ops[0].kind = nil }),
        ("push.ops[0].create_chapter.temp", { @Sendable (p: inout Coursesync_V1_Push) in p.ops[0].createChapter.temp = 0 }),
        ("push.ops[2].link_media.chapter", { @Sendable (p: inout Coursesync_V1_Push) in p.ops[2].linkMedia.clearChapter() }),
        ("push.ops[2].link_media.items[1].media", { @Sendable (p: inout Coursesync_V1_Push) in p.ops[2].linkMedia.items[1].clearMedia() }),
        ("push.ops[2].link_media.items[0].temp", { @Sendable (p: inout Coursesync_V1_Push) in p.ops[2].linkMedia.items[0].temp = 0 }),
        ("push.ops[0].create_chapter.placement.after", { @Sendable (p: inout Coursesync_V1_Push) in p.ops[0].createChapter.placement.after = Coursesync_V1_Ref() }),
    ] as [(String, @Sendable (inout Coursesync_V1_Push) -> Void)])
    func missingRequiredFieldsNameTheirPath(path: String, edit: @escaping @Sendable (inout Coursesync_V1_Push) -> Void) {
        #expect(throws: WireError.missingField(path)) { try decode(validPush(edit)) }
    }

    @Test func idsOfTheWrongLengthAreInvalidFields() {
        #expect(throws: WireError.invalidField("push.ops[0].create_chapter.placement.after.id", reason: "an ID is 16 bytes, not 17")) {
            try decode(validPush { $0.ops[0].createChapter.placement.after.id = Data(repeating: 1, count: 17) })
        }
        #expect(throws: WireError.invalidField("hello.client_id", reason: "an ID is 16 bytes, not 4")) {
            try decode { $0.hello = .with { $0.clientID = Data([1, 2, 3, 4]) } }
        }
    }

    @Test func badUTF8RejectsTheBatchWithTheOpIndexAndTheFieldsCode() {
        let rejection = { (code: ErrorCode, index: Int, what: String) in
            WireError.invalidBatch(courseID: V.course, batchSeq: 6, rejection: Rejection(code, opIndex: index, "\(what) is not valid UTF-8"))
        }
        #expect(throws: rejection(.invalidMedia, 1, "the CDN URL")) { try decode(validPush { $0.ops[1].registerMedia.cdnURL = Data([0xC3]) }) }
        #expect(throws: rejection(.invalidTitle, 2, "the video title")) { try decode(validPush { $0.ops[2].linkMedia.items[0].title = Data([0xED, 0xA0, 0x80]) }) }
        #expect(throws: rejection(.invalidTitle, 0, "the chapter title")) { try decode(validPush { $0.ops[0].createChapter.title = Data([0xFF]) }) }
        #expect(WireError.invalidBatch(courseID: V.course, batchSeq: 6, rejection: Rejection(.invalidTitle, "")).code == .invalidTitle)
    }

    @Test func unknownEnumValuesAreRefused() {
        #expect(throws: WireError.unknownEnumValue(field: "error.code", value: 77)) {
            try decode { $0.error = .with { $0.code = .UNRECOGNIZED(77) } }
        }
        #expect(throws: WireError.unknownEnumValue(field: "reject.code", value: 0)) {
            try decode { $0.reject = .with { $0.course = Data(V.course.bytes); $0.code = .unspecified } }
        }
    }

    @Test func garbageAndTruncatedPayloadsAreMalformed() throws {
        let valid = WireMessage.subscribe(courseID: V.course, sinceSeq: 5).payload()
        for cut in 1..<valid.count {
            #expect(throws: WireError.self) { try WireMessage(payload: valid[0..<cut]) }
        }
        var rng = SplitMix64(seed: 99)
        for _ in 0..<2_000 {
            let garbage = (0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Must not crash; a rare random payload may even be a valid message.
            _ = try? WireMessage(payload: garbage)
        }
        do {
            _ = try WireMessage(payload: [0x0F])
            Issue.record("garbage decoded")
        } catch {
            guard case .malformed = error else { Issue.record("expected .malformed, got \(error)"); return }
        }
    }

    /// The rows a server sends name their path too (built only when something is wrong).
    @Test func rowsInDiffsSnapshotsAndAcksNameTheirPath() {
        let id = Data(V.video1.bytes)
        let video = Coursesync_V1_Video.with { $0.id = id; $0.chapter = id; $0.mediaFile = id }
        let diff = { (edit: (inout Coursesync_V1_Diff) -> Void) in
            var diff = Coursesync_V1_Diff.with { $0.course = Data(V.course.bytes); $0.seq = 2; $0.origin = .with { $0.clientID = id; $0.batchSeq = 1 } }
            edit(&diff)
            return { (envelope: inout Coursesync_V1_Envelope) in envelope.diff = diff }
        }
        #expect(throws: WireError.missingField("diff.videos[1].media_file")) {
            try decode(diff { $0.videos = [video, .with { $0.id = id; $0.chapter = id }] })
        }
        #expect(throws: WireError.invalidField("diff.videos[0].chapter", reason: "an ID is 16 bytes, not 3")) {
            try decode(diff { $0.videos = [.with { $0.id = id; $0.chapter = Data([1, 2, 3]); $0.mediaFile = id }] })
        }
        #expect(throws: WireError.missingField("diff.deleted_videos[2]")) { try decode(diff { $0.deletedVideos = [id, id, Data()] }) }
        #expect(throws: WireError.missingField("diff.chapter_versions[0].chapter")) { try decode(diff { $0.chapterVersions = [.with { $0.version = 3 }] }) }
        #expect(throws: WireError.missingField("snapshot.media[1].id")) {
            try decode { $0.snapshot = .with { $0.course = .with { $0.id = Data(V.course.bytes) }; $0.media = [.with { $0.id = id }, .init()] } }
        }
        #expect(throws: WireError.missingField("ack.notes[0].merged.video")) {
            try decode { $0.ack = .with { $0.course = Data(V.course.bytes); $0.notes = [.with { $0.merged = .with { $0.temp = 4 } }] } }
        }
        #expect(throws: WireError.missingField("ack.id_map[0].id")) {
            try decode { $0.ack = .with { $0.course = Data(V.course.bytes); $0.idMap = [.with { $0.temp = 3 }] } }
        }
    }

    @Test func aDuplicatedTempInAnAckIsRefused() {
        #expect(throws: WireError.invalidField("ack.id_map[1]", reason: "temp ID ~3 is mapped twice")) {
            try decode { envelope in
                envelope.ack = .with {
                    $0.course = Data(V.course.bytes)
                    $0.idMap = [.with { $0.temp = 3; $0.id = Data(V.video1.bytes) }, .with { $0.temp = 3; $0.id = Data(V.video2.bytes) }]
                }
            }
        }
    }

    @Test func everyErrorCodeMapsToADistinctWireValueAndBack() throws {
        let values = ErrorCode.allCases.map(\.wireValue)
        #expect(Set(values).count == ErrorCode.allCases.count)
        for code in ErrorCode.allCases {
            let message = WireMessage.error(ConnectionError(code, "m"))
            #expect(try WireMessage(payload: message.payload()) == message)
            // Batch codes are 1-99, connection codes 100+ (protocol/README.md).
            #expect(code.isBatchRejection == (code.wireValue < 100))
        }
    }

    @Test func aDiffFromTheResolverSurvivesTheWire() throws {
        var state = CourseState(course: Course(id: V.course, title: "T"))
        var allocator = RandomIDAllocator(SplitMix64(seed: 1))
        let batch = Batch(clientID: V.client, courseID: V.course, batchSeq: 1, baseSeq: 0, ops: [
            .registerMedia(temp: TempID(1)!, name: "m", cdnURL: "https://c/m", durationMs: 1, byteSize: 1),
            .createChapter(temp: TempID(2)!, title: "c", placement: .atEnd),
            .linkMedia(chapter: .temp(TempID(2)!), items: [LinkItem(temp: TempID(3)!, media: .temp(TempID(1)!))], placement: .atStart),
        ])
        let resolved = try Resolver.resolve(batch, against: state, knownTemps: [:], allocator: &allocator).get()
        let diff = try #require(try WireMessage(payload: WireMessage.diff(resolved.commit.diff).payload()))
        let ack = try WireMessage(payload: WireMessage.ack(resolved.commit.ack).payload())
        #expect(diff == .diff(resolved.commit.diff))
        #expect(ack == .ack(resolved.commit.ack))
        guard case .diff(let decoded) = diff else { return }
        state.apply(decoded)
        #expect(state == resolved.state)
    }
}
