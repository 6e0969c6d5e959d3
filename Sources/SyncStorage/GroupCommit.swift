import SyncModel

/// Identifies a batch for exactly-once: the author, and its batch seq (per course).
public struct BatchKey: Hashable, Sendable {
    public var client: ClientID
    public var batchSeq: BatchSeq

    public init(client: ClientID, batchSeq: BatchSeq) {
        self.client = client
        self.batchSeq = batchSeq
    }

    public init(_ batch: Batch) { self.init(client: batch.clientID, batchSeq: batch.batchSeq) }
}

/// The store-independent part of a group commit: what every store does between reading (the
/// course state, the stored acks, the known temp IDs) and writing (``NetChanges``), so that the
/// PostgreSQL and SQLite stores decide identically.
public struct GroupCommit: Sendable {
    /// One per batch, in order.
    public var outcomes: [BatchOutcome]
    /// The batches that committed, in seq order.
    public var commits: [Commit]
    /// For each commit: who made it and what it did, in words (for the course's history).
    public var history: [(author: String, summary: String)] = []
    /// The course after the group.
    public var state: CourseState

    /// Resolves `batches` one after the other against `state`: a batch in `appliedAcks` (or
    /// repeated within the group) is replayed, the others go through the ``Resolver``; each sees
    /// the state and temp IDs the earlier ones left.
    ///
    /// - Parameters:
    ///   - appliedAcks: the stored acks of those batches committed before.
    ///   - knownTemps: per client, at least the temp IDs the batches mention (``Batch/mentionedTemps``).
    public static func resolve<Allocator: IDAllocator>(
        _ batches: [Batch], against state: CourseState, appliedAcks: [BatchKey: Ack],
        knownTemps: [ClientID: [TempID: EntityID]], allocator: inout Allocator
    ) -> GroupCommit {
        var group = GroupCommit(outcomes: [], commits: [], state: state)
        var applied = appliedAcks
        var temps = knownTemps
        for batch in batches {
            let key = BatchKey(batch)
            if let ack = applied[key] {
                group.outcomes.append(.replayed(ack))
                continue
            }
            // Said against the state before the batch (the names it changes or deletes).
            let summary = group.state.summary(of: batch.ops, knownTemps: temps[batch.clientID, default: [:]])
            // In place: the group's state is copied from the caller's once, not once per batch.
            switch Resolver.apply(batch, to: &group.state, knownTemps: temps[batch.clientID, default: [:]], allocator: &allocator) {
            case .success(let resolved):
                group.commits.append(resolved.commit)
                group.history.append((batch.author, summary))
                group.outcomes.append(.committed(resolved.commit))
                applied[key] = resolved.commit.ack
                temps[batch.clientID, default: [:]].merge(resolved.commit.ack.idMap) { _, new in new }
            case .failure(let rejection):
                group.outcomes.append(.rejected(rejection))
            }
        }
        return group
    }

    /// The rows to write: the net effect of all commits, as the rows are in the final state.
    public var netChanges: NetChanges {
        var chapterIDs = Set<EntityID>(), deletedChapters = Set<EntityID>()
        var mediaIDs = Set<EntityID>(), videoIDs = Set<EntityID>(), deletedVideos = Set<EntityID>()
        for commit in commits {
            let changes = commit.diff.changes
            chapterIDs.formUnion(changes.chapters.map(\.id))
            chapterIDs.formUnion(changes.chapterVersions.map(\.chapterID))
            deletedChapters.formUnion(changes.deletedChapters)
            mediaIDs.formUnion(changes.media.map(\.id))
            videoIDs.formUnion(changes.videos.map(\.id))
            deletedVideos.formUnion(changes.deletedVideos)
        }
        return NetChanges(
            deletedVideos: deletedVideos.filter { state.videos[$0] == nil }.sorted(),
            deletedChapters: deletedChapters.filter { state.chapters[$0] == nil }.sorted(),
            chapters: chapterIDs.compactMap { state.chapters[$0] }.sorted { $0.id < $1.id },
            media: mediaIDs.compactMap { state.media[$0] }.sorted { $0.id < $1.id },
            videos: videoIDs.compactMap { state.videos[$0] }.sorted { $0.id < $1.id },
            tempMappings: commits.flatMap { commit in
                commit.ack.idMap.sorted { $0.key < $1.key }.map { TempMapping(client: commit.clientID, temp: $0.key, entity: $0.value) }
            }
        )
    }
}

/// What a group commit writes besides its change-log entries and batch records.
public struct NetChanges: Hashable, Sendable {
    public var deletedVideos: [EntityID]
    public var deletedChapters: [EntityID]
    /// Full rows to upsert.
    public var chapters: [Chapter]
    public var media: [MediaFile]
    public var videos: [Video]
    public var tempMappings: [TempMapping]

    public init(deletedVideos: [EntityID], deletedChapters: [EntityID], chapters: [Chapter], media: [MediaFile], videos: [Video],
                tempMappings: [TempMapping]) {
        self.deletedVideos = deletedVideos
        self.deletedChapters = deletedChapters
        self.chapters = chapters
        self.media = media
        self.videos = videos
        self.tempMappings = tempMappings
    }
}

public struct TempMapping: Hashable, Sendable {
    public var client: ClientID
    public var temp: TempID
    public var entity: EntityID

    public init(client: ClientID, temp: TempID, entity: EntityID) {
        self.client = client
        self.temp = temp
        self.entity = entity
    }
}
