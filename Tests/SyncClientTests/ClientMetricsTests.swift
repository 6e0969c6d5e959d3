import Foundation
import MetricsTestKit
@testable import SyncClient
import SyncModel
import Testing
@testable import TestSupport

/// The client library reports through swift-metrics: prediction accuracy, rollbacks,
/// reconnects and queue depth, for a known sequence of answers.
@Suite struct ClientMetricsTests {
    @Test func predictionsRollbacksReconnectsAndQueueDepthAreCounted() async throws {
        try await withClientWorld(chapters: 1, media: 2) { world in
            let metrics = TestMetrics()
            let editor = try await world.client("ada") { $0.metricsFactory = metrics }
            try await editor.settle()
            let chapter = LocalKey(world.chapters[0])
            try await editor.linkMedia([LocalKey(world.media[0])], to: chapter)
            try await editor.settle()
            try await editor.renameChapter(chapter, to: "Renamed")
            try await editor.settle()
            #expect(try metrics.expectCounter("coursesync_client_batches_answered_total", [("prediction", "matched")]).totalValue == 2)
            #expect(try metrics.expectGauge("coursesync_client_pending_batches").lastValue == 0)
            // A viewer's edit: predicted to commit, refused FORBIDDEN, rolled back.
            let viewerMetrics = TestMetrics()
            let viewer = try await world.client("bo") {
                $0.token = world.server.token([world.courseID: .viewer], user: "bo")
                $0.metricsFactory = viewerMetrics
            }
            try await viewer.settle()
            try await viewer.renameChapter(chapter, to: "Not allowed")
            try await viewer.settle()
            #expect(try viewerMetrics.expectCounter("coursesync_client_batches_answered_total", [("prediction", "missed")]).totalValue == 1)
            #expect(try viewerMetrics.expectCounter("coursesync_client_rollbacks_total").totalValue == 1)
            #expect(try viewerMetrics.expectCounter("coursesync_client_rolled_back_edits_total").totalValue == 1)
            // A dropped connection: one reconnect.
            #expect(try metrics.expectCounter("coursesync_client_reconnects_total").totalValue == 0)
            await editor.dropConnection()
            try await eventually("a reconnect") { (try? metrics.expectCounter("coursesync_client_reconnects_total").totalValue) == 1 }
            try await editor.close()
            try await viewer.close()
        }
    }
}
