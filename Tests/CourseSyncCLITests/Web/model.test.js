// The page's course model without a browser (node --test): optimistic drawing, confirmation,
// exact rollback, gaps, reloads. Run by WebModelTests.swift beside the page's modules and the
// limits module the server generates.

import { test } from "node:test";
import assert from "node:assert/strict";
import { CourseModel, undoOf } from "./model.js";
import { MAX_VIDEOS_PER_CHAPTER, PERMANENT_REFUSALS } from "./limits.js";

const ME = "client-me";

/** A model holding a course at seq 3 with one chapter ("c1": "Intro", one video "v1") and two media files. */
function modelWithCourse() {
  const model = new CourseModel({ clientID: ME });
  model.snapshot({
    part: 0, last: true,
    course: { title: "Course", seq: "3" },
    chapters: [{ id: "c1", title: "Intro", position: 0, version: "1" }],
    media: [{ id: "m1", name: "a.mp4" }, { id: "m2", name: "b.mp4" }],
    videos: [{ id: "v1", chapter: "c1", mediaFile: "m1", title: "A", position: 0 }],
  });
  return model;
}

const titles = (view) => view.chapters.map((chapter) => `${chapter.title}${chapter.pending ? "*" : ""}`);

test("an edit is drawn at once, pending, and confirmed by its ack and diff", () => {
  const model = modelWithCourse();
  const batch = model.addBatch([{ createChapter: { temp: model.newTemp(), title: " Outro ", placement: { atEnd: {} } } }], "add", 0);
  assert.deepEqual(titles(model.outline()), ["Intro", "Outro*"]);
  model.ack({ batchSeq: String(batch.seq), seq: "4", idMap: [{ temp: "1", id: "c2" }] });
  // Acked but not yet in the confirmed state: still drawn on top, under its real ID.
  assert.deepEqual(titles(model.outline()), ["Intro", "Outro*"]);
  assert.equal(model.outline().chapters[1].key, "c2");
  assert.equal(model.diff({ seq: "4", chapters: [{ id: "c2", title: "Outro", position: 1, version: "1" }] }), true);
  assert.deepEqual(titles(model.outline()), ["Intro", "Outro"]);
  assert.equal(model.pending.length, 0);
});

test("a rejected batch rolls back with every later batch that used what it created, and nothing else", () => {
  const model = modelWithCourse();
  const chapterTemp = model.newTemp();
  const first = model.addBatch([{ createChapter: { temp: chapterTemp, title: "New", placement: { atEnd: {} } } }], "add", 0);
  model.addBatch([{ linkMedia: { chapter: { temp: chapterTemp }, items: [{ temp: model.newTemp(), media: { id: "m2" } }], placement: { atEnd: {} } } }], "link", 0);
  model.addBatch([{ renameChapter: { chapter: { id: "c1" }, title: "Welcome" } }], "rename", 0);
  assert.deepEqual(titles(model.outline()), ["Welcome*", "New*"]);
  const dropped = model.reject({ batchSeq: String(first.seq), rejection: { code: "INVALID_TITLE" } });
  assert.deepEqual(dropped.map((batch) => batch.label), ["add", "link"]);
  assert.deepEqual(titles(model.outline()), ["Welcome*"]);
  assert.deepEqual(model.outline().chapters[0].videos.map((video) => video.key), ["v1"]);
});

test("a diff after a gap is refused and changes nothing", () => {
  const model = modelWithCourse();
  assert.equal(model.diff({ seq: "5", deletedChapters: ["c1"] }), false);
  assert.equal(model.confirmed.seq, 3);
  assert.deepEqual(titles(model.outline()), ["Intro"]);
});

test("a media file linked twice into one chapter is one video", () => {
  const model = modelWithCourse();
  model.addBatch([{ linkMedia: { chapter: { id: "c1" }, items: [{ temp: model.newTemp(), media: { id: "m1" } }, { temp: model.newTemp(), media: { id: "m2" } },
    { temp: model.newTemp(), media: { id: "m2" } }], placement: { atEnd: {} } } }], "link", 0);
  assert.deepEqual(model.outline().chapters[0].videos.map((video) => video.media), ["m1", "m2"]);
});

