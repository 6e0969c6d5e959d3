import ArgumentParser
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import PostgresStore
import SQLiteStore
import SyncClient
import SyncModel
import SyncServer
import SyncStorage

struct Stress: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Many real clients against real server nodes over loopback TCP, optionally killing them; then check every replica.",
        discussion: """
        Runs `coursesync serve` as child processes (on the SQLite store in a scratch directory, or \
        --nodes of them on --postgres URL), seeds a course, and starts N SyncClients spread over the \
        nodes, each with its own replica file, making random edits on that one course. With \
        --kill-every, a node (any of them) is killed with SIGKILL at that interval and restarted on the \
        same port. Every client's frames go through an ordering checker (each commit once, in order, \
        no gap; a batch's Ack before its Diff). At the end an independent checker reopens every replica \
        file and compares it with the store row for row, and prints the verdict. With --db-faults (and \
        --postgres), every database backend but the checker's own is terminated \
        (pg_terminate_backend, what a failover or an idle-session killer does) at random moments too.
        """
    )

    @Option(help: "Clients (1 to 200).") var clients = 32
    @Option(help: "Edits per client.") var edits = 200
    @Option(help: "Edit for this many seconds instead of a number of edits.") var seconds: Double?
    @Option(help: "Kill (SIGKILL) and restart a server node every this many seconds while clients edit.") var killEvery: Double?
    @Option(help: "Server nodes sharing the store (more than one needs --postgres); clients are spread over them.") var nodes = 1
    @Option(name: .customLong("postgres"), help: ArgumentHelp("Use PostgreSQL (a migrated database) instead of SQLite.", valueName: "url"))
    var postgresURL: String?
    @Flag(help: "Also terminate the nodes' PostgreSQL backends at random moments, 0.5 to 3 s apart (needs --postgres).") var dbFaults = false
    @Option(help: "Random seed for the clients' choices (default: random).") var seed: UInt64?
    @Option(help: "Seconds to wait for everything to settle after the edits.") var settleTimeout: Double = 120

    func validate() throws {
        guard (1...200).contains(clients) else { throw ValidationError("--clients must be between 1 and 200") }
        guard (1...100_000).contains(edits) else { throw ValidationError("--edits must be between 1 and 100000") }
        if let seconds { guard seconds > 0, seconds <= 3600 else { throw ValidationError("--seconds must be in (0, 3600]") } }
        if let killEvery { guard killEvery >= 0.2 else { throw ValidationError("--kill-every must be at least 0.2 seconds") } }
        if let postgresURL { _ = try PostgresURL.configuration(postgresURL) }
        guard (1...8).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 8") }
        if nodes > 1, postgresURL == nil { throw ValidationError("--nodes \(nodes) needs --postgres URL: the SQLite store serves one node") }
        if dbFaults, postgresURL == nil { throw ValidationError("--db-faults needs --postgres URL") }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.stress")
        logger.logLevel = .critical
        let seed = seed ?? UInt64.random(in: 0 ... .max)
        try await withChildServerStore("coursesync-stress", postgresURL: postgresURL, logger: logger) { setup in
            var terminate: (@Sendable () async throws -> Int)?
            if dbFaults, let client = setup.postgres { terminate = { [logger] in try await Stress.terminateBackends(client, logger: logger) } }
            try await run(setup, seed: seed, logger: logger, terminateBackends: terminate)
        }
    }

    /// Terminates every client backend on the database but the caller's; how many.
    static func terminateBackends(_ client: PostgresClient, logger: Logger) async throws -> Int {
        let rows = try await client.query("""
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
            """, logger: logger)
        var terminated = 0
        for try await ok in rows.decode(Bool.self) where ok { terminated += 1 }
        return terminated
    }

    private func run(_ setup: ChildServerSetup, seed: UInt64, logger: Logger,
                     terminateBackends: (@Sendable () async throws -> Int)? = nil) async throws {
        let store = setup.store, folder = setup.folder, authority = setup.authority
        var servers: [ServerProcess] = []
        for node in 0..<nodes {
            servers.append(try setup.server("server\(node)"))
            try await servers[node].start()
        }
        defer { servers.forEach { $0.stop() } }
        let courseID = try await BenchFixture.make(store: store, writers: 4).courseID
        say("coursesync stress — \(clients) clients × \(seconds.map { "\($0) s" } ?? "\(edits) edits") on one course, " +
            "\(nodes == 1 ? "" : "\(nodes) ")\(setup.postgres == nil ? "SQLite" : "PostgreSQL") server\(nodes == 1 ? "" : "s") on " +
            servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ", ") +
            (killEvery.map { ", SIGKILL every \($0) s" } ?? "") + ", seed \(seed)")

        var instructors: [Instructor] = []
        var reconnectCounters: [Task<Int, Never>] = []
        var checkers: [OrderCheck] = []
        for index in 0..<clients {
            var configuration = ClientConfiguration(port: servers[index % nodes].port, token: try await authority.issue(TokenClaims(
                user: "stress\(index)", expires: Date().addingTimeInterval(86_400), courses: [courseID: .editor])))
            configuration.reconnectBase = .milliseconds(50)
            configuration.reconnectCap = .seconds(2)
            let checker = OrderCheck()
            checkers.append(checker)
            configuration.frameObserver = { event in checker.observe(event) }
            let client = try await SyncClient.open(path: folder.appendingPathComponent("client\(index).replica").path,
                                                   courseID: courseID, configuration: configuration, logger: logger)
            reconnectCounters.append(Task {
                await client.events.reduce(0) { count, event in
                    if case .connection(.offline(let retry)) = event, retry != nil { count + 1 } else { count }
                }
            })
            instructors.append(Instructor(name: "stress\(index)", client: client, seed: seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15))
        }
        for instructor in instructors { try await within(settleTimeout, "client \(instructor.name) to catch up") { try await instructor.client.settle() } }

        let start = ContinuousClock.now
        let deadline = seconds.map { start + .milliseconds(Int64($0 * 1000)) }
        let progress = Progress(total: deadline == nil ? clients * edits : 0)
        let killCount = NIOLockedValueBox(0)
        let killer = Task { [servers] () -> Int in
            guard let killEvery else { return 0 }
            var random = SplitMix64(seed: seed ^ 0x6B11)
            var kills = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int64(killEvery * 1000)))
                guard !Task.isCancelled else { break }
                let server = servers.randomElement(using: &random)!
                server.kill()
                kills += 1
                killCount.withLockedValue { $0 += 1 }
                try? await Task.sleep(for: .milliseconds(200))
                try? await server.start()
            }
            return kills
        }
        let terminated = NIOLockedValueBox((faults: 0, backends: 0))
        let databaseFaults = Task { () -> Void in
            guard let terminateBackends else { return }
            var random = SplitMix64(seed: seed ^ 0xDB_FA17)
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int64.random(in: 500...3_000, using: &random)))
                guard !Task.isCancelled else { break }
                // The checker's own pool loses connections too; it reconnects, as the nodes do.
                let count = (try? await terminateBackends()) ?? 0
                terminated.withLockedValue { $0.faults += 1; $0.backends += count }
            }
        }
        // A progress line every two seconds: long runs are not silent.
        let reporter = Task { [instructors] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                guard !Task.isCancelled else { return }
                await progress.show(instructors, extra: killEvery == nil ? "" : " · server kills \(killCount.withLockedValue { $0 })")
            }
        }
        defer { reporter.cancel() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for instructor in instructors {
                group.addTask { try await instructor.work(edits: edits, until: deadline, pauseMs: 20, progress: progress) }
            }
            try await group.waitForAll()
        }
        reporter.cancel()
        killer.cancel()
        databaseFaults.cancel()
        await databaseFaults.value
        let kills = await killer.value
        for server in servers { try await server.start() }
        let editing = ContinuousClock.now - start
        for instructor in instructors {
            try await within(settleTimeout, "client \(instructor.name) to settle") { try await instructor.client.settle() }
        }
        let truth = try await store.snapshot(courseID: courseID)
        for instructor in instructors {
            try await within(settleTimeout, "client \(instructor.name) to reach seq \(truth.seq)") {
                while await instructor.client.cursor < truth.seq { try await Task.sleep(for: .milliseconds(10)) }
            }
        }
        var totals = ClientCore.Stats()
        for instructor in instructors {
            totals.add(await instructor.client.stats)
            try await instructor.client.close()
        }
        var reconnects = 0
        for counter in reconnectCounters { reconnects += await counter.value }

        // The independent check: each replica file, reopened, against the store.
        var mismatches: [String] = []
        let problems = truth.invariantViolations()
        if !problems.isEmpty { mismatches.append("the store breaks invariants: \(problems.prefix(3))") }
        for index in 0..<clients {
            let replica = try Replica(path: folder.appendingPathComponent("client\(index).replica").path)
            for problem in try replica.differences(from: truth) { mismatches.append("client \(index): \(problem)") }
        }
        var diffsChecked = 0
        for (index, checker) in checkers.enumerated() {
            let result = checker.result
            diffsChecked += result.diffsSeen
            for violation in result.violations.prefix(3) { mismatches.append("client \(index) ordering: \(violation)") }
        }
        say("""
        edits \(totals.edits) (+\(await progress.refusedLocally) refused locally) in \(String(format: "%.1f", editing.seconds)) s · \
        batches acked \(totals.acks) · rejected \(totals.rejections) (\(totals.droppedEdits) edits rolled back) · \
        conflicts resolved \(totals.resolutionNotes + totals.rejections) · reconnects \(reconnects) · server kills \(kills) · store seq \(truth.seq)\
        \(terminateBackends == nil ? "" : terminated.withLockedValue { " · database faults \($0.faults) (\($0.backends) backends terminated)" })
        """)
        if mismatches.isEmpty {
            say("ordering: \(diffsChecked) diffs checked, no gap, repeat or Diff before its Ack ✓")
            say("verdict: all \(clients) replicas match the store row for row ✓")
        } else {
            say("verdict: FAILED\n" + mismatches.prefix(20).map { "  \($0)" }.joined(separator: "\n"))
            throw ExitCode.failure
        }
    }

    private func within(_ seconds: Double, _ what: String, _ body: @escaping @Sendable () async throws -> Void) async throws {
        try await withTimeout(seconds, body, failure: { ValidationError("timed out after \(seconds) s waiting for \(what)") })
    }
}

