// The live event stream (GET /v1/events). EventSource cannot send an Authorization
// header, so this reads the text/event-stream with fetch and a stream reader, and
// reconnects with Last-Event-ID so no event is missed in between.

export class EventStream {
  // `onEvent(type, payload)` for each event; `onUnavailable()` when the gateway has no
  // stream (an older gateway), so the caller can fall back to polling.
  constructor(api, { onEvent, onUnavailable }) {
    this.api = api;
    this.onEvent = onEvent;
    this.onUnavailable = onUnavailable;
    this.lastId = "";
    this.controller = null;
    this.stopped = false;
  }

  start() { this.run(); return this; }

  stop() {
    this.stopped = true;
    this.controller?.abort();
  }

  async run() {
    for (let wait = 500; !this.stopped; wait = Math.min(wait * 2, 15000)) {
      try {
        if (await this.connect()) wait = 500; // it had been up: start the backoff over
      } catch (error) {
        if (this.stopped) return;
        if (error.unavailable) { this.onUnavailable(); return; }
      }
      await new Promise((done) => setTimeout(done, wait * (0.5 + Math.random())));
    }
  }

  async connect() {
    this.controller = new AbortController();
    const headers = { Accept: "text/event-stream" };
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    const resp = await this.api.fetch("/v1/events", { headers, signal: this.controller.signal });
    if (resp.status === 404 || resp.status === 405) throw Object.assign(new Error(), { unavailable: true });
    if (!resp.ok) return false;
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return true;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        this.dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  // One message: `id:`, `event:` and `data:` lines; lines starting with ':' are comments.
  dispatch(block) {
    let type = "message", data = "", id = null;
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") type = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
    }
    if (id !== null) this.lastId = id;
    if (!data && type === "message") return;
    let payload = null;
    try { payload = data ? JSON.parse(data) : null; } catch { return; }
    this.onEvent(type, payload);
  }
}
