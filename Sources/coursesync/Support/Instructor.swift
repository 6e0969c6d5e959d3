import Foundation
import SyncClient
import SyncModel

/// One simulated instructor of `demo` and `stress`: a real `SyncClient` making random edits
/// through the client API, with short pauses.
actor Instructor {
    let name: String
    let client: SyncClient
    private var random: SplitMix64
    private(set) var applyTimes = Durations()

    init(name: String, client: SyncClient, seed: UInt64) {
        self.name = name
        self.client = client
        random = SplitMix64(seed: seed)
    }

    /// Makes `edits` edits, or edits until `deadline`, with pauses of up to `pauseMs`.
    func work(edits: Int, until deadline: ContinuousClock.Instant? = nil, pauseMs: Int = 12, progress: Progress) async throws {
        var made = 0
        while deadline.map({ ContinuousClock.now < $0 }) ?? (made < edits) {
            made += 1
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...pauseMs, using: &random)))
            let start = ContinuousClock.now
            do {
                try await edit()
                applyTimes.values.append(ContinuousClock.now - start)
                await progress.edited()
            } catch let error as EditError {
                // Refused at once: invalid against what the replica shows, or the row vanished
                // (another instructor's change arrived) between choosing it and editing it.
                switch error {
                case .invalid, .unknownKey: await progress.refused()
                case .queueFull, .closed: throw error
                }
            }
        }
    }

    private func edit() async throws {
        let state = await client.visibleState
        let chapters = state.orderedChapters
        let videos = Array(state.videos.values).sorted { $0.id < $1.id }
        let media = Array(state.media.keys).sorted()
        let key = { (id: EntityID) in await self.client.key(for: id) }
        let roll = Int.random(in: 0..<100, using: &random)
        let chapter = chapters.randomElement(using: &random)!
        switch roll {
        case 0..<40 where !media.isEmpty:
            var picks: [LocalKey] = []
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let file = media.randomElement(using: &random)!
                if state.video(linking: file, in: chapter.id) == nil, !picks.contains(LocalKey(file)) { picks.append(await key(file)) }
            }
            guard !picks.isEmpty else { return try await client.renameChapter(await key(chapter.id), to: chapter.title) }
            let anchor = state.videos(in: chapter.id).randomElement(using: &random)
            let placement: LocalPlacement = if let anchor, Bool.random(using: &random) { .after(await key(anchor.id)) } else { .atEnd }
            try await client.linkMedia(picks, to: await key(chapter.id), placement: placement)
        case 40..<60 where !videos.isEmpty:
            let video = videos.randomElement(using: &random)!
            try await client.moveVideo(await key(video.id), to: await key(chapter.id), placement: Bool.random(using: &random) ? .atStart : .atEnd)
        case 60..<80 where !videos.isEmpty:
            let video = videos.randomElement(using: &random)!
            try await client.renameVideo(await key(video.id), to: "\(video.title.split(separator: " · ").first ?? "") · \(name)")
        case 80..<95 where !videos.isEmpty:
            try await client.unlinkVideo(await key(videos.randomElement(using: &random)!.id))
        default:
            try await client.renameChapter(await key(chapter.id), to: "\(chapter.title.split(separator: " · ").first ?? "") · \(name)")
        }
    }
}

struct Durations: Sendable {
    var values: [Duration] = []
}

/// The live progress line.
actor Progress {
    let total: Int
    private var done = 0
    private(set) var refusedLocally = 0
    private let isTerminal = isatty(STDOUT_FILENO) != 0
    private var lastLine = ContinuousClock.now

    init(total: Int) { self.total = total }

    func edited() { done += 1 }
    func refused() { refusedLocally += 1; done += 1 }

    func show(_ instructors: [Instructor], final: Bool = false, extra: String = "") async {
        var acks = 0, rejections = 0, notes = 0, pending = 0
        var seq: CourseSeq = 0
        for instructor in instructors {
            let stats = await instructor.client.stats
            acks += stats.acks
            rejections += stats.rejections
            notes += stats.resolutionNotes
            pending += await instructor.client.pendingBatches.count
            seq = max(seq, await instructor.client.cursor)
        }
        let line = "edits \(done)\(total > 0 ? "/\(total)" : "") · acked batches \(acks) · rejected \(rejections) · resolved \(notes) · pending \(pending) · server seq \(seq)\(extra)"
        if isTerminal {
            FileHandle.standardOutput.write(Data("\r\u{1B}[2K\(line)\(final ? "\n" : "")".utf8))
        } else if final || ContinuousClock.now - lastLine >= .seconds(1) {
            lastLine = ContinuousClock.now
            say(line)
        }
    }
}
