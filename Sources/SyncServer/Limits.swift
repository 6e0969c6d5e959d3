import SyncModel
import SyncWire

/// The abuse limits of one node, each named by the `serve` flag that sets it. They protect the
/// node's memory, CPU and store from one user or one address: a refused client gets an `Error`
/// with `LIMIT_EXCEEDED` or `RATE_LIMITED` (and a retry-after) and reconnects later, resending
/// what was unanswered, so nothing it did is lost.
public struct ServerLimits: Hashable, Sendable {
    /// `--max-connections-per-user`: open connections one token subject (`sub`) may hold on a node.
    public var connectionsPerUser: Int = 32
    /// `--max-connections-per-address`: open connections from one remote IP address (a classroom
    /// behind one NAT is many users).
    public var connectionsPerAddress: Int = 512
    /// What each connection's session enforces.
    public var session = SessionLimits()

    public init() {}

    /// No limit worth the name: for benchmarks that measure the engine, not the policy.
    public static var unlimited: ServerLimits {
        var limits = ServerLimits()
        limits.connectionsPerUser = .max
        limits.connectionsPerAddress = .max
        limits.session.pushesPerSecond = 1_000_000_000
        limits.session.bytesPerSecond = 1 << 50
        limits.session.maxSubscriptions = .max
        limits.session.presencePerSecond = 1_000_000
        return limits
    }
}

/// The limits one connection's ``ServerSession`` enforces.
public struct SessionLimits: Hashable, Sendable {
    /// `--max-pushes-per-second`: `Push` frames per second, with a burst of two seconds' worth.
    /// Past it the connection is read more slowly (TCP back-pressure), and cut only after
    /// ``sustainedOverRate`` of it.
    public var pushesPerSecond: Int = 500
    /// How long a connection may stay over its push rate, throttled, before it is cut with
    /// `RATE_LIMITED`: a client that keeps to its rate is never throttled that long, even when the
    /// machine bunches its frames.
    public var sustainedOverRate: Duration = .seconds(30)
    /// `--max-bytes-per-second`: frame bytes received per second, with a burst of two seconds'
    /// worth (and at least one largest frame).
    public var bytesPerSecond: Int = 8 << 20
    /// `--max-subscriptions`: courses one connection may be subscribed to at once.
    public var maxSubscriptions: Int = 256
    /// `SetPresence` updates per second per connection, with bursts of twice that; faster ones
    /// are coalesced (the latest per course goes out when the rate allows), never refused.
    public var presencePerSecond: Int = 10
    /// The shortest wait a rate cut asks for (`retry_after_ms`), during which the node also
    /// refuses the user's new connections: a pause that costs a flooding client something, and a
    /// well-behaved one (which paces itself and is never cut) nothing.
    public var rateCutPause: Duration = .seconds(5)
    /// `--handshake-timeout-seconds`: how long a new connection has to complete its handshake
    /// (`Hello` and the token check); `nil`: one heartbeat interval.
    public var handshakeTimeout: Duration?
    /// The handshake timeout `coursesync serve` sets unless told otherwise (the spec's §9).
    public static let defaultHandshakeTimeout: Duration = .seconds(10)

    public init() {}

    /// The pushes a connection may send at once (two seconds' worth).
    public var pushBurst: Int { pushesPerSecond.multipliedReportingOverflow(by: 2).overflow ? .max : pushesPerSecond * 2 }
    /// The bytes a connection may send at once (two seconds' worth, and at least one largest frame).
    public var byteBurst: Int {
        max(bytesPerSecond.multipliedReportingOverflow(by: 2).overflow ? .max : bytesPerSecond * 2, Limits.maxClientFrameBytes)
    }
}

/// Which limit refused a connection (the `limit` label of `coursesync_refusals_total`, and the
/// access log's `refused` field).
public enum Refusal: String, Hashable, Sendable, CaseIterable {
    /// `--max-connections-per-address`, before `Hello`.
    case connectionsPerAddress = "connections-per-address"
    /// `--max-connections-per-user`, after the token check.
    case connectionsPerUser = "connections-per-user"
    /// The pause after a rate cut: the user's new connections are refused until it ends.
    case rateCutPause = "rate-cut-pause"
    /// `--max-pushes-per-second`.
    case pushesPerSecond = "pushes-per-second"
    /// `--max-bytes-per-second`.
    case bytesPerSecond = "bytes-per-second"
    /// `--max-subscriptions`.
    case subscriptions
    /// A frame or WebSocket message over its size limit.
    case frameBytes = "frame-bytes"
    /// `--handshake-timeout-seconds`: no completed handshake in time.
    case handshakeTimeout = "handshake-timeout"
}
