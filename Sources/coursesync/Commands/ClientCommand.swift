import ArgumentParser
import Foundation
import Logging
import NIOConcurrencyHelpers
import SyncClient
import SyncModel
import SyncTransport
import SyncWire

struct ClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Read and edit a course as a client (each command syncs a local replica first).",
        discussion: """
        Edits go through the client library: they apply to the local replica, are sent as a batch, and \
        the command waits for the server's answer. The token comes from --token or $COURSESYNC_TOKEN.
        """,
        subcommands: [ShowOutline.self, CreateChapter.self, RegisterMedia.self, Link.self, Watch.self]
    )

    struct ShowOutline: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "outline", abstract: "Print the course's chapters and videos.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await options.withClient { client in
                print(render(try await client.outline(), media: try await client.media()))
            }
        }
    }

    struct CreateChapter: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create-chapter", abstract: "Create a chapter and print its ID.")
        @OptionGroup var options: ClientOptions
        @Option(help: "The chapter's title.") var title: String
        @Option(help: ArgumentHelp("Place it after this chapter (default: at the end).", valueName: "chapter-id")) var after: String?

        func validate() throws {
            if let after { _ = try parseEntityID(after, what: "--after") }
        }

        func run() async throws {
            try await options.withClient { client in
                let anchor = try after.map { try parseEntityID($0, what: "--after") }
                var placement = LocalPlacement.atEnd
                if let anchor { placement = .after(await client.key(for: anchor)) }
                let key = try await client.createChapter(title: title, placement: placement)
                try await options.settle(client)
                let row = try await client.outline().chapters.first { $0.chapter.key == key }
                guard let id = row?.chapter.id else { throw ValidationError("the chapter was not created (see the messages above)") }
                print(id)
            }
        }
    }

    struct RegisterMedia: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "register-media", abstract: "Add a media file to the course's library and print its ID.")
        @OptionGroup var options: ClientOptions
        @Option(help: "The file's name.") var name: String
        @Option(help: "Its CDN URL (https).") var url: String
        @Option(help: "Its duration in milliseconds.") var durationMs: UInt64
        @Option(help: "Its size in bytes.") var bytes: UInt64

        func run() async throws {
            try await options.withClient { client in
                let key = try await client.registerMedia(name: name, cdnURL: url, durationMs: durationMs, byteSize: bytes)
                try await options.settle(client)
                guard let id = try await client.media().first(where: { $0.key == key })?.id else {
                    throw ValidationError("the media file was not registered (see the messages above)")
                }
                print(id)
            }
        }
    }

    struct Link: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Link media files into a chapter (at its end) and print the chapter.")
        @OptionGroup var options: ClientOptions
        @Option(help: ArgumentHelp("The chapter to link into.", valueName: "chapter-id")) var chapter: String
        @Argument(help: ArgumentHelp("Media file IDs, in order.", valueName: "media-id")) var media: [String]

        func validate() throws {
            _ = try parseEntityID(chapter, what: "--chapter")
            guard !media.isEmpty else { throw ValidationError("name at least one media file") }
            for id in media { _ = try parseEntityID(id, what: "a media ID") }
        }

        func run() async throws {
            try await options.withClient { client in
                let chapterKey = await client.key(for: try parseEntityID(chapter, what: "--chapter"))
                var keys: [LocalKey] = []
                for id in media { keys.append(await client.key(for: try parseEntityID(id, what: "a media ID"))) }
                try await client.linkMedia(keys, to: chapterKey)
                try await options.settle(client)
                let outline = try await client.outline()
                print(render(outline, media: try await client.media(), only: chapterKey))
            }
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print each change to the course as it is committed, and who joins and leaves it, until interrupted.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            let courseID = try options.courseID()
            var generator = SystemRandomNumberGenerator()
            try await ProtocolClient.with(host: options.server.host, port: options.server.port,
                                          clientID: ClientID(.random(using: &generator)), token: try options.bearer(),
                                          security: try options.transportSecurity()) { connection in
                try await connection.send(.subscribe(courseID: courseID, sinceSeq: 0, presence: true))
                // The protocol's heartbeat rule (§8), as the library's engine keeps it: a Ping after
                // one quiet interval, give up after three.
                let heartbeat = WatchHeartbeat(interval: .milliseconds(Int64(max(connection.welcome.heartbeatIntervalMs, 1))))
                let timer = Task { [outbound = connection.outbound, channel = connection.channel] in
                    await heartbeat.run(ping: { try? await outbound.write(.ping(nonce: $0)) }, giveUp: { channel.close(promise: nil) })
                }
                defer { timer.cancel() }
                var state = CourseState(course: Course(id: courseID, title: "", seq: 0))
                var snapshot = SnapshotCollector()
                var present: [ClientID: PresencePeer] = [:]
                while true {
                    let message: WireMessage
                    do {
                        message = try await connection.next()
                    } catch {
                        if let silence = heartbeat.gaveUp { throw ProtocolClient.Failure(description: "nothing received from the server for \(silence); the connection is dead") }
                        throw error
                    }
                    heartbeat.received()
                    switch message {
                    case .snapshot(let part):
                        guard let whole = snapshot.add(part) else { continue }
                        state = whole
                        say("\"\(state.course.title)\" at seq \(state.seq): \(state.chapters.count) chapters, \(state.videos.count) videos, \(state.media.count) media files")
                    case .diff(let diff):
                        say(DiffDescription(diff, before: state).lines.joined(separator: "\n"))
                        state.apply(diff)
                    case .subscribed(_, let seq):
                        say("live from seq \(seq)")
                    case .presence(let change):
                        let now = change.applied(to: present)
                        for lines in PresenceDescription(before: present, after: now, in: state).lines { say(lines) }
                        present = now
                    case .ping(let nonce):
                        try await connection.send(.pong(nonce: nonce))
                    default:
                        continue
                    }
                }
            }
        }
    }
}

