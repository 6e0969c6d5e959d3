import Foundation
import SyncModel
import Testing

/// The 16-byte wire form of an ID, through each kind of collection a decoder hands it.
@Suite("Entity IDs")
struct IdentifierTests {
    static let text = "00112233-4455-6677-8899-aabbccddeeff"
    static let wire: [UInt8] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF]

    @Test func theWireFormIsTheUUIDsBytesInOrder() throws {
        let id = try #require(EntityID(Self.text))
        #expect(id.high == 0x0011_2233_4455_6677 && id.low == 0x8899_AABB_CCDD_EEFF)
        #expect(id.bytes == Self.wire)
        #expect(id.data == Data(Self.wire))
        #expect(id.description == Self.text)
    }

    @Test func everyCollectionOfSixteenBytesReadsTheSame() throws {
        let id = try #require(EntityID(Self.text))
        // Contiguous storage (array, Data), a slice of Data that does not start at 0, and a
        // collection with no contiguous storage take different paths through the initializer.
        let framed = Data([0xFE, 0xFE, 0xFE] + Self.wire + [0xFE])
        #expect(EntityID(bytes: Self.wire) == id)
        #expect(EntityID(bytes: Data(Self.wire)) == id)
        #expect(EntityID(bytes: framed[3 ..< 19]) == id)
        #expect(EntityID(bytes: Self.wire[...]) == id)
        #expect(EntityID(bytes: Self.wire.lazy.map { $0 }) == id)
    }

    @Test func anyOtherLengthIsRefused() {
        #expect(EntityID(bytes: Array(Self.wire.dropLast())) == nil)
        #expect(EntityID(bytes: Data(Self.wire + [0])) == nil)
        #expect(EntityID(bytes: Data()) == nil)
    }

    @Test func randomIDsRoundTrip() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1_000 {
            let id = EntityID.random(using: &generator)
            #expect(EntityID(bytes: id.data) == id && EntityID(bytes: id.bytes) == id && EntityID(id.description) == id)
        }
    }

    /// The server's IDs: version 7, the RFC's variant, the milliseconds readable back, a later
    /// millisecond sorting after an earlier one whatever the random bits, never provisional.
    @Test func timeOrderedIDsCarryTheirMillisecondAndSortByIt() throws {
        var generator = SplitMix64(seed: 9)
        let ms: UInt64 = 1_795_000_000_123  // 2026-11-18
        let first = EntityID.timeOrdered(unixMilliseconds: ms, using: &generator)
        #expect(first.version == 7 && first.unixMilliseconds == ms)
        #expect(first.low >> 62 == 0b10)
        #expect(try #require(UUID(uuidString: first.description)).uuidString.lowercased() == first.description)
        var previous = first
        for step in 1...1_000 {
            let id = EntityID.timeOrdered(unixMilliseconds: ms + UInt64(step), using: &generator)
            #expect(previous < id && id.unixMilliseconds == ms + UInt64(step))
            previous = id
        }
        // Within one millisecond, 74 random bits tell the IDs apart.
        let sameMillisecond = (0..<1_000).map { _ in EntityID.timeOrdered(unixMilliseconds: ms, using: &generator) }
        #expect(Set(sameMillisecond).count == 1_000 && sameMillisecond.allSatisfy { $0.unixMilliseconds == ms })
        #expect(!EntityID.timeOrdered(unixMilliseconds: 0, using: &generator).isProvisional)
        #expect(EntityID.random(using: &generator).version == 4 && EntityID.random(using: &generator).unixMilliseconds == nil)
        #expect(EntityID.provisional(TempID(5)!).version == 0)
    }
}
