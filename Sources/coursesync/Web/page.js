// The live course editor: wires the connection, the model and the view. The page is opened as
//   /#course=<course UUID>&token=<JWT>
// (a fragment, so the token never reaches a server log). The page moves the token at once to the
// tab's sessionStorage and replaces the address with one that names only the course, so the token
// stays out of the history, screenshots and links pasted to a colleague; a reload finds it there.
// Every edit is drawn before it is sent; see RULES.md for what is drawn when.

import { Connection } from "./connection.js";
import { claimIdentity, releaseIdentity, takeToken } from "./identity.js";
import { CourseModel, refOf as ref, undoOf } from "./model.js";
import { $, EditorView } from "./view.js";
import { int, opFromWire, opToWire, uuidToID } from "./wire.js";

const params = new URLSearchParams(location.hash.slice(1));
const courseUUID = params.get("course");
const token = takeToken(courseUUID, params.get("token"));
// A page leaving lets its identity go at once, so that its reload finds it free; a page restored
// from the back-forward cache has let it go, so it starts again (and claims it anew).
addEventListener("pagehide", () => releaseIdentity());
addEventListener("pageshow", (event) => {
  if (event.persisted) location.reload();
});

if (!courseUUID || !token) {
  $("#open-form").hidden = false;
  $("#editor").hidden = true;
  $("#open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = new URLSearchParams({ course: $("#open-course").value.trim(), token: $("#open-token").value.trim() });
    location.reload();
  });
} else {
  claimIdentity().then((clientID) => new Editor(courseUUID, token, clientID).start());
}

/** One line of the history dialog; with a seq, its Preview and Restore buttons. */
function historyLine(seq, when, author, summary) {
  const item = document.createElement("li");
  for (const [name, text] of [["seq", seq], ["when", when], ["author", author], ["summary", summary]]) {
    const cell = document.createElement("span");
    cell.className = name;
    cell.textContent = text;
    item.append(cell);
  }
  if (seq) {
    item.dataset.seq = seq;
    const actions = document.createElement("span");
    actions.className = "actions";
    for (const [label, action, help] of [["Preview", "preview", "Show the course as it was after this commit"],
      ["Restore", "restore", "Bring the course back to how it was after this commit (one edit, which Ctrl+Z takes back)"]]) {
      const button = document.createElement("button");
      Object.assign(button, { type: "button", className: action, title: help, textContent: label });
      actions.append(button);
    }
    item.append(actions);
  }
  return item;
}

/** A colour of its own for each client (0xRRGGBB): a hue from its ID, at one lightness. */
function colorOf(clientID) {
  let hash = 0;
  for (const char of clientID) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  const hue = hash % 360, s = 0.55, l = 0.45;
  const k = (n) => (n + hue / 30) % 12;
  const f = (n) => l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1));
  return (Math.round(f(0) * 255) << 16) | (Math.round(f(8) * 255) << 8) | Math.round(f(4) * 255);
}

/** Appends `value`, keeping the list's last `limit` entries. */
function keepLast(list, value, limit = 1000) {
  list.push(value);
  if (list.length > limit) list.shift();
}

