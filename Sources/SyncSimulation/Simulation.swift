import Foundation
import SyncClient
import SyncModel
import SyncServer
import SyncStorage
import SyncWire

/// Which faults a run injects.
public struct Faults: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Connections dropped at random moments (frames in flight either way are lost).
    public static let drops = Faults(rawValue: 1)
    /// A client process restarts: its engine is rebuilt from its replica.
    public static let clientRestarts = Faults(rawValue: 2)
    /// A server node restarts: its connections and queued, uncommitted batches are lost; the store stays.
    public static let serverRestarts = Faults(rawValue: 4)
    /// A client stops reading (and its timers stop) for a while, so the server may cut it.
    public static let slowConsumers = Faults(rawValue: 8)
    /// Commit notifications between nodes are delayed, reordered, duplicated and lost.
    public static let notifications = Faults(rawValue: 16)
    /// A node's notification listener loses its connection: it hears nothing until it reconnects.
    public static let listenerDrops = Faults(rawValue: 32)
    /// A node's tasks are held up for a while (its pool busy) while its event loops go on: the
    /// peers' frames arrive and wait to be handed over, its writers send nothing, its hub and
    /// store calls wait; its timers still run and their Pings go straight out. Not in ``all``
    /// (added later: ``all`` keeps the seeds' runs as they were); `coursesync simulate --faults`
    /// and the suite's own runs name it.
    public static let nodeStalls = Faults(rawValue: 64)
    /// The database fails calls: one now and then, or every call for a while (the database down),
    /// before a call runs or after (a write that committed, a read that returned rows, whose answer
    /// is lost), and some calls are slow. Each node's ``StoreEngine`` tries a failed call again a
    /// few times (its ``StoreRetryPolicy`` on the simulated clock, resolving a commit's unknown
    /// outcome from the stored records), then gives up: the hub closes the writers' or the
    /// subscriber's connection with `INTERNAL_ERROR`. Not in ``all``, like ``nodeStalls``.
    public static let storeFailures = Faults(rawValue: 128)
    public static let all: Faults = [.drops, .clientRestarts, .serverRestarts, .slowConsumers, .notifications, .listenerDrops]

    public static let names: [(String, Faults)] = [("drops", .drops), ("client-restarts", .clientRestarts),
                                                   ("server-restarts", .serverRestarts), ("slow-consumers", .slowConsumers),
                                                   ("notifications", .notifications), ("listener-drops", .listenerDrops),
                                                   ("node-stalls", .nodeStalls), ("store-failures", .storeFailures)]

    public var description: String {
        let named = Self.names.filter { contains($0.1) }.map(\.0)
        return named.isEmpty ? "none" : named.joined(separator: ",")
    }
}

public struct SimulationOptions: Hashable, Sendable {
    /// Clients that edit.
    public var clients = 4
    /// Clients that only watch (never push): the server must keep them alive by pinging them.
    public var watchers = 1
    public var editsPerClient = 40
    /// Server nodes over the one store; each client connects to any of them.
    public var nodes = 2
    public var faults = Faults.all
    /// Change-log entries the store keeps: small, so reconnecting clients also get snapshots.
    public var logRetention = 24
    /// Frames queued for a client before the server cuts it as a slow consumer.
    public var outboxFrames = 64
    /// The heartbeat interval every connection runs at (simulated time).
    public var heartbeat: Duration = .seconds(1)
    /// How often a node checks the store for commits it was not told of.
    public var checkInterval: Duration = .seconds(3)
    /// After the last commit and the last fault, every client must be live at the store's seq
    /// within this much simulated time, without any further commit.
    public var livenessBound: Duration = .seconds(30)
    /// Each connection's push rate (stated in `Welcome`, enforced by the session, kept by the
    /// clients' pacing): low, so that a client resending its backlog after a reconnect is paced.
    /// A client cut for its rate is a violation.
    public var pushesPerSecond = 8
    /// Presence: how long another node's entry lives unmentioned, and how often each node
    /// mentions its own (short, so that a run's end sees entries of lost relays expire).
    public var presenceTTL: Duration = .seconds(3)
    public var presenceRefresh: Duration = .seconds(1)

    public init() {}
}

/// What one seed did, and what it broke.
public struct SimulationResult: Sendable {
    public var seed: UInt64
    public var violations: [String]
    /// The last steps before the end (all of them with tracing on).
    public var trace: [String]
    public var steps = 0
    public var edits = 0
    /// Undos and redos sent (each a batch like an edit).
    public var undos = 0
    public var commits = 0
    public var rejections = 0
    public var faults = 0
    /// Simulated time the run took.
    public var simulated: Duration = .zero
    /// Simulated time from the last commit or fault until every client was live at the last seq.
    public var settleTime: Duration = .zero
    public var pings = 0
    public var notificationsLost = 0
    /// Presence announcements made (changes of focus included).
    public var presenceUpdates = 0
    /// Catch-up reads shared by several subscribers at one cursor.
    public var sharedCatchUps = 0

    public var passed: Bool { violations.isEmpty }
}

/// The whole system under a seeded scheduler and a simulated clock: several server nodes over one
/// store, each running the server's decisions (``ServerSession`` per connection with its heartbeat
/// timers, ``OutboxQueue`` per connection, ``HubCore`` for queueing, group commits, answers,
/// fan-out and catch-up, ``CommitWatch`` for checking the store, ``StoreEngine`` with its own
/// course cache over the shared ``SimDatabase``, whose calls complete in any order and may fail),
/// commit notifications between nodes that may be delayed, reordered, duplicated
/// and lost, N client engines (``ClientCore`` with a real ``Replica`` in memory, its own timers:
/// coalescing, heartbeats, backoff), and a network of FIFO connections whose frames (encoded and
/// decoded like on the wire) are delivered in a random interleaving. Same seed, same run.
public final class Simulation {
    struct Client {
        let name: String
        var core: ClientCore
        let replica: Replica
        var connection: Int?
        /// Until then the client neither reads nor runs its timers (a stalled process).
        var pausedUntil: Moment?
        var editsLeft: Int
        var created = Set<BatchSeq>()
        var acked: [BatchSeq: Int] = [:]
        /// The course seq each ack said its batch committed as.
        var ackedSeqs: [BatchSeq: CourseSeq] = [:]
        var dropped: [BatchSeq: Int] = [:]
        /// The client's frames as `coursesync stress` checks them (kept across process restarts:
        /// it watches from outside).
        var order = WireOrderChecker()
        var paused: Bool { pausedUntil != nil }
    }

