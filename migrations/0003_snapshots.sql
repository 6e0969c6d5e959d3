-- CourseSync schema, version 3: periodic snapshots of each course, so that the course as it was at
-- any seq the change log reaches is rebuilt from the nearest snapshot at or before it and at most
-- one interval of diffs. A snapshot is the course encoded as one Snapshot message (every part of
-- it together); it can always be rebuilt from the log, so losing one loses nothing.

CREATE TABLE course_snapshots (
    course_id uuid   NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    seq       bigint NOT NULL CHECK (seq >= 0),
    state     bytea  NOT NULL,
    PRIMARY KEY (course_id, seq)
);
