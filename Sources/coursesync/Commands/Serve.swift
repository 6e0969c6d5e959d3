import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import PostgresStore
import SQLiteStore
import Metrics
import Prometheus
import ServiceLifecycle
import SyncModel
import SyncServer
import SyncTransport

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the sync server.",
        discussion: """
        Listens for clients (protocol/README.md) and commits their batches to the store: with no flags, \
        an embedded SQLite store in the data directory (one node); with --postgres URL, PostgreSQL \
        (several nodes may share it). SIGTERM or SIGINT drains: batches in flight are committed and \
        answered, then connections close. Issue tokens with `coursesync token issue` (same data directory).
        """
    )

    @OptionGroup var store: StoreOptions
    @OptionGroup var secret: SecretOptions
    @OptionGroup var jwt: JWTOptions
    @OptionGroup var logging: LoggingOptions

    @Option(help: "The address to listen on (port 0: any free port).")
    var listen = ListenAddress(host: "127.0.0.1", port: 7420)

    @Flag(help: "PostgreSQL: apply missing migrations before serving (otherwise an unmigrated database is an error). The SQLite store always migrates itself.")
    var migrate = false

    @Option(help: "Change-log entries kept per course; a client further behind gets a snapshot.")
    var logRetention = 100_000

    @Option(help: "Seconds between heartbeats; a connection silent for three is closed.")
    var heartbeatSeconds = 15

    @Option(help: ArgumentHelp("Serve HTTP on this address (off unless given): the protocol over WebSocket at /v1/sync, and /metrics (Prometheus; unless --metrics-listen), /health, /ready. TLS with --tls-cert, like --listen.", valueName: "host:port"))
    var httpListen: ListenAddress?

    @Flag(help: "Also serve the live course editor page at / on --http-listen (open /#course=ID&token=TOKEN).")
    var web = false

    @Option(help: ArgumentHelp("Serve /metrics, /health and /ready on this address instead (plain HTTP: a private interface), and not /metrics on --http-listen.", valueName: "host:port"))
    var metricsListen: ListenAddress?

    @Option(help: "Seconds a course with no subscriber and nothing to commit stays in memory.")
    var courseIdleSeconds = 60

    @Option(help: "MiB of course state the store keeps cached (estimated; least recently used out first).")
    var cacheMib = 256

    @Option(help: ArgumentHelp("Serve TLS with this certificate chain (PEM); needs --tls-key.", valueName: "file"))
    var tlsCert: String?

    @Option(help: ArgumentHelp("The private key (PEM) of --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Option(help: ArgumentHelp("Mutual TLS: accept only clients with a certificate from these authorities (PEM).", valueName: "file"))
    var tlsClientCa: String?

    @Flag(help: "Listen on a non-loopback address without TLS (tokens and course content cross the network in clear).")
    var insecurePlaintext = false

    @Option(help: "Open connections one user (the token's sub) may hold on this node.")
    var maxConnectionsPerUser = ServerLimits().connectionsPerUser

    @Option(help: "Open connections from one remote IP address.")
    var maxConnectionsPerAddress = ServerLimits().connectionsPerAddress

    @Option(help: "Pushes per second per connection (bursts of twice that); past it: RATE_LIMITED, reconnect later.")
    var maxPushesPerSecond = SessionLimits().pushesPerSecond

    @Option(help: "Bytes received per second per connection (bursts of twice that, at least one largest frame).")
    var maxBytesPerSecond = SessionLimits().bytesPerSecond

    @Option(help: "Courses one connection may be subscribed to at once.")
    var maxSubscriptions = SessionLimits().maxSubscriptions

    @Option(help: "Seconds a new connection has to send Hello and complete its handshake.")
    var handshakeTimeoutSeconds = Int(SessionLimits.defaultHandshakeTimeout.components.seconds)

    func validate() throws {
        guard logRetention > 0 else { throw ValidationError("--log-retention must be positive") }
        guard heartbeatSeconds > 0 else { throw ValidationError("--heartbeat-seconds must be positive") }
        guard courseIdleSeconds > 0 else { throw ValidationError("--course-idle-seconds must be positive") }
        guard cacheMib > 0 else { throw ValidationError("--cache-mib must be positive") }
        try jwt.validate()
        for (name, value) in [("--max-connections-per-user", maxConnectionsPerUser), ("--max-connections-per-address", maxConnectionsPerAddress),
                              ("--max-pushes-per-second", maxPushesPerSecond), ("--max-bytes-per-second", maxBytesPerSecond),
                              ("--max-subscriptions", maxSubscriptions), ("--handshake-timeout-seconds", handshakeTimeoutSeconds)] {
            guard value > 0 else { throw ValidationError("\(name) must be positive") }
        }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        if tlsClientCa != nil, tlsCert == nil { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
        if web, httpListen == nil { throw ValidationError("--web serves the page on --http-listen: give that too") }
        if tlsCert == nil, !insecurePlaintext, let http = httpListen, !Self.isLoopback(http.host) {
            throw ValidationError("""
                refusing to serve HTTP on \(http.host) without TLS: it carries the protocol over WebSocket (bearer tokens, \
                course content); give --tls-cert and --tls-key, or --insecure-plaintext on a trusted network
                """)
        }
        if tlsCert == nil, !insecurePlaintext, !Self.isLoopback(listen.host) {
            throw ValidationError("""
                refusing to listen on \(listen.host) without TLS: bearer tokens and course content would cross the network \
                in clear. Give --tls-cert and --tls-key, listen on loopback (127.0.0.1, ::1, localhost) behind a TLS proxy, \
                or pass --insecure-plaintext if you really mean it
                """)
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    func run() async throws {
        let logger = logging.bootstrap(label: "coursesync")
        let (secret, created, secretPath) = try secret.load(create: true, dataDir: store.dataDir)
        if created { logger.notice("created a new token secret", metadata: ["file": "\(secretPath)"]) }
        let authority = try await jwt.authority(secret: secret)
        var configuration = ServerConfiguration(host: listen.host, port: listen.port,
                                                heartbeatInterval: .seconds(Int64(heartbeatSeconds)))
        configuration.hubIdleTimeout = .seconds(courseIdleSeconds)
        configuration.limits.connectionsPerUser = maxConnectionsPerUser
        configuration.limits.connectionsPerAddress = maxConnectionsPerAddress
        configuration.limits.session.pushesPerSecond = maxPushesPerSecond
        configuration.limits.session.bytesPerSecond = maxBytesPerSecond
        configuration.limits.session.maxSubscriptions = maxSubscriptions
        configuration.limits.session.handshakeTimeout = .seconds(handshakeTimeoutSeconds)
        if let tlsCert, let tlsKey {
            do {
                configuration.security = try .server(certificateFile: tlsCert, keyFile: tlsKey, clientCAFile: tlsClientCa)
            } catch {
                throw ValidationError("cannot load the TLS certificate or key: \(error)")
            }
        }
        let banner: @Sendable (Int, String) -> Void = { [listen, store, configuration] port, storeDescription in
            let lines = [
                "CourseSync \(CourseSyncVersion.current) listening on \(listen.host):\(port) (\(configuration.security.isTLS ? "TLS" : "plaintext"))",
                "  store:   \(storeDescription)",
                "  secret:  \(secretPath)",
                "  course:  coursesync course create --title \"My course\"\(store.url == nil ? " --data-dir \(store.dataDir)" : " --postgres URL")",
                "  token:   coursesync token issue --user you --course COURSE_ID --role editor --secret-file \(secretPath)",
                "  client:  coursesync client outline --course COURSE_ID --server \(listen.host):\(port) --token TOKEN",
            ]
            say(lines.joined(separator: "\n"))
        }
        // The HTTP listener's own line, with the port it bound (`:0` picks a free one).
        let httpBanner: @Sendable (Int) -> Void = { [httpListen, web, metricsListen, security = configuration.security] port in
            guard let http = httpListen else { return }
            let scheme = security.isTLS ? "https" : "http"
            var lines = ["CourseSync HTTP on \(http.host):\(port) (\(scheme): WebSocket /v1/sync, the backend API /v1, /health, /ready\(metricsListen == nil ? ", /metrics" : ""))"]
            if web { lines.append("  page:    \(scheme)://\(http.host):\(port)/#course=COURSE_ID&token=TOKEN") }
            say(lines.joined(separator: "\n"))
        }
        let page = web ? try WebPage.load() : nil
        // Metrics go to a Prometheus registry, exported on --metrics-listen, else on --http-listen.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let ops: (SyncServer, @escaping @Sendable () async throws -> Void) -> [ServiceGroupConfiguration.ServiceConfiguration] = {
            [httpListen, metricsListen, security = configuration.security] server, ready in
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
            let metrics: @Sendable () -> String = {
                server.refreshGauges()
                return registry.emitToString()
            }
            if let address = httpListen {
                // /metrics here unless it has an address of its own.
                let routes = HTTPRoutes(ready: ready, metrics: metricsListen == nil ? metrics : nil, files: page?.files ?? [:])
                services.append(.init(service: HTTPListener(server: server, host: address.host, port: address.port, security: security,
                                                            logger: logger, routes: routes, announce: httpBanner)))
            }
            if let address = metricsListen {
                services.append(.init(service: OpsListener(
                    host: address.host, port: address.port, routes: HTTPRoutes(ready: ready, metrics: metrics), logger: logger,
                    announce: { port in say("CourseSync metrics on \(address.host):\(port) (http: /metrics, /health, /ready)") })))
            }
            return services
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration]
        if let target = try store.postgresTarget() {
            let primary = try PostgresPrimary(target: target, logger: logger)
            let postgresStore = PostgresStore(primary: primary, logger: logger, logRetention: logRetention, maxCachedBytes: cacheMib << 20,
                                              onFailure: reportingStoreRetries(to: logger))
            let server = SyncServer(store: postgresStore, authority: authority, configuration: configuration, logger: logger)
            let description = "PostgreSQL \(target.description)"
            let node = Node(server: server, announce: { banner($0, description) }, prepare: { [migrate] in
                try await primary.locate()
                if migrate {
                    let applied = try await Migrator().migrate(primary.client, logger: logger)
                    logger.info("migrations", metadata: ["applied": "\(applied)"])
                } else {
                    try await postgresStore.checkSchema()
                }
            })
            // Shut down in reverse: the listener, then the server (draining), then the pool it needs.
            services = [.init(service: primary), .init(service: node, successTerminationBehavior: .gracefullyShutdownGroup),
                        .init(service: CommitListener(store: postgresStore, server: server))]
            services += ops(server, { try await postgresStore.checkSchema() })
        } else {
            let sqlite = try store.openSQLite(logRetention: logRetention, maxCachedBytes: cacheMib << 20, onFailure: reportingStoreRetries(to: logger))
            let server = SyncServer(store: sqlite, authority: authority, configuration: configuration, logger: logger)
            let description = "SQLite \(store.sqlitePath) (one node; --postgres URL for several)"
            services = [.init(service: Node(server: server, announce: { banner($0, description) }, prepare: {}),
                              successTerminationBehavior: .gracefullyShutdownGroup)]
            services += ops(server, { _ = try await sqlite.courseSeq(EntityID(bytes: Array(repeating: 0, count: 16))!) })
        }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// The server, preceded by the schema check (or migration), as one service: the `ServiceGroup`
/// shuts it down before the PostgreSQL pool it needs.
struct Node: Service {
    let server: SyncServer
    /// Called with the port once the server listens (the banner).
    let announce: @Sendable (Int) -> Void
    let prepare: @Sendable () async throws -> Void

    func run() async throws {
        try await prepare()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            if let port = try? await server.listeningPort() { announce(port) }
            try await group.next()
        }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the database migrations that are missing.",
        discussion: "Each migration runs in its own transaction; running again is a no-op."
    )

    @OptionGroup var postgres: PostgresOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "coursesync")
        let applied = try await withPostgres(try postgres.target(), logger: logger) { primary in
            try await Migrator().migrate(primary.client, logger: logger)
        }
        print(applied.isEmpty ? "The database is up to date." : "Applied \(applied.joined(separator: ", ")).")
    }
}