    struct Connection {
        let client: Int
        let node: Int
        var session: ServerSession
        /// Client → server frames in flight.
        var up: [[UInt8]] = []
        /// The server's outbox: what the client reads next.
        var outbox: OutboxQueue<[UInt8]>
        /// The client stalled at some point while this connection lived: closes for idleness or
        /// slowness are then its own doing.
        var clientStalled = false
        /// Batches pushed on this connection that committed and whose Ack has not arrived: their
        /// Diff must not arrive first.
        var awaitingAck = Set<BatchSeq>()
        /// The node was held up at some point while this connection lived: the client's leaving it
        /// for silence is then the node's doing.
        var serverStalled = false
        /// Frames that reached a held-up node, with when they arrived, not yet handed to the session.
        var arrived: [(bytes: [UInt8], at: Moment)] = []
        /// Pings the session's timer wrote straight to the socket, ahead of the outbox.
        var pinged: [[UInt8]] = []
        /// Pushes the hub took and has not answered yet, by batch.
        var unanswered: [BatchSeq: Int] = [:]
        /// The session throttled reading (over the push rate) until then.
        var throttledUntil: Moment?
        /// The presence update waiting beside the outbox (later ones merged in): read only when
        /// nothing else waits, as the real outbox does.
        var presence: PresenceChange?
        /// The subscriber asked for presence.
        var wantsPresence = false
    }

    struct Node {
        var hub: HubCore<Int>
        /// The node's store engine (its own course cache) over the shared database.
        let engine: StoreEngine<SimNodeBackend>
        /// Which incarnation of the node: an engine call of an earlier one is not answered.
        let epoch: Int
        /// The connection each batch of the group being committed came on.
        var committing: [BatchKey: Int] = [:]
        var watch: CommitWatch
        var listenerUp = true
        var listenerBackAt: Moment?
        /// Notifications delivered to this node's listener and not yet handled (any order).
        var notifications: [CourseSeq] = []
        /// Its tasks are held up until then (``Faults/nodeStalls``).
        var heldUntil: Moment?
        var presence: PresenceBoard<Int>
        /// Presence relays from other nodes not yet handled (any order; lost and repeated like
        /// notifications).
        var relays: [PresenceRelay] = []
        var nextPresenceTick: Moment
    }

    /// The engines' retry policy on the simulated clock: small, so that giving up happens too.
    static let retryPolicy = StoreRetryPolicy(retries: 2, firstDelay: .milliseconds(50), maxDelay: .milliseconds(400))

    /// A catch-up's frames not yet in the outbox: they go in as it has room.
    struct CatchUpFeed {
        let node: Int
        let connection: Int
        let generation: Int
        var messages: [WireMessage]
    }

    let seed: UInt64
    let options: SimulationOptions
    var random: SplitMix64
    /// How many frames each client read takes (its own stream, so that the main one, and with it
    /// every seed's run, is what it was before reads took several frames).
    private var readSizes: SplitMix64
    let database: SimDatabase
    var clients: [Client] = []
    var connections: [Int: Connection] = [:]
    private var nextConnection = 1
    var nodes: [Node] = []
    var feeds: [CatchUpFeed] = []
    /// Per node, the connections that pushed each batch and await its answer, in arrival order:
    /// the hub answers a course's pushes in that order, so a group's batch is the first one's.
    private var pushedOn: [Int: [BatchKey: [Int]]] = [:]
    /// The clients' replicas write a new base once their logged diffs name more rows than this
    /// or the course (a few dozen rows here), so that bases, logs and reopening them are all
    /// exercised (at the real floor of 1,000 these small courses would never get one).
    private static let compactionFloor = 8
    /// How many diffs one catch-up read returns (small, so catch-ups take several rounds).
    private let catchUpChunk = 8

    /// The clients' token: its claims as JSON, unsigned. Signatures are jwt-kit's, tested on their
    /// own; the simulator's node reads the claims and checks them as a server does (expiry, roles).
    private let token: String
    let courseID: EntityID
    private let date = Date(timeIntervalSince1970: 1_800_000_000)
    var now = Moment.zero {
        didSet { database.now = now }
    }
    var step = 0
    var result: SimulationResult
    let tracing: Bool
    private var faultsOn = true
    /// The last commit or fault: liveness is measured from here.
    var lastEventAt = Moment.zero
    /// The store fails every call until then (``Faults/storeFailures``).
    private var storeDownUntil: Moment?

    public init(seed: UInt64, options: SimulationOptions = SimulationOptions(), tracing: Bool = false) throws {
        precondition(options.nodes >= 1)
        self.seed = seed
        self.options = options
        self.tracing = tracing
        random = SplitMix64(seed: seed)
        readSizes = SplitMix64(seed: seed ^ 0x0BAD_F00D_5EED_0001)
        var ids = SplitMix64(seed: seed ^ 0xC0FF_EE00_D15E_A5E5)
        courseID = .random(using: &ids)
        let course = Course(id: courseID, title: "Simulated course")
        database = SimDatabase(course: course, seed: seed ^ 0x5EED)
        database.slowCalls = options.faults.contains(.storeFailures)
        token = String(decoding: try JSONEncoder().encode(TokenClaims(user: "sim", expires: date.addingTimeInterval(86_400),
                                                                       courses: [courseID: .editor])), as: UTF8.self)
        result = SimulationResult(seed: seed, violations: [], trace: [])
        nodes = (0..<options.nodes).map { newNode($0, epoch: 0) }
        // A course with a few chapters and a media library, committed before the clients start.
        var ops: [SyncModel.Operation] = (1...3).map { .createChapter(temp: TempID(UInt64($0))!, title: "Chapter \($0)", placement: .atEnd) }
        ops += (1...12).map {
            .registerMedia(temp: TempID(UInt64(100 + $0))!, name: "clip \($0)", cdnURL: "https://cdn.example.com/\($0)", durationMs: 1_000, byteSize: 1_000)
        }
        try setUp(course, Batch(clientID: ClientID(.random(using: &ids)), courseID: courseID, batchSeq: 1, baseSeq: 0, ops: ops))
        for index in 0..<(options.clients + options.watchers) {
            let replica = try Replica(inMemory: "client\(index)")
            let contents = ReplicaContents.empty(clientID: ClientID(.random(using: &ids)), courseID: courseID)
            try replica.create(contents)
            var core = ClientCore(contents, timing: timing(index), seed: ids.next())
            core.compactionFloor = Self.compactionFloor
            try replica.apply(core.takeWrite())
            let watcher = index >= options.clients
            clients.append(Client(name: watcher ? "w\(index - options.clients)" : "c\(index)", core: core, replica: replica,
                                  editsLeft: watcher ? 0 : options.editsPerClient))
        }
    }

