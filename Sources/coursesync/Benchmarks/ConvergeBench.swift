import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import PostgresStore
import SQLiteStore
import SyncClient
import SyncModel
import SyncServer
import SyncStorage
import SyncWire

struct ConvergeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "converge",
        abstract: "Editors appending into one course at once, each a real SyncClient with its own replica: items/s and time to converge.",
        discussion: """
        For each editor count: a new course with one chapter per two editors, a server in this process on \
        loopback, and that many SyncClients (each its own replica file). At the same moment every editor \
        starts appending --items links into its chapter, in batches of 10, closed loop (the next batch \
        after the previous one's ack). Prints items/s, the time until every replica holds the course's \
        final seq, push → ack p50/p99, and checks every replica against the store row for row. \
        --analyzed first fills the store with 20 earlier courses of the same shape and (on PostgreSQL) \
        runs ANALYZE, as autovacuum would in production. --in-memory-clients runs the same editors as \
        protocol clients that keep the course as a value in memory (no replica, no SyncClient): what the \
        server, the store and the wire take on their own.
        """
    )

    @Option(name: .customLong("postgres"), help: ArgumentHelp("A PostgreSQL database (default: the embedded SQLite store in a scratch folder).", valueName: "url"))
    var postgresURL: String?

    @Flag(help: "Apply missing migrations to the PostgreSQL database first.")
    var migrate = false

    @Option(parsing: .upToNextOption, help: "Editor counts, one run each (even numbers: two editors per chapter).")
    var editors: [Int] = [2, 8, 32]

    @Option(help: "Links each editor appends (batches of 10).")
    var items = 200

    @Flag(help: "First fill the store with 20 earlier courses and analyze it.")
    var analyzed = false

    @Flag(help: "Editors are protocol clients keeping the course in memory (every diff applied to a value) instead of SyncClients with replica files.")
    var inMemoryClients = false

    @Option(help: "Seconds to wait for a run to finish before failing.")
    var timeout: Double = 300

    func validate() throws {
        guard !editors.isEmpty, editors.allSatisfy({ $0 >= 2 && $0 % 2 == 0 && $0 / 2 <= Limits.maxChaptersPerCourse && $0 <= 200 }) else {
            throw ValidationError("--editors must be even numbers from 2 to 200")
        }
        guard (1...Limits.maxVideosPerChapter / 2).contains(items) else {
            throw ValidationError("--items must be between 1 and \(Limits.maxVideosPerChapter / 2) (two editors share a chapter)")
        }
        if let postgresURL { _ = try PostgresURL.configuration(postgresURL) }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.bench")
        logger.logLevel = .critical
        try await withScratchFolder("coursesync-converge") { folder in
            if let postgresURL {
                try await withPostgres(try PostgresURL.configuration(postgresURL), logger: logger) { client in
                    if migrate { _ = try await Migrator().migrate(client, logger: logger) }
                    let store = PostgresStore(client: client, logger: logger)
                    try await store.checkSchema()
                    if analyzed {
                        try await Self.fillEarlierCourses(store, editors: editors.max()!, items: items)
                        try await client.query("ANALYZE", logger: logger)
                    }
                    try await runAll(store: store, storeName: "PostgreSQL", folder: folder, logger: logger)
                }
            } else {
                let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
                if analyzed { try await Self.fillEarlierCourses(store, editors: editors.max()!, items: items) }
                try await runAll(store: store, storeName: "SQLite", folder: folder, logger: logger)
            }
        }
    }

    private func runAll(store: some SyncStore, storeName: String, folder: URL, logger: Logger) async throws {
        let authority = try await TokenAuthority(secret: Array(TokenSecret.generate().utf8))
        let server = SyncServer(store: store, authority: authority,
                                configuration: .bench, logger: logger)
        let serving = Task { try await server.run() }
        defer { serving.cancel() }
        let port = try await server.listeningPort()
        say("coursesync bench converge — \(storeName)\(analyzed ? " (analyzed, after 20 earlier courses)" : ""), loopback TCP, " +
            "\(items) links per editor in batches of 10, two editors per chapter" +
            (inMemoryClients ? ", in-memory protocol clients" : ", SyncClients with replica files"))
        var failed = false
        for count in editors {
            let result = inMemoryClients
                ? try await convergeInMemory(editors: count, store: store, authority: authority, port: port)
                : try await converge(editors: count, store: store, authority: authority, port: port, folder: folder, logger: logger)
            let holders = inMemoryClients ? "client" : "replica"
            say(String(format: "%3d editors: %6d items in %.2f s = %6.0f items/s · every %@ at seq %d after %.2f s · push → ack p50 %.2f ms  p99 %.2f ms · %@",
                       count, result.items, result.editing, Double(result.items) / result.editing, holders, result.finalSeq, result.converged,
                       result.ms(50), result.ms(99), result.mismatches.isEmpty ? "\(holders)s match the store ✓" : "\(holders.uppercased())S DIFFER"))
            for mismatch in result.mismatches.prefix(10) { say("  \(mismatch)") }
            failed = failed || !result.mismatches.isEmpty
        }
        await server.shutDown()
        _ = await serving.result
        if failed { throw ExitCode.failure }
    }

    struct Result {
        var items = 0
        var editing = 0.0
        var converged = 0.0
        var finalSeq: CourseSeq = 0
        var latency = Histogram<UInt64>(highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)
        var mismatches: [String] = []

        func ms(_ percentile: Double) -> Double { Double(latency.valueAtPercentile(percentile)) / 1e6 }
    }

    private func converge(editors count: Int, store: some SyncStore, authority: TokenAuthority, port: Int, folder: URL, logger: Logger) async throws -> Result {
        let fixture = try await Self.makeCourse(store, chapters: count / 2, media: 2 * items)
        var clients: [SyncClient] = []
        let run = UInt64.random(in: 0 ... .max)
        for index in 0..<count {
            let configuration = ClientConfiguration(port: port, token: try await authority.issue(TokenClaims(
                user: "editor\(index)", expires: Date().addingTimeInterval(86_400), courses: [fixture.course: .editor])))
            clients.append(try await SyncClient.open(path: folder.appendingPathComponent("\(run)-\(index).replica").path,
                                                     courseID: fixture.course, configuration: configuration, logger: logger))
        }
        for client in clients { try await client.settle() }
        let editors = clients

        let clock = ContinuousClock()
        let start = clock.now
        let items = items
        var result = Result()
        let latencies = NIOLockedValueBox<[Histogram<UInt64>]>([])
        let itemsDone = NIOLockedValueBox(0)
        let total = count * items
        let reporter = Self.reportProgress(editors: count, of: total, done: itemsDone)
        defer { reporter.cancel() }
        try await withTimeoutThrowing(timeout, "the editors to finish") {
            try await withThrowingTaskGroup(of: Histogram<UInt64>.self) { group in
                for (index, client) in editors.enumerated() {
                    let chapter = await client.key(for: fixture.chapters[index / 2])
                    var media: [LocalKey] = []
                    for id in Self.media(of: index, in: fixture.media, items: items) { media.append(await client.key(for: id)) }
                    group.addTask {
                        var latency = Histogram<UInt64>(highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)
                        for first in stride(from: 0, to: media.count, by: 10) {
                            let sent = clock.now
                            try await client.linkMedia(Array(media[first ..< min(first + 10, media.count)]), to: chapter)
                            try await client.settle()
                            _ = latency.record(UInt64((clock.now - sent).wholeNanoseconds))
                            itemsDone.withLockedValue { $0 += min(10, media.count - first) }
                        }
                        return latency
                    }
                }
                for try await latency in group { latencies.withLockedValue { $0.append(latency) } }
            }
        }
        reporter.cancel()
        for latency in latencies.withLockedValue({ $0 }) { result.latency.add(latency) }
        result.editing = (clock.now - start).seconds
        result.items = count * items
        let truth = try await store.snapshot(courseID: fixture.course)
        result.finalSeq = truth.seq
        try await withTimeoutThrowing(timeout, "every replica to reach seq \(truth.seq)") {
            for client in editors {
                while await client.cursor < truth.seq { try await Task.sleep(for: .milliseconds(1)) }
            }
        }
        result.converged = (clock.now - start).seconds
        for client in clients { try await client.close() }
        if truth.videos.count != result.items { result.mismatches.append("the store holds \(truth.videos.count) videos, not \(result.items)") }
        for index in 0..<count {
            let replica = try Replica(path: folder.appendingPathComponent("\(run)-\(index).replica").path)
            for problem in try replica.differences(from: truth) { result.mismatches.append("editor \(index): \(problem)") }
        }
        return result
    }

    /// What one in-memory editor ends with.
    struct InMemoryEditor: Sendable {
        var index: Int
        var latency: Histogram<UInt64>
        var state: CourseState
        var lastAck: ContinuousClock.Instant
        var converged: ContinuousClock.Instant
    }

    /// The same run with protocol clients: each editor subscribes from scratch (a snapshot), keeps
    /// the course as a `CourseState` and applies every `Diff` to it, pushes its links closed loop,
    /// and is done when its last batch is acked and its state reached the course's final seq. A
    /// rejection fails the run (every batch of this workload commits, one seq each, so the final
    /// seq is known in advance). Each editor's state is compared with the store's at the end.
    private func convergeInMemory(editors count: Int, store: some SyncStore, authority: TokenAuthority, port: Int) async throws -> Result {
        let fixture = try await Self.makeCourse(store, chapters: count / 2, media: 2 * items)
        let items = items
        let initial = try await store.snapshot(courseID: fixture.course).seq
        let finalSeq = initial + CourseSeq(count * ((items + 9) / 10))
        let clock = ContinuousClock()
        let ready = NIOLockedValueBox(0)
        let start = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
        let itemsDone = NIOLockedValueBox(0)
        let runner = Task {
            try await withThrowingTaskGroup(of: InMemoryEditor.self) { group in
                for index in 0..<count {
                    let token = try await authority.issue(TokenClaims(user: "editor\(index)", expires: Date().addingTimeInterval(86_400),
                                                                      courses: [fixture.course: .editor]))
                    let chapter = fixture.chapters[index / 2]
                    let batches = Self.linkBatches(Self.media(of: index, in: fixture.media, items: items))
                    group.addTask {
                        var generator = SystemRandomNumberGenerator()
                        return try await ProtocolClient.with(host: "127.0.0.1", port: port, clientID: ClientID(.random(using: &generator)), token: token) { connection in
                            try await connection.send(.subscribe(courseID: fixture.course, sinceSeq: 0))
                            var snapshot = SnapshotCollector()
                            var state: CourseState?
                            var early: [Diff] = []
                            subscribing: while true {
                                switch try await connection.next() {
                                case .snapshot(let part):
                                    if let whole = snapshot.add(part) { state = whole }
                                case .diff(let diff): early.append(diff)
                                case .subscribed: break subscribing
                                case .ping(let nonce): try await connection.send(.pong(nonce: nonce))
                                default: continue
                                }
                            }
                            guard var state else { throw ValidationError("editor \(index) was subscribed without a snapshot") }
                            for diff in early { state.apply(diff) }
                            ready.withLockedValue { $0 += 1 }
                            while start.withLockedValue({ $0 }) == nil { try await Task.sleep(for: .microseconds(200)) }

                            var latency = Histogram<UInt64>(highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)
                            var answered = 0
                            var sent = clock.now
                            var lastAck = sent
                            func push(_ number: Int) async throws {
                                sent = clock.now
                                try await connection.send(.push(Push(courseID: fixture.course, batchSeq: BatchSeq(number + 1), baseSeq: state.seq,
                                                                     ops: [.linkMedia(chapter: .id(chapter), items: batches[number], placement: .atEnd)])))
                            }
                            try await push(0)
                            while answered < batches.count || state.seq < finalSeq {
                                switch try await connection.next() {
                                case .diff(let diff):
                                    guard diff.seq == state.seq + 1 else { throw ValidationError("editor \(index): diff \(diff.seq) after \(state.seq)") }
                                    state.apply(diff)
                                case .ack:
                                    lastAck = clock.now
                                    _ = latency.record(UInt64((lastAck - sent).wholeNanoseconds))
                                    itemsDone.withLockedValue { $0 += batches[answered].count }
                                    answered += 1
                                    if answered < batches.count { try await push(answered) }
                                case .reject(let reject):
                                    throw ValidationError("editor \(index): batch \(reject.batchSeq) rejected: \(reject.rejection)")
                                case .ping(let nonce): try await connection.send(.pong(nonce: nonce))
                                default: continue
                                }
                            }
                            return InMemoryEditor(index: index, latency: latency, state: state, lastAck: lastAck, converged: clock.now)
                        }
                    }
                }
                var editors: [InMemoryEditor] = []
                for try await editor in group { editors.append(editor) }
                return editors
            }
        }
        defer { runner.cancel() }
        try await withTimeoutThrowing(timeout, "the editors to subscribe") {
            while ready.withLockedValue({ $0 }) < count { try await Task.sleep(for: .milliseconds(1)) }
        }
        let started = clock.now
        start.withLockedValue { $0 = started }
        let total = count * items
        let reporter = Self.reportProgress(editors: count, of: total, done: itemsDone)
        defer { reporter.cancel() }
        try await withTimeoutThrowing(timeout, "the editors to finish") { _ = try await runner.value }
        let editors = try await runner.value
        var result = Result()
        for editor in editors { result.latency.add(editor.latency) }
        result.items = total
        result.editing = (editors.map(\.lastAck).max()! - started).seconds
        result.converged = (editors.map(\.converged).max()! - started).seconds
        let truth = try await store.snapshot(courseID: fixture.course)
        result.finalSeq = truth.seq
        if truth.seq != finalSeq { result.mismatches.append("the store is at seq \(truth.seq), not \(finalSeq)") }
        if truth.videos.count != total { result.mismatches.append("the store holds \(truth.videos.count) videos, not \(total)") }
        for editor in editors where editor.state != truth {
            result.mismatches.append("editor \(editor.index)'s course differs from the store's (seq \(editor.state.seq), \(editor.state.videos.count) videos)")
        }
        return result
    }

    /// Says every 2 s how many of `total` items are acked, until cancelled.
    private static func reportProgress(editors count: Int, of total: Int, done: NIOLockedValueBox<Int>) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                guard !Task.isCancelled else { return }
                say("  … \(count) editors: \(done.withLockedValue { $0 })/\(total) items acked")
            }
        }
    }

    /// A course with `chapters` chapters and `media` media files, made by one set-up batch.
    static func makeCourse(_ store: some SyncStore, title: String = "Converge", chapters: Int, media: Int) async throws -> CourseSeed.Seeded {
        var generator = SystemRandomNumberGenerator()
        return try await CourseSeed(id: .random(using: &generator), title: title, chapters: CourseSeed.numberedChapters(chapters),
                                    media: CourseSeed.Media.numbered(media)).make(in: store)
    }

    /// The media files editor `index` links: editors 2k and 2k+1 share chapter k, each links its
    /// own half of the course's 2 × `items` files.
    static func media(of index: Int, in media: [EntityID], items: Int) -> ArraySlice<EntityID> {
        media[(index % 2) * items ..< (index % 2 + 1) * items]
    }

    /// Links of `media` in batches of 10, in order, temp IDs counting from 1.
    static func linkBatches(_ media: ArraySlice<EntityID>) -> [[LinkItem]] {
        stride(from: 0, to: media.count, by: 10).map { first in
            media.dropFirst(first).prefix(10).enumerated().map { LinkItem(temp: TempID(UInt64(first + $0.offset + 1))!, media: .id($0.element)) }
        }
    }

    /// 20 courses as a run with `editors` editors leaves them (the same batches of 10 links, by as
    /// many clients), committed straight to the store in groups.
    static func fillEarlierCourses(_ store: some SyncStore, editors: Int, items: Int) async throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let fixture = try await makeCourse(store, chapters: editors / 2, media: 2 * items)
            var batches: [Batch] = []
            for editor in 0..<editors {
                let client = ClientID(.random(using: &generator))
                for (round, links) in linkBatches(media(of: editor, in: fixture.media, items: items)).enumerated() {
                    batches.append(Batch(clientID: client, courseID: fixture.course, batchSeq: BatchSeq(round + 1), baseSeq: 0,
                                         ops: [.linkMedia(chapter: .id(fixture.chapters[editor / 2]), items: links, placement: .atEnd)]))
                }
            }
            for start in stride(from: 0, to: batches.count, by: 64) {
                _ = try await store.commit(Array(batches[start ..< min(start + 64, batches.count)]), courseID: fixture.course)
            }
        }
    }

    private func withTimeoutThrowing(_ seconds: Double, _ what: String, _ body: @escaping @Sendable () async throws -> Void) async throws {
        try await withTimeout(seconds, body, failure: { ValidationError("timed out after \(seconds) s waiting for \(what)") })
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
