import Foundation
import NIOCore
import NIOSSL
import SyncModel
import SyncWire

/// Whether a connection is encrypted: TLS with a context (certificates, trust), or plaintext.
public enum TransportSecurity: Sendable {
    case plaintext
    case tls(NIOSSLContext)

    /// The oldest TLS version either end accepts (the spec's §1): 1.0 and 1.1 are refused at the
    /// handshake; 1.3 is negotiated wherever both ends have it.
    public static let minimumTLSVersion = TLSVersion.tlsv12

    /// A client's TLS: the system's trust store, or the PEM certificate authorities in `caFile`
    /// (and nothing else). The server's certificate must name the host connected to. For a server
    /// that asks for mutual TLS, the client's own certificate chain and key (PEM).
    public static func client(caFile: String?, certificateFile: String? = nil, keyFile: String? = nil) throws -> TransportSecurity {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = minimumTLSVersion
        if let caFile {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        }
        if let certificateFile, let keyFile {
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
        }
        return .tls(try NIOSSLContext(configuration: configuration))
    }

    /// A server's TLS from PEM files: its certificate chain and key, and, for mutual TLS, the
    /// authorities whose client certificates it accepts (a client without one is refused).
    public static func server(certificateFile: String, keyFile: String, clientCAFile: String? = nil) throws -> TransportSecurity {
        let chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { NIOSSLCertificateSource.certificate($0) }
        let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
        var configuration: TLSConfiguration
        if let clientCAFile {
            configuration = .makeServerConfigurationWithMTLS(certificateChain: chain, privateKey: key,
                                                             trustRoots: .certificates(try NIOSSLCertificate.fromPEMFile(clientCAFile)))
            // Client certificates are checked against the authorities, not against a host name.
            configuration.certificateVerification = .noHostnameVerification
        } else {
            configuration = .makeServerConfiguration(certificateChain: chain, privateKey: key)
        }
        configuration.minimumTLSVersion = minimumTLSVersion
        return .tls(try NIOSSLContext(configuration: configuration))
    }

    public var isTLS: Bool { if case .tls = self { true } else { false } }
}

/// The one place where a protocol connection's pipeline is assembled, for the server, the client
/// library, the command-line tools and the tests: TLS (if any), then the length-prefixed framing
/// with the limits of each direction. Callers add their message handling after it.
public enum ProtocolPipeline {
    /// A client's pipeline. With TLS, the server's certificate is verified for `host` (a name, or
    /// an IP address checked against the certificate's IP addresses).
    /// `framesOutbound: false` leaves outbound bytes as they are (a test client that writes frames,
    /// well-formed or not, itself).
    public static func configureClient(_ pipeline: ChannelPipeline.SynchronousOperations, security: TransportSecurity, host: String,
                                       framesOutbound: Bool = true) throws {
        if case .tls(let context) = security {
            try pipeline.addHandler(NIOSSLClientHandler(context: context, serverHostname: isIPAddress(host) ? nil : host))
        }
        try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: Limits.maxServerFrameBytes)))
        if framesOutbound { try pipeline.addHandler(FrameHeaderWriter(maxFrameBytes: Limits.maxClientFrameBytes)) }
    }

    /// A server's pipeline: `beforeFraming` (the server's graceful-close handler) sits between TLS
    /// and the framing, so it sees the plaintext stream.
    public static func configureServer(_ pipeline: ChannelPipeline.SynchronousOperations, security: TransportSecurity,
                                       beforeFraming: (any ChannelHandler)? = nil) throws {
        if case .tls(let context) = security {
            try pipeline.addHandler(NIOSSLServerHandler(context: context))
        }
        if let beforeFraming { try pipeline.addHandler(beforeFraming) }
        try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: Limits.maxClientFrameBytes,
                                                                  firstFrameMaxBytes: Limits.maxHandshakeFrameBytes)))
        try pipeline.addHandler(FrameHeaderWriter(maxFrameBytes: Limits.maxServerFrameBytes))
    }

    static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}
