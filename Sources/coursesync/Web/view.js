// The editor's DOM: the outline, the media library, the batches' progress bars, the connection
// indicator and the rejection toasts, drawn from what the model says. Rows are drawn by key: an
// element is kept while its row is, updated in place, and moved only when the order changed, so
// an edit touches a few nodes, not the whole outline. No state of its own but what it drew.

import { MAX_VIDEOS_PER_CHAPTER } from "./limits.js";

export const $ = (selector) => document.querySelector(selector);

/** Why a batch was rolled back, in the user's words, by the rejection's code. */
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

const VIDEO_ACTIONS = [["↑", "up", "Move up"], ["↓", "down", "Move down"], ["⇄", "move", "Move to the chapter selected above the library"],
  ["✎", "rename", "Rename"], ["✕", "unlink", "Unlink"]];

export class EditorView {
  /** `onBar(seq)`: a progress bar was first drawn for the batch (the page logs it). */
  constructor({ onBar }) {
    this.onBar = onBar;
    this.filter = ""; // the library filter, lower-cased
    this.barsDrawn = new Set();
  }

  /** The whole editor from `outline`, the model's pending batches and the media ticked in the library. */
  draw(outline, pending, selected) {
    $("#course-title").textContent = outline.title || "Untitled course";
    $("#course-seq").textContent = `seq ${outline.seq}`;
    this.drawOutline(outline);
    this.drawLibrary(outline, selected);
    this.drawBatches(pending);
    document.body.dataset.pending = String(pending.length);
    document.body.dataset.seq = String(outline.seq);
  }

  /**
   * Who else is here: an avatar each in the header (initials in their colour, their name and what
   * they look at as its label), and on each row someone looks at, a marker in their colour.
   */
  drawPresence(peers, ownID) {
    const others = peers.filter((peer) => peer.clientId !== ownID).sort((a, b) => (a.name ?? "").localeCompare(b.name ?? ""));
    const rowTitle = (id) => document.querySelector(`[data-key="${CSS.escape(id)}"] .title`)?.textContent;
    const colour = (peer) => `#${(peer.color ?? 0).toString(16).padStart(6, "0")}`;
    syncList($("#presence"), others.map((peer) => ({ ...peer, key: peer.clientId })),
      (peer) => element("span", { class: "avatar", role: "img", "data-key": peer.key }),
      (avatar, peer) => {
        const label = `${peer.name} — looking at ${looking(peer, rowTitle)}`;
        if (avatar.getAttribute("aria-label") !== label) {
          avatar.setAttribute("aria-label", label);
          avatar.title = label;
        }
        avatar.style.background = colour(peer);
        setText(avatar, initials(peer.name));
      });
    const watched = new Map();
    for (const peer of others) {
      const id = peer.focus?.chapter ?? peer.focus?.video;
      if (id) watched.set(id, [...(watched.get(id) ?? []), peer]);
    }
    for (const row of document.querySelectorAll("#outline [data-watched]")) {
      if (!watched.has(row.dataset.key)) {
        delete row.dataset.watched;
        row.style.removeProperty("--watcher");
        row.removeAttribute("title");
      }
    }
    for (const [id, watchers] of watched) {
      const row = document.querySelector(`#outline [data-key="${CSS.escape(id)}"]`);
      if (!row) continue;
      const names = watchers.map((peer) => peer.name).join(", ");
      row.dataset.watched = names;
      row.style.setProperty("--watcher", colour(watchers[0]));
      row.title = `${names} ${watchers.length === 1 ? "is" : "are"} here`;
    }
  }

  drawOutline(outline) {
    const durations = new Map(outline.media.map((media) => [media.key, media.durationMs ?? 0]));
    syncList($("#outline"), outline.chapters, (chapter) => {
      const item = element("li", { class: "chapter", "data-key": chapter.key });
      const head = element("div", { class: "chapter-head" });
      head.append(element("button", { type: "button", class: "drag", title: "Drag to move the chapter (or Alt+↑ / Alt+↓)", "aria-label": "Move chapter" }, "⠿"),
        element("span", { class: "title" }), element("span", { class: "count" }),
        button("✎", "rename", "Rename chapter"), button("Delete", "delete", "Delete the chapter and its videos"));
      item.append(head, element("ol", { class: "videos" }));
      return item;
    }, (item, chapter) => {
      setState(item, chapter.pending);
      setText(item.querySelector(".chapter-head .title"), chapter.title);
      const total = chapter.videos.reduce((sum, video) => sum + (durations.get(video.media) ?? 0), 0);
      setText(item.querySelector(".chapter-head .count"), `${chapter.videos.length} · ${duration(total)}`);
      syncList(item.querySelector(".videos"), chapter.videos, (video) => {
        const row = element("li", { class: "video", "data-key": video.key, "data-media": video.media, tabindex: "0" });
        row.append(element("button", { type: "button", class: "drag", title: "Drag to move the video, also to another chapter (or Alt+↑ / Alt+↓)",
          "aria-label": "Move video" }, "⠿"));
        const actions = element("span", { class: "actions" });
        for (const [label, action, help] of VIDEO_ACTIONS) actions.append(button(label, action, help));
        row.append(element("span", { class: "title" }), element("span", { class: "duration" }), element("span", { class: "badge" }, "syncing"), actions);
        return row;
      }, (row, video) => {
        setState(row, video.pending);
        setText(row.querySelector(".title"), video.title);
        setText(row.querySelector(".duration"), duration(durations.get(video.media) ?? 0));
      });
    });
    const target = $("#target-chapter");
    const chosen = target.value;
    syncList(target, outline.chapters, (chapter) => element("option", { value: chapter.key, "data-key": chapter.key }),
      (option, chapter) => setText(option, chapter.title));
    if (outline.chapters.some((chapter) => chapter.key === chosen)) target.value = chosen;
  }

