// Debian's Chromium driven by playwright-core, which never downloads a browser of its own.
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Tests run as root in containers, where Chromium's sandbox cannot start.
    args: ["--no-sandbox"],
  });
}

export async function readConfig() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  return JSON.parse(input);
}

// A page whose console errors and failed requests are kept, for the test's message.
export async function newPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const log = [];
  const requests = [];
  page.on("request", (r) => requests.push(`${r.method()} ${r.url()}`));
  page.on("console", (m) => { if (m.type() === "error") log.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
  page.on("requestfailed", (r) => log.push(`failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  return { page, log, requests };
}

// Opens Darkroom's own upload page signed in with the token (without one, with the
// token `darkroom dev` puts in the page).
export async function openUploadPage(page, base, token) {
  await page.goto(`${base}/`);
  if (!token) return;
  await page.$eval("#token", (el, t) => {
    el.value = t;
    el.dispatchEvent(new Event("change"));
  }, token);
}

// The gallery's cards once `count` are shown and every ready one has its thumbnail.
export async function settledGallery(page, count, timeout) {
  await page.waitForFunction((n) => {
    const cards = [...document.querySelectorAll("#gallery .card")];
    const busy = cards.some((c) => c.dataset.status === "ready" && c.querySelector("img").dataset.thumb !== "loaded");
    return cards.length === n && !busy && cards.every((c) => ["ready", "rejected", "sealed"].includes(c.dataset.status));
  }, count, { timeout, polling: 250 });
  return page.$$eval("#gallery .card", (cards) => cards.map((c) => ({
    id: c.dataset.photoId,
    status: c.dataset.status,
    caption: c.querySelector("figcaption").textContent,
    placeholder: c.querySelector("img").dataset.placeholder || "",
    thumb: c.querySelector("img").dataset.thumb || "",
  })));
}
