// A small terminal app on the client library's public API alone: it opens a replica of one
// course, shows the outline live (every change, local or another instructor's, redraws it), and
// links media into chapters from the keyboard.
//
//   swift run coursesync-outline --course <course id> --token <token> [--host 127.0.0.1] [--port 7420] [--replica outline.replica]
//
// Commands: `media` lists the library; `chapter <title>` adds a chapter; `link <media #> … to <chapter #>`
// links media files (numbers as listed) at the chapter's end; `unlink <chapter #> <video #>`; `quit`.

import Foundation
import SyncClient

struct Options {
    var host = "127.0.0.1"
    var port = 7420
    var token = ProcessInfo.processInfo.environment["COURSESYNC_TOKEN"] ?? ""
    var course: EntityID?
    var replica = "outline.replica"

    init(_ arguments: ArraySlice<String>) throws {
        var arguments = arguments
        while let flag = arguments.popFirst() {
            guard let value = arguments.popFirst() else { throw Failure("\(flag) needs a value") }
            switch flag {
            case "--host": host = value
            case "--port": port = Int(value) ?? port
            case "--token": token = value
            case "--course": course = EntityID(value)
            case "--replica": replica = value
            default: throw Failure("unknown option \(flag)")
            }
        }
        guard course != nil, !token.isEmpty else { throw Failure("usage: coursesync-outline --course <id> --token <token> [--host h] [--port p] [--replica file]") }
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func render(_ outline: Outline) {
    var lines = ["", "\(outline.title) (seq \(outline.seq))"]
    for (number, entry) in outline.chapters.enumerated() {
        lines.append("\(number + 1). \(entry.chapter.title)\(entry.chapter.status == .pending ? "  [syncing]" : "")")
        for (index, video) in entry.videos.enumerated() {
            lines.append("     \(index + 1). \(video.title)\(video.status == .pending ? "  [syncing]" : "")")
        }
    }
    print(lines.joined(separator: "\n"))
}

func perform(_ line: String, on client: SyncClient) async throws -> Bool {
    let words = line.split(separator: " ").map(String.init)
    switch words.first {
    case "quit", "exit": return false
    case "media":
        for (number, file) in try await client.media().enumerated() { print("\(number + 1). \(file.name)") }
    case "chapter":
        try await client.createChapter(title: words.dropFirst().joined(separator: " "))
    case "link":
        guard let to = words.firstIndex(of: "to"), to + 1 < words.count, let chapterNumber = Int(words[to + 1]) else {
            print("link <media #> … to <chapter #>")
            return true
        }
        let media = try await client.media()
        let chapters = try await client.outline().chapters
        guard chapters.indices.contains(chapterNumber - 1) else { print("no chapter \(chapterNumber)"); return true }
        let files = words[1..<to].compactMap(Int.init).filter { media.indices.contains($0 - 1) }.map { media[$0 - 1].key }
        try await client.linkMedia(files, to: chapters[chapterNumber - 1].chapter.key)
    case "unlink":
        let numbers = words.dropFirst().compactMap(Int.init)
        let chapters = try await client.outline().chapters
        guard numbers.count == 2, chapters.indices.contains(numbers[0] - 1),
              chapters[numbers[0] - 1].videos.indices.contains(numbers[1] - 1) else { print("unlink <chapter #> <video #>"); return true }
        try await client.unlinkVideo(chapters[numbers[0] - 1].videos[numbers[1] - 1].key)
    default:
        print("commands: media · chapter <title> · link <media #> … to <chapter #> · unlink <chapter #> <video #> · quit")
    }
    return true
}

let options: Options
do { options = try Options(CommandLine.arguments.dropFirst()) } catch { print(error); exit(2) }
let client = try SyncClient(path: options.replica, courseID: options.course!,
                            configuration: ClientConfiguration(host: options.host, port: options.port, token: options.token))
await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await client.run() }
    group.addTask { for try await outline in client.observeOutline() { render(outline) } }
    group.addTask {
        for await event in client.events {
            switch event {
            case .rejected(let rejected): print("! rolled back (\(rejected.code)): \(rejected.message)")
            case .connection(let state): print("· \(state)")
            default: break
            }
        }
    }
    while let line = readLine() {
        do {
            guard try await perform(line, on: client) else { break }
        } catch {
            print("! \(error)")
        }
    }
    group.cancelAll()
    // Why the client stopped, if it did not stop because we quit (a refused token, a full disk).
    while let result = await group.nextResult() {
        if case .failure(let error) = result, !(error is CancellationError) { print("! \(error)") }
    }
}
