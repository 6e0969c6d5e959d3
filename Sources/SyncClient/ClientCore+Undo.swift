import SyncModel

/// Undo and redo of this replica's own edits, as intent (``CourseState/inverse(of:resolve:ref:mintTemp:)``):
/// each edit's inverse is computed against the visible state just before it, when it is made;
/// a sealed batch's inverses become one entry of the undo stack. Undoing sends that entry as a
/// new batch (whose own inverses become the redo entry), resolved like any other: against others'
/// later edits it is merged, placed at the end (a missing anchor), or refused, never applied
/// blindly. The stacks live in memory (a restarted client starts with none), at most
/// ``UndoHistory/limit`` entries each.
struct UndoHistory: Hashable, Sendable {
    /// What the open batch is: a user's edit, or an undo or redo being sent.
    enum Kind: Hashable, Sendable { case edit, undo, redo }

    struct Entry: Hashable, Sendable {
        /// The batch whose effect this takes back (dropped with it if it is rolled back).
        var batchSeq: BatchSeq
        var ops: [SyncModel.Operation]
    }

    static let limit = 100

    var undo: [Entry] = []
    var redo: [Entry] = []
    /// The open batch's kind and its operations' inverses, in order.
    var openKind = Kind.edit
    var openInverses: [Inverse] = []

    /// The open batch `batchSeq` was sealed: its undo goes on the stack its kind says.
    mutating func sealed(_ batchSeq: BatchSeq) {
        defer { openInverses = []; openKind = .edit }
        let ops = Inverse.undo(of: openInverses)
        guard !ops.isEmpty else { return }
        let entry = Entry(batchSeq: batchSeq, ops: ops)
        switch openKind {
        case .edit:
            undo = Self.pushing(entry, onto: undo)
            redo = []  // a new edit ends what could be redone
        case .undo:
            redo = Self.pushing(entry, onto: redo)
        case .redo:
            undo = Self.pushing(entry, onto: undo)
        }
    }

    /// A batch was rolled back: nothing of it is left to take back.
    mutating func droppedBatch(_ batchSeq: BatchSeq) {
        undo.removeAll { $0.batchSeq == batchSeq }
        redo.removeAll { $0.batchSeq == batchSeq }
    }

    private static func pushing(_ entry: Entry, onto stack: [Entry]) -> [Entry] { Array((stack + [entry]).suffix(limit)) }
}

extension ClientCore {
    /// The row a reference names in the visible state (a temp through the replays' and the
    /// acknowledged batches' maps, else the provisional ID its batch will give it).
    func visibleID(_ ref: Ref) -> EntityID? {
        switch ref {
        case .id(let id): id
        case .temp(let temp): replayTemps[temp] ?? knownTemps[temp] ?? .provisional(temp)
        }
    }

    /// The reference an operation uses for a visible row: its temp while its batch is unanswered.
    func visibleRef(_ id: EntityID) -> Ref {
        guard id.isProvisional, let temp = TempID(id.low) else { return .id(id) }
        return knownTemps[temp].map(Ref.id) ?? .temp(temp)
    }

    /// The inverse of `op` against the visible state, with fresh temps for what it re-creates.
    mutating func inverse(of op: SyncModel.Operation) -> Inverse? {
        var next = nextTemp
        let inverse = visible.inverse(of: op, resolve: { visibleID($0) }, ref: { visibleRef($0) }, mintTemp: {
            defer { next += 1 }
            return TempID(next)!
        })
        if next != nextTemp {
            nextTemp = next
            countersMoved = true
        }
        return inverse
    }

    /// Whether ``undo(now:)`` / ``redo(now:)`` have something to send.
    package var canUndo: Bool { !undoHistory.undo.isEmpty || (openBatch != nil && !undoHistory.openInverses.isEmpty && undoHistory.openKind == .edit) }
    package var canRedo: Bool { !undoHistory.redo.isEmpty }

    /// Sends the undo of this replica's last own edit (a batch) that is not undone yet, as a new
    /// batch; `false` if there is none. Throws, changing nothing but dropping that entry, if the
    /// undo is invalid against what the replica shows now (a row it names is gone).
    package mutating func undo(now: Moment) throws(EditError) -> Bool {
        try send(from: \.undo, as: .undo, now: now)
    }

    /// Sends again what the last undo took back; `false` if there is nothing to redo.
    package mutating func redo(now: Moment) throws(EditError) -> Bool {
        try send(from: \.redo, as: .redo, now: now)
    }

    private mutating func send(from stack: WritableKeyPath<UndoHistory, [UndoHistory.Entry]>, as kind: UndoHistory.Kind,
                               now: Moment) throws(EditError) -> Bool {
        seal()  // an edit still in its coalescing window is the last one: it goes on the stack now
        guard let entry = undoHistory[keyPath: stack].popLast() else { return false }
        try sendAsOneBatch(entry.ops, as: kind, now: now)
        return true
    }

    /// Sends the edit that makes the course look as `earlier` did (``CourseState/restore(to:mintTemp:)``
    /// against what the replica shows, its own pending edits included), as one batch that
    /// ``undo(now:)`` takes back like any edit; `false` if it already looks so.
    package mutating func restore(to earlier: CourseState, now: Moment) throws(EditError) -> Bool {
        seal()
        var next = nextTemp
        let ops = visible.restore(to: earlier, mintTemp: {
            defer { next += 1 }
            return TempID(next)!
        }).map { op in op.mapRefs { ref in if case .id(let id) = ref { visibleRef(id) } else { ref } } }
        if next != nextTemp {
            nextTemp = next
            countersMoved = true
        }
        guard !ops.isEmpty else { return false }
        try sendAsOneBatch(ops, as: .edit, now: now)
        return true
    }

    /// `ops` as one batch of edits, all or nothing: tried on the visible state first, as the
    /// server would resolve it (in place and taken back, at a cost in proportion to the ops, not
    /// to the course).
    private mutating func sendAsOneBatch(_ ops: [SyncModel.Operation], as kind: UndoHistory.Kind, now: Moment) throws(EditError) {
        let trial = Batch(clientID: clientID, courseID: courseID, batchSeq: nextBatchSeq, baseSeq: confirmed.seq, ops: ops)
        var allocator = ProvisionalIDAllocator()
        switch Resolver.apply(trial, to: &visible, knownTemps: temps(for: trial), allocator: &allocator) {
        case .success(let applied):
            applied.undo.revert(&visible)
        case .failure(var rejection):
            rejection.opIndex = nil
            throw .invalid(rejection)
        }
        undoHistory.openKind = kind
        for op in ops { try edit(op, now: now, holdOpen: true) }
        seal()
    }
}
