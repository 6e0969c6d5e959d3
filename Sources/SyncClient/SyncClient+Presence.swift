import SyncModel

/// Presence: who else is on the course and what they are looking at (protocol §14). Ephemeral:
/// nothing of it is stored, and it is empty while offline.
extension SyncClient {
    /// Shows this replica to the others on the course, as `name` (empty: the token's name or
    /// subject) in `color` (0xRRGGBB), looking at `focus`. Sent now if connected and again on
    /// every reconnect; the server passes on at most ten changes a second per connection (the
    /// latest wins).
    public func setPresence(name: String = "", color: UInt32 = 0, focus: Focus? = nil) throws {
        let announcement = PresenceAnnouncement(courseID: courseID, name: name, color: color, focus: core.serverFocus(focus))
        if let problem = announcement.problem { throw EditError.invalid(Rejection(.invalidTitle, problem)) }
        core.setPresence(announcement)
        carryOut()
    }

    /// Changes only what this replica shows it is looking at (announcing it, unnamed, if
    /// ``setPresence(name:color:focus:)`` was not called). A row made here is named to the others
    /// once the server has acknowledged it.
    public func setFocus(_ focus: Focus?) {
        var announcement = core.announcement ?? PresenceAnnouncement(courseID: courseID)
        announcement.focus = core.serverFocus(focus)
        core.setPresence(announcement)
        carryOut()
    }

    /// Everyone else on the course now (by name).
    public var collaborators: [Collaborator] { core.collaborators }

    /// Who else is on the course: the current list at once, then every change. Ends when the
    /// client stops.
    public func observePresence() -> AsyncStream<[Collaborator]> {
        let (stream, continuation) = AsyncStream.makeStream(of: [Collaborator].self, bufferingPolicy: .bufferingNewest(1))
        guard !closed else {
            continuation.finish()
            return stream
        }
        let number = nextPresenceObserver
        nextPresenceObserver += 1
        presenceObservers[number] = continuation
        continuation.yield(core.collaborators)
        continuation.onTermination = { [weak self] _ in
            Task { await self?.dropPresenceObserver(number) }
        }
        return stream
    }

    private func dropPresenceObserver(_ number: Int) {
        presenceObservers[number] = nil
    }
}
