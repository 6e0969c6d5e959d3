import Foundation
import SyncModel

/// Who is on one course, without I/O: the entries of this node's connections and those other nodes
/// relayed, the subscribers that watch them, and what to tell whom when either changes.
/// ``CourseHub`` drives it next to its ``HubCore``; the simulator drives it the same way.
///
/// Presence is ephemeral and best-effort: nothing is stored, and a lost relay is repaired by the
/// next refresh. An entry of this node's lives as long as its connection's subscription (the
/// connection's heartbeat is what keeps it); an entry another node relayed lives for `ttl` after
/// that node last mentioned it, and every node mentions all its entries again at each ``tick(now:)``,
/// so the entries of a node that died end within `ttl`. Every entry carries its **origin** (the
/// node and connection that announced it): a departure only removes the entry it names, never a
/// newer one of the same client made on another connection.
package struct PresenceBoard<Connection: Hashable & Comparable & Sendable>: Sendable {
    package enum Effect: Hashable, Sendable {
        /// Queue a presence update for a watcher (coalesced with others it has not read yet).
        case send(Connection, PresenceChange)
        /// Tell the other nodes (best-effort).
        case relay(PresenceRelay)
    }

    struct Entry: Hashable, Sendable {
        var peer: PresencePeer
        var origin: String
        /// This node's connection that announced it; `nil` for an entry another node relayed.
        var owner: Connection?
        /// When a relayed entry ends unless mentioned again.
        var expires: Moment?
    }

    package let courseID: EntityID
    /// This node's name in relays (its own come back to it, and are ignored).
    package let node: String
    package let ttl: Duration
    private var entries: [ClientID: Entry] = [:]
    private var watchers: Set<Connection> = []
    private var queried = false
    private var effects: [Effect] = []

    package init(courseID: EntityID, node: String, ttl: Duration) {
        self.courseID = courseID
        self.node = node
        self.ttl = ttl
    }

    package mutating func takeEffects() -> [Effect] {
        defer { effects = [] }
        return effects
    }

    /// Everyone present, ordered by client ID.
    package var peers: [PresencePeer] { entries.values.map(\.peer).sorted { $0.clientID < $1.clientID } }

    package func references(_ connection: Connection) -> Bool {
        watchers.contains(connection) || entries.values.contains { $0.owner == connection }
    }

    /// `connection` starts receiving updates, first the whole list. The first watcher asks the
    /// other nodes for their entries, which this node may never have heard (it was not hosting
    /// the course when they were announced).
    package mutating func watch(_ connection: Connection) {
        watchers.insert(connection)
        effects.append(.send(connection, PresenceChange(courseID: courseID, full: true, peers: peers)))
        if !queried {
            queried = true
            effects.append(.relay(PresenceRelay(node: node, courseID: courseID, query: true)))
        }
    }

    /// `connection` announced itself (or changed what it shows).
    package mutating func set(_ peer: PresencePeer, origin: String, from connection: Connection) {
        let entry = Entry(peer: peer, origin: origin, owner: connection)
        guard entries[peer.clientID] != entry else { return }
        entries[peer.clientID] = entry
        broadcast(PresenceChange(courseID: courseID, peers: [peer]))
        effects.append(.relay(PresenceRelay(node: node, courseID: courseID, entries: [.init(peer: peer, origin: origin)])))
    }

    /// `connection` left the course (unsubscribed, or its connection ended): it stops watching and
    /// its entry ends.
    package mutating func remove(_ connection: Connection) {
        watchers.remove(connection)
        let gone = entries.filter { $0.value.owner == connection }.sorted { $0.key < $1.key }
        guard !gone.isEmpty else { return }
        for (clientID, _) in gone { entries[clientID] = nil }
        broadcast(PresenceChange(courseID: courseID, left: gone.map(\.key)))
        effects.append(.relay(PresenceRelay(node: node, courseID: courseID, left: gone.map { .init(clientID: $0.key, origin: $0.value.origin) })))
    }

    /// What another node relayed, heard at `now`.
    package mutating func relayed(_ relay: PresenceRelay, now: Moment) {
        guard relay.node != node, relay.courseID == courseID else { return }
        if relay.query, let refresh = refresh() { effects.append(.relay(refresh)) }
        var change = PresenceChange(courseID: courseID)
        for item in relay.entries {
            let current = entries[item.peer.clientID]
            // This node's own connection of the same client is certainly alive; keep it.
            if current?.owner != nil { continue }
            entries[item.peer.clientID] = Entry(peer: item.peer, origin: item.origin, owner: nil, expires: now + ttl)
            if current?.peer != item.peer { change.peers.append(item.peer) }
        }
        for leave in relay.left {
            guard let current = entries[leave.clientID], current.owner == nil, current.origin == leave.origin else { continue }
            entries[leave.clientID] = nil
            change.left.append(leave.clientID)
        }
        if !change.peers.isEmpty || !change.left.isEmpty { broadcast(change) }
    }

    /// The periodic step: relayed entries not mentioned for `ttl` end, and this node mentions all
    /// of its own again.
    package mutating func tick(now: Moment) {
        let expired = entries.filter { $0.value.expires.map { $0 <= now } ?? false }.keys.sorted()
        if !expired.isEmpty {
            for clientID in expired { entries[clientID] = nil }
            broadcast(PresenceChange(courseID: courseID, left: expired))
        }
        if let refresh = refresh() { effects.append(.relay(refresh)) }
    }

    /// This node's entries, as a relay (none if it has none).
    private func refresh() -> PresenceRelay? {
        let own = entries.values.filter { $0.owner != nil }.sorted { $0.peer.clientID < $1.peer.clientID }
        guard !own.isEmpty else { return nil }
        return PresenceRelay(node: node, courseID: courseID, entries: own.map { .init(peer: $0.peer, origin: $0.origin) })
    }

    private mutating func broadcast(_ change: PresenceChange) {
        for watcher in watchers.sorted() { effects.append(.send(watcher, change)) }
    }
}

