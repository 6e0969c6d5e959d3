import Foundation
import SyncClient
import SyncModel
import SyncServer
import SyncWire

/// Which faults a run injects.
public struct Faults: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Connections dropped at random moments (frames in flight either way are lost).
    public static let drops = Faults(rawValue: 1)
    /// A client process restarts: its engine is rebuilt from its replica.
    public static let clientRestarts = Faults(rawValue: 2)
    /// The server restarts: connections and queued, uncommitted batches are lost; the store stays.
    public static let serverRestarts = Faults(rawValue: 4)
    /// A client stops reading for a while, so the server cuts it as a slow consumer.
    public static let slowConsumers = Faults(rawValue: 8)
    public static let all: Faults = [.drops, .clientRestarts, .serverRestarts, .slowConsumers]

    public static let names: [(String, Faults)] = [("drops", .drops), ("client-restarts", .clientRestarts),
                                                   ("server-restarts", .serverRestarts), ("slow-consumers", .slowConsumers)]

    public var description: String {
        let named = Self.names.filter { contains($0.1) }.map(\.0)
        return named.isEmpty ? "none" : named.joined(separator: ",")
    }
}

public struct SimulationOptions: Hashable, Sendable {
    public var clients = 4
    public var editsPerClient = 40
    public var faults = Faults.all
    /// Change-log entries the store keeps: small, so reconnecting clients also get snapshots.
    public var logRetention = 24
    /// Frames queued for a client before the server cuts it as a slow consumer.
    public var outboxFrames = 48
    /// Steps after the workload before a run that has not settled is a failure.
    public var quiescenceSteps = 20_000

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
    public var commits = 0
    public var rejections = 0
    public var faults = 0

    public var passed: Bool { violations.isEmpty }
}

/// The whole system under a seeded scheduler: the server's decisions (``ServerSession`` for the
/// handshake and authorization, ``HubCore`` for queueing, group commits, answers, fan-out and
/// catch-up, ``GroupCommit`` over ``SimStore`` for resolution; store calls complete at later
/// steps, reads in any order), N client engines (``ClientCore`` with a real ``Replica`` in memory),
/// and a network of FIFO connections whose frames (encoded and decoded like on the wire) are
/// delivered in a random interleaving. Same seed, same run.
public final class Simulation {
    struct Client {
        let name: String
        var core: ClientCore
        let replica: Replica
        var connection: Int?
        var reconnectAt = 0
        var paused = 0
        var editsLeft: Int
        var created = Set<BatchSeq>()
        var acked: [BatchSeq: Int] = [:]
        /// The course seq each ack said its batch committed as.
        var ackedSeqs: [BatchSeq: CourseSeq] = [:]
        var dropped: [BatchSeq: Int] = [:]
    }

    struct Connection {
        let client: Int
        var session: ServerSession
        var up: [[UInt8]] = []
        var down: [[UInt8]] = []
        /// The server sent an `Error`: it closes once the frames before it are delivered.
        var closing = false
    }

    let seed: UInt64
    let options: SimulationOptions
    var random: SplitMix64
    var store: SimStore
    var clients: [Client] = []
    var connections: [Int: Connection] = [:]
    private var nextConnection = 1
    /// The server's course hub: the production decisions, driven here.
    var hub: HubCore<Int>
    /// Store calls the hub started, completed at later steps (in any order for reads).
    var storeCalls: [StoreCall] = []
    /// Catch-ups whose frames are queued, waiting for room in the connection's outbox.
    var spaceWaiters: [(connection: Int, generation: Int)] = []
    /// How many diffs one catch-up read returns (small, so catch-ups take several rounds).
    private let catchUpChunk = 8

    enum StoreCall {
        case commit([Batch])
        case load(connection: Int, generation: Int, after: CourseSeq)
    }
    private let authority: TokenAuthority
    private let token: String
    let courseID: EntityID
    private let now = Date(timeIntervalSince1970: 1_800_000_000)
    var step = 0
    var result: SimulationResult
    let tracing: Bool
    private var faultsOn = true

