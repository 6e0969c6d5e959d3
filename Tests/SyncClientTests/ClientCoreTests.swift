@testable import SyncClient
import SyncModel
import SyncWire
import Testing

/// A server reduced to its decision: the resolver over an in-memory state, with the exactly-once
/// record and temp map per client. Enough to drive a ``ClientCore`` without sockets.
struct ModelServer {
    var state: CourseState
    var temps: [ClientID: [TempID: EntityID]] = [:]
    var acks: [ClientID: [BatchSeq: Ack]] = [:]
    var allocator = RandomIDAllocator(SplitMix64(seed: 1))

    /// Resolves a push like the server: the stored ack for a resend, else an ack and a diff, or a rejection.
    mutating func push(_ batch: Batch) -> (WireMessage, Diff?) {
        if let ack = acks[batch.clientID]?[batch.batchSeq] { return (.ack(ack), nil) }
        switch Resolver.resolve(batch, against: state, knownTemps: temps[batch.clientID] ?? [:], allocator: &allocator) {
        case .success(let resolved):
            state = resolved.state
            temps[batch.clientID, default: [:]].merge(resolved.commit.ack.idMap) { _, new in new }
            acks[batch.clientID, default: [:]][batch.batchSeq] = resolved.commit.ack
            return (.ack(resolved.commit.ack), resolved.commit.diff)
        case .failure(let rejection):
            return (.reject(BatchRejection(courseID: batch.courseID, batchSeq: batch.batchSeq, rejection: rejection)), nil)
        }
    }
}

/// The engine's steps at time zero, for tests that are not about time.
extension ClientCore {
    init(_ contents: ReplicaContents, maxPendingBatches: Int = 100) {
        self.init(contents, maxPendingBatches: maxPendingBatches, seed: 1)
    }

    mutating func edit(_ op: SyncModel.Operation) throws(EditError) { try edit(op, now: .zero) }
    mutating func received(_ message: WireMessage) { received(message, now: .zero) }
    mutating func connecting() { connecting(now: .zero) }
}

