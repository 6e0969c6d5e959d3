import ArgumentParser
import Foundation
import Logging
import SQLiteStore
import SyncClient
import SyncModel
import SyncStorage
import SyncServer

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Three instructors edit one course at once, live, and converge.",
        discussion: """
        Starts an embedded server (SQLite store) on a free loopback port, seeds a course with a media \
        library, and runs simulated instructors: real SyncClients, each with its own replica file, over \
        real TCP, linking, moving, renaming and unlinking videos in the same chapters at the same time. \
        Ends with the converged outline, a check of every replica against the server, and figures. \
        Nothing else needs to run; files go to a temporary directory unless --data-dir is given.
        """
    )

    @Option(help: "Simulated instructors (1 to 16).") var instructors = 3
    @Option(help: "Edits per instructor.") var edits = 80
    @Option(help: "Media files in the course's library.") var media = 36
    @Option(help: "Chapters to start with.") var chapters = 4
    @Option(help: "Random seed for the instructors' choices (default: random).") var seed: UInt64?
    @Option(help: ArgumentHelp("Keep the store and replicas in this directory (default: a temporary one, removed).", valueName: "dir"))
    var dataDir: String?
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard (1...16).contains(instructors) else { throw ValidationError("--instructors must be between 1 and 16") }
        guard (1...10_000).contains(edits) else { throw ValidationError("--edits must be between 1 and 10000") }
        guard (2...1_000).contains(media) else { throw ValidationError("--media must be between 2 and 1000") }
        guard (1...50).contains(chapters) else { throw ValidationError("--chapters must be between 1 and 50") }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.demo")
        logger.logLevel = logging.logLevel == .info ? .error : logging.logLevel
        let seed = seed ?? UInt64.random(in: 0 ... .max)
        let allMatch = try await withScratchFolder("coursesync-demo", kept: dataDir) { folder in
            try await EmbeddedServer.with(folder: folder, name: "demo", logger: logger) { embedded in
                try await run(embedded, folder: folder, seed: seed, logger: logger)
            }
        }
        if !allMatch { throw ExitCode.failure }
    }

    /// The instructors' session; returns whether every replica matched the server.
    private func run(_ embedded: EmbeddedServer, folder: URL, seed: UInt64, logger: Logger) async throws -> Bool {
        let store = embedded.store
        let course = try await seedCourse(store)
        say("CourseSync demo — server on 127.0.0.1:\(embedded.port) (SQLite store in \(folder.path)), seed \(seed)")
        say("course \"\(course.title)\": \(chapters) chapters, \(media) media files; \(instructors) instructors × \(edits) edits, concurrently\n")

        let names = ["Ada", "Grace", "Linus", "Barbara", "Edsger", "Margaret", "Dennis", "Frances",
                     "Ken", "Radia", "Donald", "Sophie", "Alan", "Katherine", "Niklaus", "Hedy"]
        var clients: [Instructor] = []
        for index in 0..<instructors {
            let name = names[index]
            var configuration = ClientConfiguration(port: embedded.port, token: try await embedded.token(name, .editor, in: course.id))
            configuration.coalesceWindow = .milliseconds(3)
            let client = try await SyncClient.open(path: folder.appendingPathComponent("\(name.lowercased()).replica").path,
                                                   courseID: course.id, configuration: configuration, logger: logger)
            try await client.settle()
            clients.append(Instructor(name: name, client: client, seed: seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15))
        }

        let progress = Progress(total: instructors * edits)
        let ticker = Task { [clients] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                await progress.show(clients)
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for instructor in clients {
                group.addTask { try await instructor.work(edits: edits, progress: progress) }
            }
            try await group.waitForAll()
        }
        try await settle(clients)
        ticker.cancel()
        await progress.show(clients, final: true)

        let truth = try await store.snapshot(courseID: course.id)
        say("\n\(render(truth))\n")
        var allMatch = true
        for instructor in clients {
            let visible = await instructor.client.visibleState
            let confirmed = await instructor.client.confirmedState
            let pending = await instructor.client.pendingBatches.count
            let matches = visible == truth && confirmed == truth && pending == 0
            allMatch = allMatch && matches
            say("\(instructor.name.padding(toLength: 9, withPad: " ", startingAt: 0)) replica: \(visible.chapters.count) chapters, \(visible.videos.count) videos at seq \(confirmed.seq) — \(matches ? "matches the server ✓" : "DIFFERS from the server ✗")")
        }
        var totals = ClientCore.Stats()
        var applyTimes: [Duration] = []
        var ackTimes: [Duration] = []
        for instructor in clients {
            totals.add(await instructor.client.stats)
            applyTimes += await instructor.applyTimes.values
            ackTimes += await instructor.client.ackRoundTrips
        }
        let refused = await progress.refusedLocally
        let conflicts = totals.resolutionNotes + totals.rejections
        let predictions = "\(totals.predictionsMatched)/\(totals.predictionsMatched + totals.predictionsMissed)"
        say("")
        say("edits \(totals.edits) (+\(refused) refused at once by the replica, e.g. media already in that chapter)")
        say("batches acked \(totals.acks) · rejected \(totals.rejections) (\(totals.droppedEdits) edits rolled back) · server commits \(truth.seq)")
        say("conflicts resolved \(conflicts): \(totals.resolutionNotes) merges or missing anchors, \(totals.rejections) rejections")
        say("optimistic apply: median \(format(median(applyTimes))) · push → ack: median \(format(median(ackTimes))) · predictions right \(predictions)")
        for instructor in clients { try await instructor.client.close() }
        return allMatch
    }

    private func seedCourse(_ store: SQLiteStore) async throws -> Course {
        var generator = SystemRandomNumberGenerator()
        let titles = ["Getting started", "Async and await", "SwiftNIO", "PostgreSQL", "Deploying", "Observability"]
        let seed = CourseSeed(
            id: .random(using: &generator), title: "Swift on the Server",
            chapters: (0..<chapters).map { $0 < titles.count ? titles[$0] : "Chapter \($0 + 1)" },
            media: (0..<media).map { index in
                let number = index + 1
                return CourseSeed.Media(name: "clip-" + (number < 10 ? "0" : "") + String(number) + ".mp4", cdnURL: "https://cdn.example.com/clips/\(number).mp4",
                                        durationMs: UInt64(60_000 + index * 7_000), byteSize: UInt64(5_000_000 + index * 100_000))
            })
        try await seed.make(in: store)
        return Course(id: seed.id, title: seed.title)
    }

    private func settle(_ clients: [Instructor]) async throws {
        try await withTimeout(60, {
            for instructor in clients { try await instructor.client.settle() }
        }, failure: { ValidationError("the replicas did not settle within 60 s") })
        // Every replica has seen every commit, including the others' last ones.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            var cursors = Set<CourseSeq>()
            for instructor in clients { cursors.insert(await instructor.client.cursor) }
            if cursors.count == 1 { return }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    private func render(_ state: CourseState) -> String {
        var lines = ["\"\(state.course.title)\" at seq \(state.seq)"]
        for chapter in state.orderedChapters {
            let videos = state.videos(in: chapter.id)
            lines.append("\(chapter.position + 1). \(chapter.title) (\(videos.count) videos)")
            for video in videos.prefix(8) { lines.append("     \(video.position + 1). \(video.title)") }
            if videos.count > 8 { lines.append("     … \(videos.count - 8) more") }
        }
        return lines.joined(separator: "\n")
    }
}


private func median(_ values: [Duration]) -> Duration? {
    guard !values.isEmpty else { return nil }
    return values.sorted()[values.count / 2]
}

private func format(_ duration: Duration?) -> String {
    guard let duration else { return "n/a" }
    return String(format: "%.2f ms", Double(duration.wholeNanoseconds) / 1e6)
}
