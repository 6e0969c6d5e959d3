import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SyncModel
import SyncWire

/// The course's history, over the server's HTTP API (protocol §13, ``ClientConfiguration/httpURL``):
/// who did what, the course as it was at a commit, and bringing it back.
extension SyncClient {
    /// One commit of the course's history.
    public struct HistoryEntry: Hashable, Sendable {
        public var seq: CourseSeq
        public var committedAt: Date
        /// The token's subject of whoever made it (empty for commits older than the server's history).
        public var author: String
        public var clientID: ClientID
        public var batchSeq: BatchSeq
        /// What it did, in words ("linked 3 videos into “Lectures”").
        public var summary: String
    }

    /// Who committed what, newest first: at most `limit` (up to 1,000) commits before `before`
    /// (the newest if `nil`), as far back as the server's change log reaches.
    public func history(before: CourseSeq? = nil, limit: Int = 100) async throws -> [HistoryEntry] {
        var query = ["limit=\(limit)"]
        if let before { query.append("before=\(before)") }
        let data = try await get("/v1/courses/\(courseID)/history?\(query.joined(separator: "&"))")
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any], let entries = object["history"] as? [[String: String]] else {
            throw HistoryError.malformed("no history in the answer")
        }
        let formatter = ISO8601DateFormatter()
        return try entries.map { entry in
            guard let seq = entry["seq"].flatMap(CourseSeq.init), let at = entry["committedAt"].flatMap(formatter.date(from:)),
                  let client = entry["clientId"].flatMap(EntityID.init), let batchSeq = entry["batchSeq"].flatMap(BatchSeq.init) else {
                throw HistoryError.malformed("a history entry lacks a field: \(entry)")
            }
            return HistoryEntry(seq: seq, committedAt: at, author: entry["author"] ?? "", clientID: ClientID(client), batchSeq: batchSeq,
                                summary: entry["summary"] ?? "")
        }
    }

    /// The course as it was right after commit `seq` (0: before any), as far back as the server's
    /// change log reaches.
    public func course(at seq: CourseSeq) async throws -> CourseState {
        let data = try await get("/v1/courses/\(courseID)?at=\(seq)")
        guard case .snapshot(let part) = try WireMessage(payload: JSONMapping.payload(fromJSON: Array(data))) else {
            throw HistoryError.malformed("not a snapshot")
        }
        return CourseState(parts: [part])
    }

    /// Makes the course look as it did right after commit `seq`: one edit, computed against what
    /// the replica shows (its pending edits included) by the same model the server runs (rows
    /// that survived are moved and renamed back, rows deleted since are made again, rows made
    /// since are deleted), drawn at once, sent like any edit, and taken back by ``undo()``.
    /// `false` if the course already looks so.
    @discardableResult
    public func restore(to seq: CourseSeq) async throws -> Bool {
        let earlier = try await course(at: seq)
        return try performBatch { core, now throws(EditError) in try core.restore(to: earlier, now: now) }
    }

    private func get(_ path: String) async throws -> Data {
        guard let base = configuration.httpURL, let url = URL(string: path, relativeTo: base) else { throw HistoryError.noHTTPURL }
        var request = URLRequest(url: url)
        let token = try await configuration.tokenProvider?() ?? configuration.token
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else {
            let error = try? WireMessage(payload: JSONMapping.payload(fromJSON: Array(data)))
            if case .error(let refusal)? = error { throw HistoryError.refused(status: status, code: refusal.code, message: refusal.message) }
            throw HistoryError.refused(status: status, code: nil, message: String(decoding: data, as: UTF8.self))
        }
        return data
    }
}

/// Why a history call failed.
public enum HistoryError: Error, Hashable, Sendable, CustomStringConvertible {
    /// ``ClientConfiguration/httpURL`` is not set.
    case noHTTPURL
    /// The server said no: `410` with `LIMIT_EXCEEDED` for a seq past the course or older than its
    /// log reaches, `403`, `404`, …
    case refused(status: Int, code: ErrorCode?, message: String)
    case malformed(String)

    public var description: String {
        switch self {
        case .noHTTPURL: "the client's configuration names no HTTP URL for the server (ClientConfiguration.httpURL)"
        case .refused(let status, let code, let message): "the server answered \(status)\(code.map { " \($0)" } ?? ""): \(message)"
        case .malformed(let what): "the server's answer is not what the protocol says: \(what)"
        }
    }
}
