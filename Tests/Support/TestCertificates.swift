import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SQLiteStore
import SyncModel
import SyncServer
import SyncTransport
import SyncWire
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
