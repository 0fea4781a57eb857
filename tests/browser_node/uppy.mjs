// Uploads files with the real Uppy from an app on its own origin (served here) through Darkroom's grant routes, waits until Darkroom has them ready,
// then screenshots Darkroom's upload page showing them; prints what it saw as JSON.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { basename } from "node:path";
import { build } from "esbuild";
import { launch, newPage, openUploadPage, readConfig, settledGallery } from "./chromium.mjs";

const config = await readConfig();
const bundle = await build({ entryPoints: ["uppy_app.js"], bundle: true, format: "esm", write: false, logLevel: "error" });
const app = config.appOrigin;
const browser = await launch();
const { page, log, requests } = await newPage(browser);
const result = { log, requests };
const closers = [];
try {
  const files = new Map(config.files.map((f) => [basename(f.path), f]));
  // A real server on the app's own loopback origin: Chromium lets a page reach the
  // loopback address space (the gateway) only from a page served from there too.
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, app).pathname;
    const file = path.startsWith("/files/") ? files.get(basename(path)) : null;
    if (path === "/") {
      res.writeHead(200, { "Content-Type": "text/html" });
      res.end('<!doctype html><meta charset="utf-8"><title>app</title><script type="module" src="/app.js"></script>');
    } else if (path === "/app.js") {
      res.writeHead(200, { "Content-Type": "text/javascript" });
      res.end(bundle.outputFiles[0].text);
    } else if (file) {
      res.writeHead(200, { "Content-Type": file.type });
      res.end(await readFile(file.path));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((ready) => server.listen(Number(new URL(app).port), "127.0.0.1", ready));
  closers.push(() => server.close());
  await page.goto(`${app}/`);
  await page.waitForFunction(() => typeof window.uploadWithUppy === "function");
  result.uploads = await page.evaluate((cfg) => window.uploadWithUppy(cfg), {
    baseUrl: config.base,
    token: config.token,
    files: config.files.map((f) => ({ name: basename(f.path), type: f.type })),
  });
  if (!result.uploads.every((u) => u.ok)) throw new Error(`Uppy failed: ${JSON.stringify(result.uploads)}`);
  const gallery = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  await openUploadPage(gallery, config.base, config.token);
  result.cards = await settledGallery(gallery, config.files.length, config.timeout);
  await gallery.screenshot({ path: config.screenshot, fullPage: true });
} catch (error) {
  result.error = String(error);
} finally {
  await browser.close();
  closers.forEach((close) => close());
}
console.log(JSON.stringify(result));
