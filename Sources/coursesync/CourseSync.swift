import ArgumentParser
import SyncModel

/// The CourseSync command-line tool.
@main
struct CourseSync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coursesync",
        abstract: "A multi-user sync server with conflict resolution for collaborative course editing.",
        discussion: """
        Several instructors edit one course at once: edits apply instantly on each editor's replica, \
        travel to the server in batches, are resolved in server order and pushed to every other client.
        The wire protocol is specified in protocol/README.md.
        """,
        version: CourseSyncVersion.current,
        subcommands: [Demo.self, Serve.self, Migrate.self, CopyCommand.self, CourseCommand.self, TokenCommand.self, ClientCommand.self, Simulate.self, Stress.self, Bench.self]
    )
}

/// The tool's version, also reported by the server in its handshake.
enum CourseSyncVersion {
    static let current = "0.1.0"
}
