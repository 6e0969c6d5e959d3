// The live course editor: wires the connection and the model to the DOM. The page is opened as
//   /#course=<course UUID>&token=<JWT>
// (a fragment, so the token never reaches a server log). The page moves the token at once to the
// tab's sessionStorage and replaces the address with one that names only the course, so the token
// stays out of the history, screenshots and links pasted to a colleague; a reload finds it there.
// Every edit is drawn before it is sent; see RULES.md for what is drawn when.

import { Connection } from "./connection.js";
import { MAX_VIDEOS_PER_CHAPTER } from "./limits.js";
import { CourseModel } from "./model.js";
import { int, opToWire, randomID, uuidToID } from "./wire.js";

const $ = (selector) => document.querySelector(selector);

const REASONS = {
  TARGET_DELETED: "something it changes was deleted meanwhile",
  UNKNOWN_TEMP_ID: "it depended on an edit that was refused",
  UNKNOWN_MEDIA: "a media file is no longer in the library",
  INVALID_TITLE: "a title is empty, too long or has control characters",
  INVALID_MEDIA: "the media file's details are invalid",
  BATCH_TOO_LARGE: "it is too large for one batch",
  CHAPTER_FULL: `the chapter would hold more than ${MAX_VIDEOS_PER_CHAPTER} videos`,
  COURSE_FULL: "the course is full",
  INVALID_PLACEMENT: "a row cannot be placed next to itself",
  MEDIA_ALREADY_IN_CHAPTER: "that chapter already has this media file",
  FORBIDDEN: "you may only view this course",
  UNKNOWN_COURSE: "the course does not exist",
};

const params = new URLSearchParams(location.hash.slice(1));
const courseUUID = params.get("course");
const token = takeToken(courseUUID, params.get("token"));
const IDENTITY = "coursesync:client"; // the tab's client ID in sessionStorage, and the name it is held by
/** Lets the tab's identity go (the page is going); set once it is held (see `hold`). */
let releaseIdentity = () => {};
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
  claimIdentity().then((clientID) => start(courseUUID, token, clientID));
}

// ---- the token -----------------------------------------------------------------------------------

/**
 * The course's token: the one in the address, kept in the tab's sessionStorage (per course) and
 * removed from the address (replaced, not pushed: no history entry holds it); else the one kept.
 */
function takeToken(course, fromAddress) {
  if (!course) return null;
  const key = `coursesync:token:${course}`;
  if (fromAddress) {
    sessionStorage.setItem(key, fromAddress);
    history.replaceState(history.state, "", `${location.pathname}${location.search}#${new URLSearchParams({ course })}`);
    return fromAddress;
  }
  return sessionStorage.getItem(key);
}

// ---- identity -----------------------------------------------------------------------------------
//
// One client identity per tab, kept in sessionStorage with the tab's unanswered batches: a reload
// is the same client and resends them. But a tab opened from another (Duplicate tab, window.open)
// starts with a copy of that sessionStorage. Speaking as the same client, the two tabs would send
// different batches under the same batch seqs, and the server would answer the second with the
// first's stored Ack (exactly-once), its edits lost. So a tab holds its identity while it lives:
// a Web Lock where the page is a secure context (HTTPS, localhost), else by answering the other
// tabs' question on a BroadcastChannel. A tab whose copied identity is held elsewhere makes a new
// one, without the copied batches (the other tab sends those).

async function claimIdentity() {
  const copied = sessionStorage.getItem(IDENTITY);
  if (copied && (await hold(copied))) return copied;
  if (copied) {
    for (const key of Object.keys(sessionStorage)) if (key.startsWith("coursesync:")) sessionStorage.removeItem(key);
  }
  const fresh = randomID();
  await hold(fresh, { fresh: true });
  sessionStorage.setItem(IDENTITY, fresh);
  return fresh;
}

/**
 * Takes `id` for this tab for as long as it lives; false if another live tab holds it. A `fresh`
 * ID (just made) is nobody else's: it is taken without waiting for an answer.
 */
