import SyncModel
import Testing

/// Every named limit at the boundary: at the limit passes, one past it is refused with its code.
@Suite("Validation and limits")
struct LimitTests {
    // MARK: Batch size

    @Test func batchOfMaxOpsPassesAndOneMoreIsTooLarge() throws {
        var f = try Fixture(chapters: 1, media: 1)
        let chapter = f.chapter(0).id
        let atLimit = Array(repeating: SyncModel.Operation.renameChapter(.id(chapter), title: "t"), count: Limits.maxOpsPerBatch)
        try f.accept(Fixture.alice, atLimit)
        let rejection = try f.reject(Fixture.alice, atLimit + [.renameChapter(.id(chapter), title: "t")])
        #expect(rejection.code == .batchTooLarge)
        #expect(rejection.opIndex == Limits.maxOpsPerBatch)
    }

    @Test func linkItemsCountTowardsTheBatchLimit() throws {
        var f = try Fixture(chapters: 1, media: 1)
        let chapter = f.chapter(0).id
        let media = f.media(0).id
        let items = (0..<Limits.maxOpsPerBatch).map { _ in LinkItem(temp: f.makeTemp(), media: .id(media)) }
        // A link of maxOpsPerBatch items is exactly at the limit (they all merge into one video).
        try f.accept(Fixture.alice, [.linkMedia(chapter: .id(chapter), items: items, placement: .atEnd)])
        let more = (0..<Limits.maxOpsPerBatch).map { _ in LinkItem(temp: f.makeTemp(), media: .id(media)) }
        let rejection = try f.reject(Fixture.alice, [.renameChapter(.id(chapter), title: "x"), .linkMedia(chapter: .id(chapter), items: more, placement: .atEnd)])
        #expect(rejection.code == .batchTooLarge && rejection.opIndex == 1)
    }

    @Test func emptyBatchAndEmptyLinkAreRejected() throws {
        var f = try Fixture(chapters: 1, media: 1)
        #expect(try f.reject(Fixture.alice, []).code == .emptyBatch)
        let emptyLink = try f.reject(Fixture.alice, [.linkMedia(chapter: .id(f.chapter(0).id), items: [], placement: .atEnd)])
        #expect(emptyLink.code == .emptyBatch && emptyLink.opIndex == 0)
    }

    // MARK: Titles

    @Test func titleOfMaxLengthPassesAndOneMoreCharacterIsRejected() throws {
        var f = try Fixture(chapters: 1, media: 1)
        let chapter = f.chapter(0).id
        let atLimit = String(repeating: "é", count: Limits.maxTitleLength)
        try f.accept(Fixture.alice, [.renameChapter(.id(chapter), title: atLimit)])
        #expect(f.state.chapters[chapter]?.title == atLimit)
        let rejection = try f.reject(Fixture.alice, [.renameChapter(.id(chapter), title: atLimit + "é")])
        #expect(rejection.code == .invalidTitle && rejection.opIndex == 0)
    }

    @Test func titleBytesAreLimitedBeforeTrimming() {
        let fourByteScalars = String(repeating: "🎬", count: Limits.maxTitleLength)
        #expect(fourByteScalars.utf8.count == Limits.maxTextBytes)
        #expect(Validation.title(fourByteScalars) == .success(fourByteScalars))
        #expect(Validation.title(fourByteScalars + " ") == .failure(.tooManyBytes(Limits.maxTextBytes + 1)))
    }

    @Test func titlesAreTrimmedAndMustNotBeEmpty() {
        #expect(Validation.title("  Intro \n") == .success("Intro"))
        #expect(Validation.title("x") == .success("x"))
        #expect(Validation.title("") == .failure(.empty))
        #expect(Validation.title(" \t\n\u{3000}") == .failure(.empty))
    }

