import SyncModel

/// A course made in one step for a tool, a benchmark or a test: created, then filled by one
/// set-up batch from a set-up client (so its rows, change log and records are those of any
/// commit). `coursesync demo`, the benchmarks, the stress run and the tests all start from it.
public struct CourseSeed: Sendable {
    /// One media file of the library.
    public struct Media: Sendable {
        public var name: String
        public var cdnURL: String
        public var durationMs: UInt64
        public var byteSize: UInt64

        public init(name: String, cdnURL: String, durationMs: UInt64 = 60_000, byteSize: UInt64 = 10_000_000) {
            self.name = name
            self.cdnURL = cdnURL
            self.durationMs = durationMs
            self.byteSize = byteSize
        }

        /// `count` files named `prefix 0`, `prefix 1`, … at `https://cdn.example.com/N.mp4`.
        public static func numbered(_ count: Int, prefix: String = "Clip") -> [Media] {
            (0..<count).map { Media(name: "\(prefix) \($0)", cdnURL: "https://cdn.example.com/\($0).mp4") }
        }
    }

    /// What was made: the course, and the real IDs of its chapters and media files in the seed's order.
    public struct Seeded: Sendable {
        public var course: EntityID
        public var chapters: [EntityID]
        public var media: [EntityID]
    }

    public var id: EntityID
    public var title: String
    public var chapters: [String]
    public var media: [Media]

    public init(id: EntityID, title: String, chapters: [String] = [], media: [Media] = []) {
        self.id = id
        self.title = title
        self.chapters = chapters
        self.media = media
    }

    /// `count` chapters titled `Chapter 0`, `Chapter 1`, ….
    public static func numberedChapters(_ count: Int) -> [String] { (0..<count).map { "Chapter \($0)" } }

    /// Creates the course in `store` and commits the set-up batch (if there is anything to set
    /// up); throws if the course exists or the batch is refused.
    @discardableResult
    public func make(in store: some SyncStore) async throws -> Seeded {
        try await store.createCourse(Course(id: id, title: title))
        guard !chapters.isEmpty || !media.isEmpty else { return Seeded(course: id, chapters: [], media: []) }
        let mediaTemp = UInt64(chapters.count + 1)
        var ops: [SyncModel.Operation] = chapters.enumerated().map {
            .createChapter(temp: TempID(UInt64($0.offset + 1))!, title: $0.element, placement: .atEnd)
        }
        ops += media.enumerated().map {
            .registerMedia(temp: TempID(mediaTemp + UInt64($0.offset))!, name: $0.element.name, cdnURL: $0.element.cdnURL,
                           durationMs: $0.element.durationMs, byteSize: $0.element.byteSize)
        }
        var generator = SystemRandomNumberGenerator()
        let setup = Batch(clientID: ClientID(.random(using: &generator)), courseID: id, batchSeq: 1, baseSeq: 0, ops: ops)
        let outcome = try await store.commit([setup], courseID: id)
        guard case .committed(let commit)? = outcome.first else { throw SeedError(description: "the set-up batch of course \(id) was refused: \(outcome)") }
        let ids = commit.ack.idMap
        return Seeded(course: id, chapters: (0..<chapters.count).map { ids[TempID(UInt64($0 + 1))!]! },
                      media: (0..<media.count).map { ids[TempID(mediaTemp + UInt64($0))!]! })
    }

    public struct SeedError: Error, CustomStringConvertible {
        public var description: String
    }
}
