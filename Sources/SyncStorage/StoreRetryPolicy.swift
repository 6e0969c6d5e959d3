/// How long ``StoreEngine`` keeps trying a call the database failed: a few retries with a pause
/// that doubles each time, then the call throws ``StoreError/unavailable(_:detail:)``.
public struct StoreRetryPolicy: Hashable, Sendable {
    /// Tries after the first failure; then the call throws ``StoreError/unavailable(_:detail:)``.
    public var retries: Int
    /// The pause before the first retry; each next pause is twice as long, up to `maxDelay`.
    public var firstDelay: Duration
    public var maxDelay: Duration

    /// About 9 s of pauses (50 ms doubling to 2 s, 9 retries): a database restart or a
    /// failover's promotion usually fits, and a writer waits no longer than that for an answer.
    public static let standard = StoreRetryPolicy(retries: 9, firstDelay: .milliseconds(50), maxDelay: .seconds(2))
    /// No retry: the first failure is thrown.
    public static let none = StoreRetryPolicy(retries: 0, firstDelay: .zero, maxDelay: .zero)

    public init(retries: Int, firstDelay: Duration, maxDelay: Duration) {
        precondition(retries >= 0 && firstDelay >= .zero && maxDelay >= firstDelay)
        self.retries = retries
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
    }

    /// The pause before retry `retry` (1 for the first).
    public func delay(beforeRetry retry: Int) -> Duration {
        var delay = firstDelay
        for _ in 1..<max(1, retry) where delay < maxDelay { delay = min(maxDelay, delay * 2) }
        return delay
    }

    /// The sum of every pause: how long a call keeps trying, besides the calls themselves.
    public var totalDelay: Duration { (0..<retries).reduce(.zero) { $0 + delay(beforeRetry: $1 + 1) } }
}
