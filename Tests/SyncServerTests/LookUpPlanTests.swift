import Foundation
import PostgresNIO
@testable import PostgresStore
import SyncModel
import Testing

/// The group commit's lookup of stored acks and known temp IDs keeps its plan once PostgreSQL has
/// statistics (autovacuum's `ANALYZE`) from other courses and a new course grows past them.
@Suite struct LookUpPlanTests {
    /// Regression (the plan cliff): planned as a join, the lookup estimated the new course at one
    /// row and scanned every row of the course for every key (2.7 M comparisons, 215 ms per group
    /// for 12,816 rows × 210 temps). It must probe the primary key instead, whatever the estimate.
    @Test func theLookupProbesThePrimaryKeyAfterStatisticsFromOtherCourses() async throws {
        try await withDatabase { database in
            let old = EntityID.fresh(), new = EntityID.fresh()
            try await database.store.createCourse(Course(id: old, title: "Old"))
            try await database.store.createCourse(Course(id: new, title: "New"))
            func fill(_ course: EntityID, _ rows: Int) async throws {
                try await database.client.query("""
                    INSERT INTO client_temps (client_id, course_id, temp, entity_id)
                    SELECT gen_random_uuid(), \(course.uuid), g, gen_random_uuid() FROM generate_series(1, \(rows)) AS g
                    """)
                try await database.client.query("""
                    INSERT INTO client_batches (client_id, course_id, batch_seq, seq, ack)
                    SELECT gen_random_uuid(), \(course.uuid), g, g, '\\x00'::bytea FROM generate_series(1, \(rows)) AS g
                    """)
            }
            try await fill(old, 3_000)
            try await database.client.query("ANALYZE client_temps")
            try await database.client.query("ANALYZE client_batches")
            try await fill(new, 12_000)
            var tempClients: [UUID] = [], temps: [Int64] = []
            for try await (client, temp) in try await database.client.query(
                "SELECT client_id, temp FROM client_temps WHERE course_id = \(new.uuid) ORDER BY temp LIMIT 210").decode((UUID, Int64).self) {
                tempClients.append(client)
                temps.append(temp)
            }
            var batchClients: [UUID] = [], batchSeqs: [Int64] = []
            for try await (client, seq) in try await database.client.query(
                "SELECT client_id, batch_seq FROM client_batches WHERE course_id = \(new.uuid) ORDER BY batch_seq LIMIT 50").decode((UUID, Int64).self) {
                batchClients.append(client)
                batchSeqs.append(seq)
            }
            let query = PostgresStore.lookUpQuery(courseID: new, batchClients: batchClients, batchSeqs: batchSeqs,
                                                  tempClients: tempClients, temps: temps)
            var plan = ""
            for try await line in try await database.client.query(PostgresQuery(unsafeSQL: "EXPLAIN (FORMAT JSON) " + query.sql, binds: query.binds)).decode(String.self) {
                plan += line
            }
            #expect(!plan.contains("Seq Scan"), "\(plan)")
            #expect(plan.contains("client_temps_pkey") && plan.contains("client_batches_pkey"), "\(plan)")
            // And it finds what is there.
            var found = (acks: 0, temps: 0)
            for try await (kind, _, _, _, _) in try await database.client.query(query).decode((Int32, UUID, Int64, ByteBuffer?, UUID?).self) {
                if kind == 0 { found.acks += 1 } else { found.temps += 1 }
            }
            #expect(found.acks == 50 && found.temps == 210)
        }
    }
}
