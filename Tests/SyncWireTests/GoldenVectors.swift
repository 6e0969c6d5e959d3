import Foundation
import SwiftProtobuf
import SyncModel
@testable import SyncWire

/// The golden frames of `protocol/vectors/`: each is a complete frame (length prefix + Envelope)
/// with a description. Valid vectors name the message they decode to; invalid ones the error.
enum GoldenVectors {
    struct Vector {
        var name: String
        var description: String
        var content: Content
    }

    enum Content {
        /// A valid frame: decodes to this message and re-encodes to the same bytes.
        case message(WireMessage)
        /// An invalid frame, given as raw bytes, and the typed error a receiver must produce
        /// (a receiver that knows the frame came from `sender`, when one is named).
        case invalid(bytes: [UInt8], limit: Int, expected: WireError, sender: WireSender? = nil)
    }

    static let course = EntityID("c0c0c0c0-0000-4000-8000-000000000001")!
    static let chapterA = EntityID("c4a90000-0000-4000-8000-00000000000a")!
    static let chapterB = EntityID("c4a90000-0000-4000-8000-00000000000b")!
    static let media1 = EntityID("3ed1a000-0000-4000-8000-000000000001")!
    static let media2 = EntityID("3ed1a000-0000-4000-8000-000000000002")!
    static let video1 = EntityID("71de0000-0000-4000-8000-000000000001")!
    static let video2 = EntityID("71de0000-0000-4000-8000-000000000002")!
    static let video3 = EntityID("71de0000-0000-4000-8000-000000000003")!
    static let client = ClientID(EntityID("c11e0000-0000-4000-8000-00000000000c")!)

    static func temp(_ value: UInt64) -> TempID { TempID(value)! }

    static let all: [Vector] = valid + invalid