    /// Client `index`'s timers. The coalescing windows differ between clients: from every edit its
    /// own batch (many commits, much fan-out) to windows wide enough that batches collect several
    /// edits and go stale while others commit (many conflicts and rollbacks).
    private func timing(_ index: Int) -> ClientCore.Timing {
        var timing = ClientCore.Timing()
        timing.coalesceWindow = [.zero, .milliseconds(5), .milliseconds(40), .milliseconds(150)][(Int(truncatingIfNeeded: seed) &+ index) & 3]
        timing.handshakeTimeout = .seconds(5)
        timing.reconnectBase = .milliseconds(50)
        timing.reconnectCap = .seconds(2)
        return timing
    }

    private func newNode(_ index: Int, epoch: Int) -> Node {
        let database = database
        let engine = StoreEngine(backend: SimNodeBackend(database: database, node: index), logRetention: options.logRetention,
                                 retryPolicy: Self.retryPolicy, sleep: { try await database.sleep(index, for: $0) },
                                 mintIDs: { database.mintIDs() })
        return Node(hub: HubCore(courseID: courseID, maxGroupBatches: 8, catchUpChunk: catchUpChunk), engine: engine, epoch: epoch,
                    watch: CommitWatch(checkInterval: options.checkInterval, now: now),
                    presence: PresenceBoard(courseID: courseID, node: "node\(index).\(epoch)", ttl: options.presenceTTL),
                    nextPresenceTick: now + options.presenceRefresh)
    }

    /// Creates the course and commits its first batch, through an engine, before the run.
    private func setUp(_ course: Course, _ batch: Batch) throws {
        let engine = StoreEngine(backend: SimNodeBackend(database: database, node: -1), logRetention: options.logRetention,
                                 mintIDs: { [database] in database.mintIDs() })
        database.immediate = true
        database.start(node: -1, epoch: 0, {
            try await engine.createCourse(course)
            return .committed(try await engine.commitEncoded([batch], courseID: course.id).outcomes)
        }, failed: { .commitFailed($0) })
        database.executor.drain()
        database.immediate = false
        database.written = []
        let outcome = database.finished.popLast()
        guard case .committed(let outcomes)? = outcome?.result, case .committed? = outcomes.first else {
            throw StoreError.corrupt("the simulated set-up did not commit: \(String(describing: outcome?.result))")
        }
    }

    /// Runs the workload with faults, then lets the system quiesce and checks every invariant.
    public func run() -> SimulationResult {
        do {
            for index in clients.indices {
                clients[index].core.start()
                try carryOut(index)
            }
            while clients.contains(where: { $0.editsLeft > 0 }) {
                try tick(workload: true)
                if !result.violations.isEmpty { return finish() }
            }
            faultsOn = false
            for index in clients.indices where clients[index].paused { resume(index) }
            lastEventAt = max(lastEventAt, now)
            while !isQuiescent {
                try tick(workload: false)
                if !result.violations.isEmpty { return finish() }
                if now - lastEventAt > options.livenessBound {
                    violation("not every client was live at seq \(database.state.seq) within \(options.livenessBound) of the last commit or fault: \(describeState())")
                    return finish()
                }
            }
            result.settleTime = now - lastEventAt
            // Presence is repaired by refreshes and expiry, not by commits: let a TTL and a refresh
            // pass (without faults), then every view must hold exactly who is connected.
            let presenceSettled = now + options.presenceTTL + options.presenceRefresh * 2
            while now < presenceSettled || !isQuiescent {
                try tick(workload: false)
                if !result.violations.isEmpty { return finish() }
                if now - presenceSettled > options.livenessBound {
                    violation("the system did not quiesce after presence settled: \(describeState())")
                    return finish()
                }
            }
            try checkFinalState()
            checkPresence()
        } catch {
            violation("error: \(error)")
        }
        return finish()
    }

    // MARK: - Scheduler

    private func tick(workload: Bool) throws {
        step += 1
        result.steps = step
        now = now + .milliseconds(Int64.random(in: 1...6, using: &random))
        result.simulated = now - .zero
        try fireTimers()
        var choices: [(weight: Int, action: () throws -> Void)] = []
        // Sorted: a dictionary's order differs between runs, and the choice must not.
        for id in connections.keys.sorted() {
            let connection = connections[id]!
            let held = isHeld(connection.node)
            let throttled = connection.throttledUntil.map { now < $0 } ?? false
            if !connection.up.isEmpty, held || !throttled { choices.append((6, { if held { self.arrive(id) } else { try self.deliverUp(id) } })) }
            if !connection.pinged.isEmpty || (!held && (!connection.outbox.isEmpty || connection.presence != nil)), !clients[connection.client].paused {
                choices.append((6, { try self.deliverDown(id) }))
            }
        }
        if database.calls.contains(where: { !self.isHeld($0.node) && $0.readyAt <= self.now }) { choices.append((3, { self.completeStoreCall() })) }
        if database.finished.contains(where: { !self.isHeld($0.node) }) { choices.append((3, { self.deliverFinished() })) }
        if feeds.contains(where: { self.hasRoom($0.connection) && !self.isHeld($0.node) }) { choices.append((3, { self.continueCatchUp() })) }
        for index in nodes.indices where !nodes[index].notifications.isEmpty && !isHeld(index) {
            choices.append((2, { self.deliverNotification(index) }))
        }
        for index in nodes.indices where !nodes[index].relays.isEmpty && !isHeld(index) {
            choices.append((2, { self.deliverRelay(index) }))
        }
        if workload {
            for index in clients.indices where clients[index].editsLeft > 0 && !clients[index].paused {
                choices.append((3, { try self.edit(index) }))
            }
        }
        if faultsOn { addFaults(&choices) }
        guard !choices.isEmpty else { return }
        let total = choices.reduce(0) { $0 + $1.weight }
        var pick = Int.random(in: 0..<total, using: &random)
        for choice in choices {
            if pick < choice.weight { return try choice.action() }
            pick -= choice.weight
        }
    }