/// What changed in who is on the course, in words: "+ Ada (ada) joins, looking at chapter “Intro”",
/// "~ Ada looks at the media library", "- Ada leaves".
struct PresenceDescription {
    let lines: [String]

    init(before: [ClientID: PresencePeer], after: [ClientID: PresencePeer], in state: CourseState) {
        func looking(_ focus: PresenceFocus?) -> String {
            switch focus {
            case nil: "nothing in particular"
            case .library: "the media library"
            case .chapter(let id): state.chapters[id].map { "chapter “\($0.title)”" } ?? "a chapter"
            case .video(let id): state.videos[id].map { "video “\($0.title)”" } ?? "a video"
            }
        }
        var lines: [String] = []
        for peer in after.values.sorted(by: { ($0.name, $0.clientID) < ($1.name, $1.clientID) }) {
            if let old = before[peer.clientID] {
                if old.focus != peer.focus { lines.append("~ \(peer.name) looks at \(looking(peer.focus))") }
                if old.name != peer.name { lines.append("~ \(old.name) is now \(peer.name)") }
            } else {
                lines.append("+ \(peer.name) (\(peer.user)) joins, looking at \(looking(peer.focus))")
            }
        }
        for peer in before.values.sorted(by: { ($0.name, $0.clientID) < ($1.name, $1.clientID) }) where after[peer.clientID] == nil {
            lines.append("- \(peer.name) leaves")
        }
        self.lines = lines
    }
}

/// `watch`'s side of the heartbeat rule, on a real clock: ``Heartbeat`` behind a lock, and a
/// loop that sleeps until its deadline.
final class WatchHeartbeat: Sendable {
    private let clock = MomentClock()
    private let state: NIOLockedValueBox<(heartbeat: Heartbeat, gaveUp: Duration?)>

    init(interval: Duration) {
        state = NIOLockedValueBox((Heartbeat(interval: interval, now: .zero), nil))
    }