async function hold(id, { fresh = false } = {}) {
  if (!navigator.locks) return holdByAsking(id, fresh);
  const name = `${IDENTITY}:${id}`;
  // A granted lock is held until the page goes (or `releaseIdentity` lets it go).
  const keep = () => new Promise((release) => (releaseIdentity = release));
  if (fresh) {
    // Not awaited: the lock manager can take a while, and nobody else can want a new random ID.
    navigator.locks.request(name, keep);
    return true;
  }
  // The old page's lock can outlive it by a moment, so a lock found taken is asked for again a
  // few times over a second; a live tab keeps it. (Not a request with a timeout: the browser's
  // lock manager can take longer than that to grant a free lock when it starts.)
  for (let attempt = 0; attempt < 5; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 250));
    const taken = await new Promise((resolve) => {
      navigator.locks.request(name, { ifAvailable: true }, (lock) => {
        resolve(lock !== null);
        return lock ? keep() : undefined;
      });
    });
    if (taken) return true;
  }
  return false;
}

/** Without Web Locks (not a secure context): asks the other tabs; one that holds `id` answers. */
function holdByAsking(id, fresh) {
  const channel = new BroadcastChannel(IDENTITY);
  const answer = () => {
    channel.onmessage = (event) => {
      if (event.data?.who === id) channel.postMessage({ held: id });
    };
    releaseIdentity = () => channel.close();
  };
  if (fresh) {
    answer();
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const unanswered = setTimeout(() => {
      answer();
      resolve(true);
    }, 250);
    channel.onmessage = (event) => {
      if (event.data?.held !== id) return;
      clearTimeout(unanswered);
      channel.close();
      resolve(false);
    };
    channel.postMessage({ who: id });
  });
}