    /// Every timer due by now, in a fixed order: stalled clients waking, node listeners coming
    /// back and nodes' store checks, sessions' heartbeats, clients' engines.
    private func fireTimers() throws {
        for index in clients.indices {
            if let until = clients[index].pausedUntil, now >= until { resume(index) }
        }
        for index in nodes.indices {
            if let until = nodes[index].heldUntil, now >= until { release(index) }
            guard !isHeld(index) else { continue }
            if let back = nodes[index].listenerBackAt, now >= back {
                nodes[index].listenerBackAt = nil
                nodes[index].listenerUp = true
                log("node \(index)'s listener reconnects")
                if nodes[index].watch.listenerConnected(now: now) { readSeq(index) }
            }
            if nodes[index].watch.handleTimeout(now: now) { readSeq(index) }
            if now >= nodes[index].nextPresenceTick {
                nodes[index].nextPresenceTick = now + options.presenceRefresh
                nodes[index].presence.tick(now: now)
                perform(index)
            }
        }
        // The engines' pauses between retries.
        let due = database.sleepers.filter { $0.until <= now && !isHeld($0.node) }
        if !due.isEmpty {
            database.sleepers.removeAll { $0.until <= now && !isHeld($0.node) }
            for sleeper in due { sleeper.continuation.resume() }
        }
        settle()
        for id in connections.keys.sorted() {
            guard let until = connections[id]?.throttledUntil, now >= until else { continue }
            connections[id]!.throttledUntil = nil
            connections[id]!.session.readingPaused(false, now: now)
        }
        for id in connections.keys.sorted() {
            guard let deadline = connections[id]?.session.nextDeadline, now >= deadline else { continue }
            // The timer runs on the node's event loop: also while its tasks are held up.
            connections[id]!.session.handleTimeout(now: now)
            carryOutSession(id, fromTimer: true)
        }
        for index in clients.indices where !clients[index].paused {
            guard let deadline = clients[index].core.nextDeadline, now >= deadline else { continue }
            clients[index].core.handleTimeout(now: now)
            try carryOut(index)
        }
    }

    private func addFaults(_ choices: inout [(weight: Int, action: () throws -> Void)]) {
        // Weights out of 1,000 per step: rare next to the ~20 of normal work.
        let roll = Int.random(in: 0..<1_000, using: &random)
        let faults = options.faults
        if faults.contains(.drops), roll < 4, let id = connections.keys.sorted().randomElement(using: &random) {
            choices = [(1, { self.fault("drop connection \(id) of \(self.clients[self.connections[id]!.client].name)"); self.close(id) })]
        } else if faults.contains(.clientRestarts), roll >= 4, roll < 6 {
            let index = Int.random(in: 0..<clients.count, using: &random)
            choices = [(1, { try self.restartClient(index) })]
        } else if faults.contains(.serverRestarts), roll >= 6, roll < 7 {
            let node = Int.random(in: 0..<nodes.count, using: &random)
            choices = [(1, { self.restartNode(node) })]
        } else if faults.contains(.slowConsumers), roll >= 7, roll < 9 {
            let index = Int.random(in: 0..<clients.count, using: &random)
            let pause = Duration.milliseconds(Int64.random(in: 500...4_000, using: &random))
            choices = [(1, { self.pause(index, for: pause) })]
        } else if faults.contains(.listenerDrops), roll >= 9, roll < 10 {
            let node = Int.random(in: 0..<nodes.count, using: &random)
            let downFor = Duration.milliseconds(Int64.random(in: 10...2_000, using: &random))
            choices = [(1, { self.dropListener(node, for: downFor) })]
        } else if faults.contains(.nodeStalls), roll >= 10, roll < 12 {
            let node = Int.random(in: 0..<nodes.count, using: &random)
            // Up to beyond the idle timeout (three heartbeat intervals).
            let heldFor = Duration.milliseconds(Int64.random(in: 200...(options.heartbeat * 4).wholeMilliseconds, using: &random))
            choices = [(1, { self.hold(node, for: heldFor) })]
        } else if faults.contains(.storeFailures), roll >= 12, roll < 13 {
            let downFor = Duration.milliseconds(Int64.random(in: 50...3_000, using: &random))
            choices = [(1, {
                self.fault("the store is down for \(downFor.wholeMilliseconds) ms")
                self.storeDownUntil = max(self.storeDownUntil ?? self.now, self.now + downFor)
                self.lastEventAt = max(self.lastEventAt, self.storeDownUntil!)
            })]
        }
    }

    private var isQuiescent: Bool {
        database.calls.isEmpty && database.sleepers.isEmpty && database.finished.isEmpty && feeds.isEmpty && nodes.allSatisfy { $0.heldUntil == nil }
            && connections.values.allSatisfy { $0.up.isEmpty && $0.outbox.isEmpty && $0.arrived.isEmpty && $0.pinged.isEmpty && $0.presence == nil }
            && nodes.allSatisfy { $0.relays.isEmpty }
            && clients.allSatisfy { $0.core.isSettled && $0.core.phase == .live && $0.core.confirmed.seq == database.state.seq }
    }

    // MARK: - Clients

    private func connect(_ index: Int) throws {
        let id = nextConnection
        nextConnection += 1
        let node = Int.random(in: 0..<nodes.count, using: &random)
        var limits = SessionLimits()
        limits.pushesPerSecond = options.pushesPerSecond
        let welcome = Welcome(serverID: "node\(node)", heartbeatIntervalMs: UInt32(options.heartbeat.wholeMilliseconds),
                              maxPushesPerSecond: UInt32(options.pushesPerSecond), maxBytesPerSecond: UInt32(limits.bytesPerSecond))
        connections[id] = Connection(client: index, node: node, session: ServerSession(welcome: welcome, limits: limits, now: now),
                                     outbox: OutboxQueue(capacity: options.outboxFrames), serverStalled: isHeld(node))
        clients[index].connection = id
        clients[index].core.connecting(now: now)
        let hello = WireMessage.hello(Hello(clientID: clients[index].core.clientID, token: token))
        clients[index].order.observe(.connected)
        clients[index].order.observe(.sent(hello))
        connections[id]!.up.append(hello.payload())
        log("\(clients[index].name) connects to node \(node) (#\(id))")
        try carryOut(index)
    }

    private func edit(_ index: Int) throws {
        clients[index].editsLeft -= 1
        // One step in ten takes back the client's last edit (or makes an undo again): sent as a
        // new batch, resolved against whatever others did meanwhile.
        let roll = Int.random(in: 0..<100, using: &random)
        if roll >= 90 {
            // One step in ten changes what the client shows it is looking at.
            let focus = randomFocus(clients[index].core)
            clients[index].core.setPresence(PresenceAnnouncement(courseID: courseID, name: clients[index].name, color: UInt32(index), focus: focus))
            result.presenceUpdates += 1
            log("\(clients[index].name) focuses on \(focus.map { "\($0)" } ?? "nothing")")
            return try carryOut(index)
        }
        if roll < 10 {
            let redo = roll < 3
            do {
                if redo ? try clients[index].core.redo(now: now) : try clients[index].core.undo(now: now) {
                    result.undos += 1
                    log("\(clients[index].name) \(redo ? "redoes" : "undoes") its last edit")
                }
            } catch {
                log("\(clients[index].name) \(redo ? "redo" : "undo") refused locally: \(error)")
            }
            try carryOut(index)
            return try checkClient(index)
        }
        guard let op = randomOperation(&clients[index].core) else { return }
        do {
            try clients[index].core.edit(op, now: now)
            result.edits += 1
            log("\(clients[index].name) edits: \(op.summary)")
        } catch {
            log("\(clients[index].name) edit refused locally: \(error)")
        }
        try carryOut(index)
        try checkClient(index)
    }

