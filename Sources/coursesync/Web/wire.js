// The protocol's JSON form (protocol/README.md §1.1, subprotocol `coursesync.v1+json`): IDs and
// the text inside operations are `bytes`, so base64; 64-bit integers are strings. The page keeps
// IDs as their base64 text (a stable key) and converts only at the edges.

const encoder = new TextEncoder();

/** Base64 of raw bytes. */
export function base64(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** UTF-8 text as the base64 of its bytes (how an op's title travels). */
export function textBytes(text) {
  return base64(encoder.encode(text));
}

/** A UUID's text form ("6f1c2d9e-3b7a-…") as the base64 of its 16 bytes. */
export function uuidToID(uuid) {
  const hex = uuid.replace(/-/g, "").toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new Error(`not a UUID: ${uuid}`);
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return base64(bytes);
}

/** A fresh random ID (a version 4 UUID's bytes), as base64. */
export function randomID() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  return base64(bytes);
}

/** A uint64 field as a number (the JSON form sends them as strings; absent means 0). */
export function int(value) {
  return value === undefined ? 0 : Number(value);
}

/**
 * An operation in the page's form (titles as plain strings, temps as numbers) in the wire's form
 * (titles as base64 UTF-8, temps as strings).
 */
export function opToWire(op) {
  const [kind, body] = Object.entries(op)[0];
  const out = {};
  for (const [key, value] of Object.entries(body)) {
    if (key === "title" || key === "name" || key === "cdnUrl") out[key] = textBytes(value);
    else if (key === "temp") out[key] = String(value);
    else if (key === "items") out[key] = value.map((item) => {
      const wire = { temp: String(item.temp), media: refToWire(item.media) };
      if (item.title !== undefined) wire.title = textBytes(item.title);
      return wire;
    });
    else if (key === "placement") out[key] = placementToWire(value);
    else if (key === "durationMs" || key === "byteSize") out[key] = String(value);
    else out[key] = refToWire(value);
  }
  return { [kind]: out };
}

const decoder = new TextDecoder();

/** The base64 of UTF-8 bytes as text. */
export function bytesText(value) {
  return decoder.decode(Uint8Array.from(atob(value ?? ""), (char) => char.charCodeAt(0)));
}

/**
 * An operation in the wire's form (as the server's restore offers it) in the page's form:
 * `opToWire`'s inverse, with each temp passed through `temp` (the page's own numbering).
 */
export function opFromWire(op, temp) {
  const [kind, body] = Object.entries(op)[0];
  const ref = (wire) => (wire.temp !== undefined ? { temp: temp(wire.temp) } : { id: wire.id });
  const out = {};
  for (const [key, value] of Object.entries(body)) {
    if (key === "title" || key === "name" || key === "cdnUrl") out[key] = bytesText(value);
    else if (key === "temp") out[key] = temp(value);
    else if (key === "items") out[key] = value.map((item) => ({ temp: temp(item.temp), media: ref(item.media),
      ...(item.title !== undefined ? { title: bytesText(item.title) } : {}) }));
    else if (key === "placement") {
      const [where, anchor] = Object.entries(value)[0];
      out[key] = where === "after" || where === "before" ? { [where]: ref(anchor) } : { [where]: {} };
    } else if (key === "durationMs" || key === "byteSize") out[key] = Number(value);
    else out[key] = ref(value);
  }
  // The JSON form leaves out an empty title: the page's ops always carry one.
  if (out.title === undefined && (kind === "createChapter" || kind === "renameChapter" || kind === "renameVideo")) out.title = "";
  return { [kind]: out };
}

function refToWire(ref) {
  return ref.temp !== undefined ? { temp: String(ref.temp) } : { id: ref.id };
}

function placementToWire(placement) {
  if (placement.after) return { after: refToWire(placement.after) };
  if (placement.before) return { before: refToWire(placement.before) };
  if (placement.atStart) return { atStart: {} };
  return { atEnd: {} };
}

/** How much an op weighs against the batch limits (a link counts once per item, §9). */
export function weight(op) {
  return op.linkMedia ? op.linkMedia.items.length : 1;
}
