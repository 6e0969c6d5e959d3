/// What a collaborator is looking at or editing on a course.
public enum PresenceFocus: Hashable, Sendable {
    case chapter(EntityID)
    case video(EntityID)
    /// The media library.
    case library
}

/// One client present on a course, as every subscriber sees it.
public struct PresencePeer: Hashable, Sendable {
    public var clientID: ClientID
    /// The token's subject.
    public var user: String
    public var name: String
    /// 0xRRGGBB.
    public var color: UInt32
    public var focus: PresenceFocus?

    public init(clientID: ClientID, user: String, name: String, color: UInt32, focus: PresenceFocus?) {
        self.clientID = clientID
        self.user = user
        self.name = name
        self.color = color
        self.focus = focus
    }
}

/// A client's presence on a course as it announces it (the server adds who it is).
public struct PresenceAnnouncement: Hashable, Sendable {
    public var courseID: EntityID
    /// Empty: the server uses the token's name, or its subject.
    public var name: String
    public var color: UInt32
    public var focus: PresenceFocus?

    public init(courseID: EntityID, name: String = "", color: UInt32 = 0, focus: PresenceFocus? = nil) {
        self.courseID = courseID
        self.name = name
        self.color = color
        self.focus = focus
    }

    /// The longest name, in code points.
    public static let maxNameLength = 64
    public static let maxColor: UInt32 = 0xFF_FFFF

    /// Why this announcement is not acceptable, if it is not: a name longer than
    /// ``maxNameLength`` code points or holding control characters, or a colour past 0xFFFFFF.
    public var problem: String? {
        if name.unicodeScalars.count > Self.maxNameLength { return "a presence name has at most \(Self.maxNameLength) code points" }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) { return "a presence name holds a control character" }
        if color > Self.maxColor { return "a presence colour is 0xRRGGBB (at most 0xFFFFFF)" }
        return nil
    }
}

/// A change to who is on a course: joined or changed peers (whole entries) and client IDs that
/// left; with `full`, the peers are everyone present.
public struct PresenceChange: Hashable, Sendable {
    public var courseID: EntityID
    public var full: Bool
    public var peers: [PresencePeer]
    public var left: [ClientID]

    public init(courseID: EntityID, full: Bool = false, peers: [PresencePeer] = [], left: [ClientID] = []) {
        self.courseID = courseID
        self.full = full
        self.peers = peers
        self.left = left
    }

    /// Who is present after this change, given who was.
    public func applied(to present: [ClientID: PresencePeer]) -> [ClientID: PresencePeer] {
        var present = full ? [:] : present
        for clientID in left { present[clientID] = nil }
        for peer in peers { present[peer.clientID] = peer }
        return present
    }

    /// This change followed by `later`, as one change (a slow reader gets the sum of what it missed).
    public func followed(by later: PresenceChange) -> PresenceChange {
        precondition(later.courseID == courseID)
        if later.full { return later }
        var peers = self.peers.filter { peer in !later.left.contains(peer.clientID) && !later.peers.contains { $0.clientID == peer.clientID } }
        peers += later.peers
        if full { return PresenceChange(courseID: courseID, full: true, peers: peers) }
        let left = self.left.filter { id in !later.peers.contains { $0.clientID == id } && !later.left.contains(id) } + later.left
        return PresenceChange(courseID: courseID, peers: peers, left: left)
    }
}
