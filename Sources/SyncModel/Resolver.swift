/// A batch accepted by the resolver: the commit to write and the course state after it.
public struct Resolved: Hashable, Sendable {
    public var commit: Commit
    public var state: CourseState
}

/// The one place where the ordering and conflict rules (protocol/README.md §7.3) live. The server calls it to
/// decide (authoritatively), a client calls it to predict its own pending batches and to rebase
/// them on new server state.
///
/// Rules, in server commit order:
/// - concurrent appends are all kept, positions dense;
/// - `after`/`before` place relative to the anchor's current position; a missing anchor places at
///   the end with an ``ResolutionNote/anchorMissing(opIndex:anchor:)`` note;
/// - linking media a chapter already holds maps the new temp ID to the existing video
///   (``ResolutionNote/merged(opIndex:temp:into:)``);
/// - moves and renames: the later commit wins;
/// - an operation on a row that no longer exists rejects the whole batch (``ErrorCode/targetDeleted``);
/// - invalid input rejects the whole batch with its code and the op index.
public enum Resolver {
    /// Resolves `batch` against `state`.
    ///
    /// - Parameters:
    ///   - knownTemps: the batch author's temp IDs from earlier batches (at least those in
    ///     ``Batch/mentionedTemps``), mapped to their real IDs.
    ///   - allocator: mints the IDs of the rows the batch creates.
    /// - Returns: the commit and new state, or a rejection; `state` itself is never changed.
    public static func resolve<Allocator: IDAllocator>(
        _ batch: Batch,
        against state: CourseState,
        knownTemps: [TempID: EntityID],
        allocator: inout Allocator
    ) -> Result<Resolved, Rejection> {
        precondition(batch.courseID == state.course.id, "batch for course \(batch.courseID) resolved against \(state.course.id)")
        var application = Application(state: state, knownTemps: knownTemps)
        do {
            try checkSize(batch)
            for (index, op) in batch.ops.enumerated() {
                try application.apply(op, at: index, allocator: &allocator)
            }
        } catch {
            return .failure(error)
        }
        let resolved = application.finish(batch)
        assert(resolved.state.invariantViolations().isEmpty,
               "resolver broke an invariant: \(resolved.state.invariantViolations())")
        return .success(resolved)
    }

    private static func checkSize(_ batch: Batch) throws(Rejection) {
        guard !batch.ops.isEmpty else { throw Rejection(.emptyBatch, "the batch has no operations") }
        var weight = 0
        for (index, op) in batch.ops.enumerated() {
            weight += op.weight
            if weight > Limits.maxOpsPerBatch {
                throw Rejection(.batchTooLarge, opIndex: index,
                                "the batch exceeds \(Limits.maxOpsPerBatch) operations (a link counts once per media file) at this op; split it")
            }
        }
    }
}

/// One batch being applied to a working copy of the state, recording what it touched so the
/// diff can be built without comparing whole courses.
private struct Application {
    let before: CourseState
    var state: CourseState
    let knownTemps: [TempID: EntityID]
    var created: [TempID: EntityID] = [:]
    var notes: [ResolutionNote] = []
    /// Chapters whose row or video list changed (their version is bumped).
    var touchedChapters = Set<EntityID>()
    var touchedVideos = Set<EntityID>()
    var touchedMedia = Set<EntityID>()

    init(state: CourseState, knownTemps: [TempID: EntityID]) {
        before = state
        self.state = state
        self.knownTemps = knownTemps
    }

    // MARK: Operations

