// The page's course state: the server's confirmed state, the page's pending batches, and the
// outline drawn from them. No DOM and no socket here. The rules are in RULES.md beside this file.

import { int, weight } from "./wire.js";

/** The server's rows at `seq`: exactly what snapshots and diffs say, nothing optimistic. */
function emptyConfirmed() {
  return { seq: 0, title: "", chapters: new Map(), media: new Map(), videos: new Map() };
}

export class CourseModel {
  constructor({ clientID, saved }) {
    this.clientID = clientID;
    this.confirmed = emptyConfirmed();
    this.snapshotParts = null; // a snapshot being received
    // Batches not yet reflected in the confirmed state, in batch-seq order:
    // { seq, ops, label, weight, created: [temps], state: "new" | "sent" | "acked", ackSeq, done, clickedAt }
    this.pending = saved?.pending ?? [];
    this.nextBatchSeq = saved?.nextBatchSeq ?? 1;
    this.nextTemp = saved?.nextTemp ?? 1;
    this.tempIDs = new Map(saved?.tempIDs ?? []); // temp -> real ID, from acks
    for (const batch of this.pending) if (batch.state === "sent") batch.state = "new";
  }

  /** What survives a reload of the tab (sessionStorage): identity counters and unanswered batches. */
  saved() {
    return {
      pending: this.pending.filter((batch) => batch.state !== "acked"),
      nextBatchSeq: this.nextBatchSeq,
      nextTemp: this.nextTemp,
      tempIDs: [...this.tempIDs].slice(-5000),
    };
  }

  newTemp() {
    return this.nextTemp++;
  }

  // ---- edits ----------------------------------------------------------------------------------

  /** A new pending batch of `ops` (already using fresh temps). Returns it; the caller sends it. */
  addBatch(ops, label, clickedAt) {
    const batch = {
      seq: this.nextBatchSeq++,
      ops,
      label,
      weight: ops.reduce((sum, op) => sum + weight(op), 0),
      created: ops.flatMap(createdTemps),
      state: "new",
      done: 0,
      clickedAt,
    };
    this.pending.push(batch);
    return batch;
  }

  /** The ops of `batches` again, with fresh temps (a Retry: the same intent as a new batch). */
  remake(batches) {
    const renumbered = new Map();
    const fresh = (temp) => {
      if (!renumbered.has(temp)) renumbered.set(temp, this.newTemp());
      return renumbered.get(temp);
    };
    const ops = batches.flatMap((batch) => batch.ops);
    for (const op of ops) for (const temp of createdTemps(op)) fresh(temp);
    // Every `temp` field (created rows, and references to them) takes the new number.
    return JSON.parse(JSON.stringify(ops), (key, value) =>
      key === "temp" && typeof value === "number" ? (renumbered.get(value) ?? value) : value);
  }

  // ---- server messages ------------------------------------------------------------------------

  /** A snapshot part; the confirmed state is replaced when the last part arrives. */
  snapshot(part) {
    if (int(part.part) === 0 || !this.snapshotParts) this.snapshotParts = [];
    this.snapshotParts.push(part);
    if (!part.last) return;
    const next = emptyConfirmed();
    for (const piece of this.snapshotParts) {
      next.seq = int(piece.course?.seq);
      next.title = piece.course?.title ?? "";
      for (const row of piece.chapters ?? []) next.chapters.set(row.id, chapterRow(row));
      for (const row of piece.media ?? []) next.media.set(row.id, mediaRow(row));
      for (const row of piece.videos ?? []) next.videos.set(row.id, videoRow(row));
    }
    this.snapshotParts = null;
    this.confirmed = next;
    this.settle();
  }

  /** A diff (§3.4). Returns false on a gap: the caller reconnects and resubscribes from the cursor. */
  diff(diff) {
    const seq = int(diff.seq);
    if (seq !== this.confirmed.seq + 1) return false;
    const state = this.confirmed;
    for (const id of diff.deletedVideos ?? []) state.videos.delete(id);
    for (const id of diff.deletedChapters ?? []) state.chapters.delete(id);
    for (const row of diff.chapters ?? []) state.chapters.set(row.id, chapterRow(row));
    for (const row of diff.media ?? []) state.media.set(row.id, mediaRow(row));
    for (const row of diff.videos ?? []) state.videos.set(row.id, videoRow(row));
    for (const { chapter, version } of diff.chapterVersions ?? []) {
      const row = state.chapters.get(chapter);
      if (row) row.version = int(version);
    }
    state.seq = seq;
    // Our own batch, committed on an earlier connection whose Ack was lost: it is in the state now.
    const origin = diff.origin;
    if (origin?.clientId === this.clientID) {
      this.pending = this.pending.filter((batch) => batch.seq !== int(origin.batchSeq));
    }
    this.settle();
    return true;
  }

