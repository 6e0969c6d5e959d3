import Foundation
import Logging
import NIOPosix
import PostgresNIO
import PostgresStore
import SyncModel
import SyncStorage
import SyncServer

/// A private PostgreSQL cluster for this test run: `initdb` into a temporary directory (owned by
/// the `postgres` user when the tests run as root, since PostgreSQL refuses to run as root), started
/// with `pg_ctl` on a free loopback port with fsync on, stopped when the test process exits.
struct PostgresCluster: Sendable {
    let port: Int
    let directory: String
    let bin: String
    let asRoot: Bool
    /// `postgres` options beyond the port, socket and listen address.
    var settings = "-c max_connections=400 -c fsync=on"

    /// Started on first use; every test of the run shares it (each with its own database).
    static let shared: Result<PostgresCluster, ClusterError> = Result { () throws(ClusterError) in
        let cluster = try start()
        stopCommand = (cluster.bin, cluster.directory, cluster.asRoot)
        atexit { PostgresCluster.stopAtExit() }
        return cluster
    }

    struct ClusterError: Error, CustomStringConvertible {
        var description: String
    }

    static func require() throws -> PostgresCluster { try shared.get() }

    /// A cluster of its own (for a test that restarts it: `shared` serves every other test at
    /// once); ``stop()`` it when done.
    static func start(settings: String? = nil) throws(ClusterError) -> PostgresCluster {
        let (bin, directory, asRoot) = try makeDirectory()
        let port = freePort()
        try run("\(bin)/initdb", ["-D", "\(directory)/data", "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"], asPostgres: asRoot)
        var cluster = PostgresCluster(port: port, directory: directory, bin: bin, asRoot: asRoot)
        if let settings { cluster.settings = settings }
        try cluster.startServer()
        return cluster
    }

    /// A standby of `primary`, streaming from it: `pg_basebackup -R` (which writes the
    /// `primary_conninfo` and `standby.signal`), started on a port of its own. A standby named in
    /// the primary's `synchronous_standby_names` acknowledges each commit before the primary does.
    static func startStandby(of primary: PostgresCluster) throws(ClusterError) -> PostgresCluster {
        let (bin, directory, asRoot) = try makeDirectory()
        try run("\(bin)/pg_basebackup", ["-D", "\(directory)/data", "-R", "-X", "stream", "-c", "fast", "--no-sync",
                                         "-h", "127.0.0.1", "-p", "\(primary.port)", "-U", "postgres"],
                asPostgres: asRoot)
        let cluster = PostgresCluster(port: freePort(), directory: directory, bin: bin, asRoot: asRoot)
        try cluster.startServer()
        return cluster
    }

    /// Ends recovery: the standby becomes a primary (`pg_ctl promote`, waiting until it accepts writes).
    func promote() throws(ClusterError) {
        try Self.run("\(bin)/pg_ctl", ["-D", "\(directory)/data", "-w", "-t", "60", "promote"], asPostgres: asRoot)
    }

    /// Every backend killed at once, no checkpoint, not started again (a lost machine).
    func kill() throws(ClusterError) {
        try Self.run("\(bin)/pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "stop"], asPostgres: asRoot)
    }

    private func startServer() throws(ClusterError) {
        try Self.run("\(bin)/pg_ctl", ["-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-t", "60", "start",
                                       "-o", "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 \(settings)"],
                     asPostgres: asRoot)
    }

    private static func makeDirectory() throws(ClusterError) -> (bin: String, directory: String, asRoot: Bool) {
        guard let bin = binDirectory() else {
            throw ClusterError(description: "PostgreSQL server binaries (initdb, pg_ctl) were not found in /usr/lib/postgresql/*/bin or PATH: install the Debian package `postgresql` (apt-get install -y postgresql)")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("coursesync-pg-\(getpid())-\(UInt32.random(in: 0 ... .max))").path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ClusterError(description: "cannot create \(directory): \(error)")
        }
        let asRoot = getuid() == 0
        if asRoot {
            try run("/bin/chown", ["postgres:postgres", directory])
        }
        return (bin, directory, asRoot)
    }

    /// A crash and recovery: `pg_ctl restart -m immediate` (every backend killed, no checkpoint;
    /// the server replays its WAL on start).
    func restartImmediately() throws(ClusterError) {
        try Self.run("\(bin)/pg_ctl", ["-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-t", "60", "-m", "immediate", "restart",
                                       "-o", "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 \(settings)"],
                     asPostgres: asRoot)
    }

    func stop() {
        try? Self.run("\(bin)/pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "stop"], asPostgres: asRoot)
        try? FileManager.default.removeItem(atPath: directory)
    }

    nonisolated(unsafe) private static var stopCommand: (bin: String, directory: String, asRoot: Bool)?

    private static func stopAtExit() {
        guard let (bin, directory, asRoot) = stopCommand else { return }
        try? run("\(bin)/pg_ctl", ["-D", "\(directory)/data", "-m", "immediate", "-w", "stop"], asPostgres: asRoot)
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func binDirectory() -> String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted(by: >)
        for version in versions where FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/pg_ctl") {
            return "\(root)/\(version)/bin"
        }
        for path in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            if FileManager.default.isExecutableFile(atPath: "\(path)/pg_ctl"), FileManager.default.isExecutableFile(atPath: "\(path)/initdb") {
                return String(path)
            }
        }
        return nil
    }

