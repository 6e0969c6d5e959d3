/// Undo as intent: the operations that take back what one operation does to a course, written
/// like any edit (rename back, move back after the row that preceded it, unlink what was linked,
/// re-create a deleted chapter with its videos), so that undoing resolves like any batch. Against
/// later edits by others it keeps their meaning: an anchor that is gone places at the end (a
/// note), a row that is gone rejects the undo (`TARGET_DELETED`); the course never ends in a state
/// the resolver would not produce.
///
/// What cannot be taken back: a media file's registration (the protocol has no operation that
/// removes one from the library; it stays, unlinked).
/// The undo of one operation: what to send, and the rows it makes again under new temps (a
/// deleted chapter and its videos, an unlinked video), which the undos of earlier operations of
/// the same batch must name by those temps.
public struct Inverse: Hashable, Sendable {
    public var ops: [Operation]
    /// Keyed by the reference the undo's other operations use for the row (the caller's `ref`).
    public var recreated: [Ref: TempID]

    public init(ops: [Operation], recreated: [Ref: TempID] = [:]) {
        self.ops = ops
        self.recreated = recreated
    }

    /// The undo of a batch whose operations' inverses are `inverses`, in the batch's order: the
    /// last operation's undo first, each earlier one naming re-created rows by their new temps.
    public static func undo(of inverses: [Inverse]) -> [Operation] {
        var renamed: [Ref: TempID] = [:]
        var ops: [Operation] = []
        for inverse in inverses.reversed() {
            ops += inverse.ops.map { $0.mapRefs { ref in renamed[ref].map(Ref.temp) ?? ref } }
            renamed.merge(inverse.recreated) { _, new in new }
        }
        return ops
    }
}

extension CourseState {
    /// The undo of `op` as it applies to this state (the state just before it); `nil` if `op`
    /// names a row this state does not hold (it would be rejected).
    ///
    /// - Parameters:
    ///   - resolve: the row a reference names here (a real ID; a temp through the caller's map).
    ///   - ref: the reference the undo uses for a row of this state (a client names rows it made
    ///     but that are not yet acknowledged by their temps).
    ///   - mintTemp: a fresh temp for each row the undo creates again.
    public func inverse(of op: Operation, resolve: (Ref) -> EntityID?, ref: (EntityID) -> Ref, mintTemp: () -> TempID) -> Inverse? {
        /// The reference the undo uses for the row `reference` names (as `ref` names it).
        func target(_ reference: Ref) -> Ref { resolve(reference).map(ref) ?? reference }
        /// Where a row was: after the row before it, or at the start.
        func placement(of id: EntityID, in order: [EntityID]) -> Placement {
            guard let index = order.firstIndex(of: id), index > 0 else { return .atStart }
            return .after(ref(order[index - 1]))
        }
        switch op {
        case .createChapter(let temp, _, _):
            return Inverse(ops: [.deleteChapter(target(.temp(temp)))])
        case .renameChapter(let target, _):
            guard let id = resolve(target), let chapter = chapters[id] else { return nil }
            return Inverse(ops: [.renameChapter(ref(id), title: chapter.title)])
        case .moveChapter(let target, _):
            guard let id = resolve(target), chapters[id] != nil else { return nil }
            return Inverse(ops: [.moveChapter(ref(id), placement: placement(of: id, in: chapterOrder))])
        case .deleteChapter(let target):
            guard let id = resolve(target), let chapter = chapters[id] else { return nil }
            let temp = mintTemp()
            var undo = Inverse(ops: [.createChapter(temp: temp, title: chapter.title, placement: placement(of: id, in: chapterOrder))],
                               recreated: [ref(id): temp])
            let videos = self.videos(in: id)
            if !videos.isEmpty {
                let items = videos.map { video in
                    let item = LinkItem(temp: mintTemp(), media: ref(video.mediaFileID), title: video.title)
                    undo.recreated[ref(video.id)] = item.temp
                    return item
                }
                undo.ops.append(.linkMedia(chapter: .temp(temp), items: items, placement: .atEnd))
            }
            return undo
        case .registerMedia:
            return Inverse(ops: [])
        case .linkMedia(let chapter, let items, _):
            guard let chapterID = resolve(chapter), chapters[chapterID] != nil else { return nil }
            // A media file the chapter already holds merges into its video (nothing to take back),
            // as does one the same op links twice.
            var linked = Set<EntityID>()
            var undo: [Operation] = []
            for item in items {
                guard let media = resolve(item.media) else { return nil }
                guard video(linking: media, in: chapterID) == nil, linked.insert(media).inserted else { continue }
                undo.append(.unlinkVideo(target(.temp(item.temp))))
            }
            return Inverse(ops: undo.reversed())
        case .moveVideo(let target, _, _):
            guard let id = resolve(target), let video = videos[id] else { return nil }
            return Inverse(ops: [.moveVideo(ref(id), toChapter: ref(video.chapterID), placement: placement(of: id, in: videoOrder[video.chapterID] ?? []))])
        case .renameVideo(let target, _):
            guard let id = resolve(target), let video = videos[id] else { return nil }
            return Inverse(ops: [.renameVideo(ref(id), title: video.title)])
        case .unlinkVideo(let target):
            guard let id = resolve(target), let video = videos[id] else { return nil }
            let item = LinkItem(temp: mintTemp(), media: ref(video.mediaFileID), title: video.title)
            return Inverse(ops: [.linkMedia(chapter: ref(video.chapterID), items: [item], placement: placement(of: id, in: videoOrder[video.chapterID] ?? []))],
                           recreated: [ref(id): item.temp])
        }
    }
}
