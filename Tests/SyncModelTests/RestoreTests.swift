import Foundation
import SyncModel
import Testing

/// Restore as intent (``CourseState/restore(to:mintTemp:)``), for random courses and random
/// histories: the ops, committed as one batch onto the course as it is now, give the course as it
/// was (chapters in order with their titles, each chapter's videos in order with media and
/// title), keep the IDs of every row that survived, and leave the library a superset.
@Suite struct RestoreTests {
    @Test func restoringGivesTheEarlierCourseBack() throws {
        var restored = 0, largest = 0, kinds = Set<String>()
        for index in 0..<1_000 {
            var workload = try Workload(seed: 0x5E57 &+ UInt64(index))
            for _ in 0..<Int.random(in: 0...3, using: &workload.rng) { _ = workload.submitAndCheck(workload.randomBatch()) }
            let earlier = workload.fixture.state
            for _ in 0..<Int.random(in: 1...8, using: &workload.rng) { _ = workload.submitAndCheck(workload.randomBatch()) }
            let now = workload.fixture.state
            let ops = now.restore(to: earlier, mintTemp: { workload.fixture.makeTemp() })
            guard !ops.isEmpty else {
                #expect(InverseTests.Shape(now).chapters == InverseTests.Shape(earlier).chapters, "case \(index): no ops, yet the courses differ")
                continue
            }
            for op in ops { kinds.insert(op.kind) }
            largest = max(largest, ops.count)
            switch workload.fixture.submit(workload.fixture.batch(Fixture.alice, ops)) {
            case .success(let result):
                let after = result.state
                #expect(InverseTests.Shape(after).chapters == InverseTests.Shape(earlier).chapters,
                        "case \(index)\n  earlier: \(InverseTests.Shape(earlier))\n  now: \(InverseTests.Shape(now))\n  restored: \(InverseTests.Shape(after))\n  ops: \(ops)")
                #expect(Set(after.media.keys).isSuperset(of: earlier.media.keys))
                for id in Set(earlier.chapters.keys).intersection(now.chapters.keys) { #expect(after.chapters[id] != nil, "case \(index): chapter \(id) lost its ID") }
                for id in Set(earlier.videos.keys).intersection(now.videos.keys) { #expect(after.videos[id] != nil, "case \(index): video \(id) lost its ID") }
                #expect(result.commit.ack.notes.isEmpty, "case \(index): a restore needs no conflict resolution: \(result.commit.ack.notes)")
                #expect(after.restore(to: after, mintTemp: { workload.fixture.makeTemp() }).isEmpty, "case \(index): a course restored to itself")
                let again = after.restore(to: earlier, mintTemp: { workload.fixture.makeTemp() })
                // Restoring again changes only what concerns chapters made again (matched by ID, they
                // are made once more); every video and chapter that survived is left alone.
                #expect(again.allSatisfy { op in
                    if case .createChapter = op { return true }
                    if case .deleteChapter = op { return true }
                    return op.references.contains { if case .temp = $0 { true } else { false } }
                }, "case \(index): \(again)")
                if Set(earlier.chapters.keys).isSubset(of: now.chapters.keys) { #expect(again.isEmpty, "case \(index): \(again)") }
                restored += 1
            case .failure(let rejection):
                Issue.record("case \(index): the restore was rejected: \(rejection)\n  ops: \(ops)")
            }
        }
        #expect(restored > 700, "\(restored)")
        #expect(kinds.isSuperset(of: ["createChapter", "renameChapter", "moveChapter", "deleteChapter", "linkMedia", "moveVideo", "renameVideo", "unlinkVideo"]),
                "\(kinds)")
        print("restored \(restored) histories; the largest restore took \(largest) ops")
    }

    /// Two videos of one media file that swapped chapters wait on each other (a chapter holds a
    /// media file once): one is unlinked and linked again, and the restore goes through.
    @Test func videosThatSwappedChaptersAreRestored() throws {
        var fixture = try Fixture(chapters: 2, media: 1)
        let chapters = fixture.state.orderedChapters.map(\.id)
        let media = try #require(fixture.state.media.keys.first)
        let (v1, v2) = (fixture.makeTemp(), fixture.makeTemp())
        _ = try fixture.submit(fixture.batch(Fixture.alice, [
            .linkMedia(chapter: .id(chapters[0]), items: [LinkItem(temp: v1, media: .id(media), title: "first")], placement: .atEnd),
            .linkMedia(chapter: .id(chapters[1]), items: [LinkItem(temp: v2, media: .id(media), title: "second")], placement: .atEnd),
        ])).get()
        let earlier = fixture.state
        let (id1, id2) = (fixture.temps[Fixture.alice]![v1]!, fixture.temps[Fixture.alice]![v2]!)
        // Swap them: the first out of its chapter (unlinked), the second across, the first back in the other.
        let v3 = fixture.makeTemp()
        _ = try fixture.submit(fixture.batch(Fixture.bob, [
            .unlinkVideo(.id(id1)),
            .moveVideo(.id(id2), toChapter: .id(chapters[0]), placement: .atEnd),
            .linkMedia(chapter: .id(chapters[1]), items: [LinkItem(temp: v3, media: .id(media), title: "first")], placement: .atEnd),
        ])).get()
        // Now: chapter 0 holds "second" (id2), chapter 1 a new "first". Moving id2 back to chapter 1
        // waits for the new video to leave; it is not in the earlier course, so it is unlinked first.
        let ops = fixture.state.restore(to: earlier, mintTemp: { fixture.makeTemp() })
        let restored = try fixture.submit(fixture.batch(Fixture.alice, ops)).get().state
        #expect(InverseTests.Shape(restored).chapters == InverseTests.Shape(earlier).chapters)
        #expect(restored.videos[id2]?.chapterID == chapters[1], "the surviving video moved back, keeping its ID")
        _ = id1

        // A true cycle: the two videos of one file swapped chapters (through a third): each
        // must leave before the other can come, so one is linked again under a new ID.
        var cycle = try Fixture(chapters: 3, media: 1)
        let (x, y) = (cycle.state.orderedChapters.map(\.id), try #require(cycle.state.media.keys.first))
        let (a, b) = (cycle.makeTemp(), cycle.makeTemp())
        _ = try cycle.submit(cycle.batch(Fixture.alice, [
            .linkMedia(chapter: .id(x[0]), items: [LinkItem(temp: a, media: .id(y), title: "a")], placement: .atEnd),
            .linkMedia(chapter: .id(x[1]), items: [LinkItem(temp: b, media: .id(y), title: "b")], placement: .atEnd),
        ])).get()
        let before = cycle.state
        let (idA, idB) = (cycle.temps[Fixture.alice]![a]!, cycle.temps[Fixture.alice]![b]!)
        _ = try cycle.submit(cycle.batch(Fixture.bob, [
            .moveVideo(.id(idA), toChapter: .id(x[2]), placement: .atEnd),
            .moveVideo(.id(idB), toChapter: .id(x[0]), placement: .atEnd),
            .moveVideo(.id(idA), toChapter: .id(x[1]), placement: .atEnd),
        ])).get()
        let back = cycle.state.restore(to: before, mintTemp: { cycle.makeTemp() })
        #expect(back.contains { if case .unlinkVideo = $0 { true } else { false } }, "the cycle is broken by relinking one: \(back)")
        let result = try cycle.submit(cycle.batch(Fixture.alice, back)).get().state
        #expect(InverseTests.Shape(result).chapters == InverseTests.Shape(before).chapters)
        #expect(result.videos[idA] != nil || result.videos[idB] != nil, "one of the two keeps its ID")
    }

}
