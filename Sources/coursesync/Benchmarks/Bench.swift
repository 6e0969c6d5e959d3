import ArgumentParser
import Foundation
import Histogram
import Logging
import PostgresNIO
import PostgresStore
import SyncModel
import SyncServer
import SyncStorage
import SyncWire

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the engine. Figures are medians and percentiles, on this machine, now.",
        subcommands: [AckBench.self, ConvergeBench.self, LocalBench.self, FanoutBench.self, PresenceBench.self, HistoryBench.self, CoursesBench.self, BroadcastFloor.self]
    )
}

struct AckBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ack",
        abstract: "Round trip of a batch of 10 links (push → ack) on loopback, and batches/s with concurrent writers.",
        discussion: """
        Starts a server in this process on a free loopback port over the given PostgreSQL database (which \
        must be migrated, or pass --migrate), creates a course with one chapter per writer, and has each \
        writer push, in a closed loop, a batch linking 10 media files into its chapter, then a batch \
        unlinking them. Latency is measured on the link batches; throughput counts every batch.
        """
    )

    @OptionGroup var postgres: PostgresOptions

    @Flag(help: "Apply missing migrations first.")
    var migrate = false

    @Option(help: "Link batches timed in the single-writer latency run.")
    var samples = 1000

    @Option(parsing: .upToNextOption, help: "Concurrent writer counts for the throughput runs.")
    var writers: [Int] = [1, 16, 64]

    @Option(help: "Seconds per throughput run.")
    var seconds = 5.0

    func validate() throws {
        guard samples > 0 else { throw ValidationError("--samples must be positive") }
        guard !writers.isEmpty, writers.allSatisfy({ (1...Limits.maxChaptersPerCourse).contains($0) }) else {
            throw ValidationError("--writers must be between 1 and \(Limits.maxChaptersPerCourse)")
        }
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.bench")
        logger.logLevel = .error
        try await withPostgres(try postgres.target(), logger: logger) { primary in
            let store = PostgresStore(primary: primary, logger: logger)
            if migrate { try await Migrator().migrate(primary.client, logger: logger) } else { try await store.checkSchema() }
            let secret = Array(TokenSecret.generate().utf8)
            let authority = try await TokenAuthority(secret: secret)
            let server = SyncServer(store: store, authority: authority,
                                    configuration: .bench, logger: logger)
            let serving = Task { try await server.run() }
            defer { serving.cancel() }
            let port = try await server.listeningPort()
            let fixture = try await BenchFixture.make(store: store, writers: writers.max()!)
            let token = try await authority.issue(TokenClaims(user: "bench", expires: Date().addingTimeInterval(86_400), courses: [fixture.courseID: .editor]))

            print("coursesync bench ack — PostgreSQL \(postgres.url), loopback TCP, batches of 10 links")
            let latency = try await fixture.run(writers: 1, port: port, token: token, links: samples, duration: nil)
            print(String(format: "round trip, 1 writer, %d link batches: p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms",
                         latency.histogram.totalCount, latency.ms(50), latency.ms(90), latency.ms(99), Double(latency.histogram.max) / 1e6))
            for count in writers {
                let result = try await fixture.run(writers: count, port: port, token: token, links: nil, duration: .seconds(seconds))
                print(String(format: "%3d writers: %7.0f batches/s  (link round trip p50 %.2f ms  p99 %.2f ms)",
                             count, result.batchesPerSecond, result.ms(50), result.ms(99)))
            }
            await server.shutDown()
            _ = await serving.result
        }
    }
}

/// A course with a chapter per writer and 10 media files, for the closed-loop writers.
struct BenchFixture {
    let courseID: EntityID
    let chapters: [EntityID]
    let media: [EntityID]

    static func make(store: some SyncStore, writers: Int) async throws -> BenchFixture {
        let course = try await ConvergeBench.makeCourse(store, title: "Benchmark course", chapters: writers, media: 10)
        return BenchFixture(courseID: course.course, chapters: course.chapters, media: course.media)
    }

