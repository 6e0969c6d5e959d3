import Foundation
import JWTKit
import SyncModel
import SyncWire

/// What a token lets its bearer do in one course.
public enum Role: String, Codable, Hashable, Sendable, CaseIterable {
    /// May subscribe and push batches.
    case editor
    /// May subscribe only.
    case viewer
}

/// The claims of a CourseSync bearer token, a JSON Web Token (`protocol/README.md` §4):
/// `sub`, `exp` (required), `iat`, `nbf`, `iss`, `aud` (optional, checked when the server is
/// configured to), and `courses`, an object from course ID (lower-case UUID text, or `*` for every
/// course) to role (`editor` or `viewer`).
public struct TokenClaims: JWTPayload, Hashable {
    /// The user the token was issued to (for logs and audit).
    public var sub: String
    /// A display name (optional; presence shows it when the client names none).
    public var name: String?
    /// Expiry, in seconds since 1970 (a JSON number; fractions allowed).
    public var exp: Double
    public var iat: Double?
    public var nbf: Double?
    public var iss: String?
    /// One audience or several (`aud` is a string or an array of strings in a JWT).
    public var aud: Audience?
    /// Role per course ID (lower-case UUID text); the key `*` covers every course.
    public var courses: [String: Role]

    public init(user: String, expires: Date, courses: [EntityID: Role], everyCourse: Role? = nil,
                issuedAt: Date? = nil, issuer: String? = nil, audience: String? = nil, name: String? = nil) {
        sub = user
        self.name = name
        exp = expires.timeIntervalSince1970.rounded(.down)
        iat = issuedAt.map { $0.timeIntervalSince1970.rounded(.down) }
        iss = issuer
        aud = audience.map { Audience([$0]) }
        var roles = Dictionary(uniqueKeysWithValues: courses.map { ($0.key.description, $0.value) })
        if let everyCourse { roles[TokenClaims.everyCourse] = everyCourse }
        self.courses = roles
    }

    static let everyCourse = "*"

    /// The signature is checked by the key collection; the claims by ``principal(at:rules:)``,
    /// against the server's clock and rules (jwt-kit calls this with neither).
    public func verify(using algorithm: some JWTAlgorithm) async throws {}

    /// The principal these claims name at wall-clock `now`, or why they are not acceptable under `rules`.
    public func principal(at now: Date, rules: TokenRules = TokenRules()) -> Result<Principal, ConnectionError> {
        let leeway = rules.leeway
        let expires = Date(timeIntervalSince1970: exp).addingTimeInterval(leeway)
        guard expires > now else {
            return .failure(ConnectionError(.tokenExpired, "the token expired at \(Date(timeIntervalSince1970: exp)); ask for a new one"))
        }
        if let nbf, Date(timeIntervalSince1970: nbf).addingTimeInterval(-leeway) > now {
            return .failure(ConnectionError(.unauthenticated, "the token is not valid before \(Date(timeIntervalSince1970: nbf))"))
        }
        if let issuer = rules.issuer, iss != issuer {
            return .failure(ConnectionError(.unauthenticated, "the token's issuer is \(iss.map { "\"\($0)\"" } ?? "missing"), not \"\(issuer)\""))
        }
        if let audience = rules.audience, !(aud?.values.contains(audience) ?? false) {
            return .failure(ConnectionError(.unauthenticated, "the token is not meant for audience \"\(audience)\""))
        }
        guard !sub.isEmpty else { return .failure(ConnectionError(.unauthenticated, "the token names no user (sub)")) }
        var roles: [EntityID: Role] = [:]
        for (course, role) in courses where course != TokenClaims.everyCourse {
            guard let id = EntityID(course) else {
                return .failure(ConnectionError(.unauthenticated, "the token names an invalid course ID"))
            }
            roles[id] = role
        }
        return .success(Principal(user: sub, expires: expires, roles: roles, everyCourse: courses[TokenClaims.everyCourse], name: name))
    }

    /// `aud`: a string or an array of strings.
    public struct Audience: Codable, Hashable, Sendable {
        public var values: [String]
        public init(_ values: [String]) { self.values = values }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let one = try? container.decode(String.self) { values = [one] } else { values = try container.decode([String].self) }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            if values.count == 1 { try container.encode(values[0]) } else { try container.encode(values) }
        }
    }
}

/// The server's rules for claims: the issuer and audience it requires (when set), and the clock
/// skew it forgives on `exp` and `nbf`.
public struct TokenRules: Hashable, Sendable {
    public var issuer: String?
    public var audience: String?
    /// Seconds of clock skew forgiven: a token is honoured until `exp + leeway`.
    public var leeway: TimeInterval

    public static let defaultLeeway: TimeInterval = 30

    public init(issuer: String? = nil, audience: String? = nil, leeway: TimeInterval = TokenRules.defaultLeeway) {
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
    }
}

/// An authenticated connection's identity and rights.
public struct Principal: Hashable, Sendable {
    public var user: String
    /// When the server stops honouring the token (its `exp` plus the leeway).
    public var expires: Date
    public var roles: [EntityID: Role]
    public var everyCourse: Role?
    /// The token's display name, if it has one.
    public var name: String?

