import SyncModel
import SyncServer

/// The simulator's store: one course in memory, committed through the same ``GroupCommit`` the
/// PostgreSQL and SQLite stores use, with the exactly-once record, the temp-ID map and a change log
/// that keeps only the last `logRetention` entries (so subscribers far behind get snapshots).
struct SimStore {
    private(set) var state: CourseState
    /// Every commit ever, for the final replay check (the retained log is a suffix of it).
    private(set) var history: [Diff] = []
    private(set) var acks: [BatchKey: Ack] = [:]
    private(set) var temps: [ClientID: [TempID: EntityID]] = [:]
    let initial: CourseState
    let logRetention: Int
    private var random: SplitMix64

    init(course: Course, logRetention: Int, seed: UInt64) {
        state = CourseState(course: course)
        initial = state
        self.logRetention = logRetention
        random = SplitMix64(seed: seed)
    }

    /// One group commit, all or nothing per batch, at the simulated moment `now`: the rows get
    /// time-ordered IDs as in production, stamped with the simulated clock (from 2026-01-01).
    mutating func commit(_ batches: [Batch], at now: Moment) -> GroupCommit {
        let keys = batches.map(BatchKey.init)
        var allocator = TimeOrderedIDAllocator(unixMilliseconds: 1_767_225_600_000 + UInt64(max(0, now.nanoseconds / 1_000_000)), random)
        defer { random = allocator.generator }
        let group = GroupCommit.resolve(batches, against: state, appliedAcks: acks.filter { keys.contains($0.key) },
                                        knownTemps: temps, allocator: &allocator)
        state = group.state
        for commit in group.commits {
            history.append(commit.diff)
            acks[BatchKey(client: commit.clientID, batchSeq: commit.batchSeq)] = commit.ack
            temps[commit.clientID, default: [:]].merge(commit.ack.idMap) { _, new in new }
        }
        return group
    }

    /// The diffs after `cursor`, or `nil` when a snapshot is due (cursor 0, ahead, or pruned).
    func diffs(after cursor: CourseSeq) -> [Diff]? {
        let oldestKept = state.seq - CourseSeq(min(history.count, logRetention))
        guard cursor > 0, cursor <= state.seq, cursor >= oldestKept else { return nil }
        return Array(history[Int(cursor)...])
    }
}
