import Foundation
import SyncModel

/// Conversions between the generated protobuf types and SyncModel. Decoding validates: required
/// fields present, IDs 16 bytes, enum values known; errors name the offending field's path.
enum Convert {
    // MARK: Scalars

    static func id(_ data: Data, _ path: @autoclosure () -> String) throws(WireError) -> EntityID {
        guard !data.isEmpty else { throw .missingField(path()) }
        guard let id = EntityID(bytes: data) else {
            throw .invalidField(path(), reason: "an ID is 16 bytes, not \(data.count)")
        }
        return id
    }

    static func temp(_ raw: UInt64, _ path: @autoclosure () -> String) throws(WireError) -> TempID {
        guard let temp = TempID(raw) else { throw .missingField(path()) }
        return temp
    }

    static func position(_ raw: UInt32) -> Int { Int(raw) }

    static func ref(_ ref: Coursesync_V1_Ref, present: Bool, _ path: @autoclosure () -> String) throws(WireError) -> Ref {
        guard present, let kind = ref.kind else { throw .missingField(path()) }
        switch kind {
        case .id(let data): return .id(try id(data, path() + ".id"))
        case .temp(let raw): return .temp(try temp(raw, path() + ".temp"))
        }
    }

    static func wire(_ ref: Ref) -> Coursesync_V1_Ref {
        .with {
            switch ref {
            case .id(let id): $0.id = id.data
            case .temp(let temp): $0.temp = temp.rawValue
            }
        }
    }

    static func placement(_ placement: Coursesync_V1_Placement, present: Bool, _ path: @autoclosure () -> String) throws(WireError) -> Placement {
        guard present, let kind = placement.kind else { throw .missingField(path()) }
        switch kind {
        case .atEnd: return .atEnd
        case .atStart: return .atStart
        case .after(let anchor): return .after(try ref(anchor, present: true, path() + ".after"))
        case .before(let anchor): return .before(try ref(anchor, present: true, path() + ".before"))
        }
    }

    static func wire(_ placement: Placement) -> Coursesync_V1_Placement {
        .with {
            switch placement {
            case .atEnd: $0.atEnd = Coursesync_V1_AtEnd()
            case .atStart: $0.atStart = Coursesync_V1_AtStart()
            case .after(let anchor): $0.after = wire(anchor)
            case .before(let anchor): $0.before = wire(anchor)
            }
        }
    }

    // MARK: Rows

    static func course(_ m: Coursesync_V1_Course, _ path: @autoclosure () -> String) throws(WireError) -> Course {
        Course(id: try id(m.id, path() + ".id"), title: m.title, seq: m.seq)
    }

    static func wire(_ course: Course) -> Coursesync_V1_Course {
        .with {
            $0.id = course.id.data
            $0.title = course.title
            $0.seq = course.seq
        }
    }

    static func chapter(_ m: Coursesync_V1_Chapter, course: EntityID, _ path: @autoclosure () -> String) throws(WireError) -> Chapter {
        Chapter(id: try id(m.id, path() + ".id"), courseID: course, title: m.title,
                position: position(m.position), version: m.version)
    }

    static func wire(_ chapter: Chapter) -> Coursesync_V1_Chapter {
        .with {
            $0.id = chapter.id.data
            $0.title = chapter.title
            $0.position = UInt32(chapter.position)
            $0.version = chapter.version
        }
    }

    static func media(_ m: Coursesync_V1_MediaFile, course: EntityID, _ path: @autoclosure () -> String) throws(WireError) -> MediaFile {
        MediaFile(id: try id(m.id, path() + ".id"), courseID: course, name: m.name, cdnURL: m.cdnURL,
                  durationMs: m.durationMs, byteSize: m.byteSize)
    }

    static func wire(_ file: MediaFile) -> Coursesync_V1_MediaFile {
        .with {
            $0.id = file.id.data
            $0.name = file.name
            $0.cdnURL = file.cdnURL
            $0.durationMs = file.durationMs
            $0.byteSize = file.byteSize
        }
    }

    static func video(_ m: Coursesync_V1_Video, _ path: @autoclosure () -> String) throws(WireError) -> Video {
        Video(id: try id(m.id, path() + ".id"), chapterID: try id(m.chapter, path() + ".chapter"),
              mediaFileID: try id(m.mediaFile, path() + ".media_file"), title: m.title, position: position(m.position))
    }

    static func wire(_ video: Video) -> Coursesync_V1_Video {
        .with {
            $0.id = video.id.data
            $0.chapter = video.chapterID.data
            $0.mediaFile = video.mediaFileID.data
            $0.title = video.title
            $0.position = UInt32(video.position)
        }
    }