    static let valid: [Vector] = [
        Vector(name: "01-hello", description: "Client handshake: protocol version 1, the replica's client ID and a bearer token (a JWT; opaque to the client).",
               content: .message(.hello(Hello(protocolVersion: 1, clientID: client,
                                              token: "eyJhbGciOiJIUzI1NiIsImtpZCI6ImNvdXJzZXN5bmMifQ.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl")))),
        Vector(name: "02-welcome", description: "Server accepts the handshake and states its limits and heartbeat interval.",
               content: .message(.welcome(Welcome(protocolVersion: 1, serverID: "node-1", maxFrameBytes: UInt32(Limits.maxClientFrameBytes),
                                                  maxOpsPerBatch: UInt32(Limits.maxOpsPerBatch), heartbeatIntervalMs: 15_000)))),
        Vector(name: "03-error-unsupported-version", description: "Server refuses a Hello with protocol version 9 and will close the connection.",
               content: .message(.error(ConnectionError(.unsupportedProtocolVersion, "this server speaks protocol versions 1...1, not 9")))),
        Vector(name: "04-subscribe-from-zero", description: "Client subscribes to a course it has nothing of (since_seq 0 is the default and is not encoded): the server answers with a snapshot.",
               content: .message(.subscribe(courseID: course, sinceSeq: 0))),
        Vector(name: "05-subscribe-from-cursor", description: "Client resumes a course from its cursor, seq 41: the server sends diffs 42, 43, ... then Subscribed.",
               content: .message(.subscribe(courseID: course, sinceSeq: 41))),
        Vector(name: "06-subscribed", description: "Catch-up is complete at seq 43; live diffs follow from seq 44.",
               content: .message(.subscribed(courseID: course, seq: 43))),
        Vector(name: "07-snapshot", description: "A one-part snapshot of a course at seq 7: two chapters, two media files, two videos in chapter A.",
               content: .message(.snapshot(SnapshotPart(
                   course: Course(id: course, title: "Swift on the Server", seq: 7),
                   chapters: [Chapter(id: chapterA, courseID: course, title: "Intro", position: 0, version: 3),
                              Chapter(id: chapterB, courseID: course, title: "Going further", position: 1, version: 1)],
                   media: [MediaFile(id: media1, courseID: course, name: "welcome.mp4", cdnURL: "https://cdn.example.com/welcome.mp4", durationMs: 95_000, byteSize: 18_000_000),
                           MediaFile(id: media2, courseID: course, name: "setup.mp4", cdnURL: "https://cdn.example.com/setup.mp4", durationMs: 301_000, byteSize: 52_500_000)],
                   videos: [Video(id: video1, chapterID: chapterA, mediaFileID: media1, title: "Welcome", position: 0),
                            Video(id: video2, chapterID: chapterA, mediaFileID: media2, title: "Setting up", position: 1)],
                   part: 0, last: true)))),
        Vector(name: "08-diff", description: "The diff of commit 8 (client c11e…'s batch 5): video 3 linked at the start of chapter A, shifting videos 1 and 2; chapter B deleted; chapter A now at version 4.",
               content: .message(.diff(Diff(courseID: course, seq: 8, origin: BatchOrigin(clientID: client, batchSeq: 5), changes: ChangeSet(
                   chapters: [Chapter(id: chapterA, courseID: course, title: "Intro", position: 0, version: 4)],
                   videos: [Video(id: video1, chapterID: chapterA, mediaFileID: media1, title: "Welcome", position: 1),
                            Video(id: video2, chapterID: chapterA, mediaFileID: media2, title: "Setting up", position: 2),
                            Video(id: video3, chapterID: chapterA, mediaFileID: media1, title: "Trailer", position: 0)],
                   deletedChapters: [chapterB],
                   deletedVideos: [],
                   chapterVersions: [ChapterVersion(chapterID: chapterA, version: 4)]))))),
        Vector(name: "09-push-create-and-link", description: "Batch 6 made at seq 8: create a chapter (temp 1) after chapter A, register a media file (temp 2), and link it plus an existing file into the new chapter (temps 3, 4), one with a title containing non-ASCII text.",
               content: .message(.push(Push(courseID: course, batchSeq: 6, baseSeq: 8, ops: [
                   .createChapter(temp: temp(1), title: "Déploiement 🚀", placement: .after(.id(chapterA))),
                   .registerMedia(temp: temp(2), name: "deploy.mp4", cdnURL: "https://cdn.example.com/deploy.mp4", durationMs: 420_000, byteSize: 80_000_000),
                   .linkMedia(chapter: .temp(temp(1)), items: [LinkItem(temp: temp(3), media: .temp(temp(2)), title: "Déployer"),
                                                               LinkItem(temp: temp(4), media: .id(media1))], placement: .atEnd),
               ])))),
        Vector(name: "10-push-every-op", description: "One batch with every other operation kind: rename and move a chapter, move, rename and unlink videos, delete a chapter; placements at_start, before and after a temp ID.",
               content: .message(.push(Push(courseID: course, batchSeq: 7, baseSeq: 9, ops: [
                   .renameChapter(.id(chapterA), title: "Introduction"),
                   .moveChapter(.id(chapterA), placement: .atStart),
                   .moveVideo(.id(video1), toChapter: .temp(temp(1)), placement: .before(.temp(temp(3)))),
                   .renameVideo(.id(video2), title: "Set-up"),
                   .moveVideo(.id(video2), toChapter: .id(chapterA), placement: .after(.id(video3))),
                   .unlinkVideo(.id(video3)),
                   .deleteChapter(.id(chapterB)),
               ])))),
        Vector(name: "11-ack-with-notes", description: "Batch 6 committed as seq 9: the temp→real ID map (temp 4 merged into existing video 1) and two resolution notes.",
               content: .message(.ack(Ack(courseID: course, batchSeq: 6, seq: 9,
                                          idMap: [temp(1): chapterB, temp(2): media2, temp(3): video3, temp(4): video1],
                                          notes: [.anchorMissing(opIndex: 0, anchor: .id(chapterA)), .merged(opIndex: 2, temp: temp(4), into: video1)])))),
        Vector(name: "12-reject-target-deleted", description: "Batch 7 rejected: op 6 targets a chapter another client deleted. Nothing of the batch was applied.",
               content: .message(.reject(BatchRejection(courseID: course, batchSeq: 7, rejection: Rejection(.targetDeleted, opIndex: 6, "chapter c4a90000-0000-4000-8000-00000000000b no longer exists (deleted meanwhile)"))))),
        Vector(name: "13-reject-without-op-index", description: "Batch 8 rejected as a whole, with no op to blame (an empty batch): op_index is absent, which differs from op 0.",
               content: .message(.reject(BatchRejection(courseID: course, batchSeq: 8, rejection: Rejection(.emptyBatch, "the batch has no operations"))))),
        Vector(name: "14-reject-op-zero", description: "Batch 9 rejected at op 0 (an invalid title): op_index is present and 0.",
               content: .message(.reject(BatchRejection(courseID: course, batchSeq: 9, rejection: Rejection(.invalidTitle, opIndex: 0, "invalid chapter title: it is empty after trimming white space"))))),
        Vector(name: "15-progress", description: "Progress of a large batch: 250 of 1000 ops applied.",
               content: .message(.progress(Progress(courseID: course, batchSeq: 10, done: 250, total: 1000)))),
        Vector(name: "16-ping", description: "Heartbeat with nonce 42.", content: .message(.ping(nonce: 42))),
        Vector(name: "17-pong", description: "Answer to the ping with nonce 42.", content: .message(.pong(nonce: 42))),
        Vector(name: "18-unsubscribe", description: "Client stops receiving the course's diffs.", content: .message(.unsubscribe(courseID: course))),
        Vector(name: "19-reject-unknown-course", description: "Batch 4 pushed to a course that does not exist: rejected with UNKNOWN_COURSE (every Push gets an Ack or a Reject); the connection stays up.",
               content: .message(.reject(BatchRejection(courseID: course, batchSeq: 4, rejection: Rejection(.unknownCourse, "course c0c0c0c0-0000-4000-8000-000000000001 does not exist"))))),
        Vector(name: "20-hello-empty-token", description: "A Hello whose token is empty: a well-formed frame (not MALFORMED_FRAME); the server answers Error UNAUTHENTICATED and closes.",
               content: .message(.hello(Hello(protocolVersion: 1, clientID: client, token: "")))),
        Vector(name: "21-error-rate-limited", description: "The connection pushed faster than the server allows: Error RATE_LIMITED with retry_after_ms 1500; the server closes, the client reconnects no sooner and resends what was unanswered.",
               content: .message(.error(ConnectionError(.rateLimited, "more than 500 pushes per second; reconnect in 1500 ms", retryAfterMs: 1_500)))),
        Vector(name: "22-welcome-with-rates", description: "Welcome stating the connection's rates: at most 500 pushes and 8 MiB per second; a client paces its pushes to them.",
               content: .message(.welcome(Welcome(protocolVersion: 1, serverID: "node-1", maxFrameBytes: UInt32(Limits.maxClientFrameBytes),
                                                  maxOpsPerBatch: UInt32(Limits.maxOpsPerBatch), heartbeatIntervalMs: 15_000,
                                                  maxPushesPerSecond: 500, maxBytesPerSecond: 8 << 20)))),
        Vector(name: "23-subscribe-with-presence", description: "Subscribe from seq 17, also asking for the course's presence (PresenceUpdate frames, §14).",
               content: .message(.subscribe(courseID: course, sinceSeq: 17, presence: true))),
        Vector(name: "24-set-presence", description: "The client shows itself as Ada, colour 0x3366CC, looking at chapter A.",
               content: .message(.setPresence(PresenceAnnouncement(courseID: course, name: "Ada", color: 0x3366CC, focus: .chapter(chapterA))))),
        Vector(name: "25-presence-full", description: "The first presence update after Subscribed: everyone on the course (full), Ada on video 1 and Grace in the media library.",
               content: .message(.presence(PresenceChange(courseID: course, full: true, peers: [
                   PresencePeer(clientID: client, user: "ada", name: "Ada", color: 0x3366CC, focus: .video(video1)),
                   PresencePeer(clientID: ClientID(media2), user: "grace", name: "Grace", color: 0xCC6633, focus: .library),
               ])))),
        Vector(name: "26-presence-change", description: "A later presence update: Ada now looks at nothing in particular, and Grace's client left.",
               content: .message(.presence(PresenceChange(courseID: course, peers: [
                   PresencePeer(clientID: client, user: "ada", name: "Ada", color: 0x3366CC, focus: nil),
               ], left: [ClientID(media2)])))),
    ]

