import SyncModel

/// A stored value, as a backend moves it without knowing what it means.
public enum StoreValue: Sendable, Hashable {
    case id(EntityID)
    case integer(Int64)
    case text(String)
    case bytes([UInt8])

    func id() throws -> EntityID {
        guard case .id(let id) = self else { throw StoreError.corrupt("expected an ID, found \(self)") }
        return id
    }

    func integer() throws -> Int64 {
        guard case .integer(let value) = self else { throw StoreError.corrupt("expected an integer, found \(self)") }
        return value
    }

    func text() throws -> String {
        guard case .text(let text) = self else { throw StoreError.corrupt("expected text, found \(self)") }
        return text
    }

    func bytes() throws -> [UInt8] {
        guard case .bytes(let bytes) = self else { throw StoreError.corrupt("expected bytes, found \(self)") }
        return bytes
    }
}

/// One table of the schema (`migrations/0001_schema.sql`) as copying sees it: its name and the
/// columns a dump holds, each with the kind of value it stores. What a row means is
/// ``StoreDump``'s (written once, here); a backend only reads and writes rows
/// (``StoreBackend/readRows(_:)``, ``StoreBackend/insertRows(_:)``).
public struct StoreTable: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// A UUID (`uuid` in PostgreSQL, a 16-byte blob in SQLite).
        case id
        /// A 64-bit integer (`bigint` or `integer`; uint64s as their bit pattern).
        case integer
        case text
        case bytes
    }

    public struct Column: Sendable, Hashable {
        public let name: String
        public let kind: Kind
    }

    public let name: String
    public let columns: [Column]

    init(_ name: String, _ columns: [(String, Kind)]) {
        self.name = name
        self.columns = columns.map { Column(name: $0.0, kind: $0.1) }
    }

    static let courses = StoreTable("courses", [("id", .id), ("title", .text), ("seq", .integer)])
    static let chapters = StoreTable("chapters", [("id", .id), ("course_id", .id), ("title", .text), ("position", .integer), ("version", .integer)])
    static let media = StoreTable("media_files", [("id", .id), ("course_id", .id), ("name", .text), ("cdn_url", .text),
                                                  ("duration_ms", .integer), ("byte_size", .integer)])
    static let videos = StoreTable("videos", [("id", .id), ("course_id", .id), ("chapter_id", .id), ("media_file_id", .id), ("title", .text),
                                              ("position", .integer)])
    static let log = StoreTable("change_log", [("course_id", .id), ("seq", .integer), ("origin_client_id", .id), ("origin_batch_seq", .integer),
                                               ("diff", .bytes), ("author", .text), ("summary", .text)])
    static let batches = StoreTable("client_batches", [("client_id", .id), ("course_id", .id), ("batch_seq", .integer), ("seq", .integer), ("ack", .bytes)])
    static let temps = StoreTable("client_temps", [("client_id", .id), ("course_id", .id), ("temp", .integer), ("entity_id", .id)])
    static let snapshots = StoreTable("course_snapshots", [("course_id", .id), ("seq", .integer), ("state", .bytes)])

    /// Every table a dump holds, parents before children (the order a load inserts them in).
    public static let all: [StoreTable] = [courses, chapters, media, videos, log, batches, temps, snapshots]
}

