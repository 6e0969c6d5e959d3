import Foundation
import NIOCore
import NIOHTTP1
import SyncServer
import SyncModel
import SyncWire

/// The live course editor's static files (the package's `Web` resources), read once when `serve
/// --web` starts and answered from memory: `/` is `index.html`, every other file by its name. Only
/// the files that exist are served (no path is ever joined to a request's).
struct WebPage: Sendable {
    /// By path, each with the page's ``securityHeaders``: what the HTTP listener serves.
    let files: [String: HTTPFile]

    static let contentTypes = [
        "html": "text/html; charset=utf-8",
        "js": "text/javascript; charset=utf-8",
        "css": "text/css; charset=utf-8",
        "md": "text/markdown; charset=utf-8",
    ]

    /// The page's files from the bundled resources.
    static func load() throws -> WebPage {
        guard let folder = Bundle.module.url(forResource: "Web", withExtension: nil) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "the web page's files are missing beside the binary (the coursesync_coursesync.resources bundle)"])
        }
        return try load(from: folder)
    }

    static func load(from folder: URL) throws -> WebPage {
        var files: [String: HTTPFile] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) {
            guard let type = contentTypes[(name as NSString).pathExtension] else { continue }
            let data = try Data(contentsOf: folder.appendingPathComponent(name))
            files["/" + name] = HTTPFile(body: ByteBuffer(bytes: data), contentType: type, headers: securityHeaders)
        }
        files["/"] = files["/index.html"]
        files["/limits.js"] = HTTPFile(body: ByteBuffer(string: limitsModule()), contentType: contentTypes["js"]!, headers: securityHeaders)
        return WebPage(files: files)
    }

    /// `limits.js`, made from the server's own definitions so that the page never copies them:
    /// the error codes after which reconnecting cannot help, and the limits the page words its
    /// refusals with. Codes are named as the JSON mapping names them.
    static func limitsModule() -> String {
        let permanent = ErrorCode.allCases.filter(\.isPermanentRefusal).map(jsonName).sorted()
        return """
            // Made by the server from its definitions when it starts (not a file in the sources).
            export const PERMANENT_REFUSALS = new Set([\(permanent.map { "\"\($0)\"" }.joined(separator: ", "))]);
            export const MAX_VIDEOS_PER_CHAPTER = \(Limits.maxVideosPerChapter);
            export const MAX_VIDEOS_PER_COURSE = \(Limits.maxVideosPerCourse);

            """
    }

    /// An error code as the JSON mapping writes it (`UNKNOWN_COURSE`): read from an encoded `Error`.
    static func jsonName(_ code: ErrorCode) -> String {
        let json = WireMessage.error(ConnectionError(code, "")).json()
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: [String: Any]],
              let name = object["error"]?["code"] as? String else { return "\(code)" }
        return name
    }

    /// Headers for the page: nothing but this origin may run scripts or be connected to, no
    /// `<base>` may redirect its relative URLs and no form may post anywhere, and the page may not
    /// be framed (clickjacking; `X-Frame-Options` for browsers without `frame-ancestors`).
    static let securityHeaders = [
        ("Content-Security-Policy",
         "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-cache"),
    ]
}
