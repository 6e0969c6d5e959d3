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
}
