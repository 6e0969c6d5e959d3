import SyncModel

/// A row's stable name in the replica. It never changes: a row made here keeps the key it was
/// given before the server knew it, after the server's real ID arrives. Keep it in selections and
/// list diffing; use ``ChapterRow/id`` etc. only to talk to other systems.
public struct LocalKey: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// A real ID for rows first seen from the server; a provisional ID for rows made on this replica.
    public let rawValue: EntityID

    public init(_ rawValue: EntityID) { self.rawValue = rawValue }

    public var description: String { rawValue.isProvisional ? "local\(rawValue.low)" : rawValue.description }

    public static func < (lhs: LocalKey, rhs: LocalKey) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Whether a row's visible value is what the server has confirmed.
///
/// Edits the server rejected do not stay as rows: they are rolled back at once and reported in a
/// ``ClientEvent/rejected(_:)`` event as ``DroppedEdit``s, which ``SyncClient/retry(_:)`` can resubmit.
public enum RowStatus: Int, Hashable, Sendable, CustomStringConvertible {
    /// The row is exactly as the server last said.
    case confirmed = 0
    /// A local edit not yet acknowledged (and its diff not yet received) changes or creates the row.
    case pending = 1

    public var description: String {
        switch self {
        case .confirmed: "confirmed"
        case .pending: "pending"
        }
    }
}

/// A chapter as the replica shows it: confirmed state with pending edits applied.
public struct ChapterRow: Hashable, Sendable {
    public var key: LocalKey
    /// The server's ID; `nil` until the chapter's creation is acknowledged.
    public var id: EntityID?
    public var title: String
    public var position: Int
    public var version: UInt64
    public var status: RowStatus
}

/// A media file of the course's library as the replica shows it.
public struct MediaRow: Hashable, Sendable {
    public var key: LocalKey
    public var id: EntityID?
    public var name: String
    public var cdnURL: String
    public var durationMs: UInt64
    public var byteSize: UInt64
    public var status: RowStatus
}

/// A video (a media file linked into a chapter) as the replica shows it.
public struct VideoRow: Hashable, Sendable {
    public var key: LocalKey
    public var id: EntityID?
    public var chapterKey: LocalKey
    public var mediaKey: LocalKey
    public var title: String
    public var position: Int
    public var status: RowStatus
}

/// The course's chapters in order, each with its videos in order.
public struct Outline: Hashable, Sendable {
    public struct Entry: Hashable, Sendable {
        public var chapter: ChapterRow
        public var videos: [VideoRow]
    }

    public var title: String
    /// The confirmed course seq the outline is based on.
    public var seq: CourseSeq
    public var chapters: [Entry]

    /// Whether the outline shows exactly `state`: every chapter and video confirmed, with the
    /// state's IDs, titles, positions and chapter versions, in order.
    package func mirrors(_ state: CourseState) -> Bool {
        let expected = state.orderedChapters
        guard chapters.count == expected.count else { return false }
        for (entry, chapter) in zip(chapters, expected) {
            let row = entry.chapter
            let videos = state.videos(in: chapter.id)
            guard row.status == .confirmed, row.id == chapter.id, row.title == chapter.title, row.position == chapter.position,
                  row.version == chapter.version, entry.videos.count == videos.count else { return false }
            for (row, video) in zip(entry.videos, videos)
            where row.status != .confirmed || row.id != video.id || row.title != video.title || row.position != video.position {
                return false
            }
        }
        return true
    }

    /// How many chapters and videos are not yet confirmed.
    public var pendingCount: Int {
        chapters.reduce(0) { count, entry in
            count + (entry.chapter.status == .confirmed ? 0 : 1) + entry.videos.count { $0.status != .confirmed }
        }
    }
}