test("our own batch seen in a diff (its ack lost with a connection) is no longer pending", () => {
  const model = modelWithCourse();
  const batch = model.addBatch([{ renameChapter: { chapter: { id: "c1" }, title: "Start" } }], "rename", 0);
  batch.state = "sent";
  model.diff({ seq: "4", chapters: [{ id: "c1", title: "Start", position: 0, version: "2" }], origin: { clientId: ME, batchSeq: String(batch.seq) } });
  assert.equal(model.pending.length, 0);
  assert.deepEqual(titles(model.outline()), ["Start"]);
});

test("a reload keeps unanswered batches, to be sent again, and the counters", () => {
  const model = modelWithCourse();
  const batch = model.addBatch([{ createChapter: { temp: model.newTemp(), title: "Kept", placement: { atStart: {} } } }], "add", 0);
  batch.state = "sent";
  const reloaded = new CourseModel({ clientID: ME, saved: JSON.parse(JSON.stringify(model.saved())) });
  assert.deepEqual(reloaded.unanswered().map((pending) => [pending.seq, pending.state]), [[batch.seq, "new"]]);
  assert.equal(reloaded.nextBatchSeq, model.nextBatchSeq);
  assert.equal(reloaded.newTemp(), model.newTemp());
});

test("the limits module carries the server's permanent refusals and limits", () => {
  for (const code of ["UNAUTHENTICATED", "TOKEN_EXPIRED", "FORBIDDEN", "UNKNOWN_COURSE", "UNSUPPORTED_PROTOCOL_VERSION"]) {
    assert.ok(PERMANENT_REFUSALS.has(code), code);
  }
  for (const code of ["RATE_LIMITED", "SHUTTING_DOWN", "SLOW_CONSUMER", "INTERNAL_ERROR"]) assert.ok(!PERMANENT_REFUSALS.has(code), code);
  assert.equal(MAX_VIDEOS_PER_CHAPTER, 500);
});

/** The outline's shape: chapters in order with their videos (media and title), keys aside. */
const shape = (model) => model.outline().chapters.map((chapter) => `${chapter.title}: ${chapter.videos.map((video) => `${video.media}=${video.title}`).join(",")}`);

test("each edit's undo, drawn on top of it, gives back the outline it changed", () => {
  const edits = [
    (model) => [{ createChapter: { temp: model.newTemp(), title: "New", placement: { atStart: {} } } }],
    () => [{ renameChapter: { chapter: { id: "c1" }, title: "Renamed" } }],
    (model) => [{ linkMedia: { chapter: { id: "c1" }, items: [{ temp: model.newTemp(), media: { id: "m2" } }, { temp: model.newTemp(), media: { id: "m1" } }], placement: { atStart: {} } } }],
    () => [{ renameVideo: { video: { id: "v1" }, title: "Retitled" } }],
    () => [{ unlinkVideo: { video: { id: "v1" } } }],
    () => [{ deleteChapter: { chapter: { id: "c1" } } }],
    (model) => {
      const temp = model.newTemp();
      return [{ createChapter: { temp, title: "Second", placement: { atEnd: {} } } },
        { moveVideo: { video: { id: "v1" }, toChapter: { temp }, placement: { atEnd: {} } } },
        { renameVideo: { video: { id: "v1" }, title: "Moved" } }];
    },
    (model) => [{ linkMedia: { chapter: { id: "c1" }, items: [{ temp: model.newTemp(), media: { id: "m2" } }], placement: { atEnd: {} } } },
      { unlinkVideo: { video: { id: "v1" } } }, { deleteChapter: { chapter: { id: "c1" } } }],
  ];
  for (const make of edits) {
    const model = modelWithCourse();
    const original = shape(model);
    const ops = make(model);
    const undo = undoOf(ops, model, () => model.newTemp());
    model.addBatch(ops, "edit", 0);
    assert.notDeepEqual(shape(model), original, JSON.stringify(ops));
    model.addBatch(undo, "undo", 0);
    assert.deepEqual(shape(model), original, `${JSON.stringify(ops)} undone by ${JSON.stringify(undo)}`);
  }
});

test("an edit naming a row that is not drawn has no undo", () => {
  const model = modelWithCourse();
  assert.equal(undoOf([{ renameVideo: { video: { id: "gone" } , title: "x" } }], model, () => model.newTemp()), null);
});
