import Foundation
import PostgresNIO
import PostgresStore
import SyncModel
import SyncServer
import SyncWire
import Testing
@testable import TestSupport

/// Several clients editing one course over real TCP, committed to a real PostgreSQL.
@Suite struct ConvergenceTests {
    @Test func twoClientsAppendingToOneChapterAtOnceAreBothKeptDense() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 1, media: 20)
            try await withServer(store: database.store) { server in
                let alice = try await server.editor(of: courseID)
                let bob = try await server.editor(of: courseID)
                try await alice.subscribe(courseID)
                try await bob.subscribe(courseID)
                func links(_ media: ArraySlice<EntityID>) -> [SyncModel.Operation] {
                    [.linkMedia(chapter: .id(chapters[0]),
                                items: media.enumerated().map { LinkItem(temp: TempID(UInt64(1 + $0.offset))!, media: .id($0.element)) },
                                placement: .atEnd)]
                }
                async let aliceAnswer = alice.push(courseID, batchSeq: 1, baseSeq: 1, links(media[0..<10]))
                async let bobAnswer = bob.push(courseID, batchSeq: 1, baseSeq: 1, links(media[10..<20]))
                let (aliceAck, bobAck) = try await (aliceAnswer.get(), bobAnswer.get())
                #expect(Set([aliceAck.seq, bobAck.seq]) == [2, 3])
                #expect(aliceAck.idMap.count == 10 && bobAck.idMap.count == 10)

                for client in [alice, bob] {
                    try await client.waitUntil("both diffs arrived") { messages in
                        messages.filter { if case .diff = $0 { true } else { false } }.count == 2
                    }
                }
                // Same diffs, same order, for both.
                #expect(alice.diffs == bob.diffs)
                #expect(alice.diffs.map(\.seq) == [2, 3])

                let stored = try await database.store.snapshot(courseID: courseID)
                #expect(stored.videos(in: chapters[0]).map(\.position) == Array(0..<20))
                #expect(stored.invariantViolations().isEmpty)
                // The batch that committed first holds positions 0..<10.
                let first = aliceAck.seq < bobAck.seq ? aliceAck : bobAck
                #expect(Set(stored.videos(in: chapters[0]).prefix(10).map(\.id)) == Set(first.idMap.values))
                #expect(try alice.replica(courseID) == stored)
                #expect(try bob.replica(courseID) == stored)
                try await expectDatabase(database, equals: stored)
            }
        }
    }
}


