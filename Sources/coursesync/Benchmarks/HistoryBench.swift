import ArgumentParser
import Foundation
import Histogram
import Logging
import PostgresNIO
import PostgresStore
import SQLiteStore
import SyncModel
import SyncStorage

struct HistoryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "A course's history: a page of commits, and the course as it was at a seq, on a course with many commits.",
        discussion: """
        Makes a course of 4 chapters and 50 media files and commits --commits batches to it through the \
        store (groups of 100; each batch moves or renames a chapter, or links or unlinks a video), then \
        times --samples reads of each: a history page of 100 commits before a random seq, and the \
        course at a random seq (the nearest snapshot, kept every 1,000 commits, plus the diffs after \
        it). The embedded SQLite store in a scratch folder, or --postgres.
        """
    )

    @Option(name: .customLong("postgres"), help: ArgumentHelp("A migrated PostgreSQL database (default: the embedded SQLite store).", valueName: "url"))
    var postgresURL: String?

    @Option(help: "Commits made before timing.")
    var commits = 100_000

    @Option(help: "Reads timed of each kind.")
    var samples = 200

    func validate() throws {
        guard commits >= 100, samples > 0 else { throw ValidationError("--commits must be at least 100 and --samples positive") }
        if let postgresURL { _ = try PostgresURL.configuration(postgresURL) }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.bench")
        logger.logLevel = .error
        if let postgresURL {
            try await withPostgres(try PostgresURL.configuration(postgresURL), logger: logger) { client in
                let store = PostgresStore(client: client, logger: logger)
                try await store.checkSchema()
                try await measure(store, name: "PostgreSQL")
            }
        } else {
            try await withScratchFolder("coursesync-history") { folder in
                try await measure(try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path), name: "SQLite")
            }
        }
    }

    private func measure(_ store: some SyncStore, name: String) async throws {
        var generator = SystemRandomNumberGenerator()
        let seed = try await CourseSeed(id: .random(using: &generator), title: "History bench", chapters: ["One", "Two", "Three", "Four"],
                                        media: CourseSeed.Media.numbered(50)).make(in: store)
        let courseID = seed.course
        let client = ClientID(.random(using: &generator))
        var random = SplitMix64(seed: 7)
        var batchSeq: BatchSeq = 0
        var linked: [EntityID] = []
        let started = ContinuousClock.now
        var made = 0
        while made < commits {
            let state = try await store.snapshot(courseID: courseID)
            linked = state.videos.keys.sorted()
            var group: [Batch] = []
            for _ in 0..<min(100, commits - made) {
                batchSeq += 1
                let chapter = seed.chapters[Int.random(in: 0..<seed.chapters.count, using: &random)]
                let op: SyncModel.Operation
                switch Int.random(in: 0..<4, using: &random) {
                case 0: op = .moveChapter(.id(chapter), placement: .atStart)
                case 1: op = .renameChapter(.id(chapter), title: "Title \(batchSeq)")
                case 2: op = .linkMedia(chapter: .id(chapter), items: [LinkItem(temp: TempID(batchSeq)!, media: .id(seed.media.randomElement(using: &random)!))],
                                        placement: .atEnd)
                default:
                    if let video = linked.popLast() { op = .unlinkVideo(.id(video)) } else { op = .moveChapter(.id(chapter), placement: .atEnd) }
                }
                group.append(Batch(clientID: client, courseID: courseID, batchSeq: batchSeq, baseSeq: 0, ops: [op]))
            }
            _ = try await store.commit(group, courseID: courseID)
            made += group.count
        }
        let current = try await store.snapshot(courseID: courseID).seq
        say("coursesync bench history — \(name), a course with \(current) commits (made in \(String(format: "%.1f", (ContinuousClock.now - started).seconds)) s), \(samples) reads of each")
        try await Task.sleep(for: .seconds(1))  // the last snapshots are written after their commits

        var page = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var at = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for _ in 0..<samples {
            let before = CourseSeq.random(in: 101...current, using: &random)
            let start = ContinuousClock.now
            let records = try await store.history(courseID, before: before, limit: 100)
            page.record(UInt64((ContinuousClock.now - start).wholeNanoseconds))
            guard records.count == 100 else { throw ValidationError("a history page held \(records.count) commits") }
        }
        for _ in 0..<samples {
            let seq = CourseSeq.random(in: 1..<current, using: &random)
            let start = ContinuousClock.now
            let state = try await store.course(courseID, at: seq)
            at.record(UInt64((ContinuousClock.now - start).wholeNanoseconds))
            guard state.seq == seq else { throw ValidationError("the course at \(seq) came back at \(state.seq)") }
        }
        func line(_ what: String, _ histogram: Histogram<UInt64>) -> String {
            func ms(_ p: Double) -> Double { Double(histogram.valueAtPercentile(p)) / 1e6 }
            return String(format: "%@: p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms", what, ms(50), ms(90), ms(99), Double(histogram.max) / 1e6)
        }
        say(line("history page of 100 commits", page))
        say(line("course at a random seq     ", at))
    }
}
