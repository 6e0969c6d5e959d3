import SyncModel

/// What ``StoreEngine`` keeps in memory per course: its state at the last seq this process saw,
/// and its recent commits' acks and temp IDs. Bounded: at most `maxCourses` courses and about
/// `maxBytes` (estimated from row counts; the least recently used course goes first, the one
/// being kept stays), and `recentPerCourse` commits each.
struct CourseCache {
    struct Entry {
        var state: CourseState?
        var recent: RecentCommits
        var lastUse: UInt64
        var bytes: Int
    }

    let maxCourses: Int
    let maxBytes: Int
    let recentPerCourse: Int
    private var entries: [EntityID: Entry] = [:]
    private var uses: UInt64 = 0
    private(set) var bytes = 0

    init(maxCourses: Int, maxBytes: Int = .max, recentPerCourse: Int) {
        precondition(maxCourses > 0 && maxBytes > 0 && recentPerCourse > 0)
        self.maxCourses = maxCourses
        self.maxBytes = maxBytes
        self.recentPerCourse = recentPerCourse
    }

    var count: Int { entries.count }

    /// A course's memory, roughly: a row with its ID, title and dictionary slot is a few hundred
    /// bytes, a remembered commit (ack and temp IDs) about as much. From counts, so O(1).
    static func estimatedBytes(_ state: CourseState?, recent: Int) -> Int {
        guard let state else { return 512 + 256 * recent }
        return 1_024 + 256 * (state.chapters.count + state.media.count + state.videos.count + recent)
    }

    func state(of courseID: EntityID) -> CourseState? { entries[courseID]?.state }

    /// The cached state, if cached (and the course counts as used).
    mutating func use(_ courseID: EntityID) -> CourseState? {
        guard let state = entries[courseID]?.state else { return nil }
        uses += 1
        entries[courseID]!.lastUse = uses
        return state
    }

    func recentAck(_ key: BatchKey, in courseID: EntityID) -> Ack? { entries[courseID]?.recent.acks[key] }

    func recentTemp(_ temp: TempID, of client: ClientID, in courseID: EntityID) -> EntityID? {
        entries[courseID]?.recent.temps[client]?[temp]
    }

    /// Keeps `state` unless a newer one is cached (several commits and loads may race).
    mutating func keep(_ state: CourseState) {
        let id = state.course.id
        if let cached = entries[id]?.state, cached.seq > state.seq { return }
        uses += 1
        if entries[id] == nil {
            entries[id] = Entry(state: state, recent: RecentCommits(capacity: recentPerCourse), lastUse: uses, bytes: 0)
        } else {
            entries[id]!.state = state
            entries[id]!.lastUse = uses
        }
        measure(id)
        evict(keeping: id)
    }

    /// After a written group: the course's new state and its commits' acks and temp IDs.
    mutating func remember(_ group: GroupCommit) {
        keep(group.state)
        let id = group.state.course.id
        for commit in group.commits { entries[id]?.recent.remember(commit.ack, of: commit.clientID) }
        measure(id)
        evict(keeping: id)
    }

    mutating func forget(_ courseID: EntityID) {
        if let entry = entries.removeValue(forKey: courseID) { bytes -= entry.bytes }
    }

    private mutating func measure(_ id: EntityID) {
        guard let entry = entries[id] else { return }
        let now = Self.estimatedBytes(entry.state, recent: entry.recent.count)
        bytes += now - entry.bytes
        entries[id]!.bytes = now
    }

    /// Drops the least recently used courses (never `kept`) while over a bound.
    private mutating func evict(keeping kept: EntityID) {
        while entries.count > maxCourses || (bytes > maxBytes && entries.count > 1) {
            guard let oldest = entries.filter({ $0.key != kept }).min(by: { $0.value.lastUse < $1.value.lastUse })?.key else { return }
            forget(oldest)
        }
    }
}

/// The acks of a course's latest commits, by batch, and the temp IDs they mapped, by client: what
/// exactly-once and temp-ID references need in the common case (a resend of a recent batch, a
/// batch naming a temp ID its author's previous batch created). Older ones are looked up in the
/// store when needed, so forgetting them costs a query, never a wrong answer.
struct RecentCommits {
    let capacity: Int
    private(set) var acks: [BatchKey: Ack] = [:]
    private(set) var temps: [ClientID: [TempID: EntityID]] = [:]
    /// Keys in the order remembered; `order[head...]` are live.
    private var order: [BatchKey] = []
    private var head = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    var count: Int { acks.count }

    mutating func remember(_ ack: Ack, of client: ClientID) {
        let key = BatchKey(client: client, batchSeq: ack.batchSeq)
        guard acks.updateValue(ack, forKey: key) == nil else { return }
        temps[client, default: [:]].merge(ack.idMap) { _, new in new }
        order.append(key)
        while order.count - head > capacity {
            forget(order[head])
            head += 1
        }
        if head >= capacity {
            order.removeFirst(head)
            head = 0
        }
    }

    private mutating func forget(_ key: BatchKey) {
        guard let ack = acks.removeValue(forKey: key) else { return }
        for (temp, entity) in ack.idMap where temps[key.client]?[temp] == entity {
            temps[key.client]![temp] = nil
        }
        if temps[key.client]?.isEmpty == true { temps[key.client] = nil }
    }
}
