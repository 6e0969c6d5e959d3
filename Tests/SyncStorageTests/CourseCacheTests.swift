@testable import SyncStorage
import SyncModel
import Testing

/// The engine's memory is bounded, and forgetting never loses what is still current.
@Suite struct CourseCacheTests {
    static func ack(_ batchSeq: BatchSeq, _ temps: [UInt64: EntityID]) -> Ack {
        Ack(courseID: EntityID(bytes: Array(repeating: 1, count: 16))!, batchSeq: batchSeq, seq: batchSeq,
            idMap: Dictionary(uniqueKeysWithValues: temps.map { (TempID($0.key)!, $0.value) }), notes: [])
    }

    static func id(_ byte: UInt8) -> EntityID { EntityID(bytes: Array(repeating: byte, count: 16))! }

    @Test func recentCommitsKeepTheLatestAndForgetTheirTempIDsWithThem() {
        let ada = ClientID(Self.id(7))
        var recent = RecentCommits(capacity: 2)
        recent.remember(Self.ack(1, [1: Self.id(10)]), of: ada)
        recent.remember(Self.ack(2, [2: Self.id(20)]), of: ada)
        recent.remember(Self.ack(3, [3: Self.id(30)]), of: ada)
        #expect(recent.count == 2)
        #expect(recent.acks[BatchKey(client: ada, batchSeq: 1)] == nil)
        #expect(recent.acks[BatchKey(client: ada, batchSeq: 3)] != nil)
        #expect(recent.temps[ada] == [TempID(2)!: Self.id(20), TempID(3)!: Self.id(30)])
        // Remembering the same batch again changes nothing.
        recent.remember(Self.ack(3, [3: Self.id(30)]), of: ada)
        #expect(recent.count == 2 && recent.acks[BatchKey(client: ada, batchSeq: 2)] != nil)
        for seq in 4...100 { recent.remember(Self.ack(BatchSeq(seq), [UInt64(seq): Self.id(UInt8(seq))]), of: ada) }
        #expect(recent.count == 2 && recent.temps[ada]?.count == 2)
    }

    @Test func theLeastRecentlyUsedCourseGoesFirst() {
        var cache = CourseCache(maxCourses: 2, recentPerCourse: 4)
        let one = CourseState(course: Course(id: Self.id(1), title: "One"))
        let two = CourseState(course: Course(id: Self.id(2), title: "Two"))
        let three = CourseState(course: Course(id: Self.id(3), title: "Three"))
        cache.keep(one)
        cache.keep(two)
        _ = cache.use(Self.id(1))
        cache.keep(three)
        #expect(cache.count == 2)
        #expect(cache.state(of: Self.id(2)) == nil && cache.state(of: Self.id(1)) != nil && cache.state(of: Self.id(3)) != nil)
    }

    @Test func anOlderStateNeverReplacesANewerOne() {
        var cache = CourseCache(maxCourses: 4, recentPerCourse: 4)
        cache.keep(CourseState(course: Course(id: Self.id(1), title: "One", seq: 5)))
        cache.keep(CourseState(course: Course(id: Self.id(1), title: "One", seq: 4)))
        #expect(cache.state(of: Self.id(1))?.seq == 5)
    }

    /// A thousand courses touched once leave at most the byte bound resident (least recently used
    /// out first), and the course just kept always stays.
    @Test func aThousandCoursesLeaveAtMostTheByteBound() {
        let bound = 100 * 1_024
        var cache = CourseCache(maxCourses: 10_000, maxBytes: bound, recentPerCourse: 4)
        var last = Self.id(0)
        for index in 0..<1_000 {
            var bytes = Array(repeating: UInt8(0), count: 16)
            bytes[0] = UInt8(index & 0xFF)
            bytes[1] = UInt8(index >> 8)
            last = EntityID(bytes: bytes)!
            let course = Course(id: last, title: "Course \(index)")
            let media = (0..<10).map { MediaFile(id: EntityID(bytes: [UInt8(index & 0xFF), UInt8(index >> 8), 1, UInt8($0)] + Array(repeating: 0, count: 12))!,
                                                  courseID: last, name: "Clip", cdnURL: "https://cdn.example.com/x", durationMs: 1, byteSize: 1) }
            cache.keep(CourseState(course: course, chapters: [], media: media, videos: []))
            #expect(cache.bytes <= bound)
        }
        #expect(cache.count == bound / CourseCache.estimatedBytes(cache.state(of: last), recent: 0))
        #expect(cache.state(of: last) != nil)
        // A course larger than the whole bound is still kept (alone): the commit in progress needs it.
        let huge = CourseState(course: Course(id: Self.id(9), title: "Huge"), chapters: [],
                               media: (0..<1_000).map { MediaFile(id: EntityID(bytes: [9, 9] + withUnsafeBytes(of: UInt16($0)) { Array($0) } + Array(repeating: 0, count: 12))!,
                                                                  courseID: Self.id(9), name: "Clip", cdnURL: "https://cdn.example.com/x", durationMs: 1, byteSize: 1) },
                               videos: [])
        cache.keep(huge)
        #expect(cache.count == 1 && cache.state(of: Self.id(9)) != nil)
    }
}
