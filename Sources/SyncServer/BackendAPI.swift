import Foundation
import NIOCore
import NIOHTTP1
import SyncModel
import SyncStorage
import SyncTransport
import SyncWire

/// Batches and outlines over plain HTTP requests (spec §13), for backends that do not keep a
/// connection (an upload pipeline registering a media file, an admin script): the same token
/// check, course hubs, exactly-once record and limits on a batch as a connection's `Push`, so
/// connected clients see the change as a `Diff`.
extension SyncServer {
    /// What the server answers a batch sent over HTTP: its `Ack`, or its `Reject`, or why it
    /// was not taken at all (an `Error`: a bad token, an unknown course, a server shutting down).
    public func submit(_ push: Push, clientID: ClientID, token: String) async -> Result<WireMessage, ConnectionError> {
        await submitting(push, clientID: clientID, token: token).result
    }

    /// ``submit(_:clientID:token:)``, and the token's user if it verified (for the access log).
    func submitting(_ push: Push, clientID: ClientID, token: String) async -> (result: Result<WireMessage, ConnectionError>, user: String?) {
        switch await authority.verify(token, now: Date()) {
        case .success(let principal): (await submit(push, clientID: clientID, as: principal), principal.user)
        case .failure(let error): (.failure(error), nil)
        }
    }

    private func submit(_ push: Push, clientID: ClientID, as principal: Principal) async -> Result<WireMessage, ConnectionError> {
        if let wait = admission.takeHTTPPush(by: principal.user) {
            return .failure(ConnectionError(.rateLimited, "\(AccessPolicy.overPushRate(configuration.limits.session)) from \(principal.user); send the batch again in \(wait) ms",
                                            retryAfterMs: wait))
        }
        if let rejection = AccessPolicy.editRejection(principal, courseID: push.courseID) {
            return .success(.reject(BatchRejection(courseID: push.courseID, batchSeq: push.batchSeq, rejection: rejection)))
        }
        // A connection of one batch: the hub answers into its outbox.
        let outbox = Outbox(capacity: 64)
        let handle = ConnectionHandle(clientID: clientID, outbox: outbox, maxInFlight: 1)
        _ = handle.inFlight.tryAcquire()
        let hub = hub(for: push.courseID)
        guard await hub.push(push.batch(from: clientID, author: principal.user), from: handle) else {
            return .failure(ConnectionError(.shuttingDown, "the server is shutting down; send the batch again later"))
        }
        let answer = await Self.answer(to: push.batchSeq, in: outbox)
        await hub.unsubscribe(handle)
        // No such course: the hub rejects the batch; over HTTP that is a 404 and its Error (§13).
        if case .success(.reject(let reject)) = answer, reject.rejection.code == .unknownCourse {
            return .failure(ConnectionError(.unknownCourse, "no course \(push.courseID)"))
        }
        return answer
    }

    /// The `Ack` or `Reject` of `batchSeq` as it reaches `outbox` (skipping progress), or why the outbox closed.
    private static func answer(to batchSeq: BatchSeq, in outbox: Outbox) async -> Result<WireMessage, ConnectionError> {
        while let item = await outbox.next() {
            switch item {
            case .frame(let payload):
                guard let message = try? WireMessage(payload: payload.readableBytesView) else { continue }
                switch message {
                case .ack(let ack) where ack.batchSeq == batchSeq: return .success(message)
                case .reject(let reject) where reject.batchSeq == batchSeq: return .success(message)
                default: continue  // progress of a large batch
                }
            case .close(let error):
                return .failure(error)
            }
        }
        return .failure(ConnectionError(.internalError, "the batch was not answered"))
    }

    /// The course as committed, at its seq, for a token with any role in it.
    public func outline(of courseID: EntityID, token: String) async -> Result<CourseState, ConnectionError> {
        await outlining(courseID, token: token).result
    }

    /// The course's history, newest first (see ``SyncStore/history(_:before:limit:)``), for a token
    /// with any role in it; and the token's user if it verified (for the access log).
    func history(of courseID: EntityID, before: CourseSeq?, limit: Int, token: String) async -> (result: Result<[HistoryRecord], ConnectionError>, user: String?) {
        await reading(courseID, token: token) { store in try await store.history(courseID, before: before, limit: limit) }
    }

