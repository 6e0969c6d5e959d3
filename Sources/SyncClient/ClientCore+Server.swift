import SyncModel
import SyncWire

/// What the server says, and what the engine makes of it.
extension ClientCore {
    /// Messages from the server that arrived together (one socket read), received at `now`: one
    /// step. Consecutive diffs are applied together and the pending batches replayed once after
    /// them, so a client that falls behind catches up in fewer, larger steps.
    package mutating func received(_ messages: some Sequence<WireMessage>, now: Moment) {
        for message in messages {
            if case .diff(let diff) = message, diff.courseID == courseID {
                arrived(now: now)
                held.append(.diff(diff))
            } else {
                received(message, now: now)
            }
        }
        releaseHeld()
    }

    /// A message from the server, received at `now`.
    package mutating func received(_ message: WireMessage, now: Moment) {
        arrived(now: now)
        // Diffs held back by the batch form of `received` first, as if each had been released on arrival.
        if !held.isEmpty { releaseHeld() }
        switch message {
        case .welcome(let welcome):
            guard phase == .awaitingWelcome else { return unexpected(message) }
            phase = .catchingUp
            welcomed = true
            failedAttempts = 0
            handshakeDeadline = nil
            // The server's interval governs both ends (protocol §8); a server that names none gets the default.
            let interval = welcome.heartbeatIntervalMs > 0 ? Duration.milliseconds(Int64(welcome.heartbeatIntervalMs)) : .seconds(15)
            heartbeat = Heartbeat(interval: interval, now: now)
            if welcome.maxOpsPerBatch > 0 { maxOpsPerBatch = min(Limits.maxOpsPerBatch, Int(welcome.maxOpsPerBatch)) }
            actions.append(.send(.subscribe(courseID: courseID, sinceSeq: confirmed.seq, presence: true)))
            announceAfterSubscribing()
            actions.append(.emit(.connection(.catchingUp)))
            // A little under the server's rates: a burst of one second's worth, not the two it allows.
            pushPace = welcome.maxPushesPerSecond > 0
                ? TokenBucket(rate: Int(welcome.maxPushesPerSecond), burst: Int(welcome.maxPushesPerSecond), now: now) : nil
            bytePace = welcome.maxBytesPerSecond > 0
                ? TokenBucket(rate: Int(welcome.maxBytesPerSecond), burst: Int(welcome.maxBytesPerSecond), now: now) : nil
            // Resend every unanswered batch, in order, before any new one (exactly-once makes it
            // safe), at the server's pace.
            sendUnsent(now: now)
        case .error(let error):
            if error.code.isPermanentRefusal && !(error.code == .tokenExpired && renewsTokens) {
                stopped = true
                actions.append(.stop(.refused(code: error.code, message: error.message)))
            } else {
                // RATE_LIMITED (and maybe LIMIT_EXCEEDED) say how long to stay away: the next
                // attempt waits at least that long.
                serverRetryAfter = error.retryAfterMs.map { .milliseconds(Int64($0)) }
                actions.append(.reconnect(reason: "\(error.code): \(error.message)"))
            }
        case .subscribed(let course, let seq) where course == courseID:
            phase = .live
            actions.append(.emit(.connection(.live(seq: seq))))
        case .snapshot(let part) where part.course.id == courseID:
            snapshotParts.append(part)
            if part.last {
                held.append(.snapshot(snapshotParts))
                snapshotParts = []
                releaseHeld()
            }
        case .diff(let diff) where diff.courseID == courseID:
            held.append(.diff(diff))
            releaseHeld()
        case .ack(let ack) where ack.courseID == courseID:
            acknowledge(ack)
        case .reject(let reject) where reject.courseID == courseID:
            roll(back: reject.batchSeq, reject.rejection)
        case .progress(let progress) where progress.courseID == courseID:
            actions.append(.emit(.progress(batchSeq: progress.batchSeq, done: Int(progress.done), total: Int(progress.total))))
        case .presence(let change) where change.courseID == courseID:
            presenceChanged(change)
        case .ping(let nonce):
            actions.append(.send(.pong(nonce: nonce)))
        case .pong, .subscribed, .snapshot, .diff, .ack, .reject, .progress, .presence:
            break
        case .hello, .subscribe, .unsubscribe, .push, .setPresence:
            unexpected(message)
        }
    }

