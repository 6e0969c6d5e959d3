import Crypto
import Foundation
import SyncModel
import SyncWire

/// What a token lets its bearer do in one course.
public enum Role: String, Codable, Hashable, Sendable, CaseIterable {
    /// May subscribe and push batches.
    case editor
    /// May subscribe only.
    case viewer
}

/// The signed content of a bearer token.
public struct TokenClaims: Codable, Hashable, Sendable {
    /// The user the token was issued to (for logs and audit).
    public var sub: String
    /// Expiry, in seconds since 1970.
    public var exp: Int64
    /// Role per course ID (lower-case UUID text); the key `*` covers every course.
    public var courses: [String: Role]

    public init(user: String, expires: Date, courses: [EntityID: Role], everyCourse: Role? = nil) {
        sub = user
        exp = Int64(expires.timeIntervalSince1970.rounded(.down))
        var roles = Dictionary(uniqueKeysWithValues: courses.map { ($0.key.description, $0.value) })
        if let everyCourse { roles[TokenClaims.everyCourse] = everyCourse }
        self.courses = roles
    }

    static let everyCourse = "*"
}

/// An authenticated connection's identity and rights.
public struct Principal: Hashable, Sendable {
    public var user: String
    public var expires: Date
    public var roles: [EntityID: Role]
    public var everyCourse: Role?

    public func role(in courseID: EntityID) -> Role? { roles[courseID] ?? everyCourse }
}

/// Issues and verifies bearer tokens: `v1.<claims>.<signature>`, both parts base64url without
/// padding, the claims JSON, the signature HMAC-SHA256 over `v1.<claims>` with the server secret.
public struct TokenAuthority: Sendable {
    /// Shortest secret accepted: 256 bits.
    public static let minimumSecretBytes = 32
    static let prefix = "v1"

    private let secret: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: secret) }

    public init(secret: some Collection<UInt8>) throws(TokenError) {
        guard secret.count >= Self.minimumSecretBytes else { throw .secretTooShort(secret.count) }
        self.secret = Array(secret)
    }

    /// A token carrying `claims`, signed with this authority's secret.
    public func issue(_ claims: TokenClaims) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        // Encoding a struct of strings and integers cannot fail.
        let body = Self.prefix + "." + Base64URL.encode(try! encoder.encode(claims))
        let signature = HMAC<SHA256>.authenticationCode(for: Data(body.utf8), using: key)
        return body + "." + Base64URL.encode(Data(signature))
    }

    /// The principal a token names, or why it is not acceptable.
    public func verify(_ token: String, now: Date) -> Result<Principal, ConnectionError> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == Self.prefix,
              let claimsJSON = Base64URL.decode(parts[1]), let signature = Base64URL.decode(parts[2])
        else { return .failure(ConnectionError(.unauthenticated, "the token is not a CourseSync v1 token")) }
        let body = Data(parts[0..<2].joined(separator: ".").utf8)
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: body, using: key) else {
            return .failure(ConnectionError(.unauthenticated, "the token's signature is not valid for this server"))
        }
        guard let claims = try? JSONDecoder().decode(TokenClaims.self, from: claimsJSON) else {
            return .failure(ConnectionError(.unauthenticated, "the token's claims are malformed"))
        }
        let expires = Date(timeIntervalSince1970: TimeInterval(claims.exp))
        guard expires > now else {
            return .failure(ConnectionError(.tokenExpired, "the token expired at \(expires); ask for a new one"))
        }
        var roles: [EntityID: Role] = [:]
        for (course, role) in claims.courses where course != TokenClaims.everyCourse {
            guard let id = EntityID(course) else {
                return .failure(ConnectionError(.unauthenticated, "the token names an invalid course ID"))
            }
            roles[id] = role
        }
        return .success(Principal(user: claims.sub, expires: expires, roles: roles, everyCourse: claims.courses[TokenClaims.everyCourse]))
    }
}

public enum TokenError: Error, Hashable, Sendable, CustomStringConvertible {
    case secretTooShort(Int)
    case unreadableSecret(path: String, reason: String)

    public var description: String {
        switch self {
        case .secretTooShort(let count):
            "the token secret has \(count) bytes; at least \(TokenAuthority.minimumSecretBytes) are needed"
        case .unreadableSecret(let path, let reason): "cannot read the token secret at \(path): \(reason)"
        }
    }
}

/// The server secret as kept in a file: one line of hex (64 digits for the generated 32 bytes).
public enum TokenSecret {
    /// 32 random bytes as hex text, for a new secret file.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &generator)) }.joined()
    }

    /// The secret bytes in the file at `path`: its text with surrounding white space trimmed.
    public static func load(path: String) throws(TokenError) -> [UInt8] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadableSecret(path: path, reason: error.localizedDescription)
        }
        let secret = Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        guard secret.count >= TokenAuthority.minimumSecretBytes else { throw .secretTooShort(secret.count) }
        return secret
    }
}

enum Base64URL {
    static func encode(_ data: Data) -> String {
        data.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ text: some StringProtocol) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !base64.contains("=") else { return nil }
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}
