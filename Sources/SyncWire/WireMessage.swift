import Foundation
import SwiftProtobuf
import SyncModel

/// The protocol version this implementation speaks.
public enum WireProtocol {
    public static let version: UInt32 = 1
    /// Versions a server accepts in `Hello`.
    public static let supportedVersions: ClosedRange<UInt32> = 1...1
}

/// Every message of the protocol, in SyncModel terms. Conversions to and from the generated
/// protobuf types validate everything: a ``WireMessage`` is always well-formed.
public enum WireMessage: Hashable, Sendable {
    case hello(Hello)
    case welcome(Welcome)
    case error(ConnectionError)
    /// With `presence`, the server also sends the course's ``presence(_:)`` updates (§14).
    case subscribe(courseID: EntityID, sinceSeq: CourseSeq, presence: Bool = false)
    case unsubscribe(courseID: EntityID)
    case subscribed(courseID: EntityID, seq: CourseSeq)
    case snapshot(SnapshotPart)
    case diff(Diff)
    case push(Push)
    case ack(Ack)
    case reject(BatchRejection)
    case progress(Progress)
    case ping(nonce: UInt64)
    case pong(nonce: UInt64)
    /// Client → server: this client's presence on a course it is subscribed to.
    case setPresence(PresenceAnnouncement)
    /// Server → client: who is on a course, and changes to it.
    case presence(PresenceChange)
}

public struct Hello: Hashable, Sendable {
    public var protocolVersion: UInt32
    public var clientID: ClientID
    public var token: String

    public init(protocolVersion: UInt32 = WireProtocol.version, clientID: ClientID, token: String) {
        self.protocolVersion = protocolVersion
        self.clientID = clientID
        self.token = token
    }
}

public struct Welcome: Hashable, Sendable {
    public var protocolVersion: UInt32
    public var serverID: String
    public var maxFrameBytes: UInt32
    public var maxOpsPerBatch: UInt32
    public var heartbeatIntervalMs: UInt32
    /// The rates the client keeps to (0: not stated; protocol §9).
    public var maxPushesPerSecond: UInt32
    public var maxBytesPerSecond: UInt32

    public init(protocolVersion: UInt32 = WireProtocol.version, serverID: String,
                maxFrameBytes: UInt32 = UInt32(Limits.maxClientFrameBytes),
                maxOpsPerBatch: UInt32 = UInt32(Limits.maxOpsPerBatch), heartbeatIntervalMs: UInt32,
                maxPushesPerSecond: UInt32 = 0, maxBytesPerSecond: UInt32 = 0) {
        self.protocolVersion = protocolVersion
        self.serverID = serverID
        self.maxFrameBytes = maxFrameBytes
        self.maxOpsPerBatch = maxOpsPerBatch
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.maxPushesPerSecond = maxPushesPerSecond
        self.maxBytesPerSecond = maxBytesPerSecond
    }
}

/// A connection-level error; the server closes the connection after sending it.
public struct ConnectionError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    /// How long to wait before reconnecting, in milliseconds (`RATE_LIMITED` always carries it).
    public var retryAfterMs: UInt32?

    public init(_ code: ErrorCode, _ message: String, retryAfterMs: UInt32? = nil) {
        self.code = code
        self.message = message
        self.retryAfterMs = retryAfterMs
    }

    public var description: String { "the server refused the connection: \(code): \(message)" }
}

/// One part of a snapshot of a course at `course.seq`.
public struct SnapshotPart: Hashable, Sendable {
    public var course: Course
    public var chapters: [Chapter]
    public var media: [MediaFile]
    public var videos: [Video]
    public var part: UInt32
    public var last: Bool

    public init(course: Course, chapters: [Chapter], media: [MediaFile], videos: [Video], part: UInt32, last: Bool) {
        self.course = course
        self.chapters = chapters
        self.media = media
        self.videos = videos
        self.part = part
        self.last = last
    }
}

extension SnapshotPart {
    /// The whole course as one part (the only and last): chapters in order, media files by ID,
    /// each chapter's videos in order. For the HTTP API and the store's snapshots (catch-up splits
    /// a course into parts of about 1 MiB instead).
    public init(whole state: CourseState) {
        self.init(course: state.course, chapters: state.orderedChapters, media: state.media.values.sorted { $0.id < $1.id },
                  videos: state.orderedChapters.flatMap { state.videos(in: $0.id) }, part: 0, last: true)
    }
}

extension CourseState {
    /// The course a snapshot's parts hold together (the course row is the last part's).
    public init(parts: [SnapshotPart]) {
        self.init(course: parts.last?.course ?? parts[0].course, chapters: parts.flatMap(\.chapters), media: parts.flatMap(\.media),
                  videos: parts.flatMap(\.videos))
    }
}

/// A snapshot's parts as they arrive: the whole course once the last one has come.
public struct SnapshotCollector: Hashable, Sendable {
    public private(set) var parts: [SnapshotPart] = []

    public init() {}

