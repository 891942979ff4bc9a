// End-to-end test of the web demo in headless Chromium (driven by
// tests/tests/browser.rs, which starts the coordinator and a host first).
//
// usage: node demo.mjs <http url of the coordinator> <artifacts dir>
// Prints one JSON line with what it saw; the Rust test checks it against the
// coordinator's ledger and the wasmtime component.
import { launchChromium } from './launch.mjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node demo.mjs <url> <artifacts dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await launchChromium();
const result = {};
const log = (...a) => console.error('[demo]', ...a);
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1400 } });
  const page = await context.newPage();
  page.on('console', (m) => log('page:', m.text()));
  page.on('pageerror', (e) => log('page error:', e.message));
  await page.goto(url);
  await page.waitForFunction(() => window.hearth && window.hearth.status, null, { timeout: 30000 });

  // Parity: three SGD steps from a seeded model on test images 0..63, in this
  // browser's wasm. The Rust test repeats them in wasmtime.
  result.parity = await page.evaluate(async () => {
    const m = await import('./pkg/hearth_worker.js');
    await m.default();
    const data = new Uint8Array(await (await window.hearth.api('./api/samples?start=0&count=64')).arrayBuffer());
    const model = new m.WebModel('lenet5', 7, 0.05, 0.9, 1e-4);
    const losses = [];
    for (let i = 0; i < 3; i++) losses.push(model.train_batch(data.subarray(0, 64 * 784), data.subarray(64 * 784)));
    const params = model.params();
    const digest = m.digest(new Uint8Array(params.buffer, params.byteOffset, params.byteLength));
    model.free();
    return { digest, losses };
  });
  log('parity', JSON.stringify(result.parity));

  // Join, and wait until the tab has trained some rounds.
  result.name = await page.inputValue('#name');
  await page.click('#join');
  await page.waitForFunction(() => window.hearth.tab && window.hearth.tab.rounds >= 3, null, { timeout: 120000 });
  result.rounds_before_reload = await page.evaluate(() => window.hearth.tab.rounds);
  log('browser trained', result.rounds_before_reload, 'rounds; reloading mid-round');

  // Reload while a round is in progress: its batches must go back to the
  // queue. The tab becomes a slow device first (each reply held back 3 s):
  // Chromium tears a reloaded page's worker down a little after the new page
  // loads, and a fast round would finish before that.
  await page.evaluate(() => window.hearth.setThrottle(3000));
  await page.waitForFunction(() => window.hearth.busy === false, null, { timeout: 60000, polling: 5 });
  await page.waitForFunction(() => window.hearth.busy === true, null, { timeout: 60000, polling: 5 });
  await page.reload();
  await page.waitForFunction(() => window.hearth && window.hearth.tab && window.hearth.tab.rounds >= 1, null, { timeout: 120000 });
  log('rejoined after the reload');

  // The dashboard's accuracy moves as epochs finish.
  await page.waitForFunction(() => document.getElementById('test-acc').textContent.includes('%'), null, { timeout: 300000 });
  result.first_shown_test_accuracy = await page.textContent('#test-acc');
  await page.waitForFunction(() => window.hearth.status.phase === 'finished', null, { timeout: 300000 });
  await page.waitForTimeout(1500); // one more status poll and model refresh
  result.final_shown_test_accuracy = await page.textContent('#test-acc');
  result.epoch_test_accuracy = await page.evaluate(() => window.hearth.status.epoch_history.map((e) => e.test_accuracy));
  result.workers = await page.evaluate(() => window.hearth.status.workers);

  // Draw MNIST test digits onto the canvas and classify them in the page.
  result.digits = [];
  for (let i = 0; i < 10; i++) {
    const sample = await page.evaluate(async (i) => {
      const data = new Uint8Array(await (await window.hearth.api(`./api/samples?start=${i}&count=1`)).arrayBuffer());
      window.hearthDigit.paint(data.subarray(0, 784));
      const direct = await window.hearthDigit.predictRaw(data.subarray(0, 784));
      return { label: data[784], direct };
    }, i);
    await page.click('#classify');
    await page.waitForFunction(() => document.getElementById('predicted').textContent !== '–');
    const predicted = Number(await page.textContent('#predicted'));
    result.digits.push({ index: i, label: sample.label, direct: sample.direct, predicted });
  }
  log('digits', JSON.stringify(result.digits));
  await page.screenshot({ path: join(artifacts, 'web-demo.png'), fullPage: true });
  result.screenshot = join(artifacts, 'web-demo.png');
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
