import Foundation
import GRDB
import SyncModel

// How the replica's rows map to SQLite: GRDB values for IDs, keys and statuses, and records for
// the rows (the app's visible rows, and the confirmed state's rows behind them).

extension EntityID: DatabaseValueConvertible {
    /// 16 bytes.
    public var databaseValue: DatabaseValue { data.databaseValue }

    public static func fromDatabaseValue(_ value: DatabaseValue) -> EntityID? {
        Data.fromDatabaseValue(value).flatMap { EntityID(bytes: $0) }
    }
}

extension LocalKey: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { rawValue.databaseValue }

    public static func fromDatabaseValue(_ value: DatabaseValue) -> LocalKey? { EntityID.fromDatabaseValue(value).map(LocalKey.init) }
}

extension RowStatus: DatabaseValueConvertible {}

/// A row of the replica as a GRDB record, with its columns in a fixed order, so that a step's rows
/// are written through one cached statement per table. (The values are existentials, not
/// `DatabaseValue`s: GRDB turns those into statement arguments through a key path instantiated
/// per call, which was most of the cost of writing a row.)
public protocol ReplicaRecord: FetchableRecord, PersistableRecord {
    static var databaseColumns: [String] { get }
    var databaseValues: [(any DatabaseValueConvertible)?] { get }
}

extension ReplicaRecord {
    public func encode(to container: inout PersistenceContainer) {
        for (column, value) in zip(Self.databaseColumns, databaseValues) { container[column] = value }
    }
}

extension ChapterRow: FetchableRecord, PersistableRecord, ReplicaRecord {
    public static let databaseTableName = "visible_chapters"

    public init(row: Row) throws {
        self.init(key: try row.decode(forColumn: "key"), id: try row.decode(forColumn: "id"), title: try row.decode(forColumn: "title"),
                  position: try row.decode(forColumn: "position"), version: UInt64(bitPattern: try row.decode(forColumn: "version")),
                  status: try row.decode(forColumn: "status"))
    }

    public static let databaseColumns = ["key", "id", "title", "position", "version", "status"]

    public var databaseValues: [(any DatabaseValueConvertible)?] {
        [key, id, title, position, Int64(bitPattern: version), status]
    }
}

extension MediaRow: FetchableRecord, PersistableRecord, ReplicaRecord {
    public static let databaseTableName = "visible_media"

    public init(row: Row) throws {
        self.init(key: try row.decode(forColumn: "key"), id: try row.decode(forColumn: "id"), name: try row.decode(forColumn: "name"),
                  cdnURL: try row.decode(forColumn: "cdn_url"), durationMs: UInt64(bitPattern: try row.decode(forColumn: "duration_ms")),
                  byteSize: UInt64(bitPattern: try row.decode(forColumn: "byte_size")), status: try row.decode(forColumn: "status"))
    }

    public static let databaseColumns = ["key", "id", "name", "cdn_url", "duration_ms", "byte_size", "status"]

    public var databaseValues: [(any DatabaseValueConvertible)?] {
        [key, id, name, cdnURL, Int64(bitPattern: durationMs), Int64(bitPattern: byteSize), status]
    }
}

extension VideoRow: FetchableRecord, PersistableRecord, ReplicaRecord {
    public static let databaseTableName = "visible_videos"

    public init(row: Row) throws {
        self.init(key: try row.decode(forColumn: "key"), id: try row.decode(forColumn: "id"), chapterKey: try row.decode(forColumn: "chapter_key"),
                  mediaKey: try row.decode(forColumn: "media_key"), title: try row.decode(forColumn: "title"),
                  position: try row.decode(forColumn: "position"), status: try row.decode(forColumn: "status"))
    }

    public static let databaseColumns = ["key", "id", "chapter_key", "media_key", "title", "position", "status"]

    public var databaseValues: [(any DatabaseValueConvertible)?] {
        [key, id, chapterKey, mediaKey, title, position, status]
    }
}

/// The confirmed state's rows as files before the `confirmedLog` migration kept them (read once,
/// by that migration, to make the base).
struct ConfirmedChapter: FetchableRecord {
    var id: EntityID
    var title: String
    var position: Int
    var version: UInt64

    init(row: Row) throws {
        (id, title, position) = (try row.decode(forColumn: "id"), try row.decode(forColumn: "title"), try row.decode(forColumn: "position"))
        version = UInt64(bitPattern: try row.decode(forColumn: "version"))
    }

    static func fetchAll(_ db: Database) throws -> [ConfirmedChapter] { try fetchAll(db, sql: "SELECT id, title, position, version FROM chapters") }

    func chapter(in course: EntityID) -> Chapter { Chapter(id: id, courseID: course, title: title, position: position, version: version) }
}

struct ConfirmedMedia: FetchableRecord {
    var id: EntityID
    var name: String
    var cdnURL: String
    var durationMs: UInt64
    var byteSize: UInt64

    init(row: Row) throws {
        (id, name, cdnURL) = (try row.decode(forColumn: "id"), try row.decode(forColumn: "name"), try row.decode(forColumn: "cdn_url"))
        durationMs = UInt64(bitPattern: try row.decode(forColumn: "duration_ms"))
        byteSize = UInt64(bitPattern: try row.decode(forColumn: "byte_size"))
    }

    static func fetchAll(_ db: Database) throws -> [ConfirmedMedia] {
        try fetchAll(db, sql: "SELECT id, name, cdn_url, duration_ms, byte_size FROM media")
    }

    func file(in course: EntityID) -> MediaFile {
        MediaFile(id: id, courseID: course, name: name, cdnURL: cdnURL, durationMs: durationMs, byteSize: byteSize)
    }
}

struct ConfirmedVideo: FetchableRecord {
    var video: Video

    init(row: Row) throws {
        video = Video(id: try row.decode(forColumn: "id"), chapterID: try row.decode(forColumn: "chapter_id"),
                      mediaFileID: try row.decode(forColumn: "media_id"), title: try row.decode(forColumn: "title"),
                      position: try row.decode(forColumn: "position"))
    }

    static func fetchAll(_ db: Database) throws -> [ConfirmedVideo] {
        try fetchAll(db, sql: "SELECT id, chapter_id, media_id, title, position FROM videos")
    }
}
