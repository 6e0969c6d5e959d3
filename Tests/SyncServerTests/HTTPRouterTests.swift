import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import NIOCore
import ServiceLifecycle
import SyncModel
import SyncServer
import Testing
@testable import TestSupport

/// The one HTTP router, over real HTTP on an ``OpsListener``: each route only where configured,
/// HEAD without a body, other methods refused, a 404 that names what is served, and `/ready`
/// bounded by its deadline.
@Suite struct HTTPRouterTests {
    struct Failing: Error {}

    static func withOpsListener(_ routes: HTTPRoutes, _ body: (Int) async throws -> Void) async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let listener = OpsListener(host: "127.0.0.1", port: 0, routes: routes, logger: Logger(label: "test"), announce: { continuation.yield($0) })
        let task = Task { try await listener.run() }
        defer { task.cancel() }
        var iterator = ports.makeAsyncIterator()
        try await body(try #require(await iterator.next()))
    }

    @Test func eachRouteWhereConfiguredAndNothingElse() async throws {
        let file = HTTPFile(body: ByteBuffer(string: "<p>hi</p>"), contentType: "text/html", headers: [("X-Frame-Options", "DENY")])
        let routes = HTTPRoutes(ready: { throw Failing() }, metrics: { "up 1\n" }, files: ["/": file, "/index.html": file])
        try await Self.withOpsListener(routes) { port in
            let page = try await HTTPTest.request(port, "GET", "/", token: nil)
            #expect(page.status == 200 && page.body == "<p>hi</p>")
            let head = try await HTTPTest.request(port, "HEAD", "/index.html", token: nil)
            #expect(head.status == 200 && head.body.isEmpty)
            #expect(try await HTTPTest.request(port, "GET", "/metrics?x=1", token: nil).body == "up 1\n")
            #expect(try await HTTPTest.request(port, "GET", "/health", token: nil).status == 200)
            #expect(try await HTTPTest.request(port, "GET", "/ready", token: nil).status == 503)
            #expect(try await HTTPTest.request(port, "POST", "/health", token: nil, body: "{}").status == 405)
            let missing = try await HTTPTest.request(port, "GET", "/nope", token: nil)
            #expect(missing.status == 404 && missing.body.contains("/metrics, /health, /ready, the page at /"), "\(missing.body)")
            // No API on the operator's listener.
            #expect(try await HTTPTest.request(port, "GET", "/v1/courses/x", token: "t").status == 404)
        }
        try await Self.withOpsListener(HTTPRoutes()) { port in
            let missing = try await HTTPTest.request(port, "GET", "/metrics", token: nil)
            #expect(missing.status == 404 && !missing.body.contains("/metrics"))
        }
    }

    /// A batch body over the frame limit is refused (413, FRAME_TOO_LARGE) before it is all read.
    @Test func anOversizedBatchBodyIsRefused() async throws {
        try await withHTTPSetup { setup in
            let body = String(repeating: "x", count: Limits.maxClientFrameBytes + 1)
            let answer = try await HTTPTest.request(setup.httpPort, "POST", "/v1/courses/\(setup.course)/batches",
                                                           token: setup.server.token([setup.course: .editor]), body: body)
            #expect(answer.status == 413 && answer.body.contains("FRAME_TOO_LARGE"), "\(answer.status) \(answer.body)")
        }
    }
}
