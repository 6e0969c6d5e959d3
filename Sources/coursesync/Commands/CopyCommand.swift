import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import PostgresStore
import SQLiteStore
import SyncStorage

struct CopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy every course from one store into another (SQLite ↔ PostgreSQL, or between two databases).",
        discussion: """
        A store is a data directory (the embedded SQLite store, store.sqlite in it) or a PostgreSQL URL \
        (postgres://…). Copies every course with its rows, change log, exactly-once records and temp-ID \
        maps, in one transaction of the destination, so clients carry on where they were (cursors, resends \
        and temp IDs stay valid). The destination must not hold any of the courses; a PostgreSQL \
        destination must be migrated (or pass --migrate). Stop `coursesync serve` on the source first; \
        then serve from the destination with the same secret.
        """
    )

    @Option(help: ArgumentHelp("The store to copy from: a data directory or a PostgreSQL URL (default: $COURSESYNC_DATA, else ./coursesync-data).",
                               valueName: "dir-or-url"))
    var from: String = StoreOptions.defaultDataDirectory

    @Option(help: ArgumentHelp("The store to copy into: a data directory (created if needed) or a PostgreSQL URL.", valueName: "dir-or-url"))
    var to: String

    @OptionGroup var logging: LoggingOptions

    @Flag(help: "Apply missing migrations to a PostgreSQL destination first.")
    var migrate = false

    func run() async throws {
        let logger = logging.bootstrap(label: "coursesync")
        let dump = try await withStore(from, logger: logger, destination: false) { try await $0.dump() }
        try await withStore(to, logger: logger, destination: true) { try await $0.load(dump) }
        print("Copied \(dump.courses.count) courses (\(dump.chapters.count) chapters, \(dump.videos.count) videos, \(dump.media.count) media files, " +
              "\(dump.log.count) change-log entries, \(dump.batches.count) batch records, \(dump.temps.count) temp IDs).")
    }

    /// The store at `location`, whichever backend it is.
    private func withStore<T>(_ location: String, logger: Logger, destination: Bool, _ body: (any CopyableStore) async throws -> T) async throws -> T {
        if location.hasPrefix("postgres://") || location.hasPrefix("postgresql://") {
            let configuration: PostgresClient.Configuration
            do { configuration = try PostgresURL.configuration(location) } catch { throw ValidationError(error.description) }
            return try await withPostgres(configuration, logger: logger) { client in
                if destination && migrate { _ = try await Migrator().migrate(client, logger: logger) }
                let store = PostgresStore(client: client, logger: logger)
                try await store.checkSchema()
                return try await body(store)
            }
        }
        let path = URL(fileURLWithPath: location).appendingPathComponent("store.sqlite").path
        if destination {
            try createPrivateDirectory(location)
        } else if !FileManager.default.fileExists(atPath: path) {
            throw ValidationError("no SQLite store at \(path)")
        }
        return try await body(try SQLiteStore(path: path))
    }
}

/// What `copy` needs of a store: every store engine has it, whatever its backend.
protocol CopyableStore {
    func dump() async throws -> StoreDump
    func load(_ dump: StoreDump) async throws
}

extension StoreEngine: CopyableStore {}
