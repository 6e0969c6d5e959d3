import Foundation
import CoreMetrics
import SyncModel

/// How a ``SyncClient`` reaches its server and paces its work.
public struct ClientConfiguration: Sendable {
    /// Default bound on batches waiting for the server.
    public static let defaultMaxPendingBatches = 10_000

    public var host: String
    public var port: Int
    /// The bearer token (`coursesync token issue`), used when there is no ``tokenProvider``.
    public var token: String
    /// Fetches a fresh token for each connection: called before every connect and so, when the
    /// server ends a connection with `TOKEN_EXPIRED` (at the token's expiry), before the
    /// reconnect that follows. A throwing provider counts as a failed connection attempt (retried
    /// with backoff). Without one, an expired token stops the client (`refused`).
    public var tokenProvider: (@Sendable () async throws -> String)?
    /// Connect with TLS (the server's certificate verified for ``host``), or `nil` for plaintext
    /// (loopback and tests only: the token and the course cross the network in clear).
    public var tls: TLS?

    /// Which certificate authorities a TLS connection trusts.
    public struct TLS: Sendable, Hashable {
        /// A PEM file of certificate authorities to trust instead of the system's; `nil`: the
        /// system trust store.
        public var caFile: String?
        /// For a server that requires mutual TLS: this client's certificate chain and private key
        /// (PEM files).
        public var certificateFile: String?
        public var keyFile: String?

        public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }

        /// The system's trust store.
        public static let system = TLS()
    }
    /// Edits made within this window are sent as one batch; `.zero` sends each edit at once.
    /// The server's HTTP API (`serve --http-listen`), e.g. `https://sync.example.edu:8443`: what
    /// ``SyncClient/history(before:limit:)``, ``SyncClient/course(at:)`` and
    /// ``SyncClient/restore(to:)`` read from (protocol §13). `nil`: those throw. HTTPS is checked
    /// against the system's trusted authorities (``tls``'s CA file is the sync port's).
    public var httpURL: URL?
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
    /// Where the client's metrics go (prediction accuracy, rollbacks, reconnects, queue depth);
    /// `nil`: the process's bootstrapped swift-metrics backend (none: nothing is recorded).
    public var metricsFactory: (any MetricsFactory)?
    /// Sees every frame sent and received, and each new connection (for checkers such as
    /// ``WireOrderChecker``; called on the client's actor, so keep it quick).
    package var frameObserver: (@Sendable (FrameEvent) -> Void)?

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

    /// A configuration that asks `tokenProvider` for a token at every connect.
    public init(host: String = "127.0.0.1", port: Int = 7420, tokenProvider: @escaping @Sendable () async throws -> String) {
        self.init(host: host, port: port, token: "")
        self.tokenProvider = tokenProvider
    }
}
