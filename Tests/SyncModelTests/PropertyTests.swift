import Foundation
import SyncModel
import Testing

/// Random states and random batches from several clients, every property checked after every
/// resolution. The base seed is printed; `COURSESYNC_SEED=<base>` replays a run and
/// `COURSESYNC_CASES=<n>` changes the number of cases.
@Suite("Resolver properties")
struct PropertyTests {
    static let environment = ProcessInfo.processInfo.environment
    static let baseSeed = environment["COURSESYNC_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64(UInt32.max))
    static let cases = environment["COURSESYNC_CASES"].flatMap(Int.init) ?? 2_500
    static let batchesPerCase = 12

    @Test func everyResolutionKeepsEveryInvariant() throws {
        print("property tests: \(Self.cases) cases × \(Self.batchesPerCase) batches, base seed \(Self.baseSeed) (COURSESYNC_SEED=\(Self.baseSeed) to replay)")
        var accepted = 0
        var rejected = 0
        var codes: [ErrorCode: Int] = [:]
        var notes = 0
        for index in 0..<Self.cases {
            let seed = Self.baseSeed &+ UInt64(index)
            var workload = try Workload(seed: seed)
            for _ in 0..<Self.batchesPerCase {
                let batch = workload.randomBatch()
                let problems = workload.submitAndCheck(batch)
                if !problems.isEmpty {
                    Issue.record("""
                        case \(index) (seed \(seed)) broke \(problems.count) properties with batch \(batch.batchSeq) of client \(batch.clientID):
                        \(problems.joined(separator: "\n"))
                        ops: \(batch.ops)
                        replay: COURSESYNC_SEED=\(Self.baseSeed) swift test --filter PropertyTests
                        """)
                    return
                }
            }
            accepted += workload.accepted
            rejected += workload.rejected
            codes.merge(workload.rejectionCodes, uniquingKeysWith: +)
            notes += workload.notes
        }
        print("property tests: \(accepted) batches accepted, \(rejected) rejected (\(codes.sorted { $0.value > $1.value }.map { "\($0.key.rawValue) \($0.value)" }.joined(separator: ", "))), \(notes) resolution notes")
        // The generator must exercise both outcomes and the interesting codes, or the properties prove little.
        #expect(accepted > Self.cases * 4)
        #expect(rejected > Self.cases / 2)
        #expect(Set(codes.keys).isSuperset(of: [.targetDeleted, .unknownTempID, .invalidTitle, .invalidPlacement]))
        #expect(notes > Self.cases / 4)
    }
}

/// Three clients sending random batches to one course.
struct Workload {
    var rng: SplitMix64
    var fixture: Fixture
    let clients = [Fixture.alice, Fixture.bob, Fixture.carol]
    /// IDs that existed once and were deleted, to aim stale references at.
    var graveyard: [EntityID] = []
    var accepted = 0
    var rejected = 0
    var notes = 0
    var rejectionCodes: [ErrorCode: Int] = [:]

    init(seed: UInt64) throws {
        rng = SplitMix64(seed: seed)
        var setup = SplitMix64(seed: seed ^ 0x5EED)
        fixture = try Fixture(chapters: Int.random(in: 0...4, using: &setup), media: Int.random(in: 2...12, using: &setup),
                              videos: Int.random(in: 0...2, using: &setup))
        fixture.allocator = RandomIDAllocator(SplitMix64(seed: seed ^ 0xA110C))
    }

    // MARK: Generation

    mutating func chance(_ percent: Int) -> Bool { Int.random(in: 0..<100, using: &rng) < percent }

    mutating func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[Int.random(in: 0..<items.count, using: &rng)] }

    mutating func title() -> String {
        if chance(1) { return pick(["", "   ", "bad\u{7}title", String(repeating: "x", count: Limits.maxTitleLength + 1)])! }
        return "t\(Int.random(in: 0..<1000, using: &rng))"
    }

    /// A reference: usually to an existing row from `candidates`, sometimes to one of this batch's
    /// new temps, a deleted row, or a temp ID never created.
    mutating func ref(_ candidates: [EntityID], fresh: [TempID], client: ClientID) -> Ref {
        let roll = Int.random(in: 0..<1000, using: &rng)
        if roll < 80, let temp = pick(fresh) { return .temp(temp) }
        if roll < 120, let known = pick(Array((fixture.temps[client] ?? [:]).keys)) { return .temp(known) }
        if roll < 140, let dead = pick(graveyard) { return .id(dead) }
        if (140..<145).contains(roll) { return .temp(TempID(UInt64.max - UInt64(Int.random(in: 0..<5, using: &rng)))!) }
        if let id = pick(candidates) { return .id(id) }
        return .temp(TempID(UInt64.max)!)
    }

