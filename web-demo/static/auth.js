// The page's credential: the device id and pairing code of this browser,
// from the pairing link's fragment (#device=ID&key=CODE&trust=KEY, which
// never leaves the browser) or typed in, kept in local storage; `trust` is
// the household's public signing key (components it signed may replace the
// training code without a reload). API requests carry the
// HTTP credential the Rust module derives from them; the key itself is only
// used for the WebSocket's challenge-response.
import init, { http_token } from './pkg/hearth_worker.js';

let token = null; // the HTTP credential, derived once

export function credentials() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get('device') && fragment.get('key')) {
    remember(fragment.get('device'), fragment.get('key'));
    localStorage.setItem('hearth-trust', fragment.get('trust') || '');
    // The code leaves the address bar (and the history), not the browser.
    history.replaceState(null, '', location.pathname + location.search);
  }
  const device = localStorage.getItem('hearth-device');
  const key = localStorage.getItem('hearth-key');
  const trust = localStorage.getItem('hearth-trust') || '';
  return device && key ? { device, key, trust } : null;
}

export function remember(device, key) {
  localStorage.setItem('hearth-device', device);
  localStorage.setItem('hearth-key', key);
  token = null;
}

// fetch() with this browser's credential.
export async function api(path, options = {}) {
  const c = credentials();
  if (!c) throw new Error('this browser is not paired: open the link `hearth-coordinator pair` prints');
  if (!token) {
    await init();
    token = http_token(c.device, c.key);
  }
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
  return fetch(path, { cache: 'no-store', ...options, headers });
}
