import Foundation
import SQLiteStore
@testable import SyncClient
import SyncModel
import Testing
@testable import TestSupport

/// Stores and replicas hold courses and people's edits: their files are readable by their owner
/// only, whatever the umask (the store used to be 0644).
@Suite struct PrivateFilesTests {
    @Test func theStoreAndAReplicaAreOwnerOnly() async throws {
        try await withReplicaFolder { folder in
            let storePath = folder.appendingPathComponent("store.sqlite").path
            let store = try SQLiteStore(path: storePath)
            try await store.createCourse(Course(id: .fresh(), title: "Private"))
            for suffix in ["", "-wal", "-shm"] {
                #expect(try fileMode(storePath + suffix) == 0o600, "store.sqlite\(suffix)")
            }
            let replicaPath = folder.appendingPathComponent("mine.replica").path
            _ = try Replica(path: replicaPath)
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: replicaPath + suffix) {
                #expect(try fileMode(replicaPath + suffix) == 0o600, "replica\(suffix)")
            }
            // Reopening an existing store changes nothing and loses nothing.
            #expect(try await SQLiteStore(path: storePath).courses().count == 1)
        }
    }
}
