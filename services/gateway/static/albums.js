// Albums to upload into: pick one (the gallery shows its photos), or make a new one,
// optionally sealed until a reveal time, whose countdown is shown while it is sealed.

export class Albums {
  constructor(api, { select, form, countdown, onPick }) {
    this.api = api;
    this.select = select;
    this.countdown = countdown;
    this.onPick = onPick;
    this.byId = new Map();
    select.addEventListener("change", () => this.picked());
    form.addEventListener("submit", (e) => { e.preventDefault(); this.create(form); });
    setInterval(() => this.tick(), 1000);
  }

  get current() { return this.byId.get(this.select.value) || null; }

  async reload() {
    const keep = this.select.value;
    const albums = [];
    for (let cursor = ""; ; ) {
      const page = await this.api.json(`/v1/albums?limit=100${cursor ? `&cursor=${cursor}` : ""}`);
      albums.push(...page.items);
      if (!page.next_cursor) break;
      cursor = encodeURIComponent(page.next_cursor);
    }
    this.byId = new Map(albums.map((a) => [a.id, a]));
    const none = new Option("no album (my photos)", "");
    this.select.replaceChildren(none, ...albums.map((a) => new Option(label(a), a.id)));
    this.select.value = this.byId.has(keep) ? keep : "";
    this.tick();
  }

  async create(form) {
    const title = form.elements.title.value.trim();
    const reveal = form.elements.reveal_at.value;
    const body = { title };
    if (reveal) body.reveal_at = new Date(reveal).toISOString();
    const status = form.querySelector(".form-status");
    try {
      const album = await this.api.post("/v1/albums", body);
      form.reset();
      status.textContent = `created “${album.title}”`;
      await this.reload();
      this.select.value = album.id;
      this.picked();
    } catch (error) {
      status.textContent = `could not create the album: ${error.message}`;
    }
  }

  picked() {
    this.tick();
    this.onPick(this.select.value);
  }

  tick() {
    const album = this.current;
    const left = album?.reveal_at ? Date.parse(album.reveal_at) - Date.now() : 0;
    if (album?.sealed && left <= 0) {
      // Revealed: the gateway shows everything from this moment on.
      album.sealed = false;
      this.reload().then(() => this.onPick(this.select.value), () => {});
    }
    this.countdown.hidden = !(album && left > 0);
    if (album && left > 0) this.countdown.textContent = `sealed: reveals in ${duration(left)}`;
  }
}

function label(album) {
  const role = album.role === "owner" ? "" : ` (${album.role})`;
  return `${album.title}${album.sealed ? " · sealed" : ""}${role}`;
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  const parts = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"], [Math.floor(s / 60) % 60, "m"], [s % 60, "s"]];
  while (parts.length > 1 && parts[0][0] === 0) parts.shift();
  return parts.map(([n, unit]) => `${n}${unit}`).join(" ");
}
