import SyncModel

/// Everything a store holds, row for row, for copying one store into another
/// (`coursesync copy`, between any two backends).
/// Diffs and acks stay in their stored (protobuf) encoding, which both stores share.
public struct StoreDump: Sendable {
    public struct LogEntry: Sendable {
        public var courseID: EntityID
        public var seq: CourseSeq
        public var origin: BatchOrigin
        public var diff: [UInt8]
        public var author: String
        public var summary: String
        public init(courseID: EntityID, seq: CourseSeq, origin: BatchOrigin, diff: [UInt8], author: String = "", summary: String = "") {
            self.courseID = courseID
            self.seq = seq
            self.origin = origin
            self.diff = diff
            self.author = author
            self.summary = summary
        }
    }

    public struct BatchRecord: Sendable {
        public var client: ClientID
        public var courseID: EntityID
        public var batchSeq: BatchSeq
        public var seq: CourseSeq
        public var ack: [UInt8]
        public init(client: ClientID, courseID: EntityID, batchSeq: BatchSeq, seq: CourseSeq, ack: [UInt8]) {
            self.client = client
            self.courseID = courseID
            self.batchSeq = batchSeq
            self.seq = seq
            self.ack = ack
        }
    }

    public struct TempRecord: Sendable {
        public var client: ClientID
        public var courseID: EntityID
        public var temp: TempID
        public var entity: EntityID
        public init(client: ClientID, courseID: EntityID, temp: TempID, entity: EntityID) {
            self.client = client
            self.courseID = courseID
            self.temp = temp
            self.entity = entity
        }
    }

    /// A course as it was at `seq`, encoded (``StoreEngine/course(_:at:)``).
    public struct SnapshotRecord: Sendable {
        public var courseID: EntityID
        public var seq: CourseSeq
        public var state: [UInt8]
        public init(courseID: EntityID, seq: CourseSeq, state: [UInt8]) {
            self.courseID = courseID
            self.seq = seq
            self.state = state
        }
    }

    public var courses: [Course] = []
    public var chapters: [Chapter] = []
    public var media: [MediaFile] = []
    public var videos: [Video] = []
    public var log: [LogEntry] = []
    public var batches: [BatchRecord] = []
    public var temps: [TempRecord] = []
    public var snapshots: [SnapshotRecord] = []

    public init() {}
}
