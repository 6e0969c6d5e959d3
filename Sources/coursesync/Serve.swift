import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import PostgresStore
import ServiceLifecycle
import SyncServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the sync server.",
        discussion: """
        Listens for clients (protocol/README.md) and commits their batches to PostgreSQL. SIGTERM or \
        SIGINT drains: batches in flight are committed and answered, then connections close.
        Issue tokens for clients with `coursesync token issue` and the same --secret-file.
        """
    )

    @OptionGroup var postgres: PostgresOptions
    @OptionGroup var secret: SecretOptions
    @OptionGroup var logging: LoggingOptions

    @Option(help: "The address to listen on.")
    var listen = ListenAddress(host: "127.0.0.1", port: 7420)

    @Flag(help: "Apply missing migrations before serving (otherwise an unmigrated database is an error).")
    var migrate = false

    @Option(help: "Change-log entries kept per course; a client further behind gets a snapshot.")
    var logRetention = 100_000

    @Option(help: "Seconds between heartbeats; a connection silent for three is closed.")
    var heartbeatSeconds = 15

    func validate() throws {
        guard logRetention > 0 else { throw ValidationError("--log-retention must be positive") }
        guard heartbeatSeconds > 0 else { throw ValidationError("--heartbeat-seconds must be positive") }
    }

    func run() async throws {
        let logger = logging.bootstrap(label: "coursesync")
        let (secret, created) = try secret.load(create: true)
        if created { logger.notice("created a new token secret", metadata: ["file": "\(self.secret.secretFile)"]) }
        let authority = try TokenAuthority(secret: secret)
        let client = PostgresClient(configuration: try postgres.configuration(), backgroundLogger: logger)
        let store = PostgresStore(client: client, logger: logger, logRetention: logRetention)
        let server = SyncServer(store: store, authority: authority,
                                configuration: ServerConfiguration(host: listen.host, port: listen.port,
                                                                   heartbeatInterval: .seconds(Int64(heartbeatSeconds))),
                                logger: logger)
        let node = Node(server: server, prepare: { [migrate] in
            if migrate {
                let applied = try await Migrator().migrate(client, logger: logger)
                logger.info("migrations", metadata: ["applied": "\(applied)"])
            } else {
                try await store.checkSchema()
            }
        })
        let group = ServiceGroup(configuration: .init(
            // Shut down in reverse: the listener, then the server (draining), then the pool it needs.
            services: [.init(service: client), .init(service: node, successTerminationBehavior: .gracefullyShutdownGroup),
                       .init(service: CommitListener(store: store, server: server))],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }
}

/// The server, preceded by the schema check (or migration), as one service: the `ServiceGroup`
/// shuts it down before the PostgreSQL pool it needs.
struct Node: Service {
    let server: SyncServer
    let prepare: @Sendable () async throws -> Void

    func run() async throws {
        try await prepare()
        try await server.run()
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
        let applied = try await withPostgres(try postgres.configuration(), logger: logger) { client in
            try await Migrator().migrate(client, logger: logger)
        }
        print(applied.isEmpty ? "The database is up to date." : "Applied \(applied.joined(separator: ", ")).")
    }
}
