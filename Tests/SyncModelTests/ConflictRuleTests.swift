import SyncModel
import Testing

/// One test per rule of the conflict table (README "Conflict rules", protocol/README.md §7.3),
/// named after the rule. "Concurrent" batches
/// are made against the same seq and then resolved in server commit order.
@Suite("Conflict rules")
struct ConflictRuleTests {
    @Test func concurrentAppendsToOneChapterAreAllKeptInServerCommitOrder() throws {
        var f = try Fixture(chapters: 1, media: 8, videos: 2)
        let chapter = f.chapter(0).id
        let aliceLinks = f.links([2, 3, 4], title: "alice")
        let bobLinks = f.links([5, 6, 7], title: "bob")
        // Both batches are made at the same seq; the server commits Alice's first.
        let aliceBatch = f.batch(Fixture.alice, [.linkMedia(chapter: .id(chapter), items: aliceLinks, placement: .atEnd)])
        let bobBatch = f.batch(Fixture.bob, [.linkMedia(chapter: .id(chapter), items: bobLinks, placement: .atEnd)])
        #expect(aliceBatch.baseSeq == bobBatch.baseSeq)
        let aliceCommit = try f.submit(aliceBatch).get().commit
        let bobCommit = try f.submit(bobBatch).get().commit

        #expect(f.titles(inChapter: 0) == ["Media 0", "Media 1", "alice2", "alice3", "alice4", "bob5", "bob6", "bob7"])
        #expect(f.videos(inChapter: 0).map(\.position) == Array(0..<8))
        #expect(bobCommit.seq == aliceCommit.seq + 1)
        #expect(aliceCommit.ack.notes.isEmpty && bobCommit.ack.notes.isEmpty)
    }

    @Test func anchorMovedMeanwhileIsPlacedRelativeToItsCurrentPosition() throws {
        var f = try Fixture(chapters: 1, media: 6, videos: 4)
        let anchor = f.videos(inChapter: 0)[3]  // "Media 3", last
        let link = f.links([5], title: "new")
        let aliceBatch = f.batch(Fixture.alice, [.linkMedia(chapter: .id(f.chapter(0).id), items: link, placement: .after(.id(anchor.id)))])
        // Meanwhile Bob moves the anchor to the start.
        try f.accept(Fixture.bob, [.moveVideo(.id(anchor.id), toChapter: .id(f.chapter(0).id), placement: .atStart)])
        let commit = try f.submit(aliceBatch).get().commit

        #expect(f.titles(inChapter: 0) == ["Media 3", "new5", "Media 0", "Media 1", "Media 2"])
        #expect(commit.ack.notes.isEmpty)
    }

    @Test func anchorMovedToAnotherChapterMeanwhileCountsAsMissing() throws {
        var f = try Fixture(chapters: 2, media: 6)
        try f.accept(Fixture.setup, [.linkMedia(chapter: .id(f.chapter(0).id), items: f.links([0, 1], title: "Media "), placement: .atEnd)])
        let anchor = f.videos(inChapter: 0)[0]
        let link = f.links([4], title: "new")
        let aliceBatch = f.batch(Fixture.alice, [.linkMedia(chapter: .id(f.chapter(0).id), items: link, placement: .before(.id(anchor.id)))])
        try f.accept(Fixture.bob, [.moveVideo(.id(anchor.id), toChapter: .id(f.chapter(1).id), placement: .atEnd)])
        let commit = try f.submit(aliceBatch).get().commit

        #expect(f.titles(inChapter: 0) == ["Media 1", "new4"])
        #expect(commit.ack.notes == [.anchorMissing(opIndex: 0, anchor: .id(anchor.id))])
    }

