/// Every hard limit of the system, in one place. Each is enforced where input arrives and tested
/// at the boundary: at the limit passes, one past it is refused with its code.
public enum Limits {
    /// The most operations a batch may carry; a `linkMedia` counts once per item (``Operation/weight``).
    public static let maxOpsPerBatch = 1_000

    /// The longest title or media name, in Unicode code points after trimming white space.
    public static let maxTitleLength = 500
    /// The most UTF-8 bytes a title or name may have as sent, before trimming.
    public static let maxTextBytes = 4 * maxTitleLength
    /// The longest CDN URL, in UTF-8 bytes.
    public static let maxURLBytes = 2_048
    /// The longest media duration: one day.
    public static let maxDurationMs: UInt64 = 86_400_000
    /// The largest media file: 1 TiB.
    public static let maxMediaBytes: UInt64 = 1 << 40

    public static let maxChaptersPerCourse = 200
    public static let maxVideosPerChapter = 500
    public static let maxVideosPerCourse = 10_000
    public static let maxMediaFilesPerCourse = 10_000

    /// The largest frame a client may send (payload bytes, after the 4-byte length). A batch of
    /// `maxOpsPerBatch` operations with every text field at its limit fits.
    public static let maxClientFrameBytes = 8 << 20
    /// The largest frame a server accepts before the handshake is complete (a `Hello`).
    public static let maxHandshakeFrameBytes = 64 << 10
    /// The largest frame a server sends. The largest possible diff (every video of a full course
    /// rewritten, plus a batch of media registrations) fits; snapshots are split into parts.
    public static let maxServerFrameBytes = 32 << 20
    /// Snapshot parts are cut at about this many payload bytes.
    public static let snapshotPartBytes = 1 << 20

    /// Batches with more operations than this get `Progress` frames while they are applied.
    public static let progressThresholdOps = 100
}