    static let invalid: [Vector] = [
        Vector(name: "50-invalid-push-bad-utf8-title",
               description: "A Push whose op 1 renames a chapter to bytes that are not UTF-8 (0xFF). The frame is well-formed: the server rejects only this batch (Reject INVALID_TITLE, op_index 1); the connection stays up.",
               content: .invalid(bytes: rawFrame { envelope in
                   envelope.push = .with {
                       $0.course = Data(course.bytes)
                       $0.batchSeq = 11
                       $0.ops = [
                           .with { $0.renameChapter = .with { $0.chapter = Convert.wire(.id(chapterA)); $0.title = Data("fine".utf8) } },
                           .with { $0.renameChapter = .with { $0.chapter = Convert.wire(.id(chapterA)); $0.title = Data([0x4F, 0xFF, 0x4B]) } },
                       ]
                   }
               }, limit: Limits.maxClientFrameBytes,
               expected: .invalidBatch(courseID: course, batchSeq: 11, rejection: Rejection(.invalidTitle, opIndex: 1, "the chapter title is not valid UTF-8")))),
        Vector(name: "51-invalid-frame-too-large",
               description: "Only a length prefix announcing 8 MiB + 1 bytes, one past the client frame limit: the server refuses it as soon as the prefix arrives (Error FRAME_TOO_LARGE) and closes the connection.",
               content: .invalid(bytes: [0x00, 0x80, 0x00, 0x01], limit: Limits.maxClientFrameBytes,
                                 expected: .frameTooLarge(length: Limits.maxClientFrameBytes + 1, limit: Limits.maxClientFrameBytes))),
        Vector(name: "52-invalid-reject-unknown-code",
               description: "A Reject carrying error code 999, which protocol version 1 does not define: a malformed frame (new codes only come with a new protocol version).",
               content: .invalid(bytes: rawFrame { envelope in
                   envelope.reject = .with {
                       $0.course = Data(course.bytes)
                       $0.batchSeq = 3
                       $0.code = .UNRECOGNIZED(999)
                   }
               }, limit: Limits.maxServerFrameBytes, expected: .unknownEnumValue(field: "reject.code", value: 999))),
        Vector(name: "53-invalid-push-missing-placement",
               description: "A Push whose create_chapter op has no placement (a required field): a malformed frame; the server sends Error MALFORMED_FRAME and closes.",
               content: .invalid(bytes: rawFrame { envelope in
                   envelope.push = .with {
                       $0.course = Data(course.bytes)
                       $0.batchSeq = 12
                       $0.ops = [.with { $0.createChapter = .with { $0.temp = 5; $0.title = Data("No place".utf8) } }]
                   }
               }, limit: Limits.maxClientFrameBytes, expected: .missingField("push.ops[0].create_chapter.placement"))),
        Vector(name: "54-invalid-subscribe-short-id",
               description: "A Subscribe whose course ID is 15 bytes instead of 16: a malformed frame.",
               content: .invalid(bytes: rawFrame { envelope in
                   envelope.subscribe = .with { $0.course = Data(course.bytes.dropLast()) }
               }, limit: Limits.maxClientFrameBytes, expected: .invalidField("subscribe.course", reason: "an ID is 16 bytes, not 15"))),
        Vector(name: "55-invalid-truncated-frame",
               description: "The stream ends after 7 of the 10 bytes the frame's length prefix announced (the first bytes of a Ping).",
               content: .invalid(bytes: [0x00, 0x00, 0x00, 0x06, 0x62, 0x02, 0x08], limit: Limits.maxClientFrameBytes,
                                 expected: .truncatedFrame(expected: 10, received: 7))),
        Vector(name: "56-invalid-empty-envelope",
               description: "A frame of length 0: an Envelope with no message set.",
               content: .invalid(bytes: [0x00, 0x00, 0x00, 0x00], limit: Limits.maxClientFrameBytes, expected: .emptyEnvelope)),
        Vector(name: "57-invalid-client-diff-without-origin",
               description: "A Diff sent by a client, without its required origin: a server checks the direction first and refuses it as UNEXPECTED_MESSAGE (not MALFORMED_FRAME), then closes.",
               content: .invalid(bytes: rawFrame { envelope in
                   envelope.diff = .with { $0.course = Data(course.bytes); $0.seq = 5 }
               }, limit: Limits.maxClientFrameBytes, expected: .wrongDirection("Diff is sent by servers, not clients"), sender: .client)),
        Vector(name: "58-invalid-set-presence-color",
               description: "A SetPresence whose colour is 0x1000000, past 0xRRGGBB: a malformed frame; the server sends Error MALFORMED_FRAME and closes.",
               content: .invalid(bytes: rawFrame { envelope in
                   envelope.setPresence = .with { $0.course = Data(course.bytes); $0.name = "Ada"; $0.color = 0x100_0000 }
               }, limit: Limits.maxClientFrameBytes, expected: .invalidField("set_presence", reason: "a presence colour is 0xRRGGBB (at most 0xFFFFFF)"))),
        Vector(name: "59-invalid-set-presence-focus-empty",
               description: "A SetPresence whose focus is present but names nothing (no chapter, video or library): a malformed frame.",
               content: .invalid(bytes: rawFrame { envelope in
                   envelope.setPresence = .with { $0.course = Data(course.bytes); $0.focus = Coursesync_V1_Focus() }
               }, limit: Limits.maxClientFrameBytes, expected: .missingField("set_presence.focus"))),
    ]