    /// ``outline(of:token:)`` (as it was at `seq`, if given), and the token's user if it verified
    /// (for the access log).
    func outlining(_ courseID: EntityID, at seq: CourseSeq? = nil, token: String) async -> (result: Result<CourseState, ConnectionError>, user: String?) {
        await reading(courseID, token: token) { store in
            if let seq { return try await store.course(courseID, at: seq) }
            guard try await store.courseSeq(courseID) != nil else { throw StoreError.unknownCourse(courseID) }
            return try await store.snapshot(courseID: courseID)
        }
    }

    /// The operations that would take the course back to how it was at `seq`
    /// (``CourseState/restore(to:mintTemp:)``, temps numbered from 1), and the seq of the course
    /// they were computed against.
    func restoring(_ courseID: EntityID, to seq: CourseSeq, token: String) async -> (result: Result<(ops: [SyncModel.Operation], seq: CourseSeq), ConnectionError>, user: String?) {
        await reading(courseID, token: token) { store in
            let earlier = try await store.course(courseID, at: seq)
            let now = try await store.snapshot(courseID: courseID)
            var next: UInt64 = 0
            return (now.restore(to: earlier, mintTemp: { next += 1; return TempID(next)! }), now.seq)
        }
    }

    /// `read` for a token with any role in the course (``AccessPolicy/readRefusal(_:courseID:)``),
    /// its failures as the HTTP API words them; and the token's user if it verified.
    private func reading<T: Sendable>(_ courseID: EntityID, token: String, _ read: (any SyncStore) async throws -> T) async -> (result: Result<T, ConnectionError>, user: String?) {
        let principal: Principal
        switch await authority.verify(token, now: Date()) {
        case .failure(let error): return (.failure(error), nil)
        case .success(let verified): principal = verified
        }
        if let refusal = AccessPolicy.readRefusal(principal, courseID: courseID) { return (.failure(refusal), principal.user) }
        do {
            return (.success(try await read(store)), principal.user)
        } catch StoreError.unknownCourse {
            return (.failure(ConnectionError(.unknownCourse, "no course \(courseID)")), principal.user)
        } catch let error as StoreError {
            if case .notInHistory = error { return (.failure(ConnectionError(.limitExceeded, error.description)), principal.user) }
            return (.failure(ConnectionError(.internalError, "the store could not be read")), principal.user)
        } catch {
            return (.failure(ConnectionError(.internalError, "the store could not be read")), principal.user)
        }
    }
}

/// `POST /v1/courses/{id}/batches`, `GET /v1/courses/{id}[?at=SEQ]`, `GET /v1/courses/{id}/history` and
/// `GET /v1/courses/{id}/restore?to=SEQ` (spec §13), as ``HTTPRouter`` routes them.
enum BackendAPI {
    /// The paths the API answers begin so.
    static let prefix = "/v1/courses/"

