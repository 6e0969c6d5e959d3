import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresStore
import SQLiteStore
import SyncModel
import SyncServer
import SyncStorage
import SyncTransport
import SyncWire

struct FanoutBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "One course, N subscribers: how fast a commit reaches all of them, against a raw broadcast floor in the same run.",
        discussion: """
        Runs `coursesync serve` as a child process (SQLite in a scratch directory, or --postgres URL), \
        opens N subscribed connections to one course from this process (one event loop, frames only \
        counted: the subscribers are not what is measured), then pushes a batch of 10 links every \
        --interval-ms and times each diff from the push's send to its arrival at every subscriber \
        (first, median, last), and push → ack. Reports the server's CPU per delivered diff and its \
        resident memory per subscribed connection. Then the floor: a child process that writes the \
        same Diff frame's bytes to the same number of connections with no protocol work, triggered \
        the same way, measured by the same subscribers; and the ratio. With --nodes K (PostgreSQL), \
        K `serve` children share the database, the subscribers are spread over them in turn and the \
        pusher is on the first: the other nodes hear of each commit by NOTIFY and read its diff back \
        from the store (CPU and memory are summed over the nodes; the floor is one process).
        """
    )

    @Option(help: "Subscribed connections (1 to 18000).") var subscribers = 1_000
    @Option(help: "Diffs to time.") var diffs = 20
    @Option(help: "Milliseconds between pushes.") var intervalMs = 500
    @Option(name: .customLong("postgres"), help: ArgumentHelp("Use PostgreSQL (a migrated database) instead of SQLite.", valueName: "url"))
    var postgresURL: String?
    @Option(help: "Server nodes sharing the database (more than one needs --postgres).") var nodes = 1

    func validate() throws {
        guard (1...18_000).contains(subscribers) else { throw ValidationError("--subscribers must be between 1 and 18000") }
        guard (2...10_000).contains(diffs) else { throw ValidationError("--diffs must be between 2 and 10000") }
        guard (10...60_000).contains(intervalMs) else { throw ValidationError("--interval-ms must be between 10 and 60000") }
        if let postgresURL { _ = try PostgresURL.configuration(postgresURL) }
        guard (1...8).contains(nodes), nodes == 1 || postgresURL != nil else { throw ValidationError("--nodes is 1 to 8, and more than 1 needs --postgres") }
    }

    func run() async throws {
        var logger = Logger(label: "coursesync.bench")
        logger.logLevel = .critical
        try await withChildServerStore("coursesync-fanout", postgresURL: postgresURL, logger: logger) { setup in
            try await run(setup)
        }
    }

    private func run(_ setup: ChildServerSetup) async throws {
        let folder = setup.folder
        var generator = SystemRandomNumberGenerator()
        let course = try await CourseSeed(id: .random(using: &generator), title: "Fan-out", chapters: ["Lectures"],
                                          media: CourseSeed.Media.numbered(20)).make(in: setup.store)
        let token = try await setup.authority.issue(TokenClaims(user: "fanout", expires: Date().addingTimeInterval(86_400), courses: [course.course: .editor]))
        let limit = String(subscribers + 16)
        let servers = try (0..<nodes).map { node in
            try setup.server("server\(node)", arguments: ["--heartbeat-seconds", "600", "--max-connections-per-address", limit,
                                                          "--max-connections-per-user", limit])
        }
        let port = servers[0].port
        for server in servers { try await server.start() }
        defer { for server in servers { server.stop() } }
        print("coursesync bench fanout — \(subscribers) subscribers of one course\(nodes > 1 ? " spread over \(nodes) nodes (pushes on the first)" : ""), " +
              "\(diffs) diffs of 10 links every \(intervalMs) ms, \(postgresURL == nil ? "SQLite" : "PostgreSQL")")
        func stats() throws -> ProcessStats {
            try servers.map { try ProcessStats(pid: $0.processID) }.reduce(ProcessStats(residentBytes: 0, cpuNanoseconds: 0)) {
                ProcessStats(residentBytes: $0.residentBytes + $1.residentBytes, cpuNanoseconds: $0.cpuNanoseconds + $1.cpuNanoseconds)
            }
        }

        // The subscribers' one event loop (shut down with the process: the bench ends with it).
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let idle = try stats()
        let subscribe = Framing.frame(WireMessage.subscribe(courseID: course.course, sinceSeq: 0).payload())
        let fans = try await Subscribers.connect(count: subscribers, ports: servers.map(\.port), group: group) { _ in
            var greeting = Framing.frame(WireMessage.hello(Hello(clientID: ClientID(.random(using: &generator)), token: token)).payload())
            greeting += subscribe
            return greeting
        }
        try await fans.waitUntilSubscribed(timeout: .seconds(120))
        let subscribed = try stats()
        let perConnection = Double(subscribed.residentBytes - idle.residentBytes) / Double(subscribers)

        // The pusher: links 10 media files, then unlinks them, one batch per interval.
        var pushAck = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var sentAt: [ContinuousClock.Instant] = []
        var frame: [UInt8] = []
        try await ProtocolClient.with(host: "127.0.0.1", port: port, clientID: ClientID(.random(using: &generator)), token: token) { connection in
            var temp: UInt64 = 0
            var linked: [EntityID] = []
            for index in 0..<diffs {
                let ops: [SyncModel.Operation]
                if linked.isEmpty {
                    ops = [.linkMedia(chapter: .id(course.chapters[0]), items: course.media.prefix(10).map { media in
                        temp += 1
                        return LinkItem(temp: TempID(temp)!, media: .id(media))
                    }, placement: .atEnd)]
                } else {
                    ops = linked.map { .unlinkVideo(.id($0)) }
                }
                let push = Push(courseID: course.course, batchSeq: BatchSeq(index + 1), baseSeq: 0, ops: ops)
                let start = ContinuousClock.now
                sentAt.append(start)
                switch try await connection.push(push) {
                case .success(let ack):
                    pushAck.record(UInt64((ContinuousClock.now - start).wholeNanoseconds))
                    linked = linked.isEmpty ? ack.idMap.values.sorted() : []
                case .failure(let rejection):
                    throw ValidationError("the push was rejected: \(rejection)")
                }
                try await fans.waitForDiffs(index + 1, timeout: .seconds(60))
                try await Task.sleep(for: .milliseconds(intervalMs))
            }
            frame = fans.firstDiffFrame
        }
        let done = try stats()
        let courseSync = fans.deliveries(sentAt: sentAt)
        await fans.close()
        let cpuPerDiff = Double(done.cpuNanoseconds - subscribed.cpuNanoseconds) / Double(diffs * subscribers)
        for server in servers { server.stop() }

        // The floor: the same bytes to the same number of connections, nothing else.
        let floorPort = try freeLoopbackPort()
        let frameFile = folder.appendingPathComponent("frame.bin")
        try Data(frame).write(to: frameFile)
        let countsFile = folder.appendingPathComponent("floor-connections").path
        let broadcaster = ServerProcess(arguments: ["bench", "broadcast-floor", "--port", String(floorPort), "--frame-file", frameFile.path,
                                                    "--counts-file", countsFile],
                                        log: folder.appendingPathComponent("floor.log").path, port: floorPort)
        try await broadcaster.start()
        let floorIdle = try ProcessStats(pid: broadcaster.processID)
        defer { broadcaster.stop() }
        let floorFans = try await Subscribers.connect(count: subscribers, ports: [floorPort], group: group) { _ in [] }
        var floorSent: [ContinuousClock.Instant] = []
        let trigger = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: floorPort).get()
        try await BroadcastFloor.waitForConnections(subscribers + 1, countedIn: countsFile)
        let floorPerConnection = Double(try ProcessStats(pid: broadcaster.processID).residentBytes - floorIdle.residentBytes) / Double(subscribers + 1)
        for index in 0..<diffs {
            floorSent.append(.now)
            try await trigger.writeAndFlush(ByteBuffer(bytes: [1])).get()
            try await floorFans.waitForDiffs(index + 1, timeout: .seconds(60))
            try await Task.sleep(for: .milliseconds(intervalMs))
        }
        try await trigger.close()
        let floor = floorFans.deliveries(sentAt: floorSent)
        await floorFans.close()

        func ms(_ histogram: Histogram<UInt64>, _ percentile: Double) -> String {
            String(format: "%.2f", Double(histogram.valueAtPercentile(percentile)) / 1e6)
        }
        func line(_ what: String, _ histogram: Histogram<UInt64>) -> String {
            "\(what): p50 \(ms(histogram, 50)) ms  p99 \(ms(histogram, 99)) ms  max \(String(format: "%.2f", Double(histogram.max) / 1e6)) ms"
        }
        print("diff frame: \(frame.count) bytes; server RSS \(idle.residentBytes >> 20) MiB idle, \(subscribed.residentBytes >> 20) MiB with the subscribers: \(String(format: "%.1f", perConnection / 1024)) KiB per subscribed connection (the floor's: \(String(format: "%.1f", floorPerConnection / 1024)) KiB per connection)")
        print(line("push → ack", pushAck))
        for (name, coursesync, raw) in [("first", courseSync.first, floor.first), ("median", courseSync.median, floor.median), ("last", courseSync.last, floor.last)] {
            print(line("push → \(name) subscriber", coursesync) + "   | floor " + line("", raw).dropFirst(2)
                  + String(format: "   | ratio p50 %.2f×, p99 %.2f×", Double(coursesync.valueAtPercentile(50)) / Double(max(raw.valueAtPercentile(50), 1)),
                           Double(coursesync.valueAtPercentile(99)) / Double(max(raw.valueAtPercentile(99), 1))))
        }
        print(String(format: "server CPU per delivered diff: %.2f µs (user + system, %d diffs × %d subscribers)", cpuPerDiff / 1000, diffs, subscribers))
    }
}

