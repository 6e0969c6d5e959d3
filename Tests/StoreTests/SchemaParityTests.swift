import Foundation
import GRDB
import PostgresNIO
@testable import SQLiteStore
import SyncModel
import SyncStorage
import Testing
@testable import TestSupport

/// The embedded store's SQLite schema is written beside `migrations/` (SQLite's dialect has no
/// `uuid`, no deferrable constraints, no `ALTER TABLE … ADD CONSTRAINT`); this holds the two to
/// each other, as the databases themselves describe their tables after migrating: every column
/// (type, nullability, whether it has a default), primary key, unique constraint, foreign key
/// (with its `ON DELETE`), check and index.
@Suite struct SchemaParityTests {
    /// One table as both databases can describe it.
    struct Table: Hashable, CustomStringConvertible {
        var columns: Set<String> = []  // "name type NOT NULL DEFAULT"
        var primaryKey: [String] = []
        var unique: Set<[String]> = []
        var foreignKeys: Set<String> = []  // "(a, b) -> table(c) ON DELETE X"
        var checks: Set<String> = []
        var indexes: Set<[String]> = []

        var description: String {
            """
            columns \(columns.sorted()); primary key \(primaryKey); unique \(unique.map { $0.joined(separator: ",") }.sorted()); \
            foreign keys \(foreignKeys.sorted()); checks \(checks.sorted()); indexes \(indexes.map { $0.joined(separator: ",") }.sorted())
            """
        }
    }

    /// A check's expression without parentheses, spaces or case: `CHECK ((seq >= 0))` and `CHECK (seq >= 0)` agree.
    static func normalized(_ expression: some StringProtocol) -> String {
        String(expression.lowercased().filter { !"() \"".contains($0) })
    }

