import SyncModel
import SyncWire
import Testing

/// The heartbeat rule both ends follow (protocol §8), in simulated time.
@Suite struct HeartbeatTests {
    let interval = Duration.seconds(1)

    func at(_ ms: Int64) -> Moment { .milliseconds(ms) }

    @Test func aQuietPeerIsPingedEachIntervalAndClosedAfterThree() {
        var heartbeat = Heartbeat(interval: interval, now: at(0))
        #expect(heartbeat.deadline == at(1_000))
        #expect(heartbeat.fire(now: at(999)) == nil)
        #expect(heartbeat.fire(now: at(1_000)) == .ping)
        #expect(heartbeat.fire(now: at(1_500)) == nil, "one ping per quiet interval")
        #expect(heartbeat.deadline == at(2_000))
        #expect(heartbeat.fire(now: at(2_000)) == .ping)
        #expect(heartbeat.deadline == at(3_000))
        #expect(heartbeat.fire(now: at(3_000)) == .timeout)
    }

    @Test func anythingReceivedRestartsTheCount() {
        var heartbeat = Heartbeat(interval: interval, now: at(0))
        #expect(heartbeat.fire(now: at(1_000)) == .ping)
        #expect(heartbeat.fire(now: at(2_000)) == .ping)
        heartbeat.received(now: at(2_900))  // the Pong
        #expect(heartbeat.fire(now: at(3_000)) == nil)
        #expect(heartbeat.deadline == at(3_900))
        // A peer that answers every ping is never closed.
        var now = at(2_900)
        for _ in 0..<100 {
            now = heartbeat.deadline
            #expect(heartbeat.fire(now: now) == .ping)
            heartbeat.received(now: now + .milliseconds(50))
        }
    }

    @Test func aLateTimerStillClosesOnlyAfterThreeIntervals() {
        var heartbeat = Heartbeat(interval: interval, now: at(0))
        #expect(heartbeat.fire(now: at(2_500)) == .ping)
        #expect(heartbeat.deadline == at(3_000))
        #expect(heartbeat.fire(now: at(3_000)) == .timeout)
    }
}