    public init(seed: UInt64, options: SimulationOptions = SimulationOptions(), tracing: Bool = false) throws {
        self.seed = seed
        self.options = options
        self.tracing = tracing
        random = SplitMix64(seed: seed)
        var ids = SplitMix64(seed: seed ^ 0xC0FF_EE00_D15E_A5E5)
        courseID = .random(using: &ids)
        store = SimStore(course: Course(id: courseID, title: "Simulated course"), logRetention: options.logRetention, seed: seed ^ 0x5EED)
        hub = HubCore(courseID: courseID, maxGroupBatches: 8, catchUpChunk: catchUpChunk)
        authority = try TokenAuthority(secret: Array("simulation-secret-of-at-least-32-bytes".utf8))
        token = authority.issue(TokenClaims(user: "sim", expires: now.addingTimeInterval(86_400), courses: [courseID: .editor]))
        result = SimulationResult(seed: seed, violations: [], trace: [])
        // A course with a few chapters and a media library, committed before the clients start.
        var ops: [SyncModel.Operation] = (1...3).map { .createChapter(temp: TempID(UInt64($0))!, title: "Chapter \($0)", placement: .atEnd) }
        ops += (1...12).map {
            .registerMedia(temp: TempID(UInt64(100 + $0))!, name: "clip \($0)", cdnURL: "https://cdn.example.com/\($0)", durationMs: 1_000, byteSize: 1_000)
        }
        _ = store.commit([Batch(clientID: ClientID(.random(using: &ids)), courseID: courseID, batchSeq: 1, baseSeq: 0, ops: ops)])
        for index in 0..<options.clients {
            let replica = try Replica(inMemory: "client\(index)")
            let contents = ReplicaContents.empty(clientID: ClientID(.random(using: &ids)), courseID: courseID)
            try replica.create(contents)
            var core = ClientCore(contents)
            try replica.apply(core.takeWrite())
            clients.append(Client(name: "c\(index)", core: core, replica: replica, editsLeft: options.editsPerClient))
        }
    }

    /// Runs the workload with faults, then lets the system quiesce and checks every invariant.
    public func run() -> SimulationResult {
        do {
            for index in clients.indices { try connect(index) }
            while clients.contains(where: { $0.editsLeft > 0 }) {
                try tick(workload: true)
                if !result.violations.isEmpty { return finish() }
            }
            faultsOn = false
            var quiet = 0
            while !isQuiescent {
                try tick(workload: false)
                quiet += 1
                if !result.violations.isEmpty { return finish() }
                if quiet > options.quiescenceSteps {
                    violation("did not quiesce within \(options.quiescenceSteps) steps: \(describeState())")
                    return finish()
                }
            }
            try checkFinalState()
        } catch {
            violation("error: \(error)")
        }
        return finish()
    }

    // MARK: - Scheduler

    private func tick(workload: Bool) throws {
        step += 1
        result.steps = step
        for index in clients.indices where clients[index].connection == nil && step >= clients[index].reconnectAt {
            try connect(index)
        }
        var choices: [(weight: Int, action: () throws -> Void)] = []
        // Sorted: a dictionary's order differs between runs, and the choice must not.
        for id in connections.keys.sorted() {
            let connection = connections[id]!
            if !connection.up.isEmpty { choices.append((6, { try self.deliverUp(id) })) }
            if !connection.down.isEmpty, clients[connection.client].paused == 0 { choices.append((6, { try self.deliverDown(id) })) }
        }
        if !storeCalls.isEmpty { choices.append((3, { self.completeStoreCall() })) }
        if spaceWaiters.contains(where: { self.hasRoom($0.connection) }) { choices.append((3, { self.continueCatchUp() })) }
        if workload {
            for index in clients.indices where clients[index].editsLeft > 0 {
                choices.append((3, { try self.edit(index) }))
            }
        }
        for index in clients.indices where clients[index].core.pendingBatches.last.map({ _ in true }) ?? false {
            choices.append((1, { try self.seal(index) }))
        }
        if faultsOn { addFaults(&choices) }
        for index in clients.indices where clients[index].paused > 0 { clients[index].paused -= 1 }
        guard !choices.isEmpty else { return }
        let total = choices.reduce(0) { $0 + $1.weight }
        var pick = Int.random(in: 0..<total, using: &random)
        for choice in choices {
            if pick < choice.weight { return try choice.action() }
            pick -= choice.weight
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
            choices = [(1, { self.restartServer() })]
        } else if faults.contains(.slowConsumers), roll >= 7, roll < 9 {
            let index = Int.random(in: 0..<clients.count, using: &random)
            choices = [(1, { self.fault("\(self.clients[index].name) stops reading"); self.clients[index].paused = 400 })]
        }
    }

