import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SyncWire

/// Plain HTTP requests as a backend or a browser makes them (URLSession).
enum HTTPTest {
    struct Response {
        var status: Int
        var body: String
        var message: WireMessage? { try? WireMessage(payload: JSONMapping.payload(fromJSON: Array(body.utf8))) }
    }

    static func request(_ port: Int, _ method: String, _ path: String, token: String?, body: String? = nil) async throws -> Response {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body { request.httpBody = Data(body.utf8); request.setValue("application/json", forHTTPHeaderField: "Content-Type") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return Response(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: String(decoding: data, as: UTF8.self))
    }
}
