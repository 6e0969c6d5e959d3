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
            if client.core.visible.chapters.keys.contains(where: \.isProvisional) || client.core.visible.videos.keys.contains(where: \.isProvisional) {
                violation("\(client.name) still shows a provisional ID")
            }
            for problem in try client.replica.differences(from: truth) { violation("\(client.name)'s replica file: \(problem)") }
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