    /// Adds `part`; once it is the last, the parts so far as one course (and the collector starts over).
    public mutating func add(_ part: SnapshotPart) -> CourseState? {
        parts.append(part)
        guard part.last else { return nil }
        defer { parts = [] }
        return CourseState(parts: parts)
    }
}

/// A client's batch as it travels: the client ID is the connection's (from `Hello`).
public struct Push: Hashable, Sendable {
    public var courseID: EntityID
    public var batchSeq: BatchSeq
    public var baseSeq: CourseSeq
    public var ops: [SyncModel.Operation]

    public init(courseID: EntityID, batchSeq: BatchSeq, baseSeq: CourseSeq, ops: [SyncModel.Operation]) {
        self.courseID = courseID
        self.batchSeq = batchSeq
        self.baseSeq = baseSeq
        self.ops = ops
    }

    public init(_ batch: Batch) {
        self.init(courseID: batch.courseID, batchSeq: batch.batchSeq, baseSeq: batch.baseSeq, ops: batch.ops)
    }

    /// The batch this push is, sent by `clientID` (the server names its `author`).
    public func batch(from clientID: ClientID, author: String = "") -> Batch {
        Batch(clientID: clientID, courseID: courseID, batchSeq: batchSeq, baseSeq: baseSeq, ops: ops, author: author)
    }
}

public struct BatchRejection: Hashable, Sendable {
    public var courseID: EntityID
    public var batchSeq: BatchSeq
    public var rejection: Rejection

    public init(courseID: EntityID, batchSeq: BatchSeq, rejection: Rejection) {
        self.courseID = courseID
        self.batchSeq = batchSeq
        self.rejection = rejection
    }
}

public struct Progress: Hashable, Sendable {
    public var courseID: EntityID
    public var batchSeq: BatchSeq
    public var done: UInt32
    public var total: UInt32

    public init(courseID: EntityID, batchSeq: BatchSeq, done: UInt32, total: UInt32) {
        self.courseID = courseID
        self.batchSeq = batchSeq
        self.done = done
        self.total = total
    }
}

// MARK: - Bytes

/// Which side of a connection sent a frame.
public enum WireSender: Hashable, Sendable {
    case client, server
}

extension WireMessage {
    /// Decodes and validates one frame payload (an `Envelope`) that `sender` sent: a message of
    /// the other side's is ``WireError/wrongDirection(_:)`` before any of its fields is looked at.
    public init(payload: some Collection<UInt8>, sentBy sender: WireSender) throws(WireError) {
        try self.init(payload: payload, checking: sender)
    }

    /// Decodes and validates one frame payload (an `Envelope`), from either side.
    public init(payload: some Collection<UInt8>) throws(WireError) {
        try self.init(payload: payload, checking: nil)
    }

    private init(payload: some Collection<UInt8>, checking sender: WireSender?) throws(WireError) {
        let envelope: Coursesync_V1_Envelope
        do {
            envelope = try Coursesync_V1_Envelope(serializedBytes: Array(payload))
        } catch {
            throw .malformed(String(describing: error))
        }
        if let sender, let message = envelope.message, let kind = Self.kind(of: message, ifNotSentBy: sender) {
            throw .wrongDirection(sender == .client ? "\(kind) is sent by servers, not clients" : "\(kind) is sent by clients, not servers")
        }
        try self.init(envelope)
    }

    /// The message's name if `sender` may not send it (§3.2's direction column).
    private static func kind(of message: Coursesync_V1_Envelope.OneOf_Message, ifNotSentBy sender: WireSender) -> String? {
        switch (message, sender) {
        case (.welcome, .client): "Welcome"
        case (.error, .client): "Error"
        case (.subscribed, .client): "Subscribed"
        case (.snapshot, .client): "Snapshot"
        case (.diff, .client): "Diff"
        case (.ack, .client): "Ack"
        case (.reject, .client): "Reject"
        case (.progress, .client): "Progress"
        case (.presenceUpdate, .client): "PresenceUpdate"
        case (.setPresence, .server): "SetPresence"
        case (.hello, .server): "Hello"
        case (.subscribe, .server): "Subscribe"
        case (.unsubscribe, .server): "Unsubscribe"
        case (.push, .server): "Push"
        default: nil
        }
    }

    /// The serialized `Envelope` (a frame's payload, without the length prefix).
    public func payload() -> [UInt8] {
        // Serializing a message we built ourselves cannot fail: every field is set from valid values.
        try! envelope.serializedBytes()
    }

    /// The complete frame: length prefix and payload.
    public func frame() -> [UInt8] { Framing.frame(payload()) }
}

// MARK: - Envelope

