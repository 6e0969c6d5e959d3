import Foundation
import Logging
import NIOCore
import SQLiteStore
import SyncModel
import SyncServer
import SyncTransport
import SyncWire
import Testing
@testable import TestSupport

/// The protocol over WebSocket (binary Envelopes, and their JSON mapping as text) behaves as over
/// TCP: the same sessions, hubs and limits behind an ``HTTPListener``. Each scenario runs on every
/// transport.
@Suite struct WebSocketTests {

    /// Handshake, subscribe, push → ack, and the diff fanned out to a client on another transport.
    @Test(arguments: Transport.allCases)
    func aBatchIsAckedAndFannedOut(_ transport: Transport) async throws {
        try await withHTTPSetup { setup in
            let author = try await setup.editor(transport)
            let watcher = try await setup.editor(transport == .tcp ? .webSocketJSON : .tcp)
            try await author.subscribe(setup.course)
            try await watcher.subscribe(setup.course)
            let ack = try await author.push(setup.course, batchSeq: 1, [.createChapter(temp: TempID(1)!, title: "Over \(transport)", placement: .atEnd)]).get()
            #expect(ack.seq == 1)
            let diff = try await watcher.expect("Diff") { if case .diff(let diff) = $0 { diff } else { nil } }
            #expect(diff.seq == 1 && diff.changes.chapters.first?.title == "Over \(transport)")
            // The same batch again is answered from the exactly-once record, identically.
            let again = try await author.push(setup.course, batchSeq: 1, [.createChapter(temp: TempID(1)!, title: "Over \(transport)", placement: .atEnd)]).get()
            #expect(again == ack)
            await author.close()
            await watcher.close()
        }
    }

    @Test(arguments: Transport.allCases)
    func aBadTokenIsRefusedWithAnError(_ transport: Transport) async throws {
        try await withHTTPSetup { setup in
            let client = try await setup.connect(transport)
            try await client.send(.hello(Hello(clientID: client.clientID, token: "not-a-jwt")))
            #expect(try await client.expectClosed()?.code == .unauthenticated)
        }
    }

