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
    public var connectTimeout: Duration = .seconds(5)
    /// A connection that receives nothing for this long is closed and reopened. The server pings
    /// every heartbeat interval (15 s by default), so three missed pings.
    public var readTimeout: Duration = .seconds(45)
    /// Bound on undelivered events; the oldest are dropped when the app does not read them.
    public var eventBuffer = 4096

    public init(host: String = "127.0.0.1", port: Int = 7420, token: String) {
        self.host = host
        self.port = port
        self.token = token
    }
}
