import NIOConcurrencyHelpers
import NIOCore
import SyncModel
import SyncWire

/// The node's admission policy, for every transport: open connections per address and per user,
/// the pause after a cut for the push rate, and the push rate of HTTP batches (held to what a
/// connection may push). One lock; every map is bounded.
final class Admission: Sendable {
    private struct State {
        /// Open connections per remote IP address, and per authenticated user.
        var perAddress: [String: Int] = [:]
        var perUser: [String: Int] = [:]
        /// Users lately cut for their rate, and until when they are refused (`RATE_LIMITED`): a
        /// client that reconnects at once does not get a fresh allowance.
        var penalties: [String: NIODeadline] = [:]
        /// Batches sent over HTTP, per user: held to the same rate as a connection's pushes.
        var httpPushes: [String: TokenBucket] = [:]
    }

    /// The wait a connection refused for a count limit is asked for: a connection must close first.
    static let countLimitRetryMs: UInt32 = 5_000
    /// Most users remembered for a penalty or an HTTP allowance before expired entries are dropped.
    static let maxRemembered = 10_000

    let limits: ServerLimits
    private let state = NIOLockedValueBox(State())
    private let clock = MomentClock()

    init(limits: ServerLimits) { self.limits = limits }

    /// Counts a connection from `address`; refuses it (still counted: ``release(address:user:)``
    /// ends every connection) if the address has more than its share.
    func open(from address: String) -> (ConnectionError, Refusal)? {
        let count = state.withLockedValue { state in
            state.perAddress[address, default: 0] += 1
            return state.perAddress[address]!
        }
        guard count > limits.connectionsPerAddress else { return nil }
        return (ConnectionError(.limitExceeded, "more than \(limits.connectionsPerAddress) connections from \(address)",
                                retryAfterMs: Self.countLimitRetryMs), .connectionsPerAddress)
    }

    /// A verified principal is admitted unless its user was cut for its rate a moment ago or holds
    /// as many connections as allowed; an admitted one is counted under its user.
    func admit(_ principal: Principal) -> (ConnectionError, Refusal)? {
        let limit = limits.connectionsPerUser
        return state.withLockedValue { state in
            let now = NIODeadline.now()
            if let until = state.penalties[principal.user] {
                if until > now {
                    let ms = UInt32(clamping: max((until - now).nanoseconds / 1_000_000, 1))
                    return (ConnectionError(.rateLimited, "\(principal.user) was cut for its rate; reconnect in \(ms) ms", retryAfterMs: ms),
                            .rateCutPause)
                }
                state.penalties[principal.user] = nil
            }
            guard state.perUser[principal.user, default: 0] < limit else {
                return (ConnectionError(.limitExceeded, "\(principal.user) already has \(limit) connections to this node",
                                        retryAfterMs: Self.countLimitRetryMs), .connectionsPerUser)
            }
            state.perUser[principal.user, default: 0] += 1
            return nil
        }
    }

    /// A connection from `address` ended; `user`: the user it was admitted as, if it was.
    func release(address: String, user: String?) {
        state.withLockedValue { state in
            Self.release(address, from: &state.perAddress)
            if let user { Self.release(user, from: &state.perUser) }
        }
    }

    /// Refuses `user`'s connections for `wait` (bounded: expired entries go when the map is full).
    func penalize(_ user: String, for wait: TimeAmount) {
        state.withLockedValue { state in
            let now = NIODeadline.now()
            if state.penalties.count >= Self.maxRemembered { state.penalties = state.penalties.filter { $0.value > now } }
            state.penalties[user] = now + wait
        }
    }

    /// Takes one HTTP batch from `user`'s allowance (``SessionLimits/pushesPerSecond``, with its
    /// burst); `nil` if it may go, else the milliseconds to wait. Users whose allowance is full
    /// again are forgotten once more than ``maxRemembered`` are held.
    func takeHTTPPush(by user: String) -> UInt32? {
        let now = clock.now()
        let limits = limits.session
        return state.withLockedValue { state in
            if state.httpPushes.count > Self.maxRemembered {
                state.httpPushes = state.httpPushes.filter { _, bucket in
                    var bucket = bucket
                    return bucket.wait(until: Double(bucket.burst), now: now) > .zero
                }
            }
            var bucket = state.httpPushes[user] ?? TokenBucket(rate: limits.pushesPerSecond, burst: limits.pushBurst, now: now)
            defer { state.httpPushes[user] = bucket }
            if bucket.take(1, now: now) { return nil }
            return UInt32(clamping: max(bucket.wait(until: 1, now: now).wholeMilliseconds, 1))
        }
    }

    /// One connection fewer under `key`; a count that reaches zero leaves the map.
    private static func release(_ key: String, from counts: inout [String: Int]) {
        counts[key]! -= 1
        if counts[key] == 0 { counts[key] = nil }
    }
}

/// Who may do what to a course, and the words for it: the one rule the session (TCP and
/// WebSocket) and the HTTP API apply.
enum AccessPolicy {
    /// Why `principal` may not read `courseID` (subscribe, fetch the outline), or `nil`.
    static func readRefusal(_ principal: Principal, courseID: EntityID) -> ConnectionError? {
        principal.role(in: courseID) == nil ? ConnectionError(.forbidden, "the token gives no access to course \(courseID)") : nil
    }

    /// Why `principal` may not edit `courseID`: the rejection its batch gets, or `nil`.
    static func editRejection(_ principal: Principal, courseID: EntityID) -> Rejection? {
        switch principal.role(in: courseID) {
        case .editor: nil
        case .viewer: Rejection(.forbidden, "a viewer of course \(courseID) may not edit it")
        case nil: Rejection(.forbidden, "the token gives no access to course \(courseID)")
        }
    }

    /// The words of a push over the rate (``SessionLimits/pushesPerSecond``).
    static func overPushRate(_ limits: SessionLimits) -> String {
        "more than \(limits.pushesPerSecond) pushes per second"
    }
}