    /// A message arrived at `now`: the clock and the heartbeat hear of it.
    private mutating func arrived(now: Moment) {
        lastNow = max(lastNow, now)
        heartbeat?.received(now: now)
    }

    private mutating func unexpected(_ message: WireMessage) {
        actions.append(.reconnect(reason: "unexpected message from the server: \(message)"))
    }

    /// Applies held catch-up material in order, as far as possible.
    ///
    /// After a reconnect the catch-up can deliver the diff of one of our batches before the resend
    /// brings its ack. Applied then, the batch's rows would be confirmed under IDs we cannot map
    /// to its temp IDs, so later batches using them could not be replayed. So a diff of our own
    /// unacknowledged batch, and everything after it, waits for that ack (it always comes: every
    /// unanswered batch is resent on connecting). A snapshot likewise waits until every sealed
    /// batch is answered, since it may contain any of them: sent on this connection or, not yet
    /// resent (paced), committed on an earlier one. Nothing held is persisted: the cursor stays,
    /// and a reconnect fetches it again.
    ///
    /// Diffs released together are applied one after another and the pending batches replayed
    /// once after the last (the replays are unwound for the first and stay so until then).
    private mutating func releaseHeld() {
        var arrived: TouchedIDs?
        defer { if let arrived { rebase(arrived: arrived) } }
        while !stopped, let next = held.first {
            switch next {
            case .diff(let diff):
                if diff.origin.clientID == clientID, let index = index(of: diff.origin.batchSeq), pending[index].ack == nil { return }
                held.removeFirst()
                if let changes = apply(diff) { arrived = arrived ?? TouchedIDs(); arrived!.formUnion(changes) }
            case .snapshot(let parts):
                if pending.contains(where: { $0.ack == nil && $0.batch.batchSeq != openBatch }) { return }
                held.removeFirst()
                applySnapshot(parts)  // rebuilds every row: what the diffs before it touched included
                arrived = nil
            }
        }
    }

    /// Applies `diff` to the confirmed state and the unwound visible state; returns its changes,
    /// whose rows the caller refreshes after replaying the pending batches (nil if nothing was applied).
    private mutating func apply(_ diff: Diff) -> ChangeSet? {
        if diff.seq <= confirmed.seq { return nil }  // already applied (a resubscribe overlapping the stream)
        guard diff.seq == confirmed.seq + 1 else {
            actions.append(.reconnect(reason: "gap in the diff stream: at seq \(confirmed.seq), received \(diff.seq)"))
            return nil
        }
        // Refuse a diff that would break the state rather than store it (the replica logs diffs
        // as they come; its tables no longer check them).
        let problems = confirmed.problems(applying: diff)
        guard problems.isEmpty else {
            stopped = true
            actions.append(.stop(.protocolViolation("an inconsistent diff at seq \(diff.seq): \(problems.prefix(3))")))
            return nil
        }
        // Both states take the diff in place (the visible one without its replays, so equal to
        // the confirmed one), instead of the visible state being copied from the confirmed one.
        unwind()
        confirmed.apply(diff)
        visible.apply(diff)
        write.confirmed.append(.diff(diff))
        loggedRows += diff.changes.rowCount
        if diff.origin.clientID != clientID || index(of: diff.origin.batchSeq) == nil {
            stats.remoteDiffs += 1
            actions.append(.emit(.remoteChange(seq: diff.seq, origin: diff.origin.clientID)))
        }
        finalizeCommitted()
        return diff.changes
    }

    private mutating func applySnapshot(_ parts: [SnapshotPart]) {
        guard parts.enumerated().allSatisfy({ $0.offset == Int($0.element.part) }) else {
            return actions.append(.reconnect(reason: "snapshot parts out of order"))
        }
        let snapshot = CourseState(parts: parts)
        // A snapshot replaces everything: refuse one that would break the replica rather than crash on it.
        let violations = snapshot.invariantViolations()
        guard violations.isEmpty else {
            stopped = true
            return actions.append(.stop(.protocolViolation("an inconsistent snapshot: \(violations.prefix(3))")))
        }
        confirmed = snapshot
        visible = snapshot
        replayTemps = [:]
        for index in pending.indices { pending[index].replay = nil; pending[index].replayedTemps = [] }
        stats.snapshots += 1
        write.confirmed.append(.snapshot(confirmed))
        loggedRows = 0  // a snapshot is a new base
        finalizeCommitted()
        rebase(arrived: nil)
    }

