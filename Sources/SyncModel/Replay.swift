/// Replays a client's pending batches on top of a confirmed state with the same resolver the
/// server runs: the client's optimistic prediction, and its rebase whenever the confirmed state
/// moves. Rows the pending batches create get provisional IDs (``EntityID/provisional(_:)``).
public enum Replay {
    /// The outcome of replaying pending batches.
    public struct Outcome: Hashable, Sendable {
        /// The confirmed state with every batch that still resolves applied: what the user sees.
        public var visible: CourseState
        /// Per batch (by batch seq): the predicted ack (provisional IDs) or the predicted rejection.
        public var predictions: [BatchSeq: Result<Ack, Rejection>]
        /// The known temp IDs plus the provisional IDs of every temp an applied batch created.
        public var temps: [TempID: EntityID]

        /// The batches the prediction rejects, in order: typically a batch whose target another
        /// client deleted, and every later batch that used temp IDs it created.
        public var rejected: [BatchSeq] {
            predictions.filter { if case .failure = $0.value { true } else { false } }.keys.sorted()
        }
    }

    /// Resolves `pending` in order on top of `confirmed`; a batch predicted to be rejected is
    /// left out of the visible state, so any later batch depending on its temp IDs is rejected too.
    public static func replay(_ pending: [Batch], onto confirmed: CourseState, knownTemps: [TempID: EntityID]) -> Outcome {
        var outcome = Outcome(visible: confirmed, predictions: [:], temps: knownTemps)
        var allocator = ProvisionalIDAllocator()
        for batch in pending {
            switch Resolver.resolve(batch, against: outcome.visible, knownTemps: outcome.temps, allocator: &allocator) {
            case .success(let resolved):
                outcome.visible = resolved.state
                outcome.temps.merge(resolved.commit.ack.idMap) { _, new in new }
                outcome.predictions[batch.batchSeq] = .success(resolved.commit.ack)
            case .failure(let rejection):
                outcome.predictions[batch.batchSeq] = .failure(rejection)
            }
        }
        return outcome
    }
}
