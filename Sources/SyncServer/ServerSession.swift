import Foundation
import SyncModel
import SyncWire

/// One connection's protocol logic, without I/O: messages in, actions out. It enforces the
/// handshake, authentication, authorization and message directions of `protocol/README.md`; the
/// driver (``SyncServer``) carries out the actions.
public struct ServerSession: Sendable {
    public enum State: Hashable, Sendable {
        case awaitingHello
        case ready(ClientID, Principal)
        case closed
    }

    /// What the driver must do, in order.
    public enum Action: Hashable, Sendable {
        case send(WireMessage)
        /// Send `Error{code}` and close the connection.
        case close(ConnectionError)
        case subscribe(courseID: EntityID, sinceSeq: CourseSeq)
        case unsubscribe(courseID: EntityID)
        /// Hand the batch to its course for commit; the answer goes back on this connection.
        case push(Batch)
    }

    public private(set) var state: State = .awaitingHello
    let authority: TokenAuthority
    let welcome: Welcome

    public init(authority: TokenAuthority, welcome: Welcome) {
        self.authority = authority
        self.welcome = welcome
    }

    public var clientID: ClientID? {
        if case .ready(let clientID, _) = state { return clientID }
        return nil
    }

    /// Handles one decoded frame (or the reason it did not decode).
    public mutating func receive(_ input: Result<WireMessage, WireError>, now: Date) -> [Action] {
        switch (state, input) {
        case (.closed, _):
            return []
        case (_, .failure(.invalidBatch(let courseID, let batchSeq, let rejection))) where clientID != nil:
            // Bad text inside an op: the batch is rejected, the connection stays up.
            return [.send(.reject(BatchRejection(courseID: courseID, batchSeq: batchSeq, rejection: rejection)))]
        case (_, .failure(let error)):
            return close(ConnectionError(error.code, error.description))
        case (.awaitingHello, .success(.hello(let hello))):
            return handshake(hello, now: now)
        case (.awaitingHello, .success(let message)):
            return close(ConnectionError(.unexpectedMessage, "the first message must be Hello, not \(Self.kind(message))"))
        case (.ready(let clientID, let principal), .success(let message)):
            return handle(message, clientID: clientID, principal: principal, now: now)
        }
    }

    /// The driver closed the connection (or lost it).
    public mutating func closed() { state = .closed }

    private mutating func close(_ error: ConnectionError) -> [Action] {
        state = .closed
        return [.close(error)]
    }

    private mutating func handshake(_ hello: Hello, now: Date) -> [Action] {
        guard WireProtocol.supportedVersions.contains(hello.protocolVersion) else {
            let supported = WireProtocol.supportedVersions
            return close(ConnectionError(.unsupportedProtocolVersion,
                                         "protocol version \(hello.protocolVersion) is not supported; this server speaks \(supported.lowerBound)...\(supported.upperBound)"))
        }
        switch authority.verify(hello.token, now: now) {
        case .failure(let error):
            return close(error)
        case .success(let principal):
            state = .ready(hello.clientID, principal)
            return [.send(.welcome(welcome))]
        }
    }

    private mutating func handle(_ message: WireMessage, clientID: ClientID, principal: Principal, now: Date) -> [Action] {
        switch message {
        case .subscribe(let courseID, let sinceSeq):
            if let expired = expiry(principal, now: now) { return close(expired) }
            guard principal.role(in: courseID) != nil else {
                return close(ConnectionError(.forbidden, "the token gives no access to course \(courseID)"))
            }
            return [.subscribe(courseID: courseID, sinceSeq: sinceSeq)]
        case .unsubscribe(let courseID):
            return [.unsubscribe(courseID: courseID)]
        case .push(let push):
            if let expired = expiry(principal, now: now) { return close(expired) }
            guard principal.role(in: push.courseID) == .editor else {
                let reason = principal.role(in: push.courseID) == .viewer
                    ? "a viewer of course \(push.courseID) may not edit it"
                    : "the token gives no access to course \(push.courseID)"
                return [.send(.reject(BatchRejection(courseID: push.courseID, batchSeq: push.batchSeq,
                                                     rejection: Rejection(.forbidden, reason))))]
            }
            return [.push(push.batch(from: clientID))]
        case .ping(let nonce):
            return [.send(.pong(nonce: nonce))]
        case .pong:
            return []
        case .hello:
            return close(ConnectionError(.unexpectedMessage, "Hello was already received"))
        case .welcome, .error, .subscribed, .snapshot, .diff, .ack, .reject, .progress:
            return close(ConnectionError(.unexpectedMessage, "\(Self.kind(message)) is sent by servers, not clients"))
        }
    }

    private func expiry(_ principal: Principal, now: Date) -> ConnectionError? {
        principal.expires > now ? nil : ConnectionError(.tokenExpired, "the token expired at \(principal.expires); reconnect with a new one")
    }

    static func kind(_ message: WireMessage) -> String {
        switch message {
        case .hello: "Hello"
        case .welcome: "Welcome"
        case .error: "Error"
        case .subscribe: "Subscribe"
        case .unsubscribe: "Unsubscribe"
        case .subscribed: "Subscribed"
        case .snapshot: "Snapshot"
        case .diff: "Diff"
        case .push: "Push"
        case .ack: "Ack"
        case .reject: "Reject"
        case .progress: "Progress"
        case .ping: "Ping"
        case .pong: "Pong"
        }
    }
}
