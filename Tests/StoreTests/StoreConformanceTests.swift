import Foundation
import PostgresStore
import SQLiteStore
import SyncModel
import SyncServer
import SyncSimulation
import SyncStorage
import SyncWire
import Testing
@testable import TestSupport

/// Every store behaviour the server relies on, run against both stores.
@Suite struct StoreConformanceTests {
    enum Kind: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case postgres, sqlite, memory
        var testDescription: String { rawValue }
    }

    /// A fresh store of `kind`; `another()` opens a second instance on the same data (as a second
    /// node or a restarted process would).
    struct Subject {
        let store: any SyncStore
        let another: () throws -> any SyncStore
    }

    static func withStore<T>(_ kind: Kind, logRetention: Int = 100_000, snapshotInterval: Int = 1_000, _ body: (Subject) async throws -> T) async throws -> T {
        switch kind {
        case .postgres:
            return try await withDatabase(logRetention: logRetention) { database in
                let store = PostgresStore(client: database.client, logger: TestDatabase.logger, logRetention: logRetention, snapshotInterval: snapshotInterval)
                return try await body(Subject(store: store, another: {
                    PostgresStore(client: database.client, logger: TestDatabase.logger, logRetention: logRetention, snapshotInterval: snapshotInterval)
                }))
            }
        case .memory:
            let backend = MemoryBackend()
            return try await body(Subject(store: StoreEngine(backend: backend, logRetention: logRetention, snapshotInterval: snapshotInterval), another: {
                StoreEngine(backend: backend, logRetention: logRetention, snapshotInterval: snapshotInterval)
            }))
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("coursesync-sqlite-\(UInt64.random(in: 0 ... .max))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let path = directory.appendingPathComponent("store.sqlite").path
            return try await body(Subject(store: try SQLiteStore(path: path, logRetention: logRetention, snapshotInterval: snapshotInterval), another: {
                try SQLiteStore(path: path, logRetention: logRetention, snapshotInterval: snapshotInterval)
            }))
        }
    }

    @Test(arguments: Kind.allCases)
    func aGroupCommitsEachBatchAllOrNothingInOrder(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let store = subject.store
            let (courseID, chapters, media) = try await makeStoreCourse(store)
            let alice = ClientID(.fresh()), bob = ClientID(.fresh())
            let outcomes = try await store.commit([
                linkBatch(alice, courseID, 1, chapter: chapters[0], media: media[0], temp: 1),
                Batch(clientID: bob, courseID: courseID, batchSeq: 1, baseSeq: 0, ops: [
                    .renameChapter(.id(chapters[1]), title: "Renamed"), .unlinkVideo(.id(.fresh())),  // the second op fails
                ]),
                linkBatch(bob, courseID, 2, chapter: chapters[0], media: media[1], temp: 1),
            ], courseID: courseID)
            guard outcomes.count == 3, case .committed(let first) = outcomes[0], case .rejected(let rejection) = outcomes[1],
                  case .committed(let third) = outcomes[2] else {
                Issue.record("unexpected outcomes \(outcomes)")
                return
            }
            #expect(rejection.code == .targetDeleted && rejection.opIndex == 1)
            #expect([first.seq, third.seq] == [2, 3])
            let state = try await store.snapshot(courseID: courseID)
            #expect(state.seq == 3)
            #expect(state.chapters[chapters[1]]?.title == "Two")
            #expect(state.videos(in: chapters[0]).map(\.id) == [first.ack.idMap[TempID(1)!], third.ack.idMap[TempID(1)!]])
            // A second instance (another node, or a restart) reads the same state.
            #expect(try await subject.another().snapshot(courseID: courseID) == state)
        }
    }

    /// Rows get time-ordered IDs stamped with their commit's time, so the stores' key indexes
    /// grow at one edge (what the PostgreSQL commit's throughput gained from them).
    @Test(arguments: Kind.allCases)
    func newRowsGetTimeOrderedIDsOfTheirCommitsMoment(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let store = subject.store
            let (courseID, chapters, media) = try await makeStoreCourse(store)
            let before = UInt64(Date().timeIntervalSince1970 * 1000)
            let outcome = try await store.commit([linkBatch(ClientID(.fresh()), courseID, 1, chapter: chapters[0], media: media[0], temp: 1)],
                                                 courseID: courseID)
            let after = UInt64(Date().timeIntervalSince1970 * 1000)
            guard case .committed(let commit) = outcome.first, let id = commit.ack.idMap[TempID(1)!] else {
                Issue.record("not committed: \(outcome)")
                return
            }
            #expect(id.version == 7)
            #expect((before ... after).contains(id.unixMilliseconds ?? 0), "\(id) minted outside \(before)...\(after)")
            #expect((chapters + media).allSatisfy { $0.version == 7 })
        }
    }

    @Test(arguments: Kind.allCases)
    func aResentBatchReplaysItsAckAndIsNotAppliedAgain(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let store = subject.store
            let (courseID, chapters, media) = try await makeStoreCourse(store)
            let client = ClientID(.fresh())
            let batch = linkBatch(client, courseID, 7, chapter: chapters[0], media: media[0], temp: 5)
            guard case .committed(let commit) = try await store.commit([batch], courseID: courseID).first else {
                Issue.record("not committed")
                return
            }
            let before = try await store.snapshot(courseID: courseID)
            // Later, and again within one group: replayed, byte for byte.
            let again = try await store.commit([batch, batch], courseID: courseID)
            #expect(again == [.replayed(commit.ack), .replayed(commit.ack)])
            #expect(try await subject.another().commit([batch], courseID: courseID) == [.replayed(commit.ack)])
            #expect(try await store.snapshot(courseID: courseID) == before)
            // The same batch twice in its first group: applied once.
            let fresh = linkBatch(client, courseID, 8, chapter: chapters[1], media: media[0], temp: 6)
            let twice = try await store.commit([fresh, fresh], courseID: courseID)
            guard case .committed(let once) = twice[0] else { Issue.record("not committed"); return }
            #expect(twice[1] == .replayed(once.ack))
            #expect(try await store.snapshot(courseID: courseID).seq == before.seq + 1)
        }
    }

    /// The engine answers from its cache of the course only where the cache cannot be wrong: a
    /// second instance (a restart: nothing cached; another node: a stale cache) must answer as the
    /// stored records say.
    @Test(arguments: Kind.allCases)
    func whatAnInstanceHasNotSeenIsAnsweredAsTheStoreKnowsIt(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let store = subject.store
            let (courseID, chapters, media) = try await makeStoreCourse(store)
            let ada = ClientID(.fresh()), bo = ClientID(.fresh())
            let link = linkBatch(ada, courseID, 1, chapter: chapters[0], media: media[0], temp: 1)
            let unlink = Batch(clientID: ada, courseID: courseID, batchSeq: 2, baseSeq: 0, ops: [.unlinkVideo(.temp(TempID(1)!))])
            let chapter = Batch(clientID: ada, courseID: courseID, batchSeq: 3, baseSeq: 0,
                                ops: [.createChapter(temp: TempID(5)!, title: "Five", placement: .atEnd)])
            let first = try await store.commit([link, unlink, chapter], courseID: courseID)
            guard first.count == 3, case .committed(let unlinked) = first[1], case .committed(let created) = first[2] else {
                Issue.record("set-up not committed: \(first)")
                return
            }
            // A restarted instance gets the unlink again: resolved afresh it would fail (the video
            // is gone), but it was committed: its stored ack.
            let restarted = try subject.another()
            #expect(try await restarted.commit([unlink], courseID: courseID) == [.replayed(unlinked.ack)])
            // A temp ID the author used in a batch the instance never saw: taken.
            let reused = Batch(clientID: ada, courseID: courseID, batchSeq: 4, baseSeq: 0,
                               ops: [.createChapter(temp: TempID(5)!, title: "Five again", placement: .atEnd)])
            let refused = try await subject.another().commit([reused], courseID: courseID)
            guard case .rejected(let rejection) = refused.first else {
                Issue.record("a reused temp ID was accepted: \(refused)")
                return
            }
            #expect(rejection.code == .duplicateTempID && rejection.opIndex == 0)
            // ... and referring to it is fine.
            let rename = Batch(clientID: ada, courseID: courseID, batchSeq: 5, baseSeq: 0, ops: [.renameChapter(.temp(TempID(5)!), title: "Renamed")])
            guard case .committed = try await subject.another().commit([rename], courseID: courseID).first else {
                Issue.record("a temp ID from an unseen batch was not found")
                return
            }
            // A stale instance (its cache is from before the last commits) gets a batch about a
            // chapter created meanwhile elsewhere: not "deleted", committed.
            let stale = restarted
            let new = try await store.commit([Batch(clientID: bo, courseID: courseID, batchSeq: 1, baseSeq: 0,
                                                     ops: [.createChapter(temp: TempID(9)!, title: "Nine", placement: .atStart)])], courseID: courseID)
            guard case .committed(let nine) = new.first, let nineID = nine.ack.idMap[TempID(9)!] else {
                Issue.record("not committed: \(new)")
                return
            }
            let late = try await stale.commit([Batch(clientID: bo, courseID: courseID, batchSeq: 2, baseSeq: 0,
                                                     ops: [.renameChapter(.id(nineID), title: "Nine, renamed")])], courseID: courseID)
            guard case .committed(let renamed) = late.first else {
                Issue.record("a stale instance refused a batch about a new chapter: \(late)")
                return
            }
            #expect(renamed.seq == nine.seq + 1)
            let final = try await store.snapshot(courseID: courseID)
            #expect(final.seq == renamed.seq && final.chapters[nineID]?.title == "Nine, renamed")
            #expect(final.chapters[created.ack.idMap[TempID(5)!]!]?.title == "Renamed")
            #expect(final.chapters.count == 4)
        }
    }

    @Test(arguments: Kind.allCases)
    func aRejectedBatchLeavesNoTrace(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let store = subject.store
            let (courseID, chapters, media) = try await makeStoreCourse(store)
            let client = ClientID(.fresh())
            let before = try await store.snapshot(courseID: courseID)
            let bad = Batch(clientID: client, courseID: courseID, batchSeq: 1, baseSeq: 0, ops: [
                .createChapter(temp: TempID(1)!, title: "Fine", placement: .atEnd),
                .linkMedia(chapter: .temp(TempID(1)!), items: [LinkItem(temp: TempID(2)!, media: .id(media[0]))], placement: .atEnd),
                .renameChapter(.id(chapters[0]), title: ""),
            ])
            #expect(try await store.commit([bad], courseID: courseID).first?.rejectionCode == .invalidTitle)
            #expect(try await store.snapshot(courseID: courseID) == before)
            #expect(try await store.catchUp(courseID: courseID, after: before.seq, limit: 10) == .diffs([]))
            // Nothing was recorded: the temps are unknown, the same batch seq may be used (the
            // protocol forbids reusing it for other content; the store just did not keep it).
            let dependent = Batch(clientID: client, courseID: courseID, batchSeq: 2, baseSeq: 0, ops: [.renameChapter(.temp(TempID(1)!), title: "X")])
            #expect(try await store.commit([dependent], courseID: courseID).first?.rejectionCode == .unknownTempID)
            var fixed = bad
            fixed.ops[2] = .renameChapter(.id(chapters[0]), title: "Good")
            guard case .committed(let commit) = try await store.commit([fixed], courseID: courseID).first else { Issue.record("not committed"); return }
            #expect(commit.seq == before.seq + 1)
        }
    }

    @Test(arguments: Kind.allCases)
    func temporaryIDsOfEarlierBatchesCanBeReferenced(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let (courseID, _, media) = try await makeStoreCourse(subject.store)
            let client = ClientID(.fresh())
            _ = try await subject.store.commit([Batch(clientID: client, courseID: courseID, batchSeq: 1, baseSeq: 0,
                                                      ops: [.createChapter(temp: TempID(1)!, title: "Later", placement: .atStart)])], courseID: courseID)
            // A new instance: the temp map is durable, not just cached.
            let outcome = try await subject.another().commit([Batch(clientID: client, courseID: courseID, batchSeq: 2, baseSeq: 0, ops: [
                .linkMedia(chapter: .temp(TempID(1)!), items: [LinkItem(temp: TempID(2)!, media: .id(media[3]))], placement: .atEnd),
                .renameVideo(.temp(TempID(2)!), title: "Linked"),
            ])], courseID: courseID)
            guard case .committed(let commit) = outcome.first else { Issue.record("\(outcome)"); return }
            let state = try await subject.store.snapshot(courseID: courseID)
            #expect(state.orderedChapters.first?.title == "Later")
            #expect(state.videos[commit.ack.idMap[TempID(2)!]!]?.title == "Linked")
            // Reusing a temp ID for a new row is refused.
            let reuse = try await subject.store.commit([Batch(clientID: client, courseID: courseID, batchSeq: 3, baseSeq: 0, ops: [
                .createChapter(temp: TempID(1)!, title: "Again", placement: .atEnd)])], courseID: courseID)
            #expect(reuse.first?.rejectionCode == .duplicateTempID)
        }
    }

    @Test(arguments: Kind.allCases)
    func catchUpReturnsTheDiffsAfterACursorOrASnapshot(_ kind: Kind) async throws {
        try await Self.withStore(kind, logRetention: 8) { subject in
            let store = subject.store
            let (courseID, chapters, _) = try await makeStoreCourse(store)
            let client = ClientID(.fresh())
            var states = [try await store.snapshot(courseID: courseID)]
            for batchSeq in 1...40 as ClosedRange<BatchSeq> {
                _ = try await store.commit([Batch(clientID: client, courseID: courseID, batchSeq: batchSeq, baseSeq: 0,
                                                  ops: [.moveChapter(.id(chapters[Int(batchSeq) % 2]), placement: .atStart)])], courseID: courseID)
                states.append(try await store.snapshot(courseID: courseID))
            }
            let current = states.last!
            #expect(current.seq == 41)
            guard case .diffs(let recent) = try await store.catchUp(courseID: courseID, after: 37, limit: 100) else {
                Issue.record("expected diffs")
                return
            }
            #expect(recent.map(\.seq) == [38, 39, 40, 41])
            var rebuilt = states[36]  // seq 37
            for diff in recent { rebuilt.apply(diff) }
            #expect(rebuilt == current)
            guard case .diffs(let limited) = try await store.catchUp(courseID: courseID, after: 37, limit: 2) else { Issue.record("expected diffs"); return }
            #expect(limited.map(\.seq) == [38, 39])
            #expect(try await store.catchUp(courseID: courseID, after: 41, limit: 10) == .diffs([]))
            // Cursor 0, older than the log keeps (8 entries, pruned in steps), or ahead of the course: a snapshot.
            for cursor in [0, 2, 99] as [CourseSeq] {
                #expect(try await store.catchUp(courseID: courseID, after: cursor, limit: 10) == .snapshot(current), "cursor \(cursor)")
            }
            await #expect(throws: StoreError.unknownCourse(EntityID(high: 1, low: 1))) {
                try await store.catchUp(courseID: EntityID(high: 1, low: 1), after: 0, limit: 1)
            }
        }
    }

    /// The course as it was at any seq: rebuilt from the nearest snapshot at or before it (one
    /// every 5 commits here) and the log, equal to the state the store had then; past the course,
    /// or older than the log and its kept snapshot reach, a clear refusal.
    @Test(arguments: Kind.allCases)
    func theCourseAsItWasAtAnySeq(_ kind: Kind) async throws {
        try await Self.withStore(kind, snapshotInterval: 5) { subject in
            let store = subject.store
            let (courseID, chapters, media) = try await makeStoreCourse(store)
            let client = ClientID(.fresh())
            var states = [try await store.course(courseID, at: 0)]
            #expect(states[0].chapters.isEmpty && states[0].seq == 0, "before any commit: the empty course")
            let start = try await store.snapshot(courseID: courseID)
            for seq in 1...start.seq { states.append(try await store.course(courseID, at: seq)) }
            #expect(states.last == start)
            for batchSeq in 1...23 as ClosedRange<BatchSeq> {
                let op: SyncModel.Operation = batchSeq % 3 == 0
                    ? .linkMedia(chapter: .id(chapters[Int(batchSeq) % 2]), items: [LinkItem(temp: TempID(batchSeq)!, media: .id(media[Int(batchSeq) % media.count]))], placement: .atStart)
                    : .moveChapter(.id(chapters[Int(batchSeq) % 2]), placement: .atStart)
                _ = try await store.commit([Batch(clientID: client, courseID: courseID, batchSeq: batchSeq, baseSeq: 0, ops: [op])], courseID: courseID)
                states.append(try await store.snapshot(courseID: courseID))
            }
            try await Task.sleep(for: .milliseconds(200))  // snapshots are written after their commits
            for seq in 0..<states.count {
                #expect(try await store.course(courseID, at: CourseSeq(seq)) == states[seq], "seq \(seq)")
            }
            // Another instance (a restarted node) rebuilds the same, from the stored snapshots.
            let other = try subject.another()
            #expect(try await other.course(courseID, at: 12) == states[12])
            await #expect(throws: StoreError.notInHistory(courseID, seq: CourseSeq(states.count), detail: "the course is at seq \(states.count - 1)")) {
                try await store.course(courseID, at: CourseSeq(states.count))
            }
            await #expect(throws: StoreError.unknownCourse(EntityID(high: 1, low: 1))) { try await store.course(EntityID(high: 1, low: 1), at: 0) }
        }
    }

    /// With the log pruned, the kept snapshot below its oldest entry still answers its own seq;
    /// older seqs are refused as out of history (not rebuilt wrong).
    @Test(arguments: [Kind.postgres, .sqlite])
    func aPrunedLogStillAnswersFromItsSnapshots(_ kind: Kind) async throws {
        try await Self.withStore(kind, logRetention: 8, snapshotInterval: 5) { subject in
            let store = subject.store
            let (courseID, chapters, _) = try await makeStoreCourse(store)
            let client = ClientID(.fresh())
            var states: [CourseSeq: CourseState] = [:]
            for batchSeq in 1...40 as ClosedRange<BatchSeq> {
                _ = try await store.commit([Batch(clientID: client, courseID: courseID, batchSeq: batchSeq, baseSeq: 0,
                                                  ops: [.moveChapter(.id(chapters[Int(batchSeq) % 2]), placement: .atStart)])], courseID: courseID)
                let state = try await store.snapshot(courseID: courseID)
                states[state.seq] = state
            }
            let current = try #require(states.keys.max())
            try await Task.sleep(for: .milliseconds(200))
            var answered: [CourseSeq] = []
            for seq in 1...current {
                do {
                    let state = try await store.course(courseID, at: seq)
                    if let expected = states[seq] { #expect(state == expected, "seq \(seq)") }
                    answered.append(seq)
                } catch StoreError.notInHistory {
                    continue
                }
            }
            #expect(!answered.contains(1) && answered.contains(current - 3), "\(answered)")
            #expect(answered.contains { $0 < current - 8 && $0 % 5 == 0 }, "a kept snapshot below the log answers its seq: \(answered)")
        }
    }

    @Test(arguments: Kind.allCases)
    func concurrentCommitsOnOneCourseAreSerialized(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let (courseID, chapters, media) = try await makeStoreCourse(subject.store)
            let start = try await subject.store.snapshot(courseID: courseID)
            // Four writers, each with its own store instance (as four nodes), linking into one chapter.
            let stores = try (0..<4).map { _ in try subject.another() }
            let seqs = try await withThrowingTaskGroup(of: [CourseSeq].self) { group in
                for (writer, store) in stores.enumerated() {
                    group.addTask {
                        let client = ClientID(.fresh())
                        var seqs: [CourseSeq] = []
                        for round in 0..<10 {
                            let batch = Batch(clientID: client, courseID: courseID, batchSeq: BatchSeq(round + 1), baseSeq: 0, ops: [
                                round % 2 == 0
                                    ? .linkMedia(chapter: .id(chapters[0]), items: [LinkItem(temp: TempID(UInt64(round + 1))!, media: .id(media[writer]))], placement: .atStart)
                                    : .unlinkVideo(.temp(TempID(UInt64(round))!)),
                            ])
                            guard case .committed(let commit) = try await store.commit([batch], courseID: courseID).first else {
                                throw ReplicaBuilder.Broken(description: "writer \(writer) round \(round) was not committed")
                            }
                            seqs.append(commit.seq)
                        }
                        return seqs
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(seqs.sorted() == Array(2...41))
            let final = try await subject.store.snapshot(courseID: courseID)
            #expect(final.seq == 41 && final.videos.isEmpty)
            guard case .diffs(let diffs) = try await subject.store.catchUp(courseID: courseID, after: start.seq, limit: 100) else {
                Issue.record("expected diffs")
                return
            }
            var rebuilt = start
            for diff in diffs { rebuilt.apply(diff) }
            #expect(rebuilt == final)
        }
    }

    @Test(arguments: Kind.allCases)
    func coursesAreCreatedOnce(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let course = Course(id: .fresh(), title: "Once")
            try await subject.store.createCourse(course)
            await #expect(throws: StoreError.courseExists(course.id)) { try await subject.store.createCourse(course) }
            #expect(try await subject.store.snapshot(courseID: course.id) == CourseState(course: course))
            let missing = EntityID.fresh()
            await #expect(throws: StoreError.unknownCourse(missing)) {
                try await subject.store.commit([Batch(clientID: ClientID(.fresh()), courseID: missing, batchSeq: 1, baseSeq: 0,
                                                      ops: [.createChapter(temp: TempID(1)!, title: "X", placement: .atEnd)])], courseID: missing)
            }
            // Seqs read together: those of the courses that exist.
            let other = try await makeStoreCourse(subject.store).course
            #expect(try await subject.store.courseSeqs([course.id, missing, other]) == [course.id: 0, other: 1])
            #expect(try await subject.store.courseSeqs([]) == [:])
        }
    }

    /// Every commit is kept with its author and what it did, in words; the history lists them
    /// newest first, pages back with `before`, and says when there is no such course.
    @Test(arguments: Kind.allCases)
    func theHistorySaysWhoDidWhatNewestFirst(_ kind: Kind) async throws {
        try await Self.withStore(kind) { subject in
            let store = subject.store
            let (courseID, chapters, media) = try await makeStoreCourse(store)
            let ada = ClientID(.fresh()), bo = ClientID(.fresh())
            var link = linkBatch(ada, courseID, 1, chapter: chapters[0], media: media[0], temp: 1)
            link.author = "ada"
            let rename = Batch(clientID: bo, courseID: courseID, batchSeq: 1, baseSeq: 0,
                               ops: [.renameChapter(.id(chapters[1]), title: "Finale")], author: "bo")
            _ = try await store.commit([link, rename], courseID: courseID)
            let history = try await store.history(courseID, before: nil, limit: 10)
            #expect(history.map(\.seq) == [3, 2, 1])
            #expect(history.map(\.author) == ["bo", "ada", ""])
            #expect(history[0].summary == "renamed chapter “Two” to “Finale”")
            #expect(history[1].summary == "linked 1 video into “One”")
            #expect(history[1].origin == BatchOrigin(clientID: ada, batchSeq: 1))
            #expect(abs(history[0].committedAt - Date().timeIntervalSince1970) < 3_600, "a time near now: \(history[0].committedAt)")
            #expect(try await store.history(courseID, before: 3, limit: 1).map(\.seq) == [2])
            await #expect(throws: StoreError.unknownCourse(EntityID(high: 7, low: 7))) {
                try await store.history(EntityID(high: 7, low: 7), before: nil, limit: 10)
            }
        }
    }
}

