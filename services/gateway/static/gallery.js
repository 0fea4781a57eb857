// The caller's photos, newest first: pages of GET /v1/photos, the next one fetched when
// the end of the grid scrolls into view. Each card paints the ThumbHash placeholder
// first, then the thumbnail once it has loaded.
import { thumbHashToDataURL } from "./thumbhash.js";

const PAGE = 24;

export class Gallery {
  // `onPending(id)` for each photo shown before it is ready or rejected.
  constructor(api, grid, sentinel, onPending) {
    this.api = api;
    this.onPending = onPending;
    this.grid = grid;
    this.sentinel = sentinel;
    this.albumId = "";
    this.cursor = null;
    this.loading = null;
    this.generation = 0;
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.more();
    });
    this.observer.observe(sentinel);
  }

  // Start again from the first page (after a `reset` event, or another album picked).
  reload(albumId = this.albumId) {
    this.albumId = albumId;
    this.generation++;
    this.grid.replaceChildren();
    this.sentinel.textContent = "loading…";
    this.sentinel.hidden = false;
    this.cursor = undefined;
    this.loading = null;
    return this.more();
  }

  more() {
    if (this.cursor === null || this.loading) return this.loading;
    const generation = this.generation;
    const query = new URLSearchParams({ limit: PAGE });
    if (this.cursor) query.set("cursor", this.cursor);
    if (this.albumId) query.set("album_id", this.albumId);
    this.sentinel.dataset.loading = "yes";
    this.loading = this.api.json(`/v1/photos?${query}`).then((page) => {
      if (generation !== this.generation) return;
      delete this.sentinel.dataset.loading;
      for (const photo of page.items) this.grid.append(this.card(photo));
      this.cursor = page.next_cursor;
      if (this.cursor === null) this.sentinel.textContent = "no photos yet";
      this.sentinel.hidden = this.cursor === null && this.grid.children.length > 0;
      this.loading = null;
      // A short first page may leave the sentinel in view: the observer will not fire again.
      if (this.cursor && this.sentinel.getBoundingClientRect().top < innerHeight) this.more();
    }, (error) => {
      this.loading = null;
      delete this.sentinel.dataset.loading;
      this.sentinel.textContent = `could not load photos: ${error.message}`;
    });
    return this.loading;
  }

  find(id) { return this.grid.querySelector(`[data-photo-id="${CSS.escape(id)}"]`); }

  // A photo just uploaded, or one an event says changed: fetched again and shown first
  // (or in place, when already shown).
  async refresh(id) {
    const resp = await this.api.fetch(`/v1/photos/${id}`);
    if (resp.status === 404) { this.remove(id); return null; }
    if (!resp.ok) return null;
    const photo = await resp.json();
    if (this.albumId && photo.album_id !== this.albumId) return photo;
    const old = this.find(id);
    if (old) old.replaceWith(this.card(photo));
    else this.grid.prepend(this.card(photo));
    if (this.cursor === null) this.sentinel.hidden = true;
    return photo;
  }

  remove(id) { this.find(id)?.remove(); }

  card(photo) {
    const figure = document.createElement("figure");
    figure.className = "card";
    figure.dataset.photoId = photo.id;
    figure.dataset.status = photo.sealed ? "sealed" : photo.status;
    const img = document.createElement("img");
    img.alt = photo.status === "ready" && !photo.sealed ? photo.filename : "";
    img.width = 160; img.height = 160;
    const caption = document.createElement("figcaption");
    if (photo.sealed) {
      caption.textContent = `sealed until ${new Date(photo.reveal_at).toLocaleString()}`;
    } else if (photo.status === "rejected") {
      caption.className = "reason";
      caption.textContent = `rejected: ${photo.reason}${photo.reason_detail ? ` (${photo.reason_detail})` : ""}`;
    } else if (photo.status === "ready") {
      caption.textContent = photo.filename;
      paint(img, photo);
    } else {
      caption.textContent = `${photo.filename}: processing`;
      this.onPending(photo.id);
    }
    figure.append(img, caption);
    return figure;
  }
}

function paint(img, photo) {
  const placeholder = photo.facts?.placeholder;
  if (placeholder) {
    try {
      img.src = thumbHashToDataURL(placeholder);
      img.dataset.placeholder = "painted";
    } catch { /* an unreadable hash: wait for the thumbnail */ }
  }
  const thumb = photo.renditions?.thumb;
  if (!thumb) return;
  const loader = new Image();
  loader.addEventListener("load", () => { img.src = thumb.url; img.dataset.thumb = "loaded"; });
  loader.src = thumb.url;
}
