import SyncModel

/// How a ``SyncClient`` reaches its server and paces its work.
public struct ClientConfiguration: Sendable {
    /// Default bound on batches waiting for the server.
    public static let defaultMaxPendingBatches = 10_000

    public var host: String
    public var port: Int
    /// The bearer token (`coursesync token issue`).
    public var token: String
    /// Edits made within this window are sent as one batch; `.zero` sends each edit at once.
    public var coalesceWindow: Duration = .milliseconds(5)
    /// Edits fail with ``EditError/queueFull(limit:)`` when this many batches wait for the server.
    public var maxPendingBatches = ClientConfiguration.defaultMaxPendingBatches
    /// Reconnect delays grow from `reconnectBase`, doubling per failed attempt up to `reconnectCap`;
    /// each wait is drawn uniformly from zero to that bound ("full jitter"), so clients that lost
    /// the same server do not come back in step.
    public var reconnectBase: Duration = .milliseconds(100)
    public var reconnectCap: Duration = .seconds(30)
    /// Connecting, TCP and handshake together, must reach `Welcome` within this. After that the
    /// heartbeat interval the server's `Welcome` names governs: the client pings after one quiet
    /// interval and reconnects after three.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Bound on undelivered events; the oldest are dropped when the app does not read them.
    public var eventBuffer = 4096
    /// Sees every frame sent and received, and each new connection (for checkers such as
    /// ``WireOrderChecker``; called on the client's actor, so keep it quick).
    @_spi(Testing) public var frameObserver: (@Sendable (FrameEvent) -> Void)?

    /// The engine's share of this configuration.
    var timing: ClientCore.Timing {
        var timing = ClientCore.Timing()
        timing.coalesceWindow = coalesceWindow
        timing.handshakeTimeout = handshakeTimeout
        timing.reconnectBase = reconnectBase
        timing.reconnectCap = reconnectCap
        return timing
    }

    public init(host: String = "127.0.0.1", port: Int = 7420, token: String) {
        self.host = host
        self.port = port
        self.token = token
    }
}
