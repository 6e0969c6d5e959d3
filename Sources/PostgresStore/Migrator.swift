import Foundation
import Logging
import PostgresNIO

/// One ordered SQL file of `migrations/`, embedded in the binary (see `migrations/embed.sh`).
public struct Migration: Hashable, Sendable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

extension Migration {
    /// The file's statements, split at semicolons outside quotes, comments and dollar quotes (the
    /// extended query protocol takes one statement at a time).
    public var statements: [String] {
        var statements: [String] = []
        var current = ""
        var chars = Array(sql)[...]
        func flush() {
            let trimmed = current.trimmingCharacters(in: .whitespacesAndNewlines)
            // A piece made only of comments is not a statement.
            let meaningful = trimmed.split(separator: "\n").contains { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") && !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            if meaningful { statements.append(trimmed) }
            current = ""
        }
        while let char = chars.popFirst() {
            switch char {
            case ";":
                flush()
            case "-" where chars.first == "-":
                current.append(char)
                while let next = chars.popFirst() {
                    current.append(next)
                    if next == "\n" { break }
                }
            case "'", "\"":
                current.append(char)
                while let next = chars.popFirst() {
                    current.append(next)
                    if next == char { break }
                }
            case "$":
                // A dollar quote: $tag$ ... $tag$.
                var tag = "$"
                while let next = chars.first, next != "$", next.isLetter || next.isNumber || next == "_" {
                    tag.append(next)
                    chars.removeFirst()
                }
                guard chars.first == "$" else {
                    current += tag
                    continue
                }
                chars.removeFirst()
                tag.append("$")
                current += tag
                var body = ""
                while let next = chars.popFirst() {
                    body.append(next)
                    if body.hasSuffix(tag) { break }
                }
                current += body
            default:
                current.append(char)
            }
        }
        flush()
        return statements
    }
}

/// Why migrating failed.
public struct MigrationError: Error, CustomStringConvertible {
    public var migration: String
    public var reason: String

    public var description: String { "migration \(migration) failed and was rolled back: \(reason)" }
}

/// Applies the migrations a database is missing, each in its own transaction, in order, and records
/// them in `schema_migrations`. Concurrent migrators (two servers started with `--migrate`) queue on
/// an advisory lock, so each migration runs once.
public struct Migrator: Sendable {
    public var migrations: [Migration]

    public init(migrations: [Migration] = Migration.all) {
        precondition(migrations.map(\.version) == migrations.map(\.version).sorted() && Set(migrations.map(\.version)).count == migrations.count,
                     "migrations must have increasing, distinct versions")
        self.migrations = migrations
    }

    /// An arbitrary constant: the key of the advisory lock that serializes migrators.
    static let lockKey: Int64 = 0x436f_7572_7365_5379

    /// Applies what is missing and returns the names of the migrations it applied (empty: the
    /// database was up to date).
    @discardableResult
    public func migrate(_ client: PostgresClient, logger: Logger) async throws -> [String] {
        try await client.query("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())", logger: logger)
        var applied: [String] = []
        for migration in migrations {
            let didApply: Bool
            do {
                didApply = try await client.withTransaction(logger: logger) { connection in
                    try await connection.query("SELECT pg_advisory_xact_lock(\(Self.lockKey))", logger: logger)
                    let rows = try await connection.query("SELECT 1 FROM schema_migrations WHERE version = \(migration.version)", logger: logger)
                    if try await rows.collect().isEmpty == false { return false }
                    for (index, statement) in migration.statements.enumerated() {
                        do {
                            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                        } catch {
                            throw MigrationError(migration: migration.name, reason: "statement \(index + 1): \(Self.describe(error))")
                        }
                    }
                    try await connection.query("INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))", logger: logger)
                    return true
                }
            } catch let error as PostgresTransactionError {
                if let failure = error.closureError as? MigrationError { throw failure }
                throw MigrationError(migration: migration.name, reason: Self.describe(error.closureError ?? error.commitError ?? error.beginError ?? error))
            } catch let error as MigrationError {
                throw error
            } catch {
                throw MigrationError(migration: migration.name, reason: Self.describe(error))
            }
            if didApply {
                logger.info("applied migration", metadata: ["migration": "\(migration.name)"])
                applied.append(migration.name)
            }
        }
        return applied
    }

    /// The migrations the database lacks (by name). Does not change anything.
    public func missing(_ client: PostgresClient, logger: Logger) async throws -> [String] {
        let exists = try await client.query("SELECT to_regclass('schema_migrations') IS NOT NULL", logger: logger)
        var tableExists = false
        for try await flag in exists.decode(Bool.self) { tableExists = flag }
        guard tableExists else { return migrations.map(\.name) }
        var versions = Set<Int>()
        for try await version in try await client.query("SELECT version FROM schema_migrations", logger: logger).decode(Int.self) {
            versions.insert(version)
        }
        return migrations.filter { !versions.contains($0.version) }.map(\.name)
    }

    /// PostgreSQL's own message (with its detail and line) rather than postgres-nio's generic text.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError, let server = error.serverInfo {
            var parts = [server[.message] ?? "\(error.code)"]
            if let detail = server[.detail] { parts.append(detail) }
            if let position = server[.position] { parts.append("at character \(position)") }
            return parts.joined(separator: "; ")
        }
        return String(reflecting: error)
    }
}