    private func pause(_ index: Int, for duration: Duration) {
        fault("\(clients[index].name) stalls for \(duration.wholeMilliseconds) ms")
        clients[index].pausedUntil = now + duration
        if let id = clients[index].connection { connections[id]?.clientStalled = true }
    }

    private func resume(_ index: Int) {
        clients[index].pausedUntil = nil
        lastEventAt = max(lastEventAt, now)
        log("\(clients[index].name) resumes")
    }

    private func restartClient(_ index: Int) throws {
        fault("restart \(clients[index].name)")
        if let id = clients[index].connection { close(id, notifyClient: false) }
        guard let contents = try clients[index].replica.load(courseID: courseID) else {
            return violation("\(clients[index].name)'s replica lost its identity")
        }
        var core = ClientCore(contents, timing: timing(index), seed: random.next())
        core.compactionFloor = Self.compactionFloor
        if core.visible != clients[index].core.visible {
            violation("\(clients[index].name) shows another state after a restart: \(Self.difference(clients[index].core.visible, core.visible))")
        }
        // The old process's events died with it: a batch still pending will be answered again.
        for batch in core.pendingBatches {
            clients[index].acked[batch.batchSeq] = nil
        }
        try clients[index].replica.apply(core.takeWrite())
        clients[index].connection = nil
        clients[index].pausedUntil = nil
        clients[index].core = core
        clients[index].core.start()
        try carryOut(index)
    }

    /// Writes the engine's step to the replica and carries out its actions.
    private func carryOut(_ index: Int) throws {
        try clients[index].replica.apply(clients[index].core.takeWrite())
        for action in clients[index].core.takeActions() {
            switch action {
            case .send(let message):
                if case .push(let push) = message { clients[index].created.insert(push.batchSeq) }
                if case .ping = message { result.pings += 1 }
                guard let id = clients[index].connection else { break }
                clients[index].order.observe(.sent(message))
                connections[id]?.up.append(message.payload())
            case .emit(.acked(let batchSeq, let seq, _)):
                clients[index].acked[batchSeq, default: 0] += 1
                clients[index].ackedSeqs[batchSeq] = seq
            case .emit(.rejected(let rejected)):
                result.rejections += 1
                for seq in Set(rejected.droppedEdits.map(\.batchSeq)) { clients[index].dropped[seq, default: 0] += 1 }
                log("\(clients[index].name) rolls back batch \(rejected.batchSeq): \(rejected.code)")
            case .emit:
                break
            case .reconnect(let reason):
                log("\(clients[index].name) reconnects: \(reason)")
                if let id = clients[index].connection {
                    // Leaving a node whose tasks were held up (it sent nothing, answered nothing) is right.
                    if reason.hasPrefix("idle:") || reason.hasPrefix("no Welcome"), connections[id]?.clientStalled == false,
                       connections[id]?.serverStalled == false {
                        violation("\(clients[index].name) gave up on #\(id), which it kept reading: \(reason)")
                    }
                    close(id)
                }
            case .stop(let error):
                violation("\(clients[index].name) was refused for good: \(error)")
            case .connect:
                try connect(index)
            }
        }
        for batch in clients[index].core.pendingBatches { clients[index].created.insert(batch.batchSeq) }
    }

    private func checkClient(_ index: Int) throws {
        let core = clients[index].core
        let problems = core.visible.invariantViolations()
        if !problems.isEmpty { violation("\(clients[index].name)'s visible state breaks invariants: \(problems.prefix(3))") }
        // A batch whose commit is in the confirmed state must not also be replayed as pending:
        // the visible state would hold its effect twice.
        let confirmedHere = Set(database.history.prefix(Int(core.confirmed.seq)).filter { $0.origin.clientID == core.clientID }.map(\.origin.batchSeq))
        for batch in core.pendingBatches where confirmedHere.contains(batch.batchSeq) {
            violation("\(clients[index].name)'s batch \(batch.batchSeq) is both confirmed and pending: applied twice in what it shows")
        }
    }

    // MARK: - Network

    private func deliverUp(_ id: Int) throws {
        hand(connections[id]!.up.removeFirst(), arrivedAt: now, to: id)
    }

    /// Hands a frame to connection `id`'s session as of when it arrived (the driver passes the
    /// arrival, not the moment its task got round to the frame) and carries out its decisions.
    private func hand(_ bytes: [UInt8], arrivedAt arrival: Moment, to id: Int) {
        let input = Result { () throws(WireError) in try WireMessage(payload: bytes, sentBy: .client) }
        if tracing, case .success(let message) = input { log("\(clients[connections[id]!.client].name) → #\(id): \(Self.brief(message))") }
        connections[id]!.session.receive(input, bytes: bytes.count, now: arrival, date: date)
        carryOutSession(id)
    }

    /// A frame reaches a held-up node: its event loop decodes it and marks the arrival (which the
    /// heartbeat counts), and it waits for the node's tasks.
    private func arrive(_ id: Int) {
        let bytes = connections[id]!.up.removeFirst()
        connections[id]!.arrived.append((bytes, now))
        connections[id]!.session.peerSent(at: now)
    }

    private func isHeld(_ node: Int) -> Bool { nodes[node].heldUntil != nil }

    private func hold(_ node: Int, for duration: Duration) {
        fault("node \(node)'s tasks are held up for \(duration.wholeMilliseconds) ms")
        nodes[node].heldUntil = max(nodes[node].heldUntil ?? now, now + duration)
        for id in connections.keys where connections[id]?.node == node { connections[id]!.serverStalled = true }
    }

    /// The node's tasks run again: they hand over what arrived meanwhile, in order.
    private func release(_ node: Int) {
        nodes[node].heldUntil = nil
        lastEventAt = max(lastEventAt, now)
        log("node \(node)'s tasks run again")
        for id in connections.keys.sorted() where connections[id]?.node == node {
            while let frame = connections[id]?.arrived.first {
                connections[id]!.arrived.removeFirst()
                hand(frame.bytes, arrivedAt: frame.at, to: id)
            }
        }
    }