    @Test(arguments: ["a\u{7}b", "line\nbreak", "tab\there", "nul\u{0}", "del\u{7F}"])
    func titlesWithControlCharactersAreRejected(title: String) throws {
        guard case .failure(.controlCharacter) = Validation.title(title) else {
            Issue.record("\(title.debugDescription) was accepted")
            return
        }
        var f = try Fixture(chapters: 1, media: 1)
        let rejection = try f.reject(Fixture.alice, [.renameChapter(.id(f.chapter(0).id), title: "fine"), .renameChapter(.id(f.chapter(0).id), title: title)])
        #expect(rejection.code == .invalidTitle && rejection.opIndex == 1)
        #expect(rejection.message.contains("control character U+"))
    }

    @Test func everyTitleCarryingOpValidatesItsTitle() throws {
        var f = try Fixture(chapters: 1, media: 2, videos: 1)
        let chapter = f.chapter(0).id
        let video = f.videos(inChapter: 0)[0].id
        let ops: [SyncModel.Operation] = [
            .createChapter(temp: f.makeTemp(), title: " ", placement: .atEnd),
            .renameChapter(.id(chapter), title: ""),
            .renameVideo(.id(video), title: "\u{1}"),
            .registerMedia(temp: f.makeTemp(), name: "", cdnURL: "https://cdn.example.com/a", durationMs: 1, byteSize: 1),
            .linkMedia(chapter: .id(chapter), items: [LinkItem(temp: f.makeTemp(), media: .id(f.media(1).id), title: "  ")], placement: .atEnd),
        ]
        for op in ops {
            #expect(try f.reject(Fixture.alice, [op]).code == .invalidTitle, "\(op)")
        }
    }

    // MARK: Media

    @Test func urlOfMaxBytesPassesAndOneMoreIsRejected() {
        let prefix = "https://cdn.example.com/"
        let atLimit = prefix + String(repeating: "a", count: Limits.maxURLBytes - prefix.utf8.count)
        #expect(Validation.media(cdnURL: atLimit, durationMs: 1, byteSize: 1) == nil)
        #expect(Validation.media(cdnURL: atLimit + "a", durationMs: 1, byteSize: 1) != nil)
    }

    @Test(arguments: ["ftp://cdn.example.com/a.mp4", "cdn.example.com/a.mp4", "https://", "https:///a", "https://cdn.example.com/a b.mp4", ""])
    func malformedURLsAreRejected(url: String) {
        #expect(Validation.media(cdnURL: url, durationMs: 1, byteSize: 1) != nil)
    }

    @Test func durationAndSizeMustBeWithinTheirLimits() {
        let url = "HTTP://cdn.example.com/a.mp4"
        #expect(Validation.media(cdnURL: url, durationMs: 1, byteSize: 1) == nil)
        #expect(Validation.media(cdnURL: url, durationMs: Limits.maxDurationMs, byteSize: Limits.maxMediaBytes) == nil)
        #expect(Validation.media(cdnURL: url, durationMs: 0, byteSize: 1) != nil)
        #expect(Validation.media(cdnURL: url, durationMs: Limits.maxDurationMs + 1, byteSize: 1) != nil)
        #expect(Validation.media(cdnURL: url, durationMs: 1, byteSize: 0) != nil)
        #expect(Validation.media(cdnURL: url, durationMs: 1, byteSize: Limits.maxMediaBytes + 1) != nil)
    }

    @Test func invalidMediaIsRejectedWithInvalidMedia() throws {
        var f = try Fixture(chapters: 0, media: 0)
        let rejection = try f.reject(Fixture.alice, [.registerMedia(temp: f.makeTemp(), name: "Clip", cdnURL: "https://x/y", durationMs: 0, byteSize: 10)])
        #expect(rejection.code == .invalidMedia && rejection.opIndex == 0)
    }