    /// `a, "b"` → ["a", "b"] (PostgreSQL quotes a column named like a keyword).
    static func columnList(_ text: some StringProtocol) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: ["\""]) }
    }

    /// The text between the first `(` after `prefix` and its matching `)`.
    static func parenthesized(after prefix: String, in text: String) -> (inside: String, rest: Substring)? {
        guard let start = text.range(of: prefix) else { return nil }
        var depth = 0
        var inside = ""
        var index = text[start.upperBound...].firstIndex(of: "(")!
        while index < text.endIndex {
            let character = text[index]
            if character == "(" { depth += 1 }
            if character == ")" { depth -= 1 }
            if depth == 0 { return (String(inside.dropFirst()), text[text.index(after: index)...]) }
            inside.append(character)
            index = text.index(after: index)
        }
        return nil
    }

    static let postgresTypes = ["uuid": "BLOB", "bytea": "BLOB", "text": "TEXT", "bigint": "INTEGER", "integer": "INTEGER",
                                "timestamp with time zone": "TEXT"]

    static func postgresTables(_ client: PostgresClient) async throws -> [String: Table] {
        var tables: [String: Table] = [:]
        let columns = try await client.query("""
            SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default IS NOT NULL
            FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
            """)
        for try await (table, column, type, nullable, hasDefault) in columns.decode((String, String, String, String, Bool).self) {
            let mapped = postgresTypes[type] ?? "unknown \(type)"
            tables[table, default: Table()].columns.insert("\(column) \(mapped)\(nullable == "NO" ? " NOT NULL" : "")\(hasDefault ? " DEFAULT" : "")")
        }
        let constraints = try await client.query("""
            SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'schema_migrations'
            """)
        for try await (table, definition) in constraints.decode((String, String).self) {
            if definition.hasPrefix("PRIMARY KEY") {
                tables[table]!.primaryKey = columnList(parenthesized(after: "PRIMARY KEY", in: definition)!.inside)
            } else if definition.hasPrefix("UNIQUE") {
                tables[table]!.unique.insert(columnList(parenthesized(after: "UNIQUE", in: definition)!.inside))
            } else if definition.hasPrefix("FOREIGN KEY") {
                let (from, rest) = parenthesized(after: "FOREIGN KEY", in: definition)!
                // "REFERENCES table(column, …)"
                let parent = rest.drop { $0 != " " }.dropFirst().drop { $0 != " " }.dropFirst().prefix { $0 != "(" }
                let to = columnList(parenthesized(after: "REFERENCES \(parent)", in: String(rest))!.inside)
                let onDelete = rest.range(of: "ON DELETE ").map { rest[$0.upperBound...].split(separator: " ").first.map(String.init)! } ?? "NO"
                tables[table]!.foreignKeys.insert("(\(columnList(from).joined(separator: ", "))) -> \(parent)(\(to.joined(separator: ", "))) ON DELETE \(onDelete)")
            } else if definition.hasPrefix("CHECK") {
                tables[table]!.checks.insert(normalized(definition.dropFirst("CHECK".count)))
            } else {
                Issue.record("a constraint the test does not know: \(definition)")
            }
        }
        let indexes = try await client.query("""
            SELECT tablename::text, indexdef FROM pg_indexes
            WHERE schemaname = 'public' AND tablename <> 'schema_migrations' AND indexdef NOT LIKE 'CREATE UNIQUE %'
            """)
        for try await (table, definition) in indexes.decode((String, String).self) {
            tables[table]!.indexes.insert(columnList(parenthesized(after: "USING btree", in: definition)!.inside))
        }
        return tables
    }

    static func sqliteTables(_ path: String) throws -> [String: Table] {
        let queue = try DatabaseQueue(path: path)
        return try queue.read { db in
            var tables: [String: Table] = [:]
            let names = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'grdb_migrations'")
            for name in names {
                var table = Table()
                var primaryKey: [(Int, String)] = []
                for row in try Row.fetchAll(db, sql: "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?)", arguments: [name]) {
                    let column: String = row["name"]
                    let notNull: Bool = row["notnull"]
                    let hasDefault = (row["dflt_value"] as String?) != nil
                    table.columns.insert("\(column) \(row["type"] as String)\(notNull ? " NOT NULL" : "")\(hasDefault ? " DEFAULT" : "")")
                    let pk: Int = row["pk"]
                    if pk > 0 { primaryKey.append((pk, column)) }
                }
                table.primaryKey = primaryKey.sorted { $0.0 < $1.0 }.map(\.1)
                for row in try Row.fetchAll(db, sql: "SELECT name, \"unique\", origin FROM pragma_index_list(?)", arguments: [name]) {
                    let origin: String = row["origin"]
                    guard origin != "pk" else { continue }
                    let columns = try String.fetchAll(db, sql: "SELECT name FROM pragma_index_info(?) ORDER BY seqno", arguments: [row["name"] as String])
                    if row["unique"] as Bool { table.unique.insert(columns) } else { table.indexes.insert(columns) }
                }
                var foreignKeys: [Int: (parent: String, from: [String], to: [String], onDelete: String)] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT id, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq", arguments: [name]) {
                    let id: Int = row["id"]
                    foreignKeys[id, default: (row["table"], [], [], row["on_delete"])].from.append(row["from"])
                    foreignKeys[id]!.to.append(row["to"])
                }
                for key in foreignKeys.values {
                    table.foreignKeys.insert("(\(key.from.joined(separator: ", "))) -> \(key.parent)(\(key.to.joined(separator: ", "))) ON DELETE \(key.onDelete)")
                }
                var sql = try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = ?", arguments: [name])!
                while let (expression, rest) = parenthesized(after: "CHECK", in: sql) {
                    table.checks.insert(normalized(expression))
                    sql = String(rest)
                }
                tables[name] = table
            }
            return tables
        }
    }

    @Test func theSQLiteSchemaIsThePostgreSQLSchema() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("parity-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("store.sqlite").path
        _ = try SQLiteStore(path: path)
        let sqlite = try Self.sqliteTables(path)
        try await withDatabase { database in
            let postgres = try await Self.postgresTables(database.client)
            #expect(postgres.count == 8, "\(postgres.keys.sorted())")
            #expect(Set(sqlite.keys) == Set(postgres.keys))
            // A copy (dump and load) carries every column but those the database fills in itself.
            #expect(Set(StoreTable.all.map(\.name)) == Set(postgres.keys))
            for table in StoreTable.all {
                let columns = postgres[table.name]?.columns ?? []
                let copied = Set(table.columns.map(\.name))
                #expect(copied.isSubset(of: columns.map { String($0.prefix { $0 != " " }) }), "\(table.name): \(copied) not all in \(columns)")
                let left = columns.filter { !copied.contains(String($0.prefix { $0 != " " })) }
                #expect(left.allSatisfy { $0.hasSuffix(" DEFAULT") }, "\(table.name): a copy leaves out \(left), which have no default")
            }
            for (name, table) in postgres.sorted(by: { $0.key < $1.key }) {
                let other = sqlite[name] ?? Table()
                #expect(other.columns == table.columns, "\(name): columns")
                #expect(other.primaryKey == table.primaryKey, "\(name): primary key")
                #expect(other.unique == table.unique, "\(name): unique")
                #expect(other.foreignKeys == table.foreignKeys, "\(name): foreign keys")
                #expect(other.checks == table.checks, "\(name): checks")
                #expect(other.indexes == table.indexes, "\(name): indexes")
                #expect(other == table, "\(name)\n  PostgreSQL: \(table)\n  SQLite:     \(other)")
            }
        }
    }

    /// A file made before the parity migration keeps every row through it (two tables are rebuilt).
    @Test func aStoreFileOfTheFirstSchemaKeepsItsRowsThroughTheRebuild() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("parity-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("store.sqlite").path
        let course = EntityID.fresh(), chapter = EntityID.fresh(), media = EntityID.fresh(), video = EntityID.fresh()
        try { () throws in
            let queue = try DatabaseQueue(path: path)
            try SQLiteBackend.migrator.migrate(queue, upTo: "0001_schema")
            try queue.write { db in
                try db.execute(sql: "INSERT INTO courses (id, title, seq) VALUES (?, 'Old', 7)", arguments: [course.data])
                try db.execute(sql: "INSERT INTO chapters (id, course_id, title, position, version) VALUES (?, ?, 'One', 0, 3)", arguments: [chapter.data, course.data])
                try db.execute(sql: "INSERT INTO media_files (id, course_id, name, cdn_url, duration_ms, byte_size) VALUES (?, ?, 'a.mp4', 'https://cdn/a', 1000, 10)",
                               arguments: [media.data, course.data])
                try db.execute(sql: "INSERT INTO videos (id, chapter_id, media_file_id, title, position) VALUES (?, ?, ?, 'A', 0)",
                               arguments: [video.data, chapter.data, media.data])
            }
        }()
        let store = try SQLiteStore(path: path)
        let state = try #require(try await store.backend.loadCourse(course))
        #expect(state.course.title == "Old" && state.course.seq == 7)
        #expect(state.orderedChapters.map(\.id) == [chapter] && state.orderedChapters.first?.version == 3)
        #expect(state.videos(in: chapter).map(\.id) == [video])
        let violations = try await DatabaseQueue(path: path).read { db in try Row.fetchAll(db, sql: "PRAGMA foreign_key_check") }
        #expect(violations.isEmpty)
    }
}