/// What one node tells the others about a course's presence: entries announced or mentioned again,
/// departures, or a request for everyone's entries. Carried as text (PostgreSQL's NOTIFY payload
/// on the `coursesync_presence` channel), at most ``maxEntries`` entries each.
package struct PresenceRelay: Hashable, Sendable {
    package struct Item: Hashable, Sendable {
        package var peer: PresencePeer
        package var origin: String
    }

    package struct Leave: Hashable, Sendable {
        package var clientID: ClientID
        package var origin: String
    }

    package var node: String
    package var courseID: EntityID
    package var entries: [Item] = []
    package var left: [Leave] = []
    /// Asks every other node to mention its entries for the course now.
    package var query = false

    /// Entries per relay: a NOTIFY payload holds less than 8,000 bytes, and an entry at most ~400.
    package static let maxEntries = 16

    package init(node: String, courseID: EntityID, entries: [Item] = [], left: [Leave] = [], query: Bool = false) {
        self.node = node
        self.courseID = courseID
        self.entries = entries
        self.left = left
        self.query = query
    }

    /// This relay as pieces of at most ``maxEntries`` entries and departures each.
    package func pieces() -> [PresenceRelay] {
        guard entries.count + left.count > Self.maxEntries else { return [self] }
        var pieces: [PresenceRelay] = []
        for start in stride(from: 0, to: entries.count, by: Self.maxEntries) {
            pieces.append(PresenceRelay(node: node, courseID: courseID, entries: Array(entries[start..<min(start + Self.maxEntries, entries.count)])))
        }
        for start in stride(from: 0, to: left.count, by: Self.maxEntries) {
            pieces.append(PresenceRelay(node: node, courseID: courseID, left: Array(left[start..<min(start + Self.maxEntries, left.count)])))
        }
        pieces[0].query = query
        return pieces
    }

    /// The relay as JSON text.
    package var text: String {
        func focus(_ focus: PresenceFocus?) -> String {
            switch focus {
            case nil: ""
            case .chapter(let id): "c:\(id)"
            case .video(let id): "v:\(id)"
            case .library: "l"
            }
        }
        let object: [String: Any] = [
            "n": node, "c": courseID.description, "q": query,
            "e": entries.map { ["i": $0.peer.clientID.description, "u": $0.peer.user, "m": $0.peer.name,
                                "k": Int($0.peer.color), "f": focus($0.peer.focus), "o": $0.origin] as [String: Any] },
            "l": left.map { ["i": $0.clientID.description, "o": $0.origin] },
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// A relay from its text; `nil` if it is not one.
    package init?(text: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let node = object["n"] as? String, let course = (object["c"] as? String).flatMap(EntityID.init),
              let entries = object["e"] as? [[String: Any]], let left = object["l"] as? [[String: Any]] else { return nil }
        func focus(_ text: String) -> PresenceFocus?? {
            if text.isEmpty { return .some(nil) }
            if text == "l" { return .library }
            guard let id = EntityID(String(text.dropFirst(2))) else { return nil }
            if text.hasPrefix("c:") { return .chapter(id) }
            if text.hasPrefix("v:") { return .video(id) }
            return nil
        }
        var items: [Item] = []
        for entry in entries {
            guard let id = (entry["i"] as? String).flatMap(EntityID.init), let user = entry["u"] as? String, let name = entry["m"] as? String,
                  let color = entry["k"] as? Int, let focusText = entry["f"] as? String, let focus = focus(focusText),
                  let origin = entry["o"] as? String else { return nil }
            items.append(Item(peer: PresencePeer(clientID: ClientID(id), user: user, name: name, color: UInt32(clamping: color), focus: focus),
                              origin: origin))
        }
        var leaves: [Leave] = []
        for leave in left {
            guard let id = (leave["i"] as? String).flatMap(EntityID.init), let origin = leave["o"] as? String else { return nil }
            leaves.append(Leave(clientID: ClientID(id), origin: origin))
        }
        self.init(node: node, courseID: course, entries: items, left: leaves, query: object["q"] as? Bool ?? false)
    }
}
