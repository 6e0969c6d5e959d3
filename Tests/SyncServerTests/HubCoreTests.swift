import SyncModel
import SyncServer
import SyncWire
import Testing
@testable import TestSupport

/// The hub's decisions without a store or sockets: the regressions found by running two nodes.
@Suite struct HubCoreTests {
    let course = EntityID.fresh()
    let author = ClientID(.fresh())
    let other = ClientID(.fresh())

    func diff(_ seq: CourseSeq, by client: ClientID, batch: BatchSeq) -> Diff {
        Diff(courseID: course, seq: seq, origin: BatchOrigin(clientID: client, batchSeq: batch), changes: ChangeSet())
    }

    func commit(_ seq: CourseSeq, by client: ClientID, batch: BatchSeq) -> Commit {
        Commit(diff: diff(seq, by: client, batch: batch), ack: Ack(courseID: course, batchSeq: batch, seq: seq, idMap: [:], notes: []))
    }

    func batch(_ seq: BatchSeq, by client: ClientID) -> Batch {
        Batch(clientID: client, courseID: course, batchSeq: seq, baseSeq: 0, ops: [.renameChapter(.id(.fresh()), title: "t")])
    }

    /// A hub with connections 1 and 2 live at `seq`.
    func liveHub(at seq: CourseSeq) -> HubCore<Int> {
        var hub = HubCore<Int>(courseID: course, maxGroupBatches: 8, catchUpChunk: 100)
        for connection in [1, 2] {
            hub.subscribe(connection, sinceSeq: seq)
            _ = hub.takeEffects()
            hub.caughtUp(connection, generation: connection, .diffs([]))
            _ = hub.takeEffects()
            hub.catchUpSent(connection, generation: connection)
            _ = hub.takeEffects()
        }
        return hub
    }

    func messages(in effects: [HubCore<Int>.Effect], to connection: Int) -> [String] {
        effects.flatMap { effect -> [String] in
            switch effect {
            case .send(connection, .ack(let ack)): ["Ack \(ack.batchSeq)"]
            case .broadcast(let diff, let to) where to.contains(connection): ["Diff \(diff.seq)"]
            case .sendCatchUp(connection, _, let messages):
                messages.compactMap { if case .diff(let diff) = $0 { "Diff \(diff.seq)" } else { nil } }
            default: []
            }
        }
    }

    /// Regression (two nodes: an author received its own Diff before its Ack). Another node's
    /// commit sends the author into catch-up; meanwhile its own batch commits, and the catch-up
    /// read, done after the store committed it but before the hub heard back, finds its diff. The
    /// hub used to send it at once; now it stops before it and reads on once the Ack is out.
    @Test func aCatchUpReadNeverOvertakesTheAuthorsAck() {
        var hub = liveHub(at: 5)
        hub.noteCommitted(upTo: 6)  // another node's commit
        var effects = hub.takeEffects()
        #expect(effects.contains(.loadCatchUp(1, generation: 1, after: 5)))
        let accepted = hub.push(batch(1, by: author), from: 1)
        #expect(accepted)
        effects += hub.takeEffects()
        // The store commits the group as seq 7; the read sees it before the hub is answered.
        hub.caughtUp(1, generation: 1, .diffs([diff(6, by: other, batch: 1), diff(7, by: author, batch: 1)]))
        effects += hub.takeEffects()
        hub.catchUpSent(1, generation: 1)
        effects += hub.takeEffects()
        #expect(messages(in: effects, to: 1) == ["Diff 6"], "the author's own diff waits for its Ack")
        hub.committed([.committed(commit(7, by: author, batch: 1))])
        effects = hub.takeEffects()
        guard let reload = effects.firstIndex(of: .loadCatchUp(1, generation: 1, after: 6)),
              let ack = effects.firstIndex(of: .send(1, .ack(commit(7, by: author, batch: 1).ack))) else {
            Issue.record("\(effects)"); return
        }
        #expect(ack < reload)
        hub.caughtUp(1, generation: 1, .diffs([diff(7, by: author, batch: 1)]))
        effects += hub.takeEffects()
        #expect(messages(in: effects, to: 1) == ["Ack 1", "Diff 7"])
    }

