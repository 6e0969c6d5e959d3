-- CourseSync schema, version 1. Applied by `coursesync migrate` in one transaction and recorded in
-- schema_migrations. Positions are dense 0..n-1 per parent; the unique constraints on them are
-- deferrable because a commit renumbers rows and only the final state must be unique.

CREATE TABLE courses (
    id          uuid PRIMARY KEY,
    title       text   NOT NULL,
    -- The course's commit counter: +1 per committed batch. The row is the per-course lock.
    seq         bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chapters (
    id          uuid PRIMARY KEY,
    course_id   uuid   NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    title       text   NOT NULL,
    position    integer NOT NULL CHECK (position >= 0),
    version     bigint NOT NULL CHECK (version >= 0),
    CONSTRAINT chapters_course_position_key UNIQUE (course_id, position) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE media_files (
    id          uuid PRIMARY KEY,
    course_id   uuid   NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    name        text   NOT NULL,
    cdn_url     text   NOT NULL,
    duration_ms bigint NOT NULL CHECK (duration_ms > 0),
    byte_size   bigint NOT NULL CHECK (byte_size > 0)
);
CREATE INDEX media_files_course_idx ON media_files (course_id);

CREATE TABLE videos (
    id            uuid PRIMARY KEY,
    chapter_id    uuid    NOT NULL REFERENCES chapters (id) ON DELETE CASCADE,
    -- A media file linked anywhere cannot be removed from the library.
    media_file_id uuid    NOT NULL REFERENCES media_files (id) ON DELETE RESTRICT,
    title         text    NOT NULL,
    position      integer NOT NULL CHECK (position >= 0),
    CONSTRAINT videos_chapter_position_key UNIQUE (chapter_id, position) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT videos_chapter_media_key UNIQUE (chapter_id, media_file_id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX videos_media_file_idx ON videos (media_file_id);

-- One row per committed batch, for catch-up: the diff as a protocol Envelope holding the Diff
-- (protobuf; exactly a frame's payload, so catch-up sends it as stored).
-- Old rows are pruned; a subscriber whose cursor is older gets a snapshot.
CREATE TABLE change_log (
    course_id        uuid   NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    seq              bigint NOT NULL CHECK (seq > 0),
    origin_client_id uuid   NOT NULL,
    origin_batch_seq bigint NOT NULL,
    diff             bytea  NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (course_id, seq)
);

-- Exactly-once: every committed batch, with its answer as a protocol Envelope holding the Ack
-- (protobuf), replayed byte for byte on a resend.
-- batch_seq holds the protocol's uint64 as its two's-complement bit pattern.
CREATE TABLE client_batches (
    client_id  uuid   NOT NULL,
    course_id  uuid   NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    batch_seq  bigint NOT NULL,
    seq        bigint NOT NULL,
    ack        bytea  NOT NULL,
    PRIMARY KEY (client_id, course_id, batch_seq)
);

-- Each client's temp IDs and the real IDs they became, so later batches may refer to them.
-- Several temps may map to one entity (a merged duplicate link). temp: uint64 bit pattern.
CREATE TABLE client_temps (
    client_id  uuid   NOT NULL,
    course_id  uuid   NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    temp       bigint NOT NULL,
    entity_id  uuid   NOT NULL,
    PRIMARY KEY (client_id, course_id, temp)
);
