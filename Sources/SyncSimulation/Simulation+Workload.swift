import SyncClient
import SyncModel

extension Simulation {
    /// A random edit against what the client shows, weighted to provoke every conflict rule.
    func randomOperation(_ core: inout ClientCore) -> SyncModel.Operation? {
        let state = core.visible
        let chapters = state.orderedChapters
        let videos = state.videos.values.sorted { $0.id < $1.id }
        let media = state.media.keys.sorted()
        func ref(_ id: EntityID) -> Ref? { core.ref(core.key(for: id)) }
        func placement(among ids: [EntityID]) -> Placement {
            switch Int.random(in: 0..<4, using: &random) {
            case 0: return .atStart
            case 1 where !ids.isEmpty: return ref(ids.randomElement(using: &random)!).map(Placement.after) ?? .atEnd
            case 2 where !ids.isEmpty: return ref(ids.randomElement(using: &random)!).map(Placement.before) ?? .atEnd
            default: return .atEnd
            }
        }
        guard let chapter = chapters.randomElement(using: &random), let chapterRef = ref(chapter.id) else {
            return .createChapter(temp: core.mintTemp(), title: "New chapter", placement: .atEnd)
        }
        let roll = Int.random(in: 0..<100, using: &random)
        switch roll {
        case 0..<35 where !media.isEmpty:
            // Same few media into the same chapters: duplicate links merge.
            let count = Int.random(in: 1...3, using: &random)
            let items = (0..<count).compactMap { _ in ref(media.randomElement(using: &random)!) }.map { LinkItem(temp: core.mintTemp(), media: $0) }
            return .linkMedia(chapter: chapterRef, items: items, placement: placement(among: state.videoOrder[chapter.id] ?? []))
        case 35..<50 where !videos.isEmpty:
            let video = videos.randomElement(using: &random)!
            guard let videoRef = ref(video.id) else { return nil }
            return .moveVideo(videoRef, toChapter: chapterRef, placement: placement(among: state.videoOrder[chapter.id] ?? []))
        case 50..<62 where !videos.isEmpty:
            guard let videoRef = ref(videos.randomElement(using: &random)!.id) else { return nil }
            return .renameVideo(videoRef, title: "Title \(Int.random(in: 0..<1_000, using: &random))")
        case 62..<72 where !videos.isEmpty:
            guard let videoRef = ref(videos.randomElement(using: &random)!.id) else { return nil }
            return .unlinkVideo(videoRef)
        case 72..<80:
            return .renameChapter(chapterRef, title: "Chapter \(Int.random(in: 0..<1_000, using: &random))")
        case 80..<86:
            return .moveChapter(chapterRef, placement: placement(among: state.chapterOrder))
        case 86..<90 where chapters.count > 2:
            return .deleteChapter(chapterRef)
        case 90..<95:
            return .createChapter(temp: core.mintTemp(), title: "Chapter \(Int.random(in: 0..<1_000, using: &random))",
                                  placement: placement(among: state.chapterOrder))
        default:
            let number = Int.random(in: 0..<1_000, using: &random)
            return .registerMedia(temp: core.mintTemp(), name: "upload \(number)", cdnURL: "https://cdn.example.com/u\(number)",
                                  durationMs: 1_000, byteSize: 1_000)
        }
    }

    /// What a client says it looks at: a confirmed chapter or video, the library, or nothing.
    func randomFocus(_ core: ClientCore) -> PresenceFocus? {
        let chapters = core.confirmed.orderedChapters.map(\.id)
        let videos = core.confirmed.videos.keys.sorted()
        switch Int.random(in: 0..<4, using: &random) {
        case 0 where !chapters.isEmpty: return .chapter(chapters.randomElement(using: &random)!)
        case 1 where !videos.isEmpty: return .video(videos.randomElement(using: &random)!)
        case 2: return .library
        default: return nil
        }
    }
}
