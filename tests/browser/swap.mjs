// The tab swaps its training code to a pushed component without a reload
// (driven by tests/tests/browser.rs, which pushes the component).
//
// usage: node swap.mjs <paired page url> <digest of the pushed component | -> [rounds, 8]
// Protocol with the Rust test, one line each on stdout/stdin:
//   prints "JOINED" once the tab has trained a round; waits for a line on
//   stdin (the component was pushed, or with "-": the test saw what it
//   waited for); waits until the tab runs that digest (unless "-") and has
//   trained [rounds] more rounds since; prints a JSON line with what it saw.
import { launchChromium } from './launch.mjs';
import { createInterface } from 'node:readline';

const [url, digest, more = '8'] = process.argv.slice(2);
const browser = await launchChromium();
const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('[swap] page error:', e.message));
  await page.goto(url);
  await page.waitForFunction(() => window.hearth && window.hearth.status, null, { timeout: 30000 });
  // Gone if the page ever loads again.
  await page.evaluate(() => { window.loadedOnce = true; });
  const name = await page.inputValue('#name');
  await page.click('#join');
  await page.waitForFunction(() => window.hearth.tab && window.hearth.tab.rounds >= 1, null, { timeout: 120000 });
  console.log('JOINED');
  await lines.next();
  if (digest !== '-') {
    await page.waitForFunction((d) => window.hearth.tab && window.hearth.tab.component === d, digest, { timeout: 120000 });
  }
  const atSwap = await page.evaluate(() => window.hearth.tab.rounds);
  // It keeps training on the new code.
  await page.waitForFunction(([r, m]) => window.hearth.tab.rounds >= r + m, [atSwap, Number(more)], { timeout: 120000 });
  const seen = await page.evaluate(() => ({
    tab: window.hearth.tab,
    loadedOnce: window.loadedOnce === true,
    navigations: performance.getEntriesByType('navigation').length,
    restarts: window.hearth.restarts || 0,
    shown: document.getElementById('tab-component').textContent,
  }));
  console.log(JSON.stringify({ name, atSwap, ...seen }));
} finally {
  input.close();
  await browser.close();
}