/// `coursesync bench broadcast-floor`: the floor the fan-out bench compares with. Accepts
/// connections; a byte arriving on any of them writes the frame file's bytes to every other
/// connection, one task per event loop writing to its connections and flushing each. No parsing,
/// no queues, no protocol.
struct BroadcastFloor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "broadcast-floor", abstract: "The raw broadcast of `bench fanout` (run by it).",
                                                    shouldDisplay: false)

    @Option var port: Int
    @Option var frameFile: String
    /// Where it writes how many connections it holds (every 100 ms), for the bench to wait on.
    @Option var countsFile: String

    func run() async throws {
        let frame = ByteBuffer(bytes: try Data(contentsOf: URL(fileURLWithPath: frameFile)))
        let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channels.withLockedValue { $0[ObjectIdentifier(channel)] = channel }
                channel.closeFuture.whenComplete { _ in _ = channels.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) } }
                return channel.pipeline.addHandler(Trigger { from in
                    let targets = channels.withLockedValue { Array($0.values) }.filter { $0 !== from }
                    for (_, onLoop) in Dictionary(grouping: targets, by: { ObjectIdentifier($0.eventLoop) }) {
                        onLoop[0].eventLoop.execute {
                            for channel in onLoop { channel.writeAndFlush(frame, promise: nil) }
                        }
                    }
                })
            }
            .bind(host: "127.0.0.1", port: port).get()
        while listener.isActive {
            let count = channels.withLockedValue { $0.count }
            try? Data("\(count)\n".utf8).write(to: URL(fileURLWithPath: countsFile))
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Waits until the broadcaster reports `count` connections in `countsFile`.
    static func waitForConnections(_ count: Int, countedIn countsFile: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: countsFile, encoding: .utf8),
               let held = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), held >= count { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ValidationError("the floor broadcaster did not get \(count) connections within 60 s")
    }

    final class Trigger: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let fire: (any Channel) -> Void
        init(_ fire: @escaping (any Channel) -> Void) { self.fire = fire }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { fire(context.channel) }
    }
}

