import ArgumentParser
import Foundation
import SyncModel
import SyncStorage

struct CourseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "course",
        abstract: "Manage courses.",
        subcommands: [Create.self, Show.self, History.self]
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
            try await store.withStore(logger: logger) { try await $0.createCourse(course) }
            print(courseID)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a course's outline: chapters and their videos in order, now or as it was at a seq.",
            discussion: """
            --at SEQ rebuilds the course right after commit SEQ from the nearest snapshot at or before it \
            (one is kept every 1,000 commits) and the change log, as far back as the log reaches.
            """)

        @OptionGroup var store: StoreOptions
        @OptionGroup var logging: LoggingOptions

        @Option(help: ArgumentHelp("The course.", valueName: "uuid")) var course: String
        @Option(help: ArgumentHelp("Show the course as it was right after this commit (0: before any).", valueName: "seq")) var at: UInt64?

        func validate() throws { _ = try parseEntityID(course, what: "--course") }

        func run() async throws {
            let logger = logging.bootstrap(label: "coursesync")
            let courseID = try parseEntityID(course, what: "--course")
            let state = try await store.withStore(logger: logger) { store in
                if let at { return try await store.course(courseID, at: at) }
                return try await store.snapshot(courseID: courseID)
            }
            print("\(state.course.title) at seq \(state.seq): \(state.chapters.count) chapters, \(state.videos.count) videos, \(state.media.count) media files")
            for chapter in state.orderedChapters {
                print("\(chapter.position + 1). \(chapter.title)  [\(chapter.id)]")
                for video in state.videos(in: chapter.id) {
                    print("   \(video.position + 1). \(video.title)  [\(video.id)] ← \(state.media[video.mediaFileID]?.name ?? "?")")
                }
            }
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List a course's commits, newest first: seq, time (UTC), author, what it did.",
            discussion: "As far back as the change log reaches (older entries are pruned past the log's retention).")

        @OptionGroup var store: StoreOptions
        @OptionGroup var logging: LoggingOptions

        @Option(help: ArgumentHelp("The course.", valueName: "uuid")) var course: String
        @Option(help: "Commits to list.") var limit = 50
        @Option(help: ArgumentHelp("List the commits before this seq (the next page).", valueName: "seq")) var before: UInt64?

        func validate() throws {
            _ = try parseEntityID(course, what: "--course")
            guard (1...HistoryRecord.maxPage).contains(limit) else { throw ValidationError("--limit must be between 1 and \(HistoryRecord.maxPage)") }
        }

        func run() async throws {
            let logger = logging.bootstrap(label: "coursesync")
            let courseID = try parseEntityID(course, what: "--course")
            let records = try await store.withStore(logger: logger) { try await $0.history(courseID, before: before, limit: limit) }
            let formatter = ISO8601DateFormatter()
            for record in records {
                let author = record.author.isEmpty ? "(unknown)" : record.author
                print("\(record.seq)\t\(formatter.string(from: Date(timeIntervalSince1970: record.committedAt)))\t\(author)\t\(record.summary)")
            }
            if records.count == limit, let last = records.last, last.seq > 1 { print("more: --before \(last.seq)") }
        }
    }
}
