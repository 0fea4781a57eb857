// The upload page: wires the token, the drop zone, the upload list, the gallery, the
// albums and the live events together.
import { Api } from "./api.js";
import { Albums } from "./albums.js";
import { EventStream } from "./events.js";
import { Gallery } from "./gallery.js";
import { uploadFile } from "./uploads.js";

const $ = (id) => document.getElementById(id);
// `darkroom dev` puts its token in the page, for a browser on this machine only.
const devToken = document.querySelector('meta[name="darkroom-dev-token"]').content;
const tokenInput = $("token");
tokenInput.value = devToken || localStorage.getItem("darkroom-token") || "";

const api = new Api("");
const pending = new Set(); // photos shown while still being processed
const polled = new Set();
const gallery = new Gallery(api, $("gallery"), $("more"), (id) => {
  pending.add(id);
  if (polling) poll(id);
});
const albums = new Albums(api, {
  select: $("album"), form: $("new-album"), countdown: $("countdown"),
  onPick: (albumId) => gallery.reload(albumId),
});
const rows = new Map(); // photo id -> its row in the upload list
let stream = null;
let polling = false;

function start() {
  api.token = tokenInput.value.trim();
  stream?.stop();
  if (!api.token) return;
  albums.reload().catch(() => {});
  gallery.reload();
  polling = false;
  stream = new EventStream(api, { onEvent, onUnavailable }).start();
}

function onUnavailable() {
  polling = true;
  pending.forEach(poll);
}

tokenInput.addEventListener("change", () => {
  localStorage.setItem("darkroom-token", tokenInput.value.trim());
  start();
});

async function onEvent(type, payload) {
  const data = payload?.data || {};
  if (type === "reset") { gallery.reload(); return; }
  if (type === "photo.ready" || type === "photo.rejected") {
    const photo = await gallery.refresh(data.photo_id);
    if (photo) rows.get(photo.id)?.settled(photo);
  } else if (type === "photo.deleted") {
    gallery.remove(data.photo_id);
  } else if (type.startsWith("album.")) {
    await albums.reload();
    if (type === "album.revealed" || type === "album.deleted") gallery.reload();
  }
}

// Without a live stream (an older gateway), ask after the photo until it settles.
async function poll(photoId) {
  if (polled.has(photoId)) return;
  polled.add(photoId);
  for (let wait = 250; ; wait = Math.min(wait * 1.5, 3000)) {
    await new Promise((done) => setTimeout(done, wait));
    const photo = await gallery.refresh(photoId);
    if (!photo || photo.sealed || ["ready", "rejected"].includes(photo.status)) {
      if (photo) rows.get(photoId)?.settled(photo);
      pending.delete(photoId);
      polled.delete(photoId);
      return;
    }
  }
}

function uploadRow(file) {
  const li = $("upload-row").content.firstElementChild.cloneNode(true);
  const [name, bar, status] = [".name", "progress", ".status"].map((s) => li.querySelector(s));
  name.textContent = file.name;
  bar.setAttribute("aria-label", `upload progress of ${file.name}`);
  $("uploads").prepend(li);
  const set = (state, text) => { li.dataset.state = state; status.textContent = text; };
  return {
    set,
    duplicate: false,
    progress(sent, total) {
      const percent = total ? Math.floor((100 * sent) / total) : 100;
      bar.value = percent;
      set("uploading", `${percent}%`);
    },
    settled(photo) {
      if (photo.sealed) set("sealed", "sealed until the album's reveal");
      else if (photo.status === "ready") set("ready", this.duplicate ? "ready (already uploaded)" : "ready");
      else set("rejected", `rejected: ${photo.reason}${photo.reason_detail ? ` (${photo.reason_detail})` : ""}`);
    },
  };
}

async function upload(file) {
  const row = uploadRow(file);
  try {
    const { photoId, duplicate } = await uploadFile(api, file, {
      albumId: albums.current?.id,
      onProgress: (sent, total) => row.progress(sent, total),
    });
    rows.set(photoId, row);
    row.duplicate = duplicate;
    row.set("processing", duplicate ? "already uploaded" : "verifying");
    const photo = await gallery.refresh(photoId);
    if (photo && (duplicate || photo.sealed || ["ready", "rejected"].includes(photo.status))) row.settled(photo);
  } catch (error) {
    row.set("error", error.message);
  }
}

const drop = $("drop");
const fileInput = $("file");
const take = (files) => [...files].forEach(upload);
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files); });
fileInput.addEventListener("change", () => { take(fileInput.files); fileInput.value = ""; });

start();