    private var now: Moment { clock.now() }

    func received() { state.withLockedValue { $0.heartbeat.received(now: now) } }

    /// The silence after which it gave up, if it did.
    var gaveUp: Duration? { state.withLockedValue { $0.gaveUp } }

    func run(ping: @escaping @Sendable (UInt64) async -> Void, giveUp: @Sendable () -> Void) async {
        var nonce: UInt64 = 0
        while !Task.isCancelled {
            let deadline = state.withLockedValue { $0.heartbeat.deadline }
            do { try await clock.sleep(until: deadline) } catch { return }
            let due = state.withLockedValue { state -> Heartbeat.Due? in
                let due = state.heartbeat.fire(now: now)
                if due == .timeout { state.gaveUp = state.heartbeat.timeout }
                return due
            }
            switch due {
            case .ping:
                nonce += 1
                await ping(nonce)
            case .timeout:
                return giveUp()
            case nil:
                continue
            }
        }
    }
}

/// Where a client command connects, as whom, and with which replica.
struct ClientOptions: ParsableArguments {
    @Option(help: "The server to connect to.") var server = ListenAddress(host: "127.0.0.1", port: 7420)
    @Option(help: ArgumentHelp("The bearer token (default: $COURSESYNC_TOKEN).", valueName: "token")) var token: String?
    @Option(help: ArgumentHelp("The course.", valueName: "course-id")) var course: String
    @Option(help: ArgumentHelp("The replica file (default: ./coursesync-client/<course>.replica).", valueName: "file")) var replica: String?
    @Option(help: "Seconds to wait for the server.") var timeout: Double = 15
    @Flag(help: "Connect with TLS, trusting the system's certificate authorities.") var tls = false
    @Option(help: ArgumentHelp("Connect with TLS, trusting the certificate authorities in this PEM file (implies --tls).", valueName: "file"))
    var tlsCa: String?
    @OptionGroup var logging: LoggingOptions

    /// TLS as asked for, or `nil` for plaintext.
    var clientTLS: ClientConfiguration.TLS? { tls || tlsCa != nil ? ClientConfiguration.TLS(caFile: tlsCa) : nil }

    /// The same, for the tools' raw protocol connection.
    func transportSecurity() throws -> TransportSecurity {
        guard let clientTLS else { return .plaintext }
        return try .client(caFile: clientTLS.caFile)
    }

    func validate() throws {
        _ = try courseID()
        _ = try bearer()
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func courseID() throws -> EntityID { try parseEntityID(course, what: "--course") }

    func bearer() throws -> String {
        guard let token = token ?? ProcessInfo.processInfo.environment["COURSESYNC_TOKEN"], !token.isEmpty else {
            throw ValidationError("pass --token or set COURSESYNC_TOKEN (issue one with `coursesync token issue`)")
        }
        return token
    }

    /// Opens the replica, waits until it is in sync, runs `body`, closes.
    func withClient(_ body: (SyncClient) async throws -> Void) async throws {
        let logger = logging.bootstrap(label: "coursesync.client")
        let courseID = try courseID()
        let path = replica ?? "coursesync-client/\(courseID).replica"
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path,
                                                withIntermediateDirectories: true)
        var configuration = ClientConfiguration(host: server.host, port: server.port, token: try bearer())
        configuration.tls = clientTLS
        configuration.coalesceWindow = .zero
        let client = try await SyncClient.open(path: path, courseID: courseID, configuration: configuration, logger: logger)
        let rejections = Task {
            for await event in client.events {
                if case .rejected(let rejected) = event {
                    FileHandle.standardError.write(Data("rejected: \(rejected.code): \(rejected.message) (dropped: \(rejected.droppedEdits.map(\.description).joined(separator: "; ")))\n".utf8))
                }
            }
        }
        do {
            try await settle(client)
            try await body(client)
        } catch {
            try await client.close()
            await rejections.value
            throw error
        }
        try await client.close()
        await rejections.value
    }

