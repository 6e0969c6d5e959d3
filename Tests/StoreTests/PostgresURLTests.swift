import PostgresNIO
import PostgresStore
import Testing

/// The libpq URL forms `--postgres` takes, one host or several.
@Suite struct PostgresURLTests {
    @Test func oneHostKeepsItsPortUserPasswordAndDatabase() throws {
        let target = try PostgresURL.target("postgres://ada:s%40cret@db.example:6432/courses?sslmode=disable")
        #expect(target.hosts.count == 1)
        #expect(target.hosts[0].host == "db.example")
        #expect(target.hosts[0].port == 6432)
        #expect(target.hosts[0].username == "ada")
        #expect(target.hosts[0].password == "s@cret")
        #expect(target.hosts[0].database == "courses")
        #expect(target.targetSession == .any)
    }

    @Test func severalHostsAreKeptInOrderEachWithItsPort() throws {
        let target = try PostgresURL.target("postgresql://ada@h1:5433,h2,[::1]:5435/courses?target_session_attrs=read-write&connect_timeout=3")
        #expect(target.hosts.map(\.host) == ["h1", "h2", "::1"])
        #expect(target.hosts.map(\.port) == [5433, 5432, 5435])
        #expect(target.hosts.allSatisfy { $0.username == "ada" && $0.database == "courses" })
        #expect(target.hosts.allSatisfy { $0.options.connectTimeout == .seconds(3) })
        #expect(target.targetSession == .readWrite)
        #expect(target.description == "h1:5433,h2:5432,::1:5435/courses")
        #expect(try PostgresURL.target("postgres://u@a,b/d?target_session_attrs=primary").targetSession == .readWrite)
    }

    @Test func whatCannotBeUsedIsRefusedWithTheReason() {
        for (url, reason) in [
            ("postgres://u@h1:5432,/d", "names no host"),
            ("postgres://u@h1:99999/d", "bad port"),
            ("postgres://u@h1/", "names no database"),
            ("mysql://u@h1/d", "not a PostgreSQL URL"),
            ("postgres://u@h1,h2/d?target_session_attrs=standby", "unsupported target_session_attrs"),
            ("postgres://u@h1/d?connect_timeout=soon", "connect_timeout"),
        ] {
            #expect {
                _ = try PostgresURL.target(url)
            } throws: { error in
                (error as? PostgresURL.Invalid)?.description.contains(reason) == true
            }
        }
        // A command that takes one host says so.
        #expect { _ = try PostgresURL.configuration("postgres://u@h1,h2/d") } throws: { error in
            (error as? PostgresURL.Invalid)?.description.contains("one PostgreSQL host") == true
        }
    }
}
