import SyncModel
import SyncWire

extension Simulation {
    func log(_ line: @autoclosure () -> String) {
        let entry = "[\(step) \(now)] \(line())"
        result.trace.append(entry)
        if !tracing, result.trace.count > 60 { result.trace.removeFirst(result.trace.count - 40) }
    }

    func fault(_ what: String) {
        result.faults += 1
        lastEventAt = max(lastEventAt, now)
        log("FAULT: \(what)")
    }

    func violation(_ what: String) {
        result.violations.append(what)
        log("VIOLATION: \(what)")
    }

    func describeState() -> String {
        let parts = clients.map { "\($0.name): \($0.core.phase) seq \($0.core.confirmed.seq) pending \($0.core.pendingBatches.count)\($0.connection.map { " on #\($0)" } ?? "")" }
        return "store seq \(database.state.seq), store calls \(database.calls.count), pauses \(database.sleepers.count), catch-ups waiting \(feeds.count); " + parts.joined(separator: "; ")
    }

    func finish() -> SimulationResult { result }

    /// A message in a few words, for traces.
    static func brief(_ message: WireMessage) -> String {
        switch message {
        case .hello: "Hello"
        case .welcome: "Welcome"
        case .error(let error): "Error \(error.code)"
        case .subscribe(_, let since, _): "Subscribe since \(since)"
        case .unsubscribe: "Unsubscribe"
        case .subscribed(_, let seq): "Subscribed at \(seq)"
        case .snapshot(let part): "Snapshot at \(part.course.seq)"
        case .diff(let diff): "Diff \(diff.seq) (batch \(diff.origin.batchSeq) of \(diff.origin.clientID.description.prefix(4)))"
        case .push(let push): "Push batch \(push.batchSeq)"
        case .ack(let ack): "Ack batch \(ack.batchSeq) as \(ack.seq)"
        case .reject(let reject): "Reject batch \(reject.batchSeq) \(reject.rejection.code)"
        case .progress: "Progress"
        case .ping: "Ping"
        case .pong: "Pong"
        case .setPresence(let announcement): "SetPresence \(announcement.focus.map { "\($0)" } ?? "nothing")"
        case .presence(let change): "Presence\(change.full ? " (full)" : "") +\(change.peers.count) -\(change.left.count)"
        }
    }

    /// What differs between two states, briefly.
    static func difference(_ a: CourseState, _ b: CourseState) -> String {
        var parts: [String] = []
        if a.seq != b.seq { parts.append("seq \(a.seq) vs \(b.seq)") }
        for id in Set(a.chapters.keys).union(b.chapters.keys) where a.chapters[id] != b.chapters[id] {
            parts.append("chapter \(id): \(a.chapters[id].map { "\($0.title)@\($0.position) v\($0.version)" } ?? "none") vs \(b.chapters[id].map { "\($0.title)@\($0.position) v\($0.version)" } ?? "none")")
        }
        for id in Set(a.videos.keys).union(b.videos.keys) where a.videos[id] != b.videos[id] {
            parts.append("video \(id): \(a.videos[id].map { "\($0.title)@\($0.position)" } ?? "none") vs \(b.videos[id].map { "\($0.title)@\($0.position)" } ?? "none")")
        }
        for id in Set(a.media.keys).union(b.media.keys) where a.media[id] != b.media[id] { parts.append("media \(id)") }
        return parts.prefix(6).joined(separator: "; ")
    }
}
