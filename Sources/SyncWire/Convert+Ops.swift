import Foundation
import SyncModel

extension Convert {
    /// Decodes a `Push`. Structural problems (a missing required field, an ID of the wrong size)
    /// are protocol violations and throw as such; content problems a person could have caused
    /// (text that is not UTF-8) reject only this batch, via ``WireError/invalidBatch(courseID:batchSeq:rejection:)``.
    static func push(_ m: Coursesync_V1_Push) throws(WireError) -> Push {
        let course = try id(m.course, "push.course")
        guard m.batchSeq != 0 else { throw .missingField("push.batch_seq") }
        var ops: [SyncModel.Operation] = []
        ops.reserveCapacity(m.ops.count)
        for (index, op) in m.ops.enumerated() {
            var badText: BadText?
            ops.append(try operation(op, "push.ops[\(index)]", badText: &badText))
            if let badText {
                throw .invalidBatch(courseID: course, batchSeq: m.batchSeq,
                                    rejection: Rejection(badText.code, opIndex: index, "\(badText.field) is not valid UTF-8"))
            }
        }
        return Push(courseID: course, batchSeq: m.batchSeq, baseSeq: m.baseSeq, ops: ops)
    }

    /// The first text field of an operation that is not UTF-8, and the code that rejects it.
    struct BadText {
        var code: ErrorCode
        var field: String
    }

    /// `data` as UTF-8 text; if it is not, records the problem in `badText` (first one wins).
    private static func text(_ data: Data, _ code: ErrorCode, _ field: String, _ badText: inout BadText?) -> String {
        if let text = String(validating: data, as: UTF8.self) { return text }
        if badText == nil { badText = BadText(code: code, field: field) }
        return ""
    }

    static func operation(_ op: Coursesync_V1_Op, _ path: @autoclosure () -> String, badText: inout BadText?) throws(WireError) -> SyncModel.Operation {
        guard let kind = op.kind else { throw .missingField(path() + ".kind") }
        switch kind {
        case .createChapter(let m):
            func p() -> String { path() + ".create_chapter" }
            return .createChapter(temp: try temp(m.temp, p() + ".temp"),
                                  title: text(m.title, .invalidTitle, "the chapter title", &badText),
                                  placement: try placement(m.placement, present: m.hasPlacement, p() + ".placement"))
        case .renameChapter(let m):
            return .renameChapter(try ref(m.chapter, present: m.hasChapter, path() + ".rename_chapter.chapter"),
                                  title: text(m.title, .invalidTitle, "the chapter title", &badText))
        case .moveChapter(let m):
            func p() -> String { path() + ".move_chapter" }
            return .moveChapter(try ref(m.chapter, present: m.hasChapter, p() + ".chapter"),
                                placement: try placement(m.placement, present: m.hasPlacement, p() + ".placement"))
        case .deleteChapter(let m):
            return .deleteChapter(try ref(m.chapter, present: m.hasChapter, path() + ".delete_chapter.chapter"))
        case .registerMedia(let m):
            return .registerMedia(temp: try temp(m.temp, path() + ".register_media.temp"),
                                  name: text(m.name, .invalidTitle, "the media name", &badText),
                                  cdnURL: text(m.cdnURL, .invalidMedia, "the CDN URL", &badText),
                                  durationMs: m.durationMs, byteSize: m.byteSize)
        case .linkMedia(let m):
            func p() -> String { path() + ".link_media" }
            let chapter = try ref(m.chapter, present: m.hasChapter, p() + ".chapter")
            let placement = try placement(m.placement, present: m.hasPlacement, p() + ".placement")
            var items: [LinkItem] = []
            items.reserveCapacity(m.items.count)
            for (itemIndex, item) in m.items.enumerated() {
                func ip() -> String { "\(p()).items[\(itemIndex)]" }
                items.append(LinkItem(temp: try temp(item.temp, ip() + ".temp"),
                                      media: try ref(item.media, present: item.hasMedia, ip() + ".media"),
                                      title: item.hasTitle ? text(item.title, .invalidTitle, "the video title", &badText) : nil))
            }
            return .linkMedia(chapter: chapter, items: items, placement: placement)
        case .moveVideo(let m):
            func p() -> String { path() + ".move_video" }
            return .moveVideo(try ref(m.video, present: m.hasVideo, p() + ".video"),
                              toChapter: try ref(m.toChapter, present: m.hasToChapter, p() + ".to_chapter"),
                              placement: try placement(m.placement, present: m.hasPlacement, p() + ".placement"))
        case .renameVideo(let m):
            return .renameVideo(try ref(m.video, present: m.hasVideo, path() + ".rename_video.video"),
                                title: text(m.title, .invalidTitle, "the video title", &badText))
        case .unlinkVideo(let m):
            return .unlinkVideo(try ref(m.video, present: m.hasVideo, path() + ".unlink_video.video"))
        }
    }

    static func wire(_ push: Push) -> Coursesync_V1_Push {
        .with {
            $0.course = push.courseID.data
            $0.batchSeq = push.batchSeq
            $0.baseSeq = push.baseSeq
            $0.ops = push.ops.map(wire)
        }
    }

    static func wire(_ op: SyncModel.Operation) -> Coursesync_V1_Op {
        .with {
            switch op {
            case .createChapter(let temp, let title, let placement):
                $0.createChapter = .with {
                    $0.temp = temp.rawValue
                    $0.title = Data(title.utf8)
                    $0.placement = wire(placement)
                }
            case .renameChapter(let ref, let title):
                $0.renameChapter = .with {
                    $0.chapter = wire(ref)
                    $0.title = Data(title.utf8)
                }
            case .moveChapter(let ref, let placement):
                $0.moveChapter = .with {
                    $0.chapter = wire(ref)
                    $0.placement = wire(placement)
                }
            case .deleteChapter(let ref):
                $0.deleteChapter = .with { $0.chapter = wire(ref) }
            case .registerMedia(let temp, let name, let cdnURL, let durationMs, let byteSize):
                $0.registerMedia = .with {
                    $0.temp = temp.rawValue
                    $0.name = Data(name.utf8)
                    $0.cdnURL = Data(cdnURL.utf8)
                    $0.durationMs = durationMs
                    $0.byteSize = byteSize
                }
            case .linkMedia(let chapter, let items, let placement):
                $0.linkMedia = .with {
                    $0.chapter = wire(chapter)
                    $0.items = items.map { item in
                        .with {
                            $0.temp = item.temp.rawValue
                            $0.media = wire(item.media)
                            if let title = item.title { $0.title = Data(title.utf8) }
                        }
                    }
                    $0.placement = wire(placement)
                }
            case .moveVideo(let ref, let chapter, let placement):
                $0.moveVideo = .with {
                    $0.video = wire(ref)
                    $0.toChapter = wire(chapter)
                    $0.placement = wire(placement)
                }
            case .renameVideo(let ref, let title):
                $0.renameVideo = .with {
                    $0.video = wire(ref)
                    $0.title = Data(title.utf8)
                }
            case .unlinkVideo(let ref):
                $0.unlinkVideo = .with { $0.video = wire(ref) }
            }
        }
    }
}
