import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SQLiteStore
@testable import SyncClient
import SyncModel
import SyncServer
import SyncTransport
import SyncWire
import Testing
import X509
@testable import TestSupport


/// TLS from end to end: the client library and the server's pipeline, with certificates made in
/// the test. What fails must fail clearly, and a connection that never completed its handshake
/// commits nothing.
@Suite struct TLSTests {
    /// A course on an embedded store, a server with TLS (`certificateHost`'s certificate), and the
    /// test's certificates.
    static func withTLSServer(certificateHost: String = "localhost", mutual: Bool = false, logger: Logger = TestDatabase.logger,
                              _ body: (TestServer, SQLiteStore, EntityID, TestCertificates, URL) async throws -> Void) async throws {
        try await withReplicaFolder { folder in
            let certificates = try TestCertificates(folder: folder)
            let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            let courseID = EntityID.fresh()
            try await store.createCourse(Course(id: courseID, title: "Secure"))
            let security = mutual
                ? try TransportSecurity.server(certificateFile: certificates.certificate(certificateHost), keyFile: certificates.key(certificateHost),
                                               clientCAFile: certificates.caFile)
                : try certificates.server(certificateHost)
            try await withServer(store: store, configure: { $0.security = security }, logger: logger) { server in
                try await body(server, store, courseID, certificates, folder)
            }
        }
    }

    @Test func aClientTrustingTheAuthoritySyncsOverTLS() async throws {
        try await Self.withTLSServer { server, store, courseID, certificates, folder in
            let client = try await server.client(of: courseID, in: folder, name: "ada") {
                $0.host = "localhost"
                $0.tls = ClientConfiguration.TLS(caFile: certificates.caFile)
            }
            let chapter = try await client.createChapter(title: "Over TLS")
            try await client.settle()
            #expect(try await store.courseSeq(courseID) == 1)
            #expect(await client.key(for: try #require(client.confirmedState.chapters.keys.first)) == chapter)
            try await client.close()
        }
    }

    /// The certificate names another host, or its authority is not trusted: no connection, a
    /// clear reason, nothing committed (the edit waits in the replica).
    @Test(arguments: ["wrong host", "untrusted authority"])
    func aServerTheClientCannotVerifyIsRefused(_ case: String) async throws {
        try await Self.withTLSServer(certificateHost: `case` == "wrong host" ? "elsewhere.example" : "localhost") { server, store, courseID, certificates, folder in
            let client = try await server.client(of: courseID, in: folder, name: "ada") {
                $0.host = "localhost"
                $0.tls = ClientConfiguration.TLS(caFile: `case` == "wrong host" ? certificates.caFile : certificates.otherCAFile)
            }
            _ = try await client.createChapter(title: "Never sent")
            try await eventually("a refused handshake") { await client.lastConnectionError != nil }
            let reason = try #require(await client.lastConnectionError)
            #expect(reason.contains("handshake") || reason.contains("certificate") || reason.contains("verify"), "\(reason)")
            #expect(await client.phase != .live)
            #expect(try await store.courseSeq(courseID) == 0)
            try await client.close()
        }
    }

    /// Mutual TLS: a client without a certificate from the server's client authority is refused;
    /// one with it syncs.
    @Test func mutualTLSRefusesAClientWithoutACertificate() async throws {
        try await Self.withTLSServer(mutual: true) { server, store, courseID, certificates, folder in
            let anonymous = try await server.client(of: courseID, in: folder, name: "anonymous") {
                $0.host = "localhost"
                $0.tls = ClientConfiguration.TLS(caFile: certificates.caFile)
            }
            _ = try await anonymous.createChapter(title: "Never sent")
            try await eventually("a refused handshake") { await anonymous.lastConnectionError != nil }
            #expect(try await store.courseSeq(courseID) == 0)
            try await anonymous.close()
            let known = try await server.client(of: courseID, in: folder, name: "known") {
                $0.host = "localhost"
                $0.tls = ClientConfiguration.TLS(caFile: certificates.caFile, certificateFile: certificates.certificate("client"),
                                                 keyFile: certificates.key("client"))
            }
            _ = try await known.createChapter(title: "Sent")
            try await known.settle()
            #expect(try await store.courseSeq(courseID) == 1)
            try await known.close()
        }
    }

    /// A plaintext client talking to the TLS port: the server's TLS handshake fails on its bytes,
    /// the connection closes, and the push it sent is never read.
    @Test func aPlaintextClientOnTheTLSPortCommitsNothing() async throws {
        try await Self.withTLSServer { server, store, courseID, _, _ in
            let client = try await TestClient.connect(port: server.port)
            try? await client.send(.hello(Hello(clientID: client.clientID, token: server.token([courseID: .editor]))))
            try? await client.send(.push(Push(courseID: courseID, batchSeq: 1, baseSeq: 0,
                                              ops: [.createChapter(temp: TempID(1)!, title: "Smuggled", placement: .atEnd)])))
            _ = try? await client.expectClosed()
            #expect(!client.received.contains { if case .welcome = $0 { true } else { false } })
            #expect(try await store.courseSeq(courseID) == 0)
        }
    }

