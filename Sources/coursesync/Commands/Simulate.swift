import ArgumentParser
import Foundation
import SyncSimulation

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the deterministic simulation over many seeds; print failing seeds with a trace.",
        discussion: """
        Each seed runs several server nodes over one in-memory database (sessions with their heartbeats, \
        outboxes, course hubs, store engines with their own caches, commit notifications between nodes that may be delayed, reordered, duplicated or \
        lost), client engines with in-memory replicas and their own timers, and a simulated network, \
        under a seeded scheduler and a simulated clock. It injects faults, checks the protocol's \
        ordering rules on every connection as it goes (each commit once, in order, no gap; an Ack before \
        its author's Diff; no Ack unless the database holds the commit; no node's cache ahead of the \
        database or differing from it) and that no connection of a client that reads is closed for idleness or \
        slowness, then stops the faults and checks liveness (every client live at the last seq within \
        a bounded simulated time, with no further commit), that every replica equals the store row for \
        row, nothing is pending, every batch ended exactly once, no batch was applied twice and the \
        change log rebuilds the store. A failing seed replays exactly: --seed S --trace prints every step.
        """
    )

    @Option(help: ArgumentHelp("Seeds to run, as a range.", valueName: "first...last")) var seeds = SeedRange(1...100)
    @Option(help: "Run just this seed.") var seed: UInt64?
    @Flag(help: "Print every step of the run (with --seed).") var trace = false
    @Option(help: "Editing clients per run.") var clients = 4
    @Option(help: "Watch-only clients per run (they never push).") var watchers = 1
    @Option(help: "Server nodes over the one store.") var nodes = 2
    @Option(help: "Edits per client.") var edits = 40
    @Option(help: ArgumentHelp("Faults to inject: all, none, or a comma list of drops, client-restarts, server-restarts, slow-consumers, notifications, listener-drops, node-stalls (all: every one but node-stalls, which came later; all,node-stalls for every one).",
                               valueName: "list")) var faults = "all"

    func validate() throws {
        guard (1...32).contains(clients) else { throw ValidationError("--clients must be between 1 and 32") }
        guard (0...16).contains(watchers) else { throw ValidationError("--watchers must be between 0 and 16") }
        guard (1...8).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 8") }
        guard (1...10_000).contains(edits) else { throw ValidationError("--edits must be between 1 and 10000") }
        _ = try parsedFaults()
        if trace && seed == nil { throw ValidationError("--trace needs --seed") }
    }

    func parsedFaults() throws -> Faults {
        switch faults {
        case "all": return .all
        case "none": return []
        default:
            var set: Faults = []
            for name in faults.split(separator: ",") {
                if name == "all" {
                    set.formUnion(.all)
                    continue
                }
                guard let fault = Faults.names.first(where: { $0.0 == name })?.1 else {
                    throw ValidationError("unknown fault \(name); known: all, none, \(Faults.names.map(\.0).joined(separator: ", "))")
                }
                set.insert(fault)
            }
            return set
        }
    }

    func run() async throws {
        var options = SimulationOptions()
        options.clients = clients
        options.editsPerClient = edits
        options.watchers = watchers
        options.nodes = nodes
        options.faults = try parsedFaults()
        let range = seed.map { $0...$0 } ?? seeds.range
        let start = ContinuousClock.now
        var failed: [SimulationResult] = []
        var totals = (steps: 0, edits: 0, undos: 0, presence: 0, shared: 0, commits: 0, rejections: 0, faults: 0, pings: 0, lost: 0)
        var simulated = Duration.zero
        var settleTimes: [Duration] = []
        var lastProgress = ContinuousClock.now
        var done = 0
        for seed in range {
            // A progress line every few seconds on long runs.
            if ContinuousClock.now - lastProgress >= .seconds(3) {
                lastProgress = .now
                print("… \(done)/\(range.count) seeds, \(failed.count) failed, \(totals.commits) commits so far")
            }
            done += 1
            let result = try Simulation(seed: seed, options: options, tracing: trace).run()
            totals.steps += result.steps
            totals.edits += result.edits
            totals.undos += result.undos
            totals.presence += result.presenceUpdates
            totals.shared += result.sharedCatchUps
            totals.commits += result.commits
            totals.rejections += result.rejections
            totals.faults += result.faults
            totals.pings += result.pings
            totals.lost += result.notificationsLost
            simulated += result.simulated
            if result.passed { settleTimes.append(result.settleTime) }
            if trace { print(result.trace.joined(separator: "\n")) }
            if !result.passed {
                failed.append(result)
                print("seed \(seed) FAILED: \(result.violations.prefix(5).joined(separator: "; "))")
                if !trace { print(result.trace.suffix(20).map { "    \($0)" }.joined(separator: "\n")) }
            }
        }
        let elapsed = ContinuousClock.now - start
        settleTimes.sort()
        func seconds(_ duration: Duration) -> String { String(format: "%.1f s", Double(duration.wholeMilliseconds) / 1000) }
        let settle = settleTimes.isEmpty ? "" : ", settle after the last commit or fault: median \(seconds(settleTimes[settleTimes.count / 2])), max \(seconds(settleTimes.last!))"
        print("\(range.count) seeds (\(range.lowerBound)...\(range.upperBound)), \(nodes) nodes, \(clients) clients × \(edits) edits + \(watchers) watchers, faults \(options.faults): " +
              "\(range.count - failed.count) passed, \(failed.count) failed in \(elapsed.formatted(.units(allowed: [.seconds], fractionalPart: .show(length: 1)))) — " +
              "\(totals.edits) edits, \(totals.undos) undos and redos, \(totals.presence) presence updates, \(totals.shared) shared catch-up reads, \(totals.commits) commits, \(totals.rejections) rollbacks, \(totals.faults) faults, " +
              "\(totals.lost) notifications lost, \(totals.pings) client pings, \(seconds(simulated)) simulated\(settle)")
        if !failed.isEmpty {
            print("replay one with: coursesync simulate --seed \(failed[0].seed) --trace")
            throw ExitCode.failure
        }
    }
}

/// `first...last` (or a single number).
struct SeedRange: ExpressibleByArgument {
    var range: ClosedRange<UInt64>

    init(_ range: ClosedRange<UInt64>) { self.range = range }

    init?(argument: String) {
        let parts = argument.components(separatedBy: "...")
        if parts.count == 1, let single = UInt64(parts[0]) {
            range = single...single
        } else if parts.count == 2, let low = UInt64(parts[0]), let high = UInt64(parts[1]), low <= high {
            range = low...high
        } else {
            return nil
        }
    }

    var defaultValueDescription: String { "\(range.lowerBound)...\(range.upperBound)" }
}
