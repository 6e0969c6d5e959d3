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

    func token(_ roles: [EntityID: Role], user: String = "tester", expires: Date = Date().addingTimeInterval(3600)) -> String {
        authority.issue(TokenClaims(user: user, expires: expires, courses: roles))
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
    let authority = try TokenAuthority(secret: TestServer.secret)
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
