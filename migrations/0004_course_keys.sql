-- CourseSync schema, version 4: every table keyed by its course, so that the schema can be
-- distributed by course_id (docs/scaling.md). Chapters and media files are keyed (course_id, id);
-- videos gain a course_id, are keyed (course_id, id), and refer to their chapter and media file
-- through keys that carry the course, so no row can refer to another course's rows and every
-- statement of the commit, load and catch-up paths names the one course it touches.

ALTER TABLE videos ADD COLUMN course_id uuid;
UPDATE videos v SET course_id = c.course_id FROM chapters c WHERE c.id = v.chapter_id;
ALTER TABLE videos ALTER COLUMN course_id SET NOT NULL;

ALTER TABLE videos
    DROP CONSTRAINT videos_chapter_id_fkey,
    DROP CONSTRAINT videos_media_file_id_fkey,
    DROP CONSTRAINT videos_pkey,
    DROP CONSTRAINT videos_chapter_position_key,
    DROP CONSTRAINT videos_chapter_media_key;
DROP INDEX videos_media_file_idx;

ALTER TABLE chapters DROP CONSTRAINT chapters_pkey, ADD PRIMARY KEY (course_id, id);
ALTER TABLE media_files DROP CONSTRAINT media_files_pkey, ADD PRIMARY KEY (course_id, id);
-- The primary key leads with course_id now.
DROP INDEX media_files_course_idx;

ALTER TABLE videos
    ADD PRIMARY KEY (course_id, id),
    ADD CONSTRAINT videos_chapter_fkey FOREIGN KEY (course_id, chapter_id)
        REFERENCES chapters (course_id, id) ON DELETE CASCADE,
    -- A media file linked anywhere cannot be removed from the library.
    ADD CONSTRAINT videos_media_file_fkey FOREIGN KEY (course_id, media_file_id)
        REFERENCES media_files (course_id, id) ON DELETE RESTRICT,
    ADD CONSTRAINT videos_chapter_position_key UNIQUE (course_id, chapter_id, position) DEFERRABLE INITIALLY DEFERRED,
    ADD CONSTRAINT videos_chapter_media_key UNIQUE (course_id, chapter_id, media_file_id) DEFERRABLE INITIALLY DEFERRED;
-- No statement deletes a media file (nothing in the protocol removes one; courses are not
-- deleted), so the index that only served the restrict check of such a delete goes: every video
-- written maintained it. Should one be deleted, the check reads the course's videos by the
-- course prefix of videos_chapter_media_key.
