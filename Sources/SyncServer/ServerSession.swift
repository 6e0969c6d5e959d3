import Foundation
import SyncModel
import SyncWire

/// One connection's protocol logic, without I/O: frames, timeouts and the close go in; actions come
/// out (``takeActions()``). It enforces the handshake, authentication, authorization and message
/// directions of `protocol/README.md`, keeps the connection's subscriptions, and owns its timers:
/// the handshake deadline and the heartbeat rule (``Heartbeat``). The driver (``SyncServer``, or
/// the simulator) carries out the actions and calls ``handleTimeout(now:)`` at ``nextDeadline``.
package struct ServerSession: Sendable {
    package enum State: Hashable, Sendable {
        case awaitingHello
        /// `Hello` came; the driver is checking its token (``Action/authenticate(token:)``).
        case authenticating(Hello)
        case ready(ClientID, Principal)
        case closed
    }

    /// What the driver must do, in order.
    package enum Action: Hashable, Sendable {
        /// Queue a frame in the connection's outbox.
        case send(WireMessage)
        /// Queue `Error{code}` as the last frame, then close the connection.
        case close(ConnectionError)
        /// Check this token (its signature, with the server's keys) and hand the outcome to
        /// ``authenticated(_:now:date:)`` before the next frame: the session checks the claims.
        /// Checking may take time (it is asynchronous); the handshake deadline keeps running.
        case authenticate(token: String)
        /// The handshake succeeded: the connection can now subscribe and push (comes before `Welcome`'s send).
        case ready(ClientID)
        /// With `presence`, the subscriber also watches the course's presence (protocol §14).
        case subscribe(courseID: EntityID, sinceSeq: CourseSeq, presence: Bool)
        case unsubscribe(courseID: EntityID)
        /// The connection's presence on a course it is subscribed to (at most
        /// ``SessionLimits/presencePerSecond``; faster updates are coalesced, the latest kept).
        case setPresence(courseID: EntityID, PresencePeer)
        /// Hand the batch to its course for commit; the answer goes back on this connection.
        case push(Batch)
        /// The peer pushes faster than its rate: read nothing more until this moment (TCP
        /// back-pressure slows it; its frames wait in the network), then go on. Reading resumes
        /// with ``readingPaused(_:now:)`` as for in-flight back-pressure.
        case throttle(until: Moment)
    }

    package private(set) var state: State = .awaitingHello
    /// The courses this connection is subscribed to.
    package private(set) var subscriptions: Set<EntityID> = []
    /// The limit the session closed the connection for, if it did (for the access log and metrics).
    package private(set) var refusal: Refusal?
    let welcome: Welcome
    /// Before `Hello`: the moment the connection is closed if none came.
    private var helloDeadline: Moment?
    /// After `Welcome`: the heartbeat rule.
    private var heartbeat: Heartbeat?
    private let heartbeatInterval: Duration
    /// How long a new connection has to complete its handshake.
    private let handshakeTimeout: Duration
    /// The driver stopped reading (back-pressure on pushes): silence is ours, not the peer's.
    private var readingPaused = false
    /// After `Welcome`: when the token expires, on the monotonic clock. The connection ends then,
    /// subscribed or not, with `TOKEN_EXPIRED` (the client reconnects with a fresh token).
    private var tokenDeadline: Moment?
    private let limits: SessionLimits
    /// Push frames and frame bytes per second (``SessionLimits``).
    private var pushBudget: TokenBucket
    /// Reading is throttled until then (the push rate): frames handed over before it count as
    /// arriving at it, since they waited for the server, not the peer.
    private var throttledUntil: Moment?
    /// Since when every push found the bucket empty: a peer over its rate for
    /// ``SessionLimits/sustainedOverRate`` is cut.
    private var overRateSince: Moment?
    private var byteBudget: TokenBucket
    /// Presence updates per second: past it, the latest per course waits for the bucket.
    private var presenceBudget: TokenBucket
    private var heldPresence: [EntityID: PresencePeer] = [:]
    private var presenceDue: Moment?
    private var actions: [Action] = []

    /// - Parameters:
    ///   - welcome: what the handshake answers; its `heartbeat_interval_ms` is the interval this side keeps too.
    ///   - limits: rates, subscriptions and the handshake timeout this connection is held to.
    ///   - now: when the connection was accepted. A peer that does not complete its handshake within
    ///     the handshake timeout (default: one heartbeat interval) is closed with `IDLE_TIMEOUT`
    ///     (and is not pinged: it has not spoken the protocol yet).
    package init(welcome: Welcome, limits: SessionLimits = SessionLimits(), now: Moment) {
        self.welcome = welcome
        self.limits = limits
        heartbeatInterval = .milliseconds(Int64(max(welcome.heartbeatIntervalMs, 1)))
        handshakeTimeout = limits.handshakeTimeout ?? heartbeatInterval
        helloDeadline = now + handshakeTimeout
        pushBudget = TokenBucket(rate: max(limits.pushesPerSecond, 1), burst: max(limits.pushBurst, 1), now: now)
        byteBudget = TokenBucket(rate: max(limits.bytesPerSecond, 1), burst: max(limits.byteBurst, 1), now: now)
        presenceBudget = TokenBucket(rate: max(limits.presencePerSecond, 1), burst: max(limits.presencePerSecond * 2, 1), now: now)
    }

    package var clientID: ClientID? {
        if case .ready(let clientID, _) = state { return clientID }
        return nil
    }

    /// What to do since the last call, in order.
    package mutating func takeActions() -> [Action] {
        defer { actions = [] }
        return actions
    }

    /// When ``handleTimeout(now:)`` next has something to do (`nil` once closed).
    package var nextDeadline: Moment? {
        switch state {
        case .closed: nil
        case .awaitingHello, .authenticating: helloDeadline
        case .ready: earliest(readingPaused ? nil : heartbeat?.deadline, tokenDeadline, presenceDue)
        }
    }

    /// The driver stops reading from the peer (its pushes wait for earlier ones to be answered)
    /// or starts again. While it does not read, the peer's silence proves nothing, so the
    /// heartbeat waits; reading again counts as hearing from the peer.
    package mutating func readingPaused(_ paused: Bool, now: Moment) {
        readingPaused = paused
        if !paused { heartbeat?.received(now: now) }
    }

    /// A frame from the peer arrived at `moment`, before the driver handed it over (its tasks can be
    /// held up; ``receive(_:bytes:now:date:)`` follows when they run): the peer is alive, which is
    /// all the heartbeat asks. The driver reports it before each ``handleTimeout(now:)``.
    ///
    /// Before `Hello` was handed over: a frame that arrived before the handshake deadline lifts
    /// it. The peer was on time; handing the frame over is the server's own work, and a frame
    /// that is not a `Hello` closes the connection when it is. (Once the `Hello` is taken the
    /// deadline runs again only if it was not lifted: the token check is bounded by it.)
    package mutating func peerSent(at moment: Moment) {
        switch state {
        case .ready: heartbeat?.received(now: moment)
        case .awaitingHello: if let helloDeadline, moment < helloDeadline { self.helloDeadline = nil }
        case .authenticating, .closed: break
        }
    }

    /// The driver's timer fired: ping a quiet peer, close a silent one.
    package mutating func handleTimeout(now: Moment) {
        switch state {
        case .closed:
            return
        case .awaitingHello, .authenticating:
            if let helloDeadline, now >= helloDeadline {
                refuse(.handshakeTimeout, ConnectionError(.idleTimeout, "no completed handshake within \(handshakeTimeout.wholeMilliseconds) ms of connecting"))
            }
        case .ready(_, let principal):
            if let tokenDeadline, now >= tokenDeadline {
                return close(ConnectionError(.tokenExpired, "the token expired at \(principal.expires); reconnect with a new one"))
            }
            if let presenceDue, now >= presenceDue { releasePresence(now: now) }
            guard !readingPaused else { return }
            switch heartbeat?.fire(now: now) {
            case .ping: actions.append(.send(.ping(nonce: UInt64(bitPattern: now.nanoseconds) | 1)))
            case .timeout: close(ConnectionError(.idleTimeout, "nothing received for \(heartbeat!.timeout.wholeMilliseconds / 1000) s"))
            case nil: break
            }
        }
    }

    /// Handles one decoded frame (or the reason it did not decode) of `bytes` bytes. `now` is the
    /// monotonic clock (heartbeats, rates): when the frame *arrived*, which a driver whose tasks
    /// were held up passes rather than the moment it got round to the frame, so a paced peer's
    /// backlog is not a burst (an earlier `now` than a previous call's changes no rate); `date` the
    /// wall clock (token expiry).
    package mutating func receive(_ input: Result<WireMessage, WireError>, bytes: Int = 0, now: Moment, date: Date) {
        heartbeat?.received(now: now)
        if state != .closed, !byteBudget.take(bytes, now: now) {
            return refuse(.bytesPerSecond, rateLimited("more than \(limits.bytesPerSecond) bytes per second", byteBudget, now: now))
        }
        switch (state, input) {
        case (.closed, _):
            return
        case (_, .failure(.invalidBatch(let courseID, let batchSeq, let rejection))) where clientID != nil:
            // Bad text inside an op: the batch is rejected, the connection stays up.
            actions.append(.send(.reject(BatchRejection(courseID: courseID, batchSeq: batchSeq, rejection: rejection))))
        case (_, .failure(let error)):
            if error.code == .frameTooLarge { refusal = .frameBytes }
            close(ConnectionError(error.code, error.description))
        case (.awaitingHello, .success(.hello(let hello))):
            handshake(hello, now: now, date: date)
        case (.awaitingHello, .success(let message)):
            close(ConnectionError(.unexpectedMessage, "the first message must be Hello, not \(Self.kind(message))"))
        case (.authenticating, .success):
            // A driver hands over the token check's outcome before the next frame.
            close(ConnectionError(.unexpectedMessage, "a frame arrived before the token was checked"))
        case (.ready(_, let principal), .success(let message)):
            handle(message, principal: principal, now: now, date: date)
        }
    }

    /// The connection is gone (closed by either side): the session ends, and the driver is told
    /// to unsubscribe from every course it was subscribed to.
    package mutating func closed() {
        state = .closed
        for courseID in subscriptions.sorted() { actions.append(.unsubscribe(courseID: courseID)) }
        subscriptions = []
    }

    private mutating func close(_ error: ConnectionError) {
        actions.append(.close(error))
        closed()
    }

    private mutating func refuse(_ limit: Refusal, _ error: ConnectionError) {
        refusal = limit
        close(error)
    }

    private mutating func handshake(_ hello: Hello, now: Moment, date: Date) {
        guard WireProtocol.supportedVersions.contains(hello.protocolVersion) else {
            let supported = WireProtocol.supportedVersions
            return close(ConnectionError(.unsupportedProtocolVersion,
                                         "protocol version \(hello.protocolVersion) is not supported; this server speaks \(supported.lowerBound)...\(supported.upperBound)"))
        }
        state = .authenticating(hello)
        actions.append(.authenticate(token: hello.token))
    }

    /// The outcome of checking the token of ``Action/authenticate(token:)``: a principal (whose
    /// claims still have to hold at `date`) or why the token was refused. Ignored unless the session
    /// is waiting for it (it may have closed meanwhile, at its handshake deadline).
    package mutating func authenticated(_ outcome: Result<Principal, ConnectionError>, now: Moment, date: Date) {
        guard case .authenticating(let hello) = state else { return }
        switch outcome.flatMap({ principal in expiry(principal, date: date).map { .failure($0) } ?? .success(principal) }) {
        case .failure(let error):
            close(error)
        case .success(let principal):
            state = .ready(hello.clientID, principal)
            helloDeadline = nil
            heartbeat = Heartbeat(interval: heartbeatInterval, now: now)
            let remaining = principal.expires.timeIntervalSince(date)
            tokenDeadline = now + .milliseconds(Int64(min(max(remaining, 0), 100 * 365 * 86_400) * 1000))
            actions.append(.ready(hello.clientID))
            actions.append(.send(.welcome(welcome)))
        }
    }

    private mutating func handle(_ message: WireMessage, principal: Principal, now: Moment, date: Date) {
        switch message {
        case .subscribe(let courseID, let sinceSeq, let presence):
            if let expired = expiry(principal, date: date) { return close(expired) }
            if let refusal = AccessPolicy.readRefusal(principal, courseID: courseID) { return close(refusal) }
            guard subscriptions.contains(courseID) || subscriptions.count < limits.maxSubscriptions else {
                return refuse(.subscriptions, ConnectionError(.limitExceeded, "a connection may be subscribed to at most \(limits.maxSubscriptions) courses"))
            }
            subscriptions.insert(courseID)
            actions.append(.subscribe(courseID: courseID, sinceSeq: sinceSeq, presence: presence))
        case .unsubscribe(let courseID):
            guard subscriptions.remove(courseID) != nil else { return }
            heldPresence[courseID] = nil
            actions.append(.unsubscribe(courseID: courseID))
        case .setPresence(let announcement):
            guard subscriptions.contains(announcement.courseID) else {
                return close(ConnectionError(.unexpectedMessage, "SetPresence for course \(announcement.courseID), which this connection is not subscribed to"))
            }
            let name = announcement.name.trimmingCharacters(in: .whitespacesAndNewlines)
            let peer = PresencePeer(clientID: clientID!, user: principal.user, name: name.isEmpty ? (principal.name ?? principal.user) : name,
                                    color: announcement.color, focus: announcement.focus)
            if heldPresence.isEmpty, presenceBudget.take(1, now: now) {
                actions.append(.setPresence(courseID: announcement.courseID, peer))
            } else {
                // Over the rate: the latest waits for the bucket (an earlier one is superseded).
                heldPresence[announcement.courseID] = peer
                if presenceDue == nil { presenceDue = now + presenceBudget.wait(until: 1, now: now) }
            }
        case .push(let push):
            if let expired = expiry(principal, date: date) { return close(expired) }
            // Frames read after a throttle waited for the server: they count from its end.
            let at = max(now, throttledUntil ?? now)
            if pushBudget.take(1, now: at) {
                overRateSince = nil
            } else {
                let since = overRateSince ?? at
                if at - since >= limits.sustainedOverRate {
                    return refuse(.pushesPerSecond, rateLimited("\(AccessPolicy.overPushRate(limits)) for \(limits.sustainedOverRate.wholeMilliseconds / 1000) s",
                                                                pushBudget, now: at))
                }
                overRateSince = since
                // Over the rate: taken, and nothing more is read until the bucket holds this push.
                let until = at + pushBudget.wait(until: 1, now: at)
                pushBudget.overdraw(1, now: until)
                throttledUntil = until
                actions.append(.throttle(until: until))
            }
            if let rejection = AccessPolicy.editRejection(principal, courseID: push.courseID) {
                return actions.append(.send(.reject(BatchRejection(courseID: push.courseID, batchSeq: push.batchSeq, rejection: rejection))))
            }
            actions.append(.push(push.batch(from: clientID!, author: principal.user)))
        case .ping(let nonce):
            actions.append(.send(.pong(nonce: nonce)))
        case .pong:
            break
        case .hello:
            close(ConnectionError(.unexpectedMessage, "Hello was already received"))
        case .welcome, .error, .subscribed, .snapshot, .diff, .ack, .reject, .progress, .presence:
            close(ConnectionError(.unexpectedMessage, "\(Self.kind(message)) is sent by servers, not clients"))
        }
    }

    /// The held presence updates go out (one token each, drawn ahead if need be).
    private mutating func releasePresence(now: Moment) {
        presenceDue = nil
        for (courseID, peer) in heldPresence.sorted(by: { $0.key < $1.key }) {
            if !presenceBudget.take(1, now: now) { presenceBudget.overdraw(1, now: now) }
            actions.append(.setPresence(courseID: courseID, peer))
        }
        heldPresence = [:]
    }

    /// The cut for a rate: reconnect when the bucket is half full again (a fair start, not one
    /// push), and not before ``SessionLimits/rateCutPause``.
    func rateLimited(_ what: String, _ bucket: TokenBucket, now: Moment) -> ConnectionError {
        var bucket = bucket
        let wait = max(bucket.wait(until: Double(bucket.burst) / 2, now: now), limits.rateCutPause)
        let ms = UInt32(clamping: max(wait.wholeMilliseconds, 1))
        return ConnectionError(.rateLimited, "\(what); reconnect in \(ms) ms (unanswered batches are resent then)", retryAfterMs: ms)
    }

    private func expiry(_ principal: Principal, date: Date) -> ConnectionError? {
        principal.expires > date ? nil : ConnectionError(.tokenExpired, "the token expired at \(principal.expires); reconnect with a new one")
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
        case .setPresence: "SetPresence"
        case .presence: "PresenceUpdate"
        }
    }
}
