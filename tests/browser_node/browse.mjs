// Browses Darkroom's upload page: counts the gallery before and after scrolling to its
// end, then creates a sealed album with the page's form; prints what it saw as JSON.
import { launch, newPage, openUploadPage, readConfig } from "./chromium.mjs";

const config = await readConfig();
const browser = await launch();
const { page, log, requests } = await newPage(browser);
const result = { log, requests };
const cards = () => page.$$eval("#gallery .card", (all) => all.length);
try {
  await openUploadPage(page, config.base, config.token);
  // The first page, once no request for another is under way.
  const settled = () => page.waitForFunction(() => {
    const more = document.getElementById("more");
    return document.querySelectorAll("#gallery .card").length > 0 && !more.dataset.loading;
  });
  await settled();
  result.before = await cards();
  await page.locator("#more").scrollIntoViewIfNeeded();
  await page.waitForFunction((n) => document.querySelectorAll("#gallery .card").length >= n, config.photos);
  await settled();
  result.after = await cards();
  // The drop zone's file input is reachable from the keyboard.
  result.tabStops = [];
  await page.focus("#token");
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press("Tab");
    result.tabStops.push(await page.evaluate(() => document.activeElement.id));
  }
  await page.fill("#album-title", config.album.title);
  await page.fill("#album-reveal", config.album.reveal);
  await page.click("#new-album button[type=submit]");
  await page.waitForSelector("#countdown:not([hidden])");
  result.countdown = await page.textContent("#countdown");
  result.picked = await page.$eval("#album", (s) => s.selectedOptions[0].textContent);
  await page.waitForFunction(() => !document.getElementById("more").dataset.loading);
  result.albumCards = await cards();
  await page.screenshot({ path: config.screenshot, fullPage: false });
} catch (error) {
  result.error = String(error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
