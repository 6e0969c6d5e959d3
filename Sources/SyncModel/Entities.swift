/// A course: the unit of collaboration, serialization and subscription.
public struct Course: Hashable, Sendable {
    public var id: EntityID
    public var title: String
    /// The number of batches committed to this course so far.
    public var seq: CourseSeq

    public init(id: EntityID, title: String, seq: CourseSeq = 0) {
        self.id = id
        self.title = title
        self.seq = seq
    }
}

/// An ordered section of a course holding an ordered list of videos.
public struct Chapter: Hashable, Sendable {
    public var id: EntityID
    public var courseID: EntityID
    public var title: String
    /// Dense: the chapters of a course are at positions 0..<n.
    public var position: Int
    /// +1 on every commit that changes this chapter's row or its list of videos.
    public var version: UInt64

    public init(id: EntityID, courseID: EntityID, title: String, position: Int, version: UInt64) {
        self.id = id
        self.courseID = courseID
        self.title = title
        self.position = position
        self.version = version
    }
}

/// A file of the course's media library (metadata only; uploads are out of scope).
public struct MediaFile: Hashable, Sendable {
    public var id: EntityID
    public var courseID: EntityID
    public var name: String
    public var cdnURL: String
    public var durationMs: UInt64
    public var byteSize: UInt64

    public init(id: EntityID, courseID: EntityID, name: String, cdnURL: String, durationMs: UInt64, byteSize: UInt64) {
        self.id = id
        self.courseID = courseID
        self.name = name
        self.cdnURL = cdnURL
        self.durationMs = durationMs
        self.byteSize = byteSize
    }
}

/// A media file linked into a chapter. A chapter holds a media file at most once.
public struct Video: Hashable, Sendable {
    public var id: EntityID
    public var chapterID: EntityID
    public var mediaFileID: EntityID
    public var title: String
    /// Dense: the videos of a chapter are at positions 0..<n.
    public var position: Int

    public init(id: EntityID, chapterID: EntityID, mediaFileID: EntityID, title: String, position: Int) {
        self.id = id
        self.chapterID = chapterID
        self.mediaFileID = mediaFileID
        self.title = title
        self.position = position
    }
}
