import SyncModel
import SyncWire

/// Presence (protocol §14): who else is on the course, and this replica's own entry. Nothing of
/// it is stored; it starts empty on every connection.
extension ClientCore {
    /// Announces this replica on the course (or changes what it shows): sent now if connected,
    /// and again after every reconnect.
    package mutating func setPresence(_ announcement: PresenceAnnouncement) {
        self.announcement = announcement
        if phase == .catchingUp || phase == .live { actions.append(.send(.setPresence(announcement))) }
    }

    /// The announcement, if any, after `Subscribe` on a new connection.
    mutating func announceAfterSubscribing() {
        if let announcement { actions.append(.send(.setPresence(announcement))) }
    }

    /// A presence update from the server.
    mutating func presenceChanged(_ change: PresenceChange) {
        let before = peers
        peers = change.applied(to: peers)
        if peers != before { actions.append(.emit(.presence(collaborators))) }
    }

    /// The connection ended: who is present is unknown until the next one says.
    mutating func presenceLost() {
        guard !peers.isEmpty else { return }
        peers = [:]
        actions.append(.emit(.presence([])))
    }

    /// Everyone present but this replica, by name, with focus in local keys.
    package var collaborators: [Collaborator] {
        peers.values.filter { $0.clientID != clientID }
            .sorted { ($0.name, $0.clientID) < ($1.name, $1.clientID) }
            .map { peer in
                Collaborator(clientID: peer.clientID, user: peer.user, name: peer.name, color: peer.color,
                             focus: peer.focus.map { focus in
                                 switch focus {
                                 case .chapter(let id): .chapter(localKeys[id] ?? LocalKey(id))
                                 case .video(let id): .video(localKeys[id] ?? LocalKey(id))
                                 case .library: .library
                                 }
                             })
            }
    }

    /// The server's name for a focus given in local keys: `nil` for a row the server does not
    /// know yet (made here and not acknowledged).
    package func serverFocus(_ focus: Focus?) -> PresenceFocus? {
        switch focus {
        case nil: nil
        case .library: .library
        case .chapter(let key): realID(key).map(PresenceFocus.chapter)
        case .video(let key): realID(key).map(PresenceFocus.video)
        }
    }

    private func realID(_ key: LocalKey) -> EntityID? {
        guard key.rawValue.isProvisional else { return key.rawValue }
        return localKeys.first { $0.value == key }?.key
    }
}

/// What a collaborator is looking at, in the replica's keys.
public enum Focus: Hashable, Sendable {
    case chapter(LocalKey)
    case video(LocalKey)
    /// The media library.
    case library
}

/// Another client on the course: who, and what it is looking at.
public struct Collaborator: Hashable, Sendable {
    public var clientID: ClientID
    /// The token's subject.
    public var user: String
    public var name: String
    /// 0xRRGGBB.
    public var color: UInt32
    public var focus: Focus?
}