    @Test func anchorDeletedMeanwhilePlacesAtEndWithAnchorMissingNote() throws {
        var f = try Fixture(chapters: 3, media: 6, videos: 3)
        let videoAnchor = f.videos(inChapter: 0)[0]
        let chapterAnchor = f.chapter(1)
        let chapterTemp = f.makeTemp()
        let link = f.links([5], title: "new")
        let aliceBatch = f.batch(Fixture.alice, [
            .linkMedia(chapter: .id(f.chapter(0).id), items: link, placement: .after(.id(videoAnchor.id))),
            .createChapter(temp: chapterTemp, title: "Intro", placement: .before(.id(chapterAnchor.id))),
        ])
        try f.accept(Fixture.bob, [.unlinkVideo(.id(videoAnchor.id)), .deleteChapter(.id(chapterAnchor.id))])
        let commit = try f.submit(aliceBatch).get().commit

        #expect(f.titles(inChapter: 0) == ["Media 1", "Media 2", "new5"])
        #expect(f.state.orderedChapters.map(\.title) == ["Chapter 0", "Chapter 2", "Intro"])
        #expect(commit.ack.notes == [
            .anchorMissing(opIndex: 0, anchor: .id(videoAnchor.id)),
            .anchorMissing(opIndex: 1, anchor: .id(chapterAnchor.id)),
        ])
    }

    @Test func sameMediaLinkedTwiceByDifferentClientsMergesIntoOneVideo() throws {
        var f = try Fixture(chapters: 1, media: 4)
        let chapter = f.chapter(0).id
        let media = f.media(2).id
        let aliceTemp = f.makeTemp()
        let bobTemp = f.makeTemp()
        let aliceBatch = f.batch(Fixture.alice, [.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: aliceTemp, media: .id(media), title: "Alice's")], placement: .atEnd)])
        let bobBatch = f.batch(Fixture.bob, [.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: bobTemp, media: .id(media), title: "Bob's")], placement: .atStart)])
        let aliceCommit = try f.submit(aliceBatch).get().commit
        let bobCommit = try f.submit(bobBatch).get().commit

        let existing = try #require(aliceCommit.ack.idMap[aliceTemp])
        #expect(f.titles(inChapter: 0) == ["Alice's"])
        #expect(bobCommit.ack.idMap == [bobTemp: existing])
        #expect(bobCommit.ack.notes == [.merged(opIndex: 0, temp: bobTemp, into: existing)])
        #expect(bobCommit.diff.changes.videos.isEmpty)
    }

    @Test func sameMediaLinkedTwiceByOneClientMergesIntoOneVideo() throws {
        var f = try Fixture(chapters: 1, media: 4)
        let media = f.media(1).id
        let first = f.makeTemp()
        let second = f.makeTemp()
        let third = f.makeTemp()
        let commit = try f.accept(Fixture.alice, [
            .linkMedia(chapter: .id(f.chapter(0).id), items: [LinkItem(temp: first, media: .id(media)), LinkItem(temp: second, media: .id(media))], placement: .atEnd),
            .linkMedia(chapter: .id(f.chapter(0).id), items: [LinkItem(temp: third, media: .id(media))], placement: .atStart),
        ])
        let video = try #require(commit.ack.idMap[first])
        #expect(f.videos(inChapter: 0).map(\.id) == [video])
        #expect(commit.ack.idMap == [first: video, second: video, third: video])
        #expect(commit.ack.notes == [.merged(opIndex: 0, temp: second, into: video), .merged(opIndex: 1, temp: third, into: video)])
    }

    @Test func twoMovesOfTheSameVideoLastCommitWins() throws {
        var f = try Fixture(chapters: 3, media: 4)
        try f.accept(Fixture.setup, [.linkMedia(chapter: .id(f.chapter(0).id), items: f.links([0, 1], title: "v"), placement: .atEnd)])
        try f.accept(Fixture.setup, [.linkMedia(chapter: .id(f.chapter(2).id), items: f.links([2], title: "w"), placement: .atEnd)])
        let video = f.videos(inChapter: 0)[0]
        let aliceBatch = f.batch(Fixture.alice, [.moveVideo(.id(video.id), toChapter: .id(f.chapter(1).id), placement: .atStart)])
        let bobBatch = f.batch(Fixture.bob, [.moveVideo(.id(video.id), toChapter: .id(f.chapter(2).id), placement: .atStart)])
        _ = try f.submit(aliceBatch).get()
        #expect(f.titles(inChapter: 1) == ["v0"])
        _ = try f.submit(bobBatch).get()

        #expect(f.titles(inChapter: 0) == ["v1"])
        #expect(f.titles(inChapter: 1) == [])
        #expect(f.titles(inChapter: 2) == ["v0", "w2"])
        #expect(f.state.videos[video.id]?.chapterID == f.chapter(2).id)
    }

    @Test func twoMovesOfTheSameChapterLastCommitWins() throws {
        var f = try Fixture(chapters: 4)
        let moved = f.chapter(1)
        let aliceBatch = f.batch(Fixture.alice, [.moveChapter(.id(moved.id), placement: .atStart)])
        let bobBatch = f.batch(Fixture.bob, [.moveChapter(.id(moved.id), placement: .atEnd)])
        _ = try f.submit(aliceBatch).get()
        _ = try f.submit(bobBatch).get()

        #expect(f.state.orderedChapters.map(\.title) == ["Chapter 0", "Chapter 2", "Chapter 3", "Chapter 1"])
    }

    @Test func twoRenamesOfTheSameRowLastCommitWins() throws {
        var f = try Fixture(chapters: 1, media: 2, videos: 1)
        let chapter = f.chapter(0).id
        let video = f.videos(inChapter: 0)[0].id
        let aliceBatch = f.batch(Fixture.alice, [.renameChapter(.id(chapter), title: "Alice's chapter"), .renameVideo(.id(video), title: "Alice's video")])
        let bobBatch = f.batch(Fixture.bob, [.renameChapter(.id(chapter), title: "Bob's chapter"), .renameVideo(.id(video), title: "Bob's video")])
        _ = try f.submit(aliceBatch).get()
        _ = try f.submit(bobBatch).get()

        #expect(f.state.chapters[chapter]?.title == "Bob's chapter")
        #expect(f.state.videos[video]?.title == "Bob's video")
    }

    @Test func opOnRowDeletedMeanwhileRejectsWholeBatchWithTargetDeleted() throws {
        var f = try Fixture(chapters: 2, media: 4, videos: 2)
        let doomed = f.chapter(1)
        let survivor = f.chapter(0)
        let aliceBatch = f.batch(Fixture.alice, [
            .renameChapter(.id(survivor.id), title: "Renamed"),
            .linkMedia(chapter: .id(survivor.id), items: f.links([3], title: "x"), placement: .atEnd),
            .renameChapter(.id(doomed.id), title: "Too late"),
        ])
        try f.accept(Fixture.bob, [.deleteChapter(.id(doomed.id))])
        let before = f.state
        let rejection = try #require(throws: Rejection.self) { try f.submit(aliceBatch).get() }

        #expect(rejection.code == .targetDeleted)
        #expect(rejection.opIndex == 2)
        // Nothing half-applied: the first two ops left no trace.
        #expect(f.state == before)
        #expect(f.temps[Fixture.alice] == nil)
    }

    @Test func everyOpKindOnADeletedRowIsRejectedWithTargetDeleted() throws {
        var f = try Fixture(chapters: 2, media: 4, videos: 2)
        let chapter = f.chapter(0)
        let video = f.videos(inChapter: 0)[0]
        let other = f.chapter(1).id
        try f.accept(Fixture.bob, [.deleteChapter(.id(chapter.id))])
        let ops: [SyncModel.Operation] = [
            .renameChapter(.id(chapter.id), title: "x"),
            .moveChapter(.id(chapter.id), placement: .atStart),
            .deleteChapter(.id(chapter.id)),
            .linkMedia(chapter: .id(chapter.id), items: f.links([3], title: "x"), placement: .atEnd),
            .moveVideo(.id(video.id), toChapter: .id(other), placement: .atEnd),
            .renameVideo(.id(video.id), title: "x"),
            .unlinkVideo(.id(video.id)),
        ]
        for op in ops {
            let rejection = try f.reject(Fixture.alice, [op])
            #expect(rejection.code == .targetDeleted, "\(op)")
            #expect(rejection.opIndex == 0)
        }
    }

    @Test func laterBatchDependingOnARejectedBatchsTempIDsIsRejectedToo() throws {
        var f = try Fixture(chapters: 2, media: 4)
        let doomed = f.chapter(1)
        let newChapter = f.makeTemp()
        let newVideo = f.makeTemp()
        // Alice's pending batches: 1 renames the doomed chapter and creates a chapter; 2 links into
        // that new chapter; 3 is independent.
        let first = f.batch(Fixture.alice, [
            .createChapter(temp: newChapter, title: "New", placement: .atEnd),
            .renameChapter(.id(doomed.id), title: "x"),
        ])
        let second = f.batch(Fixture.alice, [.linkMedia(chapter: .temp(newChapter), items: [LinkItem(temp: newVideo, media: .id(f.media(0).id))], placement: .atEnd)])
        let third = f.batch(Fixture.alice, [.renameChapter(.id(f.chapter(0).id), title: "Still fine")])
        try f.accept(Fixture.bob, [.deleteChapter(.id(doomed.id))])

        // The server rejects the first, then the second for its unknown temp ID.
        let firstRejection = try #require(throws: Rejection.self) { try f.submit(first).get() }
        #expect(firstRejection.code == .targetDeleted && firstRejection.opIndex == 1)
        let secondRejection = try #require(throws: Rejection.self) { try f.submit(second).get() }
        #expect(secondRejection.code == .unknownTempID && secondRejection.opIndex == 0)
        _ = try f.submit(third).get()
        #expect(f.chapter(0).title == "Still fine")
    }

    @Test func replayDropsARejectedBatchAndEveryBatchDependingOnItsTempIDs() throws {
        var f = try Fixture(chapters: 2, media: 4)
        let confirmedBefore = f.state
        let doomed = f.chapter(1)
        let newChapter = f.makeTemp()
        let pending = [
            f.batch(Fixture.alice, [.createChapter(temp: newChapter, title: "New", placement: .atEnd), .renameChapter(.id(doomed.id), title: "x")]),
            f.batch(Fixture.alice, [.linkMedia(chapter: .temp(newChapter), items: [LinkItem(temp: f.makeTemp(), media: .id(f.media(0).id))], placement: .atEnd)]),
            f.batch(Fixture.alice, [.renameChapter(.id(f.chapter(0).id), title: "Independent")]),
        ]
        // Before Bob's delete arrives, Alice sees all three applied.
        let optimistic = Replay.replay(pending, onto: confirmedBefore, knownTemps: [:])
        #expect(optimistic.rejected.isEmpty)
        #expect(optimistic.visible.chapters[.provisional(newChapter)]?.title == "New")

        // Bob's delete becomes confirmed: the rebase drops batch 1 and its dependant 2, keeps 3.
        try f.accept(Fixture.bob, [.deleteChapter(.id(doomed.id))])
        let rebased = Replay.replay(pending, onto: f.state, knownTemps: [:])
        #expect(rebased.rejected == [pending[0].batchSeq, pending[1].batchSeq])
        #expect(rebased.visible.chapters[.provisional(newChapter)] == nil)
        #expect(rebased.visible.orderedChapters.map(\.title) == ["Independent"])
        // Exactly the state it would be had batches 1 and 2 never been made.
        let without = Replay.replay([pending[2]], onto: f.state, knownTemps: [:])
        #expect(rebased.visible == without.visible)
    }

    @Test func tempIDsFromAnEarlierBatchResolveThroughTheClientsKnownMap() throws {
        var f = try Fixture(chapters: 0, media: 3)
        let chapterTemp = f.makeTemp()
        let first = try f.accept(Fixture.alice, [.createChapter(temp: chapterTemp, title: "Later", placement: .atEnd)])
        let videoTemp = f.makeTemp()
        let second = try f.accept(Fixture.alice, [.linkMedia(chapter: .temp(chapterTemp), items: [LinkItem(temp: videoTemp, media: .id(f.media(0).id))], placement: .atEnd)])
        let chapterID = try #require(first.ack.idMap[chapterTemp])
        let videoID = try #require(second.ack.idMap[videoTemp])
        #expect(f.state.videos[videoID]?.chapterID == chapterID)
        // Another client's temp IDs are not Alice's: Bob cannot name Alice's temp.
        let rejection = try f.reject(Fixture.bob, [.renameChapter(.temp(chapterTemp), title: "x")])
        #expect(rejection.code == .unknownTempID)
    }

    @Test func movingAVideoIntoAChapterThatHoldsTheSameMediaIsRejected() throws {
        var f = try Fixture(chapters: 2, media: 3, videos: 2)
        let video = f.videos(inChapter: 0)[0]
        let rejection = try f.reject(Fixture.alice, [.moveVideo(.id(video.id), toChapter: .id(f.chapter(1).id), placement: .atEnd)])
        #expect(rejection.code == .mediaAlreadyInChapter)
    }

    @Test func placingARowRelativeToItselfIsRejected() throws {
        var f = try Fixture(chapters: 2, media: 3, videos: 2)
        let video = f.videos(inChapter: 0)[0]
        let chapter = f.chapter(0)
        #expect(try f.reject(Fixture.alice, [.moveVideo(.id(video.id), toChapter: .id(chapter.id), placement: .after(.id(video.id)))]).code == .invalidPlacement)
        #expect(try f.reject(Fixture.alice, [.moveChapter(.id(chapter.id), placement: .before(.id(chapter.id)))]).code == .invalidPlacement)
    }

    @Test func reusingATempIDIsRejected() throws {
        var f = try Fixture(chapters: 0, media: 1)
        let temp = f.makeTemp()
        try f.accept(Fixture.alice, [.createChapter(temp: temp, title: "A", placement: .atEnd)])
        #expect(try f.reject(Fixture.alice, [.createChapter(temp: temp, title: "B", placement: .atEnd)]).code == .duplicateTempID)
        let fresh = f.makeTemp()
        let inOneBatch = try f.reject(Fixture.alice, [
            .createChapter(temp: fresh, title: "B", placement: .atEnd),
            .createChapter(temp: fresh, title: "C", placement: .atEnd),
        ])
        #expect(inOneBatch.code == .duplicateTempID && inOneBatch.opIndex == 1)
    }

    @Test func deletingAChapterListsItsVideosAmongTheDeletes() throws {
        var f = try Fixture(chapters: 2, media: 3, videos: 3)
        let chapter = f.chapter(0)
        let videoIDs = f.videos(inChapter: 0).map(\.id).sorted()
        let commit = try f.accept(Fixture.alice, [.deleteChapter(.id(chapter.id))])
        #expect(commit.diff.changes.deletedChapters == [chapter.id])
        #expect(commit.diff.changes.deletedVideos == videoIDs)
        #expect(f.chapter(0).position == 0)
        #expect(commit.diff.changes.chapters.map(\.title) == ["Chapter 1"])
    }

    @Test func eachCommitBumpsTheSeqAndTheVersionOfEveryChapterItChanged() throws {
        var f = try Fixture(chapters: 3, media: 3, videos: 1)
        let versions = f.state.orderedChapters.map(\.version)
        let seq = f.state.seq
        let commit = try f.accept(Fixture.alice, [
            .renameVideo(.id(f.videos(inChapter: 1)[0].id), title: "renamed"),
            .renameVideo(.id(f.videos(inChapter: 1)[0].id), title: "renamed twice"),
        ])
        #expect(commit.seq == seq + 1 && f.state.seq == seq + 1)
        #expect(f.state.orderedChapters.map(\.version) == [versions[0], versions[1] + 1, versions[2]])
        #expect(commit.diff.changes.chapterVersions == [ChapterVersion(chapterID: f.chapter(1).id, version: versions[1] + 1)])
        // The chapter row itself did not change, so it is not upserted.
        #expect(commit.diff.changes.chapters.isEmpty)
    }

    @Test func theCommitCarriesTheClientAndBatchSeqForExactlyOnce() throws {
        var f = try Fixture(chapters: 1, media: 1)
        _ = f.batch(Fixture.alice, [])  // burn batch seq 1
        let commit = try f.accept(Fixture.alice, [.renameChapter(.id(f.chapter(0).id), title: "x")])
        #expect(commit.clientID == Fixture.alice)
        #expect(commit.batchSeq == 2 && commit.ack.batchSeq == 2)
        #expect(commit.diff.origin == BatchOrigin(clientID: Fixture.alice, batchSeq: 2))
    }
}
