import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import NIOPosix
import SyncModel
import SyncServer
import SyncStorage
import SyncWire

struct CoursesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "courses",
        abstract: "Many courses on one node: memory with --active of them subscribed at once, their hubs dropped when idle and made again on demand.",
        discussion: """
        Creates --courses courses (--active of them with a chapter and 20 media files), starts `coursesync \
        serve` as a child (SQLite in a scratch directory, or --postgres URL) with --course-idle-seconds, \
        and subscribes one connection to each active course at once. Reports the server's resident \
        memory idle and with every active course subscribed (per course), and its resident hubs and \
        store cache from /metrics; then closes the connections, waits for the hubs to be dropped, and \
        subscribes again: how long until every course is live again (each hub made anew, its course \
        read from the store).
        """
    )

    @Option(help: "Courses in the store.") var courses = 100_000
    @Option(help: "Courses subscribed at once.") var active = 1_000
    @Option(help: "The server's --course-idle-seconds.") var idleSeconds = 5
    @Option(name: .customLong("postgres"), help: ArgumentHelp("A migrated PostgreSQL database (default: the embedded SQLite store).", valueName: "url"))
    var postgresURL: String?

    func validate() throws {
        guard active > 0, courses >= active, idleSeconds > 0 else { throw ValidationError("need 0 < --active ≤ --courses and --idle-seconds > 0") }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.bench")
        logger.logLevel = .error
        try await withChildServerStore("coursesync-courses", postgresURL: postgresURL, logger: logger) { setup in
            var generator = SystemRandomNumberGenerator()
            let started = ContinuousClock.now
            var activeCourses: [EntityID] = []
            for _ in 0..<active {
                activeCourses.append(try await CourseSeed(id: .random(using: &generator), title: "Active", chapters: ["Lectures"],
                                                          media: CourseSeed.Media.numbered(20)).make(in: setup.store).course)
            }
            for index in 0..<(courses - active) {
                try await setup.store.createCourse(Course(id: .random(using: &generator), title: "Course \(index)"))
            }
            say("coursesync bench courses — \(courses) courses (\(active) with 20 media files each, made in \(Int((ContinuousClock.now - started).seconds)) s), " +
                "\(postgresURL == nil ? "SQLite" : "PostgreSQL"), course idle timeout \(idleSeconds) s")
            let token = try await setup.authority.issue(TokenClaims(user: "courses", expires: Date().addingTimeInterval(86_400), courses: [:], everyCourse: .viewer))
            let limit = String(active + 16)
            let metricsPort = try freeLoopbackPort()
            let server = try setup.server("server", arguments: ["--heartbeat-seconds", "600", "--max-connections-per-address", limit,
                                                                "--max-connections-per-user", limit, "--course-idle-seconds", String(idleSeconds),
                                                                "--metrics-listen", "127.0.0.1:\(metricsPort)"])
            try await server.start()
            defer { server.stop() }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let idle = try ProcessStats(pid: server.processID)

            func subscribeAll() async throws -> (Subscribers, Duration) {
                let start = ContinuousClock.now
                let fans = try await Subscribers.connect(count: active, ports: [server.port], group: group) { index in
                    Framing.frame(WireMessage.hello(Hello(clientID: ClientID(.random(using: &generator)), token: token)).payload())
                        + Framing.frame(WireMessage.subscribe(courseID: activeCourses[index], sinceSeq: 0).payload())
                }
                try await fans.waitUntilSubscribed(timeout: .seconds(300))
                return (fans, ContinuousClock.now - start)
            }
            let (fans, first) = try await subscribeAll()
            let busy = try ProcessStats(pid: server.processID)
            let busyMetrics = try await Self.metrics(port: metricsPort)
            await fans.close()
            // The hubs go once quiet for the idle timeout (swept every half of it).
            let deadline = ContinuousClock.now + .seconds(idleSeconds * 4 + 10)
            var afterMetrics = try await Self.metrics(port: metricsPort)
            while (afterMetrics["coursesync_course_hubs"] ?? 0) > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(250))
                afterMetrics = try await Self.metrics(port: metricsPort)
            }
            let evicted = try ProcessStats(pid: server.processID)
            let (again, second) = try await subscribeAll()
            let againMetrics = try await Self.metrics(port: metricsPort)
            await again.close()

            func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
            func value(_ metrics: [String: Double], _ name: String) -> String { metrics[name].map { String(Int($0)) } ?? "?" }
            say("resident memory: idle \(mib(idle.residentBytes)); \(active) courses subscribed \(mib(busy.residentBytes)) " +
                "(\(String(format: "%.1f", Double(busy.residentBytes - idle.residentBytes) / Double(active) / 1024)) KiB per subscribed course); " +
                "after their hubs were dropped \(mib(evicted.residentBytes))")
            say("with \(active) subscribed: \(value(busyMetrics, "coursesync_course_hubs")) hubs, \(value(busyMetrics, "coursesync_store_cached_courses")) courses cached " +
                "(\(mib(Int(busyMetrics["coursesync_store_cache_bytes"] ?? 0)))); after the idle timeout: \(value(afterMetrics, "coursesync_course_hubs")) hubs")
            say(String(format: "every course live (connect, hello, subscribe, snapshot): first %.2f s, again after the hubs were dropped %.2f s (%.2f ms per course); hubs then %@",
                       first.seconds, second.seconds, second.seconds * 1000 / Double(active),
                       value(againMetrics, "coursesync_course_hubs")))
            try await group.shutdownGracefully()
        }
    }

    /// The gauges and counters of a node's `/metrics`, by name (labels left out).
    static func metrics(port: Int) async throws -> [String: Double] {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
        var values: [String: Double] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Double(parts[1]) { values[String(parts[0])] = value }
        }
        return values
    }
}
