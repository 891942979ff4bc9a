// Draw-a-digit: the pad's pixels go to Rust (MNIST-style centering and
// scaling), then to the current global model, all in this page's wasm.
import init, { WebModel, digit_from_canvas } from './pkg/hearth_worker.js';
import { api } from './auth.js';

const $ = (id) => document.getElementById(id);
const pad = $('pad');
const ctx = pad.getContext('2d', { willReadFrequently: true });
let model = null;
let modelVersion = -1;
let arch = null;
let fetching = null;

function clear() {
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, pad.width, pad.height);
  $('predicted').textContent = '–';
  $('probs').replaceChildren();
}
clear();

// Drawing with mouse, pen or finger.
let last = null;
pad.addEventListener('pointerdown', (e) => { last = [e.offsetX, e.offsetY]; pad.setPointerCapture(e.pointerId); });
pad.addEventListener('pointermove', (e) => {
  if (!last) return;
  ctx.strokeStyle = '#fff'; ctx.lineWidth = 22; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
  ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(e.offsetX, e.offsetY); ctx.stroke();
  last = [e.offsetX, e.offsetY];
});
pad.addEventListener('pointerup', () => { last = null; classify(); });
$('clear').onclick = clear;
$('classify').onclick = () => classify();

// Fetches the global model if the coordinator has a newer one.
async function refreshModel(version) {
  if (fetching) return fetching;
  if (version !== undefined && version === modelVersion) return;
  fetching = (async () => {
    await init();
    const r = await api('./api/model');
    const params = new Float32Array(await r.arrayBuffer());
    const a = r.headers.get('x-hearth-arch');
    if (!model || a !== arch) {
      if (model) model.free();
      model = new WebModel(a, 1, 0.05, 0.9, 1e-4);
      arch = a;
    }
    model.set_params(params);
    modelVersion = Number(r.headers.get('x-hearth-version'));
    $('model-version').textContent = `model v${modelVersion}`;
  })().finally(() => { fetching = null; });
  return fetching;
}
document.addEventListener('hearth-status', (e) => {
  // Keep the model fresh, but no more than every 2 s.
  const now = performance.now();
  if (e.detail.model_version !== modelVersion && (!refreshModel.at || now - refreshModel.at > 2000)) {
    refreshModel.at = now;
    refreshModel(e.detail.model_version).catch(() => {});
  }
});

// Classifies the pad; returns { digit, probabilities } (also shown on the page).
async function classify() {
  await refreshModel();
  const image = ctx.getImageData(0, 0, pad.width, pad.height);
  const pixels = digit_from_canvas(new Uint8Array(image.data.buffer), pad.width, pad.height);
  const preview = $('preview').getContext('2d');
  const img = preview.createImageData(28, 28);
  pixels.forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
  preview.putImageData(img, 0, 0);
  const probabilities = Array.from(model.predict(pixels));
  const digit = probabilities.indexOf(Math.max(...probabilities));
  $('predicted').textContent = String(digit);
  $('probs').replaceChildren(...probabilities.flatMap((p, d) => {
    const label = document.createElement('span'); label.textContent = d;
    const bar = document.createElement('div'); bar.className = 'bar'; bar.style.width = `${(100 * p).toFixed(1)}%`;
    const holder = document.createElement('div'); holder.appendChild(bar);
    const value = document.createElement('span'); value.textContent = `${(100 * p).toFixed(1)}%`;
    return [label, holder, value];
  }));
  return { digit, probabilities, version: modelVersion };
}

// For tests: paint a 28×28 MNIST image (white on black) onto the pad, 10× larger.
function paint(pixels) {
  clear();
  const scale = pad.width / 28;
  for (let i = 0; i < 784; i++) {
    const v = pixels[i];
    if (!v) continue;
    ctx.fillStyle = `rgb(${v},${v},${v})`;
    ctx.fillRect((i % 28) * scale, Math.floor(i / 28) * scale, scale, scale);
  }
}
// For tests: the model's class for a raw 28×28 image, bypassing the pad.
async function predictRaw(pixels) {
  await refreshModel();
  const p = Array.from(model.predict(pixels));
  return p.indexOf(Math.max(...p));
}
window.hearthDigit = { classify, paint, predictRaw, refreshModel };