/// A process's resident memory and CPU time so far, from /proc.
struct ProcessStats {
    var residentBytes: Int
    var cpuNanoseconds: Int

    init(residentBytes: Int, cpuNanoseconds: Int) {
        self.residentBytes = residentBytes
        self.cpuNanoseconds = cpuNanoseconds
    }

    init(pid: pid_t?) throws {
        guard let pid else { throw ValidationError("the server is not running") }
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        residentBytes = rss * 1024
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // After the command name (in parentheses, which may hold spaces): fields 14 and 15 are utime and stime.
        let fields = stat[stat.range(of: ")")!.upperBound...].split(separator: " ")
        let ticks = (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
        cpuNanoseconds = ticks * (1_000_000_000 / sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// Many raw connections on one event loop that count Diff frames and note when each arrives.
final class Subscribers: Sendable {
    /// Envelope field 7 (`diff`), length-delimited: a Diff frame's payload starts with this byte.
    static let diffTag: UInt8 = 7 << 3 | 2
    /// Envelope field 5 (`subscribed`).
    static let subscribedTag: UInt8 = 5 << 3 | 2

    private struct State {
        /// Per subscriber: the arrival of each Diff, in order.
        var arrivals: [[ContinuousClock.Instant]]
        /// Per diff (by its order): how many subscribers have it.
        var delivered: [Int] = []
        var subscribed = 0
        var firstDiffFrame: [UInt8] = []
    }

    let count: Int
    private let state: NIOLockedValueBox<State>
    private let channels: NIOLockedValueBox<[any Channel]> = NIOLockedValueBox([])

    private init(count: Int) {
        self.count = count
        state = NIOLockedValueBox(State(arrivals: Array(repeating: [], count: count)))
    }

    /// Opens `count` connections, to `ports` in turn, each sending `greeting(index)` at once.
    static func connect(count: Int, ports: [Int], group: any EventLoopGroup, greeting: (Int) -> [UInt8]) async throws -> Subscribers {
        let subscribers = Subscribers(count: count)
        for index in 0..<count {
            let bytes = greeting(index)
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: Limits.maxServerFrameBytes)))
                        try channel.pipeline.syncOperations.addHandler(Counter(index: index, subscribers: subscribers))
                    }
                }
                .connect(host: "127.0.0.1", port: ports[index % ports.count]).get()
            subscribers.channels.withLockedValue { $0.append(channel) }
            if !bytes.isEmpty { channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil) }
        }
        return subscribers
    }

    /// Polls `condition` every 5 ms until it holds or `timeout` passes.
    private func wait(_ what: String, timeout: Duration, until condition: (State) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if state.withLockedValue({ condition($0) }) { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw ValidationError("timed out waiting for \(what)")
    }

    func waitUntilSubscribed(timeout: Duration) async throws {
        let count = count
        try await wait("\(count) subscriptions", timeout: timeout) { $0.subscribed >= count }
    }

    /// Until every subscriber has received `diffs` diffs.
    func waitForDiffs(_ diffs: Int, timeout: Duration) async throws {
        let count = count
        try await wait("diff \(diffs) at every subscriber", timeout: timeout) { $0.delivered.count >= diffs && $0.delivered[diffs - 1] >= count }
    }

    var firstDiffFrame: [UInt8] { state.withLockedValue { $0.firstDiffFrame } }

    /// Per diff (sent at `sentAt[i]`): its delivery to the first, median and last subscriber.
    func deliveries(sentAt: [ContinuousClock.Instant]) -> (first: Histogram<UInt64>, median: Histogram<UInt64>, last: Histogram<UInt64>) {
        var first = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var median = first, last = first
        let arrivals = state.withLockedValue { $0.arrivals }
        for (index, sent) in sentAt.enumerated() {
            let times = arrivals.compactMap { $0.count > index ? $0[index] : nil }.map { UInt64(max((($0 - sent).wholeNanoseconds), 0)) }.sorted()
            guard !times.isEmpty else { continue }
            first.record(times[0])
            median.record(times[times.count / 2])
            last.record(times[times.count - 1])
        }
        return (first, median, last)
    }

    func close() async {
        for channel in channels.withLockedValue({ $0 }) { try? await channel.close() }
    }

    fileprivate func arrived(_ tag: UInt8, at index: Int, now: ContinuousClock.Instant, payload: ByteBuffer) {
        state.withLockedValue { state in
            switch tag {
            case Self.diffTag:
                state.arrivals[index].append(now)
                let order = state.arrivals[index].count - 1
                if state.delivered.count <= order { state.delivered.append(0) }
                state.delivered[order] += 1
                if state.firstDiffFrame.isEmpty { state.firstDiffFrame = Framing.frame(payload.readableBytesView) }
            case Self.subscribedTag:
                state.subscribed += 1
            default:
                break
            }
        }
    }

    /// Counts one connection's frames: `Subscribed`, and each `Diff` with its arrival.
    final class Counter: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let index: Int
        let subscribers: Subscribers

        init(index: Int, subscribers: Subscribers) {
            self.index = index
            self.subscribers = subscribers
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let now = ContinuousClock.now
            let payload = unwrapInboundIn(data)
            guard let tag = payload.getInteger(at: payload.readerIndex, as: UInt8.self) else { return }
            subscribers.arrived(tag, at: index, now: now, payload: payload)
        }
    }
}
