import Foundation
import SyncClient
import Testing

// The README's client example, compiled here as an app would compile it: `import SyncClient`
// only, and (this target has its own package name) nothing of the package's internals in reach.
// The text between the markers must equal the README's first Swift block under "The client library".

func readmeExample(token: String, courseID: EntityID, introClipID: EntityID) async throws {
    // README example begins
    var configuration = ClientConfiguration(host: "sync.example.edu", port: 7420, token: token)
    configuration.tls = .system   // or .init(caFile: "ca.pem"), with certificateFile/keyFile for mutual TLS
    let client = try SyncClient(path: "intro.replica", courseID: courseID, configuration: configuration)

    try await withThrowingDiscardingTaskGroup { group in
        // Syncing lives in your task tree: cancel it to stop (or run the client in a ServiceGroup).
        group.addTask { try await client.run() }

        // Edits apply to the replica at once. Rows are named by local keys, which never change.
        let chapter = try await client.createChapter(title: "Getting started")
        let videos = try await client.linkMedia([await client.key(for: introClipID)], to: chapter)
        try await client.renameVideo(videos[0], to: "Welcome")
        try await client.undo()      // Ctrl+Z: takes the rename back (as a new edit; redo() makes it again)
        try await client.setPresence(name: "Ada", color: 0x3366CC, focus: .chapter(chapter))  // others see where Ada is

        // Reactive queries: fire after every change, with each row's status (pending / confirmed).
        group.addTask {
            for try await rows in client.observeVideos(inChapter: chapter) { render(rows) }
        }
        // Who else is on the course, and on which row (presence: ephemeral, never stored).
        group.addTask {
            for await collaborators in await client.observePresence() { showAvatars(collaborators) }
        }
        // Acks (with real IDs), rollbacks (with the edits dropped), others' changes, the connection.
        group.addTask {
            for await event in client.events {
                if case .rejected(let rejected) = event {
                    offerRetry(rejected.message) { try await client.retry(rejected.droppedEdits) }
                }
            }
        }

        try await client.settle()   // every edit answered (scripts and tests)
        group.cancelAll()           // stop syncing; unanswered edits stay in the replica for the next run
    }
    // README example ends
}

// What the example's app would provide.
func render(_ rows: [VideoRow]) {}
func showAvatars(_ collaborators: [Collaborator]) {}
func offerRetry(_ message: String, _ retry: @escaping @Sendable () async throws -> Void) {}

@Suite struct ReadmeExampleTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The lines between two markers (or the first Swift block after a heading), without common indentation.
    static func dedented(_ lines: some Sequence<Substring>) -> [String] {
        let lines = Array(lines)
        let indent = lines.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            .map { $0.prefix { $0 == " " }.count }.min() ?? 0
        return lines.map { $0.count >= indent ? String($0.dropFirst(indent)) : "" }
    }

    @Test func theReadmeShowsThisExample() throws {
        let source = try String(contentsOf: Self.repository.appendingPathComponent("Tests/ReadmeExampleTests/ReadmeExample.swift"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false)
        let begin = try #require(source.firstIndex { $0.hasSuffix("// README example begins") })
        let end = try #require(source.firstIndex { $0.hasSuffix("// README example ends") })
        let example = Self.dedented(source[(begin + 1)..<end])

        let readme = try String(contentsOf: Self.repository.appendingPathComponent("README.md"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false)
        let section = try #require(readme.firstIndex { $0 == "### The client library" })
        let open = try #require(readme[section...].firstIndex { $0 == "```swift" })
        let close = try #require(readme[(open + 1)...].firstIndex { $0 == "```" })
        let shown = Self.dedented(readme[(open + 1)..<close])
        #expect(shown == ["import SyncClient", ""] + example, "the README's client example differs from the one this target compiles")
    }
}
