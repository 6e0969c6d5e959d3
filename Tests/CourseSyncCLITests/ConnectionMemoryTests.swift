import Foundation
import NIOPosix
import SyncModel
import SyncWire
import Testing
@testable import TestSupport
@testable import coursesync

/// What an idle subscribed connection costs the server, as the kernel counts the server process's
/// memory (its resident set), over 1,000 of them: bounded, so that a per-connection buffer, task
/// or timer added by mistake shows here rather than in production. (`coursesync bench fanout`
/// gives the figure for a release build at 10,000 connections: docs/figures.md.)
@Suite struct ConnectionMemoryTests {
    /// The bound for this (debug) build, per connection. It measured 22–23 KiB while each
    /// connection had a reading task and a writing task, and 10–11 KiB once an idle connection ran
    /// none (and its framing kept no encoding buffer); a task sleeping per connection adds about
    /// 1.5 KiB, a task of the old reader's depth several. The margin is for the allocator's moods.
    static let bound = 15 * 1024

    @Test func aThousandIdleSubscribersCostTheServerBoundedMemory() async throws {
        try await withReplicaFolder { folder in
            let data = folder.appendingPathComponent("data").path
            let server = try Subprocess(["serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--heartbeat-seconds", "600",
                                         "--max-connections-per-address", "2000", "--max-connections-per-user", "2000", "--log-level", "error"])
            defer { server.signal(SIGKILL) }
            let port = try #require(try await listeningPort(of: server), "\(server.output)")
            // After the server's start, which makes the secret the token is signed with.
            let (course, token) = try await CommandLineTests.course("Memory", role: "viewer", data: data)
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let subscribe = Framing.frame(WireMessage.subscribe(courseID: course, sinceSeq: 0).payload())
            let greeting: (Int) -> [UInt8] = { _ in
                Framing.frame(WireMessage.hello(Hello(clientID: ClientID(.fresh()), token: token)).payload()) + subscribe
            }
            // A first 100 settle what every node holds once (the course's hub, allocator arenas).
            let warm = try await Subscribers.connect(count: 100, ports: [port], group: group, greeting: greeting)
            try await warm.waitUntilSubscribed(timeout: .seconds(60))
            try await Task.sleep(for: .milliseconds(200))
            let before = try ProcessStats(pid: server.pid)
            let measured = try await Subscribers.connect(count: 1_000, ports: [port], group: group, greeting: greeting)
            try await measured.waitUntilSubscribed(timeout: .seconds(60))
            try await Task.sleep(for: .milliseconds(200))
            let after = try ProcessStats(pid: server.pid)
            let perConnection = (after.residentBytes - before.residentBytes) / 1_000
            print("server memory per idle subscribed connection: \(perConnection / 1024) KiB (bound \(Self.bound / 1024) KiB)")
            #expect(perConnection > 0, "the measurement saw the connections")
            #expect(perConnection <= Self.bound, "an idle subscribed connection holds \(perConnection / 1024) KiB of the server's memory")
            await measured.close()
            await warm.close()
            try await group.shutdownGracefully()
        }
    }
}
