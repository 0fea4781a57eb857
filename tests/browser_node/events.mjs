// The page's event stream: the first connection to /v1/events gets a made-up stream (a
// photo.ready, then a reset) and ends; the page must act on both and reconnect with
// Last-Event-ID. Prints the stream requests' headers and the gateway requests as JSON.
import { launch, newPage, openUploadPage, readConfig } from "./chromium.mjs";

const config = await readConfig();
const browser = await launch();
const { page, log, requests } = await newPage(browser);
const result = { log, requests, streams: [] };
try {
  const body = [
    ": a comment line, ignored",
    "",
    `id: e-1\nevent: photo.ready\ndata: ${JSON.stringify({ type: "photo.ready", data: { photo_id: config.photoId } })}`,
    "",
    `id: e-2\nevent: reset\ndata: ${JSON.stringify({ reason: "fell_behind", detail: "made up" })}`,
    "",
    "",
  ].join("\n");
  await page.route("**/v1/events", async (route) => {
    result.streams.push(route.request().headers());
    if (result.streams.length === 1) {
      await route.fulfill({ status: 200, contentType: "text/event-stream", body });
    } else {
      await route.continue();
    }
  });
  await openUploadPage(page, config.base, config.token);
  await page.waitForFunction(() => document.querySelectorAll("#gallery .card").length > 0);
  const deadline = Date.now() + config.timeout;
  while (result.streams.length < 2 && Date.now() < deadline) await page.waitForTimeout(100);
  await page.waitForFunction(() => document.querySelectorAll("#gallery .card").length > 0);
} catch (error) {
  result.error = String(error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