    /// Carries out what connection `id`'s session decided. What its timer decided (`fromTimer`),
    /// the driver does on the event loop: Pings straight to the socket (not after a queued Error).
    private func carryOutSession(_ id: Int, fromTimer: Bool = false) {
        guard let node = connections[id]?.node else { return }
        for action in connections[id]!.session.takeActions() {
            switch action {
            case .send(let message) where fromTimer:
                if connections[id]?.outbox.isClosing == false { connections[id]!.pinged.append(message.payload()) }
            case .send(let message):
                send(id, message)
            case .close(let error):
                if error.code == .rateLimited {
                    violation("node \(node) cut #\(id) of \(clients[connections[id]!.client].name) for its rate: the client's pacing did not keep to it: \(error.message)")
                }
                if error.code == .idleTimeout, connections[id]?.clientStalled == false {
                    violation("node \(node) closed #\(id) of \(clients[connections[id]!.client].name) for idleness while its client read and answered: \(error.message)")
                }
                connections[id]?.outbox.close(error)
            case .authenticate(let token):
                let outcome = Result { try JSONDecoder().decode(TokenClaims.self, from: Data(token.utf8)) }
                    .mapError { _ in ConnectionError(.unauthenticated, "the simulated token does not decode") }
                    .flatMap { $0.principal(at: date) }
                connections[id]!.session.authenticated(outcome, now: now, date: date)
                carryOutSession(id)
            case .ready:
                break
            case .throttle(let until):
                log("node \(node) throttles #\(id) until \(until) (over the push rate)")
                connections[id]!.throttledUntil = until
                connections[id]!.session.readingPaused(true, now: now)
            case .subscribe(_, let since, let presence):
                connections[id]!.wantsPresence = presence
                nodes[node].hub.subscribe(id, sinceSeq: since)
                perform(node)
            case .unsubscribe:
                nodes[node].hub.unsubscribe(id)
                nodes[node].presence.remove(id)
                perform(node)
            case .setPresence(_, let peer):
                nodes[node].presence.set(peer, origin: "node\(node)#\(id)", from: id)
                perform(node)
            case .push(let batch):
                if nodes[node].hub.push(batch, from: id) {
                    connections[id]!.unanswered[batch.batchSeq, default: 0] += 1
                    pushedOn[node, default: [:]][BatchKey(client: batch.clientID, batchSeq: batch.batchSeq), default: []].append(id)
                    perform(node)
                }
            }
        }
    }

    /// The client reads what its connection's outbox holds (all of it, as a reading client keeps
    /// up), in reads of one to eight frames, each taken as one engine step as `SyncClient` takes
    /// the frames of one socket read.
    private func deliverDown(_ id: Int) throws {
        let index = connections[id]!.client
        while true {
            let size = Int.random(in: 1...8, using: &readSizes)
            var messages: [WireMessage] = []
            var closing = false
            while messages.count < size, let ping = connections[id]?.pinged.first {
                connections[id]!.pinged.removeFirst()
                messages.append(try WireMessage(payload: ping, sentBy: .server))
            }
            // A held-up node's writer sends nothing.
            while messages.count < size, !closing, let node = connections[id]?.node, !isHeld(node), let item = connections[id]?.outbox.next() {
                switch item {
                case .frame(let bytes): messages.append(try WireMessage(payload: bytes, sentBy: .server))
                case .close(let error):
                    // The Error is the last frame: the server closes.
                    messages.append(.error(error))
                    closing = true
                }
            }
            // Presence goes when nothing else waits.
            if messages.count < size, !closing, let node = connections[id]?.node, !isHeld(node), connections[id]?.outbox.isEmpty == true,
               let change = connections[id]?.presence {
                connections[id]!.presence = nil
                messages.append(try WireMessage(payload: WireMessage.presence(change).payload(), sentBy: .server))
            }
            guard !messages.isEmpty else { return }
            for message in messages {
                if tracing { log("#\(id) → \(clients[index].name): \(Self.brief(message))") }
                checkOrder(id, message)
            }
            clients[index].core.received(messages, now: now)
            if closing { close(id) }
            try carryOut(index)
            try checkClient(index)
        }
    }

    /// The protocol's ordering rules as the client sees them: every commit once, in seq order, no
    /// gap (``WireOrderChecker``, the checker `coursesync stress` runs); and, with what only the
    /// simulation knows (which push made each commit), a commit's Ack before its Diff on the
    /// connection whose push made it.
    private func checkOrder(_ id: Int, _ message: WireMessage) {
        guard var connection = connections[id] else { return }
        let index = connection.client
        let name = clients[index].name
        switch message {
        case .ack(let ack):
            connection.awaitingAck.remove(ack.batchSeq)
        case .diff(let diff) where diff.origin.clientID == clients[index].core.clientID && connection.awaitingAck.contains(diff.origin.batchSeq):
            violation("\(name) received the Diff of its batch \(diff.origin.batchSeq) (seq \(diff.seq)) on #\(id) before its Ack")
        default:
            break
        }
        connections[id] = connection
        let known = clients[index].order.violations.count
        clients[index].order.observe(.received(message))
        for problem in clients[index].order.violations.dropFirst(known) { violation("\(name) on #\(id): \(problem)") }
    }

    /// Queues a frame for the client; an overflow cuts the connection as a slow consumer.
    private func send(_ id: Int, _ message: WireMessage) {
        guard let connection = connections[id] else { return }
        if connections[id]!.outbox.enqueue(message.payload()) == .overflowed {
            nodes[connection.node].hub.sendFailed(id)
            log("node \(connection.node) cuts #\(id) (slow consumer)")
            if !connection.clientStalled {
                violation("node \(connection.node) cut #\(id) of \(clients[connection.client].name) as a slow consumer while it kept reading")
            }
        }
    }

    private func hasRoom(_ id: Int) -> Bool {
        connections[id]?.outbox.hasRoom ?? true  // gone: the hub finds out
    }

    /// Closes connection `id` on both sides; the client reconnects after its engine's backoff.
    private func close(_ id: Int, notifyClient: Bool = true) {
        guard var connection = connections.removeValue(forKey: id) else { return }
        connection.session.closed()
        _ = connection.session.takeActions()  // its unsubscribe: done below (one course)
        nodes[connection.node].hub.unsubscribe(id)
        nodes[connection.node].presence.remove(id)
        perform(connection.node)
        feeds.removeAll { $0.connection == id }
        let index = connection.client
        guard clients[index].connection == id else { return }
        clients[index].connection = nil
        guard notifyClient else { return }
        clients[index].core.disconnected(now: now)
        try? carryOut(index)
    }

    // MARK: - Server nodes

