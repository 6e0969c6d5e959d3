/// The complete state of one course at one seq, as a value: what the resolver reads and writes,
/// what a replica holds, and what a snapshot carries.
///
/// Rows are kept by ID and, for ordering, in one ordered ID list for the chapters and one per
/// chapter for its videos; positions in the rows always equal the indexes in those lists
/// (checked by ``invariantViolations()``).
public struct CourseState: Hashable, Sendable {
    public internal(set) var course: Course
    public internal(set) var chapters: [EntityID: Chapter]
    public internal(set) var media: [EntityID: MediaFile]
    public internal(set) var videos: [EntityID: Video]
    /// Chapter IDs in position order.
    public internal(set) var chapterOrder: [EntityID]
    /// For every chapter, its video IDs in position order (an empty list for an empty chapter).
    public internal(set) var videoOrder: [EntityID: [EntityID]]

    /// An empty course.
    public init(course: Course) {
        self.course = course
        chapters = [:]
        media = [:]
        videos = [:]
        chapterOrder = []
        videoOrder = [:]
    }

    /// Builds a state from stored rows (a database or a snapshot), ordering by position. The rows
    /// are taken as they are: call ``invariantViolations()`` to check them.
    public init(course: Course, chapters: [Chapter], media: [MediaFile], videos: [Video]) {
        self.init(course: course)
        for chapter in chapters {
            self.chapters[chapter.id] = chapter
            videoOrder[chapter.id] = []
        }
        for file in media { self.media[file.id] = file }
        for video in videos { self.videos[video.id] = video }
        chapterOrder = Self.ordered(Array(self.chapters.keys)) { self.chapters[$0]?.position }
        var byChapter: [EntityID: [EntityID]] = [:]
        for video in videos { byChapter[video.chapterID, default: []].append(video.id) }
        for (chapterID, ids) in byChapter {
            videoOrder[chapterID] = Self.ordered(ids) { self.videos[$0]?.position }
        }
    }

    public var seq: CourseSeq { course.seq }

    /// The chapters in position order.
    public var orderedChapters: [Chapter] { chapterOrder.compactMap { chapters[$0] } }

    /// A chapter's videos in position order (empty for an unknown chapter).
    public func videos(in chapterID: EntityID) -> [Video] {
        (videoOrder[chapterID] ?? []).compactMap { videos[$0] }
    }

    /// The video that links `mediaID` into `chapterID`, if any.
    public func video(linking mediaID: EntityID, in chapterID: EntityID) -> Video? {
        // Without building the chapter's list of videos: the resolver asks once per linked item.
        guard let order = videoOrder[chapterID] else { return nil }
        for id in order {
            if let video = videos[id], video.mediaFileID == mediaID { return video }
        }
        return nil
    }

    /// Applies an authoritative diff (the next one in seq order) to this state.
    public mutating func apply(_ diff: Diff) {
        precondition(diff.courseID == course.id, "a diff of course \(diff.courseID) applied to course \(course.id)")
        let changes = diff.changes
        var dirtyChapters = Set<EntityID>()
        // Chapters whose existing videos this diff removed, moved or updated: their order is
        // rebuilt. A chapter that only gained videos appended at its end keeps its order and
        // appends them (the common case: one link batch into one chapter).
        var disturbed = Set<EntityID>()
        var chaptersReordered = false
        for id in changes.deletedVideos {
            if let video = videos.removeValue(forKey: id) { dirtyChapters.insert(video.chapterID); disturbed.insert(video.chapterID) }
        }
        for id in changes.deletedChapters {
            // The server lists a deleted chapter's videos too; removing them here keeps a
            // state consistent even if a diff does not.
            for videoID in videoOrder[id] ?? [] where videos[videoID]?.chapterID == id {
                videos.removeValue(forKey: videoID)
            }
            if chapters.removeValue(forKey: id) != nil { chaptersReordered = true }
            videoOrder.removeValue(forKey: id)
            dirtyChapters.remove(id)
        }
        for chapter in changes.chapters {
            if chapters[chapter.id] == nil { videoOrder[chapter.id] = [] }
            chapters[chapter.id] = chapter
            chaptersReordered = true
        }
        for file in changes.media { media[file.id] = file }
        // Videos new to a chapter (linked, or moved in from another).
        var arrivals: [EntityID: [EntityID]] = [:]
        for video in changes.videos {
            let old = videos.updateValue(video, forKey: video.id)
            if let old { disturbed.insert(old.chapterID) }
            if let old, old.chapterID != video.chapterID { dirtyChapters.insert(old.chapterID) }
            dirtyChapters.insert(video.chapterID)
            if old?.chapterID != video.chapterID { arrivals[video.chapterID, default: []].append(video.id) }
        }
        for entry in changes.chapterVersions { chapters[entry.chapterID]?.version = entry.version }
        if chaptersReordered {
            chapterOrder = Self.ordered(Array(chapters.keys)) { chapters[$0]?.position }
        }
        for chapterID in dirtyChapters where chapters[chapterID] != nil {
            if !disturbed.contains(chapterID), let count = videoOrder[chapterID]?.count,
               let appended = Self.appended(arrivals[chapterID] ?? [], after: count, position: { videos[$0]?.position }) {
                videoOrder[chapterID]!.append(contentsOf: appended)  // in place: no copy of the chapter's list per diff
                continue
            }
            var ids = (videoOrder[chapterID] ?? []).filter { videos[$0]?.chapterID == chapterID }
            ids += arrivals[chapterID] ?? []
            videoOrder[chapterID] = Self.ordered(ids) { videos[$0]?.position }
        }
        course.seq = diff.seq
    }