    private mutating func acknowledge(_ ack: Ack) {
        guard let index = index(of: ack.batchSeq), pending[index].ack == nil else { return }
        pending[index].ack = ack
        stats.acks += 1
        if pending[index].predictedNotes == ack.notes.count { stats.predictionsMatched += 1 } else { stats.predictionsMissed += 1 }
        var ids: [LocalKey: EntityID] = [:]
        for (temp, id) in ack.idMap { ids[LocalKey(.provisional(temp))] = id }
        actions.append(.emit(.acked(batchSeq: ack.batchSeq, seq: ack.seq, ids: ids)))
        for note in ack.notes {
            stats.resolutionNotes += 1
            actions.append(.emit(.resolution(batchSeq: ack.batchSeq, note: note)))
        }
        if ack.seq <= confirmed.seq {
            unwind()
            finalizeCommitted()
            rebase()
        }
        releaseHeld()
    }

    /// Drops the rejected batch and every later batch that used rows it created, then replays.
    private mutating func roll(back batchSeq: BatchSeq, _ rejection: Rejection) {
        guard let index = index(of: batchSeq) else { return }  // a dependent batch already dropped
        stats.rejections += 1
        stats.predictionsMissed += 1
        var lost = Set(pending[index].batch.ops.flatMap(\.createdTemps))
        var dropped = [pending[index].batch]
        unwind()
        var kept = Array(pending[..<index])
        for later in pending[(index + 1)...] {
            if !later.batch.mentionedTemps.isDisjoint(with: lost) {
                lost.formUnion(later.batch.ops.flatMap(\.createdTemps))
                dropped.append(later.batch)
            } else {
                kept.append(later)
            }
        }
        pending = kept
        for batch in dropped {
            write.deletedBatches.insert(batch.batchSeq)
            write.batches[batch.batchSeq] = nil
            if batch.batchSeq == openBatch { openBatch = nil; undoHistory.openInverses = []; undoHistory.openKind = .edit }
            undoHistory.droppedBatch(batch.batchSeq)
        }
        let edits = dropped.flatMap { batch in batch.ops.map { DroppedEdit(batchSeq: batch.batchSeq, operation: $0) } }
        stats.droppedEdits += edits.count
        rebase()
        actions.append(.emit(.rejected(Rejected(batchSeq: batchSeq, code: rejection.code, opIndex: rejection.opIndex,
                                                message: rejection.message, droppedEdits: edits))))
        releaseHeld()
    }

    /// Retires every batch whose ack has arrived and whose diff is in the confirmed state: its
    /// temps become known, its rows keep their local keys, later batches refer to real IDs.
    private mutating func finalizeCommitted() {
        while let index = pending.firstIndex(where: { $0.ack.map { $0.seq <= confirmed.seq } ?? false }) {
            let ack = pending.remove(at: index).ack!
            write.deletedBatches.insert(ack.batchSeq)
            write.batches[ack.batchSeq] = nil
            let merged = Set(ack.notes.compactMap { if case .merged(_, let temp, _) = $0 { temp } else { nil } })
            for (temp, id) in ack.idMap {
                knownTemps[temp] = id
                write.temps[temp] = id
                if !merged.contains(temp) && localKeys[id] == nil {
                    localKeys[id] = LocalKey(.provisional(temp))
                    write.localKeys[id] = localKeys[id]
                }
            }
            for later in pending.indices {
                let batch = pending[later].batch
                let rewritten = batch.ops.map { $0.mapRefs { ref in
                    if case .temp(let temp) = ref, let id = ack.idMap[temp] { .id(id) } else { ref }
                } }
                if rewritten != batch.ops {
                    pending[later].batch.ops = rewritten
                    write.batches[batch.batchSeq] = pending[later].batch
                }
            }
        }
    }
}