    mutating func placement(_ candidates: [EntityID], fresh: [TempID], client: ClientID) -> Placement {
        let anchors = candidates.isEmpty && fresh.isEmpty ? 2 : 4
        return switch Int.random(in: 0..<anchors, using: &rng) {
        case 0: .atEnd
        case 1: .atStart
        case 2: .after(ref(candidates, fresh: fresh, client: client))
        default: .before(ref(candidates, fresh: fresh, client: client))
        }
    }

    mutating func randomBatch() -> Batch {
        let client = pick(clients)!
        let state = fixture.state
        let chapters = state.chapterOrder
        let videos = Array(state.videos.keys).sorted()
        let media = Array(state.media.keys).sorted()
        var freshChapters: [TempID] = []
        var freshVideos: [TempID] = []
        var freshMedia: [TempID] = []
        var ops: [SyncModel.Operation] = []
        for _ in 0..<Int.random(in: 1...5, using: &rng) {
            var roll = Int.random(in: 0..<100, using: &rng)
            // Aim edits at rows that exist: with no videos (chapters) yet, link (create) instead.
            if roll >= 62 && videos.isEmpty && freshVideos.isEmpty { roll = 40 }
            if (12..<31).contains(roll) && chapters.isEmpty && freshChapters.isEmpty { roll = 0 }
            if (36..<62).contains(roll) && chapters.isEmpty && freshChapters.isEmpty { roll = 0 }
            switch roll {
            case 0..<12:
                let temp = fixture.makeTemp()
                ops.append(.createChapter(temp: temp, title: title(), placement: placement(chapters, fresh: freshChapters, client: client)))
                freshChapters.append(temp)
            case 12..<20:
                ops.append(.renameChapter(ref(chapters, fresh: freshChapters, client: client), title: title()))
            case 20..<28:
                ops.append(.moveChapter(ref(chapters, fresh: freshChapters, client: client), placement: placement(chapters, fresh: freshChapters, client: client)))
            case 28..<31:
                ops.append(.deleteChapter(ref(chapters, fresh: freshChapters, client: client)))
            case 31..<36:
                let temp = fixture.makeTemp()
                let url = chance(5) ? "ftp://nope" : "https://cdn.example.com/\(temp.rawValue).mp4"
                ops.append(.registerMedia(temp: temp, name: title(), cdnURL: url, durationMs: 1_000, byteSize: 2_000))
                freshMedia.append(temp)
            case 36..<62:
                let chapter = ref(chapters, fresh: freshChapters, client: client)
                let at = placement(videos, fresh: freshVideos, client: client)
                var items: [LinkItem] = []
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let temp = fixture.makeTemp()
                    let mediaRef: Ref = chance(10) && !freshMedia.isEmpty ? .temp(pick(freshMedia)!) : (pick(media).map(Ref.id) ?? .temp(temp))
                    items.append(LinkItem(temp: temp, media: mediaRef, title: chance(50) ? title() : nil))
                    freshVideos.append(temp)
                }
                ops.append(.linkMedia(chapter: chapter, items: items, placement: at))
            case 62..<80:
                ops.append(.moveVideo(ref(videos, fresh: freshVideos, client: client), toChapter: ref(chapters, fresh: freshChapters, client: client),
                                      placement: placement(videos, fresh: freshVideos, client: client)))
            case 80..<90:
                ops.append(.renameVideo(ref(videos, fresh: freshVideos, client: client), title: title()))
            default:
                ops.append(.unlinkVideo(ref(videos, fresh: freshVideos, client: client)))
            }
        }
        return fixture.batch(client, ops)
    }

    // MARK: Properties

    /// Submits `batch` as the server would and returns every property it breaks.
    mutating func submitAndCheck(_ batch: Batch) -> [String] {
        let before = fixture.state
        let knownTemps = fixture.temps[batch.clientID] ?? [:]
        // The client's prediction, made with the same resolver and provisional IDs.
        let prediction = Replay.replay([batch], onto: before, knownTemps: knownTemps)
        var problems: [String] = []
        // The same batch applied in place (what clients and group commits do), with the same IDs.
        var inPlace = before
        var allocator = fixture.allocator
        let applied = Resolver.apply(batch, to: &inPlace, knownTemps: knownTemps, allocator: &allocator)

        switch fixture.submit(batch) {
        case .failure(let rejection):
            rejected += 1
            rejectionCodes[rejection.code, default: 0] += 1
            if fixture.state != before { problems.append("a rejected batch changed the state") }
            if prediction.visible != before { problems.append("rolling back the rejected batch does not restore the state exactly") }
            if case .success = applied { problems.append("applied in place, the batch was accepted") }
            if inPlace != before { problems.append("a rejected in-place application left the state changed") }
            if !rejection.code.isBatchRejection { problems.append("rejected with connection code \(rejection.code)") }
            if let opIndex = rejection.opIndex, !batch.ops.indices.contains(opIndex) { problems.append("op index \(opIndex) out of range") }
            // The message may name a row by its provisional ID on the client; code and op index must agree.
            guard case .failure(let predicted)? = prediction.predictions[batch.batchSeq],
                  predicted.code == rejection.code, predicted.opIndex == rejection.opIndex else {
                problems.append("the client predicted \(String(describing: prediction.predictions[batch.batchSeq])), the server rejected: \(rejection)")
                break
            }

        case .success(let resolved):
            accepted += 1
            let commit = resolved.commit
            let after = resolved.state
            notes += commit.ack.notes.count
            problems += after.invariantViolations()
            let created = batch.ops.flatMap(\.createdTemps)
            if Set(commit.ack.idMap.keys) != Set(created) || created.count != commit.ack.idMap.count {
                problems.append("the ID map \(commit.ack.idMap.keys.sorted()) is not exactly the created temps \(created)")
            }
            if commit.clientID != batch.clientID || commit.batchSeq != batch.batchSeq || commit.ack.batchSeq != batch.batchSeq {
                problems.append("the commit does not carry the batch's client and batch seq")
            }
            if commit.seq != before.seq + 1 || after.seq != commit.seq { problems.append("the seq did not advance by one") }
            if before.applying(commit.diff) != after { problems.append("the diff applied to the old state does not give the new state") }
            for (id, chapter) in after.chapters where chapter.version < (before.chapters[id]?.version ?? 1) {
                problems.append("chapter \(id) went back to version \(chapter.version)")
            }
            problems += predictionMismatches(prediction, commit: commit, server: after, batch: batch)
            if case .success(let applied) = applied {
                if applied.commit != commit { problems.append("applied in place, the batch made another commit: \(applied.commit)") }
                if inPlace != after { problems.append("applied in place, the batch left another state") }
                applied.undo.revert(&inPlace)
                if inPlace != before { problems.append("undoing the in-place application did not restore the state exactly") }
            } else {
                problems.append("applied in place, the batch was rejected")
            }
            graveyard += before.chapters.keys.filter { after.chapters[$0] == nil }
            graveyard += before.videos.keys.filter { after.videos[$0] == nil }
        }
        return problems
    }

    /// The client's prediction must equal the server's decision once provisional IDs are swapped
    /// for the real ones of the ack: same outcome, same notes, same rows.
    func predictionMismatches(_ prediction: Replay.Outcome, commit: Commit, server: CourseState, batch: Batch) -> [String] {
        guard case .success(let predicted)? = prediction.predictions[batch.batchSeq] else {
            return ["the client predicted a rejection the server did not make: \(String(describing: prediction.predictions[batch.batchSeq]))"]
        }
        var real: [EntityID: EntityID] = [:]
        for (temp, provisional) in predicted.idMap { real[provisional] = commit.ack.idMap[temp] }
        let swap = { (id: EntityID) in real[id] ?? id }
        let swapRef = { (ref: Ref) in if case .id(let id) = ref { Ref.id(swap(id)) } else { ref } }
        let visible = prediction.visible
        let swapped = CourseState(
            course: visible.course,
            chapters: visible.chapters.values.map { var c = $0; c.id = swap(c.id); return c },
            media: visible.media.values.map { var m = $0; m.id = swap(m.id); return m },
            videos: visible.videos.values.map { var v = $0; v.id = swap(v.id); v.chapterID = swap(v.chapterID); v.mediaFileID = swap(v.mediaFileID); return v })
        var problems: [String] = []
        if swapped != server { problems.append("the client's predicted state differs from the server's") }
        let predictedNotes = predicted.notes.map { note -> ResolutionNote in
            switch note {
            case .anchorMissing(let index, let anchor): .anchorMissing(opIndex: index, anchor: swapRef(anchor))
            case .merged(let index, let temp, let into): .merged(opIndex: index, temp: temp, into: swap(into))
            }
        }
        if predictedNotes != commit.ack.notes { problems.append("predicted notes \(predictedNotes) differ from \(commit.ack.notes)") }
        return problems
    }
}
