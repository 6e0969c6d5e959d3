// The tab's token and client identity. The token comes in the address's fragment and moves at
// once to the tab's sessionStorage; the client identity is held by one tab at a time.

import { randomID } from "./wire.js";

const IDENTITY = "coursesync:client"; // the tab's client ID in sessionStorage, and the name it is held by
/** Lets the tab's identity go (the page is going); set once it is held (see `hold`). */
let release = () => {};

/** Lets the identity go at once (the page is leaving), so that its reload finds it free. */
export function releaseIdentity() {
  release();
}

/**
 * The course's token: the one in the address, kept in the tab's sessionStorage (per course) and
 * removed from the address (replaced, not pushed: no history entry holds it); else the one kept.
 */
export function takeToken(course, fromAddress) {
  if (!course) return null;
  const key = `coursesync:token:${course}`;
  if (fromAddress) {
    sessionStorage.setItem(key, fromAddress);
    history.replaceState(history.state, "", `${location.pathname}${location.search}#${new URLSearchParams({ course })}`);
    return fromAddress;
  }
  return sessionStorage.getItem(key);
}

// One client identity per tab, kept in sessionStorage with the tab's unanswered batches: a reload
// is the same client and resends them. But a tab opened from another (Duplicate tab, window.open)
// starts with a copy of that sessionStorage. Speaking as the same client, the two tabs would send
// different batches under the same batch seqs, and the server would answer the second with the
// first's stored Ack (exactly-once), its edits lost. So a tab holds its identity while it lives:
// a Web Lock where the page is a secure context (HTTPS, localhost), else by answering the other
// tabs' question on a BroadcastChannel. A tab whose copied identity is held elsewhere makes a new
// one, without the copied batches (the other tab sends those).

/** The tab's client ID: the one copied into its sessionStorage if no live tab holds it, else a new one. */
export async function claimIdentity() {
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
  // A granted lock is held until the page goes (or `release` lets it go).
  const keep = () => new Promise((resolve) => (release = resolve));
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
    release = () => channel.close();
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
