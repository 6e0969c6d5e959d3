import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import PostgresStore
import SQLiteStore
import SyncModel
import SyncServer
import SyncStorage

/// Where the store is: PostgreSQL when `--postgres` is given, else the embedded SQLite store in the data directory.
struct StoreOptions: ParsableArguments {
    static let defaultDataDirectory = ProcessInfo.processInfo.environment["COURSESYNC_DATA"] ?? "coursesync-data"

    @Option(name: .customLong("postgres"), help: ArgumentHelp(
        "A PostgreSQL database, as a URL (several nodes can share one; several hosts, h1:5432,h2:5432, with ?target_session_attrs=read-write: its primary). Without it, the SQLite store in --data-dir is used.",
        valueName: "postgres://user@host:port/database"))
    var url: String?

    @Option(help: ArgumentHelp("The data directory: the SQLite store and the token secret (default: $COURSESYNC_DATA, else ./coursesync-data).",
                               valueName: "dir"))
    var dataDir: String = StoreOptions.defaultDataDirectory

    var sqlitePath: String { URL(fileURLWithPath: dataDir).appendingPathComponent("store.sqlite").path }

    func postgresTarget() throws -> PostgresURL.Target? {
        guard let url else { return nil }
        do {
            return try PostgresURL.target(url)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// Runs `body` with the store these options name: PostgreSQL (its schema checked first, the
    /// pool closed afterwards) or the SQLite store in the data directory.
    func withStore<T>(logger: Logger, _ body: (any SyncStore) async throws -> T) async throws -> T {
        guard let target = try postgresTarget() else { return try await body(try openSQLite()) }
        return try await withPostgres(target, logger: logger) { primary in
            let store = PostgresStore(primary: primary, logger: logger)
            try await store.checkSchema()
            return try await body(store)
        }
    }

    /// Opens the SQLite store, creating the data directory if needed.
    func openSQLite(logRetention: Int = 100_000, maxCachedBytes: Int = 256 << 20,
                    onFailure: @escaping @Sendable (StoreError) -> Void = { _ in }) throws -> SQLiteStore {
        try createPrivateDirectory(dataDir)
        return try SQLiteStore(path: sqlitePath, logRetention: logRetention, maxCachedBytes: maxCachedBytes, onFailure: onFailure)
    }
}

/// A required PostgreSQL database (for `migrate` and `bench ack`).
struct PostgresOptions: ParsableArguments {
    @Option(name: .customLong("postgres"), help: ArgumentHelp("The PostgreSQL database, as a URL.", valueName: "postgres://user@host:port/database"))
    var url: String

    func target() throws -> PostgresURL.Target {
        do {
            return try PostgresURL.target(url)
        } catch {
            throw ValidationError(error.description)
        }
    }
}

struct LoggingOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: Logger.Level = .info

    /// Structured logs (key=value metadata) on standard error.
    func bootstrap(label: String) -> Logger {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// The file holding the server's token secret.
struct SecretOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The file holding the token signing secret (default: <data dir>/secret; serve creates it with a new random secret if missing).",
                               valueName: "file"))
    var secretFile: String?

    /// The secret, creating the file (mode 0600) with a fresh one if `create` and it is missing.
    func load(create: Bool, dataDir: String) throws -> (secret: [UInt8], created: Bool, path: String) {
        let secretFile = path(dataDir: dataDir)
        var created = false
        if create, !FileManager.default.fileExists(atPath: secretFile) {
            let directory = URL(fileURLWithPath: secretFile).deletingLastPathComponent().path
            try createPrivateDirectory(directory)
            guard FileManager.default.createFile(atPath: secretFile, contents: Data((TokenSecret.generate() + "\n").utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw ValidationError("cannot create the secret file \(secretFile)")
            }
            created = true
        }
        do {
            return (try TokenSecret.load(path: secretFile), created, secretFile)
        } catch {
            throw ValidationError("\(error.description)\(create ? "" : " (start `coursesync serve` once to create it, or pass --data-dir or --secret-file)")")
        }
    }
}

/// Tokens from an identity provider: its JWKS, and the claims the server requires.
struct JWTOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Also accept JWTs signed with these keys (a JWKS document: RS256, ES256, EdDSA, …; every key needs a kid).",
                               valueName: "file"))
    var jwks: String?

    @Option(help: ArgumentHelp("Require this issuer (the tokens' iss claim).", valueName: "iss"))
    var jwtIssuer: String?

    @Option(help: ArgumentHelp("Require this audience (among the tokens' aud claim).", valueName: "aud"))
    var jwtAudience: String?

    @Option(help: "Seconds of clock skew forgiven on exp and nbf.")
    var jwtLeewaySeconds: Int = Int(TokenRules.defaultLeeway)

    func validate() throws {
        guard (0...600).contains(jwtLeewaySeconds) else { throw ValidationError("--jwt-leeway-seconds must be 0 to 600") }
    }

    /// Verifies tokens signed with the server's secret and, given --jwks, with the identity provider's keys.
    func authority(secret: [UInt8]) async throws -> TokenAuthority {
        var document: String?
        if let jwks {
            do {
                document = try String(contentsOfFile: jwks, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read the JWKS at \(jwks): \(error.localizedDescription)")
            }
        }
        do {
            return try await TokenAuthority(secret: secret, jwks: document,
                                            rules: TokenRules(issuer: jwtIssuer, audience: jwtAudience, leeway: TimeInterval(jwtLeewaySeconds)))
        } catch {
            throw ValidationError("\(error)\(jwks.map { " (\($0))" } ?? "")")
        }
    }
}

extension SecretOptions {
    func path(dataDir: String) -> String {
        secretFile ?? URL(fileURLWithPath: dataDir).appendingPathComponent("secret").path
    }
}

/// Runs `body` with the running pools of `target`'s hosts, the one to use found first.
func withPostgres<T>(_ target: PostgresURL.Target, logger: Logger, _ body: (PostgresPrimary) async throws -> T) async throws -> T {
    let primary = try PostgresPrimary(target: target, logger: logger)
    let runner = Task { await primary.run() }
    defer { runner.cancel() }
    try await primary.locate()
    return try await body(primary)
}

/// Runs `body` with a running client pool for `configuration`.
func withPostgres<T>(_ configuration: PostgresClient.Configuration, logger: Logger, _ body: (PostgresClient) async throws -> T) async throws -> T {
    let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
    let runner = Task { await client.run() }
    defer { runner.cancel() }
    return try await body(client)
}

func parseEntityID(_ text: String, what: String) throws -> EntityID {
    guard let id = EntityID(text) else { throw ValidationError("\(what) must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), not \(text)") }
    return id
}

/// `host:port`, validated.
struct ListenAddress: ExpressibleByArgument, CustomStringConvertible {
    var host: String
    var port: Int

    init?(argument: String) {
        guard let colon = argument.lastIndex(of: ":"), let port = Int(argument[argument.index(after: colon)...]),
              (0...65_535).contains(port) else { return nil }
        let host = String(argument[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    var description: String { "\(host):\(port)" }
    var defaultValueDescription: String { description }
}

/// Creates `path` (and missing parents) readable by its owner only, 0700: it holds the store and
/// the token secret. An existing directory keeps its permissions.
func createPrivateDirectory(_ path: String) throws {
    guard !FileManager.default.fileExists(atPath: path) else { return }
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
}
