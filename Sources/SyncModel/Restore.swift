/// Restore as intent: the operations that take a course from how it is now back to how it was at
/// an earlier seq, written like any edit, so that a restore is one batch resolved, committed,
/// fanned out and undone like any other.
///
/// The course it gives is the earlier one: the same chapters in the same order with the same
/// titles, each with the same videos (media file and title) in the same order. Rows that survived
/// keep their IDs (they are moved and renamed back); so does a video unlinked and linked again
/// since into the same chapter (it stands for the earlier one: a chapter holds a media file once),
/// so that restoring twice changes nothing the second time. Rows deleted since are made again
/// under new temps (a chapter, or a video linked again from its media file, which the library
/// always still holds: nothing removes a media file). Media files registered since stay in the
/// library, unlinked.
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
        // Which video of this course stands for each video of the earlier one: the same row; else,
        // in the same chapter, the video of the same media file that no earlier video is (a
        // chapter holds a file once: a video unlinked and linked again since is that video again).
        var counterpart: [EntityID: EntityID] = [:]
        for id in earlier.videos.keys where videos[id] != nil { counterpart[id] = id }
        var claimed = Set(counterpart.values)
        for video in earlier.videos.values.sorted(by: { $0.id < $1.id }) where counterpart[video.id] == nil && chapters[video.chapterID] != nil {
            if let match = videos(in: video.chapterID).first(where: {
                $0.mediaFileID == video.mediaFileID && !claimed.contains($0.id) && earlier.videos[$0.id] == nil
            }) {
                counterpart[video.id] = match.id
                claimed.insert(match.id)
            }
        }
        // The videos of each chapter as the operations so far leave them (by reference).
        var lists: [Ref: [Ref]] = [:]
        for chapter in orderedChapters { lists[.id(chapter.id)] = videos(in: chapter.id).map { .id($0.id) } }
        for ref in chapterRef.values where lists[ref] == nil { lists[ref] = [] }
        let goingChapters = Set(chapters.keys).subtracting(earlier.chapters.keys)
        for (id, video) in videos.sorted(by: { $0.key < $1.key }) where !claimed.contains(id) {
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
        var movers = earlier.videos.values.compactMap { video -> (earlier: Video, id: EntityID)? in
            guard let id = counterpart[video.id], videos[id]!.chapterID != video.chapterID else { return nil }
            return (video, id)
        }.sorted { $0.id < $1.id }
        func holdsMedia(_ chapter: Ref, _ media: EntityID, besides video: EntityID) -> Bool {
            lists[chapter]!.contains { ref in
                if case .id(let id) = ref, id != video { return videos[id]?.mediaFileID == media }
                return false
            }
        }
        while !movers.isEmpty {
            if let index = movers.firstIndex(where: { !holdsMedia(chapterRef[$0.earlier.chapterID]!, $0.earlier.mediaFileID, besides: $0.id) }) {
                let (video, id) = movers.remove(at: index)
                let target = chapterRef[video.chapterID]!
                ops.append(.moveVideo(.id(id), toChapter: target, placement: .atEnd))
                remove(.id(id))
                lists[target]!.append(.id(id))
            } else {
                let (_, id) = movers.removeFirst()
                ops.append(.unlinkVideo(.id(id)))
                remove(.id(id))
                relinked.insert(id)
            }
        }
        // Then each chapter's surviving videos into their earlier order, and their titles.
        func survivor(_ video: Video) -> EntityID? { counterpart[video.id].flatMap { relinked.contains($0) ? nil : $0 } }
        for chapter in earlier.orderedChapters {
            let target = chapterRef[chapter.id]!
            for (index, (video, id)) in earlier.videos(in: chapter.id).compactMap({ video in survivor(video).map { (video, $0) } }).enumerated() {
                let ref = Ref.id(id)
                if lists[target]![index] != ref {
                    ops.append(.moveVideo(ref, toChapter: target, placement: index == 0 ? .atStart : .after(lists[target]![index - 1])))
                    remove(ref)
                    lists[target]!.insert(ref, at: index)
                }
                if videos[id]!.title != video.title { ops.append(.renameVideo(ref, title: video.title)) }
            }
        }
        // Last the videos deleted since (or unlinked above), linked again after their predecessors.
        for chapter in earlier.orderedChapters {
            let target = chapterRef[chapter.id]!
            var previous: Ref?
            for video in earlier.videos(in: chapter.id) {
                if let id = survivor(video) {
                    previous = .id(id)
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
        var order: [Ref] = orderedChapters.filter { earlier.chapters[$0.id] != nil }.map { .id($0.id) }
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
