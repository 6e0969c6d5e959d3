@testable import SyncClient
import SyncModel
import SyncWire
import Testing

/// Undo and redo of the replica's own edits, sans-I/O against the model server: the undo is sent
/// as a new batch, the server resolves it like any other, others' edits in between are kept.
@Suite struct UndoTests {
    let tests = ClientCoreTests()

    /// The chapters and videos the visible state shows, by title.
    func outline(_ state: CourseState) -> [String] {
        state.orderedChapters.map { chapter in "\(chapter.title): " + state.videos(in: chapter.id).map(\.title).joined(separator: ",") }
    }

    @Test func anEditIsUndoneAndRedoneThroughTheServer() throws {
        var (server, core, chapter, media) = tests.setUp()
        let before = outline(core.visible)
        try core.edit(.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: core.mintTemp(), media: .id(media[0])),
                                                                LinkItem(temp: core.mintTemp(), media: .id(media[1]))], placement: .atEnd))
        core.seal()
        tests.exchange(&core, &server)
        try core.edit(.renameChapter(.id(chapter), title: "Renamed"))
        core.seal()
        tests.exchange(&core, &server)
        let edited = outline(core.visible)
        #expect(edited == ["Renamed: a,b"])

        #expect(try core.undo(now: .zero))  // the rename
        #expect(outline(core.visible) == ["Chapter: a,b"], "drawn at once")
        tests.exchange(&core, &server)
        #expect(outline(server.state) == ["Chapter: a,b"])
        #expect(try core.undo(now: .zero))  // the links
        tests.exchange(&core, &server)
        #expect(outline(server.state) == before && outline(core.visible) == before)
        #expect(!core.canUndo)
        #expect(try core.undo(now: .zero) == false)

        #expect(try core.redo(now: .zero))  // the links again
        #expect(try core.redo(now: .zero))  // the rename again
        tests.exchange(&core, &server)
        #expect(outline(server.state) == edited && outline(core.visible) == edited)
        #expect(!core.canRedo && core.canUndo)
    }

    /// Ctrl+Z at once after an edit, while it is still open for coalescing: that edit is undone.
    @Test func anEditStillOpenIsTheOneUndone() throws {
        var (server, core, chapter, _) = tests.setUp()
        try core.edit(.renameChapter(.id(chapter), title: "Open"))
        #expect(core.canUndo)
        #expect(try core.undo(now: .zero))
        tests.exchange(&core, &server)
        #expect(outline(server.state) == ["Chapter: "] && outline(core.visible) == ["Chapter: "])
    }

    @Test func anUndoKeepsOthersEditsAndANewEditEndsTheRedos() throws {
        var (server, core, chapter, media) = tests.setUp()
        try core.edit(.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: core.mintTemp(), media: .id(media[0]))], placement: .atEnd))
        core.seal()
        tests.exchange(&core, &server)
        // Another client links after ours and renames the chapter.
        let other = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0009))
        let (answer, diff) = server.push(Batch(clientID: other, courseID: core.courseID, batchSeq: 1, baseSeq: server.state.seq, ops: [
            .linkMedia(chapter: .id(chapter), items: [LinkItem(temp: TempID(1)!, media: .id(media[2]))], placement: .atEnd),
            .renameChapter(.id(chapter), title: "Theirs"),
        ]))
        guard case .ack = answer, let diff else { Issue.record("the other client's batch was refused"); return }
        core.received(.diff(diff))
        #expect(outline(core.visible) == ["Theirs: a,c"])
        #expect(try core.undo(now: .zero))
        tests.exchange(&core, &server)
        #expect(outline(server.state) == ["Theirs: c"], "only our link is taken back")
        #expect(core.canRedo)
        try core.edit(.renameChapter(.id(chapter), title: "Mine"))
        core.seal()
        #expect(!core.canRedo, "a new edit ends what could be redone")
    }

    @Test func anUndoOfARowDeletedMeanwhileIsRefusedAndChangesNothing() throws {
        var (server, core, chapter, _) = tests.setUp()
        try core.edit(.renameChapter(.id(chapter), title: "Mine"))
        core.seal()
        tests.exchange(&core, &server)
        let other = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0009))
        let (_, diff) = server.push(Batch(clientID: other, courseID: core.courseID, batchSeq: 1, baseSeq: server.state.seq, ops: [.deleteChapter(.id(chapter))]))
        core.received(.diff(try #require(diff)))
        let shown = core.visible
        #expect(throws: EditError.self) { try core.undo(now: .zero) }
        #expect(core.visible == shown && core.pending.isEmpty)
    }

    @Test func aRolledBackBatchLeavesNothingToUndo() throws {
        var (server, core, chapter, _) = tests.setUp()
        try core.edit(.renameChapter(.id(chapter), title: "Mine"))
        core.seal()
        // The chapter is deleted before our rename reaches the server: it is rejected and rolled back.
        let other = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0009))
        _ = server.push(Batch(clientID: other, courseID: core.courseID, batchSeq: 1, baseSeq: server.state.seq, ops: [.deleteChapter(.id(chapter))]))
        tests.exchange(&core, &server)
        #expect(!core.canUndo)
    }
}
