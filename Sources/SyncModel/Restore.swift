/// Restore as intent: the operations that take a course from how it is now back to how it was at
/// an earlier seq, written like any edit, so that a restore is one batch resolved, committed,
/// fanned out and undone like any other.
///
/// The course it gives is the earlier one: the same chapters in the same order with the same
/// titles, each with the same videos (media file and title) in the same order. Rows that survived
/// keep their IDs (they are moved and renamed back); rows deleted since are made again under new
/// temps (a chapter, or a video linked again from its media file, which the library always still
/// holds: nothing removes a media file). Media files registered since stay in the library,
/// unlinked.
extension CourseState {
    /// The operations that make this course look as `earlier` did; empty if it already does.
    ///
    /// In order: chapters deleted since are made again (at the end); videos that are not in the
    /// earlier course are unlinked (those in chapters that go are left to go with them); videos
    /// that changed chapters are moved back; each earlier chapter's videos are put in their order
    /// and renamed back; videos deleted since are linked again; chapters are renamed back and put
    /// back in order; chapters made since are deleted.
    public func restore(to earlier: CourseState, mintTemp: () -> TempID) -> [Operation] {
        var ops: [Operation] = []
        // Where each earlier chapter is now: its own ID, or the temp it is made again under.
        var chapterRef: [EntityID: Ref] = [:]
        for chapter in earlier.orderedChapters {
            if chapters[chapter.id] != nil {
                chapterRef[chapter.id] = .id(chapter.id)
            } else {
                let temp = mintTemp()
                chapterRef[chapter.id] = .temp(temp)
                ops.append(.createChapter(temp: temp, title: chapter.title, placement: .atEnd))
            }
        }
        // The videos of each chapter as the operations so far leave them (by reference).
        var lists: [Ref: [Ref]] = [:]
        for chapter in orderedChapters { lists[.id(chapter.id)] = videos(in: chapter.id).map { .id($0.id) } }
        for ref in chapterRef.values where lists[ref] == nil { lists[ref] = [] }
        let goingChapters = Set(chapters.keys).subtracting(earlier.chapters.keys)
        for (id, video) in videos.sorted(by: { $0.key < $1.key }) where earlier.videos[id] == nil {
            guard !goingChapters.contains(video.chapterID) else { continue }
            ops.append(.unlinkVideo(.id(id)))
            lists[.id(video.chapterID)]?.removeAll { $0 == .id(id) }
        }
        func remove(_ video: Ref) {
            for key in Array(lists.keys) where lists[key]!.contains(video) { lists[key]!.removeAll { $0 == video } }
        }
        // Surviving videos that change chapters go first, each once its new chapter no longer holds
        // another video of the same media file (one that is itself still to leave: a chapter
        // holds a media file once). Where such moves wait on each other in a cycle, one of them is
        // unlinked and linked again below, under a new ID.
        var relinked = Set<EntityID>()
        var movers = earlier.videos.values.filter { video in videos[video.id].map { $0.chapterID != video.chapterID } ?? false }
            .sorted { $0.id < $1.id }
        func holdsMedia(_ chapter: Ref, _ media: EntityID, besides video: EntityID) -> Bool {
            lists[chapter]!.contains { ref in
                if case .id(let id) = ref, id != video { return videos[id]?.mediaFileID == media }
                return false
            }
        }
        while !movers.isEmpty {
            if let index = movers.firstIndex(where: { !holdsMedia(chapterRef[$0.chapterID]!, $0.mediaFileID, besides: $0.id) }) {
                let video = movers.remove(at: index)
                let target = chapterRef[video.chapterID]!
                ops.append(.moveVideo(.id(video.id), toChapter: target, placement: .atEnd))
                remove(.id(video.id))
                lists[target]!.append(.id(video.id))
            } else {
                let video = movers.removeFirst()
                ops.append(.unlinkVideo(.id(video.id)))
                remove(.id(video.id))
                relinked.insert(video.id)
            }
        }
        // Then each chapter's surviving videos into their earlier order, and their titles.
        func survives(_ id: EntityID) -> Bool { videos[id] != nil && !relinked.contains(id) }
        for chapter in earlier.orderedChapters {
            let target = chapterRef[chapter.id]!
            for (index, video) in earlier.videos(in: chapter.id).filter({ survives($0.id) }).enumerated() {
                let ref = Ref.id(video.id)
                if lists[target]![index] != ref {
                    ops.append(.moveVideo(ref, toChapter: target, placement: index == 0 ? .atStart : .after(lists[target]![index - 1])))
                    remove(ref)
                    lists[target]!.insert(ref, at: index)
                }
                if videos[video.id]!.title != video.title { ops.append(.renameVideo(ref, title: video.title)) }
            }
        }
        // Last the videos deleted since (or unlinked above), linked again after their predecessors.
        for chapter in earlier.orderedChapters {
            let target = chapterRef[chapter.id]!
            var previous: Ref?
            for video in earlier.videos(in: chapter.id) {
                guard !survives(video.id) else {
                    previous = .id(video.id)
                    continue
                }
                let temp = mintTemp()
                ops.append(.linkMedia(chapter: target, items: [LinkItem(temp: temp, media: .id(video.mediaFileID), title: video.title)],
                                      placement: previous.map(Placement.after) ?? .atStart))
                previous = .temp(temp)
            }
        }
        for chapter in earlier.orderedChapters {
            if let now = chapters[chapter.id], now.title != chapter.title { ops.append(.renameChapter(.id(chapter.id), title: chapter.title)) }
        }
        // Chapter order: the surviving and re-made chapters, moved where their order differs.
        var order: [Ref] = orderedChapters.map { .id($0.id) }.filter { ref in
            if case .id(let id) = ref { return earlier.chapters[id] != nil }
            return true
        }
        for chapter in earlier.orderedChapters where chapters[chapter.id] == nil { order.append(chapterRef[chapter.id]!) }
        for (index, chapter) in earlier.orderedChapters.enumerated() {
            let ref = chapterRef[chapter.id]!
            guard order[index] != ref else { continue }
            ops.append(.moveChapter(ref, placement: index == 0 ? .atStart : .after(order[index - 1])))
            order.removeAll { $0 == ref }
            order.insert(ref, at: index)
        }
        for id in goingChapters.sorted() { ops.append(.deleteChapter(.id(id))) }
        return ops
    }
}
