import ArgumentParser
import Foundation
import PostgresStore
import SQLiteStore
import SyncModel

struct CourseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "course",
        abstract: "Manage courses.",
        subcommands: [Create.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an empty course and print its ID.")

        @OptionGroup var store: StoreOptions
        @OptionGroup var logging: LoggingOptions

        @Option(help: "The course's title.")
        var title: String

        @Option(help: ArgumentHelp("The course ID (a new random UUID if omitted).", valueName: "uuid"))
        var id: String?

        func validate() throws {
            guard case .success = Validation.title(title) else { throw ValidationError("--title must be 1 to \(Limits.maxTitleLength) characters, without control characters") }
            if let id { _ = try parseEntityID(id, what: "--id") }
        }

        func run() async throws {
            let logger = logging.bootstrap(label: "coursesync")
            var generator = SystemRandomNumberGenerator()
            let courseID = try id.map { try parseEntityID($0, what: "--id") } ?? .random(using: &generator)
            guard case .success(let title) = Validation.title(title) else { return }
            let course = Course(id: courseID, title: title)
            if let configuration = try store.postgresConfiguration() {
                try await withPostgres(configuration, logger: logger) { client in
                    let store = PostgresStore(client: client, logger: logger)
                    try await store.checkSchema()
                    try await store.createCourse(course)
                }
            } else {
                try await store.openSQLite().createCourse(course)
            }
            print(courseID)
        }
    }
}