    /// Regression (a node restart: a subscriber more than one read behind went live too early and
    /// missed the last commits for good). A new hub has heard of no commit; a full catch-up read
    /// (as many diffs as a read returns) reached past what it knew, and it took that read's end as
    /// the log's. Now a full read is always followed by another.
    @Test func aFullCatchUpReadIsFollowedByAnotherBeforeGoingLive() {
        var hub = HubCore<Int>(courseID: course, maxGroupBatches: 8, catchUpChunk: 2)
        hub.subscribe(1, sinceSeq: 1)
        #expect(hub.takeEffects() == [.loadCatchUp(1, generation: 1, after: 1)])
        hub.caughtUp(1, generation: 1, .diffs([diff(2, by: other, batch: 1), diff(3, by: other, batch: 2)]))
        _ = hub.takeEffects()
        hub.catchUpSent(1, generation: 1)
        #expect(hub.takeEffects() == [.loadCatchUp(1, generation: 1, after: 3)], "read on, not Subscribed at 3")
        hub.caughtUp(1, generation: 1, .diffs([diff(4, by: other, batch: 3)]))
        _ = hub.takeEffects()
        hub.catchUpSent(1, generation: 1)
        #expect(hub.takeEffects() == [.send(1, .subscribed(courseID: course, seq: 4))])
    }

    /// Regression (two nodes: a subscriber stayed three commits behind, live, for good). One
    /// subscriber's catch-up read saw commits of another node before their notifications
    /// arrived; the hub took that seq as known, so the notifications, when they came, were
    /// ignored, and the other live subscriber was never caught up. Now a read that reaches past
    /// what the hub knew catches up every live subscriber behind it.
    @Test func aReadThatFindsNewerCommitsCatchesUpTheOtherLiveSubscribers() {
        var hub = liveHub(at: 5)
        hub.subscribe(3, sinceSeq: 5)
        _ = hub.takeEffects()
        hub.caughtUp(3, generation: 3, .diffs([diff(6, by: other, batch: 1), diff(7, by: other, batch: 2)]))
        _ = hub.takeEffects()
        hub.catchUpSent(3, generation: 3)
        let effects = hub.takeEffects()
        #expect(effects.contains(.loadCatchUp(1, generation: 1, after: 5)))
        #expect(effects.contains(.loadCatchUp(2, generation: 2, after: 5)))
        #expect(effects.contains(.send(3, .subscribed(courseID: course, seq: 7))))
        // The late notifications change nothing more.
        hub.noteCommitted(upTo: 7)
        #expect(hub.takeEffects().isEmpty)
    }

    /// Spec §3.2/§5: every Push gets an Ack or a Reject; a Push to a course that does not exist
    /// is rejected (`UNKNOWN_COURSE`) and the connection stays up.
    @Test func aPushToAnUnknownCourseIsRejectedNotClosed() {
        var hub = HubCore<Int>(courseID: course, maxGroupBatches: 8, catchUpChunk: 100)
        let accepted = hub.push(batch(3, by: author), from: 1)
        #expect(accepted)
        _ = hub.takeEffects()
        hub.commitFailed(unknownCourse: true)
        let effects = hub.takeEffects()
        guard case .send(1, .reject(let reject)) = effects.first else { Issue.record("\(effects)"); return }
        #expect(reject.batchSeq == 3 && reject.rejection.code == .unknownCourse)
        #expect(!effects.contains { if case .close = $0 { true } else { false } })
        #expect(effects.contains(.release(1)))
    }

    /// The effects of answering a pushed batch with its stored ack for `seq` (a replay), on a hub
    /// whose subscribers are live at 5.
    func effectsOfReplay(committedAs seq: CourseSeq) -> [HubCore<Int>.Effect] {
        var hub = liveHub(at: 5)
        let accepted = hub.push(batch(1, by: author), from: 1)
        #expect(accepted)
        _ = hub.takeEffects()
        hub.committed([.replayed(commit(seq, by: author, batch: 1).ack)])
        return hub.takeEffects()
    }

    /// A commit whose answer was lost is answered later from its stored record (`replayed`): the
    /// hub never broadcast it, so its live subscribers are caught up from the store at once, after
    /// the Ack, rather than at the node's next check of the store.
    @Test func aReplayedAckPastTheHubsLastSeqCatchesLiveSubscribersUp() {
        let effects = effectsOfReplay(committedAs: 6)
        #expect(messages(in: effects, to: 1) == ["Ack 1"])
        #expect(effects.contains(.loadCatchUp(1, generation: 1, after: 5)))
        #expect(effects.contains(.loadCatchUp(2, generation: 2, after: 5)))
        let ack = effects.firstIndex(of: .send(1, .ack(commit(6, by: author, batch: 1).ack)))
        let read = effects.firstIndex(of: .loadCatchUp(1, generation: 1, after: 5))
        #expect(ack != nil && read != nil && ack! < read!, "the Ack goes before the catch-up")
    }

    /// A replay of an old batch (its seq long behind) starts no catch-up.
    @Test func aReplayedAckOfAnOldCommitStartsNoCatchUp() {
        #expect(!effectsOfReplay(committedAs: 3).contains { if case .loadCatchUp = $0 { true } else { false } })
    }
}
