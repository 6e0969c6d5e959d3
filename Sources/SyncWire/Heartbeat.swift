import SyncModel

/// The heartbeat rule of `protocol/README.md` §8, the same for both ends of a connection: a side
/// that has *received* nothing for one interval sends a `Ping` (and another after each further
/// quiet interval); a side that has received nothing for three closes the connection with
/// `IDLE_TIMEOUT`. Received, not sent: a watcher that only listens still hears the server, and the
/// server, hearing nothing from it, pings it, so its `Pong`s keep the connection alive both ways.
public struct Heartbeat: Hashable, Sendable {
    public enum Due: Hashable, Sendable {
        /// Send a `Ping`.
        case ping
        /// Close the connection: nothing arrived for ``timeout``.
        case timeout
    }

    public let interval: Duration
    /// Quiet intervals before the connection counts as dead.
    public static let intervalsToTimeout = 3
    public private(set) var lastReceived: Moment
    /// Pings sent since something was last received.
    private var pings = 0

    public init(interval: Duration, now: Moment) {
        precondition(interval > .zero, "a heartbeat interval must be positive")
        self.interval = interval
        lastReceived = now
    }

    public var timeout: Duration { interval * Self.intervalsToTimeout }

    /// Something arrived from the peer.
    public mutating func received(now: Moment) {
        lastReceived = max(lastReceived, now)
        pings = 0
    }

    /// When ``fire(now:)`` next has something to do.
    public var deadline: Moment {
        pings + 1 < Self.intervalsToTimeout ? lastReceived + interval * (pings + 1) : lastReceived + timeout
    }

    /// What is due at `now`, if anything.
    public mutating func fire(now: Moment) -> Due? {
        if now >= lastReceived + timeout { return .timeout }
        guard now >= deadline else { return nil }
        // One ping per quiet interval, however late the timer fired.
        pings = Int((now - lastReceived) / interval)
        return .ping
    }
}

/// A real monotonic clock read as the cores' ``Moment``s (nanoseconds since the clock was made),
/// for the drivers: they pass ``now()`` to a core and sleep until ``instant(_:)`` of its deadline.
public struct MomentClock: Sendable {
    private let origin = ContinuousClock.now

    public init() {}

    public func now() -> Moment { Moment(nanoseconds: (ContinuousClock.now - origin).wholeNanoseconds) }

    /// The instant `moment` stands for, to sleep until.
    public func instant(_ moment: Moment) -> ContinuousClock.Instant { origin + .nanoseconds(moment.nanoseconds) }

    /// The moment `instant` stands for on this clock.
    public func moment(_ instant: ContinuousClock.Instant) -> Moment {
        Moment(nanoseconds: (instant - origin).wholeNanoseconds)
    }

    /// Sleeps until `moment` (throws if cancelled).
    public func sleep(until moment: Moment) async throws {
        try await Task.sleep(until: instant(moment), clock: .continuous)
    }
}