    mutating func apply<Allocator: IDAllocator>(_ op: Operation, at index: Int, allocator: inout Allocator) throws(Rejection) {
        switch op {
        case .createChapter(let temp, let title, let placement):
            let title = try validTitle(title, at: index)
            guard state.chapters.count < Limits.maxChaptersPerCourse else {
                throw Rejection(.courseFull, opIndex: index, "the course already has \(Limits.maxChaptersPerCourse) chapters")
            }
            try claim(temp, at: index)
            let position = try insertionIndex(placement, in: state.chapterOrder, moving: nil, at: index)
            let id = mint(temp, &allocator)
            state.chapters[id] = Chapter(id: id, courseID: state.course.id, title: title, position: position, version: 0)
            state.videoOrder[id] = []
            state.chapterOrder.insert(id, at: position)
            touchedChapters.insert(id)
            renumberChapters()

        case .renameChapter(let ref, let title):
            let title = try validTitle(title, at: index)
            let chapter = try existingChapter(ref, at: index)
            if chapter.title != title {
                state.chapters[chapter.id]!.title = title
                touchedChapters.insert(chapter.id)
            }

        case .moveChapter(let ref, let placement):
            let chapter = try existingChapter(ref, at: index)
            state.chapterOrder.remove(at: chapter.position)
            let position = try insertionIndex(placement, in: state.chapterOrder, moving: chapter.id, at: index)
            state.chapterOrder.insert(chapter.id, at: position)
            renumberChapters()

        case .deleteChapter(let ref):
            let chapter = try existingChapter(ref, at: index)
            for videoID in state.videoOrder[chapter.id] ?? [] {
                state.videos.removeValue(forKey: videoID)
                touchedVideos.insert(videoID)
            }
            state.videoOrder.removeValue(forKey: chapter.id)
            state.chapters.removeValue(forKey: chapter.id)
            state.chapterOrder.remove(at: chapter.position)
            touchedChapters.insert(chapter.id)
            renumberChapters()

        case .registerMedia(let temp, let name, let cdnURL, let durationMs, let byteSize):
            let name = try validTitle(name, at: index, what: "media name")
            if let problem = Validation.media(cdnURL: cdnURL, durationMs: durationMs, byteSize: byteSize) {
                throw Rejection(.invalidMedia, opIndex: index, "invalid media file: \(problem)")
            }
            guard state.media.count < Limits.maxMediaFilesPerCourse else {
                throw Rejection(.courseFull, opIndex: index, "the course already has \(Limits.maxMediaFilesPerCourse) media files")
            }
            try claim(temp, at: index)
            let id = mint(temp, &allocator)
            state.media[id] = MediaFile(id: id, courseID: state.course.id, name: name, cdnURL: cdnURL,
                                        durationMs: durationMs, byteSize: byteSize)
            touchedMedia.insert(id)

        case .linkMedia(let chapterRef, let items, let placement):
            guard !items.isEmpty else { throw Rejection(.emptyBatch, opIndex: index, "the link has no media files") }
            let chapter = try existingChapter(chapterRef, at: index)
            var position = try insertionIndex(placement, in: state.videoOrder[chapter.id]!, moving: nil, at: index)
            for item in items {
                let title = try item.title.map { (raw) throws(Rejection) in try validTitle(raw, at: index, what: "video title") }
                let file = try existingMedia(item.media, at: index)
                try claim(item.temp, at: index)
                if let existing = state.video(linking: file.id, in: chapter.id) {
                    created[item.temp] = existing.id
                    notes.append(.merged(opIndex: index, temp: item.temp, into: existing.id))
                    continue
                }
                try checkRoom(in: chapter.id, at: index)
                let id = mint(item.temp, &allocator)
                state.videos[id] = Video(id: id, chapterID: chapter.id, mediaFileID: file.id,
                                         title: title ?? file.name, position: position)
                state.videoOrder[chapter.id]!.insert(id, at: position)
                touchedVideos.insert(id)
                touchedChapters.insert(chapter.id)
                position += 1
            }
            renumberVideos(in: chapter.id)

        case .moveVideo(let ref, let chapterRef, let placement):
            let video = try existingVideo(ref, at: index)
            let target = try existingChapter(chapterRef, at: index)
            if target.id != video.chapterID {
                if let other = state.video(linking: video.mediaFileID, in: target.id) {
                    throw Rejection(.mediaAlreadyInChapter, opIndex: index,
                                    "chapter \(target.id) already holds this media file as video \(other.id)")
                }
                try checkRoom(in: target.id, at: index, exceptCourse: true)
            }
            state.videoOrder[video.chapterID]!.remove(at: video.position)
            let position = try insertionIndex(placement, in: state.videoOrder[target.id]!, moving: video.id, at: index)
            state.videoOrder[target.id]!.insert(video.id, at: position)
            state.videos[video.id]!.chapterID = target.id
            if target.id != video.chapterID {
                touchedVideos.insert(video.id)
                touchedChapters.formUnion([video.chapterID, target.id])
                renumberVideos(in: video.chapterID)
            }
            renumberVideos(in: target.id)

        case .renameVideo(let ref, let title):
            let title = try validTitle(title, at: index, what: "video title")
            let video = try existingVideo(ref, at: index)
            if video.title != title {
                state.videos[video.id]!.title = title
                touchedVideos.insert(video.id)
                touchedChapters.insert(video.chapterID)
            }

        case .unlinkVideo(let ref):
            let video = try existingVideo(ref, at: index)
            state.videoOrder[video.chapterID]!.remove(at: video.position)
            state.videos.removeValue(forKey: video.id)
            touchedVideos.insert(video.id)
            touchedChapters.insert(video.chapterID)
            renumberVideos(in: video.chapterID)
        }
    }

    // MARK: References

    func resolve(_ ref: Ref, at index: Int) throws(Rejection) -> EntityID {
        switch ref {
        case .id(let id):
            return id
        case .temp(let temp):
            if let id = created[temp] ?? knownTemps[temp] { return id }
            throw Rejection(.unknownTempID, opIndex: index,
                            "temp ID \(temp) was never created by this client, or the batch that created it was rejected")
        }
    }

    func existingChapter(_ ref: Ref, at index: Int) throws(Rejection) -> Chapter {
        let id = try resolve(ref, at: index)
        guard let chapter = state.chapters[id] else {
            throw Rejection(.targetDeleted, opIndex: index, "chapter \(ref) no longer exists (deleted meanwhile)")
        }
        return chapter
    }

