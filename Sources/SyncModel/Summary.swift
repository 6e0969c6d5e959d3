/// One line saying what a batch did, in the words a course's history shows ("linked 3 videos into
/// “Lectures”"), computed when the batch commits, against the course as it was just before it.
extension CourseState {
    /// What `ops` do to this state: the first two operations in words, then how many more.
    /// `knownTemps`: the author's temp IDs of earlier batches (rows this batch names by temp).
    public func summary(of ops: [Operation], knownTemps: [TempID: EntityID] = [:]) -> String {
        var createdChapters: [TempID: String] = [:]
        for case .createChapter(let temp, let title, _) in ops { createdChapters[temp] = title }
        func id(_ ref: Ref) -> EntityID? {
            switch ref {
            case .id(let id): id
            case .temp(let temp): knownTemps[temp]
            }
        }
        func quoted(_ text: String) -> String { "“" + (text.count > 60 ? text.prefix(59) + "…" : Substring(text)) + "”" }
        func chapter(_ ref: Ref) -> String {
            if case .temp(let temp) = ref, let title = createdChapters[temp] { return quoted(title) }
            return id(ref).flatMap { chapters[$0] }.map { quoted($0.title) } ?? "a chapter"
        }
        func video(_ ref: Ref) -> String { id(ref).flatMap { self.videos[$0] }.map { quoted($0.title) } ?? "a video" }
        func count(_ number: Int) -> String { number == 1 ? "1 video" : "\(number) videos" }

        func phrase(_ op: Operation) -> String {
            switch op {
            case .createChapter(_, let title, _): "added chapter \(quoted(title))"
            case .renameChapter(let ref, let title): "renamed chapter \(chapter(ref)) to \(quoted(title))"
            case .moveChapter(let ref, _): "moved chapter \(chapter(ref))"
            case .deleteChapter(let ref):
                "deleted chapter \(chapter(ref))" + (id(ref).map { " (\(count(self.videos(in: $0).count)))" } ?? "")
            case .registerMedia(_, let name, _, _, _): "registered \(quoted(name))"
            case .linkMedia(let ref, let items, _): "linked \(count(items.count)) into \(chapter(ref))"
            case .moveVideo(let ref, let to, _): "moved \(video(ref)) to \(chapter(to))"
            case .renameVideo(let ref, let title): "renamed \(video(ref)) to \(quoted(title))"
            case .unlinkVideo(let ref):
                "unlinked \(video(ref))" + (id(ref).flatMap { self.videos[$0] }.map { " from \(chapter(.id($0.chapterID)))" } ?? "")
            }
        }
        // A run of the same kind reads as one phrase ("unlinked 10 videos").
        if ops.count > 2, let first = ops.first, ops.allSatisfy({ $0.kind == first.kind }) {
            switch first {
            case .unlinkVideo: return "unlinked \(count(ops.count))"
            case .renameVideo: return "renamed \(count(ops.count))"
            case .moveVideo: return "moved \(count(ops.count))"
            case .registerMedia: return "registered \(ops.count) media files"
            case .createChapter: return "added \(ops.count) chapters"
            default: break
            }
        }
        let shown = ops.prefix(2).map(phrase).joined(separator: "; ")
        return ops.count > 2 ? shown + "; and \(ops.count - 2) more" : shown
    }
}
