// The page: joins training through a Web Worker and shows the live dashboard.
// Glue only: the numbers come from the coordinator's /api/status and from the
// Rust worker's status; nothing is computed here.

import { api, credentials, remember } from './auth.js';

const $ = (id) => document.getElementById(id);
const fmt = {
  pct: (x) => (x == null ? '–' : `${(100 * x).toFixed(2)} %`),
  mb: (b) => `${(b / 1e6).toFixed(2)} MB`,
  int: (n) => Number(n).toLocaleString('en'),
};

// What tests and curious users can read.
const hearth = { tab: null, busy: false, status: null, joined: false };
// Makes this tab a slow device from now on (each reply held back `ms`).
hearth.setThrottle = (ms) => { if (worker) worker.postMessage({ type: 'throttle', ms }); };
window.hearth = hearth;

// ---- this tab as a worker ------------------------------------------------
const params = new URLSearchParams(location.search);
// The device id and pairing code come from the pairing link (or are typed in).
const paired = credentials();
let name = paired ? paired.device : '';
$('name').value = name;
$('key').value = paired ? paired.key : '';
hearth.api = api;

let worker = null;
// Components that hung this tab's worker while on trial: never run again
// (kept across reloads); `report` until the coordinator has been told.
const failedKey = 'hearth-failed-components';
const failedComponents = () => JSON.parse(localStorage.getItem(failedKey) || '[]');
// Longest a call may run while a component is on trial (?trial=SECONDS).
const trialMs = 1000 * (Number(params.get('trial')) || 30);
let trialSince = null;
let trialDigest = null;

function join() {
  name = $('name').value.trim();
  remember(name, $('key').value.trim());
  sessionStorage.setItem('hearth-joined', '1');
  if (!worker) {
    worker = new Worker('worker.js', { type: 'module' });
    worker.onmessage = onWorkerMessage;
  }
  const trust = (credentials() || {}).trust || '';
  const failed = failedComponents();
  localStorage.setItem(failedKey, JSON.stringify(failed.map((f) => ({ ...f, report: false }))));
  // ?throttle=MS makes this tab a slow device (each reply held back MS ms),
  // for trying out stragglers and for the reload test.
  // Cores to train on: ?workers=N, else every core the browser reports (at most 8).
  const workers = Number(params.get('workers')) || Math.min(navigator.hardwareConcurrency || 1, 8);
  worker.postMessage({ type: 'join', name, key: $('key').value.trim(), throttleMs: params.get('throttle'), trust, failed, workers });
  hearth.joined = true;
  $('join').textContent = 'Leave';
  $('tab-phase').textContent = 'joining';
}
function leave() {
  sessionStorage.removeItem('hearth-joined');
  if (worker) worker.postMessage({ type: 'leave' });
  hearth.joined = false;
  $('join').textContent = 'Join training';
}
$('join').onclick = () => (hearth.joined ? leave() : join());

// The tab's watchdog: a component on trial whose call runs past the budget
// (an endless loop) gets its worker stopped; a new worker starts on the
// page's own code and reports the rollback.
setInterval(() => {
  if (!worker || trialSince == null || performance.now() - trialSince < trialMs) return;
  const reason = `a call ran past the tab's trial budget of ${trialMs / 1000} s`;
  const failed = failedComponents().filter((f) => f.digest !== trialDigest);
  failed.push({ digest: trialDigest, reason, report: true });
  localStorage.setItem(failedKey, JSON.stringify(failed));
  worker.terminate();
  worker = null;
  trialSince = null;
  hearth.restarts = (hearth.restarts || 0) + 1;
  if (hearth.joined) join();
}, 500);

function onWorkerMessage(event) {
  const m = event.data;
  if (m.type === 'busy') {
    hearth.busy = m.busy;
    if (m.trial && trialSince == null) trialSince = performance.now();
    if (!m.busy || !m.trial) trialSince = null;
    trialDigest = m.trial || trialDigest;
  } else if (m.type === 'status') {
    hearth.tab = m;
    $('tab-phase').textContent = m.connected === false && m.phase === 'training' ? 'reconnecting' : (m.phase || 'idle');
    $('tab-rounds').textContent = fmt.int(m.rounds ?? 0);
    $('tab-images').textContent = fmt.int(m.images ?? 0);
    $('tab-ips').textContent = m.images_per_second ? fmt.int(Math.round(m.images_per_second)) : '–';
    $('tab-loss').textContent = m.last_loss == null ? '–' : m.last_loss.toFixed(4);
    $('tab-bytes').textContent = m.bytes_in == null ? '–' : `${fmt.mb(m.bytes_in)} in, ${fmt.mb(m.bytes_out)} out`;
    $('tab-message').textContent = m.message || '';
    if (m.component) $('tab-component').textContent = `${m.component_label} (${m.component.slice(0, 12)})`;
    // The coordinator now serves a different module (it was updated): load
    // the page again to get it, and rejoin (at most once a minute).
    const last = Number(sessionStorage.getItem('hearth-reloaded-at') || 0);
    if (m.phase === 'rejected' && /component/.test(m.message || '') && Date.now() - last > 60000) {
      sessionStorage.setItem('hearth-reloaded-at', String(Date.now()));
      location.reload();
      return;
    }
    if (m.phase === 'finished' || m.phase === 'rejected' || m.phase === 'failed') {
      hearth.joined = false;
      sessionStorage.removeItem('hearth-joined');
      $('join').textContent = 'Join training';
    }
  } else if (m.type === 'error') {
    $('tab-message').textContent = m.message;
  }
}
// A reloaded tab that was training carries on (its unfinished round went back
// to the coordinator's queue when the page closed).
if (sessionStorage.getItem('hearth-joined') === '1') join();

