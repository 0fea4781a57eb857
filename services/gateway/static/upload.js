"use strict";
// `darkroom dev` puts its token in the page, for a browser on this machine only.
const DEV_TOKEN = document.querySelector('meta[name="darkroom-dev-token"]').content;
const tokenInput = document.getElementById("token");
tokenInput.value = DEV_TOKEN || localStorage.getItem("darkroom-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("darkroom-token", tokenInput.value.trim()));

const drop = document.getElementById("drop");
const fileInput = document.getElementById("file");
drop.addEventListener("click", () => fileInput.click());
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); [...e.dataTransfer.files].forEach(upload); });
fileInput.addEventListener("change", () => { [...fileInput.files].forEach(upload); fileInput.value = ""; });

function api(path, options = {}) {
  const headers = { "Authorization": "Bearer " + tokenInput.value.trim(), ...(options.headers || {}) };
  return fetch(path, { ...options, headers });
}

function row(name) {
  const li = document.createElement("li");
  li.innerHTML = '<div class="ph">…</div><div><div class="name"></div><div class="status">requesting grant</div><code class="id"></code></div>';
  li.querySelector(".name").textContent = name;
  document.getElementById("uploads").prepend(li);
  return {
    li,
    set(status, text) { const s = li.querySelector(".status"); s.className = "status " + status; s.textContent = text || status; },
  };
}

async function problemText(resp) {
  try { const p = await resp.json(); return `${resp.status} ${p.code || ""}: ${p.detail || ""}`; }
  catch { return `${resp.status} ${resp.statusText}`; }
}

async function upload(file) {
  const r = row(file.name);
  const grant = await api("/v1/uploads", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ filename: file.name, content_type: file.type || "application/octet-stream", size: file.size }),
  });
  if (!grant.ok) { r.set("error", await problemText(grant)); return; }
  const { photo_id, upload } = await grant.json();
  r.li.querySelector(".id").textContent = photo_id;
  r.set("uploading");
  const form = new FormData();
  for (const [k, v] of Object.entries(upload.fields)) form.append(k, v);
  form.append("file", file);  // must be the last field
  const stored = await fetch(upload.url, { method: "POST", body: form });
  if (!stored.ok) { r.set("error", `storage answered ${stored.status}`); return; }
  r.set("pending", "verifying");
  await watch(photo_id, r);
}

// What rendering learnt, in a few words: camera and capture time when recorded.
function describe(facts) {
  if (!facts) return "";
  const camera = [facts.camera.make, facts.camera.model].filter(Boolean).join(" ");
  const taken = facts.taken_at_local || facts.taken_at;
  return [camera, taken].filter(Boolean).map((part) => ", " + part).join("");
}

async function watch(id, r) {
  for (let wait = 250; ; wait = Math.min(wait * 1.5, 3000)) {
    await new Promise((done) => setTimeout(done, wait));
    const resp = await api(`/v1/photos/${id}`);
    if (!resp.ok) { r.set("error", await problemText(resp)); return; }
    const photo = await resp.json();
    if (photo.status === "ready") {
      const img = document.createElement("img");
      img.src = photo.renditions.thumb.url;
      img.alt = "thumbnail";
      r.li.querySelector(".ph").replaceWith(img);
      r.set("ready", `ready: ${photo.width}×${photo.height}${describe(photo.facts)}`);
      const link = document.createElement("a");
      link.href = photo.renditions.preview.url; link.textContent = " preview"; link.target = "_blank";
      r.li.querySelector(".status").append(link);
      return;
    }
    if (photo.status === "rejected") { r.set("rejected", `rejected: ${photo.reason} (${photo.reason_detail})`); return; }
    r.set(photo.status, photo.status === "pending" ? "verifying" : photo.status === "verified" ? "rendering thumbnails" : photo.status);
  }
}