/** One course open in the tab: its model, its connection, its view, and what the user does. */
class Editor {
  constructor(courseUUID, token, clientID) {
    this.courseID = uuidToID(courseUUID);
    this.courseUUID = courseUUID;
    this.token = token;
    this.historyNext = undefined;
    this.storageKey = `coursesync:course:${courseUUID}`;
    this.model = new CourseModel({ clientID, saved: JSON.parse(sessionStorage.getItem(this.storageKey) ?? "null") });
    this.selected = new Set(); // media keys ticked in the library
    // What the tests and the curious read (each the last 1,000): per batch, click → drawn, → ack,
    // → confirmed drawn (ms); the batches' events ({ event, seq, at }); ms per render.
    this.timings = [];
    this.events = [];
    this.renderTimes = [];
    this.renaming = null;
    this.drag = null; // { kind, key, row, drop } while a row is dragged
    // The user's own edits that Ctrl+Z takes back, and undos that Ctrl+Shift+Z makes again:
    // { seq (the batch it takes back), ops, label }, the last 100 each, for this tab's life.
    this.undoStack = [];
    this.redoStack = [];
    this.renderQueued = false;
    this.drawnBatches = new Set();
    this.lastOutline = null;
    // Presence (protocol §14): who else is here (clientId → peer, this tab's own entry included),
    // and what this tab shows it looks at ({ chapter: id } | { video: id } | { library: {} } | null).
    this.clientID = clientID;
    this.present = new Map();
    this.focus = null;
    this.color = colorOf(clientID);
    this.view = new EditorView({ onBar: (seq) => this.log("bar", seq) });
    this.connection = new Connection({
      url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/sync`,
      token,
      clientID,
      onReady: () => {
        this.connection.sendNow({ subscribe: { course: this.courseID, sinceSeq: String(this.model.confirmed.seq), presence: true } });
        this.present.clear();
        this.announce();
        for (const batch of this.model.unanswered()) this.send(batch);
        this.requestRender();
      },
      onMessage: (kind, body) => this.receive(kind, body),
      onState: (state, detail) => {
        this.view.showConnection(state, detail);
        if (state !== "online" && this.present.size > 0) {
          this.present.clear(); // unknown until the next connection says
          this.view.drawPresence([], this.clientID);
        }
      },
    });
  }

  // ---- presence -------------------------------------------------------------------------------

  /** Shows what this tab looks at to the others (a row made here and not yet confirmed: nothing yet). */
  setFocus(focus) {
    const id = focus && Object.values(focus)[0];
    if (typeof id === "string" && id.startsWith("temp:")) focus = null;
    if (JSON.stringify(focus) === JSON.stringify(this.focus)) return;
    this.focus = focus;
    this.announce();
  }

  announce() {
    if (!this.connection.welcomed) return; // sent on connecting
    this.connection.sendNow({ setPresence: { course: this.courseID, color: this.color, ...(this.focus ? { focus: this.focus } : {}) } });
  }

  start() {
    this.listen();
    // What tests and the curious read from the console.
    // startedAt: ms from navigation to the page starting (after its client identity is settled).
    const model = this.model;
    window.coursesync = { model, timings: this.timings, events: this.events, renderTimes: this.renderTimes, outline: () => model.outline(),
      connection: this.connection, startedAt: performance.now(), present: () => [...this.present.values()] };
    this.render();
    this.connection.start();
  }

  // ---- edits ----------------------------------------------------------------------------------

  /**
   * Draws the edit at once, then sends it (or queues it while offline). Its undo, computed against
   * what is drawn now, goes on the undo stack (an undo's on the redo stack); a new edit ends the redos.
   */
  edit(ops, label, event, kind = "edit") {
    const undo = undoOf(ops, this.model, () => this.model.newTemp());
    const batch = this.model.addBatch(ops, label, event?.timeStamp ?? performance.now());
    if (undo?.length) {
      const entry = { seq: batch.seq, ops: undo, label: label.replace(/^(Undo|Redo): /, "") };
      keepLast(kind === "undo" ? this.redoStack : this.undoStack, entry, 100);
    }
    if (kind === "edit") this.redoStack.length = 0;
    keepLast(this.timings, { seq: batch.seq, weight: batch.weight, clickedAt: batch.clickedAt });
    this.send(batch); // first: no answer can be handled before this task has drawn the edit below
    this.render();
    this.log("drawn", batch.seq);
    requestAnimationFrame(() => this.stamp(batch.seq, "drawn"));
    this.save();
  }

  send(batch) {
    const push = { push: { course: this.courseID, batchSeq: String(batch.seq), baseSeq: String(this.model.confirmed.seq), ops: batch.ops.map(opToWire) } };
    if (this.connection.push(push)) batch.state = "sent";
  }

  linkSelected(event) {
    const chapterKey = $("#target-chapter").value;
    const media = this.model.outline().media.filter((row) => this.selected.has(row.key)); // in the library's order
    if (!chapterKey || media.length === 0) return;
    const items = media.map((row) => ({ temp: this.model.newTemp(), media: ref(row.key) }));
    this.selected.clear();
    this.edit([{ linkMedia: { chapter: ref(chapterKey), items, placement: { atEnd: {} } } }],
      `Linking ${items.length} video${items.length === 1 ? "" : "s"}`, event);
  }

  addChapter(event) {
    const title = prompt("Chapter title")?.trim();
    if (title) this.edit([{ createChapter: { temp: this.model.newTemp(), title, placement: { atEnd: {} } } }], `Adding chapter “${title}”`, event);
  }

  videoAction(action, chapter, index, event) {
    const video = chapter.videos[index];
    if (!video) return;
    const videoRef = ref(video.key);
    const move = (toChapter, placement) => this.edit([{ moveVideo: { video: videoRef, toChapter: ref(toChapter), placement } }], `Moving “${video.title}”`, event);
    switch (action) {
      case "up":
        if (index > 0) move(chapter.key, { before: ref(chapter.videos[index - 1].key) });
        break;
      case "down":
        if (index < chapter.videos.length - 1) move(chapter.key, { after: ref(chapter.videos[index + 1].key) });
        break;
      case "move": {
        const target = $("#target-chapter").value;
        if (target && target !== chapter.key) move(target, { atEnd: {} });
        break;
      }
      case "rename":
        this.openRename("video", video.key, video.title);
        break;
      case "unlink":
        this.edit([{ unlinkVideo: { video: videoRef } }], `Unlinking “${video.title}”`, event);
        break;
    }
  }

  // ---- drag and drop ---------------------------------------------------------------------------
  // Pointer events (mouse, touch and pen alike) on each row's ⠿ handle: a video onto another video
  // (before or after it, by which half) or onto a chapter (its end); a chapter onto another
  // chapter. Each drop is one move, drawn at once like any edit. The keyboard's equivalents are
  // Alt+↑ / Alt+↓ on a focused row, and ⇄ for a video to the chapter chosen above the library.

  startDrag(event) {
    const handle = event.target.closest(".drag");
    if (!handle || event.button !== 0) return;
    const row = handle.closest(".video") ?? handle.closest(".chapter");
    this.drag = { kind: row.classList.contains("video") ? "video" : "chapter", key: row.dataset.key, row, drop: null };
    row.classList.add("dragging");
    event.preventDefault();
  }

  /** Where the dragged row would go if dropped at (x, y): { toChapter, placement, element, side } or null. */
  dropAt(x, y) {
    const drag = this.drag;
    const under = document.elementFromPoint(x, y);
    if (!under) return null;
    const half = (element) => {
      const box = element.getBoundingClientRect();
      return y < box.top + box.height / 2 ? "before" : "after";
    };
    if (drag.kind === "video") {
      const video = under.closest(".video");
      if (video && video.dataset.key !== drag.key) {
        const side = half(video);
        return { toChapter: video.closest(".chapter").dataset.key, placement: { [side]: ref(video.dataset.key) }, element: video, side };
      }
      const chapter = under.closest(".chapter");
      if (chapter && !video) return { toChapter: chapter.dataset.key, placement: { atEnd: {} }, element: chapter, side: "into" };
      return null;
    }
    const chapter = under.closest(".chapter");
    if (!chapter || chapter.dataset.key === drag.key) return null;
    const side = half(chapter);
    return { placement: { [side]: ref(chapter.dataset.key) }, element: chapter, side };
  }

  moveDrag(event) {
    if (!this.drag) return;
    const drop = this.dropAt(event.clientX, event.clientY);
    if (this.drag.drop?.element !== drop?.element || this.drag.drop?.side !== drop?.side) {
      if (this.drag.drop) delete this.drag.drop.element.dataset.drop;
      if (drop) drop.element.dataset.drop = drop.side;
    }
    this.drag.drop = drop;
  }

  endDrag(event) {
    const drag = this.drag;
    if (!drag) return;
    const drop = this.dropAt(event.clientX, event.clientY);
    this.drag = null;
    drag.row.classList.remove("dragging");
    if (drag.drop) delete drag.drop.element.dataset.drop;
    if (!drop) return;
    const outline = this.lastOutline;
    if (drag.kind === "video") {
      const chapter = outline.chapters.find((candidate) => candidate.videos.some((video) => video.key === drag.key));
      const video = chapter?.videos.find((candidate) => candidate.key === drag.key);
      if (!video) return;
      this.edit([{ moveVideo: { video: ref(video.key), toChapter: ref(drop.toChapter), placement: drop.placement } }], `Moving “${video.title}”`, event);
    } else {
      const chapter = outline.chapters.find((candidate) => candidate.key === drag.key);
      if (chapter) this.edit([{ moveChapter: { chapter: ref(chapter.key), placement: drop.placement } }], `Moving “${chapter.title}”`, event);
    }
  }

  /** Alt+↑ / Alt+↓ on a focused video or chapter: one place up or down. */
  moveByKey(event) {
    const up = event.key === "ArrowUp";
    const videoKey = event.target.closest(".video")?.dataset.key;
    const chapterKey = event.target.closest(".chapter")?.dataset.key;
    const chapters = this.lastOutline?.chapters ?? [];
    const chapter = chapters.find((candidate) => candidate.key === chapterKey);
    if (!chapter) return false;
    if (videoKey) {
      this.videoAction(up ? "up" : "down", chapter, chapter.videos.findIndex((video) => video.key === videoKey), event);
      return true;
    }
    const index = chapters.indexOf(chapter);
    const neighbour = chapters[up ? index - 1 : index + 1];
    if (!neighbour) return true;
    this.edit([{ moveChapter: { chapter: ref(chapter.key), placement: { [up ? "before" : "after"]: ref(neighbour.key) } } }], `Moving “${chapter.title}”`, event);
    return true;
  }

  /** Ctrl+Z: takes back the last own edit not yet undone, as a new edit (resolved like any). */
  undo(event) {
    const entry = this.undoStack.pop();
    if (entry) this.edit(entry.ops, `Undo: ${entry.label}`, event, "undo");
  }

  /** Ctrl+Shift+Z (or Ctrl+Y): makes again what the last undo took back. */
  redo(event) {
    const entry = this.redoStack.pop();
    if (entry) this.edit(entry.ops, `Redo: ${entry.label}`, event, "redo");
  }

  /**
   * The course's history (GET /v1/courses/{id}/history): who did what, newest first, 50 at a time;
   * `before` loads the older page after the one shown.
   */
  async showHistory(before) {
    const list = $("#history");
    if (before === undefined) {
      list.replaceChildren();
      $("#history-preview").hidden = true;
    }
    if (!$("#history-dialog").open) $("#history-dialog").showModal();
    const query = new URLSearchParams({ limit: "50", ...(before ? { before } : {}) });
    let page;
    try {
      const response = await fetch(`/v1/courses/${this.courseUUID}/history?${query}`, { headers: { Authorization: `Bearer ${this.token}` } });
      page = await response.json();
      if (!response.ok) throw new Error(page.error?.message ?? response.statusText);
    } catch (error) {
      list.append(historyLine("", "", "", `the history could not be read: ${error.message}`));
      return;
    }
    for (const entry of page.history) {
      const when = new Date(entry.committedAt).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
      list.append(historyLine(entry.seq, when, entry.author || "—", entry.summary || "(no summary)"));
    }
    this.historyNext = page.next;
    $("#history-older").hidden = !page.next;
  }

  /** The course as it was after commit `seq` (GET /v1/courses/{id}?at=SEQ), shown beside the history. */
  async preview(seq) {
    const pane = $("#history-preview");
    pane.hidden = false;
    pane.replaceChildren();
    try {
      const answer = await this.api(`/v1/courses/${this.courseUUID}?at=${seq}`);
      const { chapters = [], videos = [] } = answer.snapshot;
      const heading = document.createElement("h3");
      heading.textContent = `As it was after seq ${seq}`;
      const list = document.createElement("ol");
      for (const chapter of [...chapters].sort((a, b) => (a.position ?? 0) - (b.position ?? 0))) {
        const item = document.createElement("li");
        item.textContent = chapter.title ?? "";
        const inner = document.createElement("ol");
        for (const video of videos.filter((v) => v.chapter === chapter.id).sort((a, b) => (a.position ?? 0) - (b.position ?? 0))) {
          const row = document.createElement("li");
          row.textContent = video.title ?? "";
          inner.append(row);
        }
        item.append(inner);
        list.append(item);
      }
      pane.append(heading, list);
    } catch (error) {
      pane.textContent = `That state cannot be shown: ${error.message}`;
    }
  }

  /**
   * Brings the course back to how it was after commit `seq`: the server computes the edit (GET
   * …/restore?to=SEQ, ops against the course as it is); this tab sends it as its own, with its own
   * temps, so it is drawn at once, resolved like any edit, and Ctrl+Z takes it back.
   */
  async restore(seq, event) {
    if (!confirm(`Bring the course back to how it was after seq ${seq}? Others' later edits are undone too (Ctrl+Z takes the restore back).`)) return;
    let push;
    try {
      push = (await this.api(`/v1/courses/${this.courseUUID}/restore?to=${seq}`)).push;
    } catch (error) {
      alert(`The course cannot be restored to seq ${seq}: ${error.message}`);
      return;
    }
    const ops = push.ops ?? [];
    if (ops.length === 0) return;
    const temps = new Map();
    const temp = (value) => {
      if (!temps.has(value)) temps.set(value, this.model.newTemp());
      return temps.get(value);
    };
    const renumbered = ops.map((op) => opFromWire(op, temp));
    $("#history-dialog").close();
    this.edit(renumbered, `Restoring to seq ${seq}`, event);
  }

  /** A GET of the HTTP API with this tab's token; the JSON answer, or an Error with the server's message. */
  async api(path) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${this.token}` } });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error?.message ?? response.statusText);
    return answer;
  }

  openRename(kind, key, title) {
    this.renaming = { kind, key };
    $("#rename-title").value = title;
    $("#rename-dialog").showModal();
  }

  /** The page's controls: one listener per list (the rows come and go), what was clicked read from the DOM's keys. */
  listen() {
    $("#rename-dialog").addEventListener("close", () => {
      const title = $("#rename-title").value.trim();
      const renaming = this.renaming;
      if ($("#rename-dialog").returnValue === "save" && renaming && title) {
        const op = renaming.kind === "video" ? { renameVideo: { video: ref(renaming.key), title } } : { renameChapter: { chapter: ref(renaming.key), title } };
        this.edit([op], `Renaming to “${title}”`);
      }
      this.renaming = null;
    });
    $("#link-selected").addEventListener("click", (event) => this.linkSelected(event));
    $("#show-history").addEventListener("click", () => this.showHistory());
    $("#history-older").addEventListener("click", () => this.showHistory(this.historyNext));
    $("#history").addEventListener("click", (event) => {
      const seq = event.target.closest("li")?.dataset.seq;
      const action = event.target.closest("button")?.classList[0];
      if (seq && action === "preview") this.preview(seq);
      if (seq && action === "restore") this.restore(seq, event);
    });
    addEventListener("keydown", (event) => {
      if (!(event.ctrlKey || event.metaKey) || event.altKey) return;
      if (event.target.closest?.("input, textarea, dialog")) return; // the field's own undo
      const key = event.key.toLowerCase();
      if (key === "z" && !event.shiftKey) this.undo(event);
      else if ((key === "z" && event.shiftKey) || key === "y") this.redo(event);
      else return;
      event.preventDefault();
    });
    $("#add-chapter").addEventListener("click", (event) => this.addChapter(event));
    $("#outline").addEventListener("pointerdown", (event) => this.startDrag(event));
    addEventListener("pointermove", (event) => this.moveDrag(event));
    addEventListener("pointerup", (event) => this.endDrag(event));
    addEventListener("pointercancel", () => {
      if (this.drag) this.drag.row.classList.remove("dragging");
      this.drag = null;
    });
    $("#outline").addEventListener("keydown", (event) => {
      if (!event.altKey || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) return;
      if (this.moveByKey(event)) event.preventDefault();
    });
    $("#outline").addEventListener("click", (event) => {
      const videoRow = event.target.closest(".video")?.dataset.key;
      const chapterRow = event.target.closest(".chapter")?.dataset.key;
      if (videoRow) this.setFocus({ video: videoRow });
      else if (chapterRow) this.setFocus({ chapter: chapterRow });
      const action = event.target.closest("button")?.classList[0];
      const chapterKey = event.target.closest(".chapter")?.dataset.key;
      const chapter = this.lastOutline?.chapters.find((candidate) => candidate.key === chapterKey);
      if (!action || !chapter) return;
      const videoKey = event.target.closest(".video")?.dataset.key;
      if (videoKey) return this.videoAction(action, chapter, chapter.videos.findIndex((video) => video.key === videoKey), event);
      if (action === "rename") this.openRename("chapter", chapter.key, chapter.title);
      if (action === "delete" && confirm(`Delete “${chapter.title}” and its ${chapter.videos.length} videos?`)) {
        this.edit([{ deleteChapter: { chapter: ref(chapter.key) } }], `Deleting “${chapter.title}”`, event);
      }
    });
    $("#library-pane").addEventListener("click", () => this.setFocus({ library: {} }));
    $("#library-filter").addEventListener("input", (event) => {
      this.view.filter = event.target.value.trim().toLocaleLowerCase();
      this.render();
    });
    $("#library").addEventListener("change", (event) => {
      const key = event.target.closest(".media")?.dataset.key;
      if (!key) return;
      if (event.target.checked) this.selected.add(key);
      else this.selected.delete(key);
      this.view.drawSelectedCount(this.selected);
    });
  }

  // ---- server messages ------------------------------------------------------------------------

  receive(kind, body) {
    const model = this.model;
    let drawNow = false;
    switch (kind) {
      case "snapshot":
        model.snapshot(body);
        break;
      case "diff":
        if (!model.diff(body)) return this.connection.drop(`a gap: diff ${body.seq} after ${model.confirmed.seq}`);
        break;
      case "ack": {
        const batch = model.ack(body);
        if (batch) {
          this.log("ack", batch.seq);
          this.stamp(batch.seq, "acked");
        }
        break;
      }
      case "reject": {
        const dropped = model.reject(body);
        if (dropped.length > 0) {
          const gone = new Set(dropped.map((batch) => batch.seq));
          for (const stack of [this.undoStack, this.redoStack]) {
            for (let index = stack.length - 1; index >= 0; index--) if (gone.has(stack[index].seq)) stack.splice(index, 1);
          }
          this.log("reject", dropped[0].seq);
          this.view.toast(dropped, body, (event) => this.edit(model.remake(dropped), `Retry: ${dropped[0].label.replace(/^Retry: /, "")}`, event));
          drawNow = true; // the rollback and its toast in the same frame
        }
        break;
      }
      case "presenceUpdate": {
        if (body.full) this.present.clear();
        for (const id of body.left ?? []) this.present.delete(id);
        for (const peer of body.peers ?? []) this.present.set(peer.clientId, peer);
        this.view.drawPresence([...this.present.values()], this.clientID);
        return;
      }
      case "progress":
        model.progress(body);
        this.log("progress", int(body.batchSeq));
        break;
    }
    this.save();
    if (drawNow) this.render();
    else this.requestRender();
  }

  // ---- drawing --------------------------------------------------------------------------------

  requestRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  render() {
    const began = performance.now();
    const outline = this.model.outline();
    this.lastOutline = outline;
    this.view.draw(outline, this.model.pending, this.selected);
    // Batches drawn last time and gone now: their rows are drawn from the confirmed state.
    const now = new Set(this.model.pending.map((batch) => batch.seq));
    for (const seq of this.drawnBatches) {
      if (!now.has(seq) && this.timings.some((timing) => timing.seq === seq && timing.acked !== undefined)) {
        this.log("confirmed", seq);
        this.stamp(seq, "confirmed");
      }
    }
    this.drawnBatches = now;
    this.view.drawPresence([...this.present.values()], this.clientID); // rows drawn anew get their markers
    keepLast(this.renderTimes, performance.now() - began);
  }

  // ---- bookkeeping ----------------------------------------------------------------------------

  save() {
    sessionStorage.setItem(this.storageKey, JSON.stringify(this.model.saved()));
  }

  log(event, seq) {
    keepLast(this.events, { event, seq, at: performance.now() });
  }

  stamp(seq, what) {
    const timing = this.timings.find((candidate) => candidate.seq === seq);
    if (timing && timing[what] === undefined) timing[what] = performance.now() - timing.clickedAt;
  }
}
