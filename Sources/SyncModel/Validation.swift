/// The rules for user-supplied text and media metadata. Pure functions: the resolver calls them
/// for every operation, and a client can call them to refuse bad input before it is queued.
public enum Validation {
    /// Trims white space at both ends and checks a title or media name: 1...``Limits/maxTitleLength``
    /// code points after trimming, at most ``Limits/maxTextBytes`` UTF-8 bytes as sent, and no
    /// control characters. Returns the trimmed text, or why it is refused.
    public static func title(_ raw: String) -> Result<String, TextProblem> {
        let bytes = raw.utf8.count
        guard bytes <= Limits.maxTextBytes else { return .failure(.tooManyBytes(bytes)) }
        let scalars = raw.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return .failure(.empty) }
        let trimmed = scalars[first...last]
        if let control = trimmed.first(where: { $0.properties.generalCategory == .control }) {
            return .failure(.controlCharacter(control.value))
        }
        guard trimmed.count <= Limits.maxTitleLength else { return .failure(.tooLong(trimmed.count)) }
        return .success(String(String.UnicodeScalarView(trimmed)))
    }

    /// Checks a media file's CDN URL, duration and size; returns why it is refused, or `nil`.
    public static func media(cdnURL: String, durationMs: UInt64, byteSize: UInt64) -> String? {
        let urlBytes = cdnURL.utf8.count
        guard urlBytes <= Limits.maxURLBytes else {
            return "the URL is \(urlBytes) bytes; the limit is \(Limits.maxURLBytes)"
        }
        let lower = cdnURL.lowercased()
        guard let schemeEnd = ["https://", "http://"].first(where: { lower.hasPrefix($0) })?.count else {
            return "the URL must start with https:// or http://"
        }
        let rest = cdnURL.unicodeScalars.dropFirst(schemeEnd)
        guard let hostStart = rest.first, hostStart != "/" else { return "the URL has no host" }
        if cdnURL.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control }) {
            return "the URL contains white space or a control character"
        }
        guard (1...Limits.maxDurationMs).contains(durationMs) else {
            return "the duration must be 1...\(Limits.maxDurationMs) ms, not \(durationMs)"
        }
        guard (1...Limits.maxMediaBytes).contains(byteSize) else {
            return "the size must be 1...\(Limits.maxMediaBytes) bytes, not \(byteSize)"
        }
        return nil
    }

    /// `U+0007`-style name of a code point.
    static func codePointName(_ value: UInt32) -> String {
        let hex = String(value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }

    /// Why a title or name is refused.
    public enum TextProblem: Error, Hashable, Sendable, CustomStringConvertible {
        case empty
        case tooLong(Int)
        case tooManyBytes(Int)
        case controlCharacter(UInt32)
        case invalidUTF8

        public var description: String {
            switch self {
            case .empty: "it is empty after trimming white space"
            case .tooLong(let count): "it is \(count) characters long; the limit is \(Limits.maxTitleLength)"
            case .tooManyBytes(let count): "it is \(count) bytes long; the limit is \(Limits.maxTextBytes)"
            case .controlCharacter(let value):
                "it contains the control character \(Validation.codePointName(value))"
            case .invalidUTF8: "it is not valid UTF-8"
            }
        }
    }
}