    public init(user: String, expires: Date, roles: [EntityID: Role], everyCourse: Role? = nil, name: String? = nil) {
        self.user = user
        self.expires = expires
        self.roles = roles
        self.everyCourse = everyCourse
        self.name = name
    }

    public func role(in courseID: EntityID) -> Role? { roles[courseID] ?? everyCourse }
}

/// Verifies bearer tokens (JWTs, with vapor's jwt-kit) and, given the server's secret, issues them.
///
/// Keys: the server's own secret as an HS256 key under the key ID ``secretKeyID`` (what
/// `coursesync token issue` signs with), and/or the public keys of an identity provider's JWKS
/// document (RS256, ES256, EdDSA, …, each under its `kid`). A token must name its key in the
/// header's `kid`: there is no default key, so a token without a `kid`, or with one the server does
/// not know, is refused.
public struct TokenAuthority: Sendable {
    /// Shortest secret accepted: 256 bits.
    public static let minimumSecretBytes = 32
    /// The `kid` of tokens signed with the server's secret.
    public static let secretKeyID = "coursesync"

    let keys: JWTKeyCollection
    public let rules: TokenRules
    /// Whether this authority holds the secret (and can ``issue(_:)``).
    public let canIssue: Bool

    /// An authority over the server's secret (HS256), and the keys of `jwks` (a JWKS document's
    /// JSON) if given.
    public init(secret: [UInt8]?, jwks: String?, rules: TokenRules = TokenRules()) async throws(TokenError) {
        let keys = JWTKeyCollection()
        if let secret {
            guard secret.count >= Self.minimumSecretBytes else { throw .secretTooShort(secret.count) }
            await keys.add(hmac: HMACKey(from: Array(secret)), digestAlgorithm: .sha256, kid: JWKIdentifier(string: Self.secretKeyID))
        }
        if let jwks {
            do {
                let set = try JSONDecoder().decode(JWKS.self, from: Data(jwks.utf8))
                guard !set.keys.isEmpty else { throw TokenError.unusableKeySet("it has no keys") }
                for key in set.keys where key.keyIdentifier == nil {
                    throw TokenError.unusableKeySet("a key has no \"kid\"; every key must name one")
                }
                try await keys.add(jwks: set)
            } catch let error as TokenError {
                throw error
            } catch {
                throw .unusableKeySet("\(error)")
            }
        }
        guard secret != nil || jwks != nil else { throw .noKeys }
        // No default key: a token must name its key.
        await keys.clearDefault()
        self.keys = keys
        self.rules = rules
        canIssue = secret != nil
    }

    /// An authority over the server's secret only.
    public init(secret: some Collection<UInt8>, rules: TokenRules = TokenRules()) async throws(TokenError) {
        try await self.init(secret: Optional(Array(secret)), jwks: nil, rules: rules)
    }

    /// A JWT carrying `claims`, signed with the server's secret (HS256, `kid` ``secretKeyID``).
    public func issue(_ claims: TokenClaims) async throws -> String {
        guard canIssue else { throw TokenError.noKeys }
        return try await keys.sign(claims, kid: JWKIdentifier(string: Self.secretKeyID))
    }

    /// The principal a token names at wall-clock `now`, or why it is not acceptable.
    public func verify(_ token: String, now: Date) async -> Result<Principal, ConnectionError> {
        let claims: TokenClaims
        do {
            claims = try await keys.verify(token, as: TokenClaims.self)
        } catch let error as JWTError {
            return .failure(ConnectionError(.unauthenticated, Self.reason(error)))
        } catch {
            return .failure(ConnectionError(.unauthenticated, "the token is not acceptable: \(error)"))
        }
        return claims.principal(at: now, rules: rules)
    }

    private static func reason(_ error: JWTError) -> String {
        switch error.errorType {
        case .signatureVerificationFailed: "the token's signature is not valid for this server"
        case .noKeyProvided, .unknownKID, .missingKIDHeader: "the token names no key (kid) this server knows"
        case .malformedToken: "the token is not a well-formed JWT"
        case .claimVerificationFailure: "the token's claims are malformed or refused"
        default: "the token is not acceptable (\(error.errorType))"
        }
    }
}

public enum TokenError: Error, Hashable, Sendable, CustomStringConvertible {
    case secretTooShort(Int)
    case unreadableSecret(path: String, reason: String)
    case unusableKeySet(String)
    case noKeys

    public var description: String {
        switch self {
        case .secretTooShort(let count):
            "the token secret has \(count) bytes; at least \(TokenAuthority.minimumSecretBytes) are needed"
        case .unreadableSecret(let path, let reason): "cannot read the token secret at \(path): \(reason)"
        case .unusableKeySet(let reason): "the JWKS cannot be used: \(reason)"
        case .noKeys: "no signing key: give the server's secret (to issue tokens) or a JWKS"
        }
    }
}

/// The server secret as kept in a file: one line of hex (64 digits for the generated 32 bytes).
/// The HS256 key is the text itself (its UTF-8 bytes, surrounding white space trimmed).
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