    /// Runs a command to completion and fails with its output if it exits non-zero.
    private static func run(_ executable: String, _ arguments: [String], asPostgres: Bool = false) throws(ClusterError) {
        let argv = asPostgres ? ["-u", "postgres", "--", executable] + arguments : arguments
        do {
            let process = try Subprocess(argv, executable: asPostgres ? "/usr/sbin/runuser" : executable)
            let status = process.waitBlocking()
            guard status == 0 else {
                throw ClusterError(description: "\(executable) \(arguments.joined(separator: " ")) failed (status \(status)):\n\(process.output)")
            }
        } catch let error as ClusterError {
            throw error
        } catch {
            throw ClusterError(description: "cannot run \(executable): \(error)")
        }
    }

    /// A port the kernel just handed out (and took back): free at that moment.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A pool's configuration for `database`; with `port`, through something listening there
    /// (the tests' proxy) instead of the cluster itself.
    func configuration(database: String, port: Int? = nil) -> PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(host: "127.0.0.1", port: port ?? self.port, username: "postgres", password: nil,
                                                         database: database, tls: .disable)
        configuration.options.maximumConnections = 8
        return configuration
    }

    func url(database: String) -> String { "postgres://postgres@127.0.0.1:\(port)/\(database)" }
}

/// One test's own database on the shared cluster, with a running client pool.
final class TestDatabase: Sendable {
    let name: String
    let url: String
    let cluster: PostgresCluster
    let client: PostgresClient
    let store: PostgresStore
    private let runner: Task<Void, Never>

    static let logger: Logger = {
        var logger = Logger(label: "coursesync.test")
        logger.logLevel = ProcessInfo.processInfo.environment["COURSESYNC_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        return logger
    }()

    private init(name: String, cluster: PostgresCluster, logRetention: Int) {
        self.cluster = cluster
        self.name = name
        url = cluster.url(database: name)
        client = PostgresClient(configuration: cluster.configuration(database: name), backgroundLogger: Self.logger)
        store = PostgresStore(client: client, logger: Self.logger, logRetention: logRetention)
        let client = client
        runner = Task { await client.run() }
    }

    /// A fresh database, migrated unless told otherwise.
    static func make(migrated: Bool = true, logRetention: Int = 100_000, on cluster: PostgresCluster? = nil) async throws -> TestDatabase {
        let cluster = try cluster ?? PostgresCluster.require()
        let name = "t_\(UInt64.random(in: 0 ... .max))"
        let admin = PostgresClient(configuration: cluster.configuration(database: "postgres"), backgroundLogger: logger)
        let adminRunner = Task { await admin.run() }
        defer { adminRunner.cancel() }
        try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
        let database = TestDatabase(name: name, cluster: cluster, logRetention: logRetention)
        if migrated { try await Migrator().migrate(database.client, logger: logger) }
        return database
    }

    func close() async {
        runner.cancel()
        await runner.value
    }

    /// Commits `times` renames of `chapter` ("Title 1", "Title 2", …), one batch each, by one client.
    func renameRepeatedly(_ chapter: EntityID, of courseID: EntityID, times: Int) async throws {
        let author = ClientID(.fresh())
        for batchSeq in 1...BatchSeq(times) {
            _ = try await store.commit([Batch(clientID: author, courseID: courseID, batchSeq: batchSeq, baseSeq: 0,
                                              ops: [.renameChapter(.id(chapter), title: "Title \(batchSeq)")])], courseID: courseID)
        }
    }

    /// A new course with `chapters` chapters and `media` files made by a set-up batch; returns their IDs.
    func makeCourse(title: String = "Swift on the Server", chapters: Int = 1, media: Int = 0) async throws -> (course: EntityID, chapters: [EntityID], media: [EntityID]) {
        let seeded = try await CourseSeed(id: .fresh(), title: title, chapters: CourseSeed.numberedChapters(chapters),
                                          media: CourseSeed.Media.numbered(media, prefix: "Media")).make(in: store)
        return (seeded.course, seeded.chapters, seeded.media)
    }
}

/// Runs `body` with a fresh database, closing its pool afterwards.
func withDatabase<T>(migrated: Bool = true, logRetention: Int = 100_000, on cluster: PostgresCluster? = nil,
                     _ body: (TestDatabase) async throws -> T) async throws -> T {
    let database = try await TestDatabase.make(migrated: migrated, logRetention: logRetention, on: cluster)
    do {
        let result = try await body(database)
        await database.close()
        return result
    } catch {
        await database.close()
        throw error
    }
}

extension EntityID {
    static func fresh() -> EntityID {
        var generator = SystemRandomNumberGenerator()
        return .random(using: &generator)
    }
}
