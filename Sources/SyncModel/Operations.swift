/// Where a chapter (among the course's chapters) or a run of videos (among a chapter's videos) goes.
///
/// Placements name an anchor row rather than an index, so they keep their meaning when other
/// clients insert or move rows meanwhile.
public enum Placement: Hashable, Sendable {
    case atEnd
    case atStart
    case after(Ref)
    case before(Ref)

    /// The anchor row, if the placement names one.
    public var anchor: Ref? {
        switch self {
        case .atEnd, .atStart: nil
        case .after(let ref), .before(let ref): ref
        }
    }
}

/// One media file to link into a chapter, creating the video `temp`.
public struct LinkItem: Hashable, Sendable {
    public var temp: TempID
    public var media: Ref
    /// The video's title; `nil` uses the media file's name.
    public var title: String?

    public init(temp: TempID, media: Ref, title: String? = nil) {
        self.temp = temp
        self.media = media
        self.title = title
    }
}

/// An edit, expressed as intent so it survives concurrent edits by others.
public enum Operation: Hashable, Sendable {
    case createChapter(temp: TempID, title: String, placement: Placement)
    case renameChapter(Ref, title: String)
    case moveChapter(Ref, placement: Placement)
    /// Deletes the chapter and every video in it.
    case deleteChapter(Ref)
    case registerMedia(temp: TempID, name: String, cdnURL: String, durationMs: UInt64, byteSize: UInt64)
    /// Links the items, in order, as one contiguous run at `placement` among the chapter's videos.
    case linkMedia(chapter: Ref, items: [LinkItem], placement: Placement)
    case moveVideo(Ref, toChapter: Ref, placement: Placement)
    case renameVideo(Ref, title: String)
    case unlinkVideo(Ref)

    /// How much of ``Limits/maxOpsPerBatch`` this operation uses: one per link item, else one.
    public var weight: Int {
        if case .linkMedia(_, let items, _) = self { return max(1, items.count) }
        return 1
    }

    /// The operation's kind, as the protocol names it (`linkMedia`).
    public var kind: String {
        switch self {
        case .createChapter: "createChapter"
        case .renameChapter: "renameChapter"
        case .moveChapter: "moveChapter"
        case .deleteChapter: "deleteChapter"
        case .registerMedia: "registerMedia"
        case .linkMedia: "linkMedia"
        case .moveVideo: "moveVideo"
        case .renameVideo: "renameVideo"
        case .unlinkVideo: "unlinkVideo"
        }
    }

    /// The temp IDs this operation creates.
    public var createdTemps: [TempID] {
        switch self {
        case .createChapter(let temp, _, _), .registerMedia(let temp, _, _, _, _): [temp]
        case .linkMedia(_, let items, _): items.map(\.temp)
        default: []
        }
    }

    /// Every reference the operation makes to existing rows (targets, chapters, media, anchors).
    public var references: [Ref] {
        switch self {
        case .createChapter(_, _, let placement): placement.anchor.map { [$0] } ?? []
        case .renameChapter(let ref, _), .deleteChapter(let ref), .renameVideo(let ref, _), .unlinkVideo(let ref): [ref]
        case .moveChapter(let ref, let placement): [ref] + (placement.anchor.map { [$0] } ?? [])
        case .registerMedia: []
        case .linkMedia(let chapter, let items, let placement):
            [chapter] + items.map(\.media) + (placement.anchor.map { [$0] } ?? [])
        case .moveVideo(let ref, let chapter, let placement): [ref, chapter] + (placement.anchor.map { [$0] } ?? [])
        }
    }
}

/// A client's batch of operations for one course: sent in one frame, committed in one
/// transaction, all or nothing.
public struct Batch: Hashable, Sendable {
    public var clientID: ClientID
    public var courseID: EntityID
    /// Unique per (client, course); the server's exactly-once record is keyed by it.
    public var batchSeq: BatchSeq
    /// The course seq the client's replica had when it made the batch (informational: the server
    /// resolves intents against its current state, whatever the base).
    public var baseSeq: CourseSeq
    public var ops: [Operation]
    /// Who sent it, as the server knows them (the token's subject; empty where unknown): kept
    /// with the commit for the course's history. Not part of the wire's `Push`.
    public var author: String

    public init(clientID: ClientID, courseID: EntityID, batchSeq: BatchSeq, baseSeq: CourseSeq, ops: [Operation], author: String = "") {
        self.clientID = clientID
        self.courseID = courseID
        self.batchSeq = batchSeq
        self.baseSeq = baseSeq
        self.ops = ops
        self.author = author
    }

    /// Every temp ID the batch creates or refers to: what a store must look up in the client's
    /// temp-ID map before resolving it.
    public var mentionedTemps: Set<TempID> {
        var temps = Set<TempID>()
        for op in ops {
            temps.formUnion(op.createdTemps)
            for case .temp(let temp) in op.references { temps.insert(temp) }
        }
        return temps
    }
}

extension Operation {
    /// The same operation with every reference passed through `transform`.
    public func mapRefs(_ transform: (Ref) -> Ref) -> Operation {
        func place(_ placement: Placement) -> Placement {
            switch placement {
            case .atEnd, .atStart: placement
            case .after(let anchor): .after(transform(anchor))
            case .before(let anchor): .before(transform(anchor))
            }
        }
        switch self {
        case .createChapter(let temp, let title, let placement): return .createChapter(temp: temp, title: title, placement: place(placement))
        case .renameChapter(let ref, let title): return .renameChapter(transform(ref), title: title)
        case .moveChapter(let ref, let placement): return .moveChapter(transform(ref), placement: place(placement))
        case .deleteChapter(let ref): return .deleteChapter(transform(ref))
        case .registerMedia: return self
        case .linkMedia(let chapter, let items, let placement):
            return .linkMedia(chapter: transform(chapter),
                              items: items.map { LinkItem(temp: $0.temp, media: transform($0.media), title: $0.title) },
                              placement: place(placement))
        case .moveVideo(let ref, let chapter, let placement): return .moveVideo(transform(ref), toChapter: transform(chapter), placement: place(placement))
        case .renameVideo(let ref, let title): return .renameVideo(transform(ref), title: title)
        case .unlinkVideo(let ref): return .unlinkVideo(transform(ref))
        }
    }
}
