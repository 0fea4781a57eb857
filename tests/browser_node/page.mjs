// Drives Darkroom's upload page: uploads the files through its file input, waits for
// each row and the gallery to settle, decodes the given ThumbHashes with the page's own
// decoder, saves a screenshot; prints what it saw as JSON.
import { launch, newPage, openUploadPage, readConfig, settledGallery } from "./chromium.mjs";

const config = await readConfig();
const browser = await launch();
const { page, log, requests } = await newPage(browser);
const result = { log, requests };
try {
  // A flaky network: the first attempt at each of these parts is cut off.
  const cut = new Set(config.cutParts || []);
  await page.route((url) => cut.has(url.searchParams.get("partNumber")), async (route) => {
    const number = new URL(route.request().url()).searchParams.get("partNumber");
    if (cut.delete(number)) await route.abort("connectionreset");
    else await route.continue();
  });
  const settledRows = (n) => page.waitForFunction((n) => {
    const rows = [...document.querySelectorAll("#uploads li")];
    return rows.length === n && rows.every((r) => ["ready", "rejected", "error", "sealed"].includes(r.dataset.state));
  }, n, { timeout: config.timeout, polling: 250 });
  await openUploadPage(page, config.base, config.token);
  await page.setInputFiles("#file", config.files);
  await settledRows(config.files.length);
  // Files sent again once the first ones settled (the same bytes under other names).
  const again = config.again || [];
  if (again.length) {
    await page.setInputFiles("#file", again);
    await settledRows(config.files.length + again.length);
  }
  result.rows = await page.$$eval("#uploads li", (rows) => rows.map((r) => ({
    name: r.querySelector(".name").textContent,
    state: r.dataset.state,
    status: r.querySelector(".status").textContent,
    progress: r.querySelector("progress").value,
  })));
  const failed = result.rows.filter((r) => r.state === "error");
  if (failed.length) throw new Error(`uploads failed: ${JSON.stringify(failed)}`);
  result.cards = await settledGallery(page, config.gallery, config.timeout);
  result.thumbhashes = await page.evaluate(async (hashes) => {
    const { decodeThumbHash } = await import("/assets/thumbhash.js");
    return hashes.map((hash) => {
      const { w, h, rgba } = decodeThumbHash(hash);
      const mean = [0, 1, 2, 3].map((c) => {
        let sum = 0;
        for (let i = c; i < rgba.length; i += 4) sum += rgba[i];
        return sum / (w * h);
      });
      return { w, h, mean };
    });
  }, config.thumbhashes || []);
  await page.screenshot({ path: config.screenshot, fullPage: true });
} catch (error) {
  result.error = String(error);
  await page.screenshot({ path: config.screenshot, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
