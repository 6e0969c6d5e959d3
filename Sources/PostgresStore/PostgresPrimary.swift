import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import ServiceLifecycle
import SyncStorage

/// The database's connection pools, one per host of a replicated database, and which of them the
/// store uses: the primary (with `target_session_attrs=read-write`), else the first that answers.
///
/// postgres-nio's pool connects to one host. With several, the store's calls go to the pool of
/// the host found last; any failed call makes the hosts be asked again (``suspect()``): each, in
/// the URL's order, on a connection of its own, `SELECT pg_is_in_recovery()`. When a standby has
/// been promoted, the first host that answers "not in recovery" becomes the one used, and every
/// call still waiting on the old host's pool is abandoned at once (failed as unavailable, so that
/// the store engine tries it again on the new host and resolves any commit whose outcome it could
/// not know). Until a writable host is found, calls fail and are retried as in any outage.
public final class PostgresPrimary: Sendable, Service {
    /// One pool per host, in the URL's order.
    public let pools: [PostgresClient]
    let targetSession: PostgresURL.TargetSession
    private let probes: [PostgresConnection.Configuration]
    private let owned: Bool
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var current = 0
        /// +1 each time the host in use changes.
        var generation = 0
        var locating = false
        var running = false
        var stopped = false
        var nextWaiter = 0
        /// Calls waiting on the host of a generation, to be abandoned when it changes.
        var waiters: [Int: (generation: Int, abandon: @Sendable () -> Void)] = [:]
    }

    /// One pool, run elsewhere: one host, nothing to locate.
    public init(client: PostgresClient, logger: Logger) {
        pools = [client]
        probes = []
        targetSession = .any
        owned = false
        self.logger = logger
    }

    /// A pool per host of `target`, run by ``run()``.
    public init(target: PostgresURL.Target, logger: Logger) throws {
        pools = target.hosts.map { PostgresClient(configuration: $0, backgroundLogger: logger) }
        probes = try target.hosts.map { try Self.probeConfiguration($0, tls: target.tls) }
        targetSession = target.targetSession
        owned = true
        self.logger = logger
    }

    /// The pool of the host in use.
    public var client: PostgresClient { pools[state.withLockedValue { $0.current }] }

    /// The host in use and its generation.
    var lease: (client: PostgresClient, generation: Int) {
        let (current, generation) = state.withLockedValue { ($0.current, $0.generation) }
        return (pools[current], generation)
    }

    /// Whether there is a choice of host (else no call is ever abandoned for a change of host).
    var isReplicated: Bool { pools.count > 1 }

    /// Runs the pools this object made (none when it was given one), until cancelled or shut down.
    public func run() async {
        guard owned else { return }
        await withDiscardingTaskGroup { group in
            for pool in pools { group.addTask { await pool.run() } }
            state.withLockedValue { $0.running = true }
        }
        state.withLockedValue { $0.stopped = true }
    }

    /// Returns once ``run()`` has started the pools (at once for pools run elsewhere): a pool
    /// leased from before its `run()` began works, but logs a warning saying so.
    private func started() async {
        guard owned else { return }
        while !state.withLockedValue({ $0.running }) { try? await Task.sleep(for: .milliseconds(1)) }
        // The pools' run() begin in the tasks just added.
        try? await Task.sleep(for: .milliseconds(5))
    }

    // MARK: - Abandoning calls on a host that is no longer used

    /// Registers `abandon`, called once if the host in use changes from `generation`'s; returns
    /// a key for ``unwatch(_:)``, or nil when it changed already (`abandon` is then not called).
    func watch(generation: Int, _ abandon: @escaping @Sendable () -> Void) -> Int? {
        state.withLockedValue { state in
            guard state.generation == generation else { return nil }
            defer { state.nextWaiter += 1 }
            state.waiters[state.nextWaiter] = (generation, abandon)
            return state.nextWaiter
        }
    }

    func unwatch(_ key: Int) {
        _ = state.withLockedValue { $0.waiters.removeValue(forKey: key) }
    }

    // MARK: - Locating the primary

    /// Asks the hosts again, in the background, unless that is under way (or there is one host).
    public func suspect() {
        guard isReplicated else { return }
        let start = state.withLockedValue { state -> Bool in
            guard !state.locating, !state.stopped else { return false }
            state.locating = true
            return true
        }
        guard start else { return }
        Task {
            var pause = Duration.milliseconds(100)
            while true {
                if (try? await locateOnce()) != nil || state.withLockedValue({ $0.stopped }) { break }
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(1))
            }
            state.withLockedValue { $0.locating = false }
        }
    }

    /// Waits for ``run()`` to start the pools, then finds the host to use, asking each in order
    /// until one qualifies, for up to `patience`. Call it before the first call on the pools.
    /// - Throws: ``StoreError/unavailable(_:detail:)`` saying what each host answered.
    public func locate(patience: Duration = .seconds(30)) async throws {
        await started()
        guard isReplicated else { return }
        let deadline = ContinuousClock.now + patience
        while true {
            do {
                try await locateOnce()
                return
            } catch {
                if ContinuousClock.now >= deadline { throw error }
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// One round over the hosts: the first that qualifies is used from now on.
    private func locateOnce() async throws {
        var answers: [String] = []
        for index in pools.indices {
            let endpoint = "\(probes[index].host ?? "?"):\(probes[index].port ?? 5432)"
            switch await probe(index) {
            case .success(true):
                use(index, endpoint: endpoint)
                return
            case .success(false):
                answers.append("\(endpoint): a standby (in recovery)")
            case .failure(let error):
                answers.append("\(endpoint): \(PostgresBackend.describe(error))")
            }
        }
        throw StoreError.unavailable(.locate, detail: "no host accepts writes: " + answers.joined(separator: "; "))
    }

    private func use(_ index: Int, endpoint: String) {
        let abandoned = state.withLockedValue { state -> [@Sendable () -> Void]? in
            guard state.current != index else { return nil }
            state.current = index
            state.generation += 1
            let waiting = state.waiters.values.map(\.abandon)
            state.waiters = [:]
            return waiting
        }
        guard let abandoned else { return }
        logger.warning("the database's primary is now \(endpoint)", metadata: ["abandoned_calls": "\(abandoned.count)"])
        abandoned.forEach { $0() }
    }

    /// Whether host `index` qualifies: it answers and, when writes are needed, is not in recovery;
    /// a failure if it does not answer within 5 s (a host whose network holds every packet
    /// neither refuses nor answers, and must not hold up the search for the primary).
    private func probe(_ index: Int) async -> Result<Bool, any Error> {
        let answer = NIOLockedValueBox<CheckedContinuation<Result<Bool, any Error>, Never>?>(nil)
        let take: @Sendable () -> CheckedContinuation<Result<Bool, any Error>, Never>? = {
            answer.withLockedValue { waiting in defer { waiting = nil }; return waiting }
        }
        return await withCheckedContinuation { continuation in
            answer.withLockedValue { $0 = continuation }
            let work = Task {
                let result = await self.ask(index)
                take()?.resume(returning: result)
            }
            Task {
                try? await Task.sleep(for: .seconds(5))
                guard let waiting = take() else { return }
                waiting.resume(returning: .failure(StoreError.unavailable(.locate, detail: "no answer within 5 s")))
                work.cancel()
            }
        }
    }

    /// Connects to host `index` and asks it whether it is in recovery (when that matters).
    private func ask(_ index: Int) async -> Result<Bool, any Error> {
        do {
            let connection = try await PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.any(), configuration: probes[index],
                                                                  id: index, logger: logger)
            let guardTimeout = ConnectionGuard(timeout: .seconds(5))
            let answer = await Result { () async throws -> Bool in
                guard targetSession == .readWrite else { return true }
                return try await guardTimeout.run(.locate, on: connection) { connection in
                    for try await inRecovery in try await connection.query("SELECT pg_is_in_recovery()", logger: self.logger).decode(Bool.self) {
                        return !inRecovery
                    }
                    return false
                }
            }
            try? await connection.close()
            return answer
        } catch {
            return .failure(error)
        }
    }

    private static func probeConfiguration(_ host: PostgresClient.Configuration, tls: PostgresURL.SSLMode) throws -> PostgresConnection.Configuration {
        let connectionTLS: PostgresConnection.Configuration.TLS = switch tls {
        case .disable: .disable
        case .prefer(let configuration): .prefer(try NIOSSLContext(configuration: configuration))
        case .require(let configuration): .require(try NIOSSLContext(configuration: configuration))
        }
        var configuration = PostgresConnection.Configuration(host: host.host ?? "localhost", port: host.port ?? 5432, username: host.username,
                                                             password: host.password, database: host.database, tls: connectionTLS)
        configuration.options.connectTimeout = .seconds(Int64(min(host.options.connectTimeout, .seconds(5)).components.seconds))
        return configuration
    }
}

extension Result where Failure == any Error {
    init(_ body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