extension ConvergenceTests {
    @Test func sixteenClientsPushingRandomBatchesConvergeOnTheDatabaseState() async throws {
        let clients = 16, batchesPerClient = 50
        let seed = ProcessInfo.processInfo.environment["COURSESYNC_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1 ... .max)
        print("sixteenClients seed: \(seed) (COURSESYNC_SEED=\(seed) reproduces the choices, not the interleaving)")
        try await withDatabase { database in
            let (courseID, _, media) = try await database.makeCourse(chapters: 3, media: 40)
            try await withServer(store: database.store) { server in
                let connected = try await withThrowingTaskGroup(of: TestClient.self) { group in
                    for _ in 0..<clients { group.addTask { try await server.editor(of: courseID) } }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                let tallies = try await withThrowingTaskGroup(of: (acked: Int, rejected: Int).self) { group in
                    for (index, client) in connected.enumerated() {
                        group.addTask {
                            try await client.subscribe(courseID)
                            var random = SplitMix64(seed: seed &+ UInt64(index))
                            var replica = ReplicaBuilder(courseID: courseID)
                            var nextTemp: UInt64 = 1
                            var tally = (acked: 0, rejected: 0)
                            for batchSeq in 1...UInt64(batchesPerClient) {
                                let state = try replica.update(client.received)
                                let ops = RandomEdits.batch(in: state, media: media, nextTemp: &nextTemp, using: &random)
                                switch try await client.push(courseID, batchSeq: batchSeq, baseSeq: state.seq, ops) {
                                case .success: tally.acked += 1
                                case .failure: tally.rejected += 1
                                }
                            }
                            return tally
                        }
                    }
                    return try await group.reduce(into: [(acked: Int, rejected: Int)]()) { $0.append($1) }
                }
                let acked = tallies.map(\.acked).reduce(0, +)
                print("sixteenClients: \(acked) acked, \(tallies.map(\.rejected).reduce(0, +)) rejected")
                // The set-up batch plus every acknowledged batch, each one commit.
                let stored = try await database.store.snapshot(courseID: courseID)
                #expect(stored.seq == UInt64(1 + acked))
                #expect(acked > clients * batchesPerClient / 2, "most random batches should be valid")
                #expect(stored.invariantViolations().isEmpty)
                try await expectDatabase(database, equals: stored)
                for client in connected {
                    try await client.waitUntil("caught up to \(stored.seq)") { messages in
                        messages.contains { if case .diff(let diff) = $0 { diff.seq == stored.seq } else { false } }
                    }
                    var replica = ReplicaBuilder(courseID: courseID)
                    #expect(try replica.update(client.received) == stored)
                    #expect(client.undecodable.isEmpty)
                }
            }
        }
    }
}


/// Random but mostly valid edits made against what a client currently sees.
enum RandomEdits {
    static func batch(in state: CourseState, media: [EntityID], nextTemp: inout UInt64, using random: inout SplitMix64) -> [SyncModel.Operation] {
        (0..<Int.random(in: 1...3, using: &random)).map { _ in op(in: state, media: media, nextTemp: &nextTemp, using: &random) }
    }

    static func op(in state: CourseState, media: [EntityID], nextTemp: inout UInt64, using random: inout SplitMix64) -> SyncModel.Operation {
        func temp() -> TempID {
            defer { nextTemp += 1 }
            return TempID(nextTemp)!
        }
        let chapters = state.orderedChapters
        let videos = Array(state.videos.values).sorted { $0.id < $1.id }
        func placement(among siblings: [EntityID]) -> Placement {
            switch Int.random(in: 0..<4, using: &random) {
            case 0: .atStart
            case 1 where !siblings.isEmpty: .after(.id(siblings.randomElement(using: &random)!))
            case 2 where !siblings.isEmpty: .before(.id(siblings.randomElement(using: &random)!))
            default: .atEnd
            }
        }
        let roll = Int.random(in: 0..<100, using: &random)
        switch roll {
        case 0..<40 where !chapters.isEmpty:
            let chapter = chapters.randomElement(using: &random)!
            let count = Int.random(in: 1...3, using: &random)
            let items = (0..<count).map { _ in LinkItem(temp: temp(), media: .id(media.randomElement(using: &random)!)) }
            return .linkMedia(chapter: .id(chapter.id), items: items, placement: placement(among: state.videos(in: chapter.id).map(\.id)))
        case 40..<55 where !videos.isEmpty && !chapters.isEmpty:
            let video = videos.randomElement(using: &random)!
            let chapter = chapters.randomElement(using: &random)!
            return .moveVideo(.id(video.id), toChapter: .id(chapter.id), placement: placement(among: state.videos(in: chapter.id).map(\.id)))
        case 55..<65 where !videos.isEmpty:
            return .renameVideo(.id(videos.randomElement(using: &random)!.id), title: "Video \(Int.random(in: 0..<1000, using: &random))")
        case 65..<75 where !videos.isEmpty:
            return .unlinkVideo(.id(videos.randomElement(using: &random)!.id))
        case 75..<82 where !chapters.isEmpty:
            return .renameChapter(.id(chapters.randomElement(using: &random)!.id), title: "Chapter \(Int.random(in: 0..<1000, using: &random))")
        case 82..<88 where !chapters.isEmpty:
            let chapter = chapters.randomElement(using: &random)!
            return .moveChapter(.id(chapter.id), placement: placement(among: chapters.map(\.id).filter { $0 != chapter.id }))
        case 88..<91 where chapters.count > 3:
            return .deleteChapter(.id(chapters.randomElement(using: &random)!.id))
        default:
            return .createChapter(temp: temp(), title: "New chapter \(Int.random(in: 0..<1000, using: &random))",
                                  placement: placement(among: chapters.map(\.id)))
        }
    }
}

extension ConvergenceTests {
    @Test func twoServerNodesOnOneDatabaseSerializeAndShareEveryDiff() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 2, media: 30)
            try await withServer(store: database.store) { nodeA in
                // A second node: its own store object (own cache), same database.
                let storeB = PostgresStore(client: database.client, logger: TestDatabase.logger)
                try await withServer(store: storeB) { nodeB in
                    let listeners = [(database.store, nodeA.server), (storeB, nodeB.server)].map { store, server in
                        Task { try await CommitListener(store: store, server: server).run() }
                    }
                    defer { listeners.forEach { $0.cancel() } }
                    let onA = try await nodeA.editor(of: courseID)
                    let onB = try await nodeB.editor(of: courseID)
                    try await onA.subscribe(courseID)
                    try await onB.subscribe(courseID)
                    async let pushesA: Void = {
                        for index in 0..<15 {
                            _ = try await onA.push(courseID, batchSeq: BatchSeq(index + 1), [
                                .linkMedia(chapter: .id(chapters[index % 2]), items: [LinkItem(temp: TempID(UInt64(index + 1))!, media: .id(media[index]))], placement: .atStart),
                            ]).get()
                        }
                    }()
                    async let pushesB: Void = {
                        for index in 0..<15 {
                            _ = try await onB.push(courseID, batchSeq: BatchSeq(index + 1), [
                                .linkMedia(chapter: .id(chapters[index % 2]), items: [LinkItem(temp: TempID(UInt64(index + 1))!, media: .id(media[15 + index]))], placement: .atEnd),
                            ]).get()
                        }
                    }()
                    _ = try await (pushesA, pushesB)
                    let stored = try await database.store.snapshot(courseID: courseID)
                    #expect(stored.seq == 31)
                    #expect(stored.videos.count == 30)
                    try await expectDatabase(database, equals: stored)
                    for client in [onA, onB] {
                        try await client.waitUntil("caught up to \(stored.seq)") { messages in
                            messages.contains { if case .diff(let diff) = $0 { diff.seq == stored.seq } else { false } }
                        }
                        var replica = ReplicaBuilder(courseID: courseID)
                        #expect(try replica.update(client.received) == stored)
                    }
                }
            }
        }
    }
}

