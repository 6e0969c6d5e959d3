-- CourseSync schema, version 2: each commit's author (the token's subject) and what it did, in
-- words, for the course's history. Commits made before this migration have neither (empty).

ALTER TABLE change_log ADD COLUMN author text NOT NULL DEFAULT '';
ALTER TABLE change_log ADD COLUMN summary text NOT NULL DEFAULT '';
