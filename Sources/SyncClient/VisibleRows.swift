import SyncModel

/// The rows the replica shows, keyed by local key, and the changes between two versions of them.
struct VisibleRows: Hashable, Sendable {
    var chapters: [LocalKey: ChapterRow] = [:]
    var media: [LocalKey: MediaRow] = [:]
    var videos: [LocalKey: VideoRow] = [:]
}

/// Rows to upsert and keys to delete in the replica's visible tables.
struct RowDelta: Hashable, Sendable {
    var chapters: [LocalKey: ChapterRow] = [:]
    var deletedChapters: Set<LocalKey> = []
    var media: [LocalKey: MediaRow] = [:]
    var deletedMedia: Set<LocalKey> = []
    var videos: [LocalKey: VideoRow] = [:]
    var deletedVideos: Set<LocalKey> = []
    /// Videos whose (chapter, media file) pair changed: deleted before the rows are written, so
    /// that two trading places in one step are not taken for a duplicate. The other upserted
    /// videos are updated in place or inserted, without a delete first.
    var movedVideos: Set<LocalKey> = []

    var isEmpty: Bool {
        chapters.isEmpty && deletedChapters.isEmpty && media.isEmpty && deletedMedia.isEmpty
            && videos.isEmpty && deletedVideos.isEmpty && movedVideos.isEmpty
    }

    /// Folds a later delta into this one.
    mutating func merge(_ later: RowDelta) {
        for (key, row) in later.chapters { chapters[key] = row; deletedChapters.remove(key) }
        for key in later.deletedChapters { chapters[key] = nil; deletedChapters.insert(key) }
        for (key, row) in later.media { media[key] = row; deletedMedia.remove(key) }
        for key in later.deletedMedia { media[key] = nil; deletedMedia.insert(key) }
        for (key, row) in later.videos {
            // Deleted by an earlier step and back in a later one (a rollback restores it): the file
            // still holds the row as it was before both, whatever its pair, so it goes first.
            if deletedVideos.remove(key) != nil { movedVideos.insert(key) }
            videos[key] = row
        }
        for key in later.deletedVideos { videos[key] = nil; deletedVideos.insert(key) }
        movedVideos.formUnion(later.movedVideos)
    }
}

/// Row IDs (in the visible state's terms) that an edit may have changed.
struct TouchedIDs: Hashable, Sendable {
    var chapters = Set<EntityID>()
    var media = Set<EntityID>()
    var videos = Set<EntityID>()

    mutating func formUnion(_ changes: ChangeSet) {
        chapters.formUnion(changes.chapters.map(\.id))
        chapters.formUnion(changes.chapterVersions.map(\.chapterID))
        chapters.formUnion(changes.deletedChapters)
        media.formUnion(changes.media.map(\.id))
        videos.formUnion(changes.videos.map(\.id))
        videos.formUnion(changes.deletedVideos)
    }

    mutating func formUnion(_ other: TouchedIDs) {
        chapters.formUnion(other.chapters)
        media.formUnion(other.media)
        videos.formUnion(other.videos)
    }
}

/// Turns the visible course state into rows: local keys, real IDs and statuses.
struct RowBuilder {
    let confirmed: CourseState
    let localKeys: [EntityID: LocalKey]

    func key(_ id: EntityID) -> LocalKey {
        id.isProvisional ? LocalKey(id) : localKeys[id] ?? LocalKey(id)
    }

    func realID(_ id: EntityID) -> EntityID? { id.isProvisional ? nil : id }

    func row(_ chapter: Chapter) -> ChapterRow {
        ChapterRow(key: key(chapter.id), id: realID(chapter.id), title: chapter.title, position: chapter.position,
                   version: chapter.version, status: confirmed.chapters[chapter.id] == chapter ? .confirmed : .pending)
    }

    func row(_ file: MediaFile) -> MediaRow {
        MediaRow(key: key(file.id), id: realID(file.id), name: file.name, cdnURL: file.cdnURL, durationMs: file.durationMs,
                 byteSize: file.byteSize, status: confirmed.media[file.id] == file ? .confirmed : .pending)
    }