    /// A complete frame around an envelope built directly (to express what our types cannot hold).
    static func rawFrame(_ build: (inout Coursesync_V1_Envelope) -> Void) -> [UInt8] {
        var envelope = Coursesync_V1_Envelope()
        build(&envelope)
        return Framing.frame(try! envelope.serializedBytes() as [UInt8])
    }

    /// Decodes a complete frame the way a receiver does (one that knows who sent it, if `sender` is given).
    static func decode(frame: [UInt8], limit: Int, sender: WireSender? = nil) throws(WireError) -> WireMessage {
        let payload = try Framing.payload(ofFrame: frame, limit: limit)
        if let sender { return try WireMessage(payload: payload, sentBy: sender) }
        return try WireMessage(payload: payload)
    }

    /// The readable companion of a vector, written beside it as `<name>.txt`.
    static func text(of vector: Vector, bytes: [UInt8]) -> String {
        var lines = ["# \(vector.name)", "", vector.description, ""]
        lines.append("bytes (\(bytes.count), hex):")
        lines.append(hex(bytes))
        lines.append("")
        switch vector.content {
        case .message(let message):
            lines.append("decodes to (protobuf text format of the Envelope):")
            lines.append(message.envelope.textFormatString())
        case .invalid(_, let limit, let expected, let sender):
            lines.append("receiver limit: \(limit) bytes")
            if let sender { lines.append("sent by: a \(sender == .client ? "client" : "server") (the receiver checks the direction first)") }
            lines.append("must be refused with: \(expected.code.rawValue) (\(expected))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func hex(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: bytes.count, by: 32).map { start in
            bytes[start..<min(start + 32, bytes.count)].map { byte in
                let digits = String(byte, radix: 16)
                return digits.count == 1 ? "0" + digits : digits
            }.joined(separator: " ")
        }.joined(separator: "\n")
    }
}