@Suite struct ClientCoreTests {
    let courseID = EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0001)
    let clientID = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0002))

    /// A server with one chapter and three media files, and a live client core caught up with it.
    func setUp(maxPendingBatches: Int = 100) -> (ModelServer, ClientCore, chapter: EntityID, media: [EntityID]) {
        var server = ModelServer(state: CourseState(course: Course(id: courseID, title: "Course")))
        let setupClient = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0003))
        let (answer, _) = server.push(Batch(clientID: setupClient, courseID: courseID, batchSeq: 1, baseSeq: 0, ops: [
            .createChapter(temp: TempID(1)!, title: "Chapter", placement: .atEnd),
            .registerMedia(temp: TempID(2)!, name: "a", cdnURL: "https://cdn.example.com/a", durationMs: 1, byteSize: 1),
            .registerMedia(temp: TempID(3)!, name: "b", cdnURL: "https://cdn.example.com/b", durationMs: 1, byteSize: 1),
            .registerMedia(temp: TempID(4)!, name: "c", cdnURL: "https://cdn.example.com/c", durationMs: 1, byteSize: 1),
        ]))
        guard case .ack(let ack) = answer else { fatalError("set-up refused") }
        var core = ClientCore(.empty(clientID: clientID, courseID: courseID), maxPendingBatches: maxPendingBatches)
        core.connecting()
        core.received(.welcome(Welcome(serverID: "model", heartbeatIntervalMs: 1000)))
        let state = server.state
        core.received(.snapshot(SnapshotPart(course: state.course, chapters: Array(state.chapters.values), media: Array(state.media.values),
                                             videos: Array(state.videos.values), part: 0, last: true)))
        core.received(.subscribed(courseID: courseID, seq: state.seq))
        _ = core.takeActions()
        _ = core.takeWrite()
        return (server, core, ack.idMap[TempID(1)!]!, (2...4).map { ack.idMap[TempID($0)!]! })
    }

    /// Delivers every push the core sent to the model server, and the answers back (ack, then diff).
    func exchange(_ core: inout ClientCore, _ server: inout ModelServer) {
        var outbox = core.takeActions()
        while !outbox.isEmpty {
            for case .send(.push(let push)) in outbox {
                let (answer, diff) = server.push(push.batch(from: core.clientID))
                core.received(answer)
                if let diff { core.received(.diff(diff)) }
            }
            outbox = core.takeActions()
        }
    }

    @Test func anInvalidEditThrowsAndChangesNothing() throws {
        var (_, core, chapter, _) = setUp()
        let before = core.visible
        #expect(throws: EditError.self) { try core.edit(.renameChapter(.id(chapter), title: "  ")) }
        #expect(throws: EditError.self) { try core.edit(.unlinkVideo(.id(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0009)))) }
        #expect(core.visible == before)
        #expect(core.pendingBatches.isEmpty)
        #expect(core.takeWrite().batches.isEmpty)
    }

    @Test func editsCoalesceIntoTheOpenBatchUntilSealed() throws {
        var (_, core, chapter, media) = setUp()
        let temp = core.mintTemp()
        try core.edit(.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: temp, media: .id(media[0]))], placement: .atEnd))
        try core.edit(.renameVideo(.temp(temp), title: "Renamed in the same batch"))
        #expect(core.pendingBatches.count == 1 && core.pendingBatches[0].ops.count == 2)
        #expect(core.takeActions().isEmpty, "nothing is sent before the batch is sealed")
        core.seal()
        #expect(core.takeActions().count == 1)
        try core.edit(.renameChapter(.id(chapter), title: "Next batch"))
        #expect(core.pendingBatches.map(\.batchSeq) == [1, 2])
    }

    @Test func aFullOpenBatchIsSealedAndTheEditStartsTheNext() throws {
        var (_, core, chapter, _) = setUp()
        for index in 0..<Limits.maxOpsPerBatch { try core.edit(.renameChapter(.id(chapter), title: "Title \(index)")) }
        #expect(core.pendingBatches.count == 1)
        try core.edit(.renameChapter(.id(chapter), title: "One past the limit"))
        #expect(core.pendingBatches.map(\.ops.count) == [Limits.maxOpsPerBatch, 1])
    }

    @Test func thePendingQueueIsBoundedWithAClearError() throws {
        var (_, core, chapter, _) = setUp(maxPendingBatches: 2)
        try core.edit(.renameChapter(.id(chapter), title: "One"))
        core.seal()
        try core.edit(.renameChapter(.id(chapter), title: "Two"))
        core.seal()
        #expect(throws: EditError.queueFull(limit: 2)) { try core.edit(.renameChapter(.id(chapter), title: "Three")) }
        #expect(core.visible.chapters[chapter]?.title == "Two")
    }

    @Test func anAckThenItsDiffSwapTempIDsKeepLocalKeysAndRewriteLaterBatches() throws {
        var (server, core, chapter, media) = setUp()
        let chapterTemp = core.mintTemp()
        try core.edit(.createChapter(temp: chapterTemp, title: "New", placement: .atEnd))
        core.seal()
        let videoTemp = core.mintTemp()
        try core.edit(.linkMedia(chapter: .temp(chapterTemp), items: [LinkItem(temp: videoTemp, media: .id(media[1]))], placement: .atEnd))
        let key = core.key(forTemp: chapterTemp)
        // Only the first batch reaches the server.
        let sent = core.takeActions()
        guard case .send(.push(let first)) = sent.first else { Issue.record("\(sent)"); return }
        let (answer, diff) = server.push(first.batch(from: clientID))
        core.received(answer)
        #expect(core.visible.chapters[EntityID.provisional(chapterTemp)] != nil, "the rows stay until the diff arrives")
        core.received(.diff(try #require(diff)))
        guard case .ack(let ack) = answer else { Issue.record("\(answer)"); return }
        let real = try #require(ack.idMap[chapterTemp])
        #expect(core.visible.chapters[real]?.title == "New")
        #expect(core.key(forTemp: chapterTemp) == key, "the local key survives the ID swap")
        // Still pending: the second batch links a video into it (its video list is not confirmed).
        #expect(core.rows.chapters[key]?.id == real && core.rows.chapters[key]?.status == .pending)
        #expect(core.pendingBatches.count == 1)
        #expect(core.pendingBatches[0].ops.first?.references.first == .id(real), "the later batch now names the real ID")
        core.seal()
        exchange(&core, &server)
        #expect(core.isSettled && core.visible == server.state && core.confirmed == server.state)
        #expect(core.rows.chapters[key]?.status == .confirmed)
        _ = chapter
    }

    @Test func aDiffOfOurOwnBatchBeforeItsAckIsNotAppliedTwice() throws {
        var (server, core, chapter, media) = setUp()
        let temp = core.mintTemp()
        try core.edit(.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: temp, media: .id(media[2]))], placement: .atEnd))
        core.seal()
        guard case .send(.push(let push)) = core.takeActions().first else { Issue.record("not sent"); return }
        let (answer, diff) = server.push(push.batch(from: clientID))
        // The connection drops; the catch-up brings the diff, the resend brings the (stored) ack.
        core.disconnected(now: .zero)
        core.connecting()
        core.received(.welcome(Welcome(serverID: "model", heartbeatIntervalMs: 1000)))
        core.received(.diff(try #require(diff)))
        #expect(core.visible.videos.count == 1, "the committed batch is not replayed on top of its own diff")
        #expect(core.confirmed.seq == push.baseSeq, "the diff waits for the ack: its rows' IDs are not known yet")
        core.received(answer)
        #expect(core.isSettled && core.visible == server.state)
        #expect(core.rows.videos[LocalKey(.provisional(temp))]?.status == .confirmed)
    }

    @Test func aGapInTheDiffStreamReconnectsAndAPermanentRefusalStops() throws {
        var (_, core, _, _) = setUp()
        let seq = core.confirmed.seq
        core.received(.diff(Diff(courseID: courseID, seq: seq + 2, origin: BatchOrigin(clientID: clientID, batchSeq: 9), changes: ChangeSet())))
        #expect(core.confirmed.seq == seq)
        guard case .reconnect = core.takeActions().first else { Issue.record("no reconnect on a gap"); return }
        core.received(.error(ConnectionError(.tokenExpired, "expired")))
        #expect(core.takeActions() == [.stop(.refused(code: .tokenExpired, message: "expired"))])
        core.received(.error(ConnectionError(.shuttingDown, "bye")))
        guard case .reconnect = core.takeActions().first else { Issue.record("a server shutting down is temporary"); return }
    }

    @Test func anOpenBatchThatARemoteChangeDoomsIsSentAsItIsAndNewEditsStartAFreshOne() throws {
        var (server, core, chapter, media) = setUp()
        let temp = core.mintTemp()
        try core.edit(.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: temp, media: .id(media[0]))], placement: .atEnd))
        // Another client deletes the chapter before the open batch is sealed.
        let other = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0007))
        let (_, diff) = server.push(Batch(clientID: other, courseID: courseID, batchSeq: 1, baseSeq: 1, ops: [.deleteChapter(.id(chapter))]))
        core.received(.diff(try #require(diff)))
        #expect(core.visible.videos.isEmpty)
        let newChapter = core.mintTemp()
        try core.edit(.createChapter(temp: newChapter, title: "Still possible", placement: .atEnd))
        #expect(core.pendingBatches.map(\.ops.count) == [1, 1], "the doomed batch was sealed; the edit opened another")
        core.seal()
        exchange(&core, &server)
        #expect(core.isSettled && core.visible == server.state)
        #expect(core.visible.orderedChapters.map(\.title) == ["Still possible"])
        #expect(core.stats.rejections == 1 && core.stats.droppedEdits == 1)
    }

    /// The frames of one socket read are one step: its diffs are applied one after another and the
    /// pending batches replayed once after them. The outcome (states, rows, what the replica is
    /// told, events) is the same as taking them one by one, including when an ack sits between
    /// the diffs and when a diff conflicts with the pending batch.
    @Test func diffsReadTogetherEndAsTheyWouldOneByOne() throws {
        var (server, core, chapter, media) = setUp()
        // Two pending batches: a link (in flight) and a rename (open).
        let temp = core.mintTemp()
        try core.edit(.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: temp, media: .id(media[0]))], placement: .atEnd))
        core.seal()
        guard case .send(.push(let push)) = core.takeActions().first else { Issue.record("not sent"); return }
        try core.edit(.renameChapter(.id(chapter), title: "Mine"))
        // Another client links the other two files and renames the chapter, one batch each; then
        // our push is answered (its ack, then its diff), then another remote link.
        let other = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0008))
        var frames: [WireMessage] = []
        for (seq, op) in [SyncModel.Operation.linkMedia(chapter: .id(chapter), items: [LinkItem(temp: TempID(1)!, media: .id(media[1]))], placement: .atStart),
                          .renameChapter(.id(chapter), title: "Theirs")].enumerated() {
            let (_, diff) = server.push(Batch(clientID: other, courseID: courseID, batchSeq: BatchSeq(seq + 1), baseSeq: 1, ops: [op]))
            frames.append(.diff(try #require(diff)))
        }
        let (answer, diff) = server.push(push.batch(from: clientID))
        frames += [answer, .diff(try #require(diff))]
        let (_, last) = server.push(Batch(clientID: other, courseID: courseID, batchSeq: 3, baseSeq: 1, ops: [
            .linkMedia(chapter: .id(chapter), items: [LinkItem(temp: TempID(2)!, media: .id(media[2]))], placement: .atEnd)]))
        frames.append(.diff(try #require(last)))

        var oneByOne = core
        for frame in frames { oneByOne.received(frame) }
        var together = core
        together.received(frames, now: .zero)
        #expect(together.confirmed == oneByOne.confirmed && together.confirmed == server.state)
        #expect(together.visible == oneByOne.visible)
        #expect(together.visible.chapters[chapter]?.title == "Mine", "the open rename is replayed on top")
        #expect(together.rows == oneByOne.rows)
        #expect(together.rows == together.rowBuilder.rows(of: together.visible), "every row the diffs touched was refreshed")
        #expect(together.pendingBatches == oneByOne.pendingBatches)
        #expect(together.takeActions() == oneByOne.takeActions())
        // The replica hears the same: every diff, in order, and the rows as they end.
        var expected = oneByOne.takeWrite()
        let written = together.takeWrite()
        #expect(written.confirmed == expected.confirmed && written.confirmed.count == 4)
        #expect(written.rows.videos == expected.rows.videos && written.rows.chapters == expected.rows.chapters)
        expected.rows = written.rows
        #expect(written == expected)
    }

    /// A diff that would leave a video in a missing chapter or of a missing media file, or
    /// version a missing chapter, stops the client: nothing of it reaches the state or the replica.
    @Test func anInconsistentDiffStopsTheClient() throws {
        let (server, core, chapter, media) = setUp()
        let other = EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_00AA)
        let seq = server.state.seq + 1
        for changes in [ChangeSet(videos: [Video(id: other, chapterID: other, mediaFileID: media[0], title: "Lost", position: 0)]),
                        ChangeSet(videos: [Video(id: other, chapterID: chapter, mediaFileID: other, title: "Lost", position: 0)]),
                        ChangeSet(deletedChapters: [chapter], chapterVersions: [ChapterVersion(chapterID: chapter, version: 9)])] {
            var stopping = core
            stopping.received(.diff(Diff(courseID: courseID, seq: seq, origin: BatchOrigin(clientID: clientID, batchSeq: 99), changes: changes)))
            guard case .stop(.protocolViolation) = stopping.takeActions().last else { Issue.record("\(changes) did not stop the client"); continue }
            #expect(stopping.confirmed == core.confirmed)
            #expect(stopping.takeWrite().confirmed.isEmpty)
        }
    }

    /// The replica logs diffs after a base; once they name more rows than the course holds (and
    /// at least the floor), a step writes the confirmed state as the new base instead, and the
    /// replica reloads to the same state.
    @Test func theLogIsCompactedIntoANewBaseOnceItOutgrowsTheCourse() throws {
        var (server, core, chapter, _) = setUp()
        let replica = try Replica(inMemory: "compaction")
        try replica.create(.empty(clientID: clientID, courseID: courseID))
        var base = ReplicaWrite()
        base.confirmed = [.snapshot(core.confirmed)]
        try replica.apply(base)
        let other = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0009))
        var bases = 0
        var rowsSinceBase = 0
        for index in 1...700 {
            let (_, arrived) = server.push(Batch(clientID: other, courseID: courseID, batchSeq: BatchSeq(index), baseSeq: 1,
                                                 ops: [.renameChapter(.id(chapter), title: "Title \(index)")]))
            let diff = try #require(arrived)
            core.received(.diff(diff))
            let write = core.takeWrite()
            rowsSinceBase += diff.changes.rowCount
            if case .snapshot(let state) = write.confirmed.first {
                #expect(write.confirmed.count == 1 && state == core.confirmed)
                #expect(rowsSinceBase > core.compactionFloor && rowsSinceBase - diff.changes.rowCount <= core.compactionFloor)
                bases += 1
                rowsSinceBase = 0
            } else {
                #expect(write.confirmed == [.diff(diff)])
            }
            try replica.apply(write)
        }
        #expect(bases == 1, "700 renames name 1,400 rows: one new base past the floor of 1,000")
        let contents = try #require(try replica.load(courseID: courseID))
        #expect(contents.confirmed == core.confirmed && contents.confirmed == server.state)
        #expect(contents.loggedRows == rowsSinceBase && core.loggedRows == rowsSinceBase)
    }
}

/// The engine's timers, in simulated time: what the shell used to decide with fixed settings.
@Suite struct ClientCoreTimingTests {
    let courseID = EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0011)
    let clientID = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0012))

    func at(_ ms: Int64) -> Moment { .milliseconds(ms) }

    /// A live core whose server's Welcome said `welcome`, at time zero.
    func live(_ welcome: Welcome, timing: ClientCore.Timing = ClientCore.Timing()) -> ClientCore {
        var core = ClientCore(.empty(clientID: clientID, courseID: courseID), timing: timing, seed: 7)
        core.connecting(now: at(0))
        core.received(.welcome(welcome), now: at(0))
        core.received(.subscribed(courseID: courseID, seq: 0), now: at(0))
        _ = core.takeActions()
        return core
    }

    /// Regression: the client's read timeout was a fixed 45 s whatever the server's interval, so
    /// `serve --heartbeat-seconds 60` made every quiet client drop its connection. Now the
    /// interval in `Welcome` governs: a Ping after one quiet interval, a reconnect after three.
    @Test func theServersHeartbeatIntervalGovernsPingsAndTheReadTimeout() {
        var core = live(Welcome(serverID: "s", heartbeatIntervalMs: 60_000))
        core.handleTimeout(now: at(45_000))
        #expect(core.takeActions().isEmpty, "45 s of quiet is fine when the server beats every 60 s")
        #expect(core.nextDeadline == at(60_000))
        core.handleTimeout(now: at(60_000))
        guard case .send(.ping) = core.takeActions().first else { Issue.record("expected a Ping"); return }
        core.received(.pong(nonce: 1), now: at(61_000))
        core.handleTimeout(now: at(180_000))
        #expect(core.takeActions().allSatisfy { if case .reconnect = $0 { false } else { true } }, "the Pong counts")
        core.handleTimeout(now: at(241_000))
        guard case .reconnect(let reason) = core.takeActions().last else { Issue.record("expected a reconnect"); return }
        #expect(reason.hasPrefix("idle:"))
    }

    @Test func theServersOpLimitSealsSmallerBatches() throws {
        var core = live(Welcome(serverID: "s", maxOpsPerBatch: 2, heartbeatIntervalMs: 1_000))
        #expect(core.maxOpsPerBatch == 2)
        for index in 0..<3 {
            try core.edit(.createChapter(temp: core.mintTemp(), title: "Chapter \(index)", placement: .atEnd), now: at(0), holdOpen: true)
        }
        #expect(core.pendingBatches.map(\.ops.count) == [2, 1])
    }

    @Test func editsWithinTheCoalescingWindowGoInOneBatch() throws {
        var core = live(Welcome(serverID: "s", heartbeatIntervalMs: 15_000))
        try core.edit(.createChapter(temp: core.mintTemp(), title: "A", placement: .atEnd), now: at(0))
        try core.edit(.createChapter(temp: core.mintTemp(), title: "B", placement: .atEnd), now: at(3))
        #expect(core.takeActions().allSatisfy { if case .send = $0 { false } else { true } })
        #expect(core.nextDeadline == at(5))
        core.handleTimeout(now: at(5))
        let pushes = core.takeActions().compactMap { if case .send(.push(let push)) = $0 { push } else { nil } }
        #expect(pushes.map(\.ops.count) == [2])
    }

    @Test func reconnectsBackOffWithFullJitterAndAHandshakeHasADeadline() {
        var timing = ClientCore.Timing()
        timing.reconnectBase = .milliseconds(100)
        timing.reconnectCap = .seconds(1)
        var core = ClientCore(.empty(clientID: clientID, courseID: courseID), timing: timing, seed: 3)
        core.start()
        #expect(core.takeActions().last == .connect)
        var now = at(0)
        var bounds: [Duration] = []
        for attempt in 1...6 {
            core.connecting(now: now)
            #expect(core.nextDeadline == now + .seconds(10))
            now = now + .seconds(10)
            core.handleTimeout(now: now)
            guard case .reconnect = core.takeActions().last else { Issue.record("no handshake deadline"); return }
            core.disconnected(now: now)
            let retry = core.retryAt!
            let bound = min(Duration.milliseconds(100 << (attempt - 1)), .seconds(1))
            #expect(retry >= now && retry <= now + bound, "attempt \(attempt)")
            bounds.append(retry - now)
            core.handleTimeout(now: retry)
            #expect(core.takeActions().last == .connect)
            now = retry
        }
        #expect(Set(bounds).count > 1, "jittered")
        // A Welcome resets the count: the next wait is within the base again.
        core.connecting(now: now)
        core.received(.welcome(Welcome(serverID: "s", heartbeatIntervalMs: 1_000)), now: now)
        core.disconnected(now: now)
        #expect(core.retryAt! <= now + .milliseconds(100))
    }

    /// The server states its push rate in `Welcome`: a backlog goes out a second's worth at once,
    /// then one push per 1/rate, in order; a new connection starts the pace afresh.
    @Test func pushesArePacedAtTheRateTheServerStates() throws {
        var timing = ClientCore.Timing()
        timing.coalesceWindow = .zero
        var core = ClientCore(.empty(clientID: clientID, courseID: courseID), timing: timing, seed: 7)
        for index in 0..<8 {  // made offline: a backlog
            try core.edit(.createChapter(temp: core.mintTemp(), title: "Chapter \(index)", placement: .atEnd), now: at(0))
        }
        core.connecting(now: at(0))
        _ = core.takeActions()
        core.received(.welcome(Welcome(serverID: "s", heartbeatIntervalMs: 60_000, maxPushesPerSecond: 5)), now: at(0))
        func pushed() -> [BatchSeq] { core.takeActions().compactMap { if case .send(.push(let push)) = $0 { push.batchSeq } else { nil } } }
        #expect(pushed() == [1, 2, 3, 4, 5], "a second's worth at once")
        #expect(core.nextDeadline == at(200))
        core.handleTimeout(now: at(199))
        #expect(pushed().isEmpty)
        core.handleTimeout(now: at(200))
        #expect(pushed() == [6])
        core.handleTimeout(now: at(600))
        #expect(pushed() == [7, 8])
        try core.edit(.createChapter(temp: core.mintTemp(), title: "Late", placement: .atEnd), now: at(600))
        #expect(pushed().isEmpty, "a new edit waits its turn too")
        core.handleTimeout(now: at(800))
        #expect(pushed() == [9])
    }

    /// `RATE_LIMITED` (and `LIMIT_EXCEEDED` with a retry-after) is not a refusal: the client
    /// reconnects, no sooner than the server asked, whatever its own backoff says.
    @Test func aRetryAfterFromTheServerDelaysTheReconnect() {
        var timing = ClientCore.Timing()
        timing.reconnectBase = .milliseconds(10)
        timing.reconnectCap = .milliseconds(20)
        for code in [ErrorCode.rateLimited, .limitExceeded] {
            var core = live(Welcome(serverID: "s", heartbeatIntervalMs: 15_000), timing: timing)
            core.received(.error(ConnectionError(code, "slow down", retryAfterMs: 3_000)), now: at(100))
            guard case .reconnect = core.takeActions().last else { Issue.record("expected a reconnect for \(code)"); return }
            core.disconnected(now: at(100))
            #expect(core.retryAt == at(3_100), "\(code)")
            // The next disconnect (no retry-after) is back to the client's own backoff.
            core.handleTimeout(now: at(3_100))
            core.connecting(now: at(3_100))
            core.disconnected(now: at(3_150))
            #expect(core.retryAt! <= at(3_170))
        }
    }
}