  /** An Ack: the batch's temps get their real IDs; it stays drawn until its diff is applied. */
  ack(ack) {
    for (const { temp, id } of ack.idMap ?? []) this.tempIDs.set(int(temp), id);
    const batch = this.pending.find((candidate) => candidate.seq === int(ack.batchSeq));
    if (!batch) return null;
    batch.state = "acked";
    batch.ackSeq = int(ack.seq);
    batch.done = batch.weight;
    this.settle();
    return batch;
  }

  /**
   * A Reject: the batch and every pending batch that uses its temps are rolled back. Returns the
   * rolled-back batches (the first is the rejected one), or [] for an answer to nothing pending.
   */
  reject(reject) {
    const index = this.pending.findIndex((batch) => batch.seq === int(reject.batchSeq));
    if (index < 0) return [];
    const dropped = [this.pending[index]];
    const lost = new Set(this.pending[index].created);
    for (const batch of this.pending.slice(index + 1)) {
      if (batch.ops.some((op) => usedTemps(op).some((temp) => lost.has(temp)))) {
        dropped.push(batch);
        for (const temp of batch.created) lost.add(temp);
      }
    }
    this.pending = this.pending.filter((batch) => !dropped.includes(batch));
    return dropped;
  }

  progress(progress) {
    const batch = this.pending.find((candidate) => candidate.seq === int(progress.batchSeq));
    if (batch && batch.state !== "acked") {
      batch.done = Math.max(batch.done, int(progress.done));
      batch.queued = true;
    }
  }

  /** Acked batches whose commit the confirmed state now holds are no longer drawn on top of it. */
  settle() {
    this.pending = this.pending.filter((batch) => !(batch.state === "acked" && batch.ackSeq <= this.confirmed.seq));
  }

  /** Batches to (re)send on a new connection, in order. */
  unanswered() {
    return this.pending.filter((batch) => batch.state !== "acked");
  }

  // ---- the outline drawn ----------------------------------------------------------------------

  /**
   * The outline the page shows: the confirmed state with every pending batch applied on top, in
   * batch order. Rows a pending op created or changed are marked `pending`.
   */
  outline() {
    const chapters = [...this.confirmed.chapters.values()]
      .sort((a, b) => a.position - b.position)
      .map((row) => ({ key: row.id, title: row.title, pending: false, videos: [] }));
    const byKey = new Map(chapters.map((chapter) => [chapter.key, chapter]));
    for (const video of [...this.confirmed.videos.values()].sort((a, b) => a.position - b.position)) {
      byKey.get(video.chapter)?.videos.push({ key: video.id, media: video.mediaFile, title: video.title, pending: false });
    }
    const media = [...this.confirmed.media.values()].map((row) => ({ key: row.id, name: row.name, durationMs: row.durationMs, pending: false }))
      .sort((a, b) => a.name.localeCompare(b.name));
    const view = { title: this.confirmed.title, seq: this.confirmed.seq, chapters, media, aliases: new Map() };
    for (const batch of this.pending) for (const op of batch.ops) applyOptimistically(view, op, this);
    return view;
  }
}

function chapterRow(row) {
  return { id: row.id, title: row.title ?? "", position: row.position ?? 0, version: int(row.version) };
}

function mediaRow(row) {
  return { id: row.id, name: row.name ?? "", cdnUrl: row.cdnUrl ?? "", durationMs: int(row.durationMs), byteSize: int(row.byteSize) };
}

function videoRow(row) {
  return { id: row.id, chapter: row.chapter, mediaFile: row.mediaFile, title: row.title ?? "", position: row.position ?? 0 };
}

/** The temps an op creates. */
export function createdTemps(op) {
  if (op.createChapter) return [op.createChapter.temp];
  if (op.registerMedia) return [op.registerMedia.temp];
  if (op.linkMedia) return op.linkMedia.items.map((item) => item.temp);
  return [];
}

/** The temps an op refers to (not those it creates). */
function usedTemps(op) {
  const body = Object.values(op)[0];
  const refs = [body.chapter, body.video, body.toChapter, body.placement?.after, body.placement?.before,
    ...(body.items ?? []).map((item) => item.media)];
  return refs.filter((ref) => ref?.temp !== undefined).map((ref) => ref.temp);
}

/** The key a reference has in the drawn outline: a real ID, an acked temp's ID, or "temp:N". */
function keyOf(ref, model, view) {
  if (!ref) return undefined;
  if (ref.id !== undefined) return ref.id;
  const key = model.tempIDs.get(ref.temp) ?? `temp:${ref.temp}`;
  return view.aliases.get(key) ?? key;
}

