import Foundation
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Just enough of the W3C WebDriver protocol (plain HTTP + JSON) to drive headless Chromium
/// through `chromedriver`: sessions, navigation, scripts, clicks and screenshots.
final class WebDriver: @unchecked Sendable {
    let process: Subprocess
    let port: Int

    struct Failure: Error, CustomStringConvertible { var description: String }

    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Starts chromedriver on a free port and waits until it answers.
    init() async throws {
        guard let driver = Self.chromedriver, Self.chromium != nil else {
            throw Failure(description: "the browser test needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; .ci/run installs them)")
        }
        port = PostgresCluster.freePort()
        // Niced (the browsers inherit it): they share the 2 cores with the rest of the suite, whose
        // timing-sensitive tests must not starve while a page renders.
        process = try Subprocess(["-n", "10", driver, "--port=\(port)"], executable: "/usr/bin/nice")
        var lastError: (any Error)?
        do {
            try await eventually("chromedriver to answer") {
                do { return try await self.call("GET", "/status") != nil } catch { lastError = error; return false }
            }
        } catch {
            throw Failure(description: "chromedriver did not answer (\(String(describing: lastError))): \(process.output)")
        }
    }

    /// Runs `body` with `count` browsers, and closes them (and the driver) however it ends.
    static func withSessions<T>(_ count: Int, _ body: ([Session]) async throws -> T) async throws -> T {
        let driver = try await WebDriver()
        var sessions: [Session] = []
        do {
            for _ in 0..<count { sessions.append(try await driver.session()) }
            let result = try await body(sessions)
            for session in sessions { await session.close() }
            await driver.stop()
            return result
        } catch {
            for session in sessions { await session.close() }
            await driver.stop()
            throw error
        }
    }

    func stop() async {
        process.signal(SIGTERM)
        _ = try? await process.wait(timeout: .seconds(10))
    }

