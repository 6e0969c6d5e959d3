import SyncModel

// The model types an app meets in the client's API, so that `import SyncClient` is all it needs.

/// A row's server ID: a UUID (16 bytes).
public typealias EntityID = SyncModel.EntityID
/// A replica's ID as the server knows it (one per replica file).
public typealias ClientID = SyncModel.ClientID
/// A temporary ID a replica gives a row it creates, until the server's ID is known.
public typealias TempID = SyncModel.TempID
/// A reference to a row in an operation: its server ID, or the temp ID of a row not yet acknowledged.
public typealias Ref = SyncModel.Ref
/// The course's commit counter: every commit is one seq, in order.
public typealias CourseSeq = SyncModel.CourseSeq
/// A replica's own batch counter.
public typealias BatchSeq = SyncModel.BatchSeq
/// Why the server refused a batch or a connection (the protocol's error codes).
public typealias ErrorCode = SyncModel.ErrorCode
/// A refused batch's code, message and failing op.
public typealias Rejection = SyncModel.Rejection
/// How the server resolved a conflict in an accepted batch.
public typealias ResolutionNote = SyncModel.ResolutionNote
