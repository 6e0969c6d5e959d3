import Crypto
import Foundation
import NIOSSL
import SQLiteStore
@testable import SyncClient
import SyncModel
import SyncServer
import SyncTransport
import SyncWire
import Testing
import X509

/// A certificate authority and server certificates made in the test (swift-certificates), as PEM files.
struct TestCertificates {
    let folder: URL
    let caFile: String
    let otherCAFile: String

    init(folder: URL) throws {
        self.folder = folder
        let (ca, caKey) = try Self.authority("CourseSync Test CA")
        caFile = try Self.write(ca.serializeAsPEM().pemString, "ca.pem", in: folder)
        let (other, _) = try Self.authority("Somebody Else's CA")
        otherCAFile = try Self.write(other.serializeAsPEM().pemString, "other-ca.pem", in: folder)
        for host in ["localhost", "elsewhere.example", "client"] {
            let key = P256.Signing.PrivateKey()
            let now = Date()
            let certificate = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
                notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(3600),
                issuer: ca.subject, subject: try DistinguishedName { CommonName(host) },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    SubjectAlternativeNames([.dnsName(host)])
                    try ExtendedKeyUsage(host == "client" ? [.clientAuth] : [.serverAuth])
                },
                issuerPrivateKey: .init(caKey))
            _ = try Self.write(certificate.serializeAsPEM().pemString, "\(host).pem", in: folder)
            _ = try Self.write(key.pemRepresentation, "\(host).key", in: folder)
        }
    }

    func certificate(_ host: String) -> String { folder.appendingPathComponent("\(host).pem").path }
    func key(_ host: String) -> String { folder.appendingPathComponent("\(host).key").path }

    /// The server's TLS with the certificate for `host`.
    func server(_ host: String) throws -> TransportSecurity {
        try .server(certificateFile: certificate(host), keyFile: key(host))
    }

    static func authority(_ name: String) throws -> (Certificate, P256.Signing.PrivateKey) {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(3600),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(key))
        return (certificate, key)
    }

    static func write(_ text: String, _ name: String, in folder: URL) throws -> String {
        let path = folder.appendingPathComponent(name).path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }
}

/// TLS from end to end: the client library and the server's pipeline, with certificates made in
/// the test. What fails must fail clearly, and a connection that never completed its handshake
/// commits nothing.
@Suite struct TLSTests {
    /// A course on an embedded store, a server with TLS (`certificateHost`'s certificate), and the
    /// test's certificates.
    static func withTLSServer(certificateHost: String = "localhost", mutual: Bool = false,
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
            try await withServer(store: store, configure: { $0.security = security }) { server in
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