    func existingVideo(_ ref: Ref, at index: Int) throws(Rejection) -> Video {
        let id = try resolve(ref, at: index)
        guard let video = state.videos[id] else {
            throw Rejection(.targetDeleted, opIndex: index, "video \(ref) no longer exists (unlinked or its chapter deleted meanwhile)")
        }
        return video
    }

    func existingMedia(_ ref: Ref, at index: Int) throws(Rejection) -> MediaFile {
        let id = try resolve(ref, at: index)
        guard let file = state.media[id] else {
            throw Rejection(.unknownMedia, opIndex: index, "media file \(ref) is not in this course's library")
        }
        return file
    }

    /// Where `placement` puts a row in `order` (from which a row being moved is already removed).
    mutating func insertionIndex(_ placement: Placement, in order: [EntityID], moving: EntityID?, at index: Int) throws(Rejection) -> Int {
        let ref: Ref
        let after: Bool
        switch placement {
        case .atEnd: return order.count
        case .atStart: return 0
        case .after(let anchor): (ref, after) = (anchor, true)
        case .before(let anchor): (ref, after) = (anchor, false)
        }
        let anchorID = try resolve(ref, at: index)
        if anchorID == moving {
            throw Rejection(.invalidPlacement, opIndex: index, "a row cannot be placed relative to itself")
        }
        guard let anchorIndex = order.firstIndex(of: anchorID) else {
            notes.append(.anchorMissing(opIndex: index, anchor: ref))
            return order.count
        }
        return after ? anchorIndex + 1 : anchorIndex
    }

    // MARK: Checks

    func validTitle(_ raw: String, at index: Int, what: String = "chapter title") throws(Rejection) -> String {
        switch Validation.title(raw) {
        case .success(let title): return title
        case .failure(let problem): throw Rejection(.invalidTitle, opIndex: index, "invalid \(what): \(problem)")
        }
    }

    mutating func claim(_ temp: TempID, at index: Int) throws(Rejection) {
        guard created[temp] == nil, knownTemps[temp] == nil else {
            throw Rejection(.duplicateTempID, opIndex: index, "temp ID \(temp) was already used by this client")
        }
    }

    func checkRoom(in chapterID: EntityID, at index: Int, exceptCourse: Bool = false) throws(Rejection) {
        guard state.videoOrder[chapterID]!.count < Limits.maxVideosPerChapter else {
            throw Rejection(.chapterFull, opIndex: index, "chapter \(chapterID) already holds \(Limits.maxVideosPerChapter) videos")
        }
        guard exceptCourse || state.videos.count < Limits.maxVideosPerCourse else {
            throw Rejection(.courseFull, opIndex: index, "the course already holds \(Limits.maxVideosPerCourse) videos")
        }
    }

    // MARK: Bookkeeping

    mutating func mint<Allocator: IDAllocator>(_ temp: TempID, _ allocator: inout Allocator) -> EntityID {
        let id = allocator.allocate(for: temp)
        // Every minted row enters the state at once, so checking the state catches any reuse.
        precondition(state.chapters[id] == nil && state.videos[id] == nil && state.media[id] == nil,
                     "the ID allocator returned an ID in use: \(id)")
        created[temp] = id
        return id
    }

    mutating func renumberChapters() {
        for (position, id) in state.chapterOrder.enumerated() where state.chapters[id]!.position != position {
            state.chapters[id]!.position = position
            touchedChapters.insert(id)
        }
    }

    mutating func renumberVideos(in chapterID: EntityID) {
        for (position, id) in state.videoOrder[chapterID]!.enumerated() where state.videos[id]!.position != position {
            state.videos[id]!.position = position
            touchedVideos.insert(id)
            touchedChapters.insert(chapterID)
        }
    }

    /// Bumps the versions and seq, and derives the diff from what was touched.
    consuming func finish(_ batch: Batch) -> Resolved {
        let seq = before.seq + 1
        var changes = ChangeSet()
        for id in touchedChapters.sorted() {
            guard var chapter = state.chapters[id] else {
                if before.chapters[id] != nil { changes.deletedChapters.append(id) }
                continue
            }
            chapter.version = (before.chapters[id]?.version ?? 0) + 1
            state.chapters[id] = chapter
            changes.chapterVersions.append(ChapterVersion(chapterID: id, version: chapter.version))
            let old = before.chapters[id]
            if old?.title != chapter.title || old?.position != chapter.position { changes.chapters.append(chapter) }
        }
        for id in touchedVideos.sorted() {
            if let video = state.videos[id] {
                if before.videos[id] != video { changes.videos.append(video) }
            } else if before.videos[id] != nil {
                changes.deletedVideos.append(id)
            }
        }
        changes.media = touchedMedia.sorted().map { state.media[$0]! }
        state.course.seq = seq
        let origin = BatchOrigin(clientID: batch.clientID, batchSeq: batch.batchSeq)
        let diff = Diff(courseID: state.course.id, seq: seq, origin: origin, changes: changes)
        let ack = Ack(courseID: state.course.id, batchSeq: batch.batchSeq, seq: seq, idMap: created, notes: notes)
        return Resolved(commit: Commit(diff: diff, ack: ack), state: state)
    }
}