extension ConvergenceTests {
    @Test func aLargeBatchReportsProgressBeforeItsAck() async throws {
        try await withDatabase { database in
            let (courseID, chapters, media) = try await database.makeCourse(chapters: 1, media: 150)
            try await withServer(store: database.store) { server in
                let client = try await server.editor(of: courseID)
                let items = media.enumerated().map { LinkItem(temp: TempID(UInt64($0.offset + 1))!, media: .id($0.element)) }
                let big = try await client.push(courseID, batchSeq: 1, [.linkMedia(chapter: .id(chapters[0]), items: items, placement: .atEnd)]).get()
                #expect(big.idMap.count == 150)
                let progress = client.received.compactMap { if case .progress(let progress) = $0 { progress } else { nil } }
                #expect(progress.map(\.done) == [0, 150])
                #expect(progress.allSatisfy { $0.total == 150 && $0.batchSeq == 1 })
                let ackIndex = try #require(client.received.firstIndex { if case .ack = $0 { true } else { false } })
                let lastProgress = try #require(client.received.lastIndex { if case .progress = $0 { true } else { false } })
                #expect(lastProgress < ackIndex)
                // A small batch (100 ops or fewer) sends none.
                _ = try await client.push(courseID, batchSeq: 2, [.renameChapter(.id(chapters[0]), title: "Small")]).get()
                #expect(client.received.filter { if case .progress = $0 { true } else { false } }.count == 2)
            }
        }
    }
}
