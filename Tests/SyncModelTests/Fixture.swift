import SyncModel
import Testing

/// A course on a pretend server: batches from named clients are resolved in the order the test
/// submits them (server commit order), with each client's temp-ID map kept as a store would.
struct Fixture {
    static let alice = ClientID(EntityID(high: 0xA11CE, low: 1))
    static let bob = ClientID(EntityID(high: 0xB0B, low: 2))
    static let carol = ClientID(EntityID(high: 0xCA201, low: 3))
    static let setup = ClientID(EntityID(high: 0x5E7, low: 4))

    var state: CourseState
    var allocator = RandomIDAllocator(SplitMix64(seed: 7))
    var temps: [ClientID: [TempID: EntityID]] = [:]
    var batchSeqs: [ClientID: BatchSeq] = [:]
    var nextTemp: UInt64 = 1

    /// A course with `chapters` chapters ("Chapter 0", ...) and `media` media files ("Media 0", ...),
    /// and `videos` media files linked into each chapter (media 0..<videos, in order).
    init(chapters: Int = 2, media: Int = 8, videos: Int = 0) throws {
        state = CourseState(course: Course(id: EntityID(high: 0xC0, low: 0xC0), title: "Swift on the Server"))
        var ops: [SyncModel.Operation] = []
        var chapterTemps: [TempID] = []
        var mediaTemps: [TempID] = []
        for index in 0..<media {
            let temp = makeTemp()
            mediaTemps.append(temp)
            ops.append(.registerMedia(temp: temp, name: "Media \(index)", cdnURL: "https://cdn.example.com/\(index).mp4",
                                      durationMs: 60_000, byteSize: 1_000_000))
        }
        for index in 0..<chapters {
            let temp = makeTemp()
            chapterTemps.append(temp)
            ops.append(.createChapter(temp: temp, title: "Chapter \(index)", placement: .atEnd))
            if videos > 0 {
                ops.append(.linkMedia(chapter: .temp(temp),
                                      items: mediaTemps[0..<videos].map { LinkItem(temp: makeTemp(), media: .temp($0)) },
                                      placement: .atEnd))
            }
        }
        // Set-up goes in as many batches as the batch limit needs.
        var chunk: [SyncModel.Operation] = []
        var weight = 0
        for op in ops {
            if weight + op.weight > Limits.maxOpsPerBatch {
                try accept(Self.setup, chunk)
                (chunk, weight) = ([], 0)
            }
            chunk.append(op)
            weight += op.weight
        }
        if !chunk.isEmpty { try accept(Self.setup, chunk) }
    }

    mutating func makeTemp() -> TempID {
        defer { nextTemp += 1 }
        return TempID(nextTemp)!
    }

    /// A batch from `client`, numbered after its previous one, made against the current seq.
    mutating func batch(_ client: ClientID, _ ops: [SyncModel.Operation]) -> Batch {
        let seq = (batchSeqs[client] ?? 0) + 1
        batchSeqs[client] = seq
        return Batch(clientID: client, courseID: state.course.id, batchSeq: seq, baseSeq: state.seq, ops: ops)
    }

    /// Resolves `batch` against the current state; on success commits it (state and temp map).
    mutating func submit(_ batch: Batch) -> Result<Resolved, Rejection> {
        let result = Resolver.resolve(batch, against: state, knownTemps: temps[batch.clientID] ?? [:], allocator: &allocator)
        if case .success(let resolved) = result {
            state = resolved.state
            temps[batch.clientID, default: [:]].merge(resolved.commit.ack.idMap) { _, new in new }
        }
        return result
    }

    /// Submits a batch that must be accepted, and returns its commit.
    @discardableResult
    mutating func accept(_ client: ClientID, _ ops: [SyncModel.Operation],
                         sourceLocation: SourceLocation = #_sourceLocation) throws -> Commit {
        let batch = batch(client, ops)
        switch submit(batch) {
        case .success(let resolved): return resolved.commit
        case .failure(let rejection):
            Issue.record("expected the batch to be accepted, got \(rejection)", sourceLocation: sourceLocation)
            throw rejection
        }
    }

    /// Submits a batch that must be rejected, and returns the rejection.
    mutating func reject(_ client: ClientID, _ ops: [SyncModel.Operation],
                         sourceLocation: SourceLocation = #_sourceLocation) throws -> Rejection {
        let batch = batch(client, ops)
        switch submit(batch) {
        case .success(let resolved):
            Issue.record("expected a rejection, got commit seq \(resolved.commit.seq)", sourceLocation: sourceLocation)
            throw FixtureError.unexpectedCommit
        case .failure(let rejection): return rejection
        }
    }

    enum FixtureError: Error { case unexpectedCommit }

    func chapter(_ position: Int) -> Chapter { state.orderedChapters[position] }
    func media(_ index: Int) -> MediaFile { state.media.values.first { $0.name == "Media \(index)" }! }
    func videos(inChapter position: Int) -> [Video] { state.videos(in: chapter(position).id) }
    func titles(inChapter position: Int) -> [String] { videos(inChapter: position).map(\.title) }
    func real(_ client: ClientID, _ temp: TempID) -> EntityID? { temps[client]?[temp] }

    /// Link items for media `indexes`, each titled `"<prefix><index>"`.
    mutating func links(_ indexes: [Int], title prefix: String) -> [LinkItem] {
        indexes.map { LinkItem(temp: makeTemp(), media: .id(media($0).id), title: "\(prefix)\($0)") }
    }
}
