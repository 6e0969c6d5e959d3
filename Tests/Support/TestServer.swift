import Crypto
import Foundation
import Logging
import NIOCore
import SyncModel
import SyncServer
import SyncStorage
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

/// A task executor with one thread of its own (a serial queue). A server run on it (every task it
/// starts prefers it, and so do its actors) can be held up — none of its tasks runs — without
/// holding up the rest of the test process, as a busy pool would in production.
final class HoldableExecutor: TaskExecutor, @unchecked Sendable {
    private let queue = DispatchQueue(label: "coursesync.test.holdable")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// Occupies the executor's thread for `duration`; returns when it is free again.
    func hold(for duration: Duration) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            queue.async {
                Thread.sleep(forTimeInterval: Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
                done.resume()
            }
        }
    }
}

/// Runs `body` against a server on `store`; shuts the server down afterwards. With `executor`, the
/// server's tasks run there (see ``HoldableExecutor``).
func withServer<T>(store: any SyncStore, configure: (inout ServerConfiguration) -> Void = { _ in },
                   executor: (any TaskExecutor)? = nil, logger: Logger = TestDatabase.logger,
                   _ body: (TestServer) async throws -> T) async throws -> T {
    var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, serverID: "test")
    // As `serve` does: the handshake's own timeout, not one heartbeat interval (tests with a short
    // interval are about idleness after the handshake; a token check slowed by a loaded machine
    // must not end them first, as it once did in CI). A test of the handshake sets its own.
    configuration.limits.session.handshakeTimeout = SessionLimits.defaultHandshakeTimeout
    configure(&configuration)
    // No leeway: tests of expiry use tokens that live a second or two.
    let authority = try await TokenAuthority(secret: TestServer.secret, rules: TokenRules(leeway: 0))
    let server = SyncServer(store: store, authority: authority, configuration: configuration, logger: logger)
    let running = Task(executorPreference: executor) { try await server.run() }
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
