import SyncModel
import SyncWire

/// The client engine, sans I/O: local edits, server messages and connection changes go in; frames
/// to send, events for the app and one replica write per step come out. The real client drives it
/// with NIO and GRDB; a simulator can drive it with a fake network and an in-memory replica.
///
/// The visible state is always the confirmed state (the server's, at the cursor) with the pending
/// batches replayed on top by the same ``Resolver`` the server runs.
///
/// Time is an input too: every step that depends on it takes `now`, and ``nextDeadline`` tells the
/// shell when to call ``handleTimeout(now:)``. The engine decides the coalescing window, the
/// handshake deadline, heartbeats (the ``Heartbeat`` rule with the interval the server's `Welcome`
/// names: a `Ping` after one quiet interval, a reconnect after three) and the reconnect backoff
/// (full jitter); the shell only arms one timer and moves frames.
package struct ClientCore: Sendable {
    /// The engine's time policy.
    package struct Timing: Hashable, Sendable {
        /// Edits within this window of the first go in one batch; `.zero` seals each edit at once.
        package var coalesceWindow: Duration = .milliseconds(5)
        /// From starting to connect until `Welcome`; past it the attempt is abandoned.
        package var handshakeTimeout: Duration = .seconds(10)
        /// Reconnect delays: uniform in [0, min(cap, base × 2^(failed attempts − 1))].
        package var reconnectBase: Duration = .milliseconds(100)
        package var reconnectCap: Duration = .seconds(30)

        package init() {}
    }

    /// A batch made here that the server has not finished with.
    struct PendingBatch: Hashable, Sendable {
        var batch: Batch
        /// Sent on the current connection (a reconnect resends what has no ack).
        var sent = false
        /// The server's ack; the batch stays until its diff is in the confirmed state.
        var ack: Ack?
        /// What the replay predicted the server would do: used to count how often it was right.
        var predictedNotes: Int?
        /// What takes the visible state back from this batch's replay (nil: not replayed, or
        /// predicted to be rejected).
        var replay: StateUndo?
        /// The temps its replay mapped (in ``ClientCore/replayTemps``).
        var replayedTemps: [TempID] = []
        /// What its replays changed since the last rebase: the rows to refresh when it changes again.
        var touched = TouchedIDs()

        /// Records a replay of this batch: how to undo it, the temps it mapped, what it predicts
        /// the server will say, what it changed.
        mutating func replayed(_ applied: Applied) {
            replay = applied.undo
            replayedTemps = Array(applied.commit.ack.idMap.keys)
            predictedNotes = applied.commit.ack.notes.count
            touched.formUnion(applied.commit.diff.changes)
        }
    }

    /// The phase of the current connection.
    package enum Phase: Hashable, Sendable {
        case offline, awaitingWelcome, catchingUp, live
    }

    /// Something the shell must do after a step.
    package enum Action: Hashable, Sendable {
        case send(WireMessage)
        case emit(ClientEvent)
        /// Close the connection and reconnect later (a gap in the diff stream, a server error).
        case reconnect(reason: String)
        /// Close the connection and stop reconnecting: the server refused this client for good,
        /// or broke the protocol beyond repair.
        case stop(SyncError)
        /// Open a connection now (then call ``connecting(now:)`` and send `Hello`).
        case connect
    }

    /// Counters for monitoring and the demo.
    package struct Stats: Hashable, Sendable {
        package var edits = 0
        package var batchesSent = 0
        package var acks = 0
        package var rejections = 0
        package var droppedEdits = 0
        package var remoteDiffs = 0
        package var snapshots = 0
        package var resolutionNotes = 0
        /// Acked batches whose outcome (accepted, with as many resolution notes) the local replay predicted.
        package var predictionsMatched = 0
        package var predictionsMissed = 0

        package init() {}

        /// Adds another client's counters (for totals over several clients).
        package mutating func add(_ other: Stats) {
            edits += other.edits
            batchesSent += other.batchesSent
            acks += other.acks
            rejections += other.rejections
            droppedEdits += other.droppedEdits
            remoteDiffs += other.remoteDiffs
            snapshots += other.snapshots
            resolutionNotes += other.resolutionNotes
            predictionsMatched += other.predictionsMatched
            predictionsMissed += other.predictionsMissed
        }
    }

    package let clientID: ClientID
    package let courseID: EntityID
    /// Bound on waiting batches (``ClientConfiguration/maxPendingBatches``).
    package let maxPendingBatches: Int
    package internal(set) var confirmed: CourseState
    /// The confirmed state with the pending batches replayed on it, in place: each batch's
    /// ``PendingBatch/replay`` undo takes it back, so a rebase costs in proportion to the pending
    /// batches and the change, not to the course.
    package internal(set) var visible: CourseState
    package internal(set) var phase: Phase = .offline
    package internal(set) var stats = Stats()
    var pending: [PendingBatch]
    /// Temp IDs of acknowledged batches → real IDs.
    var knownTemps: [TempID: EntityID]
    /// Real ID → the local key of a row made here (rows first seen from the server use their ID).
    var localKeys: [EntityID: LocalKey]
    var nextTemp: UInt64
    var nextBatchSeq: BatchSeq
    /// The IDs the replayed batches gave their temps (provisional, or an existing row's for a
    /// merged link): with ``knownTemps``, the temps of the visible state.
    var replayTemps: [TempID: EntityID] = [:]
    /// The batch collecting edits until it is sealed (always the last pending batch, never sent).
    var openBatch: BatchSeq?
    /// Who is on the course (this replica included), as the server last said.
    package internal(set) var peers: [ClientID: PresencePeer] = [:]
    /// This replica's presence, once announced (re-sent on every connection).
    package internal(set) var announcement: PresenceAnnouncement?
    /// This replica's own edits that can be undone, and undos that can be redone.
    var undoHistory = UndoHistory()
    /// Every ID whose visible row the pending batches changed (replayed or edited) since the last
    /// rebase: the rows to refresh, besides what arrived, when the replay changes.
    var replayTouched = TouchedIDs()
    var rows = VisibleRows()
    var snapshotParts: [SnapshotPart] = []
    /// Catch-up material waiting for acks (see ``releaseHeld()``).
    var held: [Held] = []

    enum Held: Hashable, Sendable {
        case diff(Diff)
        case snapshot([SnapshotPart])
    }
    var write = ReplicaWrite()
    var countersMoved = false
    /// Rows named by the diffs the replica logged since its last base (see ``takeWrite()``).
    var loggedRows: Int
    var actions: [Action] = []

    package let timing: Timing
    /// Draws the reconnect jitter.
    var random: SplitMix64
    /// After `Welcome`: the heartbeat rule at the server's interval.
    var heartbeat: Heartbeat?
    /// While awaiting `Welcome`: when the attempt is given up.
    var handshakeDeadline: Moment?
    /// When the open batch is sealed (the coalescing window).
    var sealDeadline: Moment?
    /// While offline: when to connect again.
    package internal(set) var retryAt: Moment?
    /// Push pacing at the rates the server's `Welcome` states (none if it states none), so that a
    /// backlog (a reconnect after a long time offline) goes out no faster than the server takes it.
    var pushPace: TokenBucket?
    var bytePace: TokenBucket?
    /// When the next paced push may go.
    var paceDeadline: Moment?
    /// The latest moment an input carried: what ``seal()`` paces by.
    var lastNow = Moment.zero
    /// The wait the server's last `Error` asked for (`retry_after_ms`), honoured by the next reconnect.
    var serverRetryAfter: Duration?
    /// Connection attempts in a row that ended before `Welcome`.
    var failedAttempts = 0
    var welcomed = false
    /// Refused for good, or closed: no more connections.
    var stopped = false
    /// The most ops a batch may weigh: the protocol's limit, or less if the server's `Welcome` says so.
    package internal(set) var maxOpsPerBatch = Limits.maxOpsPerBatch

    /// An engine over what a replica stored (``ReplicaContents/empty(clientID:courseID:)`` for a new one).
    /// `seed` feeds the reconnect jitter (a simulation passes a fixed one).
    package init(_ contents: ReplicaContents, maxPendingBatches: Int = ClientConfiguration.defaultMaxPendingBatches,
                timing: Timing = Timing(), seed: UInt64) {
        precondition(maxPendingBatches > 0)
        self.timing = timing
        random = SplitMix64(seed: seed)
        clientID = contents.clientID
        courseID = contents.confirmed.course.id
        self.maxPendingBatches = maxPendingBatches
        confirmed = contents.confirmed
        visible = contents.confirmed
        pending = contents.pending.map { PendingBatch(batch: $0) }
        knownTemps = contents.knownTemps
        localKeys = contents.localKeys
        nextTemp = contents.nextTemp
        nextBatchSeq = contents.nextBatchSeq
        loggedRows = contents.loggedRows
        rebase(arrived: nil)
        // The replica's stored rows are rewritten from scratch when it opens.
        write.replaceRows = rows
        write.rows = RowDelta()
    }

    // MARK: Steps

    /// The fewest logged rows that make a new base (so that a small course is not rewritten
    /// every few diffs). The simulator lowers it, so that its small courses get new bases often.
    package var compactionFloor = 1_000

    /// What to write to the replica since the last call, in one transaction.
    ///
    /// The replica logs the diffs it applies after a base (the confirmed state at some seq).
    /// When the logged diffs name more rows than the course holds (and at least
    /// ``compactionFloor``), this step writes the confirmed state as the new base instead, which
    /// empties the log: writing a diff costs one row, and opening the file reads at most about
    /// twice the course.
    package mutating func takeWrite() -> ReplicaWrite {
        if loggedRows > max(compactionFloor, confirmed.chapters.count + confirmed.media.count + confirmed.videos.count),
           !write.confirmed.isEmpty {
            write.confirmed = [.snapshot(confirmed)]
            loggedRows = 0
        }
        if countersMoved { write.counters = Counters(nextTemp: nextTemp, nextBatchSeq: nextBatchSeq) }
        defer { write = ReplicaWrite(); countersMoved = false }
        return write
    }

    /// What to do since the last call, in order.
    package mutating func takeActions() -> [Action] {
        defer { actions = [] }
        return actions
    }

    /// A fresh temp ID, unique for this replica for ever.
    package mutating func mintTemp() -> TempID {
        defer { nextTemp += 1; countersMoved = true }
        return TempID(nextTemp)!
    }

    /// The reference an operation uses for the row `key` names, or `nil` if the replica shows no such row.
    package func ref(_ key: LocalKey) -> Ref? {
        guard rows.chapters[key] != nil || rows.videos[key] != nil || rows.media[key] != nil else { return nil }
        return visibleRef(key.rawValue)
    }

    /// Applies `op` to the visible state and queues it in the open batch (opening one if needed),
    /// which is sealed at the end of the coalescing window (at once with a zero window; with
    /// `holdOpen`, only by an explicit ``seal()``). Throws, changing nothing, when the edit is
    /// invalid against the visible state or the queue is full.
    package mutating func edit(_ op: SyncModel.Operation, now: Moment, holdOpen: Bool = false) throws(EditError) {
        lastNow = max(lastNow, now)
        let inverse = inverse(of: op)
        try queue(op)
        if let inverse { undoHistory.openInverses.append(inverse) }
        if holdOpen { return }
        if timing.coalesceWindow <= .zero {
            seal()
        } else if sealDeadline == nil {
            sealDeadline = now + timing.coalesceWindow
        }
    }

    /// Adds `op` to the open batch (the last pending one, so its replay is the newest): its replay
    /// is undone and the batch, one op longer, resolved again in place. Costs in proportion to
    /// the open batch, not to the course.
    private mutating func queue(_ op: SyncModel.Operation) throws(EditError) {
        // A full open batch is sealed; the edit starts the next one.
        if let last = pending.last, last.batch.batchSeq == openBatch,
           last.batch.ops.reduce(0, { $0 + $1.weight }) + op.weight > maxOpsPerBatch {
            seal()
        }
        var entry: PendingBatch
        if openBatch != nil {
            unwind(pending.count - 1)
            entry = pending.removeLast()
            entry.batch.ops.append(op)
        } else {
            guard pending.count < maxPendingBatches else { throw .queueFull(limit: maxPendingBatches) }
            entry = PendingBatch(batch: Batch(clientID: clientID, courseID: courseID, batchSeq: nextBatchSeq, baseSeq: confirmed.seq, ops: [op]))
        }
        var allocator = ProvisionalIDAllocator()
        switch Resolver.apply(entry.batch, to: &visible, knownTemps: temps(for: entry.batch), allocator: &allocator) {
        case .success(let applied):
            entry.replayed(applied)
            replayTemps.merge(applied.commit.ack.idMap) { _, new in new }
            replayTouched.formUnion(applied.commit.diff.changes)
        case .failure(var rejection):
            if openBatch != nil {
                // Put the open batch back as it was: it resolved against this state before.
                entry.batch.ops.removeLast()
                pending.append(entry)
                _ = replay(from: pending.count - 1)
            }
            rejection.opIndex = nil
            throw .invalid(rejection)
        }
        if openBatch == nil {
            openBatch = entry.batch.batchSeq
            nextBatchSeq += 1
            countersMoved = true
        }
        pending.append(entry)
        write.batches[entry.batch.batchSeq] = entry.batch
        write.rows.merge(rows.update(entry.touched, from: visible, rowBuilder))
        stats.edits += 1
    }

    /// Closes the open batch: it is sent now if connected, else on the next connection.
    package mutating func seal() {
        sealDeadline = nil
        guard let sealed = openBatch else { return }
        undoHistory.sealed(sealed)
        openBatch = nil
        sendUnsent(now: lastNow)
    }

    /// Sends the sealed batches not yet sent on this connection, in order, as fast as the pace
    /// allows; the rest at ``paceDeadline``.
    mutating func sendUnsent(now: Moment) {
        guard phase == .catchingUp || phase == .live else { return }
        paceDeadline = nil
        for index in pending.indices where !pending[index].sent && pending[index].ack == nil && pending[index].batch.batchSeq != openBatch {
            if let retry = Self.pace(&pushPace, 1, now: now) { paceDeadline = retry; return }
            let bytes = bytePace == nil ? 0 : WireMessage.push(Push(pending[index].batch)).payload().count
            if let retry = Self.pace(&bytePace, bytes, now: now) { paceDeadline = retry; return }
            send(index)
        }
    }

    /// Spends `amount` from `pace` (no pace: nothing to spend) and returns nil, or, if it cannot
    /// go yet, when to try again.
    private static func pace(_ pace: inout TokenBucket?, _ amount: Int, now: Moment) -> Moment? {
        guard pace != nil, !pace!.take(amount, now: now) else { return nil }
        return now + pace!.wait(until: 1, now: now)
    }

    // MARK: Connection and time

    /// Starts syncing: asks the shell to connect (``Action/connect``).
    package mutating func start() {
        guard !stopped, phase == .offline, retryAt == nil else { return }
        actions.append(.connect)
    }

    /// The shell starts connecting; it sends `Hello` itself (it holds the token). The attempt,
    /// handshake included, must end in `Welcome` within ``Timing/handshakeTimeout``.
    package mutating func connecting(now: Moment) {
        lastNow = max(lastNow, now)
        paceDeadline = nil
        phase = .awaitingWelcome
        welcomed = false
        retryAt = nil
        heartbeat = nil
        handshakeDeadline = now + timing.handshakeTimeout
        snapshotParts = []
        held = []
        presenceLost()
        for index in pending.indices { pending[index].sent = false }
        actions.append(.emit(.connection(.connecting)))
    }

    /// The connection is gone; pending batches wait for the next one, which the engine schedules
    /// with backoff (unless `retry` is false: the client is closing).
    package mutating func disconnected(now: Moment, retry: Bool = true) {
        phase = .offline
        heartbeat = nil
        handshakeDeadline = nil
        snapshotParts = []
        held = []
        presenceLost()
        for index in pending.indices { pending[index].sent = false }
        guard retry, !stopped else {
            stopped = stopped || !retry
            retryAt = nil
            return actions.append(.emit(.connection(.offline(retryInMs: nil))))
        }
        if !welcomed { failedAttempts += 1 }
        welcomed = false
        let delay = max(backoff(failedAttempts: max(failedAttempts, 1)), serverRetryAfter ?? .zero)
        serverRetryAfter = nil
        retryAt = now + delay
        actions.append(.emit(.connection(.offline(retryInMs: Int(delay.wholeMilliseconds)))))
    }

    /// Full jitter: uniform in [0, min(cap, base × 2^(failed attempts − 1))].
    mutating func backoff(failedAttempts: Int) -> Duration {
        let base = timing.reconnectBase.wholeNanoseconds
        let bound = min(timing.reconnectCap.wholeNanoseconds, base << min(failedAttempts - 1, 30))
        return .nanoseconds(Int64.random(in: 0...max(bound, 1), using: &random))
    }

    /// Stops for good (the shell could not store a step): no more connections.
    package mutating func stop() {
        stopped = true
        retryAt = nil
    }

    /// When ``handleTimeout(now:)`` next has something to do.
    package var nextDeadline: Moment? {
        switch phase {
        case .offline: earliest(sealDeadline, retryAt)
        case .awaitingWelcome: earliest(sealDeadline, handshakeDeadline)
        case .catchingUp, .live: earliest(sealDeadline, heartbeat?.deadline, paceDeadline)
        }
    }

    /// The shell's timer fired: seal the open batch, ping a quiet server, give up on a silent
    /// connection or a handshake that takes too long, connect again after the backoff.
    package mutating func handleTimeout(now: Moment) {
        lastNow = max(lastNow, now)
        if let deadline = sealDeadline, now >= deadline { seal() }
        if let deadline = paceDeadline, now >= deadline { sendUnsent(now: now) }
        switch phase {
        case .offline:
            if let retryAt, now >= retryAt, !stopped {
                self.retryAt = nil
                actions.append(.connect)
            }
        case .awaitingWelcome:
            if let deadline = handshakeDeadline, now >= deadline {
                handshakeDeadline = nil
                actions.append(.reconnect(reason: "no Welcome within \(timing.handshakeTimeout.wholeMilliseconds) ms"))
            }
        case .catchingUp, .live:
            switch heartbeat?.fire(now: now) {
            case .ping:
                actions.append(.send(.ping(nonce: random.next() | 1)))
            case .timeout:
                let silence = heartbeat!.timeout.wholeMilliseconds
                heartbeat = nil
                actions.append(.reconnect(reason: "idle: nothing received from the server for \(silence) ms"))
            case nil:
                break
            }
        }
    }

    // MARK: Replay

    /// Takes the visible state back to the confirmed state, reverting the pending batches'
    /// replays newest first. Every change to the confirmed state or the pending batches happens
    /// between an unwind and a ``rebase(arrived:)``.
    mutating func unwind() {
        for index in pending.indices.reversed() { unwind(index) }
        assert(visible == confirmed, "unwinding the replays did not restore the confirmed state")
    }

    /// Reverts one batch's replay (which must be the newest still applied).
    private mutating func unwind(_ index: Int) {
        guard let undo = pending[index].replay else { return }
        undo.revert(&visible)
        for temp in pending[index].replayedTemps { replayTemps[temp] = nil }
        pending[index].replay = nil
        pending[index].replayedTemps = []
    }

    /// The temps `batch` mentions, as the visible state knows them: all the resolver needs.
    func temps(for batch: Batch) -> [TempID: EntityID] {
        var temps: [TempID: EntityID] = [:]
        for temp in batch.mentionedTemps {
            if let id = replayTemps[temp] ?? knownTemps[temp] { temps[temp] = id }
        }
        return temps
    }

    /// Replays the pending batches from `start` on in place (the visible state holds the replays
    /// of those before it); returns what they changed.
    private mutating func replay(from start: Int) -> TouchedIDs {
        var allocator = ProvisionalIDAllocator()
        var doomedOpenBatch = false
        var replayed = TouchedIDs()
        for index in pending.indices where index >= start {
            let batch = pending[index].batch
            switch Resolver.apply(batch, to: &visible, knownTemps: temps(for: batch), allocator: &allocator) {
            case .success(let applied):
                pending[index].touched = TouchedIDs()
                pending[index].replayed(applied)
                replayTemps.merge(applied.commit.ack.idMap) { _, new in new }
                replayed.formUnion(applied.commit.diff.changes)
            case .failure:
                // Left out of the visible state: the server will reject it too (and later batches
                // that used its temp IDs), unless the confirmed state changes again first.
                pending[index].predictedNotes = nil
                pending[index].touched = TouchedIDs()
                if batch.batchSeq == openBatch { doomedOpenBatch = true }
            }
        }
        // New edits must not join a batch that can no longer commit: send it as it is (its
        // rejection rolls it back with an event) and let the next edit open a fresh one.
        if doomedOpenBatch { seal() }
        return replayed
    }

    /// After an ``unwind()`` and a change to the confirmed state or the pending batches: replays
    /// the pending batches on the visible state again, and updates the rows: all of them
    /// (`arrived` nil: a snapshot, or opening), or only those of the IDs that `arrived` (the
    /// applied diff) and the replays, before and after, touched, so that a diff costs in
    /// proportion to what it and the pending batches change, not to the course.
    mutating func rebase(arrived: TouchedIDs? = TouchedIDs()) {
        let replayed = replay(from: 0)
        if var touched = arrived {
            touched.formUnion(replayTouched)
            touched.formUnion(replayed)
            write.rows.merge(rows.update(touched, from: visible, rowBuilder))
        } else {
            let new = rowBuilder.rows(of: visible)
            write.rows.merge(rows.delta(to: new))
            rows = new
        }
        replayTouched = replayed
    }

    // MARK: Helpers

    var rowBuilder: RowBuilder { RowBuilder(confirmed: confirmed, localKeys: localKeys) }

    func index(of batchSeq: BatchSeq) -> Int? { pending.firstIndex { $0.batch.batchSeq == batchSeq } }

    mutating func send(_ index: Int) {
        pending[index].sent = true
        stats.batchesSent += 1
        actions.append(.send(.push(Push(pending[index].batch))))
    }

    /// Batches waiting for the server, in order (including the open one).
    package var pendingBatches: [Batch] { pending.map(\.batch) }

    /// How many batches wait for the server.
    package var pendingCount: Int { pending.count }

    /// Whether a fresh token is fetched for each connection (a token provider): then the
    /// server's `TOKEN_EXPIRED` means "reconnect", not "refused for good".
    package var renewsTokens = false

    /// Whether nothing is waiting for the server.
    package var isSettled: Bool { pending.isEmpty }
}

extension ClientCore {
    /// The local key of the row whose ID (real or provisional) in the visible state is `id`.
    package func key(for id: EntityID) -> LocalKey { rowBuilder.key(id) }

    /// The local key of the row `temp` made in the visible state (an existing row's key when the
    /// resolver merged it, e.g. media the chapter already held).
    package func key(forTemp temp: TempID) -> LocalKey {
        (replayTemps[temp] ?? knownTemps[temp]).map { rowBuilder.key($0) } ?? LocalKey(.provisional(temp))
    }
}
