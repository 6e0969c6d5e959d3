import SwiftProtobuf

/// The protocol's JSON form (protobuf's canonical JSON mapping of `Envelope`), for peers without a
/// protobuf library, such as a browser over WebSocket (`coursesync.v1+json`). A JSON message and
/// the binary payload it maps to are the same message: conversion is exact both ways.
public enum JSONMapping {
    /// The binary payload (a serialized `Envelope`) of a JSON message.
    public static func payload(fromJSON json: some Collection<UInt8>) throws(WireError) -> [UInt8] {
        do {
            var options = JSONDecodingOptions()
            options.ignoreUnknownFields = true
            return try Coursesync_V1_Envelope(jsonUTF8Bytes: Array(json), options: options).serializedBytes()
        } catch {
            throw .malformed("not an Envelope in the JSON mapping: \(error)")
        }
    }

    /// The JSON form of a binary payload.
    public static func json(fromPayload payload: some Collection<UInt8>) throws(WireError) -> String {
        do {
            return try Coursesync_V1_Envelope(serializedBytes: Array(payload)).jsonString()
        } catch {
            throw .malformed(String(describing: error))
        }
    }
}

extension WireMessage {
    /// The message in the JSON mapping.
    public func json() -> String {
        // A message we built ourselves always maps.
        try! envelope.jsonString()
    }
}
