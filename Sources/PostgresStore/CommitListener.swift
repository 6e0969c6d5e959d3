import ServiceLifecycle
import SyncModel
import SyncServer

/// Tells a server node about commits made by other nodes sharing the database (LISTEN/NOTIFY), so
/// its subscribers get those diffs too. Run it in the node's `ServiceGroup`, after the server.
///
/// A notification lost while the listening connection is re-established only delays delivery:
/// the next commit on the course, from any node, triggers a catch-up from the change log.
public struct CommitListener: Service {
    let store: PostgresStore
    let server: SyncServer

    public init(store: PostgresStore, server: SyncServer) {
        self.store = store
        self.server = server
    }

    public func run() async throws {
        let server = server
        await cancelWhenGracefulShutdown {
            await store.listenForCommits { courseID, seq in
                await server.noteCommitted(courseID: courseID, upTo: seq)
            }
        }
    }
}
