import Foundation
import GRDB
import SyncModel

// How the replica's rows map to SQLite: GRDB values for IDs, keys and statuses, and records for
// the rows (the app's visible rows, and the confirmed state's rows behind them).

extension EntityID: DatabaseValueConvertible {
    /// 16 bytes.
    public var databaseValue: DatabaseValue { Data(bytes).databaseValue }

    public static func fromDatabaseValue(_ value: DatabaseValue) -> EntityID? {
        Data.fromDatabaseValue(value).flatMap { EntityID(bytes: $0) }
    }
}

extension LocalKey: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { rawValue.databaseValue }

    public static func fromDatabaseValue(_ value: DatabaseValue) -> LocalKey? { EntityID.fromDatabaseValue(value).map(LocalKey.init) }
}

extension RowStatus: DatabaseValueConvertible {}

extension ChapterRow: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "visible_chapters"

    public init(row: Row) throws {
        self.init(key: try row.decode(forColumn: "key"), id: try row.decode(forColumn: "id"), title: try row.decode(forColumn: "title"),
                  position: try row.decode(forColumn: "position"), version: UInt64(bitPattern: try row.decode(forColumn: "version")),
                  status: try row.decode(forColumn: "status"))
    }

    public func encode(to container: inout PersistenceContainer) {
        container["key"] = key
        container["id"] = id
        container["title"] = title
        container["position"] = position
        container["version"] = Int64(bitPattern: version)
        container["status"] = status
    }
}

extension MediaRow: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "visible_media"

    public init(row: Row) throws {
        self.init(key: try row.decode(forColumn: "key"), id: try row.decode(forColumn: "id"), name: try row.decode(forColumn: "name"),
                  cdnURL: try row.decode(forColumn: "cdn_url"), durationMs: UInt64(bitPattern: try row.decode(forColumn: "duration_ms")),
                  byteSize: UInt64(bitPattern: try row.decode(forColumn: "byte_size")), status: try row.decode(forColumn: "status"))
    }

    public func encode(to container: inout PersistenceContainer) {
        container["key"] = key
        container["id"] = id
        container["name"] = name
        container["cdn_url"] = cdnURL
        container["duration_ms"] = Int64(bitPattern: durationMs)
        container["byte_size"] = Int64(bitPattern: byteSize)
        container["status"] = status
    }
}

extension VideoRow: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "visible_videos"

    public init(row: Row) throws {
        self.init(key: try row.decode(forColumn: "key"), id: try row.decode(forColumn: "id"), chapterKey: try row.decode(forColumn: "chapter_key"),
                  mediaKey: try row.decode(forColumn: "media_key"), title: try row.decode(forColumn: "title"),
                  position: try row.decode(forColumn: "position"), status: try row.decode(forColumn: "status"))
    }

    public func encode(to container: inout PersistenceContainer) {
        container["key"] = key
        container["id"] = id
        container["chapter_key"] = chapterKey
        container["media_key"] = mediaKey
        container["title"] = title
        container["position"] = position
        container["status"] = status
    }
}

/// A chapter of the confirmed state (the course ID is the replica's, not stored per row).
struct ConfirmedChapter: FetchableRecord, PersistableRecord {
    static let databaseTableName = "chapters"
    var id: EntityID
    var title: String
    var position: Int
    var version: UInt64

    init(_ chapter: Chapter) { (id, title, position, version) = (chapter.id, chapter.title, chapter.position, chapter.version) }

    init(row: Row) throws {
        (id, title, position) = (try row.decode(forColumn: "id"), try row.decode(forColumn: "title"), try row.decode(forColumn: "position"))
        version = UInt64(bitPattern: try row.decode(forColumn: "version"))
    }

    func encode(to container: inout PersistenceContainer) {
        container["id"] = id
        container["title"] = title
        container["position"] = position
        container["version"] = Int64(bitPattern: version)
    }

    func chapter(in course: EntityID) -> Chapter { Chapter(id: id, courseID: course, title: title, position: position, version: version) }
}

struct ConfirmedMedia: FetchableRecord, PersistableRecord {
    static let databaseTableName = "media"
    var id: EntityID
    var name: String
    var cdnURL: String
    var durationMs: UInt64
    var byteSize: UInt64

    init(_ file: MediaFile) { (id, name, cdnURL, durationMs, byteSize) = (file.id, file.name, file.cdnURL, file.durationMs, file.byteSize) }

    init(row: Row) throws {
        (id, name, cdnURL) = (try row.decode(forColumn: "id"), try row.decode(forColumn: "name"), try row.decode(forColumn: "cdn_url"))
        durationMs = UInt64(bitPattern: try row.decode(forColumn: "duration_ms"))
        byteSize = UInt64(bitPattern: try row.decode(forColumn: "byte_size"))
    }

    func encode(to container: inout PersistenceContainer) {
        container["id"] = id
        container["name"] = name
        container["cdn_url"] = cdnURL
        container["duration_ms"] = Int64(bitPattern: durationMs)
        container["byte_size"] = Int64(bitPattern: byteSize)
    }

    func file(in course: EntityID) -> MediaFile {
        MediaFile(id: id, courseID: course, name: name, cdnURL: cdnURL, durationMs: durationMs, byteSize: byteSize)
    }
}

struct ConfirmedVideo: FetchableRecord, PersistableRecord {
    static let databaseTableName = "videos"
    var video: Video

    init(_ video: Video) { self.video = video }

    init(row: Row) throws {
        video = Video(id: try row.decode(forColumn: "id"), chapterID: try row.decode(forColumn: "chapter_id"),
                      mediaFileID: try row.decode(forColumn: "media_id"), title: try row.decode(forColumn: "title"),
                      position: try row.decode(forColumn: "position"))
    }

    func encode(to container: inout PersistenceContainer) {
        container["id"] = video.id
        container["chapter_id"] = video.chapterID
        container["media_id"] = video.mediaFileID
        container["title"] = video.title
        container["position"] = video.position
    }
}
