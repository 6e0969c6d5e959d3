import Logging
import Metrics
import SyncModel
import SyncStorage

/// What a node reports of a database call its store engine tries again (the engine's
/// `onFailure`): a warning with the operation, SQLSTATE and message (never the parameters), and
/// `coursesync_store_errors_total{retried="true"}`.
public func reportingStoreRetries(to logger: Logger) -> @Sendable (StoreError) -> Void {
    { error in
        logger.warning("database call failed; trying again", metadata: ["operation": "\(error.operation?.rawValue ?? "?")", "error": "\(error)"])
        ServerMetrics.storeError(error, .commit, retried: true)
    }
}

/// What the server reports through swift-metrics (the process chooses the backend: `serve`
/// exports Prometheus text on `--http-listen`). Names and labels are listed in the README.
enum ServerMetrics {
    /// Open protocol connections.
    static let connections = Meter(label: "coursesync_connections")
    /// Subscriptions, live or catching up.
    static let subscriptions = Meter(label: "coursesync_subscriptions")
    /// Course hubs resident on this node.
    static let courseHubs = Meter(label: "coursesync_course_hubs")
    /// Courses the store engine keeps in memory, and about how many bytes they hold.
    static let cachedCourses = Meter(label: "coursesync_store_cached_courses")
    static let cacheBytes = Meter(label: "coursesync_store_cache_bytes")
    /// Batches per group commit.
    static let groupBatches = Recorder(label: "coursesync_group_batches", aggregate: true)
    /// A group commit's store call, from the hub.
    static let commitDuration = Metrics.Timer(label: "coursesync_commit_seconds")
    /// From a push's arrival at its course hub to its Ack or Reject being queued to its connection.
    static let pushAnswer = Metrics.Timer(label: "coursesync_push_answer_seconds")
    /// From a group's store call returning to its diff being queued to the last live subscriber.
    static let fanOutLag = Metrics.Timer(label: "coursesync_fan_out_lag_seconds")
    /// Connections cut because they fell 4,096 frames behind.
    static let slowConsumerCuts = Counter(label: "coursesync_slow_consumer_cuts_total")
    /// Store calls that failed (not counting unknown courses), by operation: those the server gave
    /// up on, and (`retried="true"`) those the store engine tried again.
    static func storeError(_ error: any Error, _ fallback: StoreOperation, retried: Bool = false) {
        let operation = CourseHub.operation(of: error, else: fallback)
        Counter(label: "coursesync_store_errors_total", dimensions: [("operation", operation.rawValue), ("retried", retried ? "true" : "false")])
            .increment()
    }

    /// Creates every metric that exists from the start, so that a scrape shows zeros rather than
    /// nothing before the first event.
    /// Connections refused or cut for a limit, by limit.
    static func refused(_ refusal: Refusal) {
        Counter(label: "coursesync_refusals_total", dimensions: [("limit", refusal.rawValue)]).increment()
    }

    static func register() {
        for refusal in Refusal.allCases { _ = Counter(label: "coursesync_refusals_total", dimensions: [("limit", refusal.rawValue)]) }
        _ = (connections, subscriptions, courseHubs, slowConsumerCuts, committed, replayed, catchUpDiffs, catchUpSnapshots)
        for operation in [StoreOperation.commit, .catchUp, .readSeq] {
            _ = Counter(label: "coursesync_store_errors_total", dimensions: [("operation", operation.rawValue), ("retried", "false")])
        }
    }

    /// One per batch answered: `committed`, `replayed`, or `rejected` with the code.
    static func batch(_ outcome: BatchOutcome) {
        switch outcome {
        case .committed: committed.increment()
        case .replayed: replayed.increment()
        case .rejected(let rejection):
            Counter(label: "coursesync_batches_total", dimensions: [("outcome", "rejected"), ("code", "\(rejection.code)")]).increment()
        }
    }

    private static let committed = Counter(label: "coursesync_batches_total", dimensions: [("outcome", "committed")])
    private static let replayed = Counter(label: "coursesync_batches_total", dimensions: [("outcome", "replayed")])

    /// A subscriber's catch-up read: `diffs` or `snapshot`.
    static func catchUp(_ catchUp: CatchUp) {
        switch catchUp {
        case .diffs: catchUpDiffs.increment()
        case .snapshot: catchUpSnapshots.increment()
        }
    }

    private static let catchUpDiffs = Counter(label: "coursesync_catch_ups_total", dimensions: [("kind", "diffs")])
    private static let catchUpSnapshots = Counter(label: "coursesync_catch_ups_total", dimensions: [("kind", "snapshot")])
}
