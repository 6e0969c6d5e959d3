import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import SyncStorage

/// Every store call's work on a pooled connection, with a bound on how long it is waited for.
///
/// postgres-nio (1.33) can leave a query unanswered forever: a query written to a connection the
/// server has just closed (a terminated backend, a restart) is dropped by the channel without its
/// promise being failed, and the pool can hand out such a connection in the moment before it
/// hears of the close. Awaited directly, that query would hold its task and its pool slot for
/// good: a catch-up that never ends, and, once the slots are gone, a node that commits nothing.
/// So the work runs in a task of its own, and the caller stops waiting when the connection closes
/// or `timeout` passes (the connection is then closed, so whatever it was doing fails and the pool
/// replaces it). The abandoned task stays suspended; it holds no pool slot.
final class ConnectionGuard: Sendable {
    private struct Watched {
        var waiters: [Int: @Sendable () -> Void] = [:]
    }

    private let watched = NIOLockedValueBox<[ObjectIdentifier: Watched]>([:])
    private let nextWaiter = NIOLockedValueBox(0)
    let timeout: Duration

    init(timeout: Duration) {
        precondition(timeout > .zero)
        self.timeout = timeout
    }

    /// `body`'s result on `connection`, or ``StoreError/unavailable(_:detail:)`` once the connection
    /// closes or `timeout` passes, whichever is first.
    func run<T: Sendable>(_ operation: StoreOperation, on connection: PostgresConnection,
                          _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        if connection.isClosed { throw StoreError.unavailable(operation, detail: "the database connection closed") }
        let key = ObjectIdentifier(connection)
        let waiter = nextWaiter.withLockedValue { next in defer { next += 1 }; return next }
        let answer = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
        let take: @Sendable () -> CheckedContinuation<T, any Error>? = { answer.withLockedValue { state in defer { state = nil }; return state } }
        let timeout = timeout
        defer { watched.withLockedValue { _ = $0[key]?.waiters.removeValue(forKey: waiter) } }
        return try await withCheckedThrowingContinuation { continuation in
            answer.withLockedValue { $0 = continuation }
            let first = watched.withLockedValue { watched -> Bool in
                let first = watched[key] == nil
                watched[key, default: Watched()].waiters[waiter] = {
                    take()?.resume(throwing: StoreError.unavailable(operation, detail: "the database connection closed"))
                }
                return first
            }
            if first {
                // One callback per connection, not per call: a long-lived connection runs millions.
                connection.closeFuture.whenComplete { [watched] _ in
                    let waiters = watched.withLockedValue { $0.removeValue(forKey: key)?.waiters.values.map { $0 } ?? [] }
                    waiters.forEach { $0() }
                }
            }
            let deadline = Task {
                guard (try? await Task.sleep(for: timeout)) != nil, let waiting = take() else { return }
                waiting.resume(throwing: StoreError.unavailable(operation, detail: "no answer within \(timeout); the connection is closed"))
                try? await connection.close()
            }
            Task {
                let result: Result<T, any Error>
                do { result = .success(try await body(connection)) } catch { result = .failure(error) }
                deadline.cancel()
                take()?.resume(with: result)
            }
        }
    }
}