    /// Waits until every edit is answered and the replica is live, or fails after --timeout.
    func settle(_ client: SyncClient) async throws {
        let timeout = timeout
        let server = server
        try await withTimeout(timeout, { try await client.settle() }, failure: {
            ValidationError("no answer from the server at \(server) within \(timeout) s (\(await client.phase)" +
                            ((await client.lastConnectionError).map { "; last connection error: \($0)" } ?? "") +
                            "); edits made stay in the replica and sync next time")
        })
    }
}

/// A course outline for people.
func render(_ outline: Outline, media: [MediaRow], only chapterKey: LocalKey? = nil) -> String {
    let names = Dictionary(media.map { ($0.key, $0.name) }) { first, _ in first }
    var lines = ["\"\(outline.title)\" at seq \(outline.seq)"]
    for entry in outline.chapters where chapterKey == nil || entry.chapter.key == chapterKey {
        let chapter = entry.chapter
        lines.append("\(chapter.position + 1). \(chapter.title)  [\(chapter.id.map(\.description) ?? "pending")]\(chapter.status == .pending ? " (pending)" : "")")
        for video in entry.videos {
            lines.append("   \(video.position + 1). \(video.title)  [\(video.id.map(\.description) ?? "pending")] ← \(names[video.mediaKey] ?? "?")\(video.status == .pending ? " (pending)" : "")")
        }
    }
    if outline.chapters.isEmpty { lines.append("(no chapters)") }
    return lines.joined(separator: "\n")
}

/// One committed diff, described in words against the state before it.
struct DiffDescription {
    var lines: [String]

    init(_ diff: Diff, before state: CourseState) {
        let after = state.applying(diff)
        let changes = diff.changes
        lines = ["seq \(diff.seq) by client \(diff.origin.clientID.description.prefix(8)) (batch \(diff.origin.batchSeq)):"]
        func chapterTitle(_ id: EntityID) -> String { "\"\(after.chapters[id]?.title ?? state.chapters[id]?.title ?? id.description)\"" }
        for id in changes.deletedChapters { lines.append("  - chapter \(chapterTitle(id))") }
        for id in changes.deletedVideos where !changes.deletedChapters.contains(state.videos[id]?.chapterID ?? id) {
            lines.append("  - video \"\(state.videos[id]?.title ?? id.description)\" from \(chapterTitle(state.videos[id]?.chapterID ?? id))")
        }
        for chapter in changes.chapters {
            if let old = state.chapters[chapter.id] {
                if old.title != chapter.title { lines.append("  ~ chapter \"\(old.title)\" renamed \"\(chapter.title)\"") }
                if old.position != chapter.position { lines.append("  ~ chapter \"\(chapter.title)\" now #\(chapter.position + 1)") }
            } else {
                lines.append("  + chapter \"\(chapter.title)\" at #\(chapter.position + 1)")
            }
        }
        for file in changes.media { lines.append("  + media \"\(file.name)\"") }
        for video in changes.videos.sorted(by: { ($0.chapterID, $0.position) < ($1.chapterID, $1.position) }) {
            if let old = state.videos[video.id] {
                if old.title != video.title { lines.append("  ~ video \"\(old.title)\" renamed \"\(video.title)\"") }
                if old.chapterID != video.chapterID {
                    lines.append("  ~ video \"\(video.title)\" moved to \(chapterTitle(video.chapterID)) #\(video.position + 1)")
                } else if old.position != video.position && old.title == video.title {
                    lines.append("  ~ video \"\(video.title)\" now #\(video.position + 1)")
                }
            } else {
                lines.append("  + video \"\(video.title)\" in \(chapterTitle(video.chapterID)) at #\(video.position + 1)")
            }
        }
        if lines.count == 1 { lines.append("  (no visible change)") }
    }
}

/// Prints a line at once, also when standard output is a pipe (for `watch`).
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
