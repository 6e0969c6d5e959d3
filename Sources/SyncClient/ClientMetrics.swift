import CoreMetrics

/// What a ``SyncClient`` reports through swift-metrics (the app bootstraps the backend, or passes
/// one in ``ClientConfiguration/metricsFactory``).
struct ClientMetrics: Sendable {
    /// Answered batches whose optimistic prediction (accepted, with as many resolution notes)
    /// matched the server's answer, and those whose did not (every rejection among them):
    /// prediction accuracy = matched / (matched + missed).
    let predictionsMatched: Counter
    let predictionsMissed: Counter
    /// Batches the server rejected (rolled back with those that depended on them), and the edits lost.
    let rollbacks: Counter
    let rolledBackEdits: Counter
    /// Connections after the first (each after a drop, a server restart, an expired token…).
    let reconnects: Counter
    /// Batches waiting for the server.
    let pendingBatches: Gauge

    init(factory: any MetricsFactory) {
        predictionsMatched = Counter(label: "coursesync_client_batches_answered_total", dimensions: [("prediction", "matched")], factory: factory)
        predictionsMissed = Counter(label: "coursesync_client_batches_answered_total", dimensions: [("prediction", "missed")], factory: factory)
        rollbacks = Counter(label: "coursesync_client_rollbacks_total", factory: factory)
        rolledBackEdits = Counter(label: "coursesync_client_rolled_back_edits_total", factory: factory)
        reconnects = Counter(label: "coursesync_client_reconnects_total", factory: factory)
        pendingBatches = Gauge(label: "coursesync_client_pending_batches", factory: factory)
    }

    /// Reports what changed between two readings of the engine's counters.
    func report(from old: ClientCore.Stats, to new: ClientCore.Stats, pending: Int) {
        if new.predictionsMatched > old.predictionsMatched { predictionsMatched.increment(by: new.predictionsMatched - old.predictionsMatched) }
        if new.predictionsMissed > old.predictionsMissed { predictionsMissed.increment(by: new.predictionsMissed - old.predictionsMissed) }
        if new.rejections > old.rejections { rollbacks.increment(by: new.rejections - old.rejections) }
        if new.droppedEdits > old.droppedEdits { rolledBackEdits.increment(by: new.droppedEdits - old.droppedEdits) }
        pendingBatches.record(pending)
    }
}
