import Foundation

/// A child process for tests: posix_spawn, output to a file, waitpid. (Foundation's Process can
/// miss a child's exit in a test process on Linux: its waitUntilExit hung on `runuser`.)
final class Subprocess: @unchecked Sendable {
    let pid: pid_t
    let logPath: String
    private var status: Int32?

    /// The built `coursesync` binary, beside the test bundle in the products folder (or
    /// $COURSESYNC_BIN: a release build, to take figures).
    static let coursesync: String = {
        if let binary = ProcessInfo.processInfo.environment["COURSESYNC_BIN"] { return binary }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("coursesync").path), url.path != "/" {
            url.deleteLastPathComponent()
        }
        return url.appendingPathComponent("coursesync").path
    }()

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(_ arguments: [String], executable: String = Subprocess.coursesync) throws {
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("coursesync-sub-\(getpid())-\(UInt32.random(in: 0 ... .max)).log").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The child gets no other descriptor of ours. Sockets the test process has open (NIO's are
        // not close-on-exec) would otherwise live on in a long-lived child such as chromedriver,
        // so a connection a test closes would never end at the server.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let fd = Int32(name), fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        }
        let argv = [executable] + arguments
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, nil, &cArguments, environ)
        guard result == 0 else { throw Failure(description: "cannot run \(executable): \(String(cString: strerror(result)))") }
        self.pid = pid
    }

    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits for the exit (polling, so a hang ends in a failure rather than a stuck test run).
    func wait(timeout: Duration = .seconds(120)) async throws -> Int32 {
        if let status { return status }
        let start = ContinuousClock.now
        while true {
            var raw: Int32 = 0
            let done = waitpid(pid, &raw, WNOHANG)
            if done == pid {
                let code = Self.exitCode(raw)
                status = code
                return code
            }
            if ContinuousClock.now - start > timeout {
                kill(pid, SIGKILL)
                throw Failure(description: "\(pid) did not exit within \(timeout); output:\n\(output)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Whether the process has exited (reaped without blocking; ``wait(timeout:)`` then returns its status).
    var hasExited: Bool {
        if status != nil { return true }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return false }
        status = Self.exitCode(raw)
        return true
    }

    /// The exit code of a wait status; 128 + the signal for a process a signal ended.
    private static func exitCode(_ raw: Int32) -> Int32 { raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f) }

    /// Waits for the exit, blocking the thread (for commands that end by themselves, like pg_ctl).
    func waitBlocking() -> Int32 {
        if let status { return status }
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) == -1, errno == EINTR {}
        let code = Self.exitCode(raw)
        status = code
        return code
    }

    /// Runs to completion and returns the exit status and output.
    static func run(_ arguments: [String], executable: String = Subprocess.coursesync) async throws -> (status: Int32, output: String) {
        let process = try Subprocess(arguments, executable: executable)
        let status = try await process.wait()
        defer { try? FileManager.default.removeItem(atPath: process.logPath) }
        return (status, process.output)
    }

    deinit {
        if status == nil { kill(pid, SIGKILL); var raw: Int32 = 0; waitpid(pid, &raw, 0) }
        try? FileManager.default.removeItem(atPath: logPath)
    }
}