// ---- dashboard -----------------------------------------------------------
// series: [label, colour, scale]; a second scale gets its own axis on the right.
function chart(target, title, series, xLabel) {
  const scales = [...new Set(series.map(([, , scale]) => scale || 'y'))];
  const opts = {
    title, width: 420, height: 220,
    scales: { x: { time: false } },
    axes: [{ label: xLabel }, ...scales.map((scale, i) => ({ scale, side: i === 0 ? 3 : 1, grid: { show: i === 0 } }))],
    series: [{ label: xLabel }, ...series.map(([label, stroke, scale]) => ({ label, stroke, width: 2, scale: scale || 'y' }))],
  };
  return new uPlot(opts, [[], ...series.map(() => [])], $(target));
}
const charts = {
  loss: chart('chart-loss', 'per round', [['train loss', '#c2461a'], ['train acc', '#6b7385', 'acc']], 'round'),
  acc: chart('chart-acc', 'accuracy per epoch', [['train', '#6b7385'], ['test', '#c2461a']], 'epoch'),
  time: chart('chart-time', 'seconds per epoch', [['s / epoch', '#2a6f97']], 'epoch'),
};

function render(s) {
  hearth.status = s;
  const done = s.epoch_batches ? ` · batch ${s.epoch_batches_done}/${s.epoch_batches}` : '';
  $('run').textContent = `${s.phase} · ${s.arch} (${fmt.int(s.param_count)} parameters) · epoch ${s.epoch}/${s.epochs}${done} · round ${s.round} · model v${s.model_version}`;
  const last = s.epoch_history[s.epoch_history.length - 1];
  $('test-acc').textContent = last ? fmt.pct(last.test_accuracy) : '–';
  $('train-acc').textContent = last ? fmt.pct(last.train_accuracy) : '–';
  $('epoch-time').textContent = last ? `${last.seconds.toFixed(1)} s` : '–';
  $('epoch-bytes').textContent = last ? fmt.mb(last.bytes) : '–';
  charts.loss.setData([s.rounds.map((r) => r.round), s.rounds.map((r) => r.train_loss), s.rounds.map((r) => r.train_accuracy)]);
  const e = s.epoch_history;
  charts.acc.setData([e.map((p) => p.epoch), e.map((p) => p.train_accuracy), e.map((p) => p.test_accuracy)]);
  charts.time.setData([e.map((p) => p.epoch), e.map((p) => p.seconds)]);
  const rows = s.workers.map((w) => {
    const tr = document.createElement('tr');
    if (!w.connected) tr.className = 'gone';
    const component = [w.component_label || w.component.slice(0, 12),
      w.swapped_round != null ? `since round ${w.swapped_round}` : '',
      w.rollbacks ? `${w.rollbacks} rollback(s)` : '',
      w.component_note || ''].filter((p) => p).join(' · ');
    const cells = [w.suspect ? `${w.name} (on probation: ${w.suspect})` : w.name, w.kind, w.arch, component, w.connected ? 'yes' : 'no',
      fmt.int(w.rounds), fmt.int(w.abandoned_rounds ?? 0), fmt.int(w.images), fmt.int(Math.round(w.images_per_second)),
      (w.bytes_sent_to / 1e6).toFixed(2), (w.bytes_received_from / 1e6).toFixed(2)];
    cells.forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (i >= 5) td.className = 'num';
      tr.appendChild(td);
    });
    return tr;
  });
  $('workers').querySelector('tbody').replaceChildren(...rows);
  const events = (s.components || []).slice().reverse().map((c) => {
    const tr = document.createElement('tr');
    [c.worker || 'all', c.label, c.digest.slice(0, 12), c.event, c.detail].forEach((v) => {
      const td = document.createElement('td');
      td.textContent = v;
      tr.appendChild(td);
    });
    return tr;
  });
  $('components').querySelector('tbody').replaceChildren(...events);
  document.dispatchEvent(new CustomEvent('hearth-status', { detail: s }));
}

// Rounds arrive incrementally (?since=last round seen); a restarted
// coordinator (round counter going back) resets the history.
const history = { rounds: [], last: 0 };
async function poll() {
  try {
    const r = await api(`./api/status?since=${history.last}`);
    if (r.ok) {
      const s = await r.json();
      if (s.round < history.last) { history.rounds = []; history.last = 0; }
      history.rounds.push(...s.rounds);
      if (history.rounds.length > 5000) history.rounds.splice(0, history.rounds.length - 5000);
      if (history.rounds.length) history.last = history.rounds[history.rounds.length - 1].round;
      s.rounds = history.rounds;
      render(s);
    }
  } catch (e) {
    $('run').textContent = `coordinator unreachable (${e.message}); retrying`;
  }
  setTimeout(poll, 1000);
}
poll();
