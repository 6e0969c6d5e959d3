import SyncModel
import Testing

/// The history's one-line summaries, said against the course before the batch.
@Suite struct SummaryTests {
    @Test func eachKindOfEditInWords() throws {
        var fixture = try Fixture(chapters: 2, media: 3, videos: 1)
        let state = fixture.state
        let intro = fixture.chapter(0), video = fixture.videos(inChapter: 0)[0]
        let media = fixture.media(1)
        let temp = fixture.makeTemp()
        let cases: [([SyncModel.Operation], String)] = [
            ([.createChapter(temp: temp, title: "Outro", placement: .atEnd)], "added chapter “Outro”"),
            ([.renameChapter(.id(intro.id), title: "Welcome")], "renamed chapter “\(intro.title)” to “Welcome”"),
            ([.deleteChapter(.id(intro.id))], "deleted chapter “\(intro.title)” (1 video)"),
            ([.linkMedia(chapter: .id(intro.id), items: [LinkItem(temp: fixture.makeTemp(), media: .id(media.id))], placement: .atEnd)],
             "linked 1 video into “\(intro.title)”"),
            ([.unlinkVideo(.id(video.id))], "unlinked “\(video.title)” from “\(intro.title)”"),
            ([.renameVideo(.id(video.id), title: "Hello")], "renamed “\(video.title)” to “Hello”"),
            // A chapter made and filled in one batch is named by its title.
            ([.createChapter(temp: temp, title: "New", placement: .atEnd),
              .linkMedia(chapter: .temp(temp), items: [LinkItem(temp: fixture.makeTemp(), media: .id(media.id))], placement: .atEnd)],
             "added chapter “New”; linked 1 video into “New”"),
            ([.renameVideo(.id(video.id), title: "a"), .renameVideo(.id(video.id), title: "b"), .renameVideo(.id(video.id), title: "c")],
             "renamed 3 videos"),
            ([.renameChapter(.id(intro.id), title: "a"), .unlinkVideo(.id(video.id)), .deleteChapter(.id(fixture.chapter(1).id))],
             "renamed chapter “\(intro.title)” to “a”; unlinked “\(video.title)” from “\(intro.title)”; and 1 more"),
        ]
        for (ops, expected) in cases {
            #expect(state.summary(of: ops) == expected)
        }
    }
}