    /// Maps each element with its index, for paths like `diff.videos[3]`.
    /// The path is handed over unbuilt: it is only needed for an error, and building a string per
    /// row (several per video) was most of what decoding a diff cost beyond protobuf's own work.
    static func each<Element, Output>(_ elements: [Element], _ path: String,
                                      _ transform: (Element, () -> String) throws(WireError) -> Output) throws(WireError) -> [Output] {
        var output: [Output] = []
        output.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            output.append(try transform(element, { "\(path)[\(index)]" }))
        }
        return output
    }

    // MARK: Snapshot and diff

    static func snapshot(_ m: Coursesync_V1_Snapshot) throws(WireError) -> SnapshotPart {
        guard m.hasCourse else { throw .missingField("snapshot.course") }
        let course = try course(m.course, "snapshot.course")
        return SnapshotPart(
            course: course,
            chapters: try each(m.chapters, "snapshot.chapters") { (c, p) throws(WireError) in try chapter(c, course: course.id, p()) },
            media: try each(m.media, "snapshot.media") { (f, p) throws(WireError) in try media(f, course: course.id, p()) },
            videos: try each(m.videos, "snapshot.videos") { (v, p) throws(WireError) in try video(v, p()) },
            part: m.part, last: m.last)
    }

    static func wire(_ part: SnapshotPart) -> Coursesync_V1_Snapshot {
        .with {
            $0.course = wire(part.course)
            $0.chapters = part.chapters.map(wire)
            $0.media = part.media.map(wire)
            $0.videos = part.videos.map(wire)
            $0.part = part.part
            $0.last = part.last
        }
    }

    static func diff(_ m: Coursesync_V1_Diff) throws(WireError) -> Diff {
        let course = try id(m.course, "diff.course")
        guard m.hasOrigin else { throw .missingField("diff.origin") }
        let origin = BatchOrigin(clientID: ClientID(try id(m.origin.clientID, "diff.origin.client_id")),
                                 batchSeq: m.origin.batchSeq)
        let changes = ChangeSet(
            chapters: try each(m.chapters, "diff.chapters") { (c, p) throws(WireError) in try chapter(c, course: course, p()) },
            media: try each(m.media, "diff.media") { (f, p) throws(WireError) in try media(f, course: course, p()) },
            videos: try each(m.videos, "diff.videos") { (v, p) throws(WireError) in try video(v, p()) },
            deletedChapters: try each(m.deletedChapters, "diff.deleted_chapters") { (d, p) throws(WireError) in try id(d, p()) },
            deletedVideos: try each(m.deletedVideos, "diff.deleted_videos") { (d, p) throws(WireError) in try id(d, p()) },
            chapterVersions: try each(m.chapterVersions, "diff.chapter_versions") { (v, p) throws(WireError) in
                ChapterVersion(chapterID: try id(v.chapter, p() + ".chapter"), version: v.version)
            })
        return Diff(courseID: course, seq: m.seq, origin: origin, changes: changes)
    }

    static func wire(_ diff: Diff) -> Coursesync_V1_Diff {
        .with {
            $0.course = diff.courseID.data
            $0.seq = diff.seq
            $0.origin = .with {
                $0.clientID = diff.origin.clientID.id.data
                $0.batchSeq = diff.origin.batchSeq
            }
            $0.chapterVersions = diff.changes.chapterVersions.map { entry in
                .with {
                    $0.chapter = entry.chapterID.data
                    $0.version = entry.version
                }
            }
            $0.chapters = diff.changes.chapters.map(wire)
            $0.media = diff.changes.media.map(wire)
            $0.videos = diff.changes.videos.map(wire)
            $0.deletedChapters = diff.changes.deletedChapters.map { $0.data }
            $0.deletedVideos = diff.changes.deletedVideos.map { $0.data }
        }
    }

    // MARK: Ack

    static func ack(_ m: Coursesync_V1_Ack) throws(WireError) -> Ack {
        var idMap: [TempID: EntityID] = [:]
        for (index, mapping) in m.idMap.enumerated() {
            let path = { "ack.id_map[\(index)]" }
            let temp = try temp(mapping.temp, path() + ".temp")
            guard idMap.updateValue(try id(mapping.id, path() + ".id"), forKey: temp) == nil else {
                throw .invalidField(path(), reason: "temp ID \(temp) is mapped twice")
            }
        }
        let notes = try each(m.notes, "ack.notes") { (note, path) throws(WireError) -> ResolutionNote in
            let opIndex = Int(note.opIndex)
            switch note.kind {
            case .anchorMissing(let missing)?:
                return .anchorMissing(opIndex: opIndex, anchor: try ref(missing.anchor, present: missing.hasAnchor, path() + ".anchor_missing.anchor"))
            case .merged(let merged)?:
                return .merged(opIndex: opIndex, temp: try temp(merged.temp, path() + ".merged.temp"),
                               into: try id(merged.video, path() + ".merged.video"))
            case nil:
                throw .missingField(path() + ".kind")
            }
        }
        return Ack(courseID: try id(m.course, "ack.course"), batchSeq: m.batchSeq, seq: m.seq, idMap: idMap, notes: notes)
    }

    static func wire(_ ack: Ack) -> Coursesync_V1_Ack {
        .with {
            $0.course = ack.courseID.data
            $0.batchSeq = ack.batchSeq
            $0.seq = ack.seq
            // Sorted so that equal acks encode to equal bytes (a replayed ack is byte-identical).
            $0.idMap = ack.idMap.sorted { $0.key < $1.key }.map { temp, id in
                .with {
                    $0.temp = temp.rawValue
                    $0.id = id.data
                }
            }
            $0.notes = ack.notes.map { note in
                .with {
                    $0.opIndex = UInt32(note.opIndex)
                    switch note {
                    case .anchorMissing(_, let anchor):
                        $0.anchorMissing = .with { $0.anchor = wire(anchor) }
                    case .merged(_, let temp, let video):
                        $0.merged = .with {
                            $0.temp = temp.rawValue
                            $0.video = video.data
                        }
                    }
                }
            }
        }
    }
}
