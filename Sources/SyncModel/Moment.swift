/// A point on a monotonic clock, in nanoseconds from an arbitrary origin. The sans-I/O cores take
/// the current moment as an input and answer with the moment of their next deadline; the drivers
/// read a real clock (``Moment/init(_:since:)``-style conversions live with them), the simulator
/// advances a simulated one. Only differences between moments of one clock mean anything.
public struct Moment: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    public static let zero = Moment(nanoseconds: 0)

    public static func milliseconds(_ ms: Int64) -> Moment { Moment(nanoseconds: ms * 1_000_000) }

    public static func < (a: Moment, b: Moment) -> Bool { a.nanoseconds < b.nanoseconds }

    public static func + (moment: Moment, duration: Duration) -> Moment {
        Moment(nanoseconds: moment.nanoseconds &+ duration.wholeNanoseconds)
    }

    public static func - (a: Moment, b: Moment) -> Duration { .nanoseconds(a.nanoseconds &- b.nanoseconds) }

    public var description: String {
        let ms = nanoseconds / 1_000_000
        return "t=\(ms / 1000).\(String(ms % 1000 + 1000).dropFirst())s"
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating far beyond any timer's range).
    public var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product &+ attoseconds / 1_000_000_000
    }

    /// The duration in whole milliseconds.
    public var wholeMilliseconds: Int64 { wholeNanoseconds / 1_000_000 }
}

/// The earliest of optional deadlines.
public func earliest(_ deadlines: Moment?...) -> Moment? {
    deadlines.compactMap { $0 }.min()
}