extension StoreDump {
    /// The dump's rows, table by table in ``StoreTable/all``'s order.
    public var rows: [(table: StoreTable, rows: [[StoreValue]])] {
        let courseOfChapter = Dictionary(chapters.map { ($0.id, $0.courseID) }, uniquingKeysWith: { first, _ in first })
        return [
            (.courses, courses.map { [.id($0.id), .text($0.title), .integer(Int64($0.seq))] }),
            (.chapters, chapters.map { [.id($0.id), .id($0.courseID), .text($0.title), .integer(Int64($0.position)), .integer(Int64($0.version))] }),
            (.media, media.map { [.id($0.id), .id($0.courseID), .text($0.name), .text($0.cdnURL), .integer(Int64($0.durationMs)), .integer(Int64($0.byteSize))] }),
            // A video's course is its chapter's (a video without its chapter is refused by the foreign key when loaded).
            (.videos, videos.map { [.id($0.id), .id(courseOfChapter[$0.chapterID] ?? $0.chapterID), .id($0.chapterID), .id($0.mediaFileID),
                                    .text($0.title), .integer(Int64($0.position))] }),
            (.log, log.map { [.id($0.courseID), .integer(Int64($0.seq)), .id($0.origin.clientID.id), .integer(Int64(bitPattern: $0.origin.batchSeq)), .bytes($0.diff),
                              .text($0.author), .text($0.summary)] }),
            (.batches, batches.map { [.id($0.client.id), .id($0.courseID), .integer(Int64(bitPattern: $0.batchSeq)), .integer(Int64($0.seq)), .bytes($0.ack)] }),
            (.temps, temps.map { [.id($0.client.id), .id($0.courseID), .integer(Int64(bitPattern: $0.temp.rawValue)), .id($0.entity)] }),
            (.snapshots, snapshots.map { [.id($0.courseID), .integer(Int64($0.seq)), .bytes($0.state)] }),
        ]
    }

    /// The dump that `rows` (as ``StoreBackend/readRows(_:)`` reads ``StoreTable/all``) hold;
    /// throws ``StoreError/corrupt(_:)`` on a value of the wrong kind or out of range.
    public init(rows: [[[StoreValue]]]) throws {
        self.init()
        guard rows.count == StoreTable.all.count else { throw StoreError.corrupt("\(rows.count) tables read, \(StoreTable.all.count) expected") }
        for (table, rows) in zip(StoreTable.all, rows) {
            for row in rows where row.count != table.columns.count {
                throw StoreError.corrupt("a row of \(table.name) with \(row.count) values, \(table.columns.count) expected")
            }
        }
        func count<T: FixedWidthInteger>(_ value: StoreValue, as: T.Type = T.self) throws -> T {
            guard let converted = T(exactly: try value.integer()) else { throw StoreError.corrupt("\(value) is out of range") }
            return converted
        }
        courses = try rows[0].map { Course(id: try $0[0].id(), title: try $0[1].text(), seq: try count($0[2])) }
        chapters = try rows[1].map {
            Chapter(id: try $0[0].id(), courseID: try $0[1].id(), title: try $0[2].text(), position: try count($0[3]), version: try count($0[4]))
        }
        media = try rows[2].map {
            MediaFile(id: try $0[0].id(), courseID: try $0[1].id(), name: try $0[2].text(), cdnURL: try $0[3].text(),
                      durationMs: try count($0[4]), byteSize: try count($0[5]))
        }
        videos = try rows[3].map {
            Video(id: try $0[0].id(), chapterID: try $0[2].id(), mediaFileID: try $0[3].id(), title: try $0[4].text(), position: try count($0[5]))
        }
        log = try rows[4].map {
            LogEntry(courseID: try $0[0].id(), seq: try count($0[1]),
                     origin: BatchOrigin(clientID: ClientID(try $0[2].id()), batchSeq: BatchSeq(bitPattern: try $0[3].integer())), diff: try $0[4].bytes(),
                     author: try $0[5].text(), summary: try $0[6].text())
        }.sorted { ($0.courseID, $0.seq) < ($1.courseID, $1.seq) }
        batches = try rows[5].map {
            BatchRecord(client: ClientID(try $0[0].id()), courseID: try $0[1].id(), batchSeq: BatchSeq(bitPattern: try $0[2].integer()),
                        seq: try count($0[3]), ack: try $0[4].bytes())
        }
        temps = try rows[6].map {
            guard let temp = TempID(UInt64(bitPattern: try $0[2].integer())) else { throw StoreError.corrupt("temp ID 0") }
            return TempRecord(client: ClientID(try $0[0].id()), courseID: try $0[1].id(), temp: temp, entity: try $0[3].id())
        }
        snapshots = try rows[7].map { SnapshotRecord(courseID: try $0[0].id(), seq: try count($0[1]), state: try $0[2].bytes()) }
    }
}
