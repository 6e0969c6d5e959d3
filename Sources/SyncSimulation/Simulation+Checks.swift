import SyncClient
import SyncModel
import SyncServer
import SyncStorage

extension Simulation {
    func checkFinalState() throws {
        let truth = database.state
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
                let origin = seq >= 1 && Int(seq) <= database.history.count ? database.history[Int(seq) - 1].origin : nil
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
        var replayed = database.initial
        for diff in database.history {
            if !origins.insert(BatchKey(client: diff.origin.clientID, batchSeq: diff.origin.batchSeq)).inserted {
                violation("batch \(diff.origin.batchSeq) of \(diff.origin.clientID) was committed twice")
            }
            replayed.apply(diff)
        }
        if replayed != truth { violation("the change log replayed from zero does not rebuild the store") }
        switch database.storedCourse(courseID) {
        case .success(let stored?) where stored != truth:
            violation("the database's rows differ from the change log replayed: \(Self.difference(stored, truth))")
        case .success(nil): violation("the database lost the course")
        case .failure(let error): violation("the database's rows could not be read: \(error)")
        case .success: break
        }
        // Every push a hub took was answered on its connection, or the connection closed.
        for (id, connection) in connections.sorted(by: { $0.key < $1.key }) where !connection.unanswered.isEmpty {
            violation("#\(id) of \(clients[connection.client].name) has unanswered pushes: batches \(connection.unanswered.keys.sorted())")
        }
    }

    /// Once quiet, every client sees exactly the clients that announced themselves, each as it
    /// last announced, whichever node either is connected to.
    func checkPresence() {
        var expected: [ClientID: PresencePeer] = [:]
        for client in clients {
            guard let announcement = client.core.announcement else { continue }
            expected[client.core.clientID] = PresencePeer(clientID: client.core.clientID, user: "sim", name: announcement.name,
                                                          color: announcement.color, focus: announcement.focus)
        }
        for client in clients where client.core.peers != expected {
            let missing = expected.keys.filter { client.core.peers[$0] == nil }.count
            let extra = client.core.peers.keys.filter { expected[$0] == nil }.count
            let stale = expected.filter { client.core.peers[$0.key].map { $0 != expected[$0.clientID] } ?? false }.count
            violation("\(client.name) sees \(client.core.peers.count) present (\(missing) missing, \(extra) not there, \(stale) out of date); \(expected.count) announced")
        }
    }
}