    /// A course of about `videos` videos, 100 per chapter, and 110 media files: every chapter
    /// links the first 100 (the first two chapters 10 fewer), the last 10 are linked by no chapter.
    static func large(store: some SyncStore, videos: Int) async throws -> BenchFixture {
        let chapterCount = max(2, (videos + 99) / 100)
        let perChapter = min(100, videos / chapterCount)
        let course = try await ConvergeBench.makeCourse(store, title: "Large benchmark course", chapters: chapterCount, media: 110)
        var generator = SystemRandomNumberGenerator()
        let client = ClientID(.random(using: &generator))
        var batches: [Batch] = []
        var temp: UInt64 = 0
        for (index, chapter) in course.chapters.enumerated() {
            let items = course.media.prefix(index < 2 ? perChapter - 10 : perChapter).map { media -> LinkItem in
                temp += 1
                return LinkItem(temp: TempID(temp)!, media: .id(media))
            }
            batches.append(Batch(clientID: client, courseID: course.course, batchSeq: BatchSeq(index + 1), baseSeq: 0,
                                 ops: [.linkMedia(chapter: .id(chapter), items: items, placement: .atEnd)]))
        }
        for start in stride(from: 0, to: batches.count, by: 16) {
            for outcome in try await store.commit(Array(batches[start ..< min(start + 16, batches.count)]), courseID: course.course) {
                guard case .committed = outcome else { throw ValidationError("the benchmark's set-up batch was refused: \(outcome)") }
            }
        }
        return BenchFixture(courseID: course.course, chapters: course.chapters, media: course.media)
    }

    struct Result {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var batches = 0
        var elapsed: Duration = .zero

        func ms(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1e6 }
        var batchesPerSecond: Double { Double(batches) / elapsed.seconds }
    }

    /// `writers` closed-loop writers, each alternating link and unlink batches in its own chapter,
    /// until `links` link batches each or `duration` has passed.
    func run(writers: Int, port: Int, token: String, links: Int?, duration: Duration?) async throws -> Result {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = duration.map { start + $0 }
        var total = Result()
        try await withThrowingTaskGroup(of: Result.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var generator = SystemRandomNumberGenerator()
                    let clientID = ClientID(.random(using: &generator))
                    return try await ProtocolClient.with(host: "127.0.0.1", port: port, clientID: clientID, token: token) { connection in
                        var result = Result()
                        var batchSeq: BatchSeq = 0
                        var temp: UInt64 = 0
                        var round = 0
                        while links.map({ round < $0 }) ?? (clock.now < deadline!) {
                            round += 1
                            let items = media.map { media -> LinkItem in
                                temp += 1
                                return LinkItem(temp: TempID(temp)!, media: .id(media))
                            }
                            batchSeq += 1
                            let sent = clock.now
                            let ack = try await connection.push(Push(courseID: courseID, batchSeq: batchSeq, baseSeq: 0,
                                                                     ops: [.linkMedia(chapter: .id(chapters[writer]), items: items, placement: .atEnd)])).get()
                            let took = clock.now - sent
                            _ = result.histogram.record(UInt64(took.wholeNanoseconds))
                            batchSeq += 1
                            let videos = items.compactMap { ack.idMap[$0.temp] }
                            _ = try await connection.push(Push(courseID: courseID, batchSeq: batchSeq, baseSeq: 0,
                                                               ops: videos.map { .unlinkVideo(.id($0)) })).get()
                            result.batches += 2
                        }
                        return result
                    }
                }
            }
            for try await result in group {
                total.histogram.add(result.histogram)
                total.batches += result.batches
            }
        }
        total.elapsed = clock.now - start
        return total
    }
}

extension ServerConfiguration {
    /// A loopback server with no abuse limits: the benches measure the engine, not the policy.
    static var bench: ServerConfiguration {
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, serverID: "bench")
        configuration.limits = .unlimited
        return configuration
    }
}
