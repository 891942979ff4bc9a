// Web Worker: the tab's training worker. Glue only: it moves bytes between the
// WebSocket and the Rust BrowserWorker (protocol, training and replies are all
// in the wasm module) and reports the worker's status to the page.
import init, { BrowserWorker, WebModel, digest, helper_buffer_bytes, http_token } from './pkg/hearth_worker.js';

let ready = null;     // Promise of the module's digest
let socket = null;
let session = null;
let stopped = true;
let backoff = 250;
let config = null;
let poller = null;
let helperBuffers = []; // one SharedArrayBuffer per helper Web Worker

// Starts helper Web Workers so that each training step uses `workers` cores
// (they need shared memory: a cross-origin isolated page, which the
// coordinator serves; otherwise this worker trains alone). Started once.
async function startHelpers(workers) {
  if (workers <= 1 || helperBuffers.length || !self.crossOriginIsolated) return;
  const bytes = helper_buffer_bytes();
  const ready = [];
  for (let i = 1; i < workers; i++) {
    const buffer = new SharedArrayBuffer(bytes);
    const helper = new Worker('helper.js', { type: 'module' });
    ready.push(new Promise((resolve) => { helper.onmessage = resolve; }));
    helper.postMessage({ buffer });
    helperBuffers.push(buffer);
  }
  await Promise.all(ready);
}

// Tells the page whether a call is under way, and which component it is
// trying if one is on trial (the page stops this worker if that call never
// returns: a component cannot hang the tab).
function busy(on) {
  postMessage({ type: 'busy', busy: on, trial: on && session ? (session.pending() || null) : null });
}

// Sends what the session has to say on its own (an offered component is
// verified, compiled and tested in poll()).
function flush(ws, worker) {
  for (;;) {
    busy(true);
    const frame = worker.poll();
    busy(false);
    if (!frame) return;
    if (ws.readyState === WebSocket.OPEN) ws.send(frame);
    report({ connected: true });
  }
}

// Trains a round sent ahead a step at a time while no message is waiting,
// yielding between steps so that the coordinator's next message is handled
// as soon as it comes (it finishes the round at once).
const tick = new MessageChannel();
let working = false;
function workSoon(ws, worker) {
  if (working || !worker.has_work()) return;
  working = true;
  tick.port1.onmessage = () => {
    working = false;
    if (socket !== ws || !worker.has_work()) return;
    busy(true);
    worker.work();
    busy(false);
    workSoon(ws, worker);
  };
  tick.port2.postMessage(null);
}

function load() {
  if (!ready) {
    ready = (async () => {
      const response = await fetch('./pkg/hearth_worker_bg.wasm');
      const bytes = new Uint8Array(await response.arrayBuffer());
      await init({ module_or_path: bytes });
      return digest(bytes);
    })();
  }
  return ready;
}

function report(extra) {
  const status = session ? JSON.parse(session.status()) : {};
  postMessage({ type: 'status', ...status, ...extra });
}

function connect(moduleDigest) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  ws.binaryType = 'arraybuffer';
  let worker;
  try {
    worker = new BrowserWorker(config.name, config.key, moduleDigest, config.trust, helperBuffers);
    for (const f of config.failed) worker.failed_before(f.digest, f.reason, f.report);
    // Reported once: a later connection only refuses it.
    config.failed = config.failed.map((f) => ({ ...f, report: false }));
  } catch (error) {
    postMessage({ type: 'status', phase: 'rejected', message: `not paired: ${error}` });
    return;
  }
  socket = ws;
  session = worker;
  ws.onopen = () => {
    backoff = 250;
    ws.send(worker.hello(crypto.getRandomValues(new Uint8Array(16))));
    report({ connected: true });
    clearInterval(poller);
    poller = setInterval(() => { if (socket === ws) flush(ws, worker); }, 200);
  };
  ws.onmessage = (event) => {
    if (typeof event.data === 'string') return;
    busy(true);
    const reply = worker.handle(new Uint8Array(event.data));
    if (reply && config.throttleMs > 0) {
      // Simulated slow device (page URL ?throttle=MS): hold the reply back.
      const until = performance.now() + config.throttleMs;
      while (performance.now() < until) { /* a slow device is busy */ }
    }
    if (reply) ws.send(reply);
    busy(false);
    report({ connected: true });
    flush(ws, worker);
    if (worker.done()) ws.close();
    else workSoon(ws, worker);
  };
  ws.onclose = () => {
    report({ connected: false });
    if (socket === ws) {
      socket = null;
      clearInterval(poller);
    }
    if (!stopped && !worker.done()) {
      setTimeout(() => { if (!stopped) connect(moduleDigest); }, backoff);
      backoff = Math.min(backoff * 2, 30000);
    }
  };
}

// Benchmark: training steps at batch 64 on real MNIST test images 0..639 from
// the coordinator, for `seconds` per repeat after one second of warm-up (the
// same method as the wasmtime side of `hearth-coordinator bench-browser`).
async function bench({ seconds, repeats, name, key, workers }) {
  await load();
  await startHelpers(Number(workers) || 1);
  const count = 640;
  const headers = { Authorization: `Bearer ${http_token(name, key)}` };
  const data = new Uint8Array(await (await fetch(`./api/samples?start=0&count=${count}`, { headers })).arrayBuffer());
  const pixels = data.subarray(0, count * 784);
  const labels = data.subarray(count * 784);
  const model = new WebModel('lenet5', 1, 0.05, 0.9, 1e-4);
  model.use_helpers(helperBuffers);
  const batches = count / 64;
  let step = 0;
  const measure = (ms) => {
    const t0 = performance.now();
    let images = 0;
    while (performance.now() - t0 < ms) {
      const b = step % batches;
      model.train_batch(pixels.subarray(b * 64 * 784, (b + 1) * 64 * 784), labels.subarray(b * 64, (b + 1) * 64));
      images += 64;
      step += 1;
    }
    return images * 1000 / (performance.now() - t0);
  };
  measure(1000);
  const rates = [];
  for (let r = 0; r < repeats; r++) rates.push(measure(seconds * 1000));
  rates.sort((a, b) => a - b);
  model.free();
  postMessage({ type: 'bench', median: rates[Math.floor(rates.length / 2)], rates, seconds, batch: 64, workers: helperBuffers.length + 1 });
}

onmessage = async (event) => {
  const msg = event.data;
  try {
    if (msg.type === 'join') {
      config = {
        name: msg.name, key: msg.key, throttleMs: Number(msg.throttleMs) || 0,
        trust: msg.trust || '', failed: msg.failed || [],
      };
      stopped = false;
      const moduleDigest = await load();
      await startHelpers(Number(msg.workers) || 1);
      if (!socket) connect(moduleDigest);
    } else if (msg.type === 'throttle') {
      if (config) config.throttleMs = Number(msg.ms) || 0;
    } else if (msg.type === 'leave') {
      stopped = true;
      if (socket) socket.close();
    } else if (msg.type === 'bench') {
      await bench(msg);
    }
  } catch (error) {
    postMessage({ type: 'error', message: String(error) });
  }
};
