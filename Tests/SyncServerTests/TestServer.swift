import Crypto
import Foundation
import NIOCore
import SyncModel
import SyncServer
import SyncWire

/// A running ``SyncServer`` on a free loopback port, for one test.
struct TestServer: Sendable {
    let server: SyncServer
    let port: Int
    let authority: TokenAuthority

    static let secret = Array("coursesync-test-secret-0123456789abcdef".utf8)

    /// An HS256 JWT signed with ``secret``, made here by hand from RFC 7519 and the spec's §4 (not
    /// by the server's JWT library): what any identity provider's library would produce.
    func token(_ roles: [EntityID: Role], user: String = "tester", expires: Date = Date().addingTimeInterval(3600)) -> String {
        Self.jwt(TokenClaims(user: user, expires: expires, courses: roles))
    }

    static func jwt(_ claims: TokenClaims, kid: String? = TokenAuthority.secretKeyID, secret: [UInt8] = TestServer.secret) -> String {
        let header = #"{"alg":"HS256","typ":"JWT"# + (kid.map { #"","kid":"\#($0)"}"# } ?? #""}"#)
        let body = base64URL(Data(header.utf8)) + "." + base64URL(try! JSONEncoder().encode(claims))
        let signature = HMAC<SHA256>.authenticationCode(for: Data(body.utf8), using: SymmetricKey(data: secret))
        return body + "." + base64URL(Data(signature))
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A client that completed the handshake with an editor token for `courseID`.
    func editor(of courseID: EntityID, clientID: ClientID = ClientID(.fresh())) async throws -> TestClient {
        let client = try await TestClient.connect(port: port, clientID: clientID)
        try await client.hello(token: token([courseID: .editor]))
        return client
    }
}

/// Runs `body` against a server on `store`; shuts the server down afterwards.
func withServer<T>(store: any SyncStore, configure: (inout ServerConfiguration) -> Void = { _ in },
                   _ body: (TestServer) async throws -> T) async throws -> T {
    var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, serverID: "test")
    configure(&configuration)
    // No leeway: tests of expiry use tokens that live a second or two.
    let authority = try await TokenAuthority(secret: TestServer.secret, rules: TokenRules(leeway: 0))
    let server = SyncServer(store: store, authority: authority, configuration: configuration, logger: TestDatabase.logger)
    let running = Task { try await server.run() }
    let port: Int
    do {
        port = try await server.listeningPort()
    } catch {
        running.cancel()
        throw error
    }
    let result: Result<T, any Error>
    do {
        result = .success(try await body(TestServer(server: server, port: port, authority: authority)))
    } catch {
        result = .failure(error)
    }
    await server.shutDown()
    _ = await running.result
    return try result.get()
}