    private var isQuiescent: Bool {
        storeCalls.isEmpty && spaceWaiters.isEmpty && connections.values.allSatisfy { $0.up.isEmpty && $0.down.isEmpty }
            && clients.allSatisfy { $0.core.isSettled && $0.core.phase == .live && $0.core.confirmed.seq == store.state.seq }
    }

    // MARK: - Clients

    private func connect(_ index: Int) throws {
        let id = nextConnection
        nextConnection += 1
        connections[id] = Connection(client: index, session: ServerSession(
            authority: authority, welcome: Welcome(serverID: "sim", heartbeatIntervalMs: 15_000)))
        clients[index].connection = id
        clients[index].core.connecting()
        connections[id]!.up.append(WireMessage.hello(Hello(clientID: clients[index].core.clientID, token: token)).payload())
        try carryOut(index)
        log("\(clients[index].name) connects (#\(id))")
    }

    private func edit(_ index: Int) throws {
        clients[index].editsLeft -= 1
        guard let op = randomOperation(&clients[index].core) else { return }
        do {
            try clients[index].core.edit(op)
            result.edits += 1
            log("\(clients[index].name) edits: \(op.summary)")
        } catch {
            log("\(clients[index].name) edit refused locally: \(error)")
        }
        try carryOut(index)
        try checkClient(index)
    }

    private func seal(_ index: Int) throws {
        clients[index].core.seal()
        try carryOut(index)
    }

    private func restartClient(_ index: Int) throws {
        fault("restart \(clients[index].name)")
        if let id = clients[index].connection { close(id) }
        guard let contents = try clients[index].replica.load(courseID: courseID) else {
            return violation("\(clients[index].name)'s replica lost its identity")
        }
        var core = ClientCore(contents)
        if core.visible != clients[index].core.visible {
            violation("\(clients[index].name) shows another state after a restart: \(Self.difference(clients[index].core.visible, core.visible))")
        }
        // The old process's events died with it: a batch still pending will be answered again.
        for batch in core.pendingBatches {
            clients[index].acked[batch.batchSeq] = nil
        }
        try clients[index].replica.apply(core.takeWrite())
        clients[index].core = core
        clients[index].reconnectAt = step + Int.random(in: 1...50, using: &random)
    }