function findVideo(view, key) {
  for (const chapter of view.chapters) {
    const index = chapter.videos.findIndex((video) => video.key === key);
    if (index >= 0) return { chapter, index, video: chapter.videos[index] };
  }
  return null;
}

/** Inserts `rows` into `list` at `placement`; a missing anchor puts them at the end (§7.1). */
function place(list, rows, placement, model, view) {
  let index = list.length;
  if (placement?.atStart) index = 0;
  const anchor = placement?.after ?? placement?.before;
  if (anchor) {
    const found = list.findIndex((row) => row.key === keyOf(anchor, model, view));
    if (found >= 0) index = placement.after ? found + 1 : found;
  }
  list.splice(index, 0, ...rows);
}

/**
 * One pending op on the drawn outline: the server's rules where the page can know them, and a
 * skip where it cannot (an op on a row that is gone draws nothing; the server's answer decides).
 */
export function applyOptimistically(view, op, model) {
  const [kind, body] = Object.entries(op)[0];
  switch (kind) {
    case "createChapter": {
      const key = keyOf({ temp: body.temp }, model, view);
      if (view.chapters.some((chapter) => chapter.key === key)) return;
      place(view.chapters, [{ key, title: body.title.trim(), pending: true, videos: [] }], body.placement, model, view);
      return;
    }
    case "renameChapter": {
      const chapter = view.chapters.find((row) => row.key === keyOf(body.chapter, model, view));
      if (chapter) Object.assign(chapter, { title: body.title.trim(), pending: true });
      return;
    }
    case "moveChapter": {
      const index = view.chapters.findIndex((row) => row.key === keyOf(body.chapter, model, view));
      if (index < 0) return;
      const [chapter] = view.chapters.splice(index, 1);
      chapter.pending = true;
      place(view.chapters, [chapter], body.placement, model, view);
      return;
    }
    case "deleteChapter": {
      view.chapters = view.chapters.filter((row) => row.key !== keyOf(body.chapter, model, view));
      return;
    }
    case "registerMedia": {
      const key = keyOf({ temp: body.temp }, model, view);
      if (!view.media.some((row) => row.key === key)) {
        const row = { key, name: body.name.trim(), durationMs: Number(body.durationMs ?? 0), pending: true };
        const index = view.media.findIndex((other) => other.name.localeCompare(row.name) > 0);
        view.media.splice(index < 0 ? view.media.length : index, 0, row);
      }
      return;
    }
    case "linkMedia": {
      const chapter = view.chapters.find((row) => row.key === keyOf(body.chapter, model, view));
      if (!chapter) return;
      const run = [];
      for (const item of body.items) {
        const mediaKey = keyOf(item.media, model, view);
        const media = view.media.find((row) => row.key === mediaKey);
        const key = keyOf({ temp: item.temp }, model, view);
        // The same media file twice in a chapter is one video (§7.3): the temp is that video.
        const existing = [...chapter.videos, ...run].find((video) => video.media === mediaKey);
        if (existing) {
          view.aliases.set(key, existing.key);
          continue;
        }
        if (!media || findVideo(view, key)) continue;
        run.push({ key, media: mediaKey, title: (item.title ?? media.name).trim(), pending: true });
      }
      place(chapter.videos, run, body.placement, model, view);
      return;
    }
    case "moveVideo": {
      const found = findVideo(view, keyOf(body.video, model, view));
      const target = view.chapters.find((row) => row.key === keyOf(body.toChapter, model, view));
      if (!found || !target) return;
      if (target !== found.chapter && target.videos.some((video) => video.media === found.video.media)) return;
      found.chapter.videos.splice(found.index, 1);
      found.video.pending = true;
      place(target.videos, [found.video], body.placement, model, view);
      return;
    }
    case "renameVideo": {
      const found = findVideo(view, keyOf(body.video, model, view));
      if (found) Object.assign(found.video, { title: body.title.trim(), pending: true });
      return;
    }
    case "unlinkVideo": {
      const found = findVideo(view, keyOf(body.video, model, view));
      if (found) found.chapter.videos.splice(found.index, 1);
      return;
    }
  }
}

// ---- undo -----------------------------------------------------------------------------------------
//
// Undo as intent, as the Swift model computes it (CourseState.inverse(of:)): each op's inverse
// against the outline just before it, sent as a new batch the server resolves like any other.

/** The reference an op uses for a row drawn under `key`: a real ID, or the temp of an unacked row. */
export function refOf(key) {
  return key.startsWith("temp:") ? { temp: Number(key.slice(5)) } : { id: key };
}

/**
 * The ops that take back `op` as it applies to `view` (model.outline() just before it), and the
 * rows they make again under new temps (key → temp); null if `op` names a row the view lacks.
 */
