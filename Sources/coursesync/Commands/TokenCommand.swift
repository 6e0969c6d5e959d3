import ArgumentParser
import Foundation
import SyncModel
import SyncServer

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Issue bearer tokens for clients.",
        subcommands: [Issue.self]
    )

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a signed token (a JWT) giving a user a role in some courses.",
            discussion: "An HS256 JWT signed with the server's secret (from --data-dir or --secret-file), kid \"\(TokenAuthority.secretKeyID)\"; the server accepts it until it expires."
        )

        @Option(help: "The user the token is for (shown in the server's logs).")
        var user: String

        @Option(help: ArgumentHelp("A course the token gives access to (repeatable).", valueName: "course-id"))
        var course: [String] = []

        @Flag(help: "Give the role in every course (an operator's token).")
        var allCourses = false

        @Option(help: "editor (may edit) or viewer (may only watch).")
        var role: Role

        @Option(help: "How long the token is valid, in hours.")
        var ttlHours: Double = 24

        @OptionGroup var secret: SecretOptions

        @Option(help: ArgumentHelp("The server's data directory, where the secret is (default: $COURSESYNC_DATA, else ./coursesync-data).",
                                   valueName: "dir"))
        var dataDir: String = StoreOptions.defaultDataDirectory

        func validate() throws {
            guard !user.isEmpty, user.utf8.count <= 200 else { throw ValidationError("--user must be 1 to 200 bytes") }
            guard !course.isEmpty || allCourses else { throw ValidationError("name at least one --course, or pass --all-courses") }
            guard ttlHours > 0, ttlHours <= 24 * 366 else { throw ValidationError("--ttl-hours must be more than 0 and at most a year") }
            for text in course { _ = try parseEntityID(text, what: "--course") }
        }

        @Option(help: ArgumentHelp("Put this issuer in the token (iss).", valueName: "iss"))
        var issuer: String?

        @Option(help: ArgumentHelp("Put this audience in the token (aud).", valueName: "aud"))
        var audience: String?

        func run() async throws {
            let (secret, _, _) = try secret.load(create: false, dataDir: dataDir)
            let authority = try await TokenAuthority(secret: secret)
            let roles = Dictionary(try course.map { (try parseEntityID($0, what: "--course"), role) }) { _, last in last }
            let now = Date()
            print(try await authority.issue(TokenClaims(user: user, expires: now.addingTimeInterval(ttlHours * 3600), courses: roles,
                                                        everyCourse: allCourses ? role : nil, issuedAt: now, issuer: issuer,
                                                        audience: audience)))
        }
    }
}

extension Role: ExpressibleByArgument {}
