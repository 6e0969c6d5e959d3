import SyncClient
import SyncModel
import SyncServer

extension Simulation {
    func checkFinalState() throws {
        let truth = store.state
        for client in clients {
            if client.core.visible != truth { violation("\(client.name)'s visible state differs from the server's") }
            if client.core.confirmed != truth { violation("\(client.name)'s confirmed state differs from the server's") }
            if !client.core.pendingBatches.isEmpty { violation("\(client.name) still has \(client.core.pendingBatches.count) pending batches") }
            if truth.chapters.keys.contains(where: \.isProvisional) || client.core.visible.videos.keys.contains(where: \.isProvisional) {
                violation("\(client.name) still shows a provisional ID")
            }
            guard let stored = try client.replica.load(courseID: courseID) else { violation("\(client.name)'s replica is empty"); continue }
            if stored.confirmed != truth || !stored.pending.isEmpty { violation("\(client.name)'s replica file differs from the server") }
            let outline = try client.replica.outline()
            let rows = outline.chapters.map { "\($0.chapter.id.map(\.description) ?? "?") \($0.chapter.title) \($0.videos.map { "\($0.id.map(\.description) ?? "?")@\($0.position)" })" }
            let expected = truth.orderedChapters.map { chapter in "\(chapter.id) \(chapter.title) \(truth.videos(in: chapter.id).map { "\($0.id)@\($0.position)" })" }
            if rows != expected { violation("\(client.name)'s visible rows differ from the server's") }
            if outline.chapters.contains(where: { $0.chapter.status != .confirmed || $0.videos.contains { $0.status != .confirmed } }) {
                violation("\(client.name) has rows still marked pending")
            }
            // Every acknowledged batch is the commit its ack names: its effect is in the log at
            // that seq, so the state (the log replayed, checked below) holds it unless a later
            // commit overrode it.
            for (batchSeq, seq) in client.ackedSeqs {
                let origin = seq >= 1 && Int(seq) <= store.history.count ? store.history[Int(seq) - 1].origin : nil
                if origin != BatchOrigin(clientID: client.core.clientID, batchSeq: batchSeq) {
                    violation("\(client.name)'s batch \(batchSeq) was acked as seq \(seq), which is another commit")
                }
            }
            // Every batch ended exactly once: acknowledged, or rolled back.
            for seq in client.created {
                let acked = client.acked[seq] ?? 0
                let dropped = client.dropped[seq] ?? 0
                if acked + dropped != 1 { violation("\(client.name)'s batch \(seq) was acked \(acked)× and rolled back \(dropped)×") }
            }
        }
        var origins = Set<BatchKey>()
        var replayed = store.initial
        for diff in store.history {
            if !origins.insert(BatchKey(client: diff.origin.clientID, batchSeq: diff.origin.batchSeq)).inserted {
                violation("batch \(diff.origin.batchSeq) of \(diff.origin.clientID) was committed twice")
            }
            replayed.apply(diff)
        }
        if replayed != truth { violation("the change log replayed from zero does not rebuild the store") }
    }
}