/// One client's ``WireOrderChecker``, fed from the client's frame observer.
final class OrderCheck: Sendable {
    private let state = NIOLockedValueBox(WireOrderChecker())

    func observe(_ event: FrameEvent) { state.withLockedValue { $0.observe(event) } }

    var result: WireOrderChecker { state.withLockedValue { $0 } }
}

/// `coursesync serve` as a child process that can be killed and restarted.
final class ServerProcess: @unchecked Sendable {
    let arguments: [String]
    let log: String
    let port: Int
    private let lock = NSLock()
    private var pid: pid_t?

    init(arguments: [String], log: String, port: Int) {
        self.arguments = arguments
        self.log = log
        self.port = port
    }

    /// Starts the server if it is not running and waits until it accepts connections.
    func start() async throws {
        if lock.withLock({ pid }) == nil {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
            var executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            var arguments = arguments
            // COURSESYNC_SERVE_WRAPPER="heaptrack -o /tmp/serve": the `serve` children run under a
            // profiler (the words are the wrapper's command line, the server's follows).
            if let wrapper = ProcessInfo.processInfo.environment["COURSESYNC_SERVE_WRAPPER"]?.split(separator: " ").map(String.init),
               let program = wrapper.first, arguments.first == "serve" {
                arguments = wrapper.dropFirst() + [executable] + arguments
                executable = program
            }
            var cArguments = ([executable] + arguments).map { strdup($0) } + [nil]
            defer { cArguments.forEach { free($0) } }
            var child: pid_t = 0
            let result = posix_spawn(&child, executable, &actions, nil, &cArguments, environ)
            guard result == 0 else { throw ValidationError("cannot start the server: \(String(cString: strerror(result)))") }
            lock.withLock { pid = child }
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if canConnect(port: port) { return }
            if let pid = lock.withLock({ pid }), waitpid(pid, nil, WNOHANG) == pid {
                lock.withLock { self.pid = nil }
                throw ValidationError("the server exited at start; see \(log)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ValidationError("the server did not listen on port \(port) within 30 s; see \(log)")
    }

    /// The running process, if any.
    var processID: pid_t? { lock.withLock { pid } }

    /// SIGKILL, and reap the process.
    func kill() {
        guard let pid = lock.withLock({ () -> pid_t? in defer { self.pid = nil }; return self.pid }) else { return }
        Foundation.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
    }

    /// SIGTERM (a graceful stop), and reap.
    func stop() {
        guard let pid = lock.withLock({ () -> pid_t? in defer { self.pid = nil }; return self.pid }) else { return }
        Foundation.kill(pid, SIGTERM)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
    }
}

/// A loopback port nobody listens on right now.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ValidationError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard bound == 0 else { throw ValidationError("bind: \(String(cString: strerror(errno)))") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

/// What a run with `coursesync serve` child processes starts from: a scratch folder, a token secret
/// in a file the children read, an authority issuing tokens with it, and the store (SQLite in the
/// folder, or a migrated PostgreSQL database) with the arguments that point a child at it.
struct ChildServerSetup {
    let folder: URL
    let secretFile: String
    let authority: TokenAuthority
    let store: any SyncStore
    let storeArguments: [String]
    /// The PostgreSQL pool, when the store is there.
    let postgres: PostgresClient?

    /// A `coursesync serve` child over this store on a free loopback port, with `arguments`
    /// besides, logging to `<name>.log` in the folder (not started).
    func server(_ name: String, arguments: [String] = []) throws -> ServerProcess {
        let port = try freeLoopbackPort()
        return ServerProcess(arguments: ["serve", "--listen", "127.0.0.1:\(port)", "--secret-file", secretFile, "--log-level", "error"]
                                 + arguments + storeArguments,
                             log: folder.appendingPathComponent("\(name).log").path, port: port)
    }
}

/// Runs `body` with a ``ChildServerSetup`` in a scratch folder named after `prefix`, removed afterwards.
func withChildServerStore(_ prefix: String, postgresURL: String?, logger: Logger, _ body: (ChildServerSetup) async throws -> Void) async throws {
    try await withScratchFolder(prefix) { folder in
        let secretFile = folder.appendingPathComponent("secret").path
        guard FileManager.default.createFile(atPath: secretFile, contents: Data(TokenSecret.generate().utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ValidationError("cannot write \(secretFile)")
        }
        let authority = try await TokenAuthority(secret: try TokenSecret.load(path: secretFile))
        if let postgresURL {
            try await withPostgres(try PostgresURL.configuration(postgresURL), logger: logger) { client in
                let store = PostgresStore(client: client, logger: logger)
                try await store.checkSchema()
                try await body(ChildServerSetup(folder: folder, secretFile: secretFile, authority: authority, store: store,
                                                storeArguments: ["--postgres", postgresURL], postgres: client))
            }
        } else {
            let data = folder.appendingPathComponent("data").path
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let store = try SQLiteStore(path: URL(fileURLWithPath: data).appendingPathComponent("store.sqlite").path)
            try await body(ChildServerSetup(folder: folder, secretFile: secretFile, authority: authority, store: store,
                                            storeArguments: ["--data-dir", data], postgres: nil))
        }
    }
}