    /// What would be wrong with this state after `diff`, judged from the rows the diff names
    /// (in time proportional to the diff, not the course): a video in a chapter, or of a media
    /// file, that would not exist; a version for a chapter that would not exist. Empty when
    /// nothing is. (A diff that links one media file twice into a chapter passes here: the
    /// replica's visible rows refuse it, and ``invariantViolations()`` finds it.)
    public func problems(applying diff: Diff) -> [String] {
        let changes = diff.changes
        let deleted = Set(changes.deletedChapters)
        let created = Set(changes.chapters.map(\.id))
        let registered = Set(changes.media.map(\.id))
        func chapterExists(_ id: EntityID) -> Bool { created.contains(id) || (chapters[id] != nil && !deleted.contains(id)) }
        var problems: [String] = []
        for video in changes.videos {
            if !chapterExists(video.chapterID) { problems.append("video \(video.id) is in chapter \(video.chapterID), which does not exist") }
            if media[video.mediaFileID] == nil && !registered.contains(video.mediaFileID) {
                problems.append("video \(video.id) shows media file \(video.mediaFileID), which does not exist")
            }
        }
        for entry in changes.chapterVersions where !chapterExists(entry.chapterID) {
            problems.append("a version for chapter \(entry.chapterID), which does not exist")
        }
        return problems
    }

    /// This state with `diff` applied.
    public func applying(_ diff: Diff) -> CourseState {
        var copy = self
        copy.apply(diff)
        return copy
    }

    /// Everything wrong with this state; empty when every invariant holds: positions dense
    /// (0..<n) in every list, rows and order lists agree, (chapter, media) unique, no reference
    /// to a missing row, and the course limits respected.
    public func invariantViolations() -> [String] {
        var problems: [String] = []
        if Set(chapterOrder) != Set(chapters.keys) || chapterOrder.count != chapters.count {
            problems.append("the chapter order does not list each chapter exactly once")
        }
        for (index, id) in chapterOrder.enumerated() {
            guard let chapter = chapters[id] else { continue }
            if chapter.position != index { problems.append("chapter \(id) has position \(chapter.position), expected \(index)") }
            if chapter.courseID != course.id { problems.append("chapter \(id) belongs to another course") }
        }
        if Set(videoOrder.keys) != Set(chapters.keys) {
            problems.append("the video lists do not match the chapters")
        }
        var listed = 0
        for (chapterID, ids) in videoOrder {
            listed += ids.count
            var linked = Set<EntityID>()
            for (index, id) in ids.enumerated() {
                guard let video = videos[id] else {
                    problems.append("chapter \(chapterID) lists missing video \(id)")
                    continue
                }
                if video.chapterID != chapterID { problems.append("video \(id) is listed in chapter \(chapterID) but belongs to \(video.chapterID)") }
                if video.position != index { problems.append("video \(id) has position \(video.position), expected \(index)") }
                if !linked.insert(video.mediaFileID).inserted {
                    problems.append("chapter \(chapterID) links media \(video.mediaFileID) twice")
                }
            }
            if ids.count > Limits.maxVideosPerChapter { problems.append("chapter \(chapterID) holds \(ids.count) videos") }
        }
        if listed != videos.count { problems.append("\(videos.count) videos exist but \(listed) are listed in chapters") }
        for video in videos.values {
            if chapters[video.chapterID] == nil { problems.append("video \(video.id) points at missing chapter \(video.chapterID)") }
            if media[video.mediaFileID] == nil { problems.append("video \(video.id) points at missing media \(video.mediaFileID)") }
        }
        for file in media.values where file.courseID != course.id {
            problems.append("media \(file.id) belongs to another course")
        }
        if chapters.count > Limits.maxChaptersPerCourse { problems.append("the course holds \(chapters.count) chapters") }
        if videos.count > Limits.maxVideosPerCourse { problems.append("the course holds \(videos.count) videos") }
        if media.count > Limits.maxMediaFilesPerCourse { problems.append("the course holds \(media.count) media files") }
        return problems
    }

    /// `ids` in order when their positions are exactly `count ..< count + ids.count` (videos
    /// appended to a list of `count`), nil otherwise.
    private static func appended(_ ids: [EntityID], after count: Int, position: (EntityID) -> Int?) -> [EntityID]? {
        var placed = [EntityID?](repeating: nil, count: ids.count)
        for id in ids {
            guard let index = position(id).map({ $0 - count }), placed.indices.contains(index), placed[index] == nil else { return nil }
            placed[index] = id
        }
        return placed.map { $0! }
    }

    /// Orders IDs by their position, ties broken by ID so that a broken input still orders
    /// deterministically. Each position is looked up once; when they are exactly 0..<n (always,
    /// in a consistent state) each ID goes straight to its place, without sorting.
    private static func ordered(_ ids: [EntityID], position: (EntityID) -> Int?) -> [EntityID] {
        let positions = ids.map { position($0) ?? .max }
        var placed = [EntityID?](repeating: nil, count: ids.count)
        for (id, index) in zip(ids, positions) {
            guard placed.indices.contains(index), placed[index] == nil else {
                return zip(positions, ids).sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map(\.1)
            }
            placed[index] = id
        }
        return placed.map { $0! }
    }
}
