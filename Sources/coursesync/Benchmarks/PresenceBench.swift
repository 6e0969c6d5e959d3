import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import PostgresStore
import SQLiteStore
import SyncModel
import SyncServer
import SyncStorage
import SyncWire

struct PresenceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "presence",
        abstract: "Presence update → other subscribers, on one node and (with --postgres) across two.",
        discussion: """
        A course, one announcing client and --watchers subscribers asking for presence, over loopback TCP \
        to servers in this process. The announcer changes its presence every --interval-ms (its colour \
        numbers the update); each watcher notes when the update carrying each number arrives. One node: \
        the embedded SQLite store, everyone on the node. With --postgres: two nodes on that database, \
        the announcer on the first and the watchers on the second (relayed by NOTIFY). The servers' \
        presence rate limit is lifted so that the pace is the bench's. Updates merged for a slow reader \
        are counted as missed, not timed.
        """
    )

    @Option(name: .customLong("postgres"), help: ArgumentHelp("A migrated PostgreSQL database: also measure across two nodes.", valueName: "url"))
    var postgresURL: String?

    @Option(help: "Presence updates the announcer sends.")
    var samples = 1_000

    @Option(help: "Subscribers watching the course's presence.")
    var watchers = 10

    @Option(help: "Milliseconds between the announcer's updates.")
    var intervalMs = 5

    func validate() throws {
        guard samples > 0, watchers > 0, intervalMs >= 0 else { throw ValidationError("--samples and --watchers must be positive") }
        if let postgresURL { _ = try PostgresURL.configuration(postgresURL) }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.bench")
        logger.logLevel = .error
        say("coursesync bench presence — \(samples) updates every \(intervalMs) ms, \(watchers) watchers, loopback TCP")
        try await withScratchFolder("coursesync-presence") { folder in
            let store = try SQLiteStore(path: folder.appendingPathComponent("store.sqlite").path)
            let result = try await measure(stores: [store], logger: logger)
            say("one node (SQLite):       " + result.line)
        }
        guard let postgresURL else { return }
        try await withPostgres(try PostgresURL.configuration(postgresURL), logger: logger) { client in
            let storeA = PostgresStore(client: client, logger: logger)
            try await storeA.checkSchema()
            let storeB = PostgresStore(client: client, logger: logger)
            let result = try await measure(stores: [storeA, storeB], logger: logger)
            say("two nodes (PostgreSQL):  " + result.line)
        }
    }

    struct Result {
        var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var missed = 0
        var expected = 0

        var line: String {
            func ms(_ p: Double) -> Double { Double(latency.valueAtPercentile(p)) / 1e6 }
            return String(format: "update → watcher p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (%d timed, %d merged away of %d)",
                          ms(50), ms(90), ms(99), Double(latency.max) / 1e6, latency.totalCount, missed, expected)
        }
    }

    /// The announcer on the first store's node, the watchers on the last's; with two stores, the
    /// nodes relay through the database (each runs a ``CommitListener``).
    private func measure(stores: [any SyncStore], logger: Logger) async throws -> Result {
        let authority = try await TokenAuthority(secret: Array(TokenSecret.generate().utf8))
        var servers: [SyncServer] = []
        var tasks: [Task<Void, any Error>] = []
        defer { tasks.forEach { $0.cancel() } }
        for (index, store) in stores.enumerated() {
            var configuration = ServerConfiguration.bench
            configuration.serverID = "bench-\(index)"
            configuration.limits.session.presencePerSecond = 1_000_000
            let server = SyncServer(store: store, authority: authority, configuration: configuration, logger: logger)
            servers.append(server)
            tasks.append(Task { try await server.run() })
            if stores.count > 1, let notifications = store as? any CommitNotifications {
                tasks.append(Task { try await CommitListener(store: notifications, server: server).run() })
            }
        }
        var generator = SystemRandomNumberGenerator()
        let courseID = EntityID.random(using: &generator)
        try await stores[0].createCourse(Course(id: courseID, title: "Presence bench"))
        let token = try await authority.issue(TokenClaims(user: "bench", expires: Date().addingTimeInterval(86_400), courses: [courseID: .editor]))
        let announcerID = ClientID(.random(using: &generator))
        let portA = try await servers[0].listeningPort(), portB = try await servers[servers.count - 1].listeningPort()

        // Per watcher, when each numbered update arrived; and when each was sent.
        let arrivals = NIOLockedValueBox([[UInt32: ContinuousClock.Instant]](repeating: [:], count: watchers))
        let sent = NIOLockedValueBox([UInt32: ContinuousClock.Instant]())
        let ready = NIOLockedValueBox(0)
        let samples = samples, interval = intervalMs, watcherCount = watchers
        try await withThrowingTaskGroup(of: Void.self) { group in
            for watcher in 0..<watcherCount {
                let watcherID = ClientID(.random(using: &generator))
                group.addTask {
                    try await ProtocolClient.with(host: "127.0.0.1", port: portB, clientID: watcherID, token: token) { connection in
                        try await connection.send(.subscribe(courseID: courseID, sinceSeq: 0, presence: true))
                        while true {
                            switch try await connection.next() {
                            case .subscribed: ready.withLockedValue { $0 += 1 }
                            case .ping(let nonce): try await connection.send(.pong(nonce: nonce))
                            case .presence(let change):
                                let now = ContinuousClock.now
                                guard let peer = change.peers.first(where: { $0.clientID == announcerID }) else { continue }
                                arrivals.withLockedValue { $0[watcher][peer.color] = now }
                                if peer.color == UInt32(samples) { return }
                            default: continue
                            }
                        }
                    }
                }
            }
            group.addTask {
                while ready.withLockedValue({ $0 }) < watcherCount { try await Task.sleep(for: .milliseconds(5)) }
                try await ProtocolClient.with(host: "127.0.0.1", port: portA, clientID: announcerID, token: token) { connection in
                    try await connection.send(.subscribe(courseID: courseID, sinceSeq: 0))
                    // On two nodes the watchers' node hears of the announcer once the relay arrives:
                    // the first update is not timed (it may wait for the node's query to be answered).
                    for number in 0...UInt32(samples) {
                        sent.withLockedValue { $0[number] = .now }
                        try await connection.send(.setPresence(PresenceAnnouncement(courseID: courseID, name: "Announcer", color: number)))
                        if number == 0 { try await Task.sleep(for: .milliseconds(500)) }
                        if interval > 0 { try await Task.sleep(for: .milliseconds(interval)) }
                    }
                    // Stay until every watcher has the last update (leaving would end the entry).
                    while arrivals.withLockedValue({ $0.contains { $0[UInt32(samples)] == nil } }) { try await Task.sleep(for: .milliseconds(5)) }
                }
            }
            try await group.waitForAll()
        }
        for server in servers { await server.shutDown() }
        var result = Result()
        let sentAt = sent.withLockedValue { $0 }
        for perWatcher in arrivals.withLockedValue({ $0 }) {
            for number in 1...UInt32(samples) {
                result.expected += 1
                guard let arrived = perWatcher[number], let started = sentAt[number] else { result.missed += 1; continue }
                result.latency.record(UInt64(max((arrived - started).wholeNanoseconds, 0)))
            }
        }
        return result
    }
}
