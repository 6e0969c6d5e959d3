import Foundation
import SyncModel
import SyncWire
import Testing

/// Every golden frame of `protocol/vectors/` decodes to its message and re-encodes byte for byte;
/// every invalid one is refused with its typed error. `COURSESYNC_WRITE_VECTORS=1` rewrites the
/// files from `GoldenVectors` (review the diff: a changed valid vector is a protocol change).
@Suite("Golden vectors")
struct VectorTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("protocol/vectors")
    static let rewrite = ProcessInfo.processInfo.environment["COURSESYNC_WRITE_VECTORS"] == "1"

    static func bytes(of vector: GoldenVectors.Vector) -> [UInt8] {
        switch vector.content {
        case .message(let message): message.frame()
        case .invalid(let bytes, _, _, _): bytes
        }
    }

    static func file(_ name: String, _ suffix: String) -> URL { directory.appendingPathComponent(name + suffix) }

    @Test(arguments: GoldenVectors.all.map(\.name))
    func vectorFileMatches(name: String) throws {
        let vector = try #require(GoldenVectors.all.first { $0.name == name })
        let expected = Self.bytes(of: vector)
        if Self.rewrite {
            try Data(expected).write(to: Self.file(name, ".bin"))
            try GoldenVectors.text(of: vector, bytes: expected).write(to: Self.file(name, ".txt"), atomically: true, encoding: .utf8)
        }
        let stored = try [UInt8](Data(contentsOf: Self.file(name, ".bin")))
        #expect(stored == expected, "the stored frame differs from what this implementation encodes")
        let text = try String(contentsOf: Self.file(name, ".txt"), encoding: .utf8)
        #expect(text == GoldenVectors.text(of: vector, bytes: stored), "the .txt description is stale")

        switch vector.content {
        case .message(let message):
            let decoded = try GoldenVectors.decode(frame: stored, limit: Limits.maxServerFrameBytes)
            #expect(decoded == message)
            #expect(decoded.frame() == stored, "re-encoding is not byte-for-byte")
            // The same message in the JSON mapping (WebSocket's `coursesync.v1+json`): the stored
            // JSON maps to exactly this payload's message.
            if Self.rewrite { try (message.json() + "\n").write(to: Self.file(name, ".json"), atomically: true, encoding: .utf8) }
            let json = try String(contentsOf: Self.file(name, ".json"), encoding: .utf8)
            #expect(try WireMessage(payload: JSONMapping.payload(fromJSON: Array(json.utf8))) == message, "the .json vector maps to another message")
        case .invalid(_, let limit, let error, let sender):
            #expect(throws: error) { try GoldenVectors.decode(frame: stored, limit: limit, sender: sender) }
        }
    }

    @Test func atLeastTwelveVectorsCoverEveryMessageKind() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path)
        #expect(files.filter { $0.hasSuffix(".bin") }.count == GoldenVectors.all.count, "a .bin in protocol/vectors has no GoldenVectors entry")
        #expect(GoldenVectors.valid.count >= 12)
        var kinds = Set<String>()
        for vector in GoldenVectors.valid {
            if case .message(let message) = vector.content, let kind = message.envelope.message {
                kinds.insert(String(describing: kind).prefix { $0 != "(" }.description)
            }
        }
        #expect(kinds.count == 16, "kinds covered: \(kinds.sorted())")
    }
}