    /// The answer to a request under ``prefix``: the course and token are read once, then the route.
    static func answer(_ head: HTTPRequestHead, _ body: ByteBuffer, _ server: SyncServer) async -> HTTPAnswer {
        let parts = HTTPRouter.path(head.uri).split(separator: "/")  // v1, courses, {id}[, batches | history]
        guard parts.count >= 3, let courseID = EntityID(String(parts[2])) else {
            return HTTPAnswer(.notFound, .error(ConnectionError(.unknownCourse, "not a course: \(head.uri)")), user: nil)
        }
        guard let token = bearer(head) else {
            return HTTPAnswer(.unauthorized, .error(ConnectionError(.unauthenticated, "an Authorization: Bearer <token> header is required")), user: nil)
        }
        let query = URLComponents(string: head.uri)?.queryItems ?? []
        func seq(_ name: String) -> CourseSeq? { query.first { $0.name == name }?.value.flatMap(CourseSeq.init) }
        switch (head.method, parts.count == 4 ? parts[3] : nil) {
        case (.GET, nil):
            let at = seq("at")
            if query.contains(where: { $0.name == "at" }), at == nil {
                return HTTPAnswer(.badRequest, .error(ConnectionError(.malformedFrame, "at= takes a seq (a whole number)")), user: nil)
            }
            let (result, user) = await server.outlining(courseID, at: at, token: token)
            switch result {
            case .success(let state):
                return HTTPAnswer(.ok, .snapshot(SnapshotPart(whole: state)), user: user)
            case .failure(let error):
                return HTTPAnswer(readStatus(of: error), .error(error), user: user)
            }
        case (.GET, "restore"):
            guard let to = seq("to") else {
                return HTTPAnswer(.badRequest, .error(ConnectionError(.malformedFrame, "restore needs to= (the seq to go back to)")), user: nil)
            }
            let (result, user) = await server.restoring(courseID, to: to, token: token)
            switch result {
            case .success(let (ops, current)):
                // The batch to send (as the caller's own, with its own batch seq and temps).
                return HTTPAnswer(.ok, .push(Push(courseID: courseID, batchSeq: 1, baseSeq: current, ops: ops)), user: user)
            case .failure(let error):
                return HTTPAnswer(readStatus(of: error), .error(error), user: user)
            }
        case (.GET, "history"):
            return await history(of: courseID, query: query, token: token, server)
        case (.POST, "restore"):
            // {"clientId", "batchSeq", "to"}: the restore computed here and committed as that
            // client's batch (exactly-once per clientId and batchSeq, like any batch).
            guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
                  let client = (object["clientId"] as? String).flatMap(EntityID.init),
                  let batchSeq = (object["batchSeq"] as? String).flatMap(BatchSeq.init) ?? (object["batchSeq"] as? Int).map(BatchSeq.init),
                  batchSeq > 0,
                  let to = (object["to"] as? String).flatMap(CourseSeq.init) ?? (object["to"] as? Int).map(CourseSeq.init) else {
                return HTTPAnswer(.badRequest, .error(ConnectionError(.malformedFrame, #"the body is {"clientId": UUID, "batchSeq": N > 0, "to": SEQ}"#)), user: nil)
            }
            let (computed, reader) = await server.restoring(courseID, to: to, token: token)
            let ops: [SyncModel.Operation], current: CourseSeq
            switch computed {
            case .success(let restore): (ops, current) = restore
            case .failure(let error): return HTTPAnswer(readStatus(of: error), .error(error), user: reader)
            }
            // Sent even when there is nothing to do: a resend of a restore that committed gets its
            // Ack (exactly-once answers before it looks at the ops); a new empty one is refused as
            // EMPTY_BATCH, which here means the course already is as it was.
            let push = Push(courseID: courseID, batchSeq: batchSeq, baseSeq: current, ops: ops)
            let (result, user) = await server.submitting(push, clientID: ClientID(client), token: token)
            if case .success(.reject(let reject)) = result, reject.rejection.code == .emptyBatch {
                return HTTPAnswer(.ok, "{\"unchanged\": true, \"seq\": \"\(current)\"}\n", contentType: "application/json", user: user)
            }
            return answer(result, user: user)
        case (.POST, "batches"):
            let push: Push, clientID: ClientID
            do {
                (push, clientID) = try Self.push(from: body, courseID: courseID)
            } catch let error as WireError {
                if case .invalidBatch(let course, let batchSeq, let rejection) = error {
                    return HTTPAnswer(.unprocessableEntity, .reject(BatchRejection(courseID: course, batchSeq: batchSeq, rejection: rejection)), user: nil)
                }
                return HTTPAnswer(.badRequest, .error(ConnectionError(error.code, "\(error)")), user: nil)
            } catch {
                return HTTPAnswer(.badRequest, .error(ConnectionError(.malformedFrame, "\(error)")), user: nil)
            }
            return await submitted(push, clientID: clientID, token: token, server)
        default:
            return HTTPAnswer(.methodNotAllowed, .error(ConnectionError(.unexpectedMessage, """
                \(head.method) \(head.uri): only GET /v1/courses/{id}[?at=SEQ], GET /v1/courses/{id}/history, \
                GET or POST /v1/courses/{id}/restore and POST /v1/courses/{id}/batches
                """)), user: nil)
        }
    }

    /// A batch committed through the course's hub, answered as the batch route answers.
    private static func submitted(_ push: Push, clientID: ClientID, token: String, _ server: SyncServer) async -> HTTPAnswer {
        let (result, user) = await server.submitting(push, clientID: clientID, token: token)
        return answer(result, user: user)
    }

    /// A submitted batch's outcome as the batch route answers it.
    private static func answer(_ result: Result<WireMessage, ConnectionError>, user: String?) -> HTTPAnswer {
        switch result {
        case .success(let message):
            if case .reject(let reject) = message {
                return HTTPAnswer(reject.rejection.code == .forbidden ? .forbidden : .unprocessableEntity, message, user: user)
            }
            return HTTPAnswer(.ok, message, user: user)
        case .failure(let error):
            return HTTPAnswer(status(of: error), .error(error), user: user)
        }
    }

    /// `GET /v1/courses/{id}/history?before=SEQ&limit=N`: `{"history": [{"seq", "committedAt",
    /// "author", "clientId", "batchSeq", "summary"}…], "next": SEQ}` newest first; `next` (when
    /// there may be more) is the `before` of the following page.
    private static func history(of courseID: EntityID, query: [URLQueryItem], token: String, _ server: SyncServer) async -> HTTPAnswer {
        let before = query.first { $0.name == "before" }?.value.flatMap(CourseSeq.init)
        let limit = query.first { $0.name == "limit" }?.value.flatMap(Int.init) ?? 100
        let (result, user) = await server.history(of: courseID, before: before, limit: limit, token: token)
        switch result {
        case .success(let records):
            let formatter = ISO8601DateFormatter()
            let entries: [[String: String]] = records.map { record in
                ["seq": String(record.seq), "committedAt": formatter.string(from: Date(timeIntervalSince1970: record.committedAt)),
                 "author": record.author, "clientId": "\(record.origin.clientID.id)", "batchSeq": String(record.origin.batchSeq),
                 "summary": record.summary]
            }
            var object: [String: Any] = ["history": entries]
            if records.count == min(max(limit, 1), HistoryRecord.maxPage), let last = records.last, last.seq > 1 {
                object["next"] = String(last.seq)
            }
            let json = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            return HTTPAnswer(.ok, json + "\n", contentType: "application/json", user: user)
        case .failure(let error):
            return HTTPAnswer(readStatus(of: error), .error(error), user: user)
        }
    }

    /// The token of an `Authorization: Bearer` header.
    static func bearer(_ head: HTTPRequestHead) -> String? {
        guard let authorization = head.headers.first(name: "Authorization"), authorization.lowercased().hasPrefix("bearer ") else { return nil }
        return String(authorization.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
    }

    /// The body: a `Push` in the JSON mapping, plus `"clientId"` (a UUID) naming the sender for
    /// exactly-once. The course comes from the path (a `course` in the body must agree).
    static func push(from body: ByteBuffer, courseID: EntityID) throws -> (Push, ClientID) {
        guard var envelope = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
              let text = envelope.removeValue(forKey: "clientId") as? String, let client = EntityID(text) else {
            throw WireError.missingField("clientId (a UUID)")
        }
        if envelope["course"] == nil { envelope["course"] = courseID.data.base64EncodedString() }
        let json = try JSONSerialization.data(withJSONObject: ["push": envelope])
        guard case .push(let push) = try WireMessage(payload: JSONMapping.payload(fromJSON: Array(json)), sentBy: .client) else {
            throw WireError.malformed("not a batch")
        }
        guard push.courseID == courseID else { throw WireError.invalidField("course", reason: "the body names another course than the path") }
        return (push, ClientID(client))
    }

    /// A read's refusal: as ``status(of:)``, but a state the history no longer (or does not yet)
    /// reach, which ``SyncServer/reading(_:token:_:)`` words as `LIMIT_EXCEEDED`, is `410 Gone`.
    static func readStatus(of error: ConnectionError) -> HTTPResponseStatus {
        error.code == .limitExceeded ? .gone : status(of: error)
    }

    static func status(of error: ConnectionError) -> HTTPResponseStatus {
        switch error.code {
        case .unauthenticated, .tokenExpired: .unauthorized
        case .forbidden: .forbidden
        case .unknownCourse: .notFound
        case .rateLimited: .tooManyRequests
        case .shuttingDown, .limitExceeded: .serviceUnavailable
        default: .internalServerError
        }
    }
}
