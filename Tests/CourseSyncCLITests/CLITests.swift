import Foundation
import Testing

/// Runs the built `coursesync` binary as a user would.
@Suite("coursesync command line")
struct CLITests {
    /// The binary sits beside the test bundle in the build's products folder.
    static let binary: URL = {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("coursesync").path), url.path != "/" {
            url.deleteLastPathComponent()
        }
        return url.appendingPathComponent("coursesync")
    }()

    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func versionPrintsTheVersion() throws {
        let result = try Self.run(["--version"])
        #expect(result.status == 0)
        #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test func helpDescribesTheTool() throws {
        let result = try Self.run(["--help"])
        #expect(result.status == 0)
        #expect(result.output.contains("USAGE: coursesync"))
        #expect(result.output.contains("protocol/README.md"))
    }

    @Test func anUnknownSubcommandFailsWithUsage() throws {
        let result = try Self.run(["frobnicate"])
        #expect(result.status != 0)
        #expect(result.output.contains("Error"))
    }
}