extension WireMessage {
    public init(_ envelope: Coursesync_V1_Envelope) throws(WireError) {
        guard let message = envelope.message else { throw .emptyEnvelope }
        switch message {
        case .hello(let m):
            self = .hello(Hello(protocolVersion: m.protocolVersion,
                                clientID: ClientID(try Convert.id(m.clientID, "hello.client_id")),
                                token: m.token))
        case .welcome(let m):
            self = .welcome(Welcome(protocolVersion: m.protocolVersion, serverID: m.serverID, maxFrameBytes: m.maxFrameBytes,
                                    maxOpsPerBatch: m.maxOpsPerBatch, heartbeatIntervalMs: m.heartbeatIntervalMs,
                                    maxPushesPerSecond: m.maxPushesPerSecond, maxBytesPerSecond: m.maxBytesPerSecond))
        case .error(let m):
            self = .error(ConnectionError(try Convert.code(m.code, "error.code"), m.message,
                                          retryAfterMs: m.retryAfterMs == 0 ? nil : m.retryAfterMs))
        case .subscribe(let m):
            self = .subscribe(courseID: try Convert.id(m.course, "subscribe.course"), sinceSeq: m.sinceSeq, presence: m.presence)
        case .unsubscribe(let m):
            self = .unsubscribe(courseID: try Convert.id(m.course, "unsubscribe.course"))
        case .subscribed(let m):
            self = .subscribed(courseID: try Convert.id(m.course, "subscribed.course"), seq: m.seq)
        case .snapshot(let m):
            self = .snapshot(try Convert.snapshot(m))
        case .diff(let m):
            self = .diff(try Convert.diff(m))
        case .push(let m):
            self = .push(try Convert.push(m))
        case .ack(let m):
            self = .ack(try Convert.ack(m))
        case .reject(let m):
            let rejection = Rejection(try Convert.code(m.code, "reject.code"),
                                      opIndex: m.hasOpIndex ? Int(m.opIndex) : nil, m.message)
            self = .reject(BatchRejection(courseID: try Convert.id(m.course, "reject.course"),
                                          batchSeq: m.batchSeq, rejection: rejection))
        case .progress(let m):
            self = .progress(Progress(courseID: try Convert.id(m.course, "progress.course"), batchSeq: m.batchSeq,
                                      done: m.done, total: m.total))
        case .ping(let m):
            self = .ping(nonce: m.nonce)
        case .pong(let m):
            self = .pong(nonce: m.nonce)
        case .setPresence(let m):
            self = .setPresence(try Convert.announcement(m))
        case .presenceUpdate(let m):
            self = .presence(try Convert.change(m))
        }
    }

    /// The generated protobuf form of this message.
    public var envelope: Coursesync_V1_Envelope {
        var envelope = Coursesync_V1_Envelope()
        switch self {
        case .hello(let hello):
            envelope.hello = .with {
                $0.protocolVersion = hello.protocolVersion
                $0.clientID = hello.clientID.id.data
                $0.token = hello.token
            }
        case .welcome(let welcome):
            envelope.welcome = .with {
                $0.protocolVersion = welcome.protocolVersion
                $0.serverID = welcome.serverID
                $0.maxFrameBytes = welcome.maxFrameBytes
                $0.maxOpsPerBatch = welcome.maxOpsPerBatch
                $0.heartbeatIntervalMs = welcome.heartbeatIntervalMs
                $0.maxPushesPerSecond = welcome.maxPushesPerSecond
                $0.maxBytesPerSecond = welcome.maxBytesPerSecond
            }
        case .error(let error):
            envelope.error = .with {
                $0.code = Convert.wire(error.code)
                $0.message = error.message
                $0.retryAfterMs = error.retryAfterMs ?? 0
            }
        case .subscribe(let courseID, let sinceSeq, let presence):
            envelope.subscribe = .with {
                $0.course = courseID.data
                $0.sinceSeq = sinceSeq
                $0.presence = presence
            }
        case .unsubscribe(let courseID):
            envelope.unsubscribe = .with { $0.course = courseID.data }
        case .subscribed(let courseID, let seq):
            envelope.subscribed = .with {
                $0.course = courseID.data
                $0.seq = seq
            }
        case .snapshot(let part):
            envelope.snapshot = Convert.wire(part)
        case .diff(let diff):
            envelope.diff = Convert.wire(diff)
        case .push(let push):
            envelope.push = Convert.wire(push)
        case .ack(let ack):
            envelope.ack = Convert.wire(ack)
        case .reject(let reject):
            envelope.reject = .with {
                $0.course = reject.courseID.data
                $0.batchSeq = reject.batchSeq
                $0.code = Convert.wire(reject.rejection.code)
                if let opIndex = reject.rejection.opIndex { $0.opIndex = UInt32(opIndex) }
                $0.message = reject.rejection.message
            }
        case .progress(let progress):
            envelope.progress = .with {
                $0.course = progress.courseID.data
                $0.batchSeq = progress.batchSeq
                $0.done = progress.done
                $0.total = progress.total
            }
        case .ping(let nonce):
            envelope.ping = .with { $0.nonce = nonce }
        case .pong(let nonce):
            envelope.pong = .with { $0.nonce = nonce }
        case .setPresence(let announcement):
            envelope.setPresence = Convert.wire(announcement)
        case .presence(let change):
            envelope.presenceUpdate = Convert.wire(change)
        }
        return envelope
    }
}
