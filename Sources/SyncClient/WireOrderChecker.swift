import SyncModel
import SyncWire

/// What a client's connection did, as a ``WireOrderChecker`` (or any frame observer) sees it.
package enum FrameEvent: Hashable, Sendable {
    /// A new connection is up (the frames that follow belong to it).
    case connected
    case sent(WireMessage)
    case received(WireMessage)
}

/// Checks, from the frames one client sent and received, the ordering rules `protocol/README.md`
/// promises on each connection: for a subscribed course, every commit once, in seq order, with no
/// gap (§3.3); a batch's `Ack` before its `Diff` when this connection's push made the commit (§5).
/// A batch first pushed on an earlier connection may see its Diff first on a later one (the
/// commit happened before the resend), so only batches first pushed on the current connection
/// are held to that rule. Used by `coursesync stress`, independently of the engine.
package struct WireOrderChecker: Sendable {
    /// The client's ID, from its `Hello`.
    package private(set) var clientID: ClientID?
    package private(set) var violations: [String] = []
    package private(set) var connections = 0
    package private(set) var diffsSeen = 0
    private var everPushed = Set<BatchSeq>()
    private var firstPushedHere = Set<BatchSeq>()
    private var ackedHere = Set<BatchSeq>()
    private var streams: [EntityID: CourseSeq] = [:]

    package init() {}

    package mutating func observe(_ event: FrameEvent) {
        switch event {
        case .connected:
            connections += 1
            firstPushedHere = []
            ackedHere = []
            streams = [:]
        case .sent(.hello(let hello)):
            clientID = hello.clientID
        case .sent(.subscribe(let courseID, let since, _)):
            streams[courseID] = since
        case .sent(.push(let push)):
            if everPushed.insert(push.batchSeq).inserted { firstPushedHere.insert(push.batchSeq) }
        case .received(.ack(let ack)):
            ackedHere.insert(ack.batchSeq)
        case .received(.diff(let diff)):
            diffsSeen += 1
            let origin = diff.origin
            if origin.clientID == clientID, firstPushedHere.contains(origin.batchSeq), !ackedHere.contains(origin.batchSeq) {
                violations.append("connection \(connections): the Diff of batch \(origin.batchSeq) (seq \(diff.seq)) came before its Ack")
            }
            if let last = streams[diff.courseID], diff.seq != last + 1 {
                violations.append("connection \(connections): Diff \(diff.seq) after seq \(last) (\(diff.seq <= last ? "a repeat" : "a gap"))")
            }
            streams[diff.courseID] = diff.seq
        case .received(.snapshot(let part)) where part.last:
            streams[part.course.id] = part.course.seq
        default:
            break
        }
    }
}
