import Foundation
import PostgresNIO
import PostgresStore
import SyncModel
import SyncServer
import SyncStorage
import Testing
@testable import TestSupport

@Suite struct MigrationTests {
    static func tables(_ database: TestDatabase) async throws -> Set<String> {
        var names = Set<String>()
        for try await name in try await database.client.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").decode(String.self) {
            names.insert(name)
        }
        return names
    }

    @Test func migratingTwiceIsANoOp() async throws {
        try await withDatabase(migrated: false) { database in
            let first = try await Migrator().migrate(database.client, logger: TestDatabase.logger)
            #expect(first == Migration.all.map(\.name))
            let tables = try await Self.tables(database)
            #expect(tables.isSuperset(of: ["courses", "chapters", "media_files", "videos", "change_log", "client_batches", "client_temps", "schema_migrations"]))
            let second = try await Migrator().migrate(database.client, logger: TestDatabase.logger)
            #expect(second.isEmpty)
            #expect(try await Self.tables(database) == tables)
            #expect(try await Migrator().missing(database.client, logger: TestDatabase.logger).isEmpty)
        }
    }

    /// Rows stored under the first keys (videos without their course) come through 0004 whole:
    /// each video gets its chapter's course, and the store reads and writes the course after.
    @Test func aCourseStoredBeforeTheCourseKeysKeepsEveryRowThroughTheirMigration() async throws {
        try await withDatabase(migrated: false) { database in
            let before = Migration.all.filter { $0.version < 4 }
            _ = try await Migrator(migrations: before).migrate(database.client, logger: TestDatabase.logger)
            let course = EntityID.fresh(), other = EntityID.fresh(), chapter = EntityID.fresh(), media = EntityID.fresh(), video = EntityID.fresh()
            try await database.client.query("INSERT INTO courses (id, title, seq) VALUES (\(course.uuid), 'Old', 1), (\(other.uuid), 'Other', 0)")
            try await database.client.query("INSERT INTO chapters (id, course_id, title, position, version) VALUES (\(chapter.uuid), \(course.uuid), 'One', 0, 1)")
            try await database.client.query("""
                INSERT INTO media_files (id, course_id, name, cdn_url, duration_ms, byte_size)
                VALUES (\(media.uuid), \(course.uuid), 'a.mp4', 'https://cdn/a', 1000, 10)
                """)
            try await database.client.query("""
                INSERT INTO videos (id, chapter_id, media_file_id, title, position) VALUES (\(video.uuid), \(chapter.uuid), \(media.uuid), 'A', 0)
                """)
            #expect(try await Migrator().migrate(database.client, logger: TestDatabase.logger) == ["0004_course_keys.sql"])
            let state = try #require(try await database.store.backend.loadCourse(course))
            #expect(state.videos(in: chapter).map(\.id) == [video])
            #expect(state.videos[video]?.mediaFileID == media)
            // The keys now carry the course: a video cannot name another course's chapter.
            await #expect(throws: PSQLError.self) {
                try await database.client.query("""
                    INSERT INTO videos (course_id, id, chapter_id, media_file_id, title, position)
                    VALUES (\(other.uuid), \(EntityID.fresh().uuid), \(chapter.uuid), \(media.uuid), 'B', 1)
                    """)
            }
            let seeded = try await database.store.commit([Batch(clientID: ClientID(.fresh()), courseID: course, batchSeq: 1, baseSeq: 1,
                                                                ops: [.renameVideo(.id(video), title: "Renamed")])], courseID: course)
            guard case .committed = seeded.first else { Issue.record("the rename did not commit: \(seeded)"); return }
            #expect(try await database.store.snapshot(courseID: course).videos[video]?.title == "Renamed")
        }
    }

    @Test func aFailingMigrationLeavesTheDatabaseAsItWasAndNamesTheFile() async throws {
        try await withDatabase(migrated: true) { database in
            let before = try await Self.tables(database)
            let broken = Migration(version: 9_999, name: "9999_broken.sql", sql: """
                CREATE TABLE half_done (id integer);
                -- a comment; with a semicolon
                INSERT INTO half_done VALUES ('not a number');
                """)
            #expect(broken.statements.count == 2)
            do {
                try await Migrator(migrations: Migration.all + [broken]).migrate(database.client, logger: TestDatabase.logger)
                Issue.record("the broken migration was applied")
            } catch let error as MigrationError {
                #expect(error.migration == "9999_broken.sql")
                #expect(error.description.contains("statement 2"))
                #expect(error.description.contains("invalid input syntax"), "\(error)")
            }
            #expect(try await Self.tables(database) == before)
            #expect(try await Migrator(migrations: Migration.all + [broken]).missing(database.client, logger: TestDatabase.logger) == ["9999_broken.sql"])
        }
    }

    @Test func aStoreOnAnUnmigratedDatabaseSaysSo() async throws {
        try await withDatabase(migrated: false) { database in
            do {
                try await database.store.checkSchema()
                Issue.record("an empty database passed the schema check")
            } catch let error as StoreError {
                #expect(error == .notMigrated("missing " + Migration.all.map(\.name).joined(separator: ", ")))
                #expect(error.description.contains("coursesync migrate"))
            }
        }
    }

    @Test func theEmbeddedMigrationsMatchTheFiles() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations").standardized
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files == Migration.all.map(\.name))
        for migration in Migration.all {
            let text = try String(contentsOf: directory.appendingPathComponent(migration.name), encoding: .utf8)
            #expect(text == migration.sql + "\n" || text == migration.sql, "\(migration.name) differs from the embedded copy: run migrations/embed.sh")
        }
    }
}