    @Test func linkingUnknownMediaIsRejected() throws {
        var f = try Fixture(chapters: 1, media: 1)
        let unknown = EntityID(high: 0x4000, low: 0x8000_0000_0000_0001)
        let rejection = try f.reject(Fixture.alice, [.linkMedia(chapter: .id(f.chapter(0).id), items: [LinkItem(temp: f.makeTemp(), media: .id(unknown))], placement: .atEnd)])
        #expect(rejection.code == .unknownMedia && rejection.opIndex == 0)
    }

    // MARK: Sizes

    @Test func chapterHoldsMaxVideosAndOneMoreIsRejected() throws {
        var f = try Fixture(chapters: 1, media: Limits.maxVideosPerChapter + 1)
        let chapter = f.chapter(0).id
        try f.accept(Fixture.alice, [.linkMedia(chapter: .id(chapter), items: f.links(Array(0..<Limits.maxVideosPerChapter), title: "v"), placement: .atEnd)])
        #expect(f.videos(inChapter: 0).count == Limits.maxVideosPerChapter)
        let rejection = try f.reject(Fixture.alice, [.linkMedia(chapter: .id(chapter), items: f.links([Limits.maxVideosPerChapter], title: "v"), placement: .atEnd)])
        #expect(rejection.code == .chapterFull)
    }

    @Test func movingIntoAFullChapterIsRejected() throws {
        var f = try Fixture(chapters: 2, media: Limits.maxVideosPerChapter + 1)
        try f.accept(Fixture.alice, [
            .linkMedia(chapter: .id(f.chapter(0).id), items: f.links(Array(0..<Limits.maxVideosPerChapter), title: "v"), placement: .atEnd),
            .linkMedia(chapter: .id(f.chapter(1).id), items: f.links([Limits.maxVideosPerChapter], title: "w"), placement: .atEnd),
        ])
        let rejection = try f.reject(Fixture.alice, [.moveVideo(.id(f.videos(inChapter: 1)[0].id), toChapter: .id(f.chapter(0).id), placement: .atStart)])
        #expect(rejection.code == .chapterFull)
    }

    @Test func courseHoldsMaxChaptersAndOneMoreIsRejected() throws {
        var f = try Fixture(chapters: Limits.maxChaptersPerCourse - 1, media: 0)
        try f.accept(Fixture.alice, [.createChapter(temp: f.makeTemp(), title: "last", placement: .atStart)])
        #expect(f.state.chapters.count == Limits.maxChaptersPerCourse)
        #expect(try f.reject(Fixture.alice, [.createChapter(temp: f.makeTemp(), title: "one more", placement: .atEnd)]).code == .courseFull)
    }

    @Test func courseHoldsMaxVideosAndOneMoreIsRejected() throws {
        let chapters = Limits.maxVideosPerCourse / Limits.maxVideosPerChapter
        var f = try Fixture(chapters: chapters + 1, media: Limits.maxVideosPerChapter, videos: 0)
        for index in 0..<chapters {
            try f.accept(Fixture.setup, [.linkMedia(chapter: .id(f.chapter(index).id), items: f.links(Array(0..<Limits.maxVideosPerChapter), title: "v"), placement: .atEnd)])
        }
        #expect(f.state.videos.count == Limits.maxVideosPerCourse)
        let rejection = try f.reject(Fixture.alice, [.linkMedia(chapter: .id(f.chapter(chapters).id), items: f.links([0], title: "v"), placement: .atEnd)])
        #expect(rejection.code == .courseFull)
    }

    @Test func courseHoldsMaxMediaFilesAndOneMoreIsRejected() throws {
        var f = try Fixture(chapters: 0, media: Limits.maxMediaFilesPerCourse - 1)
        let register = { (temp: TempID) in
            SyncModel.Operation.registerMedia(temp: temp, name: "n", cdnURL: "https://cdn.example.com/n", durationMs: 1, byteSize: 1)
        }
        try f.accept(Fixture.alice, [register(f.makeTemp())])
        #expect(f.state.media.count == Limits.maxMediaFilesPerCourse)
        #expect(try f.reject(Fixture.alice, [register(f.makeTemp())]).code == .courseFull)
    }
}
