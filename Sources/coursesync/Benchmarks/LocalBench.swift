import ArgumentParser
import Foundation
import Histogram
import Logging
import SQLiteStore
import SyncClient
import SyncModel
import SyncServer

struct LocalBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "local",
        abstract: "Client side: edit call → observer firing with the new rows, undo → observer, and Reject arrival → rolled-back rows observed.",
        discussion: """
        Starts an embedded server (SQLite store in a temporary directory) on a free loopback port and a \
        client with its own replica file. Each sample links 10 media files into a chapter through the \
        client API and times until an observer of that chapter's videos (GRDB ValueObservation) delivers \
        rows holding all 10; then undoes the link (one batch of 10 unlinks) and times until the observer \
        delivers rows without them, and waits for the server. The rollback run uses a client \
        with a viewer token, whose every batch the server rejects (FORBIDDEN), and times from the Reject \
        frame's arrival to the observer delivering the rows without the rolled-back videos. The remote         run has a second editor link 10 media files into the chapter the first one observes, and times         from the Diff frame's arrival at the first to its observer delivering the 10 new rows.

        With --videos N the course first holds about N videos (100 per chapter, so 10000 is 100         chapters × 100 videos; the two measured chapters hold 10 fewer, so the links fit the         course's limit): the edit and the remote diff should cost the same as in a small course.
        """
    )

    @Option(help: "Samples per measurement.")
    var samples = 500

    @Option(help: "Videos already in the course (0: an empty course of 2 chapters).")
    var videos = 0

    func validate() throws {
        guard (1...100_000).contains(samples) else { throw ValidationError("--samples must be between 1 and 100000") }
        guard videos == 0 || (200...Limits.maxVideosPerCourse).contains(videos) else {
            throw ValidationError("--videos must be 0 or between 200 and \(Limits.maxVideosPerCourse)")
        }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.bench")
        logger.logLevel = .error
        try await withScratchFolder("coursesync-bench") { folder in
            try await EmbeddedServer.with(folder: folder, name: "bench", logger: logger) { embedded in
                try await run(embedded, folder: folder, logger: logger)
            }
        }
    }

    private func run(_ embedded: EmbeddedServer, folder: URL, logger: Logger) async throws {
        let store = embedded.store
        let port = embedded.port
        let fixture = try await videos == 0 ? BenchFixture.make(store: store, writers: 2) : BenchFixture.large(store: store, videos: videos)
        func client(_ name: String, _ role: Role) async throws -> SyncClient {
            let client = try await SyncClient.open(path: folder.appendingPathComponent("\(name).replica").path, courseID: fixture.courseID,
                                                   configuration: ClientConfiguration(port: port, token: try await embedded.token(name, role, in: fixture.courseID)),
                                                   logger: logger)
            try await client.settle()
            return client
        }
        print("coursesync bench local — SQLite replica (WAL, synchronous=NORMAL), GRDB ValueObservation, \(samples) samples, batches of 10 links")
        print("course: \(fixture.chapters.count) chapters, \(videos) videos")

        let editor = try await client("editor", .editor)
        // The 10 media files no chapter holds yet.
        let media = fixture.media.suffix(10).map(LocalKey.init)
        let chapter = LocalKey(fixture.chapters[0])
        var undone = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        let visible = try await measure(editor, chapter: chapter) { observed in
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            for _ in 0..<samples {
                let start = ContinuousClock.now
                let keys = try await editor.linkMedia(media, to: chapter)
                let seen = try await observed.next { rows in Set(keys).isSubset(of: rows.map(\.key)) }
                histogram.record(UInt64((seen - start).wholeNanoseconds))
                // Ctrl+Z: the undo (10 unlinks, one batch) until the observer no longer shows them.
                let undo = ContinuousClock.now
                guard try await editor.undo() else { throw ValidationError("nothing to undo after a link") }
                let gone = try await observed.next { rows in Set(keys).isDisjoint(with: rows.map(\.key)) }
                undone.record(UInt64((gone - undo).wholeNanoseconds))
                try await editor.settle()
            }
            return histogram
        }
        report("edit → observer (10 links)", visible)
        report("undo → observer (10 unlinks)", undone)

        let remote = try await client("remote", .editor)
        let watched = LocalKey(fixture.chapters[1])
        let remoteDiff = try await measure(editor, chapter: watched) { observed in
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            let base = try await editor.outline().chapters.first { $0.chapter.key == watched }!.videos.count
            for _ in 0..<samples {
                let before = await editor.lastDiffArrival
                let keys = try await remote.linkMedia(media, to: watched)
                while true {
                    let (rows, seen) = try await observed.nextDelivery()
                    guard rows.count == base + keys.count, let arrival = await editor.lastDiffArrival, arrival != before else { continue }
                    histogram.record(UInt64((seen - arrival).wholeNanoseconds))
                    break
                }
                for key in keys { try await remote.unlinkVideo(key) }
                try await remote.settle()
                _ = try await observed.next { $0.count == base }
            }
            return histogram
        }
        report("remote diff → observer (10 links)", remoteDiff)
        try await remote.close()

        let viewer = try await client("viewer", .viewer)
        let rollback = try await measure(viewer, chapter: LocalKey(fixture.chapters[1])) { observed in
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            let base = try await viewer.outline().chapters.first { $0.chapter.key == LocalKey(fixture.chapters[1]) }!.videos.count
            for _ in 0..<samples {
                let before = await viewer.lastRejectArrival
                _ = try await viewer.linkMedia(media, to: LocalKey(fixture.chapters[1]))
                // The first delivery without the videos after this batch's Reject arrived.
                while true {
                    let (rows, seen) = try await observed.nextDelivery()
                    guard rows.count == base, let arrival = await viewer.lastRejectArrival, arrival != before, seen >= arrival else { continue }
                    histogram.record(UInt64((seen - arrival).wholeNanoseconds))
                    break
                }
            }
            return histogram
        }
        report("Reject → rollback observed", rollback)
        try await editor.close()
        try await viewer.close()
    }

    private func report(_ what: String, _ histogram: Histogram<UInt64>) {
        func ms(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1e6 }
        print(String(format: "%@: p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms  (%d samples)",
                     what, ms(50), ms(90), ms(99), Double(histogram.max) / 1e6, histogram.totalCount))
    }

    /// Runs `body` with the chapter's observed rows (each delivery stamped on arrival).
    private func measure(_ client: SyncClient, chapter: LocalKey,
                         _ body: (ObservedRows) async throws -> Histogram<UInt64>) async throws -> Histogram<UInt64> {
        let (stream, sink) = AsyncStream.makeStream(of: ([VideoRow], ContinuousClock.Instant).self)
        let observer = Task {
            do {
                for try await rows in client.observeVideos(inChapter: chapter) { sink.yield((rows, ContinuousClock.now)) }
            } catch {}
            sink.finish()
        }
        defer { observer.cancel() }
        return try await body(ObservedRows(iterator: stream.makeAsyncIterator()))
    }
}

/// Deliveries of an observation, in order.
final class ObservedRows {
    var iterator: AsyncStream<([VideoRow], ContinuousClock.Instant)>.AsyncIterator

    init(iterator: AsyncStream<([VideoRow], ContinuousClock.Instant)>.AsyncIterator) { self.iterator = iterator }

    /// When the first delivery satisfying `condition` arrived.
    func next(where condition: ([VideoRow]) -> Bool) async throws -> ContinuousClock.Instant {
        while true {
            let (rows, instant) = try await nextDelivery()
            if condition(rows) { return instant }
        }
    }

    func nextDelivery() async throws -> ([VideoRow], ContinuousClock.Instant) {
        guard let delivery = await iterator.next() else { throw ValidationError("the observation ended") }
        return delivery
    }
}