    /// Carries out node `node`'s hub's effects until it has none.
    private func perform(_ node: Int) {
        // Catch-up reads by cursor: one read for the subscribers caught up from the same one, as
        // the real hub shares it.
        var loads: [CourseSeq: [SimDatabase.CatchUpReader]] = [:]
        defer { for cursor in loads.keys.sorted() { catchUp(loads[cursor]!, after: cursor, on: node) } }
        while case let effects = nodes[node].hub.takeEffects(), !effects.isEmpty {
            for effect in effects {
                switch effect {
                case .commit(let batches):
                    commit(batches, on: node)
                case .send(let id, let message):
                    answered(id, message)
                    send(id, message)
                    if case .subscribed = message, connections[id]?.wantsPresence == true { nodes[node].presence.watch(id) }
                case .broadcast(let diff, let ids):
                    for id in ids { send(id, .diff(diff)) }
                case .loadCatchUp(let id, let generation, let cursor):
                    if connections[id] == nil || connections[id]!.outbox.isClosing {
                        nodes[node].hub.unsubscribe(id)
                    } else {
                        loads[cursor, default: []].append(SimDatabase.CatchUpReader(connection: id, generation: generation))
                    }
                case .sendCatchUp(let id, let generation, let messages):
                    feeds.append(CatchUpFeed(node: node, connection: id, generation: generation, messages: messages))
                case .close(let id, let error):
                    connections[id]?.outbox.close(error)
                case .release, .idle:
                    break
                }
            }
        }
        for effect in nodes[node].presence.takeEffects() {
            switch effect {
            case .send(let id, let change):
                guard connections[id]?.outbox.isClosing == false else { continue }
                connections[id]!.presence = connections[id]!.presence.map { $0.followed(by: change) } ?? change
            case .relay(let relay):
                relayPresence(relay, from: node)
            }
        }
    }

    /// A node's presence relay reaches the other nodes' listeners (like commit notifications:
    /// with the notification fault some are lost or repeated; a listener that is down hears nothing).
    private func relayPresence(_ relay: PresenceRelay, from node: Int) {
        for index in nodes.indices where index != node && nodes[index].listenerUp {
            // Lossy only while faults are on: afterwards the refreshes must be able to repair.
            let copies = listenerCopies(lossy: options.faults.contains(.notifications) && faultsOn)
            // Through its text form, as on PostgreSQL.
            for piece in relay.pieces() {
                guard let decoded = PresenceRelay(text: piece.text) else {
                    violation("a presence relay does not survive its text form: \(piece)")
                    continue
                }
                nodes[index].relays += Array(repeating: decoded, count: copies)
            }
        }
    }

    private func deliverRelay(_ node: Int) {
        nodes[node].presence.relayed(takeAny(&nodes[node].relays), now: now)
        perform(node)
    }

    /// How many copies of one node-to-node message a listener gets: with `lossy`, one in ten is
    /// lost and one in twenty comes twice.
    private func listenerCopies(lossy: Bool) -> Int {
        let roll = lossy ? Int.random(in: 0..<100, using: &random) : 50
        return roll < 10 ? 0 : roll >= 95 ? 2 : 1
    }

    /// One of a listener's messages: any of them with the notification fault (they overtake each
    /// other), else the oldest.
    private func takeAny<T>(_ messages: inout [T]) -> T {
        messages.remove(at: options.faults.contains(.notifications) ? Int.random(in: 0..<messages.count, using: &random) : 0)
    }

    // MARK: - The store

    /// Starts node `node`'s engine on `batches` (a task on the simulator's executor).
    private func commit(_ batches: [Batch], on node: Int) {
        // The connection each batch came on: the hub answers a course's pushes in arrival order.
        for batch in batches {
            let key = BatchKey(batch)
            guard let id = pushedOn[node]?[key]?.first else { continue }
            pushedOn[node]![key]!.removeFirst()
            // A batch twice in a group (pushed again on a new connection): the first one commits.
            if nodes[node].committing[key] == nil { nodes[node].committing[key] = id }
        }
        let engine = nodes[node].engine, courseID = courseID
        database.start(node: node, epoch: nodes[node].epoch, { .committed(try await engine.commitEncoded(batches, courseID: courseID).outcomes) },
                       failed: { .commitFailed($0) })
    }

    private func catchUp(_ readers: [SimDatabase.CatchUpReader], after cursor: CourseSeq, on node: Int) {
        if readers.count > 1 { result.sharedCatchUps += 1 }
        let engine = nodes[node].engine, courseID = courseID, limit = catchUpChunk
        database.start(node: node, epoch: nodes[node].epoch, {
            .caughtUp(readers: readers, try await engine.catchUpEncoded(courseID: courseID, after: cursor, limit: limit).catchUp)
        }, failed: { .catchUpFailed(readers: readers, $0) })
    }

    /// Node `node` checks the course's seq (its ``CommitWatch``).
    private func readSeq(_ node: Int) {
        let engine = nodes[node].engine, courseID = courseID
        database.start(node: node, epoch: nodes[node].epoch, { .seq(try await engine.courseSeq(courseID)) }, failed: { .seqFailed($0) })
    }

    /// Completes one outstanding database call, any node's, deciding whether it fails: the
    /// database serializes writes, and reads and other nodes' writes overtake each other.
    private func completeStoreCall() {
        // Not a held-up node's: its task awaiting the call does not run.
        let eligible = database.calls.indices.filter { !isHeld(database.calls[$0].node) && database.calls[$0].readyAt <= now }
        let call = database.calls.remove(at: eligible[Int.random(in: 0..<eligible.count, using: &random)])
        let fate = storeFate()
        switch fate {
        case .failBefore:
            if storeDownUntil == nil { fault("node \(call.node)'s \(call.operation) call fails before it runs") }
        case .failAfter:
            fault("node \(call.node)'s \(call.operation) call fails after it ran\(call.operation == .commit ? " (the write committed; its answer is lost)" : "")")
        case .run, .abandoned:
            break
        }
        call.continuation.resume(returning: fate)
        settle()
    }

    /// Whether the call completing now fails, and when: a database call fails before it runs
    /// while the database is down, and one call in 33 fails either way while faults are on.
    private func storeFate() -> SimDatabase.Fate {
        guard options.faults.contains(.storeFailures) else { return .run }
        if let until = storeDownUntil {
            if now < until { return .failBefore }
            storeDownUntil = nil
        }
        guard faultsOn, Int.random(in: 0..<100, using: &random) < 3 else { return .run }
        return Bool.random(using: &random) ? .failBefore : .failAfter
    }