export function inverseOf(op, view, model, newTemp) {
  const [kind, body] = Object.entries(op)[0];
  const key = (ref) => keyOf(ref, model, view);
  const chapterAt = (ref) => view.chapters.find((chapter) => chapter.key === key(ref));
  const before = (list, index) => (index > 0 ? { after: refOf(list[index - 1].key) } : { atStart: {} });
  switch (kind) {
    case "createChapter":
      return { ops: [{ deleteChapter: { chapter: { temp: body.temp } } }], recreated: new Map() };
    case "renameChapter": {
      const chapter = chapterAt(body.chapter);
      return chapter ? { ops: [{ renameChapter: { chapter: refOf(chapter.key), title: chapter.title } }], recreated: new Map() } : null;
    }
    case "moveChapter": {
      const index = view.chapters.findIndex((chapter) => chapter.key === key(body.chapter));
      if (index < 0) return null;
      return { ops: [{ moveChapter: { chapter: refOf(view.chapters[index].key), placement: before(view.chapters, index) } }], recreated: new Map() };
    }
    case "deleteChapter": {
      const index = view.chapters.findIndex((chapter) => chapter.key === key(body.chapter));
      if (index < 0) return null;
      const chapter = view.chapters[index];
      const temp = newTemp();
      const recreated = new Map([[chapter.key, temp]]);
      const ops = [{ createChapter: { temp, title: chapter.title, placement: before(view.chapters, index) } }];
      if (chapter.videos.length > 0) {
        const items = chapter.videos.map((video) => {
          const item = { temp: newTemp(), media: refOf(video.media), title: video.title };
          recreated.set(video.key, item.temp);
          return item;
        });
        ops.push({ linkMedia: { chapter: { temp }, items, placement: { atEnd: {} } } });
      }
      return { ops, recreated };
    }
    case "registerMedia":
      return { ops: [], recreated: new Map() }; // nothing removes a media file from the library
    case "linkMedia": {
      const chapter = chapterAt(body.chapter);
      if (!chapter) return null;
      const linked = new Set(chapter.videos.map((video) => video.media));
      const ops = [];
      for (const item of body.items) {
        const media = key(item.media);
        if (linked.has(media)) continue; // merged into the video the chapter holds
        linked.add(media);
        ops.unshift({ unlinkVideo: { video: { temp: item.temp } } });
      }
      return { ops, recreated: new Map() };
    }
    case "moveVideo": {
      const found = findVideo(view, key(body.video));
      if (!found) return null;
      return { ops: [{ moveVideo: { video: refOf(found.video.key), toChapter: refOf(found.chapter.key), placement: before(found.chapter.videos, found.index) } }],
        recreated: new Map() };
    }
    case "renameVideo": {
      const found = findVideo(view, key(body.video));
      return found ? { ops: [{ renameVideo: { video: refOf(found.video.key), title: found.video.title } }], recreated: new Map() } : null;
    }
    case "unlinkVideo": {
      const found = findVideo(view, key(body.video));
      if (!found) return null;
      const temp = newTemp();
      return { ops: [{ linkMedia: { chapter: refOf(found.chapter.key), items: [{ temp, media: refOf(found.video.media), title: found.video.title }],
        placement: before(found.chapter.videos, found.index) } }], recreated: new Map([[found.video.key, temp]]) };
    }
  }
  return null;
}

/**
 * The undo of `ops` (a batch about to be added to `model`): each op's inverse against the outline
 * as the ops before it leave it, last op's first, re-created rows named by their new temps.
 * null if an op names a row the outline lacks.
 */
export function undoOf(ops, model, newTemp) {
  const view = model.outline();
  const inverses = [];
  for (const op of ops) {
    const inverse = inverseOf(op, view, model, newTemp);
    if (!inverse) return null;
    inverses.push(inverse);
    applyOptimistically(view, op, model);
  }
  const renamed = new Map();
  const undo = [];
  for (const inverse of inverses.reverse()) {
    for (const op of inverse.ops) undo.push(renameRefs(op, (ref) => {
      const temp = renamed.get(ref.id ?? `temp:${ref.temp}`);
      return temp === undefined ? ref : { temp };
    }));
    for (const [key, temp] of inverse.recreated) renamed.set(key, temp);
  }
  return undo;
}

/** `op` with every reference (an object that is only `{id}` or only `{temp}`) passed through `map`. */
function renameRefs(op, map) {
  const walk = (value) => {
    if (Array.isArray(value)) return value.map(walk);
    if (value === null || typeof value !== "object") return value;
    const keys = Object.keys(value);
    if (keys.length === 1 && (keys[0] === "id" || keys[0] === "temp")) return map(value);
    return Object.fromEntries(keys.map((name) => [name, walk(value[name])]));
  };
  return walk(op);
}