extension BatchOutcome {
    /// The code of a rejection; nil for a commit or a replay.
    var rejectionCode: ErrorCode? {
        if case .rejected(let rejection) = self { rejection.code } else { nil }
    }
}

/// The engine's common case costs one primitive call: a group of new batches whose temp IDs the
/// cache knows is one `write` (on PostgreSQL, one statement, one round trip).
@Suite struct CommitRoundTripTests {
    @Test func aCommitInTheCommonCaseIsOneWrite() async throws {
        let backend = MemoryBackend()
        let store = StoreEngine(backend: backend)
        let (courseID, chapters, media) = try await makeStoreCourse(store)
        let ada = ClientID(.fresh())
        _ = try await store.commit([linkBatch(ada, courseID, 1, chapter: chapters[0], media: media[0], temp: 1)], courseID: courseID)
        let before = backend.calls
        // A batch naming the video the previous one created (by its temp ID), another client's
        // batch, and a resend of the first: one write, nothing read.
        let outcomes = try await store.commit([
            Batch(clientID: ada, courseID: courseID, batchSeq: 2, baseSeq: 0, ops: [.renameVideo(.temp(TempID(1)!), title: "Renamed")]),
            linkBatch(ClientID(.fresh()), courseID, 1, chapter: chapters[1], media: media[1], temp: 1),
            linkBatch(ada, courseID, 1, chapter: chapters[0], media: media[0], temp: 1),
        ], courseID: courseID)
        guard case .committed = outcomes[0], case .committed = outcomes[1], case .replayed = outcomes[2] else {
            Issue.record("unexpected outcomes \(outcomes)")
            return
        }
        let after = backend.calls
        #expect(after.filter { before[$0.key] != $0.value }.keys.sorted() == ["write"], "\(before) → \(after)")
        #expect(after["write"] == before["write"]! + 1)
    }
}

/// Several processes (or instances) opening one new SQLite store file at once all get a working
/// store: whoever loses the race to create the schema finds it created. (It failed with "table
/// courses already exists" or "database is locked" before the open retried.)
@Suite struct SQLiteOpeningTests {
    @Test func instancesOpeningANewFileAtOnceAllSucceed() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("coursesync-open-\(UInt64.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        for round in 0..<40 {
            let path = directory.appendingPathComponent("store-\(round).sqlite").path
            let stores = try await withThrowingTaskGroup(of: SQLiteStore.self) { group in
                for _ in 0..<3 { group.addTask { try SQLiteStore(path: path) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let course = Course(id: .fresh(), title: "Round \(round)")
            try await stores[0].createCourse(course)
            #expect(try await stores[2].courseSeq(course.id) == 0)
        }
    }
}