    /// A message that is not an Envelope closes that connection with MALFORMED_FRAME, nothing else.
    @Test(arguments: Transport.allCases)
    func aMalformedMessageClosesOnlyItsConnection(_ transport: Transport) async throws {
        try await withHTTPSetup { setup in
            let bystander = try await setup.editor(.tcp)
            let client = try await setup.editor(transport)
            switch transport {
            case .tcp: try await client.sendRaw(Framing.frame([0xff, 0xff, 0xff]))
            case .webSocketBinary: try await client.sendRaw([0xff, 0xff, 0xff])
            case .webSocketJSON: try await client.sendRawText(#"{"subscribe": {"courseId": 12"#)
            }
            #expect(try await client.expectClosed()?.code == .malformedFrame)
            try await bystander.subscribe(setup.course)
            #expect(!bystander.isClosed)
            await bystander.close()
        }
    }

    /// Heartbeats are the protocol's `Ping`/`Pong` messages on every transport: a client's `Ping`
    /// is answered, and a silent client is pinged, then closed with IDLE_TIMEOUT.
    @Test(arguments: Transport.allCases)
    func heartbeatsAreProtocolMessages(_ transport: Transport) async throws {
        try await withHTTPSetup(configure: { $0.heartbeatInterval = .seconds(1) }) { setup in
            let client = try await setup.connect(transport)
            try await client.hello(token: setup.server.token([setup.course: .editor]))
            try await client.send(.ping(nonce: 42))
            // Not inside #expect: `#expect(try await client.expect("Pong") { … } == 42)` left the next
            // `expect` polling with the wrong closure (seen here: the server's Ping never matched).
            let pong = try await client.expect("Pong") { if case .pong(let nonce) = $0 { nonce } else { nil } }
            #expect(pong == 42)
            // Then silence: the server pings after a quiet interval, and closes after three.
            let ping = try await client.expect("Ping") { if case .ping(let nonce) = $0 { nonce } else { nil } }
            #expect(ping != 42)
            #expect(try await client.expectClosed()?.code == .idleTimeout)
        }
    }

    /// The first message is held to the handshake's 64 KiB on every transport: a larger one is
    /// refused with FRAME_TOO_LARGE before anything is decoded.
    @Test(arguments: Transport.allCases)
    func anOversizedFirstMessageIsRefused(_ transport: Transport) async throws {
        try await withHTTPSetup { setup in
            let client = try await setup.connect(transport)
            let token = String(repeating: "x", count: Limits.maxHandshakeFrameBytes + 1)
            try await client.send(.hello(Hello(clientID: client.clientID, token: token)))
            #expect(try await client.expectClosed()?.code == .frameTooLarge)
        }
    }

    /// After the handshake a message may be 8 MiB on every transport; one announced larger is
    /// refused by its length (TCP's prefix, WebSocket's frame header), before its bytes are
    /// read, with FRAME_TOO_LARGE like any other frame the server will not take.
    @Test(arguments: Transport.allCases)
    func aMessageOverTheFrameLimitIsRefusedByItsLength(_ transport: Transport) async throws {
        try await withHTTPSetup { setup in
            let client = try await setup.editor(transport)
            let length = UInt64(Limits.maxClientFrameBytes + 1)
            switch transport {
            case .tcp: try await client.sendRaw(withUnsafeBytes(of: UInt32(length).bigEndian) { Array($0) })
            case .webSocketBinary, .webSocketJSON: try await client.sendWebSocketHeader(length: length)
            }
            #expect(try await client.expectClosed()?.code == .frameTooLarge)
        }
    }

    /// Before `Hello`, a WebSocket message is held to the handshake's 64 KiB by its frame header:
    /// a header announcing 64 KiB + 1 with its bytes held back is refused at once (it used to wait
    /// for the bytes until the handshake deadline, letting a peer that never said `Hello` make the
    /// server buffer up to 8 MiB).
    @Test(arguments: [Transport.webSocketBinary, .webSocketJSON])
    func aFirstMessageAnnouncedOverTheHandshakeLimitIsRefusedByItsHeader(_ transport: Transport) async throws {
        try await withHTTPSetup { setup in
            let client = try await setup.connect(transport)
            try await client.sendWebSocketHeader(transport == .webSocketJSON ? 0x81 : 0x82, length: UInt64(Limits.maxHandshakeFrameBytes + 1))
            #expect(try await client.expectClosed()?.code == .frameTooLarge)
        }
    }

    /// After `Welcome`, the frames of a fragmented message add up: a 5 MiB fragment, then a
    /// header announcing 5 MiB more, is refused at that header (8 MiB is the limit).
    @Test(arguments: [Transport.webSocketBinary, .webSocketJSON])
    func aFragmentedMessageIsRefusedWhenItsHeadersAddUpPastTheLimit(_ transport: Transport) async throws {
        try await withHTTPSetup { setup in
            let client = try await setup.editor(transport)
            let fragment = 5 << 20
            try await client.sendWebSocketHeader(transport == .webSocketJSON ? 0x01 : 0x02, length: UInt64(fragment), payload: fragment)
            try await client.sendWebSocketHeader(0x80, length: UInt64(fragment))
            #expect(try await client.expectClosed()?.code == .frameTooLarge)
        }
    }

    /// A WebSocket protocol error (here a control frame split into fragments, which RFC 6455
    /// forbids) is a malformed frame: `Error{MALFORMED_FRAME}`, then the close, as for a bad Envelope.
    @Test(arguments: [Transport.webSocketBinary, .webSocketJSON])
    func aWebSocketProtocolErrorIsAMalformedFrame(_ transport: Transport) async throws {
        try await withHTTPSetup { setup in
            let client = try await setup.editor(transport)
            try await client.sendWebSocketHeader(0x09, length: 0) // a ping without FIN
            #expect(try await client.expectClosed()?.code == .malformedFrame)
        }
    }

    /// An upgrade without one of the protocol's subprotocols, or at another path, is refused.
    @Test func anUpgradeWithoutOurSubprotocolIsRefused() async throws {
        try await withHTTPSetup { setup in
            await #expect(throws: (any Error).self) {
                try await TestClient.connectWebSocket(port: setup.httpPort, form: .binary, path: "/elsewhere")
            }
        }
    }
}

enum Transport: String, CaseIterable, CustomTestStringConvertible {
    case tcp, webSocketBinary, webSocketJSON
    var testDescription: String { rawValue }
}

/// A server on a SQLite store with one course, listening on TCP and on HTTP (WebSocket, the backend API).
struct HTTPSetup {
    let server: TestServer
    let store: SQLiteStore
    let httpPort: Int
    let course: EntityID

    func connect(_ transport: Transport, answerPings: Bool = false) async throws -> TestClient {
        switch transport {
        case .tcp: try await TestClient.connect(port: server.port, answerPings: answerPings)
        case .webSocketBinary: try await TestClient.connectWebSocket(port: httpPort, form: .binary, answerPings: answerPings)
        case .webSocketJSON: try await TestClient.connectWebSocket(port: httpPort, form: .json, answerPings: answerPings)
        }
    }

    func editor(_ transport: Transport) async throws -> TestClient {
        let client = try await connect(transport)
        try await client.hello(token: server.token([course: .editor]))
        return client
    }
}

func withHTTPSetup(configure: (inout ServerConfiguration) -> Void = { _ in }, logger: Logger = TestDatabase.logger,
                   _ body: (HTTPSetup) async throws -> Void) async throws {
    try await withCourseServer("WebSocket", configure: configure, logger: logger) { _, store, course, server in
        let (ports, sink) = AsyncStream.makeStream(of: Int.self)
        let listener = HTTPListener(server: server.server, host: "127.0.0.1", port: 0, logger: logger,
                                     announce: { sink.yield($0) })
        let running = Task { try await listener.run() }
        defer { running.cancel() }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        try await body(HTTPSetup(server: server, store: store, httpPort: port, course: course))
    }
}

