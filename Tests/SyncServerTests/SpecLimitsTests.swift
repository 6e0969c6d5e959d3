import Foundation
import SyncModel
import SyncServer
import Testing
@testable import TestSupport

/// The spec's limits tables (protocol/README.md §9) are read and checked against the code's named
/// limits, so the two cannot drift apart: a limit changed in the code fails here until the spec
/// says the same, and a row added to the spec without a check fails too.
@Suite struct SpecLimitsTests {
    /// The rows of the tables under "## 9. Limits": the first cell and the second.
    static func limitRows() throws -> [(limit: String, value: String)] {
        let spec = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("protocol/README.md")
        let text = try String(contentsOf: spec, encoding: .utf8)
        guard let start = text.range(of: "\n## 9. Limits\n") else { throw SpecError(description: "no §9 in the spec") }
        let section = text[start.upperBound...].prefix { _ in true }
        let end = section.range(of: "\n## ")?.lowerBound ?? section.endIndex
        return section[..<end].split(separator: "\n").compactMap { line -> (String, String)? in
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard line.hasPrefix("|"), cells.count >= 2, !cells[0].hasPrefix("---"), cells[0] != "limit" else { return nil }
            return (cells[0], cells[1])
        }
    }

    struct SpecError: Error, CustomStringConvertible { let description: String }

    /// What each row must say, from the code's constants and defaults.
    static func expected() -> [String: String] {
        func thousands(_ value: Int) -> String {
            let digits = String(value)
            var out = ""
            for (index, digit) in digits.enumerated() {
                if index > 0, (digits.count - index) % 3 == 0 { out += "," }
                out.append(digit)
            }
            return out
        }
        func mebibytes(_ bytes: Int) -> String { "\(bytes >> 20) MiB" }
        let session = SessionLimits()
        let node = ServerLimits()
        #expect(Limits.maxMediaBytes == 1 << 40, "the spec says 1 TiB")
        #expect(Limits.maxClientFrameBytes % (1 << 20) == 0 && Limits.maxHandshakeFrameBytes % (1 << 10) == 0)
        return [
            "frame, client → server (after `Welcome`)": mebibytes(Limits.maxClientFrameBytes),
            "frame, client → server (before `Welcome`)": "\(Limits.maxHandshakeFrameBytes >> 10) KiB",
            "frame, server → client": "\(mebibytes(Limits.maxServerFrameBytes)) (snapshots are split into parts of about \(mebibytes(Limits.snapshotPartBytes)))",
            "ops per batch (a `LinkMedia` counts once per item)": thousands(Limits.maxOpsPerBatch),
            "title / name": "1–\(Limits.maxTitleLength) code points after trimming; ≤ \(thousands(Limits.maxTextBytes)) UTF-8 bytes as sent; no control characters",
            "CDN URL": "≤ \(thousands(Limits.maxURLBytes)) bytes, `http://` or `https://` with a host, no white space",
            "media duration": "1 ms … \(thousands(Int(Limits.maxDurationMs))) ms (\(Limits.maxDurationMs / 3_600_000) h)",
            "media size": "1 byte … 1 TiB",
            "chapters per course": thousands(Limits.maxChaptersPerCourse),
            "videos per chapter": thousands(Limits.maxVideosPerChapter),
            "videos per course": thousands(Limits.maxVideosPerCourse),
            "media files per course": thousands(Limits.maxMediaFilesPerCourse),
            "`Progress` frames": "for batches of more than \(Limits.progressThresholdOps) ops",
            "pushes per second per connection (stated in `Welcome.max_pushes_per_second`)":
                "\(thousands(session.pushesPerSecond)), bursts of \(thousands(session.pushBurst))",
            "bytes received per second per connection (`Welcome.max_bytes_per_second`)":
                "\(mebibytes(session.bytesPerSecond)), bursts of \(mebibytes(session.byteBurst))",
            "connections per user (the token's `sub`) per node": thousands(node.connectionsPerUser),
            "connections per remote address per node": thousands(node.connectionsPerAddress),
            "subscriptions per connection": thousands(session.maxSubscriptions),
            "handshake (`Hello` answered)": "\(SessionLimits.defaultHandshakeTimeout.components.seconds) s",
        ]
    }

    @Test func theSpecsLimitsAreTheCodes() throws {
        let rows = try Self.limitRows()
        let expected = Self.expected()
        #expect(rows.count == expected.count, "rows in the spec: \(rows.map(\.limit))")
        for row in rows {
            guard let value = expected[row.limit] else {
                Issue.record("the spec's limit \"\(row.limit)\" has no check here")
                continue
            }
            #expect(row.value == value, "\(row.limit)")
        }
    }
}