    /// Runs the tasks a completed call or pause woke until each waits again, then takes note of
    /// what they wrote: a commit is announced to every node's listener, and its author's
    /// connection must see its Ack before its Diff. No node's cache may be ahead of the database
    /// or differ from the course the change log builds at its seq.
    private func settle() {
        database.executor.drain()
        for (node, diffs) in database.written {
            guard let last = diffs.last else { continue }
            result.commits += diffs.count
            lastEventAt = max(lastEventAt, now)
            log("node \(node) commits \(diffs.count) batch(es) → seq \(last.seq)")
            for diff in diffs {
                if let pusher = nodes[node].committing[BatchKey(client: diff.origin.clientID, batchSeq: diff.origin.batchSeq)] {
                    connections[pusher]?.awaitingAck.insert(diff.origin.batchSeq)
                }
            }
            notify(last.seq)
        }
        database.written = []
        for index in nodes.indices {
            guard let cached = nodes[index].engine.cachedState(of: courseID) else { continue }
            if Int(cached.seq) >= database.states.count {
                violation("node \(index) caches the course at seq \(cached.seq), ahead of the database at \(database.state.seq)")
            } else if cached != database.states[Int(cached.seq)] {
                violation("node \(index)'s cached course at seq \(cached.seq) differs from the database's: \(Self.difference(cached, database.states[Int(cached.seq)]))")
            }
        }
    }

    /// Hands one finished engine call to its node's hub (a node that restarted since hears
    /// nothing of it).
    private func deliverFinished() {
        let eligible = database.finished.indices.filter { !isHeld(database.finished[$0].node) }
        let item = database.finished.remove(at: eligible[Int.random(in: 0..<eligible.count, using: &random)])
        let node = item.node
        guard nodes[node].epoch == item.epoch else { return }
        switch item.result {
        case .committed(let outcomes):
            nodes[node].committing = [:]
            nodes[node].hub.committed(outcomes)
        case .commitFailed(let error):
            nodes[node].committing = [:]
            log("node \(node)'s group commit failed: \(error)")
            nodes[node].hub.commitFailed(unknownCourse: false)
        case .caughtUp(let readers, let catchUp):
            for reader in readers { nodes[node].hub.caughtUp(reader.connection, generation: reader.generation, catchUp) }
        case .catchUpFailed(let readers, let error):
            log("node \(node)'s catch-up read for \(readers.map { "#\($0.connection)" }.joined(separator: ", ")) failed: \(error)")
            for reader in readers { nodes[node].hub.catchUpFailed(reader.connection, generation: reader.generation, unknownCourse: false) }
        case .seq(let seq):
            if let seq { nodes[node].hub.noteCommitted(upTo: seq) }
        case .seqFailed(let error):
            log("node \(node) cannot read the course's seq: \(error)")
        }
        perform(node)
    }

    /// A hub's Ack or Reject: every push it took is answered once (a push whose connection the hub
    /// closes is not answered: its client resends it).
    private func answered(_ id: Int, _ message: WireMessage) {
        let batchSeq: BatchSeq
        switch message {
        case .ack(let ack):
            batchSeq = ack.batchSeq
            if let index = connections[id]?.client {
                let key = BatchKey(client: clients[index].core.clientID, batchSeq: ack.batchSeq)
                if database.acks[key]?.seq != ack.seq {
                    violation("node \(connections[id]!.node) acks batch \(ack.batchSeq) of \(clients[index].name) as seq \(ack.seq), which the database does not hold")
                }
            }
        case .reject(let reject):
            batchSeq = reject.batchSeq
        default:
            return
        }
        guard connections[id] != nil else { return }
        if connections[id]!.unanswered[batchSeq, default: 0] == 0 {
            violation("node \(connections[id]!.node) answers batch \(batchSeq) on #\(id) again, or unasked")
        } else {
            connections[id]!.unanswered[batchSeq]! -= 1
            if connections[id]!.unanswered[batchSeq] == 0 { connections[id]!.unanswered[batchSeq] = nil }
        }
    }

    /// The store announces a commit to every node's listener (PostgreSQL's NOTIFY reaches the
    /// committing node too); with the notification fault some are lost or duplicated, also after
    /// the other faults stop (so the last commits' notifications may be lost too, and liveness
    /// rests on the nodes' checks of the store).
    private func notify(_ seq: CourseSeq) {
        for index in nodes.indices where nodes[index].listenerUp {
            let copies = listenerCopies(lossy: options.faults.contains(.notifications))
            if copies == 0 { result.notificationsLost += 1 }
            nodes[index].notifications += Array(repeating: seq, count: copies)
        }
    }

    /// Node `node`'s listener hands one notification to its hub, in any order.
    private func deliverNotification(_ node: Int) {
        let seq = takeAny(&nodes[node].notifications)
        nodes[node].hub.noteCommitted(upTo: seq)
        perform(node)
    }

    private func dropListener(_ node: Int, for duration: Duration) {
        fault("node \(node)'s listener loses its connection for \(duration.wholeMilliseconds) ms (\(nodes[node].notifications.count) notifications lost)")
        result.notificationsLost += nodes[node].notifications.count
        nodes[node].notifications = []
        nodes[node].relays = []
        nodes[node].listenerUp = false
        nodes[node].listenerBackAt = now + duration
    }

    private func continueCatchUp() {
        guard let index = feeds.firstIndex(where: { hasRoom($0.connection) && !isHeld($0.node) }) else { return }
        var feed = feeds[index]
        guard connections[feed.connection] != nil else {
            feeds.remove(at: index)
            return
        }
        while !feed.messages.isEmpty {
            let outcome = connections[feed.connection]!.outbox.enqueue(feed.messages[0].payload(), waiting: true)
            if outcome == .full { break }
            feed.messages.removeFirst()
            if outcome == .refused { feed.messages = [] }
        }
        if feed.messages.isEmpty && hasRoom(feed.connection) {
            feeds.remove(at: index)
            nodes[feed.node].hub.catchUpSent(feed.connection, generation: feed.generation)
            perform(feed.node)
        } else {
            feeds[index] = feed
        }
    }

    private func restartNode(_ node: Int) {
        // A group the database was writing may or may not have made it: decided at random, and
        // either way nobody hears of it.
        let writing = database.calls.filter { $0.node == node && $0.operation == .commit }.count
        database.abandon(node: node)
        settle()
        fault("restart node \(node) (\(writing) write(s) in flight)")
        feeds.removeAll { $0.node == node }
        nodes[node] = newNode(node, epoch: nodes[node].epoch + 1)
        pushedOn[node] = nil
        for id in connections.keys.sorted() where connections[id]!.node == node { close(id) }
        lastEventAt = max(lastEventAt, now)
    }
}
