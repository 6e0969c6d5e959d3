/// The rows one commit changed: the body of a ``Diff``. Lists are sorted by ID so that equal
/// changes encode to equal bytes.
public struct ChangeSet: Hashable, Sendable {
    /// Chapters created, renamed or repositioned (their full rows).
    public var chapters: [Chapter]
    /// Media files registered.
    public var media: [MediaFile]
    /// Videos created, renamed, moved or repositioned (their full rows).
    public var videos: [Video]
    public var deletedChapters: [EntityID]
    /// Includes the videos of deleted chapters, so a client needs no cascade rules of its own.
    public var deletedVideos: [EntityID]
    /// The new version of every surviving chapter whose row or video list changed.
    public var chapterVersions: [ChapterVersion]

    public init(chapters: [Chapter] = [], media: [MediaFile] = [], videos: [Video] = [],
                deletedChapters: [EntityID] = [], deletedVideos: [EntityID] = [],
                chapterVersions: [ChapterVersion] = []) {
        self.chapters = chapters
        self.media = media
        self.videos = videos
        self.deletedChapters = deletedChapters
        self.deletedVideos = deletedVideos
        self.chapterVersions = chapterVersions
    }

    public var isEmpty: Bool {
        chapters.isEmpty && media.isEmpty && videos.isEmpty && deletedChapters.isEmpty
            && deletedVideos.isEmpty && chapterVersions.isEmpty
    }

    /// How many rows the change set names: rows written or deleted, and chapter versions.
    public var rowCount: Int {
        chapters.count + media.count + videos.count + deletedChapters.count + deletedVideos.count + chapterVersions.count
    }
}

public struct ChapterVersion: Hashable, Sendable {
    public var chapterID: EntityID
    public var version: UInt64

    public init(chapterID: EntityID, version: UInt64) {
        self.chapterID = chapterID
        self.version = version
    }
}

/// Which client's batch produced a commit.
public struct BatchOrigin: Hashable, Sendable {
    public var clientID: ClientID
    public var batchSeq: BatchSeq

    public init(clientID: ClientID, batchSeq: BatchSeq) {
        self.clientID = clientID
        self.batchSeq = batchSeq
    }
}

/// The authoritative change of one commit, pushed to every subscriber of the course.
public struct Diff: Hashable, Sendable {
    public var courseID: EntityID
    /// The course seq this commit produced; diffs of a course arrive in seq order without gaps.
    public var seq: CourseSeq
    public var origin: BatchOrigin
    public var changes: ChangeSet

    public init(courseID: EntityID, seq: CourseSeq, origin: BatchOrigin, changes: ChangeSet) {
        self.courseID = courseID
        self.seq = seq
        self.origin = origin
        self.changes = changes
    }
}

/// How the server resolved a conflict inside an accepted batch, told to the batch's author.
public enum ResolutionNote: Hashable, Sendable {
    /// The placement's anchor no longer exists (or is no longer in that list): placed at the end.
    case anchorMissing(opIndex: Int, anchor: Ref)
    /// The media file was already linked into the chapter: `temp` maps to the existing video.
    case merged(opIndex: Int, temp: TempID, into: EntityID)

    public var opIndex: Int {
        switch self {
        case .anchorMissing(let opIndex, _), .merged(let opIndex, _, _): opIndex
        }
    }
}

/// The server's answer to an accepted batch.
public struct Ack: Hashable, Sendable {
    public var courseID: EntityID
    public var batchSeq: BatchSeq
    /// The course seq of the commit that applied the batch.
    public var seq: CourseSeq
    /// Every temp ID the batch created, mapped to its real ID.
    public var idMap: [TempID: EntityID]
    public var notes: [ResolutionNote]

    public init(courseID: EntityID, batchSeq: BatchSeq, seq: CourseSeq, idMap: [TempID: EntityID], notes: [ResolutionNote]) {
        self.courseID = courseID
        self.batchSeq = batchSeq
        self.seq = seq
        self.idMap = idMap
        self.notes = notes
    }
}

/// What the resolver produces for an accepted batch: everything a store writes in the batch's
/// one transaction (the rows via ``diff``, the change-log entry, the exactly-once record keyed by
/// ``Diff/origin`` and the temp-ID map via ``ack``).
public struct Commit: Hashable, Sendable {
    public var diff: Diff
    public var ack: Ack

    public init(diff: Diff, ack: Ack) {
        self.diff = diff
        self.ack = ack
    }

    public var clientID: ClientID { diff.origin.clientID }
    public var batchSeq: BatchSeq { diff.origin.batchSeq }
    public var seq: CourseSeq { diff.seq }
}
