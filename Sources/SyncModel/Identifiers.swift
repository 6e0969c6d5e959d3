import Foundation

/// A server-assigned identifier of a course, chapter, media file or video: a 128-bit UUID.
///
/// The server mints time-ordered (version 7) UUIDs: rows created later get larger IDs, so the
/// stores' and replicas' primary-key indexes grow at their right edge instead of at random pages
/// (see ``EntityID/timeOrdered(unixMilliseconds:using:)``). Nothing may rely on the order for
/// meaning: IDs are opaque. The all-zero upper half is reserved for
/// *provisional* IDs, which a client uses in its own replica for rows whose real ID it does
/// not know yet (see ``EntityID/provisional(_:)``); the server never mints one.
public struct EntityID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The first 8 bytes of the UUID, big-endian.
    public let high: UInt64
    /// The last 8 bytes of the UUID, big-endian.
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses the canonical textual form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, any case).
    public init?(_ text: String) {
        guard let uuid = UUID(uuidString: text) else { return nil }
        self.init(uuid)
    }

    public init(_ uuid: UUID) {
        let b = uuid.uuid
        let bytes = [b.0, b.1, b.2, b.3, b.4, b.5, b.6, b.7, b.8, b.9, b.10, b.11, b.12, b.13, b.14, b.15]
        self.init(bytes: bytes)!
    }

    /// Builds an ID from exactly 16 bytes (the wire form); `nil` for any other length.
    /// (Inlinable, so that each caller gets it specialized for its collection: every ID of every
    /// decoded message comes through here.)
    @inlinable
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 16 else { return nil }
        // Contiguous bytes (`Data`, arrays) load as two words: indexing `Data` byte by byte goes
        // through its representation's switch for each byte.
        if let words = bytes.withContiguousStorageIfAvailable({ buffer in
            let raw = UnsafeRawBufferPointer(buffer)
            return (raw.loadUnaligned(as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }) {
            self.init(high: UInt64(bigEndian: words.0), low: UInt64(bigEndian: words.1))
            return
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        var index = bytes.startIndex
        for _ in 0..<8 {
            high = high << 8 | UInt64(bytes[index])
            bytes.formIndex(after: &index)
        }
        for _ in 0..<8 {
            low = low << 8 | UInt64(bytes[index])
            bytes.formIndex(after: &index)
        }
        self.init(high: high, low: low)
    }

    /// The 16 bytes of the UUID, as they travel on the wire.
    public var bytes: [UInt8] {
        withUnsafeBytes(of: (high.bigEndian, low.bigEndian)) { Array($0) }
    }

    /// The 16 bytes of the UUID as `Data` (protobuf fields, SQLite blobs).
    public var data: Data {
        withUnsafeBytes(of: (high.bigEndian, low.bigEndian)) { Data($0) }
    }

    public var uuid: UUID {
        let b = bytes
        return UUID(uuid: (b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                           b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]))
    }

    public var description: String { uuid.uuidString.lowercased() }

    public static func < (lhs: EntityID, rhs: EntityID) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// A random version-4 UUID drawn from `generator`. Randomness is injected so the model stays
    /// deterministic under a seeded generator (the simulator) and unpredictable under the system one.
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> EntityID {
        // Set the version (4) and the RFC 4122 variant bits. A v4 UUID never has a zero upper
        // half, so it can never be mistaken for a provisional ID.
        let high = (generator.next() & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000
        let low = (generator.next() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return EntityID(high: high, low: low)
    }

    /// A version-7 UUID (RFC 9562): the upper 48 bits are `unixMilliseconds`, then the version,
    /// then 74 random bits from `generator`. IDs minted in a later millisecond sort after those of
    /// an earlier one, so a B-tree keyed by them is appended to at its right edge instead of
    /// having a random leaf page dirtied (and, once it outgrows memory, read) per row.
    /// Like version 4, it never has a zero upper half (the version bits alone see to that), so
    /// it cannot be mistaken for a provisional ID.
    public static func timeOrdered<G: RandomNumberGenerator>(unixMilliseconds: UInt64, using generator: inout G) -> EntityID {
        let high = (unixMilliseconds & 0xFFFF_FFFF_FFFF) << 16 | 0x7000 | (generator.next() & 0x0FFF)
        let low = (generator.next() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return EntityID(high: high, low: low)
    }

    /// The UUID's version (4 random, 7 time-ordered; 0 for a provisional ID).
    public var version: Int { Int(high >> 12 & 0xF) }

    /// The milliseconds since the Unix epoch that a version-7 ID carries; `nil` for other versions.
    public var unixMilliseconds: UInt64? { version == 7 ? high >> 16 : nil }

    /// The provisional ID a client's replica uses for the row that `temp` creates until the
    /// server's real ID arrives. Stable for a given temp ID, so replays give the same result.
    public static func provisional(_ temp: TempID) -> EntityID {
        EntityID(high: 0, low: temp.rawValue)
    }

    /// Whether this is a client-side provisional ID rather than a server-assigned one.
    public var isProvisional: Bool { high == 0 }
}

/// A client-local name for a row the client created but the server has not confirmed.
///
/// Temp IDs are positive integers chosen by the client, unique per (client, course) for ever:
/// a client never reuses one. They travel in their own wire field, so they cannot collide with
/// a real ``EntityID``.
public struct TempID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    /// `nil` for 0, which the wire uses to mean "absent".
    public init?(_ rawValue: UInt64) {
        guard rawValue != 0 else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { "~\(rawValue)" }

    public static func < (lhs: TempID, rhs: TempID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A reference to a row from inside an operation: a real ID, or one of the sending client's temp IDs
/// (created earlier in the same batch or in an earlier batch).
public enum Ref: Hashable, Sendable, CustomStringConvertible {
    case id(EntityID)
    case temp(TempID)

    public var description: String {
        switch self {
        case .id(let id): id.description
        case .temp(let temp): temp.description
        }
    }
}

/// Identifies one client installation (one replica). Chosen by the client, stable across restarts.
public struct ClientID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let id: EntityID

    public init(_ id: EntityID) { self.id = id }

    public var description: String { id.description }

    public static func < (lhs: ClientID, rhs: ClientID) -> Bool { lhs.id < rhs.id }
}

/// A course's commit counter: +1 per committed batch. 0 means "nothing committed yet".
public typealias CourseSeq = UInt64

/// A client's number for one of its batches, unique per (client, course); clients count up from 1.
public typealias BatchSeq = UInt64
