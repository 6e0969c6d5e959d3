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
///
/// Over a ``PostgresPrimary`` the bound covers the wait for a pooled connection too (a pool whose
/// host is gone waits up to a minute before failing its requests), and a call still waiting when
/// the host in use changes is abandoned at once: its lease request is cancelled, and work that got
/// a connection from the old host after that point does nothing.
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
            watchClose(connection, waiter: waiter) {
                take()?.resume(throwing: StoreError.unavailable(operation, detail: "the database connection closed"))
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

    private struct Lease {
        var connection: PostgresConnection?
        var abandoned = false
    }

    /// `body`'s result on a connection of `primary`'s host in use, or
    /// ``StoreError/unavailable(_:detail:)`` once `timeout` passes (from the call, not from the
    /// lease), the connection closes, or another host is taken into use, whichever is first.
    func run<T: Sendable>(_ operation: StoreOperation, primary: PostgresPrimary,
                          _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let (client, generation) = primary.lease
        let waiter = nextWaiter.withLockedValue { next in defer { next += 1 }; return next }
        let answer = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
        let take: @Sendable () -> CheckedContinuation<T, any Error>? = { answer.withLockedValue { state in defer { state = nil }; return state } }
        let lease = NIOLockedValueBox(Lease())
        let work = NIOLockedValueBox<Task<Void, Never>?>(nil)
        let primaryWatch = NIOLockedValueBox<Int?>(nil)
        let timeout = timeout
        defer {
            if let key = lease.withLockedValue({ $0.connection.map(ObjectIdentifier.init) }) {
                watched.withLockedValue { _ = $0[key]?.waiters.removeValue(forKey: waiter) }
            }
            if let key = primaryWatch.withLockedValue({ $0 }) { primary.unwatch(key) }
        }
        return try await withCheckedThrowingContinuation { continuation in
            answer.withLockedValue { $0 = continuation }
            let abandon: @Sendable (String) -> Void = { reason in
                guard let waiting = take() else { return }
                waiting.resume(throwing: StoreError.unavailable(operation, detail: reason))
                let connection = lease.withLockedValue { lease in lease.abandoned = true; return lease.connection }
                work.withLockedValue { $0 }?.cancel()
                if let connection { Task { try? await connection.close() } }
            }
            let deadline = Task {
                guard (try? await Task.sleep(for: timeout)) != nil else { return }
                abandon("no answer within \(timeout); the connection is closed")
            }
            if primary.isReplicated {
                let key = primary.watch(generation: generation) { abandon("the database's primary changed") }
                primaryWatch.withLockedValue { $0 = key }
                if key == nil { abandon("the database's primary changed") }
            }
            let task = Task {
                let result: Result<T, any Error>
                do {
                    result = .success(try await client.withConnection { connection in
                        let proceed = lease.withLockedValue { lease -> Bool in
                            guard !lease.abandoned else { return false }
                            lease.connection = connection
                            return true
                        }
                        guard proceed, !connection.isClosed else { throw StoreError.unavailable(operation, detail: "the database connection closed") }
                        self.watchClose(connection, waiter: waiter) {
                            take()?.resume(throwing: StoreError.unavailable(operation, detail: "the database connection closed"))
                        }
                        return try await body(connection)
                    })
                } catch {
                    result = .failure(error)
                }
                deadline.cancel()
                take()?.resume(with: result)
            }
            work.withLockedValue { $0 = task }
        }
    }

    /// Calls `closed` when `connection` closes (once), until the waiter is removed.
    private func watchClose(_ connection: PostgresConnection, waiter: Int, _ closed: @escaping @Sendable () -> Void) {
        let key = ObjectIdentifier(connection)
        let first = watched.withLockedValue { watched -> Bool in
            let first = watched[key] == nil
            watched[key, default: Watched()].waiters[waiter] = closed
            return first
        }
        if first {
            // One callback per connection, not per call: a long-lived connection runs millions.
            connection.closeFuture.whenComplete { [watched] _ in
                let waiters = watched.withLockedValue { $0.removeValue(forKey: key)?.waiters.values.map { $0 } ?? [] }
                waiters.forEach { $0() }
            }
        }
    }
}
