import _CryptoExtras
import Crypto
import Foundation
import JWTKit
import SyncModel
import SyncServer
import Testing
@testable import TestSupport

/// Tokens as the server checks them: JWTs signed with its own secret (HS256, what `coursesync
/// token issue` mints) or with an identity provider's keys from a JWKS document (RS256, ES256,
/// EdDSA). The identity provider here is a jwt-kit key collection holding private keys; the
/// server sees only the JWKS made from their public halves.
@Suite struct TokenTests {
    let course = EntityID.fresh()
    let now = Date()

    func claims(expires: TimeInterval = 600, issuer: String? = nil, audience: String? = nil) -> TokenClaims {
        TokenClaims(user: "ada", expires: now.addingTimeInterval(expires), courses: [course: .editor], issuedAt: now,
                    issuer: issuer, audience: audience)
    }

    @Test func theServersOwnTokensRoundTripAndATamperedOneIsRefused() async throws {
        let authority = try await TokenAuthority(secret: TestServer.secret)
        let issued = try await authority.issue(claims())
        let principal = try await authority.verify(issued, now: now).get()
        #expect(principal.user == "ada" && principal.role(in: course) == .editor)
        // A JWT: three parts, the header naming HS256 and the server's kid.
        let header = try #require(Data(base64Encoded: Self.padded(String(issued.split(separator: ".")[0]))))
        let fields = try #require(try JSONSerialization.jsonObject(with: header) as? [String: String])
        #expect(fields["alg"] == "HS256" && fields["kid"] == TokenAuthority.secretKeyID)
        // The hand-made JWT of the tests (not jwt-kit's) is accepted too.
        #expect(try await authority.verify(TestServer.jwt(claims()), now: now).get().user == "ada")

        var parts = issued.split(separator: ".").map(String.init)
        parts[1] = TestServer.base64URL(try JSONEncoder().encode(TokenClaims(user: "ada", expires: now.addingTimeInterval(600),
                                                                            courses: [:], everyCourse: .editor)))
        #expect(await code(authority, parts.joined(separator: ".")) == .unauthenticated, "claims changed: signature no longer matches")
        let other = try await TokenAuthority(secret: Array("another-secret-another-secret-another".utf8))
        #expect(await code(other, issued) == .unauthenticated, "signed with another secret")
        #expect(await code(authority, issued, at: now.addingTimeInterval(600 + TokenRules.defaultLeeway)) == .tokenExpired)
        #expect(await code(authority, issued, at: now.addingTimeInterval(599 + TokenRules.defaultLeeway)) == nil, "within the leeway")
        await #expect(throws: TokenError.secretTooShort(5)) { try await TokenAuthority(secret: Array("short".utf8)) }
    }

    /// The HS256 key is the secret file's text without the white space around it (spec §4): a
    /// file ending in a newline, as editors and `echo` write it, signs like one without, and a
    /// client that signs with the file's raw bytes, newline included, is refused.
    @Test func theSecretFileIsTakenWithoutItsTrailingNewline() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("secret-\(UInt64.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("secret").path
        let text = "  " + String(decoding: TestServer.secret, as: UTF8.self) + "\n"
        #expect(FileManager.default.createFile(atPath: file, contents: Data(text.utf8)))
        let authority = try await TokenAuthority(secret: try TokenSecret.load(path: file))
        #expect(await code(authority, TestServer.jwt(claims(), secret: TestServer.secret)) == nil)
        #expect(await code(authority, TestServer.jwt(claims(), secret: Array(text.utf8))) == .unauthenticated)
    }

    /// The identity provider's keys, each under its own `kid`, as a JWKS; tokens from each verify,
    /// a token naming no key or an unknown one is refused, and a key cannot stand in for another.
    @Test func tokensFromAnIdentityProvidersJWKSAreAcceptedWithTheirKid() async throws {
        let provider = try await IdentityProvider()
        let server = try await TokenAuthority(secret: nil, jwks: provider.jwks,
                                              rules: TokenRules(issuer: "https://idp.example", audience: "coursesync"))
        #expect(!server.canIssue)
        let good = claims(issuer: "https://idp.example", audience: "coursesync")
        for kid in IdentityProvider.kids {
            let token = try await provider.keys.sign(good, kid: JWKIdentifier(string: kid))
            let principal = try await server.verify(token, now: now).get()
            #expect(principal.role(in: course) == .editor, "\(kid)")
        }
        // The server's own HS256 tokens are not accepted by a JWKS-only server.
        #expect(await code(server, TestServer.jwt(good)) == .unauthenticated)
        // No kid, or one the JWKS does not have: refused (there is no default key).
        let signed = try await provider.keys.sign(good, kid: JWKIdentifier(string: "es256-key"))
        var parts = signed.split(separator: ".").map(String.init)
        parts[0] = TestServer.base64URL(Data(#"{"alg":"ES256","typ":"JWT"}"#.utf8))
        #expect(await code(server, parts.joined(separator: ".")) == .unauthenticated, "no kid")
        parts[0] = TestServer.base64URL(Data(#"{"alg":"ES256","typ":"JWT","kid":"rs256-key"}"#.utf8))
        #expect(await code(server, parts.joined(separator: ".")) == .unauthenticated, "signed with one key, naming another")
        let stranger = try await IdentityProvider()
        #expect(await code(server, try await stranger.keys.sign(good, kid: JWKIdentifier(string: "eddsa-key"))) == .unauthenticated,
                "same kid, another provider's key")
        // The server's issuer and audience rules apply to provider tokens.
        #expect(await code(server, try await provider.keys.sign(claims(issuer: "https://evil.example", audience: "coursesync"),
                                                                kid: JWKIdentifier(string: "rs256-key"))) == .unauthenticated)
        #expect(await code(server, try await provider.keys.sign(claims(issuer: "https://idp.example"),
                                                                kid: JWKIdentifier(string: "rs256-key"))) == .unauthenticated)
    }

    @Test func aJWKSWhoseKeysLackAKidIsRefusedAtStart() async throws {
        let key = P256.Signing.PrivateKey().publicKey.x963Representation
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","x":"\#(TestServer.base64URL(key[1...32]))","y":"\#(TestServer.base64URL(key[33...]))"}]}"#
        await #expect(throws: TokenError.self) { try await TokenAuthority(secret: nil, jwks: jwks) }
        await #expect(throws: TokenError.self) { try await TokenAuthority(secret: nil, jwks: #"{"keys":[]}"#) }
        await #expect(throws: TokenError.self) { try await TokenAuthority(secret: nil, jwks: "not json") }
        await #expect(throws: TokenError.noKeys) { try await TokenAuthority(secret: nil, jwks: nil) }
    }

    func code(_ authority: TokenAuthority, _ token: String, at date: Date? = nil) async -> ErrorCode? {
        if case .failure(let error) = await authority.verify(token, now: date ?? now) { error.code } else { nil }
    }

    static func padded(_ base64URL: String) -> String {
        let base64 = base64URL.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        return base64 + String(repeating: "=", count: (4 - base64.count % 4) % 4)
    }
}