  drawLibrary(outline, selected) {
    const linkedIn = new Map();
    for (const chapter of outline.chapters) for (const video of chapter.videos) linkedIn.set(video.media, (linkedIn.get(video.media) ?? 0) + 1);
    syncList($("#library"), outline.media, (media) => {
      const item = element("li", { class: "media", "data-key": media.key });
      const label = element("label", {});
      label.append(element("input", { type: "checkbox" }), element("span", { class: "name" }), element("span", { class: "duration" }),
        element("span", { class: "used" }));
      item.append(label);
      return item;
    }, (item, media) => {
      setState(item, media.pending);
      setText(item.querySelector(".name"), media.name);
      setText(item.querySelector(".duration"), duration(media.durationMs ?? 0));
      item.hidden = this.filter !== "" && !media.name.toLocaleLowerCase().includes(this.filter);
      setText(item.querySelector(".used"), linkedIn.get(media.key) ? `in ${linkedIn.get(media.key)}` : "");
      item.querySelector("input").checked = selected.has(media.key);
    });
    this.drawSelectedCount(selected);
  }

  drawSelectedCount(selected) {
    $("#selected-count").textContent = `${selected.size}`;
  }

  /** A progress bar for each pending batch over 100 ops. */
  drawBatches(pending) {
    const bars = pending.filter((batch) => batch.weight > 100).map((batch) => {
      if (!this.barsDrawn.has(batch.seq)) {
        this.barsDrawn.add(batch.seq);
        this.onBar(batch.seq);
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

  showConnection(state, detail) {
    const indicator = $("#connection");
    indicator.dataset.state = state;
    indicator.textContent = {
      connecting: "connecting…",
      online: "live",
      offline: `offline, retrying in ${Math.ceil((detail ?? 0) / 1000)} s`,
      refused: `refused: ${detail}`,
    }[state];
  }

  /** Says that `dropped` (the rejected batch first) were rolled back and why; `retry(event)` makes them again. */
  toast(dropped, reject, retry) {
    const code = reject.code ?? "ERROR_CODE_UNSPECIFIED";
    const more = dropped.length > 1 ? ` (and ${dropped.length - 1} edit${dropped.length > 2 ? "s" : ""} that depended on it)` : "";
    const box = element("div", { class: "toast", role: "alert", "data-code": code, "data-seq": String(dropped[0].seq) });
    box.append(element("span", { class: "message" }, `${dropped[0].label} was undone${more}: ${REASONS[code] ?? reject.message ?? code} (${code}).`));
    box.append(button("Retry", "retry", "Make the same edit again", (event) => {
      box.remove();
      retry(event);
    }));
    box.append(button("×", "dismiss", "Dismiss", () => box.remove()));
    $("#toasts").append(box);
  }
}

/** A duration as h:mm:ss or m:ss. */
export function duration(ms) {
  const seconds = Math.round(ms / 1000);
  const [h, m, s] = [Math.floor(seconds / 3600), Math.floor(seconds / 60) % 60, seconds % 60];
  const pad = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

/** Two letters for an avatar: the first of two words ("Ada Lovelace" → "AL"), or the first two of one ("ada" → "AD"). */
function initials(name) {
  const words = (name ?? "").trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [...words[0]].slice(0, 1).concat([...words[1]].slice(0, 1)) : [...(words[0] ?? "?")].slice(0, 2);
  return letters.join("").toUpperCase();
}

/** What a collaborator looks at, in words. */
function looking(peer, rowTitle) {
  const focus = peer.focus ?? {};
  if (focus.library) return "the media library";
  const id = focus.chapter ?? focus.video;
  if (!id) return "nothing in particular";
  return `${focus.chapter ? "chapter" : "video"} “${rowTitle(id) ?? "…"}”`;
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
