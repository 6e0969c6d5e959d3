import Logging
import ServiceLifecycle
import SyncModel
import SyncStorage
import SyncWire

/// The node-to-node half of a shared-store deployment: hears every commit announced by the store
/// (PostgreSQL's LISTEN/NOTIFY) and tells this node's course hubs, so their subscribers get the other
/// nodes' commits. Notifications can be lost (a listener whose connection dropped hears nothing
/// of what was committed meanwhile), so, following ``CommitWatch``, the node also reads every
/// active course's seq from the store whenever the LISTEN is (re)established and every
/// `checkInterval`: a lost notification delays a subscriber by at most that long.
///
/// It also carries presence between the nodes (the `coursesync_presence` channel): this node's
/// relays out, the others' in.
public struct CommitListener: Service {
    let store: any CommitNotifications
    let server: SyncServer
    let checkInterval: Duration
    let retryDelay: Duration

    public init(store: any CommitNotifications, server: SyncServer, checkInterval: Duration = .seconds(5), retryDelay: Duration = .seconds(1)) {
        self.store = store
        self.server = server
        self.checkInterval = checkInterval
        self.retryDelay = retryDelay
    }

    public func run() async throws {
        let (server, store, checkInterval, retryDelay) = (self.server, self.store, self.checkInterval, self.retryDelay)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    await store.listenForCommits(retryDelay: retryDelay, onListening: { await server.checkStore() }) { courseID, seq in
                        await server.noteCommitted(courseID: courseID, upTo: seq)
                    }
                }
                // Presence relays, both ways (best-effort: a relay that cannot be sent is
                // dropped; the next refresh repeats what it said).
                group.addTask {
                    await store.listenForPresence(retryDelay: retryDelay) { text in
                        if let relay = PresenceRelay(text: text) { await server.notePresence(relay) }
                    }
                }
                group.addTask {
                    for await relay in server.presenceRelays {
                        for piece in relay.pieces() { try? await store.publishPresence(piece.text) }
                    }
                }
                group.addTask {
                    let clock = MomentClock()
                    var watch = CommitWatch(checkInterval: checkInterval, now: clock.now())
                    while !Task.isCancelled {
                        do { try await clock.sleep(until: watch.nextCheck) } catch { return }
                        if watch.handleTimeout(now: clock.now()) { await server.checkStore() }
                    }
                }
            }
        }
    }
}