    /// Writes the engine's step to the replica and carries out its actions.
    private func carryOut(_ index: Int) throws {
        try clients[index].replica.apply(clients[index].core.takeWrite())
        for action in clients[index].core.takeActions() {
            switch action {
            case .send(let message):
                if case .push(let push) = message { clients[index].created.insert(push.batchSeq) }
                if let id = clients[index].connection { connections[id]?.up.append(message.payload()) }
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
                if let id = clients[index].connection { close(id) }
            case .stop(let error):
                violation("\(clients[index].name) was refused for good: \(error)")
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
        let confirmedHere = Set(store.history.prefix(Int(core.confirmed.seq)).filter { $0.origin.clientID == core.clientID }.map(\.origin.batchSeq))
        for batch in core.pendingBatches where confirmedHere.contains(batch.batchSeq) {
            violation("\(clients[index].name)'s batch \(batch.batchSeq) is both confirmed and pending: applied twice in what it shows")
        }
    }

    // MARK: - Network

    private func deliverUp(_ id: Int) throws {
        let bytes = connections[id]!.up.removeFirst()
        let message = try WireMessage(payload: bytes)
        if tracing { log("\(clients[connections[id]!.client].name) → #\(id): \(Self.brief(message))") }
        let actions = connections[id]!.session.receive(.success(message), now: now)
        for action in actions {
            guard connections[id] != nil else { return }
            switch action {
            case .send(let reply): sendDown(id, reply)
            case .close(let error):
                sendDown(id, .error(error))
                connections[id]?.closing = true
            case .subscribe(_, let since):
                perform(hub.subscribe(id, sinceSeq: since))
            case .unsubscribe:
                hub.unsubscribe(id)
            case .push(let batch):
                if let effects = hub.push(batch, from: id) { perform(effects) }
            }
        }
    }

    private func deliverDown(_ id: Int) throws {
        let bytes = connections[id]!.down.removeFirst()
        let message = try WireMessage(payload: bytes)
        let index = connections[id]!.client
        if tracing { log("#\(id) → \(clients[index].name): \(Self.brief(message))") }
        clients[index].core.received(message)
        try carryOut(index)
        try checkClient(index)
        if connections[id]?.closing == true, connections[id]?.down.isEmpty == true {
            close(id)
        }
    }

    /// Queues a frame for the client; `false` when the outbox was full and the connection is cut.
    @discardableResult
    private func sendDown(_ id: Int, _ message: WireMessage, waiting: Bool = false) -> Bool {
        guard var connection = connections[id], !connection.closing else { return false }
        if !waiting, connection.down.count >= options.outboxFrames {
            // The outbox is full: cut the connection as the real server does; the client resumes from its cursor.
            connection.down = [WireMessage.error(ConnectionError(.slowConsumer, "too slow")).payload()]
            connection.closing = true
            connections[id] = connection
            hub.sendFailed(id)
            log("server cuts #\(id) (slow consumer)")
            return false
        }
        connection.down.append(message.payload())
        connections[id] = connection
        return true
    }

    private func hasRoom(_ id: Int) -> Bool {
        guard let connection = connections[id] else { return true }  // gone: the hub finds out
        return connection.down.count < options.outboxFrames / 2
    }

    private func close(_ id: Int) {
        guard let connection = connections.removeValue(forKey: id) else { return }
        hub.unsubscribe(id)
        let index = connection.client
        guard clients[index].connection == id else { return }
        clients[index].connection = nil
        let wait = Int.random(in: 1...30, using: &random)
        clients[index].reconnectAt = step + wait
        clients[index].core.disconnected(retryInMs: wait)
        try? carryOut(index)
    }

    // MARK: - Server

    /// Carries out the hub's effects.
    private func perform(_ effects: [HubCore<Int>.Effect]) {
        for effect in effects {
            switch effect {
            case .commit(let batches):
                storeCalls.append(.commit(batches))
            case .send(let id, let message):
                sendDown(id, message)
            case .broadcast(let diff, let ids):
                for id in ids { sendDown(id, .diff(diff)) }
            case .loadCatchUp(let id, let generation, let cursor):
                if connections[id] == nil || connections[id]!.closing {
                    hub.unsubscribe(id)
                } else {
                    storeCalls.append(.load(connection: id, generation: generation, after: cursor))
                }
            case .sendCatchUp(let id, let generation, let messages):
                for message in messages { sendDown(id, message, waiting: true) }
                spaceWaiters.append((id, generation))
            case .close(let id, let error):
                sendDown(id, .error(error), waiting: true)
                connections[id]?.closing = true
            case .release, .idle:
                break
            }
        }
    }

    /// Completes one outstanding store call: the group commit, or any of the catch-up reads.
    private func completeStoreCall() {
        // The hub has one group commit in flight at most; reads may overtake it or each other.
        let index = Int.random(in: 0..<storeCalls.count, using: &random)
        let call = storeCalls.remove(at: index)
        switch call {
        case .commit(let batches):
            let group = store.commit(batches)
            let problems = store.state.invariantViolations()
            if !problems.isEmpty { violation("the store breaks invariants: \(problems.prefix(3))") }
            result.commits += group.commits.count
            log("server commits \(batches.count) batch(es) → seq \(store.state.seq)")
            perform(hub.committed(group.outcomes))
        case .load(let id, let generation, let cursor):
            let catchUp: CatchUp = store.diffs(after: cursor).map { .diffs(Array($0.prefix(catchUpChunk))) } ?? .snapshot(store.state)
            perform(hub.caughtUp(id, generation: generation, catchUp))
        }
    }

    private func continueCatchUp() {
        guard let index = spaceWaiters.firstIndex(where: { hasRoom($0.connection) }) else { return }
        let (id, generation) = spaceWaiters.remove(at: index)
        perform(hub.catchUpSent(id, generation: generation))
    }

    private func restartServer() {
        // A group the store was committing may or may not have made it: decide at random, and
        // either way nobody hears of it.
        var lost = 0
        for call in storeCalls {
            guard case .commit(let batches) = call else { continue }
            if Bool.random(using: &random) {
                _ = store.commit(batches)
            } else {
                lost += batches.count
            }
        }
        fault("restart the server (\(lost) batches in flight lost, \(storeCalls.count) store calls abandoned)")
        storeCalls = []
        spaceWaiters = []
        hub = HubCore(courseID: courseID, maxGroupBatches: 8, catchUpChunk: catchUpChunk)
        for id in connections.keys.sorted() { close(id) }
    }
}
