import ArgumentParser
import Foundation
import PostgresStore
import SQLiteStore

struct CopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy the embedded SQLite store into a PostgreSQL database (moving to several nodes).",
        discussion: """
        Copies every course with its rows, change log, exactly-once records and temp-ID maps, in one \
        PostgreSQL transaction, so clients carry on where they were (cursors, resends and temp IDs stay \
        valid). The database must be migrated (or pass --migrate) and must not hold any of the courses. \
        Stop `coursesync serve` on the SQLite store first; then serve with --postgres and the same secret.
        """
    )

    @Option(help: ArgumentHelp("The data directory holding store.sqlite (default: $COURSESYNC_DATA, else ./coursesync-data).", valueName: "dir"))
    var dataDir: String = StoreOptions.defaultDataDirectory

    @OptionGroup var postgres: PostgresOptions
    @OptionGroup var logging: LoggingOptions

    @Flag(help: "Apply missing migrations to the PostgreSQL database first.")
    var migrate = false

    func run() async throws {
        let logger = logging.bootstrap(label: "coursesync")
        let path = URL(fileURLWithPath: dataDir).appendingPathComponent("store.sqlite").path
        guard FileManager.default.fileExists(atPath: path) else { throw ValidationError("no SQLite store at \(path)") }
        let dump = try await SQLiteStore(path: path).dump()
        try await withPostgres(try postgres.configuration(), logger: logger) { client in
            if migrate { _ = try await Migrator().migrate(client, logger: logger) }
            let store = PostgresStore(client: client, logger: logger)
            try await store.checkSchema()
            try await store.load(dump)
        }
        print("Copied \(dump.courses.count) courses (\(dump.chapters.count) chapters, \(dump.videos.count) videos, \(dump.media.count) media files, " +
              "\(dump.log.count) change-log entries, \(dump.batches.count) batch records, \(dump.temps.count) temp IDs).")
    }
}
