// Calls to the gateway with the user's bearer token, and uploads with progress.

export class Api {
  constructor(token) { this.token = token; }

  fetch(path, options = {}) {
    const headers = { Authorization: `Bearer ${this.token}`, ...(options.headers || {}) };
    return fetch(path, { ...options, headers });
  }

  async json(path, options = {}) {
    const resp = await this.fetch(path, options);
    if (!resp.ok) throw new Error(await problemText(resp));
    return resp.status === 204 ? null : resp.json();
  }

  post(path, body) {
    return this.json(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body ?? {}),
    });
  }
}

export async function problemText(resp) {
  try {
    const p = await resp.json();
    return `${resp.status} ${p.code || ""}: ${p.detail || ""}`;
  } catch {
    return `${resp.status} ${resp.statusText}`;
  }
}

// One request to storage through XMLHttpRequest, the only browser API that reports upload
// progress. Resolves with the XHR on a 2xx; rejects otherwise.
export function send({ method, url, body, headers = {}, onProgress = () => {} }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) {
      // The browser sends the body's own length, which is the length that was signed.
      if (name.toLowerCase() !== "content-length") xhr.setRequestHeader(name, value);
    }
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr);
      else reject(new Error(`storage answered ${xhr.status}`));
    });
    xhr.addEventListener("error", () => reject(new Error("network error")));
    xhr.addEventListener("abort", () => reject(new Error("aborted")));
    xhr.send(body);
  });
}
