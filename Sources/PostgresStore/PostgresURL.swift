import Foundation
import NIOSSL
import PostgresNIO

/// Parses `postgres://user[:password]@host[:port]/database[?sslmode=disable|prefer|require]`, the
/// libpq URL form, into a client configuration. `sslmode` defaults to `prefer`, as in libpq.
public enum PostgresURL {
    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public static func configuration(_ text: String) throws(Invalid) -> PostgresClient.Configuration {
        guard let components = URLComponents(string: text), let scheme = components.scheme,
              ["postgres", "postgresql"].contains(scheme) else {
            throw Invalid(description: "not a PostgreSQL URL: \(text) (expected postgres://user@host:port/database)")
        }
        guard let host = components.host, !host.isEmpty else { throw Invalid(description: "the URL names no host: \(text)") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty else { throw Invalid(description: "the URL names no database: \(text)") }
        let user = components.user ?? ProcessInfo.processInfo.environment["USER"] ?? "postgres"
        let tls: PostgresClient.Configuration.TLS
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        // As PostgreSQL itself requires by default (`ssl_min_protocol_version`).
        tlsConfiguration.minimumTLSVersion = .tlsv12
        switch components.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "prefer" {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(tlsConfiguration)
        case "require", "verify-ca", "verify-full": tls = .require(tlsConfiguration)
        case let mode: throw Invalid(description: "unsupported sslmode \(mode): use disable, prefer or require")
        }
        var configuration = PostgresClient.Configuration(host: host, port: components.port ?? 5432, username: user,
                                                         password: components.password, database: database, tls: tls)
        configuration.options.maximumConnections = 32
        return configuration
    }
}
