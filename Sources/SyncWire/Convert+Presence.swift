import SyncModel

/// Presence (protocol §14) between the generated types and SyncModel.
extension Convert {
    static func focus(_ focus: Coursesync_V1_Focus, present: Bool, _ path: @autoclosure () -> String) throws(WireError) -> PresenceFocus? {
        guard present else { return nil }
        switch focus.kind {
        case nil: throw .missingField(path())
        case .chapter(let data): return .chapter(try id(data, path() + ".chapter"))
        case .video(let data): return .video(try id(data, path() + ".video"))
        case .library: return .library
        }
    }

    static func wire(_ focus: PresenceFocus) -> Coursesync_V1_Focus {
        .with {
            switch focus {
            case .chapter(let id): $0.chapter = id.data
            case .video(let id): $0.video = id.data
            case .library: $0.library = Coursesync_V1_Library()
            }
        }
    }

    static func announcement(_ m: Coursesync_V1_SetPresence) throws(WireError) -> PresenceAnnouncement {
        let announcement = PresenceAnnouncement(courseID: try id(m.course, "set_presence.course"), name: m.name, color: m.color,
                                                focus: try focus(m.focus, present: m.hasFocus, "set_presence.focus"))
        if let problem = announcement.problem { throw .invalidField("set_presence", reason: problem) }
        return announcement
    }

    static func wire(_ announcement: PresenceAnnouncement) -> Coursesync_V1_SetPresence {
        .with {
            $0.course = announcement.courseID.data
            $0.name = announcement.name
            $0.color = announcement.color
            if let focus = announcement.focus { $0.focus = wire(focus) }
        }
    }

    static func change(_ m: Coursesync_V1_PresenceUpdate) throws(WireError) -> PresenceChange {
        var peers: [PresencePeer] = []
        for (index, peer) in m.peers.enumerated() {
            let path = "presence_update.peers[\(index)]"
            peers.append(PresencePeer(clientID: ClientID(try id(peer.clientID, path + ".client_id")), user: peer.user, name: peer.name,
                                      color: peer.color, focus: try focus(peer.focus, present: peer.hasFocus, path + ".focus")))
        }
        var left: [ClientID] = []
        for (index, data) in m.left.enumerated() { left.append(ClientID(try id(data, "presence_update.left[\(index)]"))) }
        return PresenceChange(courseID: try id(m.course, "presence_update.course"), full: m.full, peers: peers, left: left)
    }

    static func wire(_ change: PresenceChange) -> Coursesync_V1_PresenceUpdate {
        .with {
            $0.course = change.courseID.data
            $0.full = change.full
            $0.peers = change.peers.map { peer in
                .with {
                    $0.clientID = peer.clientID.id.data
                    $0.user = peer.user
                    $0.name = peer.name
                    $0.color = peer.color
                    if let focus = peer.focus { $0.focus = wire(focus) }
                }
            }
            $0.left = change.left.map(\.id.data)
        }
    }
}
