import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import NIOConcurrencyHelpers
import SyncModel
import SyncServer
import SyncWire
import Testing
@testable import TestSupport

/// What a server logs, kept for a test to read.
final class LogCapture: Sendable {
    struct Line: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: [String: String]
    }

    private let lines = NIOLockedValueBox<[Line]>([])

    var all: [Line] { lines.withLockedValue { $0 } }

    var logger: Logger {
        Logger(label: "coursesync.test.capture") { _ in Handler(capture: self) }
    }

    fileprivate func append(_ line: Line) { lines.withLockedValue { $0.append(line) } }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            let merged = self.metadata.merging(metadata ?? [:]) { _, new in new }
            capture.append(Line(level: level, message: "\(message)", metadata: merged.mapValues { "\($0)" }))
        }
    }
}

/// The access log: one `info` line per connection when it ends and one per HTTP request, with
/// what an operator asks of them, and never the token.
@Suite struct AccessLogTests {
    @Test func aConnectionEndsWithOneLineSayingWhoDidWhatAndHowItClosed() async throws {
        let capture = LogCapture()
        try await withHTTPSetup(logger: capture.logger) { setup in
            let token = setup.server.token([setup.course: .editor], user: "ada")
            let client = try await TestClient.connect(port: setup.server.port)
            try await client.hello(token: token)
            _ = try await client.subscribe(setup.course)
            _ = try await client.push(setup.course, batchSeq: 1, [.createChapter(temp: TempID(1)!, title: "One", placement: .atEnd)]).get()
            await client.close()
            // Refused at its header: the limit is named.
            let oversized = try await setup.connect(.webSocketJSON)
            try await oversized.sendWebSocketHeader(0x81, length: UInt64(Limits.maxHandshakeFrameBytes + 1))
            _ = try await oversized.expectClosed()
            // One HTTP request with a query, which the log leaves out.
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(setup.httpPort)/v1/courses/\(setup.course)?secret=1")!)
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
            let (_, response) = try await URLSession.shared.data(for: request)
            #expect((response as? HTTPURLResponse)?.statusCode == 200)

            try await eventually("three access lines") { capture.all.filter { $0.message == "connection" || $0.message == "http request" }.count >= 3 }
            let connections = capture.all.filter { $0.message == "connection" }
            let tcp = try #require(connections.first { $0.metadata["transport"] == "tcp" }, "\(connections)")
            #expect(tcp.level == .info)
            #expect(tcp.metadata["user"] == "ada" && tcp.metadata["courses"] == setup.course.description)
            #expect(tcp.metadata["pushes"] == "1" && tcp.metadata["close"] == "peer" && tcp.metadata["tls"] == "none")
            #expect(Int(tcp.metadata["frames_in"] ?? "") == 3, "Hello, Subscribe, Push")
            #expect((Int(tcp.metadata["frames_out"] ?? "") ?? 0) >= 4, "Welcome, a snapshot, Subscribed, Ack, Diff")
            #expect((Int(tcp.metadata["bytes_in"] ?? "") ?? 0) > 0 && tcp.metadata["remote"]?.contains("127.0.0.1") == true)
            #expect(tcp.metadata["duration_ms"] != nil && tcp.metadata["refused"] == nil)
            let refused = try #require(connections.first { $0.metadata["transport"] == "websocket-json" }, "\(connections)")
            #expect(refused.metadata["close"] == "frameTooLarge" && refused.metadata["refused"] == "frame-bytes")
            #expect(refused.metadata["reason"] != nil && refused.metadata["user"] == nil)
            let http = try #require(capture.all.first { $0.message == "http request" })
            #expect(http.metadata["method"] == "GET" && http.metadata["path"] == "/v1/courses/\(setup.course)")
            #expect(http.metadata["status"] == "200" && http.metadata["user"] == "ada" && http.metadata["duration_ms"] != nil)
            for line in capture.all {
                #expect(!line.metadata.values.contains { $0.contains(token) } && !line.message.contains(token), "the token in \(line)")
            }
        }
    }
}
