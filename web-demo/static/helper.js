// A helper Web Worker of the tab's training worker: it computes the gradient
// of its share of each training step (Rust ShareWorker) and waits on the
// shared buffer between jobs. Glue only.
import init, { ShareWorker } from './pkg/hearth_worker.js';

onmessage = async (event) => {
  const { buffer } = event.data;
  const response = await fetch('./pkg/hearth_worker_bg.wasm');
  await init({ module_or_path: new Uint8Array(await response.arrayBuffer()) });
  const share = new ShareWorker(buffer);
  const control = new Int32Array(buffer, 0, 8);
  postMessage('ready');
  // Word 0: 1 = a job is posted; anything else: wait for one.
  for (;;) {
    const state = Atomics.load(control, 0);
    if (state !== 1) {
      Atomics.wait(control, 0, state);
      continue;
    }
    share.step();
  }
};
