import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SyncModel
import SyncStorage
import SyncWire

/// A connection as the course hubs see it: where its frames go, and its budget of unanswered pushes.
package final class ConnectionHandle: Sendable {
    package let clientID: ClientID
    package let outbox: Outbox
    let inFlight: InFlightLimit
    /// Names this connection's presence entries across the cluster (a UUID of the connection's own).
    package let presenceOrigin: String

    package init(clientID: ClientID, outbox: Outbox, maxInFlight: Int, presenceOrigin: String = UUID().uuidString) {
        self.clientID = clientID
        self.outbox = outbox
        inFlight = InFlightLimit(maxInFlight)
        self.presenceOrigin = presenceOrigin
    }
}

/// One course on this node: the driver of a ``HubCore`` (which decides) over the store and the
/// connections' outboxes (which carry out). Store calls run in tasks and come back as inputs.
actor CourseHub {
    let courseID: EntityID
    private let store: any SyncStore
    private let logger: Logger
    private let catchUpChunk: Int
    private let storeCallTimeout: Duration
    private var core: HubCore<ObjectIdentifier>
    private var presence: PresenceBoard<ObjectIdentifier>
    /// Subscribers that asked for presence: they watch it once `Subscribed` is sent.
    private var presenceWanted: Set<ObjectIdentifier> = []
    /// Presence's clock (one for the hub's life: relayed entries expire by it).
    private let presenceClock = MomentClock()
    /// Where this hub's presence relays go (the other nodes), if anywhere.
    private let relay: (@Sendable (PresenceRelay) -> Void)?
    private var handles: [ObjectIdentifier: ConnectionHandle] = [:]
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var idle = false
    /// Recent diffs as the store encoded them for its log (from commits and catch-up reads), by
    /// seq, so that each is encoded once. Bounded: emptied when it reaches 4,096 entries.
    private var encodedDiffs: [CourseSeq: ByteBuffer] = [:]
    /// The subscriber count last added to the subscriptions metric.
    private var reportedSubscribers = 0
    /// When each push waiting for its answer arrived (for the push → answer latency).
    private var pushedAt: [PushKey: ContinuousClock.Instant] = [:]
    /// When the last group's store call returned (for the fan-out lag).
    private var committedAt: ContinuousClock.Instant?

    struct PushKey: Hashable {
        var connection: ObjectIdentifier
        var batchSeq: BatchSeq
    }

    private func keepEncodings(_ encodings: some Sequence<(CourseSeq, [UInt8])>) {
        for (seq, bytes) in encodings {
            if encodedDiffs.count >= 4_096 { encodedDiffs.removeAll(keepingCapacity: true) }
            encodedDiffs[seq] = ByteBuffer(bytes: bytes)
        }
    }

    init(courseID: EntityID, store: any SyncStore, logger: Logger, maxGroupBatches: Int, catchUpChunk: Int, storeCallTimeout: Duration,
         presenceNode: String = "node", presenceTTL: Duration = .seconds(30), relay: (@Sendable (PresenceRelay) -> Void)? = nil) {
        self.courseID = courseID
        presence = PresenceBoard(courseID: courseID, node: presenceNode, ttl: presenceTTL)
        self.relay = relay
        self.store = store
        self.catchUpChunk = catchUpChunk
        self.storeCallTimeout = storeCallTimeout
        core = HubCore(courseID: courseID, maxGroupBatches: maxGroupBatches, catchUpChunk: catchUpChunk)
        var logger = logger
        logger[metadataKey: "course"] = "\(courseID)"
        self.logger = logger
    }

    // MARK: - Inputs

    /// Queues `batch` for commit. `false` if the hub no longer accepts batches (shutting down): the
    /// batch is not answered, and its author resends it after reconnecting.
    func push(_ batch: Batch, from origin: ConnectionHandle) -> Bool {
        let key = ObjectIdentifier(origin)
        guard core.push(batch, from: key) else { return false }
        handles[key] = origin
        pushedAt[PushKey(connection: key, batchSeq: batch.batchSeq)] = .now
        perform()
        return true
    }

    /// Stops accepting batches and returns once every queued batch is answered.
    func drain() async {
        core.drain()
        perform()
        guard !idle else { return }
        await withCheckedContinuation { idleWaiters.append($0) }
    }

    /// Catches `handle` up from `sinceSeq` (diffs, or a snapshot), sends `Subscribed`, then keeps it live.
    /// Subscribing again restarts the catch-up from the new cursor.
    /// With `presence`, the subscriber also watches the course's presence from `Subscribed` on.
    func subscribe(_ handle: ConnectionHandle, sinceSeq: CourseSeq, presence wantsPresence: Bool = false) {
        let key = ObjectIdentifier(handle)
        handles[key] = handle
        if wantsPresence { presenceWanted.insert(key) } else { presenceWanted.remove(key) }
        core.subscribe(key, sinceSeq: sinceSeq)
        perform()
    }

    func unsubscribe(_ handle: ConnectionHandle) {
        let key = ObjectIdentifier(handle)
        core.unsubscribe(key)
        presenceWanted.remove(key)
        presence.remove(key)
        perform()
        forgetIfUnused(key)
    }

    // MARK: - Presence

    /// The connection's presence on this course. The session checked that it subscribed (its
    /// subscription may reach the hub after this: both are sent without waiting for each other);
    /// the entry ends with the subscription.
    func setPresence(_ peer: PresencePeer, from handle: ConnectionHandle) {
        let key = ObjectIdentifier(handle)
        handles[key] = handle
        presence.set(peer, origin: handle.presenceOrigin, from: key)
        perform()
    }

    /// Another node's presence relay for this course, heard now.
    func relayed(_ message: PresenceRelay) {
        presence.relayed(message, now: presenceClock.now())
        perform()
    }

    /// The periodic presence step (relayed entries expire; this node's are relayed again).
    func presenceTick() {
        presence.tick(now: presenceClock.now())
        perform()
    }

    var subscriberCount: Int { core.subscriberCount }

    /// A commit by another node became known (e.g. by a notification): catch every live
    /// subscriber up to it.
    func noteCommitted(upTo seq: CourseSeq) {
        core.noteCommitted(upTo: seq)
        perform()
    }

    private func committed(_ group: CommittedGroup) {
        committedAt = .now
        ServerMetrics.groupBatches.record(group.outcomes.count)
        for outcome in group.outcomes { ServerMetrics.batch(outcome) }
        let seqs = group.outcomes.compactMap { if case .committed(let commit) = $0 { commit.seq } else { nil } }
        keepEncodings(zip(seqs, group.encodedDiffs))
        core.committed(group.outcomes)
        perform()
    }

    private func commitFailed(_ error: any Error, batches: Int) {
        var unknownCourse = false
        if case StoreError.unknownCourse = error {
            unknownCourse = true
        } else {
            ServerMetrics.storeError(error, .commit)
            logger.error("group commit failed; closing its writers' connections (they reconnect and resend)",
                         metadata: ["operation": "\(Self.operation(of: error, else: .commit))", "batches": "\(batches)", "error": "\(error)"])
        }
        core.commitFailed(unknownCourse: unknownCourse)
        perform()
    }

    private func caughtUp(_ key: ObjectIdentifier, generation: Int, _ result: Result<CatchUp, any Error>) {
        switch result {
        case .success(let catchUp):
            ServerMetrics.catchUp(catchUp)
            core.caughtUp(key, generation: generation, catchUp)
        case .failure(let error):
            var unknownCourse = false
            if case StoreError.unknownCourse = error {
                unknownCourse = true
            } else {
                ServerMetrics.storeError(error, .catchUp)
                logger.error("catch-up failed; closing the subscriber's connection (it reconnects and resumes from its cursor)",
                             metadata: ["operation": "\(Self.operation(of: error, else: .catchUp))", "error": "\(error)"])
            }
            core.catchUpFailed(key, generation: generation, unknownCourse: unknownCourse)
        }
        perform()
        forgetIfUnused(key)
    }

    private func catchUpSent(_ key: ObjectIdentifier, generation: Int) {
        core.catchUpSent(key, generation: generation)
        perform()
    }

    // MARK: - Effects

    /// Carries out what the core decided, until it decides nothing more.
    private func perform() {
        var released: [ObjectIdentifier] = []
        // Catch-up reads by cursor: subscribers at the same cursor (every live subscriber when another
        // node's commit is announced, or many new ones at once) share one store read.
        var loads: [CourseSeq: [(key: ObjectIdentifier, generation: Int)]] = [:]
        defer { for (cursor, readers) in loads { load(after: cursor, for: readers) } }
        while case let effects = core.takeEffects(), !effects.isEmpty {
            for effect in effects {
                switch effect {
                case .commit(let batches):
                    let store = store, courseID = courseID, timeout = storeCallTimeout
                    Task {
                        do {
                            let started = ContinuousClock.now
                            let group = try await withDeadline(timeout, .commit) { try await store.commitEncoded(batches, courseID: courseID) }
                            ServerMetrics.commitDuration.recordNanoseconds((ContinuousClock.now - started).wholeNanoseconds)
                            self.committed(group)
                        } catch {
                            self.commitFailed(error, batches: batches.count)
                        }
                    }
                case .send(let key, let message):
                    handles[key]?.outbox.send(message)
                    switch message {
                    case .ack(let ack): answered(key, ack.batchSeq)
                    case .reject(let reject): answered(key, reject.batchSeq)
                    case .subscribed where presenceWanted.contains(key): presence.watch(key)
                    default: break
                    }
                case .broadcast(let diff, let keys):
                    let encoded = encodedDiffs[diff.seq] ?? ByteBuffer(bytes: WireMessage.diff(diff).payload())
                    for key in keys where handles[key]?.outbox.send(encoded: encoded) == false {
                        core.sendFailed(key)
                        released.append(key)
                    }
                    if let committedAt { ServerMetrics.fanOutLag.recordNanoseconds((ContinuousClock.now - committedAt).wholeNanoseconds) }
                case .loadCatchUp(let key, let generation, let cursor):
                    guard let handle = handles[key], !handle.outbox.isClosing else {
                        core.unsubscribe(key)
                        released.append(key)
                        continue
                    }
                    loads[cursor, default: []].append((key, generation))
                case .sendCatchUp(let key, let generation, let messages):
                    guard let outbox = handles[key]?.outbox else { continue }
                    let encoded = messages.map { message -> ByteBuffer in
                        if case .diff(let diff) = message, let bytes = encodedDiffs[diff.seq] { return bytes }
                        return ByteBuffer(bytes: message.payload())
                    }
                    Task {
                        for payload in encoded { await outbox.sendWaiting(encoded: payload) }
                        // Room for `Subscribed` and the first live diffs before going live.
                        await outbox.waitForSpace()
                        self.catchUpSent(key, generation: generation)
                    }
                case .close(let key, let error):
                    handles[key]?.outbox.close(error)
                case .release(let key):
                    handles[key]?.inFlight.release()
                    released.append(key)
                case .idle:
                    idle = true
                    let waiters = idleWaiters
                    idleWaiters = []
                    waiters.forEach { $0.resume() }
                }
            }
        }
        for effect in presence.takeEffects() {
            switch effect {
            case .send(let key, let change): handles[key]?.outbox.sendPresence(change)
            case .relay(let message): relay?(message)
            }
        }
        for key in released { forgetIfUnused(key) }
        let subscribers = core.subscriberCount
        if subscribers != reportedSubscribers {
            ServerMetrics.subscriptions.increment(by: Double(subscribers - reportedSubscribers))
            reportedSubscribers = subscribers
        }
        let quiet = core.isQuiet
        residency.withLockedValue { state in
            if state.quietSince == nil && quiet { state.quietSince = .now } else if !quiet { state.quietSince = nil }
        }
    }

    /// One catch-up read after `cursor`, answered to each of `readers` as its own (what each
    /// would have read, had it read alone a moment later, could only hold more: the core reads on).
    private func load(after cursor: CourseSeq, for readers: [(key: ObjectIdentifier, generation: Int)]) {
        let store = store, courseID = courseID, limit = catchUpChunk, timeout = storeCallTimeout
        Task {
            let result: Result<CatchUp, any Error>
            do {
                let read = try await withDeadline(timeout, .catchUp) {
                    try await store.catchUpEncoded(courseID: courseID, after: cursor, limit: limit)
                }
                self.keepEncodings(read.encodedDiffs.map { ($0.key, $0.value) })
                result = .success(read.catchUp)
            } catch {
                result = .failure(error)
            }
            for reader in readers { self.caughtUp(reader.key, generation: reader.generation, result) }
        }
    }

    /// Read by the server under its lock, without waiting for the actor: since when the hub has
    /// been quiet (``HubCore/isQuiet``), and when the server last handed it out.
    struct Residency {
        var quietSince: ContinuousClock.Instant? = .now
        var handedOut: ContinuousClock.Instant = .now
    }

    nonisolated let residency = NIOLockedValueBox(Residency())

    /// Whether the hub has been quiet, and not handed out, for `idle`.
    nonisolated func isEvictable(idle: Duration, now: ContinuousClock.Instant) -> Bool {
        residency.withLockedValue { state in
            guard let quietSince = state.quietSince else { return false }
            return now - max(quietSince, state.handedOut) >= idle
        }
    }

    /// The operation a store error names, or `fallback`.
    static func operation(of error: any Error, else fallback: StoreOperation) -> StoreOperation {
        if case StoreError.unavailable(let operation, _) = error { return operation }
        return fallback
    }

    private func answered(_ key: ObjectIdentifier, _ batchSeq: BatchSeq) {
        if let arrived = pushedAt.removeValue(forKey: PushKey(connection: key, batchSeq: batchSeq)) {
            ServerMetrics.pushAnswer.recordNanoseconds((ContinuousClock.now - arrived).wholeNanoseconds)
        }
    }

    private func forgetIfUnused(_ key: ObjectIdentifier) {
        guard !core.references(key), !presence.references(key) else { return }
        handles[key] = nil
        pushedAt = pushedAt.filter { $0.key.connection != key }
    }
}

