import Foundation

/// Gives the rows a batch creates their IDs. The server mints real IDs; a client predicting the
/// outcome of its own pending batches uses provisional ones.
public protocol IDAllocator {
    /// The ID for the row that `temp` creates. Must never return an ID already in use.
    mutating func allocate(for temp: TempID) -> EntityID
}

/// Mints random version-4 UUIDs from an injected generator (the system's in production, a seeded
/// one in tests and the simulator).
public struct RandomIDAllocator<Generator: RandomNumberGenerator>: IDAllocator {
    public var generator: Generator

    public init(_ generator: Generator) { self.generator = generator }

    public mutating func allocate(for temp: TempID) -> EntityID {
        .random(using: &generator)
    }
}

/// The server's allocator: time-ordered version-7 UUIDs (``EntityID/timeOrdered(unixMilliseconds:using:)``),
/// all stamped with the moment of the commit that mints them.
public struct TimeOrderedIDAllocator<Generator: RandomNumberGenerator>: IDAllocator {
    public var unixMilliseconds: UInt64
    public var generator: Generator

    public init(unixMilliseconds: UInt64, _ generator: Generator) {
        self.unixMilliseconds = unixMilliseconds
        self.generator = generator
    }

    /// Stamped with the system clock's current time.
    public init(now date: Date = Date(), _ generator: Generator) {
        self.init(unixMilliseconds: UInt64(max(0, date.timeIntervalSince1970 * 1000)), generator)
    }

    public mutating func allocate(for temp: TempID) -> EntityID {
        .timeOrdered(unixMilliseconds: unixMilliseconds, using: &generator)
    }
}

/// The client's allocator: the provisional ID of each temp ID, stable across replays.
public struct ProvisionalIDAllocator: IDAllocator {
    public init() {}

    public mutating func allocate(for temp: TempID) -> EntityID { .provisional(temp) }
}

/// SplitMix64: a small, fast, seedable generator. Same seed, same sequence, on every platform,
/// which is what a reproducible test or simulation needs.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
