import Foundation
import SyncModel
import Testing
@testable import coursesync

/// The editor page's model under Node's own test runner (`node --test`): `model.js` has no DOM,
/// so it is tested without a browser. The tests run beside the page's modules and the `limits.js`
/// the server generates.
@Suite struct WebModelTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func theGeneratedLimitsAreTheServersOwn() {
        let module = WebPage.limitsModule()
        for code in ErrorCode.allCases {
            let listed = module.contains("\"\(WebPage.jsonName(code))\"")
            #expect(listed == code.isPermanentRefusal, "\(code)")
        }
        #expect(WebPage.jsonName(.unknownCourse) == "UNKNOWN_COURSE")
        #expect(module.contains("MAX_VIDEOS_PER_CHAPTER = \(Limits.maxVideosPerChapter);"))
        // The page's files hold no copy of a limit or of the list.
        let page = Self.root.appendingPathComponent("Sources/coursesync/Web")
        for name in ["page.js", "view.js", "connection.js", "model.js", "identity.js"] {
            let text = (try? String(contentsOf: page.appendingPathComponent(name), encoding: .utf8)) ?? ""
            #expect(!text.contains("\(Limits.maxVideosPerChapter) videos"), "\(name) words the chapter limit itself")
            #expect(!text.contains("\"UNSUPPORTED_PROTOCOL_VERSION\""), "\(name) lists the permanent refusals itself")
        }
    }

    @Test func theModelPassesItsNodeTests() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("web-model-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let sources = [Self.root.appendingPathComponent("Sources/coursesync/Web"), Self.root.appendingPathComponent("Tests/CourseSyncCLITests/Web")]
        for source in sources {
            for name in try FileManager.default.contentsOfDirectory(atPath: source.path) where name.hasSuffix(".js") {
                try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: folder.appendingPathComponent(name))
            }
        }
        try WebPage.limitsModule().write(to: folder.appendingPathComponent("limits.js"), atomically: true, encoding: .utf8)
        // The modules are ES modules: a package.json tells Node so.
        try #"{"type": "module"}"#.write(to: folder.appendingPathComponent("package.json"), atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["node", "--test", folder.appendingPathComponent("model.test.js").path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(output)")
        #expect(output.contains("# fail 0") && !output.contains("# pass 0"), "\(output)")
    }
}