    /// The access log names the TLS version the handshake negotiated.
    @Test func theAccessLogNamesTheNegotiatedTLSVersion() async throws {
        let capture = LogCapture()
        try await Self.withTLSServer(logger: capture.logger) { server, _, courseID, certificates, _ in
            let client = try await TestClient.connect(port: server.port, security: try .client(caFile: certificates.caFile), host: "localhost")
            try await client.hello(token: server.token([courseID: .editor]))
            await client.close()
            try await eventually("the connection's line") { capture.all.contains { $0.message == "connection" } }
            #expect(capture.all.first { $0.message == "connection" }?.metadata["tls"] == "TLSv1.3")
        }
    }

    /// TLS 1.2 or later (spec §1) on both listeners: a client offering only TLS 1.0 or 1.1 is
    /// refused at the handshake, on the protocol's TCP port and on the HTTP/WebSocket port; 1.2
    /// and 1.3 complete.
    @Test func everyListenerRefusesTLSOlderThan12() async throws {
        try await Self.withTLSServer { server, _, _, certificates, _ in
            let (ports, sink) = AsyncStream.makeStream(of: Int.self)
            let listener = HTTPListener(server: server.server, host: "127.0.0.1", port: 0, security: try certificates.server("localhost"),
                                        logger: TestDatabase.logger, announce: { sink.yield($0) })
            let running = Task { try await listener.run() }
            defer { running.cancel() }
            var iterator = ports.makeAsyncIterator()
            let httpPort = try #require(await iterator.next())
            for port in [server.port, httpPort] {
                for version in [TLSVersion.tlsv1, .tlsv11] {
                    let outcome = await Self.handshake(port: port, caFile: certificates.caFile, offering: version)
                    #expect(outcome == nil, "port \(port) accepted \(version)")
                }
                #expect(await Self.handshake(port: port, caFile: certificates.caFile, offering: .tlsv12) == .tlsv12)
                #expect(await Self.handshake(port: port, caFile: certificates.caFile, offering: .tlsv13) == .tlsv13)
            }
        }
    }

    /// And the client library refuses a server that offers only TLS 1.1.
    @Test func theClientRefusesAServerOlderThanTLS12() async throws {
        try await withReplicaFolder { folder in
            let certificates = try TestCertificates(folder: folder)
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificates.certificate("localhost")).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: certificates.key("localhost"), format: .pem)))
            configuration.minimumTLSVersion = .tlsv1
            configuration.maximumTLSVersion = .tlsv11
            let context = try NIOSSLContext(configuration: configuration)
            let old = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context)) } }
                .bind(host: "127.0.0.1", port: 0).get()
            let client = TLSProbe()
            let outcome = await client.handshake(port: old.localAddress!.port!, security: try .client(caFile: certificates.caFile))
            #expect(outcome == nil, "the client library completed a TLS \(String(describing: outcome)) handshake")
            try await old.close()
        }
    }

    /// The version a handshake with `port` negotiates when the client offers only `version`, or
    /// nil if the server refuses it.
    static func handshake(port: Int, caFile: String, offering version: TLSVersion) async -> TLSVersion? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates((try? NIOSSLCertificate.fromPEMFile(caFile)) ?? [])
        configuration.minimumTLSVersion = version
        configuration.maximumTLSVersion = version
        guard let context = try? NIOSSLContext(configuration: configuration) else { return nil }
        return await TLSProbe().handshake(port: port, security: .tls(context))
    }

    /// And the server's plaintext port refuses a TLS client (its ClientHello is not a frame).
    @Test func aTLSClientOnAPlaintextPortFailsClearly() async throws {
        try await withReplicaFolder { folder in
            let certificates = try TestCertificates(folder: folder)
            let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            let courseID = EntityID.fresh()
            try await store.createCourse(Course(id: courseID, title: "Plain"))
            try await withServer(store: store) { server in
                let client = try await server.client(of: courseID, in: folder, name: "ada") {
                    $0.host = "localhost"
                    $0.tls = ClientConfiguration.TLS(caFile: certificates.caFile)
                }
                try await eventually("a failed handshake") { await client.lastConnectionError != nil }
                #expect(await client.phase != .live)
                try await client.close()
            }
        }
    }
}

/// Opens a TLS connection and reports the version its handshake negotiated (nil if it failed).
struct TLSProbe {
    func handshake(port: Int, security: TransportSecurity) async -> TLSVersion? {
        guard case .tls(let context) = security else { return nil }
        do {
            let done = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Bool.self)
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                        try channel.pipeline.syncOperations.addHandler(Outcome(done: done))
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
            defer { channel.close(promise: nil) }
            guard try await done.futureResult.get() else { return nil }
            return try await channel.nioSSL_tlsVersion().get()
        } catch {
            return nil
        }
    }

    /// Completes `done` with whether the handshake completed (false on an error or a close first).
    private final class Outcome: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let done: EventLoopPromise<Bool>
        init(done: EventLoopPromise<Bool>) { self.done = done }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted? = event as? TLSUserEvent { done.succeed(true) }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            done.succeed(false)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            done.succeed(false)
        }
    }
}
