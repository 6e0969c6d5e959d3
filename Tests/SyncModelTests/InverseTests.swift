import Foundation
import SyncModel
import Testing

/// Undo as intent (``CourseState/inverse(of:resolve:ref:mintTemp:)``), for random courses and
/// random batches: undoing a batch that nothing touched since restores exactly what it changed
/// (chapters, their order, titles, videos; IDs of re-created rows aside); undoing one after
/// others' random edits changes nothing but what the undo names, and keeps every invariant.
@Suite struct InverseTests {
    /// What a course looks like, IDs of chapters aside (a deleted chapter comes back with a new ID).
    struct Shape: Hashable, CustomStringConvertible {
        var chapters: [String]
        var media: Set<EntityID>

        init(_ state: CourseState) {
            chapters = state.orderedChapters.map { chapter in
                "\(chapter.title): " + state.videos(in: chapter.id).map { "\($0.mediaFileID.low % 10_000)=\($0.title)" }.joined(separator: ", ")
            }
            media = Set(state.media.keys)
        }

        var description: String { chapters.joined(separator: " | ") }
    }

    /// Hands out the IDs a commit gave its temps, so that a batch's ops can be applied one by one.
    struct Replaying: IDAllocator {
        var ids: [TempID: EntityID]
        mutating func allocate(for temp: TempID) -> EntityID { ids[temp]! }
    }

    /// The undo of `batch`, committed as `commit` onto `before`: each op's inverse against the
    /// state just before it (the ops applied one by one with the commit's IDs), last op's first.
    static func undo(of batch: Batch, committed commit: Commit, before: CourseState, knownTemps: [TempID: EntityID],
                     mintTemp: () -> TempID) throws -> [SyncModel.Operation] {
        var state = before
        var known = knownTemps
        var inverses: [Inverse] = []
        for op in batch.ops {
            let resolve: (Ref) -> EntityID? = { ref in
                switch ref {
                case .id(let id): id
                case .temp(let temp): known[temp] ?? commit.ack.idMap[temp]
                }
            }
            let inverse = state.inverse(of: op, resolve: resolve, ref: { .id($0) }, mintTemp: mintTemp)
            inverses.append(try #require(inverse, "\(op)"))
            var allocator = Replaying(ids: commit.ack.idMap)
            let single = Batch(clientID: batch.clientID, courseID: batch.courseID, batchSeq: batch.batchSeq, baseSeq: state.seq, ops: [op])
            _ = try Resolver.apply(single, to: &state, knownTemps: known, allocator: &allocator).get()
            for temp in op.createdTemps { known[temp] = commit.ack.idMap[temp] }
        }
        return Inverse.undo(of: inverses)
    }

    @Test func undoingABatchNothingTouchedSinceRestoresTheCourse() throws {
        var undone = 0, kinds = Set<String>()
        for index in 0..<1_500 {
            var workload = try Workload(seed: 0xD0 &+ UInt64(index))
            for _ in 0..<3 { _ = workload.submitAndCheck(workload.randomBatch()) }  // some history
            let batch = workload.randomBatch()
            let before = workload.fixture.state
            let known = workload.fixture.temps[batch.clientID] ?? [:]
            guard case .success(let resolved) = workload.fixture.submit(batch) else { continue }
            let ops = try Self.undo(of: batch, committed: resolved.commit, before: before, knownTemps: known, mintTemp: { workload.fixture.makeTemp() })
            guard !ops.isEmpty else { continue }  // only media registered: nothing to take back
            for op in batch.ops { kinds.insert(op.kind) }
            switch workload.fixture.submit(workload.fixture.batch(batch.clientID, ops)) {
            case .success(let undo):
                let after = Shape(undo.state), expected = Shape(before)
                #expect(after.chapters == expected.chapters, "case \(index): \(batch.ops)\n  before: \(expected)\n  undone: \(after)")
                #expect(after.media.isSuperset(of: expected.media))
                #expect(undo.state.invariantViolations().isEmpty)
                undone += 1
            case .failure(let rejection):
                Issue.record("case \(index): the undo of \(batch.ops) was rejected: \(rejection); undo ops \(ops)")
            }
        }
        #expect(undone > 500, "too few batches undone to prove much: \(undone)")
        #expect(kinds.isSuperset(of: ["createChapter", "renameChapter", "moveChapter", "deleteChapter", "linkMedia", "moveVideo", "renameVideo", "unlinkVideo"]),
                "\(kinds)")
    }

    /// Others edit between the batch and its undo: the undo is accepted or rejected like any
    /// batch, and what it changes is only what it names (and the positions around them).
    @Test func undoingAfterOthersEditsChangesOnlyWhatItNames() throws {
        var accepted = 0, rejected = 0
        for index in 0..<1_500 {
            var workload = try Workload(seed: 0xE0 &+ UInt64(index))
            let batch = workload.fixture.batch(Fixture.alice, workload.randomBatch().ops)
            let before = workload.fixture.state
            let known = workload.fixture.temps[Fixture.alice] ?? [:]
            guard case .success(let resolved) = workload.fixture.submit(batch) else { continue }
            let ops = try Self.undo(of: batch, committed: resolved.commit, before: before, knownTemps: known, mintTemp: { workload.fixture.makeTemp() })
            guard !ops.isEmpty else { continue }
            for _ in 0..<Int.random(in: 1...4, using: &workload.rng) {
                let other = workload.randomBatch()
                guard other.clientID != Fixture.alice else { continue }
                _ = workload.submitAndCheck(other)
            }
            let pre = workload.fixture.state
            switch workload.fixture.submit(workload.fixture.batch(Fixture.alice, ops)) {
            case .success(let undo):
                accepted += 1
                let post = undo.state
                #expect(post.invariantViolations().isEmpty)
                let temps = workload.fixture.temps[Fixture.alice] ?? [:]
                let named = Set(ops.flatMap(\.references).compactMap { ref -> EntityID? in
                    switch ref {
                    case .id(let id): id
                    case .temp(let temp): temps[temp]
                    }
                })
                // Rows the undo does not name keep their titles and their chapters (a deleted
                // chapter's videos excepted: the undo names the chapter).
                for (id, video) in pre.videos where !named.contains(id) && !named.contains(video.chapterID) {
                    if let now = post.videos[id] { #expect(now.title == video.title && now.chapterID == video.chapterID, "case \(index)") }
                }
                for (id, chapter) in pre.chapters where !named.contains(id) {
                    #expect(post.chapters[id]?.title == chapter.title, "case \(index): chapter \(id)")
                }
            case .failure:
                rejected += 1
            }
        }
        #expect(accepted > 300 && rejected > 0, "accepted \(accepted), rejected \(rejected)")
    }
}
