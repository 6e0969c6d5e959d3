/// A token bucket: it fills at `rate` units per second up to `burst`, and ``take(_:now:)`` spends
/// from it. A take is allowed while the bucket holds a whole unit and may overdraw it (a frame
/// larger than what is left still passes once; the debt is paid back before the next one): so
/// `burst` units pass at once, and the next take waits for the refill. The server holds each
/// connection to its rates with these; the client paces its pushes with one at the rates the
/// server's `Welcome` states.
public struct TokenBucket: Hashable, Sendable {
    public let rate: Int
    public let burst: Int
    private var level: Double
    private var updated: Moment

    public init(rate: Int, burst: Int, now: Moment) {
        precondition(rate > 0 && burst > 0)
        self.rate = rate
        self.burst = burst
        level = Double(burst)
        updated = now
    }

    /// Spends `amount` if the bucket holds a whole unit (always, for an amount of 0 or less).
    public mutating func take(_ amount: Int, now: Moment) -> Bool {
        refill(now)
        guard amount <= 0 || level >= 1 else { return false }
        level -= Double(amount)
        return true
    }

    /// Spends `amount` at `now` whatever the bucket holds (a debt the refill pays back first).
    public mutating func overdraw(_ amount: Int, now: Moment) {
        refill(now)
        level -= Double(amount)
    }

    /// How long after `now` until the bucket holds `units` (zero if it does).
    public mutating func wait(until units: Double, now: Moment) -> Duration {
        refill(now)
        let missing = min(units, Double(burst)) - level
        guard missing > 0 else { return .zero }
        return .nanoseconds(Int64(min((missing / Double(rate) * 1e9).rounded(.up), 3.6e12)))
    }

    private mutating func refill(_ now: Moment) {
        guard now > updated else { return }
        level = min(Double(burst), level + Double((now - updated).wholeNanoseconds) / 1e9 * Double(rate))
        updated = now
    }
}