function start(courseUUID, token, clientID) {
  const courseID = uuidToID(courseUUID);
  const storageKey = `coursesync:course:${courseUUID}`;
  const model = new CourseModel({ clientID, saved: JSON.parse(sessionStorage.getItem(storageKey) ?? "null") });
  const selected = new Set(); // media keys ticked in the library
  // What the tests and the curious read (each the last 1,000): per batch, click → drawn, → ack,
  // → confirmed drawn (ms); the batches' events ({ event, seq, at }); ms per render.
  const timings = [];
  const events = [];
  const renderTimes = [];
  let renaming = null;
  let renderQueued = false;

  const connection = new Connection({
    url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/sync`,
    token,
    clientID,
    onState: showConnection,
    onReady: () => {
      connection.sendNow({ subscribe: { course: courseID, sinceSeq: String(model.confirmed.seq) } });
      for (const batch of model.unanswered()) send(batch);
      requestRender();
    },
    onMessage: receive,
  });

  // ---- edits ----------------------------------------------------------------------------------

  function ref(key) {
    return key.startsWith("temp:") ? { temp: Number(key.slice(5)) } : { id: key };
  }

  /** Draws the edit at once, then sends it (or queues it while offline). */
  function edit(ops, label, event) {
    const batch = model.addBatch(ops, label, event?.timeStamp ?? performance.now());
    keepLast(timings, { seq: batch.seq, weight: batch.weight, clickedAt: batch.clickedAt });
    send(batch); // first: no answer can be handled before this task has drawn the edit below
    render();
    log("drawn", batch.seq);
    requestAnimationFrame(() => stamp(batch.seq, "drawn"));
    save();
  }

  function send(batch) {
    const push = { push: { course: courseID, batchSeq: String(batch.seq), baseSeq: String(model.confirmed.seq), ops: batch.ops.map(opToWire) } };
    if (connection.push(push)) batch.state = "sent";
  }

  function linkSelected(event) {
    const chapterKey = $("#target-chapter").value;
    const outline = model.outline();
    const media = outline.media.filter((row) => selected.has(row.key)); // in the library's order
    if (!chapterKey || media.length === 0) return;
    const items = media.map((row) => ({ temp: model.newTemp(), media: ref(row.key) }));
    selected.clear();
    edit([{ linkMedia: { chapter: ref(chapterKey), items, placement: { atEnd: {} } } }],
      `Linking ${items.length} video${items.length === 1 ? "" : "s"}`, event);
  }

  function addChapter(event) {
    const title = prompt("Chapter title")?.trim();
    if (title) edit([{ createChapter: { temp: model.newTemp(), title, placement: { atEnd: {} } } }], `Adding chapter “${title}”`, event);
  }

  function videoAction(action, chapter, index, event) {
    const video = chapter.videos[index];
    if (!video) return;
    const videoRef = ref(video.key);
    switch (action) {
      case "up":
        if (index > 0) edit([{ moveVideo: { video: videoRef, toChapter: ref(chapter.key), placement: { before: ref(chapter.videos[index - 1].key) } } }], `Moving “${video.title}”`, event);
        break;
      case "down":
        if (index < chapter.videos.length - 1) edit([{ moveVideo: { video: videoRef, toChapter: ref(chapter.key), placement: { after: ref(chapter.videos[index + 1].key) } } }], `Moving “${video.title}”`, event);
        break;
      case "move": {
        const target = $("#target-chapter").value;
        if (target && target !== chapter.key) edit([{ moveVideo: { video: videoRef, toChapter: ref(target), placement: { atEnd: {} } } }], `Moving “${video.title}”`, event);
        break;
      }
      case "rename":
        openRename("video", video.key, video.title);
        break;
      case "unlink":
        edit([{ unlinkVideo: { video: videoRef } }], `Unlinking “${video.title}”`, event);
        break;
    }
  }

  function openRename(kind, key, title) {
    renaming = { kind, key };
    $("#rename-title").value = title;
    $("#rename-dialog").showModal();
  }

  $("#rename-dialog").addEventListener("close", () => {
    const title = $("#rename-title").value.trim();
    if ($("#rename-dialog").returnValue === "save" && renaming && title) {
      const op = renaming.kind === "video" ? { renameVideo: { video: ref(renaming.key), title } } : { renameChapter: { chapter: ref(renaming.key), title } };
      edit([op], `Renaming to “${title}”`);
    }
    renaming = null;
  });
  $("#link-selected").addEventListener("click", linkSelected);
  $("#add-chapter").addEventListener("click", addChapter);

  // ---- server messages ------------------------------------------------------------------------

  function receive(kind, body) {
    let drawNow = false;
    switch (kind) {
      case "snapshot":
        model.snapshot(body);
        break;
      case "diff":
        if (!model.diff(body)) return connection.drop(`a gap: diff ${body.seq} after ${model.confirmed.seq}`);
        break;
      case "ack": {
        const batch = model.ack(body);
        if (batch) {
          log("ack", batch.seq);
          stamp(batch.seq, "acked");
        }
        break;
      }
      case "reject": {
        const dropped = model.reject(body);
        if (dropped.length > 0) {
          log("reject", dropped[0].seq);
          toast(dropped, body);
          drawNow = true; // the rollback and its toast in the same frame
        }
        break;
      }
      case "progress":
        model.progress(body);
        log("progress", int(body.batchSeq));
        break;
    }
    save();
    if (drawNow) render();
    else requestRender();
  }

  // ---- drawing --------------------------------------------------------------------------------

  function requestRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      render();
    });
  }

  let drawnBatches = new Set();
  const barsDrawn = new Set();
  let lastOutline = null;

  function render() {
    const began = performance.now();
    const outline = model.outline();
    lastOutline = outline;
    $("#course-title").textContent = outline.title || "Untitled course";
    $("#course-seq").textContent = `seq ${outline.seq}`;
    renderOutline(outline);
    renderLibrary(outline);
    renderBatches();
    // Batches drawn last time and gone now: their rows are drawn from the confirmed state.
    const now = new Set(model.pending.map((batch) => batch.seq));
    for (const seq of drawnBatches) {
      if (!now.has(seq) && timings.some((timing) => timing.seq === seq && timing.acked !== undefined)) {
        log("confirmed", seq);
        stamp(seq, "confirmed");
      }
    }
    drawnBatches = now;
    document.body.dataset.pending = String(model.pending.length);
    document.body.dataset.seq = String(outline.seq);
    keepLast(renderTimes, performance.now() - began);
  }

  // Rows are drawn by key: an element is kept while its row is, updated in place, and moved only
  // when the order changed, so an edit touches a few nodes, not the whole outline.
  function renderOutline(outline) {
    syncList($("#outline"), outline.chapters, (chapter) => {
      const item = element("li", { class: "chapter", "data-key": chapter.key });
      const head = element("div", { class: "chapter-head" });
      head.append(element("span", { class: "title" }), element("span", { class: "count" }),
        button("✎", "rename", "Rename chapter"), button("Delete", "delete", "Delete the chapter and its videos"));
      item.append(head, element("ol", { class: "videos" }));
      return item;
    }, (item, chapter) => {
      setState(item, chapter.pending);
      setText(item.querySelector(".chapter-head .title"), chapter.title);
      setText(item.querySelector(".chapter-head .count"), `${chapter.videos.length}`);
      syncList(item.querySelector(".videos"), chapter.videos, (video) => {
        const row = element("li", { class: "video", "data-key": video.key, "data-media": video.media });
        const actions = element("span", { class: "actions" });
        for (const [label, action, help] of [["↑", "up", "Move up"], ["↓", "down", "Move down"], ["⇄", "move", "Move to the chapter selected above the library"], ["✎", "rename", "Rename"], ["✕", "unlink", "Unlink"]]) {
          actions.append(button(label, action, help));
        }
        row.append(element("span", { class: "title" }), element("span", { class: "badge" }, "syncing"), actions);
        return row;
      }, (row, video) => {
        setState(row, video.pending);
        setText(row.querySelector(".title"), video.title);
      });
    });
    const target = $("#target-chapter");
    const chosen = target.value;
    syncList(target, outline.chapters, (chapter) => element("option", { value: chapter.key, "data-key": chapter.key }),
      (option, chapter) => setText(option, chapter.title));
    if (outline.chapters.some((chapter) => chapter.key === chosen)) target.value = chosen;
  }

  function renderLibrary(outline) {
    const linkedIn = new Map();
    for (const chapter of outline.chapters) for (const video of chapter.videos) linkedIn.set(video.media, (linkedIn.get(video.media) ?? 0) + 1);
    syncList($("#library"), outline.media, (media) => {
      const item = element("li", { class: "media", "data-key": media.key });
      const label = element("label", {});
      label.append(element("input", { type: "checkbox" }), element("span", { class: "name" }), element("span", { class: "used" }));
      item.append(label);
      return item;
    }, (item, media) => {
      setState(item, media.pending);
      setText(item.querySelector(".name"), media.name);
      setText(item.querySelector(".used"), linkedIn.get(media.key) ? `in ${linkedIn.get(media.key)}` : "");
      item.querySelector("input").checked = selected.has(media.key);
    });
    $("#selected-count").textContent = `${selected.size}`;
  }

  // One listener per list (the rows come and go): what was clicked is read from the DOM's keys.
  $("#outline").addEventListener("click", (event) => {
    const action = event.target.closest("button")?.classList[0];
    const chapterKey = event.target.closest(".chapter")?.dataset.key;
    const chapter = lastOutline?.chapters.find((candidate) => candidate.key === chapterKey);
    if (!action || !chapter) return;
    const videoKey = event.target.closest(".video")?.dataset.key;
    if (videoKey) return videoAction(action, chapter, chapter.videos.findIndex((video) => video.key === videoKey), event);
    if (action === "rename") openRename("chapter", chapter.key, chapter.title);
    if (action === "delete" && confirm(`Delete “${chapter.title}” and its ${chapter.videos.length} videos?`)) {
      edit([{ deleteChapter: { chapter: ref(chapter.key) } }], `Deleting “${chapter.title}”`, event);
    }
  });
  $("#library").addEventListener("change", (event) => {
    const key = event.target.closest(".media")?.dataset.key;
    if (!key) return;
    if (event.target.checked) selected.add(key);
    else selected.delete(key);
    $("#selected-count").textContent = `${selected.size}`;
  });

  /** A progress bar for each pending batch over 100 ops. */
  function renderBatches() {
    const bars = model.pending.filter((batch) => batch.weight > 100).map((batch) => {
      if (!barsDrawn.has(batch.seq)) {
        barsDrawn.add(batch.seq);
        log("bar", batch.seq);
      }
      const status = batch.state === "acked" ? "committed" : batch.queued ? "committing" : batch.state === "sent" ? "sent" : "waiting for the connection";
      const bar = element("div", { class: "batch", "data-seq": String(batch.seq) });
      const progress = element("progress", { max: String(batch.weight) });
      progress.value = batch.state === "acked" ? batch.weight : batch.queued ? batch.weight / 2 : batch.state === "sent" ? batch.weight / 10 : 0;
      bar.append(element("span", {}, `${batch.label}: ${status}`), progress);
      return bar;
    });
    $("#batches").replaceChildren(...bars);
  }

  function showConnection(state, detail) {
    const indicator = $("#connection");
    indicator.dataset.state = state;
    indicator.textContent = {
      connecting: "connecting…",
      online: "live",
      offline: `offline, retrying in ${Math.ceil((detail ?? 0) / 1000)} s`,
      refused: `refused: ${detail}`,
    }[state];
  }

  function toast(dropped, reject) {
    const code = reject.code ?? "ERROR_CODE_UNSPECIFIED";
    const more = dropped.length > 1 ? ` (and ${dropped.length - 1} edit${dropped.length > 2 ? "s" : ""} that depended on it)` : "";
    const box = element("div", { class: "toast", role: "alert", "data-code": code, "data-seq": String(dropped[0].seq) });
    box.append(element("span", { class: "message" }, `${dropped[0].label} was undone${more}: ${REASONS[code] ?? reject.message ?? code} (${code}).`));
    box.append(button("Retry", "retry", "Make the same edit again", (event) => {
      box.remove();
      edit(model.remake(dropped), `Retry: ${dropped[0].label.replace(/^Retry: /, "")}`, event);
    }));
    box.append(button("×", "dismiss", "Dismiss", () => box.remove()));
    $("#toasts").append(box);
  }

  // ---- bookkeeping ----------------------------------------------------------------------------

  function save() {
    sessionStorage.setItem(storageKey, JSON.stringify(model.saved()));
  }

  function log(event, seq) {
    keepLast(events, { event, seq, at: performance.now() });
  }

  function stamp(seq, what) {
    const timing = timings.find((candidate) => candidate.seq === seq);
    if (timing && timing[what] === undefined) timing[what] = performance.now() - timing.clickedAt;
  }

  // What tests and the curious read from the console.
  // startedAt: ms from navigation to the page starting (after its client identity is settled).
  window.coursesync = { model, timings, events, renderTimes, outline: () => model.outline(), connection, startedAt: performance.now() };
  render();
  connection.start();
}

/** Appends `value`, keeping the list's last 1,000 entries. */
function keepLast(list, value) {
  list.push(value);
  if (list.length > 1000) list.shift();
}

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, action, help, onClick) {
  const node = element("button", { type: "button", class: action, title: help }, label);
  if (onClick) node.addEventListener("click", onClick);
  return node;
}

/** Makes `container`'s children one per row, in order, reusing the children with the same key. */
function syncList(container, rows, create, update) {
  const existing = new Map();
  for (const child of container.children) existing.set(child.dataset.key, child);
  let cursor = container.firstElementChild;
  for (const row of rows) {
    let node = existing.get(row.key);
    if (node) existing.delete(row.key);
    else node = create(row);
    update(node, row);
    if (node === cursor) cursor = cursor.nextElementSibling;
    else container.insertBefore(node, cursor);
  }
  for (const node of existing.values()) node.remove();
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setState(node, pending) {
  const state = pending ? "pending" : "confirmed";
  if (node.dataset.state !== state) node.dataset.state = state;
}
