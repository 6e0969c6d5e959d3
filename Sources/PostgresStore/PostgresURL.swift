import Foundation
import NIOSSL
import PostgresNIO

/// Parses the libpq URL form into client configurations:
/// `postgres://user[:password]@host[:port][,host[:port]…]/database[?param=value&…]`.
///
/// Several hosts name the servers of one replicated database, tried in order (``PostgresPrimary``).
/// Parameters, as in libpq: `sslmode` (`disable`, `prefer` — the default —, `require`),
/// `target_session_attrs` (`any` — the default: the first host that answers —, or `read-write` /
/// `primary`: the first that accepts writes), `connect_timeout` (seconds).
public enum PostgresURL {
    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    /// Which server of several a connection must reach (libpq's `target_session_attrs`).
    public enum TargetSession: String, Sendable {
        /// The first that answers.
        case any
        /// The first that accepts writes: not a standby in recovery.
        case readWrite = "read-write"
    }

    /// `sslmode`, as this library uses it.
    public enum SSLMode: Sendable {
        case disable
        case prefer(TLSConfiguration)
        case require(TLSConfiguration)
    }

    /// A database on one or more hosts.
    public struct Target: Sendable {
        /// One client configuration per host, in the URL's order.
        public var hosts: [PostgresClient.Configuration]
        public var targetSession: TargetSession
        /// The `sslmode`, with its TLS configuration.
        public var tls: SSLMode

        /// `host:port,host:port/database`, for a log (no user, no password).
        public var description: String {
            hosts.map { "\($0.host ?? "(socket)"):\($0.port ?? 5432)" }.joined(separator: ",") + "/" + (hosts.first?.database ?? "")
        }
    }

    /// A URL naming exactly one host.
    public static func configuration(_ text: String) throws(Invalid) -> PostgresClient.Configuration {
        let target = try target(text)
        guard target.hosts.count == 1 else {
            throw Invalid(description: "this command takes one PostgreSQL host, not \(target.hosts.count): \(target.description)")
        }
        return target.hosts[0]
    }

    public static func target(_ text: String) throws(Invalid) -> Target {
        // URLComponents reads one host: the host list is taken out and read here, and the rest of
        // the URL is read with the first host in its place.
        guard let schemeEnd = text.range(of: "://") else {
            throw Invalid(description: "not a PostgreSQL URL: \(text) (expected postgres://user@host:port/database)")
        }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let hostList = authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
        let userInfo = authority.lastIndex(of: "@").map { String(authority[...$0]) } ?? ""
        let entries = hostList.split(separator: ",", omittingEmptySubsequences: false)
        let hosts = try entries.map { entry throws(Invalid) in try hostAndPort(entry, in: text) }
        let single = String(text[..<schemeEnd.upperBound]) + userInfo + entries[0] + rest[authorityEnd...]
        guard let components = URLComponents(string: single), let scheme = components.scheme,
              ["postgres", "postgresql"].contains(scheme) else {
            throw Invalid(description: "not a PostgreSQL URL: \(text) (expected postgres://user@host:port/database)")
        }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty else { throw Invalid(description: "the URL names no database: \(text)") }
        let user = components.user ?? ProcessInfo.processInfo.environment["USER"] ?? "postgres"
        let parameter = { (name: String) in components.queryItems?.first(where: { $0.name == name })?.value }
        let tls: PostgresClient.Configuration.TLS
        let sslMode: SSLMode
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        // As PostgreSQL itself requires by default (`ssl_min_protocol_version`).
        tlsConfiguration.minimumTLSVersion = .tlsv12
        switch parameter("sslmode") ?? "prefer" {
        case "disable": (tls, sslMode) = (.disable, .disable)
        case "prefer", "allow": (tls, sslMode) = (.prefer(tlsConfiguration), .prefer(tlsConfiguration))
        case "require", "verify-ca", "verify-full": (tls, sslMode) = (.require(tlsConfiguration), .require(tlsConfiguration))
        case let mode: throw Invalid(description: "unsupported sslmode \(mode): use disable, prefer or require")
        }
        let targetSession: TargetSession
        switch parameter("target_session_attrs") ?? "any" {
        case "any": targetSession = .any
        case "read-write", "primary": targetSession = .readWrite
        case let attrs: throw Invalid(description: "unsupported target_session_attrs \(attrs): use any, read-write or primary")
        }
        var connectTimeout: Duration?
        if let text = parameter("connect_timeout") {
            guard let seconds = Int(text), seconds > 0 else { throw Invalid(description: "connect_timeout must be a number of seconds, not \(text)") }
            connectTimeout = .seconds(seconds)
        }
        let configurations = hosts.map { host in
            var configuration = PostgresClient.Configuration(host: host.host, port: host.port, username: user,
                                                             password: components.password, database: database, tls: tls)
            configuration.options.maximumConnections = 32
            if let connectTimeout { configuration.options.connectTimeout = connectTimeout }
            return configuration
        }
        return Target(hosts: configurations, targetSession: targetSession, tls: sslMode)
    }

    /// `host`, `host:port` or `[v6 address]:port`.
    private static func hostAndPort(_ entry: Substring, in text: String) throws(Invalid) -> (host: String, port: Int) {
        var host = entry
        var port = 5432
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
            let after = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if after.hasPrefix(":") {
                guard let number = Int(after.dropFirst()), (1...65_535).contains(number) else { throw Invalid(description: "a bad port in \(text)") }
                port = number
            } else if !after.isEmpty {
                throw Invalid(description: "a bad host in \(text)")
            }
        } else if let colon = host.lastIndex(of: ":") {
            guard let number = Int(host[host.index(after: colon)...]), (1...65_535).contains(number) else { throw Invalid(description: "a bad port in \(text)") }
            port = number
            host = host[..<colon]
        }
        guard !host.isEmpty else { throw Invalid(description: "the URL names no host: \(text)") }
        return (String(host).removingPercentEncoding ?? String(host), port)
    }
}
