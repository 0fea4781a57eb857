// One file to storage: ask for a grant, send the bytes with progress (in parts, several at
// a time, when the grant says MULTIPART), then give the completion hint.
import { send } from "./api.js";

const PART_CONCURRENCY = 3;
const PART_ATTEMPTS = 4;
const SIGN_BATCH = 10;
const UNEXPOSED_ETAG =
  "storage hides the ETag header from this page: the bucket's CORS rule must expose ETag (docs/clients.md)";

// Files up to this size are hashed first, so the same photo sent again is answered
// "already uploaded" instead of stored twice. WebCrypto cannot hash a stream, so a larger
// file would be read into memory whole; it goes without.
const DIGEST_LIMIT = 64 * 1024 * 1024;

// Resolves with the photo id once storage holds the file; `onProgress(sent, total)`.
export async function uploadFile(api, file, { albumId, onProgress }) {
  const body = {
    filename: file.name,
    content_type: file.type || "application/octet-stream",
    size: file.size,
  };
  if (albumId) body.album_id = albumId;
  const sha256 = await digest(file);
  if (sha256) body.sha256 = sha256;
  const grant = await api.post("/v1/uploads", body);
  if (grant.duplicate) {
    onProgress(file.size, file.size); // nothing left to send
    return { photoId: grant.photo_id, duplicate: true };
  }
  const { photo_id: photoId, upload } = grant;
  if (upload.method === "MULTIPART") {
    try {
      const parts = await sendParts(api, photoId, upload, file, onProgress);
      await api.post(`/v1/uploads/${photoId}/complete`, { parts });
    } catch (error) {
      // Storage would keep the parts sent so far until the sweep: abort now.
      api.fetch(`/v1/uploads/${photoId}`, { method: "DELETE" }).catch(() => {});
      throw error;
    }
  } else {
    await sendWhole(upload, file, (sent) => onProgress(sent, file.size));
    await api.post(`/v1/uploads/${photoId}/complete`);
  }
  onProgress(file.size, file.size);
  return { photoId, duplicate: false };
}

function sendWhole(upload, file, onProgress) {
  if (upload.method === "PUT") {
    return send({ method: "PUT", url: upload.url, body: file, headers: upload.headers, onProgress });
  }
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
  form.append("file", file); // storage reads fields up to the file: it must come last
  return send({ method: "POST", url: upload.url, body: form, onProgress });
}

async function sendParts(api, photoId, upload, file, onProgress) {
  const { part_size: partSize, part_count: count } = upload;
  const sent = new Array(count).fill(0);
  // Once a part has failed for good the upload has: the other lanes stop reporting.
  let failed = false;
  const report = () => failed || onProgress(sent.reduce((a, b) => a + b, 0), file.size);
  // Part number -> a promise of its signed URL; one request signs a batch of parts.
  const signed = new Map();
  const sign = (number) => {
    if (!signed.has(number)) {
      const wanted = [];
      for (let n = number; n <= count && n < number + SIGN_BATCH && !signed.has(n); n++) wanted.push(n);
      const batch = api.post(`/v1/uploads/${photoId}/parts`, { part_numbers: wanted })
        .then(({ parts }) => new Map(parts.map((part) => [part.part_number, part])));
      for (const n of wanted) signed.set(n, batch.then((parts) => parts.get(n)));
    }
    return signed.get(number);
  };
  const sendPart = async (number) => {
    const blob = file.slice((number - 1) * partSize, Math.min(file.size, number * partSize));
    for (let attempt = 1; ; attempt++) {
      try {
        const { url, headers } = await sign(number);
        const xhr = await send({
          method: "PUT", url, body: blob, headers,
          onProgress: (loaded) => { sent[number - 1] = loaded; report(); },
        });
        const etag = xhr.getResponseHeader("ETag");
        if (!etag) throw Object.assign(new Error(UNEXPOSED_ETAG), { final: true });
        sent[number - 1] = blob.size;
        report();
        return { part_number: number, etag };
      } catch (error) {
        if (error.final || failed) throw error;
        sent[number - 1] = 0;
        report();
        if (attempt >= PART_ATTEMPTS) throw new Error(`part ${number}: ${error.message}`);
        signed.delete(number); // the URL may have lapsed: sign the part again
        await new Promise((done) => setTimeout(done, 500 * 2 ** attempt * Math.random()));
      }
    }
  };
  const queue = Array.from({ length: count }, (_, i) => i + 1);
  const done = [];
  const lane = async () => {
    try {
      while (queue.length && !failed) done.push(await sendPart(queue.shift()));
    } catch (error) {
      failed = true;
      throw error;
    }
  };
  await Promise.all(Array.from({ length: Math.min(PART_CONCURRENCY, count) }, lane));
  return done.sort((a, b) => a.part_number - b.part_number);
}

// The file's SHA-256 in hex, or null where it cannot be had cheaply: WebCrypto exists
// only in secure contexts (https, localhost).
async function digest(file) {
  if (!globalThis.crypto?.subtle || file.size > DIGEST_LIMIT) return null;
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}
