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

    var isEmpty: Bool {
        chapters.isEmpty && deletedChapters.isEmpty && media.isEmpty && deletedMedia.isEmpty
            && videos.isEmpty && deletedVideos.isEmpty
    }

    /// Folds a later delta into this one.
    mutating func merge(_ later: RowDelta) {
        for (key, row) in later.chapters { chapters[key] = row; deletedChapters.remove(key) }
        for key in later.deletedChapters { chapters[key] = nil; deletedChapters.insert(key) }
        for (key, row) in later.media { media[key] = row; deletedMedia.remove(key) }
        for key in later.deletedMedia { media[key] = nil; deletedMedia.insert(key) }
        for (key, row) in later.videos { videos[key] = row; deletedVideos.remove(key) }
        for key in later.deletedVideos { videos[key] = nil; deletedVideos.insert(key) }
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
        for (key, row) in new.videos where videos[key] != row { delta.videos[key] = row }
        for key in videos.keys where new.videos[key] == nil { delta.deletedVideos.insert(key) }
        return delta
    }

    /// Updates the rows of the `touched` IDs from `state`, returning what changed. Only valid when
    /// nothing else changed (no local key or confirmed row moved): the edit path.
    mutating func update(_ touched: TouchedIDs, from state: CourseState, _ builder: RowBuilder) -> RowDelta {
        var delta = RowDelta()
        for id in touched.chapters {
            let key = builder.key(id)
            if let chapter = state.chapters[id] {
                let row = builder.row(chapter)
                if chapters[key] != row { chapters[key] = row; delta.chapters[key] = row }
            } else if chapters.removeValue(forKey: key) != nil {
                delta.deletedChapters.insert(key)
            }
        }
        for id in touched.media {
            let key = builder.key(id)
            if let file = state.media[id] {
                let row = builder.row(file)
                if media[key] != row { media[key] = row; delta.media[key] = row }
            } else if media.removeValue(forKey: key) != nil {
                delta.deletedMedia.insert(key)
            }
        }
        for id in touched.videos {
            let key = builder.key(id)
            if let video = state.videos[id] {
                let row = builder.row(video)
                if videos[key] != row { videos[key] = row; delta.videos[key] = row }
            } else if videos.removeValue(forKey: key) != nil {
                delta.deletedVideos.insert(key)
            }
        }
        return delta
    }
}