/// The ordering rules as one client sees them (the checker `coursesync stress` runs).
@Suite struct WireOrderCheckerTests {
    let course = EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0021)
    let me = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0022))
    let other = ClientID(EntityID(high: 0x4000_0000_0000_4000, low: 0x8000_0000_0000_0023))

    func diff(_ seq: CourseSeq, _ client: ClientID, _ batch: BatchSeq) -> FrameEvent {
        .received(.diff(Diff(courseID: course, seq: seq, origin: BatchOrigin(clientID: client, batchSeq: batch), changes: ChangeSet())))
    }

    func connect(_ checker: inout WireOrderChecker, since: CourseSeq) {
        checker.observe(.connected)
        checker.observe(.sent(.hello(Hello(clientID: me, token: "t"))))
        checker.observe(.sent(.subscribe(courseID: course, sinceSeq: since)))
    }

    func push(_ batch: BatchSeq) -> FrameEvent {
        .sent(.push(Push(courseID: course, batchSeq: batch, baseSeq: 0, ops: [.unlinkVideo(.id(course))])))
    }

    func ack(_ batch: BatchSeq, _ seq: CourseSeq) -> FrameEvent {
        .received(.ack(Ack(courseID: course, batchSeq: batch, seq: seq, idMap: [:], notes: [])))
    }

    @Test func aCleanStreamPasses() {
        var checker = WireOrderChecker()
        connect(&checker, since: 4)
        for event in [diff(5, other, 1), push(1), ack(1, 6), diff(6, me, 1), diff(7, other, 2)] { checker.observe(event) }
        #expect(checker.violations.isEmpty, "\(checker.violations)")
        #expect(checker.clientID == me && checker.diffsSeen == 3)
    }

    @Test func aDiffBeforeItsAckAGapAndARepeatAreCaught() {
        var checker = WireOrderChecker()
        connect(&checker, since: 4)
        for event in [push(1), diff(5, me, 1), ack(1, 5), diff(7, other, 2), diff(7, other, 2)] { checker.observe(event) }
        #expect(checker.violations.count == 3, "\(checker.violations)")
    }

    @Test func aResentBatchMayShowItsDiffFirstOnANewConnection() {
        var checker = WireOrderChecker()
        connect(&checker, since: 4)
        checker.observe(push(1))  // committed as 5, but the connection drops before the Ack
        connect(&checker, since: 4)
        for event in [push(1), diff(5, me, 1), ack(1, 5)] { checker.observe(event) }
        #expect(checker.violations.isEmpty, "\(checker.violations)")
    }
}