    /// A new browser (its own profile, so its own sessionStorage: a separate instructor).
    func session(width: Int = 1280, height: Int = 1300) async throws -> Session {
        let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": [
                "binary": Self.chromium!,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=\(width),\(height)"],
            ],
        ] as [String: Any]]]
        let value = try await call("POST", "/session", capabilities)
        guard let id = (value as? [String: Any])?["sessionId"] as? String else { throw Failure(description: "no session: \(String(describing: value))") }
        return Session(driver: self, id: id)
    }

    /// One WebDriver command: its `value`, or the error it names.
    @discardableResult
    func call(_ method: String, _ path: String, _ body: Any? = nil) async throws -> Any? {
        let payload = try body.map { try JSONSerialization.data(withJSONObject: $0) } ?? Data()
        let data = try await Self.exchange(port: port, method: method, path: path, body: payload)
        let answer = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        let value = answer?["value"]
        if let error = (value as? [String: Any])?["error"] as? String {
            throw Failure(description: "\(method) \(path): \(error): \((value as? [String: Any])?["message"] ?? "")")
        }
        return value
    }

    /// One HTTP/1.1 request and its body, on its own blocking socket off the cooperative pool.
    /// (Foundation's URLSession on Linux fails on chromedriver's headers, which have no space
    /// after the colon: "Failed writing header".)
    static func exchange(port: Int, method: String, path: String, body: Data) async throws -> Data {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try blockingExchange(port: port, method: method, path: path, body: body) })
            }
        }
    }

    private static func blockingExchange(port: Int, method: String, path: String, body: Data) throws -> Data {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure(description: "connect to chromedriver: \(errno)") }
        var request = Data("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n".utf8)
        request += Data("Content-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
        try request.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = send(fd, raw.baseAddress! + sent, raw.count - sent, 0)
                guard n > 0 else { throw Failure(description: "send: \(errno)") }
                sent += n
            }
        }
        // Read the head, then Content-Length bytes (chromedriver may keep the connection open).
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var expected: Int?
        while expected.map({ response.count < $0 }) ?? true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            response.append(contentsOf: buffer[0..<n])
            if expected == nil, let split = response.range(of: Data("\r\n\r\n".utf8)) {
                let head = String(decoding: response[..<split.lowerBound], as: UTF8.self).lowercased()
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) }
                expected = split.upperBound - response.startIndex + (length ?? 0)
            }
        }
        guard let split = response.range(of: Data("\r\n\r\n".utf8)) else { throw Failure(description: "no HTTP answer from chromedriver") }
        return response[split.upperBound...]
    }

    struct Session: Sendable {
        let driver: WebDriver
        let id: String

        func open(_ url: String) async throws {
            try await driver.call("POST", "/session/\(id)/url", ["url": url])
        }

        /// Runs `script` (a function body) in the page and returns what it returns, as JSON text
        /// decoded into `T` (scripts return `JSON.stringify(...)`).
        func run<T: Decodable>(_ script: String, as type: T.Type = T.self) async throws -> T {
            let value = try await driver.call("POST", "/session/\(id)/execute/sync", ["script": script, "args": [Any]()])
            guard let text = value as? String else { throw Failure(description: "the script returned \(String(describing: value)), not JSON text") }
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        }

        /// Runs `script` for its effect.
        func execute(_ script: String) async throws {
            try await driver.call("POST", "/session/\(id)/execute/sync", ["script": script, "args": [Any]()])
        }

        /// Clicks the first element matching a CSS selector, as a user would (real input events).
        func click(_ selector: String) async throws {
            let found = try await driver.call("POST", "/session/\(id)/element", ["using": "css selector", "value": selector])
            guard let element = (found as? [String: Any])?.values.first as? String else { throw Failure(description: "no element \(selector)") }
            try await driver.call("POST", "/session/\(id)/element/\(element)/click", [String: Any]())
        }

        /// Presses `key` with the modifiers held, as a user would (W3C actions: real key events).
        /// Modifiers are WebDriver's key codes (`Key.control`, `Key.shift`).
        func press(_ key: String, holding modifiers: [String] = []) async throws {
            var actions: [[String: Any]] = modifiers.map { ["type": "keyDown", "value": $0] }
            actions += [["type": "keyDown", "value": key], ["type": "keyUp", "value": key]]
            actions += modifiers.reversed().map { ["type": "keyUp", "value": $0] }
            try await driver.call("POST", "/session/\(id)/actions", ["actions": [["type": "key", "id": "keyboard", "actions": actions]]])
            try await driver.call("DELETE", "/session/\(id)/actions")
        }

        /// Drags with the mouse, as a user would (W3C pointer actions: real pointer events): presses
        /// on the first element matching `source`, moves in steps to `yOffset` pixels from the
        /// centre of the first matching `target`, and releases there.
        func drag(_ source: String, to target: String, yOffset: Int = 0) async throws {
            func element(_ selector: String) async throws -> [String: String] {
                let found = try await driver.call("POST", "/session/\(id)/element", ["using": "css selector", "value": selector])
                guard let object = found as? [String: Any], let key = object.keys.first, let value = object[key] as? String else {
                    throw Failure(description: "no element \(selector)")
                }
                return [key: value]
            }
            let (from, to) = (try await element(source), try await element(target))
            let actions: [[String: Any]] = [
                ["type": "pointerMove", "origin": from, "x": 0, "y": 0, "duration": 0],
                ["type": "pointerDown", "button": 0],
                ["type": "pointerMove", "origin": from, "x": 0, "y": 12, "duration": 50],
                ["type": "pointerMove", "origin": to, "x": 0, "y": yOffset, "duration": 100],
                ["type": "pause", "duration": 50],
                ["type": "pointerUp", "button": 0],
            ]
            try await driver.call("POST", "/session/\(id)/actions",
                                  ["actions": [["type": "pointer", "id": "mouse", "parameters": ["pointerType": "mouse"], "actions": actions]]])
            try await driver.call("DELETE", "/session/\(id)/actions")
        }

        /// WebDriver's codes for modifier keys.
        enum Key {
            static let control = "\u{E009}"
            static let shift = "\u{E008}"
            static let alt = "\u{E00A}"
            static let arrowUp = "\u{E013}"
            static let arrowDown = "\u{E015}"
        }

        /// The session's windows (tabs), by WebDriver handle.
        func windows() async throws -> [String] {
            guard let handles = try await driver.call("GET", "/session/\(id)/window/handles") as? [String] else {
                throw Failure(description: "no window handles")
            }
            return handles
        }

        /// Makes `handle` the window the session's commands go to.
        func switchTo(window handle: String) async throws {
            try await driver.call("POST", "/session/\(id)/window", ["handle": handle])
        }

        /// Runs a Chrome DevTools Protocol command in the current window (chromedriver's extension).
        func devTools(_ command: String, _ parameters: [String: Any]) async throws {
            try await driver.call("POST", "/session/\(id)/goog/cdp/execute", ["cmd": command, "params": parameters])
        }

        /// A PNG of the viewport.
        func screenshot() async throws -> Data {
            let value = try await driver.call("GET", "/session/\(id)/screenshot")
            guard let text = value as? String, let png = Data(base64Encoded: text) else { throw Failure(description: "no screenshot") }
            return png
        }

        func close() async {
            _ = try? await driver.call("DELETE", "/session/\(id)")
        }
    }
}
