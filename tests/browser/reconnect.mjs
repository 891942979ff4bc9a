// The tab's worker reconnects when the coordinator goes away and comes back
// (driven by tests/tests/browser.rs, which restarts the coordinator).
//
// usage: node reconnect.mjs <http url>
// Protocol with the Rust test, one line each on stdout/stdin:
//   prints "JOINED" once the tab has trained a round; waits for a line on stdin
//   (the coordinator has been restarted); prints a JSON line with what it saw.
import { launchChromium } from './launch.mjs';
import { createInterface } from 'node:readline';

const [url] = process.argv.slice(2);
const browser = await launchChromium();
const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error('[reconnect] page error:', e.message));
  await page.goto(url);
  await page.waitForFunction(() => window.hearth && window.hearth.status, null, { timeout: 30000 });
  const name = await page.inputValue('#name');
  await page.click('#join');
  await page.waitForFunction(() => window.hearth.tab && window.hearth.tab.rounds >= 1, null, { timeout: 120000 });
  console.log('JOINED');
  await lines.next();
  // The old session's counters are gone with it: a new session that trains
  // shows up as a fresh, connected worker that completes rounds again.
  await page.waitForFunction(
    () => window.hearth.tab && window.hearth.tab.connected && window.hearth.tab.rounds >= 1
      && window.hearth.status && window.hearth.status.workers.some((w) => w.connected && w.rounds >= 1),
    null, { timeout: 120000 });
  console.log(JSON.stringify({ name, tab: await page.evaluate(() => window.hearth.tab) }));
} finally {
  input.close();
  await browser.close();
}
