/// A batch accepted by the resolver: the commit to write and the course state after it.
public struct Resolved: Hashable, Sendable {
    public var commit: Commit
    public var state: CourseState
}

/// A batch the resolver applied to a state in place: the commit, and what takes the state back.
public struct Applied: Sendable {
    public var commit: Commit
    public var undo: StateUndo
}

/// The rows and lists an in-place application changed, as they were before it: reverting them
/// restores the state exactly, at a cost in proportion to the change, not to the course.
public struct StateUndo: Hashable, Sendable {
    var course: Course?
    var chapters: [EntityID: Chapter?] = [:]
    var media: [EntityID: MediaFile?] = [:]
    var videos: [EntityID: Video?] = [:]
    var videoOrder: [EntityID: [EntityID]?] = [:]
    var chapterOrder: [EntityID]?

    public init() {}

    /// Takes `state` back to what it was before the application this undo recorded. Undos of
    /// several applications must be reverted newest first.
    public func revert(_ state: inout CourseState) {
        if let course { state.course = course }
        for (id, old) in chapters { state.chapters[id] = old }
        for (id, old) in media { state.media[id] = old }
        for (id, old) in videos { state.videos[id] = old }
        for (id, old) in videoOrder { state.videoOrder[id] = old }
        if let chapterOrder { state.chapterOrder = chapterOrder }
    }
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
        var copy = state
        return apply(batch, to: &copy, knownTemps: knownTemps, allocator: &allocator).map { Resolved(commit: $0.commit, state: copy) }
    }

    /// Resolves `batch` against `state` and applies it there, in place: the same decision as
    /// ``resolve(_:against:knownTemps:allocator:)``, at a cost in proportion to what the batch
    /// changes (a uniquely held state is not copied). On a rejection `state` is left as it was.
    /// The returned ``StateUndo`` takes `state` back.
    public static func apply<Allocator: IDAllocator>(
        _ batch: Batch,
        to state: inout CourseState,
        knownTemps: [TempID: EntityID],
        allocator: inout Allocator
    ) -> Result<Applied, Rejection> {
        precondition(batch.courseID == state.course.id, "batch for course \(batch.courseID) resolved against \(state.course.id)")
        var application = Application(seq: state.seq, knownTemps: knownTemps)
        // The application works on the state itself (moved in, so that it stays uniquely referenced).
        swap(&application.state, &state)
        defer { swap(&application.state, &state) }
        do {
            try checkSize(batch)
            for (index, op) in batch.ops.enumerated() {
                try application.apply(op, at: index, allocator: &allocator)
            }
        } catch {
            application.undo.revert(&application.state)
            return .failure(error)
        }
        let commit = application.finish(batch)
        assert(application.state.invariantViolations().isEmpty,
               "resolver broke an invariant: \(application.state.invariantViolations())")
        return .success(Applied(commit: commit, undo: application.undo))
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

/// One batch being applied to the state in place, recording what it touched (so the diff can be
/// built without comparing whole courses) and the old value of everything it changed (so it can
/// be undone). Every change to the state goes through a `journal…` call first.
private struct Application {
    let seq: CourseSeq
    var state: CourseState
    var undo = StateUndo()
    let knownTemps: [TempID: EntityID]
    var created: [TempID: EntityID] = [:]
    var notes: [ResolutionNote] = []
    /// Chapters whose row or video list changed (their version is bumped).
    var touchedChapters = Set<EntityID>()
    var touchedVideos = Set<EntityID>()
    var touchedMedia = Set<EntityID>()

    init(seq: CourseSeq, knownTemps: [TempID: EntityID]) {
        self.seq = seq
        state = CourseState(course: Course(id: EntityID(high: 0, low: 0), title: "", seq: 0))
        self.knownTemps = knownTemps
    }

    // MARK: Journal

    mutating func journalChapter(_ id: EntityID) {
        if undo.chapters.index(forKey: id) == nil { undo.chapters.updateValue(state.chapters[id], forKey: id) }
    }

    mutating func journalMedia(_ id: EntityID) {
        if undo.media.index(forKey: id) == nil { undo.media.updateValue(state.media[id], forKey: id) }
    }

    mutating func journalVideo(_ id: EntityID) {
        if undo.videos.index(forKey: id) == nil { undo.videos.updateValue(state.videos[id], forKey: id) }
    }

    mutating func journalVideoOrder(_ chapterID: EntityID) {
        if undo.videoOrder.index(forKey: chapterID) == nil { undo.videoOrder.updateValue(state.videoOrder[chapterID], forKey: chapterID) }
    }

    mutating func journalChapterOrder() {
        if undo.chapterOrder == nil { undo.chapterOrder = state.chapterOrder }
    }

    /// The row as it was before this batch.
    func chapterBefore(_ id: EntityID) -> Chapter? {
        if let old = undo.chapters[id] { return old }
        return state.chapters[id]
    }

    func videoBefore(_ id: EntityID) -> Video? {
        if let old = undo.videos[id] { return old }
        return state.videos[id]
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
            journalChapter(id)
            journalVideoOrder(id)
            journalChapterOrder()
            state.chapters[id] = Chapter(id: id, courseID: state.course.id, title: title, position: position, version: 0)
            state.videoOrder[id] = []
            state.chapterOrder.insert(id, at: position)
            touchedChapters.insert(id)
            renumberChapters()

        case .renameChapter(let ref, let title):
            let title = try validTitle(title, at: index)
            let chapter = try existingChapter(ref, at: index)
            if chapter.title != title {
                journalChapter(chapter.id)
                state.chapters[chapter.id]!.title = title
                touchedChapters.insert(chapter.id)
            }

        case .moveChapter(let ref, let placement):
            let chapter = try existingChapter(ref, at: index)
            journalChapterOrder()
            state.chapterOrder.remove(at: chapter.position)
            let position = try insertionIndex(placement, in: state.chapterOrder, moving: chapter.id, at: index)
            state.chapterOrder.insert(chapter.id, at: position)
            renumberChapters()

        case .deleteChapter(let ref):
            let chapter = try existingChapter(ref, at: index)
            for videoID in state.videoOrder[chapter.id] ?? [] {
                journalVideo(videoID)
                state.videos.removeValue(forKey: videoID)
                touchedVideos.insert(videoID)
            }
            journalVideoOrder(chapter.id)
            journalChapter(chapter.id)
            journalChapterOrder()
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
            journalMedia(id)
            state.media[id] = MediaFile(id: id, courseID: state.course.id, name: name, cdnURL: cdnURL,
                                        durationMs: durationMs, byteSize: byteSize)
            touchedMedia.insert(id)

        case .linkMedia(let chapterRef, let items, let placement):
            guard !items.isEmpty else { throw Rejection(.emptyBatch, opIndex: index, "the link has no media files") }
            let chapter = try existingChapter(chapterRef, at: index)
            let start = try insertionIndex(placement, in: state.videoOrder[chapter.id]!, moving: nil, at: index)
            var position = start
            // The chapter's media → video, looked up once for all the items.
            var linked: [EntityID: EntityID] = [:]
            for id in state.videoOrder[chapter.id]! { if let video = state.videos[id] { linked[video.mediaFileID] = id } }
            for item in items {
                let title = try item.title.map { (raw) throws(Rejection) in try validTitle(raw, at: index, what: "video title") }
                let file = try existingMedia(item.media, at: index)
                try claim(item.temp, at: index)
                if let existing = linked[file.id] {
                    created[item.temp] = existing
                    notes.append(.merged(opIndex: index, temp: item.temp, into: existing))
                    continue
                }
                try checkRoom(in: chapter.id, at: index)
                let id = mint(item.temp, &allocator)
                journalVideo(id)
                journalVideoOrder(chapter.id)
                state.videos[id] = Video(id: id, chapterID: chapter.id, mediaFileID: file.id,
                                         title: title ?? file.name, position: position)
                state.videoOrder[chapter.id]!.insert(id, at: position)
                linked[file.id] = id
                touchedVideos.insert(id)
                touchedChapters.insert(chapter.id)
                position += 1
            }
            renumberVideos(in: chapter.id, from: start)

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
            journalVideoOrder(video.chapterID)
            journalVideoOrder(target.id)
            journalVideo(video.id)
            state.videoOrder[video.chapterID]!.remove(at: video.position)
            let position = try insertionIndex(placement, in: state.videoOrder[target.id]!, moving: video.id, at: index)
            state.videoOrder[target.id]!.insert(video.id, at: position)
            state.videos[video.id]!.chapterID = target.id
            if target.id != video.chapterID {
                touchedVideos.insert(video.id)
                touchedChapters.formUnion([video.chapterID, target.id])
                renumberVideos(in: video.chapterID, from: video.position)
                renumberVideos(in: target.id, from: position)
            } else {
                renumberVideos(in: target.id, from: min(position, video.position))
            }

        case .renameVideo(let ref, let title):
            let title = try validTitle(title, at: index, what: "video title")
            let video = try existingVideo(ref, at: index)
            if video.title != title {
                journalVideo(video.id)
                state.videos[video.id]!.title = title
                touchedVideos.insert(video.id)
                touchedChapters.insert(video.chapterID)
            }

        case .unlinkVideo(let ref):
            let video = try existingVideo(ref, at: index)
            journalVideoOrder(video.chapterID)
            journalVideo(video.id)
            state.videoOrder[video.chapterID]!.remove(at: video.position)
            state.videos.removeValue(forKey: video.id)
            touchedVideos.insert(video.id)
            touchedChapters.insert(video.chapterID)
            renumberVideos(in: video.chapterID, from: video.position)
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
            journalChapter(id)
            state.chapters[id]!.position = position
            touchedChapters.insert(id)
        }
    }

    /// Gives the chapter's videos from index `start` on their index as position (those before
    /// it did not move).
    mutating func renumberVideos(in chapterID: EntityID, from start: Int) {
        let order = state.videoOrder[chapterID]!
        for position in start..<order.count where state.videos[order[position]]!.position != position {
            let id = order[position]
            journalVideo(id)
            state.videos[id]!.position = position
            touchedVideos.insert(id)
            touchedChapters.insert(chapterID)
        }
    }

    /// Bumps the versions and seq, and derives the diff from what was touched.
    mutating func finish(_ batch: Batch) -> Commit {
        let seq = seq + 1
        var changes = ChangeSet()
        for id in touchedChapters.sorted() {
            let old = chapterBefore(id)
            guard var chapter = state.chapters[id] else {
                if old != nil { changes.deletedChapters.append(id) }
                continue
            }
            chapter.version = (old?.version ?? 0) + 1
            journalChapter(id)
            state.chapters[id] = chapter
            changes.chapterVersions.append(ChapterVersion(chapterID: id, version: chapter.version))
            if old?.title != chapter.title || old?.position != chapter.position { changes.chapters.append(chapter) }
        }
        for id in touchedVideos.sorted() {
            let old = videoBefore(id)
            if let video = state.videos[id] {
                if old != video { changes.videos.append(video) }
            } else if old != nil {
                changes.deletedVideos.append(id)
            }
        }
        changes.media = touchedMedia.sorted().map { state.media[$0]! }
        if undo.course == nil { undo.course = state.course }
        state.course.seq = seq
        let origin = BatchOrigin(clientID: batch.clientID, batchSeq: batch.batchSeq)
        let diff = Diff(courseID: state.course.id, seq: seq, origin: origin, changes: changes)
        let ack = Ack(courseID: state.course.id, batchSeq: batch.batchSeq, seq: seq, idMap: created, notes: notes)
        return Commit(diff: diff, ack: ack)
    }
}