    func row(_ video: Video) -> VideoRow {
        VideoRow(key: key(video.id), id: realID(video.id), chapterKey: key(video.chapterID), mediaKey: key(video.mediaFileID),
                 title: video.title, position: video.position, status: confirmed.videos[video.id] == video ? .confirmed : .pending)
    }

    func rows(of state: CourseState) -> VisibleRows {
        var rows = VisibleRows()
        for chapter in state.chapters.values { let row = row(chapter); rows.chapters[row.key] = row }
        for file in state.media.values { let row = row(file); rows.media[row.key] = row }
        for video in state.videos.values { let row = row(video); rows.videos[row.key] = row }
        return rows
    }
}

extension VisibleRows {
    /// What turns `self` into `new`.
    func delta(to new: VisibleRows) -> RowDelta {
        var delta = RowDelta()
        for (key, row) in new.chapters where chapters[key] != row { delta.chapters[key] = row }
        for key in chapters.keys where new.chapters[key] == nil { delta.deletedChapters.insert(key) }
        for (key, row) in new.media where media[key] != row { delta.media[key] = row }
        for key in media.keys where new.media[key] == nil { delta.deletedMedia.insert(key) }
        for (key, row) in new.videos where videos[key] != row {
            delta.videos[key] = row
            if let old = videos[key], old.moved(to: row) { delta.movedVideos.insert(key) }
        }
        for key in videos.keys where new.videos[key] == nil { delta.deletedVideos.insert(key) }
        return delta
    }

    /// Updates the rows of the `touched` IDs from `state`, returning what changed: the rest are
    /// assumed unchanged, so `touched` must hold every ID whose row may differ (what the applied
    /// diffs and the pending batches' replays, before and after, changed). A provisional ID and
    /// the real ID it became share a local key: the present row wins over the absent one.
    mutating func update(_ touched: TouchedIDs, from state: CourseState, _ builder: RowBuilder) -> RowDelta {
        var delta = RowDelta()
        var unused = Set<LocalKey>()
        Self.refresh(&chapters, touched.chapters, state.chapters, builder.row, builder.key, &delta.chapters, &delta.deletedChapters, { _, _ in false }, &unused)
        Self.refresh(&media, touched.media, state.media, builder.row, builder.key, &delta.media, &delta.deletedMedia, { _, _ in false }, &unused)
        Self.refresh(&videos, touched.videos, state.videos, builder.row, builder.key, &delta.videos, &delta.deletedVideos, { $0.moved(to: $1) }, &delta.movedVideos)
        return delta
    }

    private static func refresh<Entity, Row: Equatable & Keyed>(
        _ rows: inout [LocalKey: Row], _ ids: Set<EntityID>, _ entities: [EntityID: Entity],
        _ makeRow: (Entity) -> Row, _ key: (EntityID) -> LocalKey,
        _ upserted: inout [LocalKey: Row], _ deleted: inout Set<LocalKey>,
        _ isMove: (Row, Row) -> Bool, _ moved: inout Set<LocalKey>
    ) {
        var present = Set<LocalKey>()
        for id in ids {
            guard let entity = entities[id] else { continue }
            let row = makeRow(entity)
            present.insert(row.key)
            let old = rows.updateValue(row, forKey: row.key)
            if old != row {
                upserted[row.key] = row
                if let old, isMove(old, row) { moved.insert(row.key) }
            }
        }
        for id in ids where entities[id] == nil {
            let gone = key(id)
            if !present.contains(gone), rows.removeValue(forKey: gone) != nil { deleted.insert(gone) }
        }
    }
}

extension VideoRow {
    /// Whether `new` holds another (chapter, media file) pair than this row.
    func moved(to new: VideoRow) -> Bool { chapterKey != new.chapterKey || mediaKey != new.mediaKey }
}

/// A visible row, by its local key.
protocol Keyed { var key: LocalKey { get } }
extension ChapterRow: Keyed {}
extension MediaRow: Keyed {}
extension VideoRow: Keyed {}
