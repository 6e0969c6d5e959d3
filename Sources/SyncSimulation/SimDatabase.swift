import Foundation
import SyncModel
import SyncStorage

/// The simulator's tasks run here: a job waits in the queue until the simulator drains it, on the
/// simulator's thread, one at a time, in the order queued. Every node's ``StoreEngine`` runs in
/// tasks that prefer this executor, so its calls interleave with the rest of the run exactly as
/// the seed says.
final class SimExecutor: TaskExecutor, @unchecked Sendable {
    private let lock = NSLock()
    private var jobs: [UnownedJob] = []

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        lock.withLock { jobs.append(job) }
    }

    /// Runs every queued job, and those they queue, until none is left: then every task is done or
    /// waits for a database call or a pause that only the simulator completes.
    func drain() {
        while let job = lock.withLock({ jobs.isEmpty ? nil : jobs.removeFirst() }) {
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// The simulator's database: one ``MemoryBackend`` that every node's ``StoreEngine`` reads and
/// writes through a ``SimNodeBackend``. A primitive call waits until the simulator completes it
/// (calls of all nodes complete in any order), and the simulator decides its fate: it runs, it
/// fails before running (the database unreachable), or it runs and then fails (the connection
/// broke before the answer: a write that committed, a read that returned rows, and the caller
/// does not know). The engines' pauses between retries are on the simulated clock.
///
/// It keeps the truth the checks need: every commit in seq order, the course as the change log
/// builds it at each seq, and every stored ack.
final class SimDatabase: @unchecked Sendable {
    enum Fate {
        case run
        case failBefore
        case failAfter
        /// The node restarted: its call ends (after running, for a write that made it).
        case abandoned(ran: Bool)
    }

    struct Call {
        let node: Int
        let operation: StoreOperation
        /// It does not complete before then (a slow call).
        let readyAt: Moment
        let continuation: CheckedContinuation<Fate, Never>
    }

    struct Sleeper {
        let node: Int
        let until: Moment
        let continuation: CheckedContinuation<Void, any Error>
    }

    struct CatchUpReader {
        let connection: Int
        let generation: Int
    }

    /// What a node's engine call came to, waiting for the simulator to hand it to the hub.
    enum Finished {
        case committed([BatchOutcome])
        case commitFailed(any Error)
        /// One read shared by the subscribers caught up from the same cursor (as ``CourseHub`` shares it).
        case caughtUp(readers: [CatchUpReader], CatchUp)
        case catchUpFailed(readers: [CatchUpReader], any Error)
        case seq(CourseSeq?)
        case seqFailed(any Error)
    }

    let memory = MemoryBackend()
    let executor = SimExecutor()
    /// Calls waiting to complete, in the order made.
    var calls: [Call] = []
    var sleepers: [Sleeper] = []
    /// Engine calls that ended, with the node and its incarnation.
    var finished: [(node: Int, epoch: Int, result: Finished)] = []
    /// Groups written since the simulator last looked: the writing node and the commits' diffs.
    var written: [(node: Int, diffs: [Diff])] = []
    /// Every commit, in seq order (`history[0]` is seq 1).
    private(set) var history: [Diff] = []
    /// The course as the change log builds it, at each seq from 0.
    private(set) var states: [CourseState]
    /// The stored ack of every committed batch.
    private(set) var acks: [BatchKey: Ack] = [:]
    var state: CourseState { states[states.count - 1] }
    var initial: CourseState { states[0] }
    /// The simulated clock, set by the simulator at each step.
    var now = Moment.zero
    /// Calls run at once (setting the course up, before the run).
    var immediate = false
    /// Some calls are slow (``Faults/storeFailures``).
    var slowCalls = false
    private var random: SplitMix64

    init(course: Course, seed: UInt64) {
        states = [CourseState(course: course)]
        random = SplitMix64(seed: seed)
    }

    /// A node's primitive call: waits for the simulator to complete it, then runs `body` or fails
    /// as it decided.
    func call<T>(_ node: Int, _ operation: StoreOperation, _ body: () async throws -> T) async throws -> T {
        let fate: Fate
        if immediate {
            fate = .run
        } else {
            let delay = slowCalls && Int.random(in: 0..<100, using: &random) < 5 ? Int64.random(in: 100...1_500, using: &random) : 0
            fate = await withCheckedContinuation { continuation in
                calls.append(Call(node: node, operation: operation, readyAt: now + .milliseconds(delay), continuation: continuation))
            }
        }
        switch fate {
        case .run:
            return try await body()
        case .failBefore:
            throw StoreError.unavailable(operation, detail: "simulated: the database did not answer")
        case .failAfter:
            _ = try await body()
            throw StoreError.unavailable(operation, detail: "simulated: the connection broke before the answer")
        case .abandoned(let ran):
            if ran { _ = try await body() }
            throw CancellationError()
        }
    }

    /// Runs `body` as a task on the simulator's executor (it runs when the simulator drains it);
    /// what it comes to, or `failed` of what it threw, joins ``finished`` as node `node`'s.
    func start(node: Int, epoch: Int, _ body: @escaping @Sendable () async throws -> Finished,
               failed: @escaping @Sendable (any Error) -> Finished) {
        Task(executorPreference: executor) {
            let result: Finished
            do { result = try await body() } catch { result = failed(error) }
            self.finished.append((node, epoch, result))
        }
    }

    /// A pause on the simulated clock.
    func sleep(_ node: Int, for duration: Duration) async throws {
        try await withCheckedThrowingContinuation { continuation in
            sleepers.append(Sleeper(node: node, until: now + duration, continuation: continuation))
        }
    }

    /// A fresh allocator for one resolution: the simulated clock's moment (from 2026-01-01) and
    /// this database's generator, as production stamps IDs with the commit's moment.
    func mintIDs() -> any IDAllocator {
        TimeOrderedIDAllocator(unixMilliseconds: 1_767_225_600_000 + UInt64(max(0, now.nanoseconds / 1_000_000)),
                               SplitMix64(seed: random.next()))
    }

    /// The memory backend wrote `group`: the commits join the history.
    func record(_ group: GroupWrite, by node: Int) throws {
        var diffs: [Diff] = []
        for entry in group.entries {
            let diff = try StoreEngine<MemoryBackend>.decodeDiff(entry.diff)
            guard diff.seq == CourseSeq(history.count + 1) else { throw StoreError.corrupt("a write at seq \(diff.seq) after \(history.count)") }
            history.append(diff)
            states.append(state.applying(diff))
            acks[BatchKey(client: diff.origin.clientID, batchSeq: diff.origin.batchSeq)] = try StoreEngine<MemoryBackend>.decodeAck(entry.ack)
            diffs.append(diff)
        }
        written.append((node, diffs))
    }

    /// The course as the memory backend stores it (read at once, outside the run).
    func storedCourse(_ courseID: EntityID) -> Result<CourseState?, any Error> {
        let memory = memory
        let box = ResultBox()
        Task(executorPreference: executor) {
            do { box.result = .success(try await memory.loadCourse(courseID)) } catch { box.result = .failure(error) }
        }
        executor.drain()
        return box.result ?? .failure(CancellationError())
    }

    /// Ends node `node`'s calls and pauses (it restarted): a write among them commits or not, at
    /// random; its tasks end with `CancellationError`.
    func abandon(node: Int) {
        let mine = calls.filter { $0.node == node }
        calls.removeAll { $0.node == node }
        for call in mine { call.continuation.resume(returning: .abandoned(ran: call.operation == .commit && Bool.random(using: &random))) }
        let sleeping = sleepers.filter { $0.node == node }
        sleepers.removeAll { $0.node == node }
        for sleeper in sleeping { sleeper.continuation.resume(throwing: CancellationError()) }
        finished.removeAll { $0.node == node }
    }
}

private final class ResultBox: @unchecked Sendable {
    var result: Result<CourseState?, any Error>?
}

/// One node's connection to the simulated database: every primitive goes through
/// ``SimDatabase/call(_:_:_:)``; a write the memory backend made is recorded.
struct SimNodeBackend: StoreBackend {
    let database: SimDatabase
    let node: Int

    func insertCourse(_ course: Course) async throws {
        try await database.call(node, .create) { try await database.memory.insertCourse(course) }
    }

    func courseSeq(_ courseID: EntityID) async throws -> CourseSeq? {
        try await database.call(node, .readSeq) { try await database.memory.courseSeq(courseID) }
    }

    func courseSeqs(_ courseIDs: [EntityID]) async throws -> [EntityID: CourseSeq] {
        try await database.call(node, .readSeq) { try await database.memory.courseSeqs(courseIDs) }
    }

    func loadCourse(_ courseID: EntityID) async throws -> CourseState? {
        try await database.call(node, .load) { try await database.memory.loadCourse(courseID) }
    }

    func readLog(_ courseID: EntityID, after cursor: CourseSeq, limit: Int) async throws -> StoredLog? {
        try await database.call(node, .catchUp) { try await database.memory.readLog(courseID, after: cursor, limit: limit) }
    }

    func lookUp(_ batches: [BatchKey], temps: [ClientID: Set<TempID>], courseID: EntityID) async throws -> StoredRecords {
        try await database.call(node, .lookUp) { try await database.memory.lookUp(batches, temps: temps, courseID: courseID) }
    }

    func write(_ group: GroupWrite) async throws -> WriteOutcome {
        try await database.call(node, .commit) {
            let outcome = try await database.memory.write(group)
            if outcome == .written { try database.record(group, by: node) }
            return outcome
        }
    }

    func readHistory(_ courseID: EntityID, before: CourseSeq?, limit: Int) async throws -> [HistoryRecord]? {
        try await database.call(node, .copy) { try await database.memory.readHistory(courseID, before: before, limit: limit) }
    }

    func readRows(_ tables: [StoreTable]) async throws -> [[[StoreValue]]] {
        try await database.call(node, .copy) { try await database.memory.readRows(tables) }
    }

    func insertRows(_ tables: [(table: StoreTable, rows: [[StoreValue]])]) async throws {
        try await database.call(node, .copy) { try await database.memory.insertRows(tables) }
    }
}