/// A connection's budget of pushes sent but not yet answered. When it is used up the connection
/// stops reading, so TCP pushes back on a client that sends faster than its course commits.
final class InFlightLimit: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state: NIOLockedValueBox<State>

    init(_ limit: Int) {
        precondition(limit > 0)
        state = NIOLockedValueBox(State(available: limit))
    }

    /// Takes a slot if one is free, without waiting.
    func tryAcquire() -> Bool {
        state.withLockedValue { state in
            guard state.available > 0 else { return false }
            state.available -= 1
            return true
        }
    }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLockedValue { state in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume()
    }
}

/// `operation`'s result, or ``StoreError/unavailable(_:detail:)`` once `timeout` has passed,
/// whichever comes first. The operation runs in a task of its own and is cancelled at the
/// deadline but not waited for: a call stuck where cancellation does not reach (a database
/// connection that stopped answering) must not hold its caller, and the store engine never lets a
/// call it did not finish change what it answers later.
public func withDeadline<T: Sendable>(_ timeout: Duration, _ operation: StoreOperation,
                               _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let answer = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
    let timer = NIOLockedValueBox<Task<Void, Never>?>(nil)
    return try await withCheckedThrowingContinuation { continuation in
        answer.withLockedValue { $0 = continuation }
        let work = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            timer.withLockedValue { $0 }?.cancel()
            answer.withLockedValue { state in defer { state = nil }; return state }?.resume(with: result)
        }
        let deadline = Task {
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            guard let waiting = answer.withLockedValue({ state in defer { state = nil }; return state }) else { return }
            work.cancel()
            waiting.resume(throwing: StoreError.unavailable(operation, detail: "no answer within \(timeout)"))
        }
        timer.withLockedValue { $0 = deadline }
    }
}
