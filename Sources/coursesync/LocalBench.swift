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
        abstract: "Client side: edit call → observer firing with the new rows, and Reject arrival → rolled-back rows observed.",
        discussion: """
        Starts an embedded server (SQLite store in a temporary directory) on a free loopback port and a \
        client with its own replica file. Each sample links 10 media files into a chapter through the \
        client API and times until an observer of that chapter's videos (GRDB ValueObservation) delivers \
        rows holding all 10; then unlinks them and waits for the server. The rollback run uses a client \
        with a viewer token, whose every batch the server rejects (FORBIDDEN), and times from the Reject \
        frame's arrival to the observer delivering the rows without the rolled-back videos.
        """
    )

    @Option(help: "Samples per measurement.")
    var samples = 500

    func validate() throws {
        guard (1...100_000).contains(samples) else { throw ValidationError("--samples must be between 1 and 100000") }
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
        let fixture = try await BenchFixture.make(store: store, writers: 2)
        func client(_ name: String, _ role: Role) async throws -> SyncClient {
            let client = try await SyncClient.open(path: folder.appendingPathComponent("\(name).replica").path, courseID: fixture.courseID,
                                                   configuration: ClientConfiguration(port: port, token: try await embedded.token(name, role, in: fixture.courseID)),
                                                   logger: logger)
            try await client.settle()
            return client
        }
        print("coursesync bench local — SQLite replica (WAL, synchronous=NORMAL), GRDB ValueObservation, \(samples) samples, batches of 10 links")

        let editor = try await client("editor", .editor)
        let media = fixture.media.map(LocalKey.init)
        let chapter = LocalKey(fixture.chapters[0])
        let visible = try await measure(editor, chapter: chapter) { observed in
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            for _ in 0..<samples {
                let start = ContinuousClock.now
                let keys = try await editor.linkMedia(media, to: chapter)
                let seen = try await observed.next { rows in Set(keys).isSubset(of: rows.map(\.key)) }
                histogram.record(UInt64((seen - start).wholeNanoseconds))
                for key in keys { try await editor.unlinkVideo(key) }
                try await editor.settle()
            }
            return histogram
        }
        report("edit → observer (10 links)", visible)

        let viewer = try await client("viewer", .viewer)
        let rollback = try await measure(viewer, chapter: LocalKey(fixture.chapters[1])) { observed in
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            for _ in 0..<samples {
                let before = await viewer.lastRejectArrival
                _ = try await viewer.linkMedia(media, to: LocalKey(fixture.chapters[1]))
                // The first delivery without the videos after this batch's Reject arrived.
                while true {
                    let (rows, seen) = try await observed.nextDelivery()
                    guard rows.isEmpty, let arrival = await viewer.lastRejectArrival, arrival != before, seen >= arrival else { continue }
                    histogram.record(UInt64((seen - arrival).wholeNanoseconds))
                    break
                }
            }
            return histogram
        }
        report("Reject → rollback observed", rollback)
        await editor.close()
        await viewer.close()
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
