// Runs the benchmark in a Web Worker (where browser training runs) and shows
// the result; with ?report=1 it also posts it to the coordinator, which is how
// `hearth-coordinator bench-browser` reads it.
import { api, credentials } from './auth.js';

const out = document.getElementById('out');
const paired = credentials();
const params = new URLSearchParams(location.search);
const seconds = Number(params.get('seconds') || 5);
const repeats = Number(params.get('repeats') || 3);

function run() {
  out.textContent = 'running…';
  const worker = new Worker('worker.js', { type: 'module' });
  worker.onmessage = async (event) => {
    const m = event.data;
    if (m.type === 'error') {
      out.textContent = m.message;
    } else if (m.type === 'bench') {
      const report = { ...m, user_agent: navigator.userAgent };
      out.textContent = `${Math.round(m.median)} img/s with ${m.workers} Web Worker(s) (median of ${m.rates.length}: ${m.rates.map(Math.round).join(', ')})`;
      if (params.get('report') === '1') {
        await api('./api/bench', { method: 'POST', body: JSON.stringify(report) });
      }
      worker.terminate();
    }
  };
  const workers = Number(params.get('workers') || 1);
  worker.postMessage({ type: 'bench', seconds, repeats, workers, name: paired?.device, key: paired?.key });
}
document.getElementById('run').onclick = run;
if (params.get('report') === '1') run();
